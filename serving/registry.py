"""The model registry: versioned ONNX models with model cards, aliases and an audit trail, all in the artifact store.

Layout under ``models/<name>/``:

    <version>/model.onnx          the model bytes
    <version>/card.json           the ModelCard (sha256, signature, metrics, params, lineage)
    claims/<version:010d>         one object per version number, created with ``put_if_absent``:
                                  whoever creates it owns that number, so versions have no gaps
    idempotency/<digest>.json     one object per idempotency key (an event id): the version it made, or
                                  while it is made, since when and by which process (one that went down
                                  midway is finished by the next registration with its key, in the number
                                  it claimed: at once when its process on this machine has ended, else
                                  after IDEMPOTENT_WAIT_S)
    audit/<ns>-<rand>.json        one object per audit record (S3 has no append); aliases are the
                                  replay of these records, so concurrent alias moves never lose one
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from infra.errors import IntegrityError, InvalidRequest, NotFound
from infra.owner import gone, this_process
from infra.store import ArtifactStore, validate_key

log = logging.getLogger(__name__)

# the keys of serving.protocol.V2_TO_NUMPY, spelled out so the registry does not import numpy
V2_DATATYPES = (
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
    "FP16", "FP32", "FP64", "BYTES",
)  # fmt: skip
IDEMPOTENT_WAIT_S = 30.0


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: V2 datatype and shape (``-1`` = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, raw: TensorSpec | Mapping[str, Any]) -> TensorSpec:
        """A TensorSpec from itself or a ``{"name", "datatype", "shape"}`` mapping, validated."""
        spec = raw if isinstance(raw, TensorSpec) else cls(raw["name"], raw["datatype"], tuple(raw["shape"]))
        if spec.datatype not in V2_DATATYPES:
            raise InvalidRequest(f"tensor {spec.name!r}: datatype {spec.datatype!r} is not one of {V2_DATATYPES}")
        return cls(spec.name, spec.datatype, tuple(int(d) for d in spec.shape))


@dataclass(frozen=True)
class ModelCard:
    """What the registry knows about one model version."""

    name: str
    version: int
    sha256: str
    size: int
    onnx_key: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metrics: dict
    params: dict
    lineage: dict
    created: str
    description: str = ""
    format: str = "onnx"  # what was registered: "onnx", or the library a model was converted from
    conversion: dict = field(default_factory=dict)  # serving.formats.Conversion.to_dict() of a converted model
    task: str = ""  # "classification" or "regression" when known
    classes: list = field(default_factory=list)  # a classifier's classes: what its label output answers, in index order

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> ModelCard:
        raw = orjson.loads(data)
        raw["inputs"] = tuple(TensorSpec.of(t) for t in raw["inputs"])
        raw["outputs"] = tuple(TensorSpec.of(t) for t in raw["outputs"])
        return cls(**raw)


def _check_name(name: str) -> str:
    validate_key(f"models/{name}")
    if "/" in name:
        raise InvalidRequest(f"model name {name!r} must not contain '/'")
    return name


def onnx_signature(onnx_bytes: bytes) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs declared by an ONNX graph, as V2 tensor specs."""
    import onnx

    from serving.protocol import ONNX_TO_V2

    graph = onnx.load_model_from_string(onnx_bytes).graph
    initializers = {i.name for i in graph.initializer}

    def specs(values: Iterable[Any]) -> tuple[TensorSpec, ...]:
        out = []
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            out.append(TensorSpec(v.name, ONNX_TO_V2[onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).str], shape))
        return tuple(out)

    return specs(graph.input), specs(graph.output)


