"""scikit-learn, XGBoost and LightGBM models converted to ONNX at registration: served over V2 by the real gateway and
ONNX Runtime with the library's own answers, refused with the converter's reason when they cannot be converted."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import joblib
import lightgbm
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import xgboost
from aiohttp import ClientSession
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_digits
from sklearn.decomposition import PCA
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from infra.errors import InvalidRequest
from infra.store import ArtifactStore
from knflow.cli import main
from serving.formats import GENERATED, convert
from serving.modelfiles import read_sample
from serving.registry import ModelRegistry, TensorSpec
from tests.serving.helpers import mlp_onnx

ATOL = 1e-5


@cache
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits (8x8 pixel values 0..16): 1,500 training rows and labels, 297 held-out rows."""
    x, y = load_digits(return_X_y=True)
    return x[:1500], y[:1500], x[1500:]


@cache
def diabetes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diabetes progression in standard units (float32 answers cannot be within 1e-5 of values in the hundreds)."""
    x, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()
    return x[:400], y[:400], x[400:]


def scaled_gradient_boosting() -> Any:
    x, y, _ = digits()
    return make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=10, max_depth=2)).fit(x, y)


def sklearn_classifier() -> tuple[Any, np.ndarray]:
    return scaled_gradient_boosting(), digits()[2]


def sklearn_regressor() -> tuple[Any, np.ndarray]:
    x, y, held_out = diabetes()
    return RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0).fit(x, y), held_out


def xgboost_classifier() -> tuple[Any, np.ndarray]:
    x, y, held_out = digits()
    return xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(x, y), held_out


def xgboost_regressor() -> tuple[Any, np.ndarray]:
    x, y, held_out = diabetes()
    return xgboost.XGBRegressor(n_estimators=20, max_depth=3).fit(x, y), held_out


def lightgbm_classifier() -> tuple[Any, np.ndarray]:
    x, y, held_out = digits()
    return lightgbm.LGBMClassifier(n_estimators=10, num_leaves=8, verbose=-1).fit(x, y), held_out


def lightgbm_booster_regressor() -> tuple[Any, np.ndarray]:
    x, y, held_out = diabetes()
    return lightgbm.train({"objective": "regression", "verbose": -1}, lightgbm.Dataset(x, y), 20), held_out


async def deploy_and_infer(start_gateway: Callable, http: ClientSession, name: str, inputs: list[dict]) -> dict:
    """Deploy the latest version of ``name`` on a fresh gateway, send one V2 request, return its outputs by name."""
    gateway = await start_gateway()
    base = f"http://127.0.0.1:{gateway.port}"
    async with http.post(f"{base}/v1/models/{name}/revisions", json={}) as response:
        assert response.status == 201, await response.text()
    async with http.post(f"{base}/v2/models/{name}/infer", data=orjson.dumps({"inputs": inputs})) as response:
        body = orjson.loads(await response.read())
        assert response.status == 200, body
    return {o["name"]: o for o in body["outputs"]}


def fp32_input(x: np.ndarray) -> list[dict]:
    return [
        {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.astype(np.float32).ravel().tolist()}
    ]


@pytest.mark.parametrize("make", [sklearn_classifier, xgboost_classifier, lightgbm_classifier])
async def test_converted_classifier_serves_the_librarys_labels_and_probabilities(
    make: Callable, registry: ModelRegistry, start_gateway: Callable, http: ClientSession
) -> None:
    model, held_out = make()
    card = registry.register_model("clf", model, held_out, metrics={"accuracy": 0.9})
    assert card.inputs == (TensorSpec("input", "FP32", (-1, 64)),)
    assert card.outputs == (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 10)))
    facts = card.conversion
    assert card.format == facts["format"] and facts["task"] == "classifier" and facts["classes"] == list(range(10))
    assert facts["rows_checked"] == min(len(held_out), 1000) and facts["sample"] == "given"
    assert 0 <= facts["max_abs_diff"] <= facts["tolerance"] == 1e-4 and facts["converter"].split()[0] in (
        "skl2onnx",
        "onnxmltools",
    )
    assert card.metrics == {"accuracy": 0.9}

    outputs = await deploy_and_infer(start_gateway, http, "clf", fp32_input(held_out))
    assert outputs["label"]["datatype"] == "INT64" and outputs["label"]["shape"] == [len(held_out)]
    assert outputs["label"]["data"] == model.predict(held_out).tolist()
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities, model.predict_proba(held_out), rtol=0, atol=ATOL)


@pytest.mark.parametrize("make", [sklearn_regressor, xgboost_regressor, lightgbm_booster_regressor])
async def test_converted_regressor_serves_the_librarys_predictions(
    make: Callable, registry: ModelRegistry, start_gateway: Callable, http: ClientSession
) -> None:
    model, held_out = make()
    card = registry.register_model("reg", model, held_out)
    assert card.inputs == (TensorSpec("input", "FP32", (-1, 10)),)
    assert card.outputs == (TensorSpec("prediction", "FP32", (-1,)),)
    assert card.conversion["task"] == "regressor" and card.conversion["rows_checked"] == len(held_out)

    outputs = await deploy_and_infer(start_gateway, http, "reg", fp32_input(held_out))
    assert outputs["prediction"]["shape"] == [len(held_out)]
    want = model.predict(held_out.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(outputs["prediction"]["data"], want, rtol=0, atol=ATOL)


async def test_string_columns_become_one_input_each(
    registry: ModelRegistry, start_gateway: Callable, http: ClientSession
) -> None:
    rng = np.random.default_rng(0)
    size, color = rng.normal(size=300), rng.choice(["red", "green", "blue"], size=300)
    label = np.where((size > 0) ^ (color == "red"), "keep", "drop")
    encode = ColumnTransformer(
        [("size", StandardScaler(), [0]), ("color", OneHotEncoder(handle_unknown="ignore"), [1])]
    )
    model = make_pipeline(encode, LogisticRegression()).fit(np.column_stack([size.astype(object), color]), label)
    card = registry.register_model("tabular", model, {"size": size, "color": color})
    assert card.inputs == (TensorSpec("size", "FP32", (-1, 1)), TensorSpec("color", "BYTES", (-1, 1)))
    assert card.outputs[0] == TensorSpec("label", "BYTES", (-1,)) and card.conversion["classes"] == ["drop", "keep"]

    rows = [(-1.5, "red"), (2.0, "red"), (0.5, "green"), (0.1, "purple")]  # purple: a category never seen
    outputs = await deploy_and_infer(
        start_gateway,
        http,
        "tabular",
        [
            {"name": "size", "datatype": "FP32", "shape": [4, 1], "data": [r[0] for r in rows]},
            {"name": "color", "datatype": "BYTES", "shape": [4, 1], "data": [r[1] for r in rows]},
        ],
    )
    table = np.array(rows, dtype=object)
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["data"] == model.predict(table).tolist()
    np.testing.assert_allclose(
        np.array(outputs["probabilities"]["data"]).reshape(4, 2), model.predict_proba(table), rtol=0, atol=ATOL
    )


@pytest.mark.parametrize(
    "booster",
    [lambda: xgboost.XGBClassifier(n_estimators=5), lambda: lightgbm.LGBMClassifier(n_estimators=5, verbose=-1)],
    ids=["xgboost", "lightgbm"],
)
def test_boosted_trees_inside_a_pipeline_convert_behind_a_one_hot_encoder(booster: Callable) -> None:
    rng = np.random.default_rng(1)
    size, color = rng.normal(size=300), rng.choice(["red", "green", "blue"], size=300)
    encode = ColumnTransformer(
        [("size", "passthrough", [0]), ("color", OneHotEncoder(handle_unknown="ignore", sparse_output=False), [1])]
    )
    model = make_pipeline(encode, booster())
    model.fit(np.column_stack([size.astype(object), color]), (size > 0) ^ (color == "red"))
    onnx_bytes, facts = convert(model, {"size": size, "color": color})
    assert onnx_bytes and facts.format == "sklearn" and facts.inputs == ("size", "color")
    assert facts.max_abs_diff <= 1e-4 and facts.classes == (False, True)


def test_a_matrix_of_strings_is_one_bytes_input(registry: ModelRegistry) -> None:
    color = np.random.default_rng(2).choice(["red", "green", "blue"], size=(200, 2))
    model = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(color, color[:, 0] == color[:, 1])
    card = registry.register_model("m", model, color)
    assert card.inputs == (TensorSpec("input", "BYTES", (-1, 2)),) and card.conversion["max_abs_diff"] <= 1e-4


class Handmade(ClassifierMixin, BaseEstimator):
    """A user's own estimator: scikit-learn's API, but no converter knows it."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Handmade:
        self.classes_, self.n_features_in_ = np.unique(y), x.shape[1]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.classes_[0])


