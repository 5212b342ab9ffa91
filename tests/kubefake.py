"""A fake Kubernetes API server for the cluster seam's tests: a real aiohttp server on loopback, in its own thread,
that keeps Knative Services in memory and answers Kubernetes JSON, recording every request it gets.

It does what the calls under test rely on and no more: GET / POST / JSON merge patch (RFC 7386, with the
``resourceVersion`` precondition answered 409 as the API server does) and list by label selector for Knative
Services, a list of pods and each pod's ``/metrics`` through the pod proxy, Kubeflow Trainer TrainJobs (create, 409
when the name exists, and a watch that streams the job running then ending as ``trainjob_end`` says), and planted
refusals (``refuse``) answered with a ``Status`` object. ``kubeconfig`` is a file that points the ``kubernetes``
client at it.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

SERVICES = "/apis/serving.knative.dev/v1/namespaces/{ns}/services"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"


@dataclass(frozen=True)
class Call:
    """One request the fake API server got: method, path, query, content type and JSON body (None when empty)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body | {"code": code}, status=code)


def _selected(labels: dict[str, str], selector: str) -> bool:
    wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
    return all(labels.get(k) == v for k, v in wanted.items())


@dataclass
class FakeKube:
    """The server's state: Knative Services by namespace/name, pods (labels, phase, metrics text), refusals."""

    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    refuse: dict[tuple[str, str], tuple[int, str, str]] = field(default_factory=dict)  # (method, path) -> answer
    trainjobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    trainjob_end: tuple[str, str, str] = ("Complete", "JobsCompleted", "")  # condition type, reason, message
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    kubeconfig: Path | None = None
    _version: int = 0

    def add_pod(self, ns: str, name: str, revision: str, metrics: str, phase: str = "Running") -> None:
        labels = {"serving.knative.dev/revision": revision}
        self.pods[(ns, name)] = {"metadata": {"name": name, "namespace": ns, "labels": labels},
                                 "status": {"phase": phase}, "metrics": metrics}  # fmt: skip

    def _stamp(self, resource: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        resource["metadata"]["resourceVersion"] = str(self._version)
        return resource

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        content_type = request.content_type if raw else ""
        self.calls.append(Call(request.method, request.path, dict(request.query), content_type, body))
        if (request.method, request.path) in self.refuse:
            return status(*self.refuse[(request.method, request.path)])
        parts = request.path.strip("/").split("/")
        if request.path.startswith("/apis/serving.knative.dev/v1/namespaces/") and parts[5:6] == ["services"]:
            return self._service(request, parts[4], parts[6] if len(parts) > 6 else None, body)
        if request.path.startswith("/api/v1/namespaces/") and parts[4:5] == ["pods"]:
            return self._pod(request, parts[3], parts[5:])
        if request.path == TRAINJOBS.format(ns=parts[4] if len(parts) > 4 else ""):
            return self._trainjobs(request, parts[4], body)
        return status(404, "NotFound", f"the server could not find the requested resource {request.path}")

    def _service(self, request: web.Request, ns: str, name: str | None, body: Any) -> web.Response:
        if name is None and request.method == "GET":
            selector = request.query.get("labelSelector", "")
            items = [s for (n, _), s in sorted(self.services.items()) if n == ns and
                     _selected(s["metadata"].get("labels") or {}, selector)]  # fmt: skip
            return web.json_response({"kind": "ServiceList", "items": items})
        if name is None and request.method == "POST":
            key = (ns, body["metadata"]["name"])
            if key in self.services:
                return status(409, "AlreadyExists", f'services.serving.knative.dev "{key[1]}" already exists')
            self.services[key] = self._stamp(copy.deepcopy(body))
            return web.json_response(self.services[key], status=201)
        current = self.services.get((ns, name or ""))
        if current is None:
            return status(404, "NotFound", f'services.serving.knative.dev "{name}" not found')
        if request.method == "PATCH":
            wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "the object has been modified; please apply your changes again")
            self.services[(ns, name or "")] = current = self._stamp(merge_patch(current, body))
        return web.json_response(current)

    def _pod(self, request: web.Request, ns: str, rest: list[str]) -> web.Response:
        if not rest:
            selector = request.query.get("labelSelector", "")
            items = [{k: v for k, v in p.items() if k != "metrics"} for (n, _), p in sorted(self.pods.items())
                     if n == ns and _selected(p["metadata"]["labels"], selector)]  # fmt: skip
            return web.json_response({"kind": "PodList", "items": items})
        name, _, port = rest[0].partition(":")
        pod = self.pods.get((ns, name))
        if pod is None or rest[1:] != ["proxy", "metrics"] or port != "8080":
            return status(404, "NotFound", f'pods "{rest[0]}" not found')
        return web.Response(text=pod["metrics"], content_type="text/plain")

    def _trainjobs(self, request: web.Request, ns: str, body: Any) -> web.Response:
        if request.method == "POST":
            key = (ns, body["metadata"]["name"])
            if key in self.trainjobs:
                return status(409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{key[1]}" already exists')
            self.trainjobs[key] = self._stamp(copy.deepcopy(body))
            return web.json_response(self.trainjobs[key], status=201)
        name = request.query.get("fieldSelector", "").removeprefix("metadata.name=")
        job = self.trainjobs.get((ns, name))
        if request.query.get("watch") != "true" or job is None:
            return status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
        kind, reason, message = self.trainjob_end
        ended = {"type": kind, "status": "True", "reason": reason, "message": message}
        events = [{"type": "ADDED", "object": job | {"status": {"conditions": []}}},
                  {"type": "MODIFIED", "object": job | {"status": {"conditions": [ended]}}}]  # fmt: skip
        return web.Response(body=b"".join(orjson.dumps(e) + b"\n" for e in events), content_type="application/json")


def kubeconfig(path: Path, url: str) -> Path:
    """Write a kubeconfig whose one cluster is ``url`` (bearer token ``t``); → its path."""
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: '{url}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    return path


def start_fake_kube(tmp_path: Path) -> tuple[FakeKube, Any]:
    """Start a ``FakeKube`` on a free loopback port in a thread of its own; (fake, stop)."""
    fake, loop, ready = FakeKube(), asyncio.new_event_loop(), threading.Event()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    fake.kubeconfig = kubeconfig(tmp_path / "kubeconfig", fake.url)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return fake, stop