class ModelRegistry:
    """Registered models and their versions, kept in an artifact store so any process can read them."""

    def __init__(self, store: ArtifactStore):
        self.store = store

    # -- registering -------------------------------------------------------------
    def register(
        self,
        name: str,
        onnx: bytes | Path,
        *,
        inputs: Iterable[TensorSpec | Mapping[str, Any]] | None = None,
        outputs: Iterable[TensorSpec | Mapping[str, Any]] | None = None,
        metrics: dict | None = None,
        params: dict | None = None,
        lineage: dict | None = None,
        idempotency_key: str | None = None,
        description: str = "",
        format: str = "onnx",
        conversion: Mapping[str, Any] | None = None,
        task: str = "",
        classes: Iterable[Any] = (),
    ) -> ModelCard:
        """Store a new version (next number, no gaps); the same ``idempotency_key`` returns the first card.

        ``task`` and ``classes`` (what the label output answers, in index order) go on the card as they are.
        """
        _check_name(name)
        data = Path(onnx).read_bytes() if isinstance(onnx, Path) else bytes(onnx)
        if inputs is None or outputs is None:
            found_in, found_out = onnx_signature(data)
            inputs, outputs = inputs or found_in, outputs or found_out
        idem_key, version = None, None
        if idempotency_key is not None:
            idem_key = f"models/{name}/idempotency/{hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]}.json"
            if self.store.put_if_absent(idem_key, self._taking(idempotency_key)) is None:
                found = self._await_idempotent(name, idem_key, idempotency_key)
                if isinstance(found, ModelCard):
                    return found
                version = found  # its owner went down mid-registration: this one finishes it (its claim, if any)
        if version is None:
            version = self._claim_version(name, idempotency_key)
        card = self._write_version(
            name,
            version,
            data,
            inputs,
            outputs,
            metrics=metrics,
            params=params,
            lineage=lineage,
            description=description,
            format=format,
            conversion=conversion,
            task=task,
            classes=list(classes),
        )
        if idem_key is not None:
            self.store.put(idem_key, orjson.dumps({"key": idempotency_key, "version": version}))
        self._audit(name, {"action": "register", "version": version, "actor": "registry", "sha256": card.sha256})
        log.info("registered model %s version %d (sha256 %s)", name, version, card.sha256[:12])
        return card

    def register_model(
        self,
        name: str,
        model: Any,
        sample: Any = None,
        *,
        tolerance: float | None = None,
        metrics: dict | None = None,
        params: dict | None = None,
        lineage: dict | None = None,
        idempotency_key: str | None = None,
        description: str = "",
    ) -> ModelCard:
        """Convert a fitted scikit-learn, XGBoost or LightGBM model to ONNX (``serving.formats.convert``, checked on
        ``sample`` rows) and register it; the card records the original format and the conversion's facts."""
        from serving.formats import TOLERANCE, convert

        _check_name(name)
        onnx_bytes, facts = convert(model, sample, tolerance=TOLERANCE if tolerance is None else tolerance)
        return self.register(
            name,
            onnx_bytes,
            metrics=metrics,
            params=params,
            lineage=lineage,
            idempotency_key=idempotency_key,
            description=description,
            format=facts.format,
            conversion=facts.to_dict(),
            task={"classifier": "classification", "regressor": "regression"}.get(facts.task, ""),
            classes=facts.classes,
        )

    def _write_version(
        self,
        name: str,
        version: int,
        data: bytes,
        inputs: Iterable[TensorSpec | Mapping[str, Any]],
        outputs: Iterable[TensorSpec | Mapping[str, Any]],
        **about: Any,
    ) -> ModelCard:
        """Upload model.onnx, then its card (the card's presence is what makes the version visible)."""
        onnx_key = f"models/{name}/{version}/model.onnx"
        info = self.store.put(onnx_key, data)
        card = ModelCard(
            name=name,
            version=version,
            sha256=info.sha256,
            size=info.size,
            onnx_key=onnx_key,
            inputs=tuple(TensorSpec.of(t) for t in inputs),
            outputs=tuple(TensorSpec.of(t) for t in outputs),
            metrics=dict(about["metrics"] or {}),
            params=dict(about["params"] or {}),
            lineage=dict(about["lineage"] or {}),
            created=datetime.now(UTC).isoformat(),
            description=about["description"],
            format=about["format"],
            conversion=dict(about["conversion"] or {}),
            task=about["task"],
            classes=about["classes"],
        )
        self.store.put(f"models/{name}/{version}/card.json", card.to_json(), content_type="application/json")
        return card

    def _claim_version(self, name: str, idempotency_key: str | None) -> int:
        """Create ``claims/<v>`` for the lowest free ``v`` above the highest claimed one."""
        version = max(self._claimed(name), default=0) + 1
        body = orjson.dumps({"idempotency_key": idempotency_key, "at": datetime.now(UTC).isoformat()})
        while self.store.put_if_absent(f"models/{name}/claims/{version:010d}", body) is None:
            version += 1
        return version

    def _claimed(self, name: str) -> list[int]:
        return [int(o.key.rsplit("/", 1)[1]) for o in self.store.list(f"models/{name}/claims/")]

    def _await_idempotent(self, name: str, idem_key: str, idempotency_key: str) -> ModelCard | int | None:
        """Another registration owns this key: wait for its card (it may still be uploading). One that has not
        finished ``IDEMPOTENT_WAIT_S`` after it began, or whose process on this machine has ended, went down: this
        one takes the key over (compare-and-swap, so only one does) → the version the other had claimed (None: none
        yet), to finish."""
        while True:
            raw, tag = self.store.get_versioned(idem_key)
            record = orjson.loads(raw)
            if "version" in record:
                return self.get(name, record["version"])
            if time.time() - record.get("at", 0.0) < IDEMPOTENT_WAIT_S and not gone(record.get("owner")):
                time.sleep(0.05)
                continue
            if self.store.put_if_match(idem_key, self._taking(idempotency_key), tag) is not None:
                log.warning("model %s: finishing registration %s, which went down midway", name, idempotency_key)
                return self._claimed_by(name, idempotency_key)

    @staticmethod
    def _taking(idempotency_key: str) -> bytes:
        """The record of a registration taking ``idempotency_key``: when, and which process (``infra.owner``)."""
        return orjson.dumps({"key": idempotency_key, "at": time.time(), "owner": this_process()})

    def _claimed_by(self, name: str, idempotency_key: str) -> int | None:
        """The version number a registration with ``idempotency_key`` claimed (newest first), or None."""
        for version in sorted(self._claimed(name), reverse=True):
            body = orjson.loads(self.store.get(f"models/{name}/claims/{version:010d}"))
            if body.get("idempotency_key") == idempotency_key:
                return version
        return None

    # -- reading -------------------------------------------------------------------
    def get(self, name: str, version: int | str = "latest") -> ModelCard:
        """One version's card, by number or by alias (``latest`` is the highest version)."""
        _check_name(name)
        number = self._resolve(name, version)
        try:
            return ModelCard.from_json(self.store.get(f"models/{name}/{number}/card.json"))
        except NotFound:
            raise NotFound(f"model {name!r} has no version {version!r}") from None

    def _resolve(self, name: str, version: int | str) -> int:
        if isinstance(version, int) or (isinstance(version, str) and version.isdigit()):
            return int(version)
        if version == "latest":
            numbers = self._card_versions(name)
            if not numbers:
                raise NotFound(f"model {name!r} is not registered")
            return numbers[-1]
        aliases = self.aliases(name)
        if version not in aliases:
            raise NotFound(f"model {name!r} has no alias {version!r} (aliases: {sorted(aliases)})")
        return aliases[version]

    def _card_versions(self, name: str) -> list[int]:
        keys = (o.key for o in self.store.list(f"models/{name}/"))
        return sorted(int(k.split("/")[2]) for k in keys if k.endswith("/card.json"))

    def versions(self, name: str) -> list[ModelCard]:
        """Every version's card, oldest first."""
        _check_name(name)
        return [self.get(name, v) for v in self._card_versions(name)]

    def models(self) -> list[str]:
        """Names of every registered model."""
        keys = (o.key for o in self.store.list("models/"))
        return sorted({k.split("/")[1] for k in keys if k.endswith("/card.json")})

    # -- aliases and audit ---------------------------------------------------------
    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str = "", once: str | None = None
    ) -> None:
        """Point ``alias`` (e.g. ``production``) at ``version``; recorded in the audit trail (``once``: see
        ``_audit``)."""
        if alias == "latest" or alias.isdigit() or not alias:
            raise InvalidRequest(f"alias {alias!r} is reserved or empty")
        self.get(name, version)  # must exist
        record = {"action": "set_alias", "alias": alias, "version": int(version), "actor": actor, "reason": reason}
        self._audit(name, record, once)

    def note(self, name: str, action: str, *, version: int, actor: str, reason: str, once: str | None = None) -> None:
        """Record a decision about ``version`` that moves no alias (e.g. a canary rolled back) in the audit trail
        (``once``: see ``_audit``)."""
        self.get(name, version)  # must exist
        self._audit(name, {"action": action, "version": int(version), "actor": actor, "reason": reason}, once)

    def aliases(self, name: str) -> dict[str, int]:
        """Current aliases of ``name``: the replay of its audit trail."""
        out: dict[str, int] = {}
        for record in self.audit(name):
            if record["action"] == "set_alias":
                out[record["alias"]] = record["version"]
        return out

    def audit(self, name: str) -> list[dict]:
        """Every audit record of ``name``, oldest first."""
        _check_name(name)
        return [orjson.loads(self.store.get(o.key)) for o in self.store.list(f"models/{name}/audit/")]

    def _audit(self, name: str, record: dict, once: str | None = None) -> None:
        """Append ``record``; with ``once`` (the id of the decision it records), only if no record carries that id
        yet, so a decision made again after its maker went down midway is in the trail once."""
        if once is not None:
            if any(earlier.get("once") == once for earlier in self.audit(name)):
                return
            record = {**record, "once": once}
        record = {**record, "at": datetime.now(UTC).isoformat()}
        key = f"models/{name}/audit/{time.time_ns():020d}-{secrets.token_hex(4)}.json"
        self.store.put(key, orjson.dumps(record), content_type="application/json")

    # -- local copies --------------------------------------------------------------
    def fetch(self, name: str, version: int | str, cache_dir: Path) -> Path:
        """A local copy of the version's model.onnx, its sha256 checked against the card (once; cached by digest)."""
        card = self.get(name, version)
        dest = Path(cache_dir) / name / str(card.version) / f"{card.sha256}.onnx"
        if dest.is_file():
            return dest
        tmp = dest.with_suffix(f".{secrets.token_hex(4)}.part")
        stored = self.store.download(card.onnx_key, tmp)  # the download checks the bytes against stored.sha256
        if stored.sha256 != card.sha256:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(
                f"model {name} version {card.version}: model.onnx has sha256 {stored.sha256}, "
                f"the model card records {card.sha256}; refusing to load it"
            )
        tmp.replace(dest)
        return dest
