"""Turn a fitted scikit-learn, XGBoost or LightGBM model into ONNX bytes that serve over V2, refused unless ONNX
Runtime's answers on sample rows agree with the library's own ``predict`` / ``predict_proba``.

A classifier answers ``label`` [N] and ``probabilities`` [N, classes] (``scores`` from ``decision_function`` when it
has no probabilities); a regressor answers ``prediction`` ([N], or [N, targets]). A numeric model takes one FP32
tensor ``input`` [N, features]; an all-string sample gives one BYTES ``input``; a mapping of columns gives one input
per column, [N, 1], FP32 or BYTES (a Pipeline whose ColumnTransformer encodes string columns).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from infra.errors import InvalidRequest
from serving.converters import InputSpec, Predicted, library_of
from serving.float64 import FLOAT32, precision_of

log = logging.getLogger(__name__)

INPUT = "input"
TOLERANCE = 1e-4
MAX_CHECK_ROWS = 1000
RESHAPE_OPSET = 13
GENERATED_ROWS = 256
GENERATED = f"generated: {GENERATED_ROWS} rows drawn from N(0, 1), seed 0 (no sample rows were given)"

Sample = np.ndarray | Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Conversion:
    """The facts of one conversion, for the model card: what was converted, with what, and how closely it agrees."""

    format: str  # "sklearn", "xgboost" or "lightgbm"
    model_class: str  # e.g. "sklearn.pipeline.Pipeline"
    task: str  # "classifier" or "regressor"
    library: str  # e.g. "scikit-learn 1.6.1"
    converter: str  # e.g. "skl2onnx 1.18.0"
    opsets: tuple[tuple[str, int], ...]  # (domain, version); "" is the default ONNX domain
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    classes: tuple
    sample: str  # "given" or how the rows were generated
    rows_checked: int
    max_abs_diff: float  # over probabilities / scores / predictions
    tolerance: float
    label_ties: int  # rows whose label differs only because two classes tie within the tolerance
    precision: str = FLOAT32  # "float64": the graph computes as scikit-learn does on float64 rows (serving.float64)

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples as lists)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        out["opsets"] = dict(self.opsets)
        return out


@dataclass(frozen=True)
class _Rows:
    """The check rows twice: as ONNX Runtime's feeds and as the matrix the library predicts on."""

    specs: tuple[InputSpec, ...]
    feeds: dict[str, np.ndarray]
    matrix: np.ndarray
    origin: str


def convert(
    model: Any,
    sample: Sample | None = None,
    *,
    tolerance: float = TOLERANCE,
    max_rows: int = MAX_CHECK_ROWS,
) -> tuple[bytes, Conversion]:
    """ONNX bytes for a fitted model and the facts of its conversion; InvalidRequest with the reason when it cannot
    be converted or when its answers on the first ``max_rows`` sample rows differ from the library's."""
    if not tolerance >= 0 or max_rows < 1:
        raise InvalidRequest(f"tolerance must be >= 0 and max_rows >= 1, got {tolerance} and {max_rows}")
    library = library_of(model)
    task = library.task(model)
    rows = _rows(sample, library.n_features(model), max_rows)
    proto = _third_party(f"cannot convert {type(model).__qualname__} to ONNX", library.to_onnx, model, rows.specs)
    want = _third_party("the library cannot predict on the sample rows", library.predict, model, rows.matrix)
    outputs = _output_names(task, want)
    onnx_bytes = _finish(proto, outputs, flatten=task == "regressor" and np.ndim(want.prediction) == 1)
    classes = library.classes(model)
    diff, ties = _check(onnx_bytes, rows, want, classes, tolerance)
    library_version, converter_version = library.versions()
    facts = Conversion(
        format=library.format,
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        task=task,
        library=library_version,
        converter=converter_version,
        opsets=tuple(sorted((o.domain, o.version) for o in proto.opset_import)),
        inputs=tuple(s.name for s in rows.specs),
        outputs=outputs,
        classes=classes,
        sample=rows.origin,
        rows_checked=len(rows.matrix),
        max_abs_diff=diff,
        tolerance=tolerance,
        label_ties=ties,
        precision=precision_of(proto),
    )
    log.info("converted %s (%s) to ONNX: max |diff| %.3g over %d rows", facts.model_class, task, diff, len(rows.matrix))
    return onnx_bytes, facts


