"""Submitting runs to the running platform and following them: the knflow server's side of ``knflow.Client``.

    POST /api/runs                    multipart/form-data: ``dataset``, ``pipeline`` (default lifecycle), ``options``
                                      (JSON) and one or more ``data`` files (the last starts the run; earlier ones are
                                      its companions, such as an IDX pair's labels); or application/json
                                      ``{"key", "dataset"?, "pipeline"?, "options"?}`` naming an object already under
                                      ``raw/`` -> 202 ``{"runid", "id", "key", "keys", "dataset", "pipeline"}``
    GET  /api/runs/{runid}/events     the run's events from the broker history: ``after`` (cursor), ``limit``,
                                      ``wait`` (long-poll seconds, at most 30) -> ``{"events": [...], "next"}``
    GET  /api/runs/{runid}/outcome    ``{"runid", "key", "status", "model", "version", "endpoint", "reason", "events"}``

Uploaded files go under ``raw/<dataset>/<name>-<stamp><ext>`` with the metadata ``ANNOUNCED`` (the store's
arrival sources skip them) and the server publishes the ``data.arrived`` itself, with the options in the event
and the ``pipeline`` extension: a run starts whether or not the store sends notifications.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pydantic
from aiohttp import web

from eventing.events import NAMESPACE, namespace_of, new_runid
from eventing.sources.arrival import ANNOUNCED
from functions.arrivals import arrival, is_data, raw_prefix, takes_arrivals
from functions.contract import LIFECYCLE, RAW_PREFIX
from functions.runoptions import parse_options
from functions.runtime.pipeline import PipelineSpec, pipeline_triggers
from infra.errors import InvalidRequest, KnflowError, NotFound, PayloadTooLarge, Unavailable
from infra.guard import access
from infra.http import json_response, read_json
from infra.namespaces import addressed, of_extension, scoped
from infra.store import ArtifactStore, ObjectInfo, validate_key
from infra.validation import parse
from knflow.drive import declined
from knflow.follow import SeenEvent
from knflow.outcome import RUNNING, RunOutcome

if TYPE_CHECKING:
    from knflow.dashboard.server import Dashboard

SOURCE = "/knflow/api/runs"
MAX_UPLOAD_BYTES = 8 * 1024**3
MAX_FIELD_BYTES = 1024 * 1024
CHUNK = 1024 * 1024
MAX_WAIT_S = 30.0
FIELDS = ("dataset", "pipeline", "options")


class Reference(pydantic.BaseModel):
    """A submission of an object already in the store."""

    model_config = pydantic.ConfigDict(extra="forbid")

    key: str
    dataset: str | None = None
    pipeline: str = LIFECYCLE
    options: dict[str, Any] | None = None


@dataclass
class Submission:
    """What a run is submitted with, and the objects it names once they are in the store (its data file last)."""

    dataset: str
    pipeline: str
    options: Any
    objects: list[ObjectInfo] = field(default_factory=list)


@dataclass
class Upload:
    """A multipart submission's fields and its files, spooled to local files in order."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, Path]] = field(default_factory=list)


def add_routes(app: web.Application, dashboard: Dashboard) -> None:
    """Register the submission routes on the knflow server's app."""
    api = RunsApi(dashboard)
    app.router.add_post("/api/runs", api.submit)
    app.router.add_get("/api/runs/{runid}/events", api.events)
    app.router.add_get("/api/runs/{runid}/outcome", api.outcome)


def stamped(name: str, stamp: str) -> str:
    """A fresh object name per submission (``digits.npz`` -> ``digits-<stamp>.npz``): each run gets its own object."""
    stem, dot, ext = name.partition(".")
    return f"{stem}-{stamp}{dot}{ext}"


