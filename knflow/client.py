"""``knflow.Client``: submit runs to a running knflow platform, follow them, and call the models they serve.

    from knflow import Client

    client = Client("http://127.0.0.1:8183")    # the knflow server: `knflow up` prints it (the dashboard port)
    run = client.submit((x, y), dataset="iris", options={"train": {"model": "mlp", "epochs": 10}})
    for event in run.follow(timeout=600):       # events as they come, until deployed, not deployed or failed
        print(event.type)
    outcome = run.wait()                         # status, model, version, endpoint
    run.infer(x[:5])                             # {"label": array([...]), "probabilities": array([[...]])}
    client.runs(experiment="iris")               # the runs table's rows; client.compare(a, b), run.logs(step=...)

Errors are knflow's (``infra.errors``, mapped from the server's answers by ``infra.httpclient``): a refused
submission raises ``InvalidRequest`` with the server's reason, an unknown pipeline ``NotFound``, a platform
that does not answer ``Unavailable``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
import orjson

from functions.contract import LIFECYCLE
from infra.auth import client_token
from infra.errors import Conflict
from infra.httpclient import JsonClient
from infra.namespaces import HEADER, check
from infra.settings import Settings, load_settings
from knflow.follow import SeenEvent, parse_page
from knflow.outcome import NOT_DEPLOYED, RunOutcome, follow
from knflow.upload import as_files, multipart
from serving.client import ServingClient

DEFAULT_URL = "http://127.0.0.1:8183"
_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8}


class Client:
    """A running platform, reached through its knflow server (``http://host:dashboard_port``)."""

    def __init__(
        self, url: str = DEFAULT_URL, *, token: str | None = None, namespace: str | None = None, timeout: float = 60.0
    ):
        """``token``: a bearer token (``knflow token create``); by default ``KNFLOW_SECURITY_TOKEN``, else the
        admin token ``knflow up`` keeps for this machine's user in the data directory. ``namespace``: the one every
        call addresses (runs, models, endpoints); by default ``KNFLOW_NAMESPACE``, else the token's first."""
        if token is None or namespace is None:
            settings = load_settings()
            token = client_token(settings) if token is None else token
            namespace = settings.namespace if namespace is None else namespace
        self.url = url.rstrip("/")
        self.namespace = check(namespace) if namespace else None
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.namespace:
            self.headers[HEADER] = self.namespace  # one place: every call of this client addresses its namespace
        self.api = JsonClient(self.url, timeout=timeout, headers=self.headers)

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = 60.0) -> Client:
        """The client of the platform the settings name (``host``, ``dashboard_port``)."""
        url, token = settings.url(settings.dashboard_port), client_token(settings) or ""
        return cls(url, token=token, namespace=settings.namespace, timeout=timeout)

    def health(self) -> dict[str, Any]:
        """The server's health: its broker, gateway and artifact store."""
        return self.api.call("GET", "/api/health")

    def alive(self) -> bool:
        """Whether a knflow server answers at ``url``."""
        return self.api.alive("/api/health")

    # -- runs ---------------------------------------------------------------------------------------------
    def submit(
        self,
        data: Any,
        *,
        dataset: str,
        options: Mapping[str, Any] | None = None,
        pipeline: str = LIFECYCLE,
        filename: str | None = None,
        experiment: str | None = None,
    ) -> Run:
        """Start a run on ``data``: a path, bytes (with ``filename``), arrays ``(x, y)`` or a DataFrame holding the
        label column (``options["label"]``, default ``label``). The data lands under ``raw/<dataset>/``;
        ``experiment`` (the run option; default: the dataset) groups runs."""
        if experiment is not None:
            options = {**(options or {}), "experiment": experiment}
        label = str((options or {}).get("label", "label"))
        files = as_files(data, dataset=dataset, filename=filename, label=label)
        fields = [("dataset", dataset), ("pipeline", pipeline)]
        if options is not None:
            fields.append(("options", orjson.dumps(dict(options)).decode()))
        headers, body = multipart(fields, files)
        answer = self.api.call("POST", "/api/runs", raw=body, headers=headers)
        return Run(self, answer["runid"], key=answer["key"], dataset=answer["dataset"], pipeline=answer["pipeline"])

    def submit_key(
        self,
        key: str,
        *,
        dataset: str | None = None,
        options: Mapping[str, Any] | None = None,
        pipeline: str = LIFECYCLE,
    ) -> Run:
        """Start a run on an object already in the artifact store (``raw/<dataset>/<file>``)."""
        body = {
            "key": key,
            "dataset": dataset,
            "pipeline": pipeline,
            "options": None if options is None else dict(options),
        }
        answer = self.api.call("POST", "/api/runs", {k: v for k, v in body.items() if v is not None})
        return Run(self, answer["runid"], key=answer["key"], dataset=answer["dataset"], pipeline=answer["pipeline"])

    def run(self, runid: str) -> Run:
        """A handle on a run that already exists."""
        return Run(self, runid)

    def runs(
        self, *, dataset: str | None = None, experiment: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """The runs in the broker history, newest first (the dashboard's rows); only those of ``dataset``,
        ``experiment`` and ``status`` (running, succeeded, failed) when given."""
        query = {k: v for k, v in (("dataset", dataset), ("experiment", experiment), ("status", status)) if v}
        return self.api.call("GET", "/api/runs" + (f"?{urlencode(query)}" if query else ""))["runs"]

    def compare(self, *items: str) -> dict[str, Any]:
        """Runs (ids) or trials (``RUNID/TRIAL``) side by side: ``{"items": [...], "differs": ["params.lr", ...]}``."""
        return self.api.call("GET", f"/api/compare?{urlencode({'runs': ','.join(items)})}")

    def models(self) -> list[dict[str, Any]]:
        """Every registered model with its versions and aliases."""
        return self.api.call("GET", "/api/models")["models"]

    def pipelines(self) -> list[dict[str, Any]]:
        """The applied pipelines with their steps."""
        return self.api.call("GET", "/api/pipelines")["pipelines"]

    # -- schedules ----------------------------------------------------------------------------------------
    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule."""
        return self.api.call("GET", "/api/schedules")["schedules"]

    def add_schedule(
        self,
        name: str,
        *,
        cron: str,
        dataset: str,
        pipeline: str = LIFECYCLE,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Re-run ``pipeline`` on ``dataset``'s newest raw object on ``cron`` (a 6th field is seconds, locally)."""
        body = {
            "cron": cron,
            "dataset": dataset,
            "pipeline": pipeline,
            "options": None if options is None else dict(options),
        }
        return self.api.call("PUT", f"/api/schedules/{quote(name, safe='')}", body)

    def delete_schedule(self, name: str) -> None:
        """Stop and forget a schedule."""
        self.api.call("DELETE", f"/api/schedules/{quote(name, safe='')}")


class Run:
    """One run on the platform: its events, its outcome, and its deployed model."""

    def __init__(self, client: Client, runid: str, *, key: str = "", dataset: str = "", pipeline: str = LIFECYCLE):
        self.client, self.runid = client, runid
        self.key, self.dataset, self.pipeline = key, dataset, pipeline
        self.last: RunOutcome | None = None  # what the latest follow/wait saw

    def __repr__(self) -> str:
        return f"Run({self.runid!r}, key={self.key!r}, pipeline={self.pipeline!r})"

    def page(self, after: str | None = None, wait: float = 0.0, limit: int = 500) -> tuple[list[SeenEvent], str | None]:
        """One page of the run's events after cursor ``after``, waiting up to ``wait`` seconds for something new."""
        query = {"limit": limit, "wait": wait, **({"after": after} if after else {})}
        body = self.client.api.call("GET", f"/api/runs/{quote(self.runid, safe='')}/events?{urlencode(query)}")
        return parse_page(body, after)

    def events(self) -> list[SeenEvent]:
        """Every event of the run so far."""
        seen, after = [], None
        while True:
            page, after = self.page(after)
            seen += page
            if not page:
                return seen

    def follow(self, timeout: float = 900.0) -> Iterator[SeenEvent]:
        """The run's events as they come, until it is deployed, not deployed or failed (``Unavailable`` when it has
        not registered a model within ``timeout`` seconds)."""
        self.last = RunOutcome(self.runid, self.key)
        yield from follow(self.page, self.last, timeout=timeout, declined=self._declined)

    def wait(self, timeout: float = 900.0, on_event: Callable[[SeenEvent], None] | None = None) -> RunOutcome:
        """Follow the run to its end; its outcome (``status``, ``model``, ``version``, ``endpoint``, events)."""
        for event in self.follow(timeout):
            if on_event is not None:
                on_event(event)
        assert self.last is not None
        return self.last

    def detail(self) -> dict[str, Any]:
        """What the dashboard shows of the run: ``run`` (its row), ``steps``, ``trials``, ``model``, ``failures``."""
        return self.client.api.call("GET", f"/api/runs/{quote(self.runid, safe='')}")

    def logs(
        self, *, step: str | None = None, after: str | None = None, wait: float = 0.0, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], str]:
        """The functions' log lines for the run (of ``step`` when given) after cursor ``after``, waiting up to ``wait``
        seconds for one; and the cursor to ask after next."""
        query = {
            "limit": limit,
            "wait": wait,
            **({"after": after} if after else {}),
            **({"step": step} if step else {}),
        }
        body = self.client.api.call("GET", f"/api/runs/{quote(self.runid, safe='')}/logs?{urlencode(query)}")
        return body["lines"], body["next"]

    def outcome(self) -> dict[str, Any]:
        """The server's view of the run now: ``status``, ``model``, ``version``, ``endpoint``, ``reason``."""
        return self.client.api.call("GET", f"/api/runs/{quote(self.runid, safe='')}/outcome")

    def _declined(self, registered: dict[str, Any]) -> str | None:
        now = self.outcome()
        return now["reason"] if now["status"] == NOT_DEPLOYED else None

    def infer(self, inputs: Any, *, timeout: float = 60.0) -> dict[str, np.ndarray]:
        """KServe V2 inference on the run's deployed model: an array for its first input (cast to the input's
        datatype), or ``{input name: array}``; answers ``{output name: array}``."""
        if self.last is not None and self.last.endpoint and self.last.model:
            model, endpoint = self.last.model, self.last.endpoint
        else:
            now = self.outcome()
            if not now["endpoint"]:
                raise Conflict(
                    f"run {self.runid} has no deployed model ({now['status']}: {now['reason'] or 'not yet'})"
                )
            model, endpoint = now["model"], now["endpoint"]
        serving = ServingClient(endpoint.split("/v2/models/", 1)[0], timeout=timeout, headers=self.client.headers)
        if isinstance(inputs, Mapping):
            arrays = {name: np.asarray(value) for name, value in inputs.items()}
        else:
            first = serving.metadata(model)["inputs"][0]
            arrays = {first["name"]: np.asarray(inputs, dtype=_DTYPES.get(first["datatype"]))}
        return serving.infer(model, arrays)