def test_model_no_converter_knows_is_refused_with_the_converters_reason(registry: ModelRegistry) -> None:
    x, y, held_out = digits()
    with pytest.raises(InvalidRequest, match="cannot convert Handmade to ONNX: MissingShapeCalculator"):
        registry.register_model("m", Handmade().fit(x, y), held_out)
    with pytest.raises(InvalidRequest, match="knflow converts scikit-learn, XGBoost and LightGBM models"):
        registry.register_model("m", {"weights": [1, 2, 3]}, held_out)
    assert registry.models() == []


@pytest.mark.parametrize(
    "unfitted",
    [
        GradientBoostingClassifier(),
        make_pipeline(StandardScaler(), Ridge()),
        xgboost.XGBClassifier(),
        lightgbm.LGBMRegressor(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_unfitted_model_is_refused(unfitted: Any, registry: ModelRegistry) -> None:
    with pytest.raises(InvalidRequest, match="not fitted"):
        registry.register_model("m", unfitted, digits()[2])
    assert registry.models() == []


def test_scaled_trees_answer_like_scikit_learn_on_held_out_rows_that_land_on_a_split(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held-out digit has a pixel value the training rows never had for that pixel, exactly halfway between two they
    had: the split sits on it. The graph scales in float64 and casts to float32 in front of the trees, as scikit-learn
    does, so the row goes down the same branch; scaled in float32 (the fallback) it goes the other way: refused."""
    model, held_out = scaled_gradient_boosting(), digits()[2]
    _, facts = convert(model, held_out, tolerance=1e-5)
    assert facts.precision == "float64" and facts.max_abs_diff <= 1e-5 and facts.label_ties == 0
    assert facts.inputs == ("input",) and facts.outputs == ("label", "probabilities")

    import serving.converters

    def no_float64(*_args: Any) -> None:
        raise RuntimeError("no float64 converter")

    monkeypatch.setattr(serving.converters, "float64_graph", no_float64)
    with pytest.raises(InvalidRequest, match=r"probabilities differ from the library's by up to 0\.\d+ \(tolerance"):
        registry.register_model("m", model, held_out)
    assert registry.models() == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0)),
        lambda: make_pipeline(MinMaxScaler(), PCA(16, random_state=0), GradientBoostingClassifier(n_estimators=5)),
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        lambda: DecisionTreeClassifier(random_state=0),
    ],
    ids=["scaler-forest", "minmax-pca-boosting", "scaler-logistic", "tree"],
)
def test_numeric_pipelines_compute_in_float64_and_agree_on_held_out_rows(make: Callable) -> None:
    x, y, held_out = digits()
    model = make().fit(x, y)
    onnx_bytes, facts = convert(model, held_out, tolerance=1e-5)
    assert facts.precision == "float64" and facts.max_abs_diff <= 1e-5
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {"input": held_out.astype(np.float32)})
    assert probabilities.dtype == np.float32 and (label == model.predict(held_out)).all()


def test_model_whose_onnx_answers_differ_beyond_the_tolerance_is_refused(registry: ModelRegistry) -> None:
    x, y, held_out = diabetes()
    model = Ridge().fit(x, y)
    with pytest.raises(InvalidRequest, match=r"prediction differ from the library's by up to .* \(tolerance 1e-12"):
        registry.register_model("m", model, held_out, tolerance=1e-12)
    assert registry.models() == []
    assert registry.register_model("m", model, held_out).conversion["max_abs_diff"] > 1e-12  # float32 is not exact


def test_without_sample_rows_the_check_uses_generated_rows_and_says_so(registry: ModelRegistry) -> None:
    x, y, _ = diabetes()
    card = registry.register_model("m", Ridge().fit(x, y))
    assert card.conversion["sample"] == GENERATED and card.conversion["rows_checked"] == 256


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (np.zeros((5, 9)), "the sample has 9 columns, the model takes 10 features"),
        (np.zeros(10), "non-empty 2-D array"),
        (np.zeros((0, 10)), "non-empty 2-D array"),
        (np.array([[1.0, "a"]], dtype=object), "mix numbers and strings"),
        ({"a": np.zeros(3), "b": np.zeros(2)}, "of one length"),
    ],
)
def test_unusable_sample_rows_are_refused(sample: Any, message: str) -> None:
    x, y, _ = diabetes()
    with pytest.raises(InvalidRequest, match=message):
        convert(Ridge().fit(x, y), sample)


def test_a_tolerance_that_is_no_number_is_refused() -> None:
    x, y, held_out = diabetes()
    with pytest.raises(InvalidRequest, match="tolerance must be >= 0"):
        convert(Ridge().fit(x, y), held_out, tolerance=float("nan"))


def test_label_differing_only_where_two_classes_tie_is_accepted_and_counted() -> None:
    from serving.formats import _label_ties

    want = np.array([[0.4, 0.4, 0.2], [0.1, 0.8, 0.1]])
    assert _label_ties(np.array([1, 1]), np.array([0, 1]), want, (0, 1, 2), 1e-4) == 1
    with pytest.raises(InvalidRequest, match="labels sample row 1 2, the library 1"):
        _label_ties(np.array([0, 2]), np.array([0, 1]), want, (0, 1, 2), 1e-4)


def test_cards_written_before_conversion_still_read(registry: ModelRegistry, file_store: ArtifactStore) -> None:
    x, y, held_out = diabetes()
    card = registry.register_model("m", Ridge().fit(x, y), held_out)
    old = orjson.loads(card.to_json())
    del old["format"], old["conversion"]
    file_store.put("models/m/1/card.json", orjson.dumps(old))
    again = registry.get("m", 1)
    assert again.format == "onnx" and again.conversion == {} and again.sha256 == card.sha256


def test_cli_registers_a_joblib_pipeline_an_xgboost_json_and_a_lightgbm_text_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KNFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KNFLOW_ARTIFACTS", raising=False)
    x = digits()[0]
    joblib.dump(scaled_gradient_boosting(), tmp_path / "gb.joblib")
    header = ",".join(f"pixel{i}" for i in range(64))
    np.savetxt(tmp_path / "rows.csv", x[:200], delimiter=",", header=header, comments="", fmt="%g")
    xgboost_classifier()[0].save_model(tmp_path / "xgb.json")
    lightgbm_booster_regressor()[0].save_model(tmp_path / "lgb.txt")
    np.savez(tmp_path / "rows.npz", x=diabetes()[2])

    assert main(["models", "register", "gb", str(tmp_path / "gb.joblib"), "--sample", str(tmp_path / "rows.csv")]) == 0
    assert "converted from sklearn (sklearn.pipeline.Pipeline) with skl2onnx" in capsys.readouterr().out
    assert main(["models", "register", "xgb", str(tmp_path / "xgb.json")]) == 0
    assert main(["models", "register", "lgb", str(tmp_path / "lgb.txt"), "--sample", str(tmp_path / "rows.npz")]) == 0
    capsys.readouterr()
    cards = {}
    for name in ("gb", "xgb", "lgb"):
        assert main(["models", "show", name]) == 0
        cards[name] = orjson.loads(capsys.readouterr().out)
    assert cards["gb"]["format"] == "sklearn" and cards["gb"]["conversion"]["rows_checked"] == 200
    assert cards["xgb"]["format"] == "xgboost" and cards["xgb"]["conversion"]["model_class"] == "xgboost.core.Booster"
    assert cards["xgb"]["conversion"]["sample"] == GENERATED and cards["xgb"]["conversion"]["classes"] == list(
        range(10)
    )
    assert cards["lgb"]["format"] == "lightgbm" and cards["lgb"]["conversion"]["task"] == "regressor"
    assert [o["name"] for o in cards["lgb"]["outputs"]] == ["prediction"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["m.bin"], "unknown model file type"),
        (["missing.joblib"], "no such file"),
        (["broken.json"], "not readable as an XGBoost model"),
        (["m.onnx", "--sample", "rows.csv"], "--sample is for models knflow converts"),
        (["gb.joblib", "--sample", "ragged.csv"], "line 3 has 1 fields, the header has 2"),
    ],
)
def test_cli_names_what_is_wrong_with_a_model_or_sample_file(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KNFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.bin").write_bytes(b"?")
    (tmp_path / "broken.json").write_text('{"learner": ')
    (tmp_path / "m.onnx").write_bytes(mlp_onnx())
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    joblib.dump(Ridge().fit(np.eye(2), [0, 1]), tmp_path / "gb.joblib")
    assert main(["models", "register", "m", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_csv_sample_with_a_string_column_is_read_as_named_columns(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("size,color\n1.5,red\n,blue\n")
    columns = read_sample(tmp_path / "rows.csv")
    assert list(columns) == ["size", "color"]
    np.testing.assert_array_equal(columns["size"], [1.5, np.nan])
    assert columns["color"].tolist() == ["red", "blue"]
