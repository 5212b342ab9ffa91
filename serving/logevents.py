"""The inference logger's events: KServe's inference-logger CloudEvents in structured JSON, one request and its
response sharing an id, and the cheap per-message stamps (ids, times, traces) the publisher draws for them.

Attributes: KServe's (``inferenceservicename``, ``namespace``, ``component``, ``endpoint``, ``metadata``), knflow's
``modelversion`` and ``revision``, the deploy's extensions (the deploying run's ``runid`` and ``pipeline``), a
``traceparent`` continuing the request's. A JSON body is embedded as it came, never parsed; any other goes as base64.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from eventing.events import SPECVERSION, TRACEPARENT, child_traceparent
from infra.namespaces import split

if TYPE_CHECKING:
    from serving.revisions import Revision

INFERENCE_REQUEST = "org.kubeflow.serving.inference.request"
INFERENCE_RESPONSE = "org.kubeflow.serving.inference.response"
COMPONENT = "predictor"
#: The request header that marks a body in the binary tensor extension; kept in ``metadata`` (KServe's
#: ``metadataHeaders``) so a reader can split such a body.
BINARY_HEADER = "inference-header-content-length"
METADATA_HEADERS = (BINARY_HEADER,)
#: The attributes the logger sets on every event itself (a deploy's extensions may not name them).
LOGGER_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "datacontenttype", "subject", "dataschema", "data", "data_base64"}
    | {"inferenceservicename", "namespace", "component", "endpoint", "metadata", "modelversion", "revision"}
    | {TRACEPARENT}
)
ENVELOPE_BYTES = 1024  # what the per-event attributes add to a revision's template, at most


class Message(NamedTuple):
    """One answered request as logged: what goes in its events besides the revision's constant attributes."""

    when: float
    headers: Mapping[str, str]
    endpoint: str
    body: bytes  # empty when the revision logs responses only
    response: bytes  # empty when it logs requests only
    response_type: str


@dataclass(frozen=True)
class Template:
    """A revision's constant attributes, and a bound on the size they and the per-message ones add to a body."""

    attributes: dict[str, Any]
    envelope: int


def template(revision: Revision, source_base: str) -> Template:
    """The attributes every logged event of ``revision`` carries."""
    assert revision.logger is not None
    namespace, name = split(revision.model)  # a namespace's events are its own: its drift step reads its store
    attributes = {
        **revision.logger.extensions,
        "specversion": SPECVERSION,
        "source": f"{source_base}/v2/models/{name}",
        "inferenceservicename": name,
        "namespace": namespace,
        "component": COMPONENT,
        "modelversion": str(revision.version),
        "revision": revision.id,
    }
    return Template(attributes, len(orjson.dumps(attributes)) + ENVELOPE_BYTES)


class Stamps:
    """Per-message ids, times and traces, cheaply: UUID-shaped ids whose last 32 bits count (a new random prefix
    every 2**32), RFC 3339 times formatted once per millisecond, new traces cut from one block of random bytes."""

    def __init__(self) -> None:
        self._prefix, self._count = "", 1 << 32
        self._random, self._at = "", 0
        self._ms, self._time = -1, ""

    def id(self) -> str:
        self._count += 1
        if self._count >= 1 << 32:
            self._prefix, self._count = str(uuid.uuid4())[:-8], 0
        return f"{self._prefix}{self._count:08x}"

    def traceparent(self, parent: str | None) -> str:
        """A child of the request's ``traceparent``, else a new trace."""
        if parent:
            return child_traceparent(parent)
        if self._at >= len(self._random):
            self._random, self._at = os.urandom(24 * 512).hex(), 0
        chunk = self._random[self._at : self._at + 48]
        self._at += 48
        return f"00-{chunk[:32]}-{chunk[32:]}-01"

    def time(self, when: float) -> str:
        ms = int(when * 1000)
        if ms != self._ms:
            moment = datetime.fromtimestamp(ms / 1000, UTC)
            self._ms, self._time = ms, moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return self._time


def request_type(headers: Mapping[str, str]) -> str:
    """What an answered V2 request body is: JSON (whatever Content-Type the client sent: the gateway read it as
    JSON), unless it came in the binary tensor extension (``Inference-Header-Content-Length``), then as sent."""
    if BINARY_HEADER in headers:
        return headers.get("content-type") or "application/octet-stream"
    return "application/json"


def _metadata(headers: Mapping[str, str]) -> str:
    """KServe's ``metadata`` extension: the kept request headers as JSON (name -> [values])."""
    if BINARY_HEADER not in headers:  # the common case, cheaply
        return "{}"
    kept = {name: [headers[name]] for name in METADATA_HEADERS if name in headers}
    return orjson.dumps(kept).decode()


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def stamp(message: Message, stamps: Stamps) -> dict[str, str]:
    """The attributes one request and its response share, drawn once per message."""
    headers = message.headers
    return {
        "id": headers.get("ce-id") or stamps.id(),
        "time": stamps.time(message.when),
        "endpoint": message.endpoint,
        TRACEPARENT: stamps.traceparent(headers.get(TRACEPARENT)),
        "metadata": _metadata(headers),
    }


def message_events(t: Template, message: Message, shared: dict[str, str]) -> list[dict[str, Any]]:
    """The message's events (``shared``: what ``stamp`` drew for it), for ``orjson.dumps``: a JSON body is embedded
    as it came (``orjson.Fragment``: never parsed here), any other goes as ``data_base64``."""
    common = {**t.attributes, **shared}
    out = []
    if message.body:
        out.append(_event(common, INFERENCE_REQUEST, request_type(message.headers), message.body))
    if message.response:
        out.append(_event(common, INFERENCE_RESPONSE, message.response_type, message.response))
    return out


def _event(common: dict[str, Any], type_: str, content_type: str, body: bytes) -> dict[str, Any]:
    if content_type == "application/json" or _is_json(content_type):
        return {**common, "type": type_, "datacontenttype": content_type, "data": orjson.Fragment(body)}
    return {**common, "type": type_, "datacontenttype": content_type, "data_base64": base64.b64encode(body).decode()}