class RunsApi:
    """Handlers over one knflow server: its settings, store, pipelines, broker and history."""

    def __init__(self, dashboard: Dashboard):
        self.dashboard = dashboard

    # -- submitting ---------------------------------------------------------------------------------------
    @access("editor")
    async def submit(self, request: web.Request) -> web.Response:
        runid, namespace = new_runid(), addressed(request)
        store = scoped(self.dashboard.artifact_store(), namespace)
        if request.content_type == "multipart/form-data":
            sub = await self._upload(request, runid, store, namespace)
        elif request.content_type == "application/json":
            sub = await self._reference(request, store, namespace)
        else:
            raise InvalidRequest(
                f"POST /api/runs takes multipart/form-data (data files) or application/json (a key), "
                f"not {request.content_type!r}",
                status=415,
            )
        settings, info = self.dashboard.settings, sub.objects[-1]
        event = arrival(
            settings.artifacts, store, info, dataset=sub.dataset, pipeline=sub.pipeline, options=sub.options,
            source=SOURCE, runid=runid, namespace=namespace,
        )  # fmt: skip
        await self.dashboard.publish(event)
        body = {"runid": runid, "id": event.get_id(), "key": info.key, "keys": [i.key for i in sub.objects]}
        return json_response({**body, "dataset": sub.dataset, "pipeline": sub.pipeline, "namespace": namespace}, 202)

    async def _upload(self, request: web.Request, runid: str, store: ArtifactStore, namespace: str) -> Submission:
        """Check a multipart submission, then store its files under ``raw/<dataset>/`` marked as announced."""
        with tempfile.TemporaryDirectory(prefix="knflow-upload-") as folder:
            upload = await read_upload(request, Path(folder))
            fields = upload.fields
            sub = Submission(fields.get("dataset") or "", fields.get("pipeline") or LIFECYCLE, _options(fields))
            await self._check(sub, namespace)
            sub.objects = await asyncio.to_thread(self._put, store, sub.dataset, upload.files, runid)
        return sub

    async def _reference(self, request: web.Request, store: ArtifactStore, namespace: str) -> Submission:
        """Check a submission of an object already in the store (which must be data under ``raw/<dataset>/``)."""
        ref = parse(Reference, await read_json(request, MAX_FIELD_BYTES, "a run submission"), "run submission")
        sub = Submission(ref.dataset or _dataset_of(ref.key), ref.pipeline, ref.options)
        _dataset_of(ref.key)
        await self._check(sub, namespace)
        sub.objects = [await asyncio.to_thread(store.stat, ref.key)]
        return sub

    async def _check(self, sub: Submission, namespace: str) -> None:
        """Refuse a submission that could not start: bad dataset name, bad options, unknown or unapplied pipeline."""
        raw_prefix(sub.dataset)
        if sub.options is not None:
            if not isinstance(sub.options, dict):
                raise InvalidRequest("options must be a JSON object")
            parse_options(sub.options, "options")
        spec = takes_arrivals(await asyncio.to_thread(self.dashboard.control.resolve, sub.pipeline, namespace))
        await self._check_applied(spec)

    async def _check_applied(self, spec: PipelineSpec) -> None:
        """``Unavailable`` unless the pipeline's triggers are on the broker (a new trigger starts at the end of the
        log, so an arrival published before the platform applied them would start nothing)."""
        try:
            present = {item["name"] for item in (await self.dashboard.broker.call("GET", "/triggers"))["items"]}
        except (KnflowError, KeyError, ValueError) as exc:
            raise Unavailable(f"broker {self.dashboard.broker_url} cannot list its triggers: {exc}") from None
        missing = sorted({t.name for t in pipeline_triggers(spec, lambda step: "http://knflow.invalid/")} - present)
        if missing:
            raise Unavailable(
                f"pipeline {spec.name!r} is not applied on the broker yet (no trigger {missing[0]}); "
                "is the platform still starting?"
            )

    def _put(self, store: ArtifactStore, dataset: str, files: list[tuple[str, Path]], runid: str) -> list[ObjectInfo]:
        stamp = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{runid[-6:]}"
        keys = [validate_key(raw_prefix(dataset) + stamped(name, stamp)) for name, _ in files]
        return [store.put(key, path, metadata={ANNOUNCED: runid}) for key, (_, path) in zip(keys, files, strict=True)]

    # -- following ----------------------------------------------------------------------------------------
    @access("viewer")
    async def events(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            wait = min(float(query.get("wait", "0")), MAX_WAIT_S)
            limit = int(query.get("limit", "500"))
        except ValueError:
            raise InvalidRequest("wait and limit must be numbers") from None
        runid, namespace = request.match_info["runid"], addressed(request)
        await self.dashboard.history.refresh()
        known = self.dashboard.history.runs.get(runid)
        if known and namespace_of(known[0]) != namespace:
            raise NotFound(f"no run {runid!r} in the broker history")
        params = {"runid": runid, "limit": str(limit), "wait": str(wait)}
        if query.get("after"):
            params["after"] = query["after"]
        page = await self.dashboard.broker.call("GET", f"/events?{urlencode(params)}", timeout=wait + 10.0)
        # a run the history did not know yet: only its events of this namespace
        page["events"] = [e for e in page.get("events", []) if of_extension(e.get(NAMESPACE)) == namespace]
        return json_response(page)

    @access("viewer")
    async def outcome(self, request: web.Request) -> web.Response:
        runid = request.match_info["runid"]
        events = [SeenEvent.from_cloudevent(e) for e in await self.dashboard.read_run(request, runid)]
        key = next((str((e.data or {}).get("key", "")) for e in events if e.type.endswith(".data.arrived")), "")
        outcome = RunOutcome(runid, key, events)
        if outcome.status == RUNNING and outcome.registered:
            store = scoped(self.dashboard.artifact_store(), addressed(request))
            outcome.declined = await asyncio.to_thread(declined, store, outcome.registered)
        return json_response(outcome.summary())


async def read_upload(request: web.Request, folder: Path) -> Upload:
    """The form's fields and its ``data`` files spooled under ``folder``; ``InvalidRequest`` naming what is wrong."""
    reader = await request.multipart()
    upload, total = Upload(), 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, aiohttp.BodyPartReader):
            raise InvalidRequest("a nested multipart body is not accepted")
        if part.name == "data":
            name = (part.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
            if not name:
                raise InvalidRequest("a 'data' part needs a filename (Content-Disposition: ...; filename=...)")
            path = folder / str(len(upload.files))
            total += await _spool(part, path, MAX_UPLOAD_BYTES - total)
            upload.files.append((name, path))
        elif part.name in FIELDS:
            upload.fields[part.name] = await _field(part)
        else:
            raise InvalidRequest(f"unknown form field {part.name!r}; expected dataset, pipeline, options and data")
    if not upload.files:
        raise InvalidRequest("no data file: send it as a form part named 'data' with a filename")
    return upload


async def _field(part: aiohttp.BodyPartReader) -> str:
    value = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        value += chunk
        if len(value) > MAX_FIELD_BYTES:
            raise PayloadTooLarge(f"form field {part.name!r} is above {MAX_FIELD_BYTES} bytes")
    return value.decode("utf-8", "replace")


async def _spool(part: aiohttp.BodyPartReader, path: Path, limit: int) -> int:
    size = 0
    with path.open("wb") as out:
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the upload is above {MAX_UPLOAD_BYTES} bytes")
            await asyncio.to_thread(out.write, chunk)
    return size


def _options(fields: dict[str, str]) -> Any:
    text = fields.get("options")
    if text is None or not text.strip():
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"options is not valid JSON: {exc}") from None


def _dataset_of(key: str) -> str:
    """The data set of a referenced key, which must be ``raw/<dataset>/<file>`` and data."""
    validate_key(key)
    parts = key.split("/")
    if not key.startswith(RAW_PREFIX) or len(parts) < 3 or not is_data(key):
        raise InvalidRequest(f"key {key!r} must name a data file under {RAW_PREFIX}<dataset>/")
    return parts[1]
