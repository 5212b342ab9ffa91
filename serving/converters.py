"""The model libraries knflow converts to ONNX (scikit-learn, XGBoost, LightGBM): what each model is, how the library
predicts, and which converter turns it into an ONNX graph. ``serving.formats`` composes them and checks the result."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from infra.errors import InvalidRequest
from serving.float64 import float64_graph

log = logging.getLogger(__name__)

#: the ONNX operator sets skl2onnx writes (the PyTorch export's opset; ai.onnx.ml 3 holds the tree ensembles)
SKL2ONNX_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, ``"float"`` or ``"string"``, and its width (columns)."""

    name: str
    kind: str
    width: int


@dataclass(frozen=True)
class Predicted:
    """The library's own answer on the check rows: ``label`` and ``probabilities`` or ``scores`` for a classifier,
    ``prediction`` for a regressor."""

    label: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    scores: np.ndarray | None = None
    prediction: np.ndarray | None = None


class Library(Protocol):
    """One model library: recognizes its models, describes them, predicts with them, converts them."""

    format: str  # "sklearn", "xgboost", "lightgbm"

    def owns(self, model: object) -> bool: ...
    def versions(self) -> tuple[str, str]:
        """``("<library> <version>", "<converter> <version>")``."""
        ...

    def task(self, model: Any) -> str:
        """``"classifier"`` or ``"regressor"``; InvalidRequest for anything else."""
        ...

    def n_features(self, model: Any) -> int | None: ...
    def classes(self, model: Any) -> tuple: ...
    def predict(self, model: Any, x: np.ndarray) -> Predicted: ...
    def to_onnx(self, model: Any, inputs: Sequence[InputSpec]) -> Any:
        """An ``onnx.ModelProto``; any exception is the converter's reason for refusing."""
        ...


def _root_module(model: object) -> str:
    return type(model).__module__.split(".", 1)[0]


def _check_fitted(model: object) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise InvalidRequest(f"the model is not fitted: {exc}") from None
    except TypeError as exc:  # not an estimator at all
        raise InvalidRequest(f"cannot convert {type(model).__qualname__}: {exc}") from None


def _wrapper_classes(model: Any) -> tuple:
    """The ``classes_`` of a scikit-learn-API classifier as plain Python values (empty for a regressor)."""
    return tuple(np.asarray(getattr(model, "classes_", ())).tolist())


def _classifier_prediction(model: Any, x: np.ndarray) -> Predicted:
    """A scikit-learn-API classifier's labels with its probabilities, or its decision scores when it has none."""
    if hasattr(model, "predict_proba"):
        return Predicted(label=np.asarray(model.predict(x)), probabilities=np.asarray(model.predict_proba(x)))
    return Predicted(label=np.asarray(model.predict(x)), scores=np.asarray(model.decision_function(x)))


class SklearnLibrary:
    """scikit-learn estimators and Pipelines, converted by skl2onnx: computing in float64 as scikit-learn does when
    every step can (``serving.float64``), else in float32."""

    format = "sklearn"

    def owns(self, model: object) -> bool:
        if _root_module(model) == "sklearn":
            return True
        from sklearn.base import BaseEstimator

        return isinstance(model, BaseEstimator)

    def versions(self) -> tuple[str, str]:
        import skl2onnx
        import sklearn

        return f"scikit-learn {sklearn.__version__}", f"skl2onnx {skl2onnx.__version__}"

    def task(self, model: Any) -> str:
        from sklearn.base import is_classifier, is_regressor

        _check_fitted(model)
        if is_classifier(model):
            return "classifier"
        if is_regressor(model):
            return "regressor"
        raise InvalidRequest(f"{type(model).__qualname__} is neither a classifier nor a regressor; knflow serves those")

    def n_features(self, model: Any) -> int | None:
        return getattr(model, "n_features_in_", None)

    def classes(self, model: Any) -> tuple:
        return _wrapper_classes(model)

    def predict(self, model: Any, x: np.ndarray) -> Predicted:
        if self.task(model) == "classifier":
            return _classifier_prediction(model, x)
        return Predicted(prediction=np.asarray(model.predict(x)))

    def to_onnx(self, model: Any, inputs: Sequence[InputSpec]) -> Any:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType

        _register_boosters_with_skl2onnx()
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        # V2 has no map type: the classifier answers a probability tensor instead of ZipMap's list of dicts
        options = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None
        if len(inputs) == 1 and inputs[0].kind == "float":
            try:
                return float64_graph(model, inputs[0].name, inputs[0].width, options, SKL2ONNX_OPSET)
            except Exception as exc:  # a step with no float64 converter or kernel: the float32 graph, checked as ever
                log.info("%s has no float64 graph (%s: %s); converting in float32", type(model).__name__,
                         type(exc).__name__, str(exc)[:200])  # fmt: skip
        types = {"float": FloatTensorType, "string": StringTensorType}
        initial = [(i.name, types[i.kind]([None, i.width])) for i in inputs]
        return to_onnx(model, initial_types=initial, options=options, target_opset=SKL2ONNX_OPSET)


