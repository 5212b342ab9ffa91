"""V2 gRPC (``inference.GRPCInferenceService``) on the gateway's event loop: a thin adapter over the REST gateway.

ModelInfer routes like REST (model name, version, the ``x-knflow-tag`` metadata) and forwards the serialized
``ModelInferRequest`` untouched to a replica (codec ``GRPC``), whose serialized ``ModelInferResponse`` goes back
as it is. Health and metadata answer from the gateway's state. Errors map to gRPC status codes with the same
reason text as REST.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from infra.errors import InvalidRequest, KnflowError, Unavailable
from infra.guard import bearer_token, guard_for
from infra.namespaces import DEFAULT, qualified
from infra.settings import authority
from serving import dataplane
from serving.v2grpc import grpc_predict_v2_pb2 as pb

if TYPE_CHECKING:
    from serving.gateway import Gateway

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
TAG_METADATA = "x-knflow-tag"
#: HTTP status of a knflow error -> gRPC status code
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
STOP_GRACE_S = 5.0


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status code of an HTTP status (INTERNAL for any other failure)."""
    return CODES.get(http_status, grpc.StatusCode.INTERNAL)


def _tag(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == TAG_METADATA:
            return value if isinstance(value, str) else value.decode()
    return None


#: Health calls answer without a token, as the REST health routes do.
OPEN_CALLS = frozenset({"server_live", "server_ready", "server_metadata"})


def default_model(name: str) -> str:
    """The gateway's key of a model gRPC names: gRPC carries no token, so it reaches ``default``'s models only."""
    return qualified(DEFAULT, name)


class GrpcService:
    """The gRPC server of one gateway."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.server: grpc.aio.Server | None = None
        self.guard = guard_for(gateway.settings)  # the same policy as the REST routes: inference, health open

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); the bound port."""
        limit = self.gateway.settings.serving.max_request_bytes
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a second gateway on the same port must fail, not take half the calls
        ]
        self.server = grpc.aio.server(options=options)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, self._handlers()),))
        address = authority(host, port)  # gRPC reads an IPv6 host only in brackets
        try:
            bound = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise Unavailable(f"cannot listen for V2 gRPC on {address} ({exc}); set KNFLOW_GRPC_PORT") from None
        await self.server.start()
        return bound

    async def stop(self) -> None:
        """Stop listening; in-flight calls get ``STOP_GRACE_S`` to finish."""
        if self.server is not None:
            await self.server.stop(STOP_GRACE_S)

    def _handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        def unary(call: Callable[..., Awaitable[Any]], request: Any, response: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                self._guarded(call),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        return {
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            # bytes in, bytes out: the request travels to the replica as the client serialized it
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self._guarded(self.model_infer)),
        }

    def _allowed(self, call: Callable[..., Awaitable[Any]], context: grpc.aio.ServicerContext) -> str | None:
        """Why the caller may not make this call (None when it may): the guard's rule for inference."""
        if call.__name__ in OPEN_CALLS or self.guard.needed("inference", "POST") is None:
            return None
        metadata = dict(context.invocation_metadata() or ())
        token = bearer_token(str(metadata.get("authorization", "")))
        principal = self.guard.tokens.verify(token) if self.guard.tokens else None
        return None if principal is not None else "a bearer token is needed (metadata authorization: Bearer …)"

    def _guarded(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """The one place knflow errors become gRPC status codes (a failure of knflow's own is INTERNAL, logged)."""

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            refused = self._allowed(call, context)
            if refused:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, refused)
            try:
                return await call(request, context)
            except KnflowError as exc:
                await context.abort(status_code(exc.status), exc.message)
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception as exc:
                log.exception("gRPC %s failed", call.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")

        return guarded

    async def server_live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.gateway.ready())

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**dataplane.SERVER_METADATA)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        revision = self.gateway.pick(default_model(request.name), request.version or None, _tag(context))
        await self.gateway.fetch(revision)  # a model that cannot be fetched and verified is not ready
        return pb.ModelReadyResponse(ready=True)

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        revision = self.gateway.pick(default_model(request.name), request.version or None, _tag(context))
        meta = await self.gateway.metadata(revision)
        tensors = {k: [pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta[k]] for k in ("inputs", "outputs")}
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"], **tensors
        )

    async def model_infer(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # ModelReadyRequest's fields 1 and 2 (name, version) are ModelInferRequest's model_name and model_version:
        # reading the body as one parses just the routing fields and skips the tensors
        route = pb.ModelReadyRequest()
        try:
            route.ParseFromString(body)
        except DecodeError as exc:
            raise InvalidRequest(f"request is not a valid ModelInferRequest: {exc}") from None
        revision = self.gateway.pick(default_model(route.name), route.version or None, _tag(context))
        status, out = await self.gateway.forward(revision, body, dataplane.GRPC)
        if status != 200:
            await context.abort(status_code(status), out.decode(errors="replace"))
        return out