def _third_party(refusal: str, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``; an error of the converter or library is the model's refusal, with the library's reason."""
    try:
        return call(*args)
    except InvalidRequest:
        raise
    except Exception as exc:  # whatever a third-party library raises is a reason to refuse this model, not a crash
        log.debug("%s", refusal, exc_info=True)
        reason = (str(exc).strip().splitlines() or [""])[0][:500]
        raise InvalidRequest(f"{refusal}: {type(exc).__name__}: {reason}") from exc


# -- sample rows ---------------------------------------------------------------------------------------------------
def _rows(sample: Sample | None, n_features: int | None, max_rows: int) -> _Rows:
    if sample is None:
        if not n_features:
            raise InvalidRequest("the model does not say how many features it takes: give sample rows")
        x = np.random.default_rng(0).standard_normal((GENERATED_ROWS, n_features)).astype(np.float32)
        return _Rows((InputSpec(INPUT, "float", n_features),), {INPUT: x}, x.astype(np.float64), GENERATED)
    if isinstance(sample, Mapping):
        rows = _column_rows(sample, max_rows)
    else:
        rows = _matrix_rows(np.asarray(sample)[:max_rows])
    if n_features and rows.matrix.shape[1] != n_features:
        raise InvalidRequest(f"the sample has {rows.matrix.shape[1]} columns, the model takes {n_features} features")
    return rows


def _is_text(values: np.ndarray) -> bool:
    return values.dtype.kind in "US" or (values.dtype.kind == "O" and all(isinstance(v, str) for v in values.flat))


def _matrix_rows(x: np.ndarray) -> _Rows:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidRequest(f"sample rows must be a non-empty 2-D array (rows, features), got shape {list(x.shape)}")
    if _is_text(x):
        strings = x.astype(str).astype(object)
        return _Rows((InputSpec(INPUT, "string", x.shape[1]),), {INPUT: strings}, strings, "given")
    if x.dtype.kind not in "biuf":
        raise InvalidRequest("sample columns mix numbers and strings: pass them as a mapping {column name: values}")
    x32 = x.astype(np.float32)
    return _Rows((InputSpec(INPUT, "float", x.shape[1]),), {INPUT: x32}, x32.astype(np.float64), "given")


def _column_rows(columns: Mapping[str, np.ndarray], max_rows: int) -> _Rows:
    """One input per column; the library sees the columns side by side, in the mapping's order."""
    if not columns:
        raise InvalidRequest("the sample mapping holds no columns")
    specs, feeds, parts = [], {}, []
    for name, raw in columns.items():
        values = np.asarray(raw)[:max_rows].reshape(-1)
        if _is_text(values):
            column = values.astype(str).astype(object)
            specs.append(InputSpec(name, "string", 1))
        elif values.dtype.kind in "biuf":
            column = values.astype(np.float32)
            specs.append(InputSpec(name, "float", 1))
        else:
            raise InvalidRequest(f"sample column {name!r} is neither numbers nor strings ({values.dtype})")
        feeds[name] = column.reshape(-1, 1)
        parts.append(column)
    if len({len(p) for p in parts}) != 1 or not len(parts[0]):
        raise InvalidRequest(f"sample columns must be non-empty and of one length, got {[len(p) for p in parts]}")
    text = any(s.kind == "string" for s in specs)
    matrix = np.column_stack([p.astype(object) if text else p.astype(np.float64) for p in parts])
    return _Rows(tuple(specs), feeds, matrix, "given")


# -- the graph -----------------------------------------------------------------------------------------------------
def _output_names(task: str, want: Predicted) -> tuple[str, ...]:
    if task == "regressor":
        return ("prediction",)
    return ("label", "probabilities" if want.probabilities is not None else "scores")


def _finish(proto: Any, names: tuple[str, ...], *, flatten: bool) -> bytes:
    """Name the outputs for V2, give every input and output a dynamic batch dimension, flatten a single-target
    regressor's [N, 1] to [N] (what ``predict`` returns)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    if len(graph.output) != len(names):
        found = [o.name for o in graph.output]
        raise InvalidRequest(f"the converted graph answers {found}, knflow expected {len(names)} outputs {list(names)}")
    for output, name in zip(graph.output, names, strict=True):
        _rename(graph, output.name, name)
    if flatten:
        # onnxmltools' tree ensembles import only ai.onnx.ml; Reshape needs the default domain
        if not any(o.domain in ("", "ai.onnx") for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid("", RESHAPE_OPSET))
        _rename(graph, names[0], f"{names[0]}_2d")
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), f"{names[0]}_shape"))
        graph.node.append(helper.make_node("Reshape", [f"{names[0]}_2d", f"{names[0]}_shape"], [names[0]]))
        graph.output[0].name = names[0]
        del graph.output[0].type.tensor_type.shape.dim[1:]
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _rename(graph: Any, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in graph.output:
        if value.name == old:
            value.name = new


# -- the check -----------------------------------------------------------------------------------------------------
def _check(onnx_bytes: bytes, rows: _Rows, want: Predicted, classes: tuple, tolerance: float) -> tuple[float, int]:
    """The max |ONNX Runtime - library| and the number of tied labels; InvalidRequest above ``tolerance``."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, rows.feeds), strict=True))
    if want.prediction is not None:
        return _compare("prediction", got["prediction"], want.prediction, tolerance, scaled=True), 0
    name = "probabilities" if want.probabilities is not None else "scores"
    reference = want.probabilities if want.probabilities is not None else want.scores
    assert reference is not None and want.label is not None, "a classifier's prediction has labels and scores"
    diff = _compare(name, got[name], reference, tolerance, scaled=name == "scores")
    return diff, _label_ties(got["label"], want.label, np.reshape(reference, got[name].shape), classes, tolerance)


def _compare(name: str, got: np.ndarray, want: np.ndarray, tolerance: float, *, scaled: bool) -> float:
    """Max |got - want|; probabilities must agree within ``tolerance``, scores and predictions within ``tolerance``
    times their magnitude when that is above 1 (float32 carries about 7 significant digits)."""
    want = np.asarray(want, dtype=np.float64)
    if want.size != got.size:
        raise InvalidRequest(f"ONNX {name} has shape {list(got.shape)}, the library's has {list(want.shape)}")
    want = want.reshape(got.shape)
    both_nan = np.isnan(want) & np.isnan(got)
    diff = np.where(both_nan, 0.0, np.abs(got.astype(np.float64) - want))
    diff = np.where(np.isnan(diff), np.inf, diff)
    allowed = tolerance * (np.maximum(1.0, np.abs(np.nan_to_num(want))) if scaled else 1.0)
    worst = float(diff.max())
    bad = np.argwhere(diff > allowed)
    if len(bad):
        row = int(bad[0][0])
        raise InvalidRequest(
            f"the ONNX model's {name} differ from the library's by up to {worst:.3g} (tolerance {tolerance}"
            f"{', scaled by magnitude' if scaled else ''}; first at sample row {row}): refusing it"
        )
    return worst


def _label_ties(got: np.ndarray, want: np.ndarray, reference: np.ndarray, classes: tuple, tolerance: float) -> int:
    """Labels must match, except where the library itself has two classes tied within the tolerance."""
    got, want = np.asarray(got).reshape(-1), np.asarray(want).reshape(-1)
    if got.shape != want.shape:
        raise InvalidRequest(f"the ONNX model answers {got.size} labels for {want.size} rows")
    index = {c: i for i, c in enumerate(classes)}
    ties = 0
    numeric = got.dtype.kind in "biuf" and want.dtype.kind in "biuf"
    differ = got != want if numeric else got.astype(str) != want.astype(str)
    for row in np.flatnonzero(differ):
        g, w = index.get(_plain(got[row])), index.get(_plain(want[row]))
        scores = reference[row] if reference.ndim == 2 and reference.shape[1] == len(classes) else None
        if g is None or w is None or scores is None or abs(scores[g] - scores[w]) > tolerance:
            raise InvalidRequest(
                f"the ONNX model labels sample row {row} {_plain(got[row])!r}, the library {_plain(want[row])!r}: "
                "refusing it"
            )
        ties += 1
    return ties


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
