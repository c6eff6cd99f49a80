"""Loading scikit-learn models saved with skops, trusting only an explicit list of types.

Before anything is built, every type a skops file names (each node of its ``schema.json``)
and every type skops itself reports as untrusted must be in :data:`TRUSTED_ESTIMATORS`,
:data:`TRUSTED_INTERNALS` or the builtin and numpy types below: linear models, trees,
forests, gradient boosting, naive Bayes, SVMs, nearest neighbours, preprocessing,
pipelines, column transformers, imputers and decompositions. Functions and every other
type are refused, even those skops trusts by default. Nothing is ever unpickled.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bastion.errors import InputError
from bastion.serving._runtimes import runtime_reason
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec

__all__ = ["TRUSTED_ESTIMATORS", "TRUSTED_INTERNALS", "SkopsModel", "prepare_skops"]

#: Public scikit-learn classes a served skops file may hold, by the module exporting them.
TRUSTED_ESTIMATORS: Mapping[str, tuple[str, ...]] = {
    "sklearn.linear_model": (
        *("LinearRegression", "LogisticRegression", "LogisticRegressionCV", "Ridge"),
        *("RidgeCV", "RidgeClassifier", "RidgeClassifierCV", "Lasso", "LassoCV"),
        *("ElasticNet", "ElasticNetCV", "SGDClassifier", "SGDRegressor", "Perceptron"),
        *("HuberRegressor", "BayesianRidge", "ARDRegression", "PoissonRegressor"),
        *("GammaRegressor", "TweedieRegressor", "QuantileRegressor", "Lars", "LassoLars"),
    ),
    "sklearn.tree": (
        *("DecisionTreeClassifier", "DecisionTreeRegressor"),
        *("ExtraTreeClassifier", "ExtraTreeRegressor"),
    ),
    "sklearn.ensemble": (
        *("RandomForestClassifier", "RandomForestRegressor"),
        *("ExtraTreesClassifier", "ExtraTreesRegressor"),
        *("GradientBoostingClassifier", "GradientBoostingRegressor"),
        *("HistGradientBoostingClassifier", "HistGradientBoostingRegressor"),
        *("AdaBoostClassifier", "AdaBoostRegressor"),
    ),
    "sklearn.naive_bayes": (
        *("GaussianNB", "MultinomialNB", "BernoulliNB", "ComplementNB", "CategoricalNB"),
    ),
    "sklearn.svm": ("SVC", "SVR", "NuSVC", "NuSVR", "LinearSVC", "LinearSVR"),
    "sklearn.neighbors": (
        *("KNeighborsClassifier", "KNeighborsRegressor", "NearestCentroid"),
        *("RadiusNeighborsClassifier", "RadiusNeighborsRegressor", "KDTree", "BallTree"),
    ),
    "sklearn.preprocessing": (
        *("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "Normalizer"),
        *("Binarizer", "OneHotEncoder", "OrdinalEncoder", "LabelEncoder", "LabelBinarizer"),
        *("PolynomialFeatures", "KBinsDiscretizer", "QuantileTransformer", "PowerTransformer"),
    ),
    "sklearn.pipeline": ("Pipeline", "FeatureUnion"),
    "sklearn.compose": ("ColumnTransformer",),
    "sklearn.impute": ("SimpleImputer", "KNNImputer", "MissingIndicator"),
    "sklearn.decomposition": ("PCA", "IncrementalPCA", "TruncatedSVD", "FastICA", "NMF"),
}

_LOSSES: tuple[str, ...] = (
    "HalfSquaredError",
    "AbsoluteError",
    "PinballLoss",
    "HuberLoss",
    "HalfPoissonLoss",
)
_LOSSES += ("HalfGammaLoss", "HalfTweedieLoss", "HalfTweedieLossIdentity", "HalfBinomialLoss")
_LOSSES += ("ExponentialLoss", "HalfMultinomialLoss")
_LINKS = ("IdentityLink", "LogLink", "LogitLink", "HalfLogitLink", "MultinomialLogit", "Interval")
_SGD_LOSSES: tuple[str, ...] = ("Hinge", "ModifiedHuber", "SquaredHinge", "EpsilonInsensitive")
_SGD_LOSSES += ("SquaredEpsilonInsensitive", "Log", "SquaredLoss", "Huber")
_METRICS = ("Euclidean", "SEuclidean", "Manhattan", "Chebyshev", "Minkowski")

#: Internal scikit-learn types that fitted trusted estimators hold (fully qualified names).
TRUSTED_INTERNALS: frozenset[str] = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        *(f"sklearn._loss.loss.{name}" for name in _LOSSES),
        *(f"sklearn._loss._loss.Cy{name}" for name in _LOSSES),
        *(f"sklearn._loss.link.{name}" for name in _LINKS),
        *(f"sklearn.linear_model._sgd_fast.{name}" for name in _SGD_LOSSES),
        "sklearn.dummy.DummyClassifier",  # the initial estimate of gradient boosting
        "sklearn.dummy.DummyRegressor",
        *(
            f"sklearn.metrics._dist_metrics.{name}Distance{bits}"
            for name in _METRICS
            for bits in ("", "32", "64")
        ),
    }
)
_NUMPY_TYPES: tuple[str, ...] = (
    "ndarray",
    "dtype",
    "bool_",
    "str_",
    "bytes_",
    "object_",
    "float16",
    "float32",
)
_NUMPY_TYPES += ("float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")
_NUMPY_TYPES += ("uint64",)
_BUILTINS = ("dict", "list", "tuple", "set", "str", "int", "float", "bool", "bytes", "NoneType")
_PLAIN_TYPES = frozenset(
    {
        *(f"builtins.{name}" for name in _BUILTINS),
        *(f"numpy.{name}" for name in _NUMPY_TYPES),
        "builtins.slice",
        "numpy.random._generator.Generator",
        "numpy.random.mtrand.RandomState",
        "numpy.random.PCG64",
        "numpy.random._pcg64.PCG64",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random._bit_generator.SeedSequence",
    }
)
#: Largest ``schema.json`` read, in bytes (the arrays are stored beside it).
MAX_SCHEMA_BYTES = 64 << 20


@functools.cache
def trusted_type_names() -> frozenset[str]:
    """Every fully qualified type name a served skops file may hold."""
    names = set(_PLAIN_TYPES | TRUSTED_INTERNALS)
    for module_name, classes in TRUSTED_ESTIMATORS.items():
        module = importlib.import_module(module_name)
        for class_name in classes:
            cls = getattr(module, class_name, None)
            if isinstance(cls, type):
                names.add(f"{cls.__module__}.{cls.__qualname__}")
    return frozenset(names)


def prepare_skops() -> None:
    """Import skops and scikit-learn, and resolve the allowlist, before the lock-down."""
    import skops.io  # type: ignore[import-untyped]  # noqa: F401

    trusted_type_names()
    try:  # scikit-learn finds its BLAS and OpenMP libraries with ctypes; do it now, once
        from sklearn.utils.parallel import (  # type: ignore[import-untyped]
            _get_threadpool_controller,
        )

        _get_threadpool_controller()
    except (ImportError, AttributeError):
        pass


def _schema_types(data: bytes) -> set[str]:
    """Every ``module.class`` named by a node of the file's schema."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo("schema.json")
            if info.file_size > MAX_SCHEMA_BYTES:
                raise InputError(f"the skops file's schema is over {MAX_SCHEMA_BYTES} bytes")
            schema = json.loads(archive.read(info))
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError, OSError) as exc:
        raise InputError(f"not a skops file: {runtime_reason(exc)}") from exc
    found: set[str] = set()
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            module, cls = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(cls, str):
                found.add(f"{module}.{cls}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def _load(data: bytes) -> Any:
    import skops.io

    named = _schema_types(data)
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises ValueError, KeyError, TypeError on bad files
        raise InputError(f"not a skops file: {runtime_reason(exc)}") from exc
    refused = sorted((named | set(untrusted)) - trusted_type_names())
    if refused:
        shown = ", ".join(refused[:10])
        raise InputError(
            f"the skops file holds types that are not trusted for serving: {shown}; only "
            "scikit-learn estimators and transformers of the trusted families and numpy "
            "arrays are served (export other models to ONNX)"
        )
    try:
        return skops.io.loads(data, trusted=untrusted)
    except Exception as exc:  # construction errors of scikit-learn and numpy
        raise InputError(f"skops cannot load the model: {runtime_reason(exc)}") from exc


def _label_datatype(classes: np.ndarray[Any, Any]) -> Datatype:
    if classes.dtype.kind in "iub":
        return Datatype.INT64
    if classes.dtype.kind == "f":
        return Datatype.FP64
    if classes.dtype.kind in "UO" and all(isinstance(item, str) for item in classes.tolist()):
        return Datatype.BYTES
    raise InputError(f"classes of dtype {classes.dtype} are not served; use integers or strings")


class SkopsModel:
    """A scikit-learn estimator loaded from skops, with trusted types only.

    Input ``input`` FP64 ``[-1, n_features_in_]``. Classifiers answer ``label`` (INT64, FP64
    or BYTES after their classes) and, with ``predict_proba``, ``probabilities`` FP64
    ``[-1, n_classes]``; other estimators answer ``prediction`` FP64.
    """

    def __init__(self, data: bytes) -> None:
        from sklearn.base import is_classifier  # type: ignore[import-untyped]

        model = _load(data)
        features = getattr(model, "n_features_in_", None)
        if not callable(getattr(model, "predict", None)) or type(features) is not int:
            raise InputError(
                "the skops file does not hold a fitted estimator with predict and "
                "n_features_in_; save the fitted model"
            )
        self._model = model
        self._features = features
        outputs: list[TensorSpec] = []
        if is_classifier(model):
            classes = np.asarray(getattr(model, "classes_", None))
            if classes.ndim != 1 or not classes.size:
                raise InputError("classifiers with several outputs are not served")
            self._label = TensorSpec("label", _label_datatype(classes), (-1,))
            outputs.append(self._label)
            if hasattr(model, "predict_proba"):
                outputs.append(TensorSpec("probabilities", Datatype.FP64, (-1, classes.size)))
        else:
            width = getattr(model, "n_outputs_", 1)
            shape = (-1, width) if type(width) is int and width > 1 else (-1,)
            self._label = TensorSpec("prediction", Datatype.FP64, shape)
            outputs.append(self._label)
        self.signature = ModelSignature(
            (TensorSpec("input", Datatype.FP64, (-1, features)),), tuple(outputs)
        )
        _single_threaded(model)

    def _answer(self, name: str, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if name == "probabilities":
            return np.asarray(self._model.predict_proba(x), dtype=np.float64)
        if name != self._label.name:
            raise InputError(f"the model has no output {name!r}")
        values = np.asarray(self._model.predict(x))
        if self._label.datatype is Datatype.BYTES:
            return np.array([str(v).encode("utf-8") for v in values.reshape(-1)], dtype=object)
        if len(self._label.shape) == 1:
            values = values.reshape(-1)
        return values.astype(self._label.datatype.numpy_dtype)

    def run(
        self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """The named ``outputs`` for the one input ``input``."""
        x = inputs.get("input")
        if len(inputs) != 1 or x is None or x.ndim != 2 or x.shape[1] != self._features:
            raise InputError(f"the model takes one input 'input' of shape [-1, {self._features}]")
        try:
            return {name: self._answer(name, x) for name in outputs}
        except (ValueError, TypeError, IndexError) as exc:
            raise InputError(
                f"the model refused the input: {type(exc).__name__}: {runtime_reason(exc)[:200]}"
            ) from exc


def _single_threaded(model: Any) -> None:
    """Clear every ``n_jobs`` so the worker's thread limit holds."""
    try:
        params = model.get_params(deep=True)
        model.set_params(**{k: None for k in params if k.split("__")[-1] == "n_jobs"})
    except (AttributeError, TypeError, ValueError):
        pass