def _register_boosters_with_skl2onnx() -> None:
    """Let skl2onnx convert XGBoost/LightGBM steps inside a Pipeline with onnxmltools' converters.

    Only libraries already imported are registered: a pipeline holding their models imported them when it was built
    or unpickled, and importing them for nothing would cost every conversion a second."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if "xgboost" in sys.modules:
        import xgboost
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

        update_registered_converter(
            xgboost.XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=classifier_options,
        )
        update_registered_converter(
            xgboost.XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
        )
    if "lightgbm" in sys.modules:
        import lightgbm
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(
            lightgbm.LGBMClassifier,
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            options=classifier_options,
        )
        update_registered_converter(
            lightgbm.LGBMRegressor,
            "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes,
            convert_lightgbm,
            options={"split": None},
        )


class _BoostedTrees:
    """What XGBoost and LightGBM share: scikit-learn wrappers beside raw Boosters, converted by onnxmltools; each
    subclass says how its Booster tells its objective, feature count and class count, and how it predicts."""

    format: str  # also the module's name
    title: str
    wrappers: tuple[str, str]  # the classifier's and the regressor's class names
    classifier_objectives: tuple[str, ...]
    regressor_objectives: tuple[str, ...]

    def _objective(self, booster: Any) -> str:
        raise NotImplementedError

    def _booster_features(self, booster: Any) -> int:
        raise NotImplementedError

    def _booster_classes(self, booster: Any) -> int:
        raise NotImplementedError

    def _booster_predict(self, booster: Any, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _convert(self, model: Any, initial_types: list) -> Any:
        raise NotImplementedError

    def _module(self) -> Any:
        return importlib.import_module(self.format)

    def owns(self, model: object) -> bool:
        return _root_module(model) == self.format

    def versions(self) -> tuple[str, str]:
        import onnxmltools

        return f"{self.format} {self._module().__version__}", f"onnxmltools {onnxmltools.__version__}"

    def _is_booster(self, model: Any) -> bool:
        return isinstance(model, self._module().Booster)

    def task(self, model: Any) -> str:
        if self._is_booster(model):
            objective = self._objective(model)
            if objective.startswith(self.classifier_objectives):
                return "classifier"
            if objective.startswith(self.regressor_objectives):
                return "regressor"
            raise InvalidRequest(f"{self.title} objective {objective!r} is not a classification or regression one")
        _check_fitted(model)
        classifier, regressor = (getattr(self._module(), name) for name in self.wrappers)
        if isinstance(model, classifier):
            return "classifier"
        if isinstance(model, regressor):
            return "regressor"
        raise InvalidRequest(f"{type(model).__qualname__} is not a {', '.join(self.wrappers)} or Booster")

    def n_features(self, model: Any) -> int | None:
        return self._booster_features(model) if self._is_booster(model) else getattr(model, "n_features_in_", None)

    def classes(self, model: Any) -> tuple:
        if not self._is_booster(model):
            return _wrapper_classes(model)
        return tuple(range(max(self._booster_classes(model), 2))) if self.task(model) == "classifier" else ()

    def predict(self, model: Any, x: np.ndarray) -> Predicted:
        task = self.task(model)
        if not self._is_booster(model):
            return _classifier_prediction(model, x) if task == "classifier" else Predicted(prediction=model.predict(x))
        raw = np.asarray(self._booster_predict(model, x))
        if task == "regressor":
            return Predicted(prediction=raw)
        # a binary booster answers P(class 1) alone
        probabilities = raw if raw.ndim == 2 else np.column_stack([1 - raw, raw])
        return Predicted(label=probabilities.argmax(axis=1), probabilities=probabilities)

    def to_onnx(self, model: Any, inputs: Sequence[InputSpec]) -> Any:
        from onnxmltools.convert.common.data_types import FloatTensorType

        if len(inputs) != 1 or inputs[0].kind != "float":
            raise InvalidRequest(f"{self.title} models take numbers only: give the sample as a 2-D numeric array")
        return self._convert(model, [(inputs[0].name, FloatTensorType([None, inputs[0].width]))])


class XGBoostLibrary(_BoostedTrees):
    """XGBoost's XGBClassifier / XGBRegressor and raw Boosters."""

    format, title, wrappers = "xgboost", "XGBoost", ("XGBClassifier", "XGBRegressor")
    classifier_objectives, regressor_objectives = ("binary:", "multi:"), ("reg:",)

    def _learner(self, booster: Any) -> dict:
        return json.loads(booster.save_config())["learner"]

    def _objective(self, booster: Any) -> str:
        return self._learner(booster)["objective"]["name"]

    def _booster_features(self, booster: Any) -> int:
        return booster.num_features()

    def _booster_classes(self, booster: Any) -> int:
        return int(self._learner(booster)["learner_model_param"]["num_class"])

    def _booster_predict(self, booster: Any, x: np.ndarray) -> np.ndarray:
        return booster.predict(self._module().DMatrix(x))

    def _convert(self, model: Any, initial_types: list) -> Any:
        from onnxmltools import convert_xgboost

        return convert_xgboost(model, initial_types=initial_types)


