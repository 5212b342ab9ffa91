"""The data plane shared by every front end: decode a request in its wire codec, encode the answer in the same one.

The gateway forwards request bytes untouched with a codec number; a replica decodes them here into
one ``InferRequest`` (numpy arrays), runs the model and encodes the outputs back in that codec.
REST JSON is codec ``JSON``; more codecs plug in by adding a ``Codec`` to ``CODECS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from infra.errors import InvalidRequest
from serving import protocol
from serving.protocol import InferRequest

JSON = 0


class Codec(Protocol):
    """One wire format of V2 requests and answers."""

    def decode(self, body: bytes) -> InferRequest:
        """The request; ``InvalidRequest`` names what was wrong."""
        ...

    def encode(self, answer: Answer) -> bytes:
        """The answer's body in this wire format."""
        ...

    def error(self, message: str) -> bytes:
        """An error body in this wire format."""
        ...


@dataclass(frozen=True)
class Answer:
    """What a replica computed for one request."""

    model: str
    version: str
    request: InferRequest
    outputs: Mapping[str, np.ndarray]
    parameters: dict[str, Any] | None = None


class JsonCodec:
    """KServe V2 REST with JSON tensors."""

    def decode(self, body: bytes) -> InferRequest:
        return protocol.parse_request(body)

    def encode(self, answer: Answer) -> bytes:
        return protocol.encode_response(
            answer.model, answer.version, answer.request.id, answer.outputs, answer.parameters
        )

    def error(self, message: str) -> bytes:
        return protocol.error_body(message)


CODECS: dict[int, Codec] = {JSON: JsonCodec()}


def codec(number: int) -> Codec:
    """The codec with that number; ``InvalidRequest`` for one this replica does not speak."""
    try:
        return CODECS[number]
    except KeyError:
        raise InvalidRequest(f"unknown request codec {number}") from None
