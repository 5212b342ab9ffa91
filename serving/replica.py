"""One model replica: a process that loads a runtime and answers framed V2 requests on a unix socket.

Requests are taken in arrival order; with batching on, requests that arrive within
``max_delay_ms`` of the first are stacked along axis 0 and run as one batch (up to ``max_batch``).
Before a run the replica tells the gateway which requests it starts (``framing.STARTED``), sending the
answers written so far in the same write.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infra.errors import InvalidRequest, KnflowError
from infra.http import error_body
from serving import dataplane, framing
from serving.protocol import InferRequest, check_signature
from serving.registry import TensorSpec
from serving.runtime import ModelRuntime, OnnxRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a replica process needs to start (sent to the fork server as JSON)."""

    socket: str
    model_path: str
    model: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    intra_op_threads: int = 1
    max_batch: int = 1
    max_delay_ms: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict) -> ReplicaSpec:
        raw = dict(raw)
        raw["inputs"] = tuple(TensorSpec.of(t) for t in raw["inputs"])
        raw["outputs"] = tuple(TensorSpec.of(t) for t in raw["outputs"])
        return cls(**raw)


@dataclass
class _Pending:
    rid: int
    writer: framing.RequestReader
    codec: int
    body: bytes
    request: InferRequest | None = None
    rows: int = 0
    key: tuple = field(default=())


