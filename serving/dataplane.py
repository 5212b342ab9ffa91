"""The data plane shared by every front end: decode a request in its wire codec, encode the answer in the same one.

The gateway forwards request bytes untouched with a codec number; a replica decodes them here into
one ``InferRequest`` (numpy arrays), runs the model and encodes the outputs back in that codec.
Codecs: ``JSON`` (REST), ``BINARY`` (REST with the binary tensor data extension, ``serving.binary``),
``GRPC`` (a serialized ``ModelInferRequest``, ``serving.grpccodec``). Both REST codecs answer binary
when outputs are asked for as binary data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from infra.errors import InvalidRequest
from infra.http import error_body
from infra.version import VERSION
from serving import binary, grpccodec, protocol
from serving.protocol import InferRequest

JSON = 0
BINARY = 1
GRPC = 2
#: What V2 server metadata says over REST and gRPC.
SERVER_METADATA: dict[str, Any] = {"name": "knflow", "version": VERSION, "extensions": ["binary_tensor_data"]}


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
        return binary.encode(answer.model, answer.version, answer.request, answer.outputs, answer.parameters)

    def error(self, message: str) -> bytes:
        return error_body(message)  # the body of every knflow error answer


class BinaryCodec(JsonCodec):
    """KServe V2 REST with the binary tensor data extension (frame body: u32 header length, then the body)."""

    def decode(self, body: bytes) -> InferRequest:
        return binary.decode(body)


class GrpcCodec:
    """KServe V2 gRPC: serialized ``ModelInferRequest`` in, ``ModelInferResponse`` out, errors as plain text."""

    def decode(self, body: bytes) -> InferRequest:
        return grpccodec.decode(body)

    def encode(self, answer: Answer) -> bytes:
        return grpccodec.encode(answer.model, answer.version, answer.request, answer.outputs, answer.parameters)

    def error(self, message: str) -> bytes:
        return message.encode()


CODECS: dict[int, Codec] = {JSON: JsonCodec(), BINARY: BinaryCodec(), GRPC: GrpcCodec()}


def codec(number: int) -> Codec:
    """The codec with that number; ``InvalidRequest`` for one this replica does not speak."""
    try:
        return CODECS[number]
    except KeyError:
        raise InvalidRequest(f"unknown request codec {number}") from None