class LightGBMLibrary(_BoostedTrees):
    """LightGBM's LGBMClassifier / LGBMRegressor and raw Boosters."""

    format, title, wrappers = "lightgbm", "LightGBM", ("LGBMClassifier", "LGBMRegressor")
    classifier_objectives = ("binary", "multiclass")
    regressor_objectives = ("regression", "huber", "fair", "poisson", "quantile", "mape", "gamma", "tweedie")

    def _objective(self, booster: Any) -> str:
        for line in booster.model_to_string(num_iteration=0).splitlines()[:40]:
            if line.startswith("objective="):
                return line.partition("=")[2]
        return str(booster.params.get("objective", ""))

    def _booster_features(self, booster: Any) -> int:
        return booster.num_feature()

    def _booster_classes(self, booster: Any) -> int:
        return booster.num_model_per_iteration()

    def _booster_predict(self, booster: Any, x: np.ndarray) -> np.ndarray:
        return booster.predict(x)

    def _convert(self, model: Any, initial_types: list) -> Any:
        from onnxmltools import convert_lightgbm

        return convert_lightgbm(model, initial_types=initial_types, zipmap=False)


#: tried in order; scikit-learn last, since XGBoost's and LightGBM's wrappers are scikit-learn estimators too
LIBRARIES: tuple[Library, ...] = (XGBoostLibrary(), LightGBMLibrary(), SklearnLibrary())


def library_of(model: object) -> Library:
    """The library a model belongs to; InvalidRequest naming the type when knflow converts none of its kind."""
    for library in LIBRARIES:
        if library.owns(model):
            return library
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    raise InvalidRequest(f"cannot convert a {kind}: knflow converts scikit-learn, XGBoost and LightGBM models")