class Replica:
    """Parses, checks, batches and runs requests for one revision.

    Nothing a client sends stops it: every request gets an answer (400 naming the field for a bad one,
    500 for a model that fails on it), and a fault in one request's handling fails only that request.
    """

    def __init__(self, spec: ReplicaSpec, runtime: ModelRuntime):
        self.spec = spec
        self.runtime = runtime
        self.queue: deque[_Pending] = deque()
        self.wakeup = asyncio.Event()
        self.output_names = {s.name for s in spec.outputs}
        self.outbox: dict[framing.RequestReader, list[bytes]] = {}
        self.last_batch = 1
        self.batchable = spec.max_batch > 1 and all(s.shape and s.shape[0] == -1 for s in spec.inputs)

    def accept(self, conn: framing.RequestReader, rid: int, codec: int, body: bytes) -> None:
        """Queue one request frame from a gateway connection."""
        self.queue.append(_Pending(rid, conn, codec, body))

    def protocol(self) -> framing.RequestReader:
        """A protocol instance for one gateway connection."""
        return framing.RequestReader(self.accept, self.wakeup.set)

    async def process(self) -> None:
        """Forever: take the next request (and, batching, its companions) and answer it."""
        while True:
            if not self.queue:
                self._flush()
                while not self.queue:  # a chunk holding only part of a frame wakes us with nothing queued
                    self.wakeup.clear()
                    await self.wakeup.wait()
            head = self.queue.popleft()
            first = head if head.request is not None else self._prepare(head)  # _gather may have decoded it
            if first is None:
                continue
            batch = [first]
            try:
                if self.batchable:
                    await self._gather(batch)
                    self.last_batch = len(batch)
                self._begin(batch)
                self._run(batch)
            except Exception as exc:  # a fault in knflow's own handling fails these requests, not the replica
                log.exception("replica: handling %d request(s) failed", len(batch))
                for item in batch:
                    self._reply(item, 500, dataplane.codec(item.codec).error(f"internal error: {exc}"))

    def _prepare(self, item: _Pending) -> _Pending | None:
        """Decode and check one request; a bad one is answered at once (None)."""
        try:
            item.request = dataplane.codec(item.codec).decode(item.body)
            check_signature(item.request, self.spec.inputs)
            unknown = set(item.request.outputs) - self.output_names
            if unknown:
                raise InvalidRequest(f"requested outputs {sorted(unknown)} are not outputs of the model")
        except KnflowError as exc:
            self._reply(item, exc.status, self._error(item, exc.message))
            return None
        except Exception as exc:  # a request the decoder did not foresee is still the client's: 400, and logged
            log.exception("replica: request %d could not be read", item.rid)
            self._reply(item, 400, self._error(item, f"request could not be read: {type(exc).__name__}: {exc}"))
            return None
        item.body = b""  # decoded: the raw bytes are no longer needed
        arrays = item.request.inputs
        first = next(iter(arrays.values()))
        item.rows = first.shape[0] if first.ndim else 1
        item.key = (item.request.outputs, *((n, a.shape[1:]) for n, a in sorted(arrays.items())))
        return item

    @staticmethod
    def _error(item: _Pending, message: str) -> bytes:
        try:
            return dataplane.codec(item.codec).error(message)
        except InvalidRequest:
            return error_body(message)

    async def _gather(self, batch: list[_Pending]) -> None:
        """Add queued compatible requests; wait up to max_delay for more only when the last batch had company.

        Waiting when requests come one at a time would only add latency: that is the adaptive part.
        """
        deadline = asyncio.get_running_loop().time() + self.spec.max_delay_ms / 1000
        rows = batch[0].rows
        while rows < self.spec.max_batch:
            if not self.queue:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or (self.last_batch == 1 and len(batch) == 1):
                    return
                self._flush()
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), remaining)
                except TimeoutError:
                    return
                continue
            if self.queue[0].request is None and self._prepare_head() is None:
                continue
            if self.queue[0].key != batch[0].key or rows + self.queue[0].rows > self.spec.max_batch:
                return
            batch.append(self.queue.popleft())
            rows += batch[-1].rows

    def _prepare_head(self) -> _Pending | None:
        item = self._prepare(self.queue[0])
        if item is None:
            self.queue.popleft()
        return item

    def _begin(self, batch: list[_Pending]) -> None:
        """Tell the gateway these requests have started (with the answers so far, in one write per connection)."""
        for item in batch:
            self.outbox.setdefault(item.writer, []).append(framing.started_frame(item.rid))
        self._flush()

    def _run(self, batch: list[_Pending]) -> None:
        requests = [p.request for p in batch if p.request is not None]
        assert len(requests) == len(batch), "only parsed requests are run"
        try:
            if len(batch) == 1:
                results = [self.runtime.run(requests[0].inputs, requests[0].outputs)]
            else:
                results = self._run_batch(batch, requests)
        except Exception as exc:  # the runtime's own errors become a 500 for these requests only
            log.exception("inference failed")
            for item in batch:
                self._reply(item, 500, self._error(item, f"inference failed: {exc}"))
            return
        # a batched answer says how many requests shared the run (V2 response parameters)
        parameters = {"batch_requests": len(batch)} if len(batch) > 1 else None
        for item, request, outputs in zip(batch, requests, results, strict=True):
            answer = dataplane.Answer(self.spec.model, self.spec.version, request, outputs, parameters)
            try:
                body = dataplane.codec(item.codec).encode(answer)
            except KnflowError as exc:
                self._reply(item, exc.status, self._error(item, exc.message))
                continue
            self._reply(item, 200, body)

    def _run_batch(self, batch: list[_Pending], requests: list[InferRequest]) -> list[dict[str, np.ndarray]]:
        first = requests[0]
        names = list(first.inputs)
        stacked = {n: np.concatenate([r.inputs[n] for r in requests]) for n in names}
        out = self.runtime.run(stacked, first.outputs)
        bounds = np.cumsum([p.rows for p in batch])[:-1]
        split = {n: np.split(a, bounds) for n, a in out.items()}
        return [{n: parts[i] for n, parts in split.items()} for i in range(len(batch))]

    def _reply(self, item: _Pending, status: int, body: bytes) -> None:
        self.outbox.setdefault(item.writer, []).append(framing.response_frame(item.rid, status, body))

    def _flush(self) -> None:
        """Send the frames written since the last flush, one syscall per gateway connection."""
        for writer, frames in self.outbox.items():
            if not writer.is_closing():
                writer.write(b"".join(frames))
        self.outbox.clear()


async def serve(spec: ReplicaSpec) -> None:
    """Load the model, listen on the spec's unix socket, answer until killed."""
    runtime = OnnxRuntime(Path(spec.model_path), intra_op_threads=spec.intra_op_threads)
    replica = Replica(spec, runtime)
    Path(spec.socket).unlink(missing_ok=True)
    tmp = f"{spec.socket}.{os.getpid()}"
    server = await asyncio.get_running_loop().create_unix_server(replica.protocol, path=tmp)
    os.rename(tmp, spec.socket)  # the socket appears only when it accepts: readiness is "connect works"
    async with server:
        await replica.process()
