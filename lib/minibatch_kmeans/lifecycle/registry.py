"""Model registry and experiment tracking on MLflow (``pip install minibatch-kmeans[mlops]``).

Runs (train, compare, tune, monitor) log their params, metrics, PNGs and tags to MLflow
tracking. Each trained :class:`~minibatch_kmeans.MiniBatchKMeansModel` is logged as an
MLflow pyfunc model (the saved model directory is its artifact) and registered as a
version of a registered model, with its metadata as version tags. The deployed model is
the version holding the alias ``champion``; a challenger holds ``challenger``.
Promotion moves an alias, and :meth:`Registry.rollback` moves it back to the version it
replaced; both hold a lock per alias from checking the alias to moving it
(:mod:`minibatch_kmeans.lifecycle.alias_lock`), so ``promote(...,
expected_current=v)`` is a compare-and-set: of two jobs promoting against the same
champion, exactly one moves it.

Where things live is configuration, not code: :func:`tracking` uses the given URI, else
``MLFLOW_TRACKING_URI`` (and ``MLFLOW_REGISTRY_URI``), else a local SQLite store,
``sqlite:///<root>/mlflow/mlflow.db`` with artifacts in ``<root>/mlflow/artifacts``
(``root`` defaults to ``out``). On Databricks pass ``uri="databricks"`` and
``registry_uri="databricks-uc"`` (Unity Catalog; model names ``catalog.schema.model``)
or ``"databricks"`` (workspace registry).

The pyfunc model is stored as "models from code" (a three-line file that imports
:class:`MiniBatchKMeansPyfunc` from this module; no pickle) plus the saved model directory
and a copy of this package. It scores a pandas DataFrame with NumPy alone
(:class:`~minibatch_kmeans.lifecycle.saved_model.SavedModel`): no SparkSession, no JVM.

Examples
--------
>>> from minibatch_kmeans.lifecycle.registry import tracking                       # doctest: +SKIP
>>> reg = tracking(experiment="minibatch-kmeans")                         # doctest: +SKIP
>>> with reg.log_run("train", params={"k": 20}, metrics={"cost": 1.5e4}):  # doctest: +SKIP
...     mv = reg.log_model(model, "blobs-kmeans", training_table="main.ml.blobs",
...                        delta_version=12, holdout_metrics={"cost": 1.6e4})
>>> reg.promote("blobs-kmeans", mv.version)                               # doctest: +SKIP
>>> import mlflow
>>> scorer = mlflow.pyfunc.load_model("models:/blobs-kmeans@champion")   # doctest: +SKIP
>>> scorer.predict(pandas_df)                                             # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

try:
    import mlflow
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("minibatch_kmeans.lifecycle.registry needs MLflow: pip install "
                      "'minibatch-kmeans[mlops]'", name=e.name) from e

from ..errors import MiniBatchKMeansError
from ..redaction import redact_text
from .alias_lock import AliasLock, AliasLockError, LOCK_WAIT, alias_lock, set_alias
from .saved_model import SavedModel

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "minibatch-kmeans"
CHAMPION = "champion"
CHALLENGER = "challenger"
#: Name of the saved model directory among the pyfunc model's artifacts.
MODEL_ARTIFACT = "model"
#: Version tags longer than this are written as a JSON artifact of the run instead, and
#: the tag holds the artifact's path (Unity Catalog's tag values are short).
MAX_TAG_CHARS = 5000

_MODEL_CODE = '''"""MLflow models-from-code entry of a minibatch_kmeans model (no pickle)."""
from mlflow.models import set_model

from minibatch_kmeans.lifecycle.registry import MiniBatchKMeansPyfunc

set_model(MiniBatchKMeansPyfunc())
'''


def _package_dir(package: str, where: str) -> str:
    """``package`` as a directory that MLflow can copy: itself, or, when it was imported from
    a zip (``spark-submit --py-files minibatch_kmeans.zip``), its files extracted from the zip
    into ``where``."""
    if os.path.isdir(package):
        return package
    import zipfile

    archive, inner = package, []
    while archive and not os.path.isfile(archive):
        archive, part = os.path.split(archive)
        if not part:
            raise FileNotFoundError(f"no directory or zip holds the package {package}")
        inner.insert(0, part)
    prefix = "/".join(inner) + "/"
    with zipfile.ZipFile(archive) as z:
        z.extractall(where, [n for n in z.namelist() if n.startswith(prefix)])
    return os.path.join(where, *inner)


class RegistryError(MiniBatchKMeansError, ValueError):
    """A registry operation cannot be done as asked (unknown alias, lost compare-and-set,
    nothing to roll back to...)."""


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: ``promote(expected_current=ANY)`` (the default) promotes whoever holds the alias now.
ANY = _Any()


# -- tracking setup ----------------------------------------------------------------------


def default_tracking_uri(root: str = "out") -> str:
    """On Databricks (``DATABRICKS_RUNTIME_VERSION`` set): ``databricks``, the workspace's
    tracking server; elsewhere ``sqlite:///<abs root>/mlflow/mlflow.db``, the embedded,
    serverless store."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return "databricks"
    return "sqlite:///" + os.path.abspath(os.path.join(root, "mlflow", "mlflow.db"))


def default_registry_uri(tracking_uri: str) -> str:
    """The registry of a tracking store: Unity Catalog (``databricks-uc``, MLflow 3's
    default there) for the workspace's, else the store itself."""
    return "databricks-uc" if tracking_uri == "databricks" else tracking_uri


def default_artifact_location(root: str = "out") -> str:
    """``file://<abs root>/mlflow/artifacts``, the artifact root next to the SQLite store."""
    return "file://" + os.path.abspath(os.path.join(root, "mlflow", "artifacts"))


def tracking(uri: Optional[str] = None, experiment: str = DEFAULT_EXPERIMENT, *,
             registry_uri: Optional[str] = None, artifact_location: Optional[str] = None,
             root: str = "out") -> "Registry":
    """Point MLflow at a tracking store and registry and select (or create) an experiment.

    Mutates MLflow's process-wide tracking URI, registry URI and active experiment, so
    that ``mlflow.log_*`` calls made elsewhere go to the same place.

    Parameters
    ----------
    uri : str, optional
        Tracking URI. Default: ``MLFLOW_TRACKING_URI`` when set, else
        :func:`default_tracking_uri`: the workspace's on Databricks, else a SQLite store
        under ``root`` (the directory is created).
    experiment : str
        Experiment name (on Databricks a workspace path such as ``/Shared/mbkm``).
    registry_uri : str, optional
        Model registry URI (``databricks-uc`` for Unity Catalog). Default:
        ``MLFLOW_REGISTRY_URI`` when set, else :func:`default_registry_uri` (Unity Catalog
        for the workspace's tracking server, else the tracking store).
    artifact_location : str, optional
        Artifact root of a new experiment. Default for a SQLite store: ``artifacts`` next
        to the database file (``<root>/mlflow/artifacts`` for the embedded one); the
        server's default otherwise.
    root : str
        Directory of the embedded store.

    Returns
    -------
    Registry
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    if uri.startswith("sqlite:///"):  # artifacts next to the database, not in ./mlruns
        db = os.path.abspath(uri[len("sqlite:///"):])
        os.makedirs(os.path.dirname(db), exist_ok=True)
        if artifact_location is None:
            artifact_location = "file://" + os.path.join(os.path.dirname(db), "artifacts")
    registry_uri = (registry_uri or os.environ.get("MLFLOW_REGISTRY_URI")
                    or default_registry_uri(uri))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=registry_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(experiment, artifact_location=artifact_location)
        except MlflowException:  # created meanwhile by another job
            exp_id = client.get_experiment_by_name(experiment).experiment_id
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    logger.info("MLflow tracking %s, registry %s, experiment %r (%s)", redact_text(uri),
                redact_text(registry_uri), experiment, exp_id)
    return Registry(client, exp_id, registry_uri)


# -- helpers -----------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _text(value: Any) -> str:
    """A tag value: strings as they are, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested keys joined by dots, as names MLflow accepts (:func:`mlflow_keys`)."""
    out: Dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out if prefix else mlflow_keys(out)


#: Characters MLflow refuses in a param, metric or tag name (it takes letters, digits,
#: ``_ - . /`` and space, and ``:`` except on Windows; a ``/`` would make a path), and
#: its longest name.
_MLFLOW_BAD = re.compile(r"[^\w.\- ]")
MLFLOW_KEY_CHARS = 250


def mlflow_keys(d: Mapping[str, Any]) -> Dict[str, Any]:
    """``d`` with names MLflow accepts (column names end up in them: ``psi.f(x)``): any
    other character becomes ``_`` and a leading dot gets a ``_`` before it; a changed name
    that meets another name, or one too long, ends in 8 hex digits of the original's hash,
    so no two entries share a name."""
    fixed = {}
    for key in d:
        name = _MLFLOW_BAD.sub("_", str(key))
        fixed[key] = "_" + name if not name or name.startswith(".") else name
    seen = Counter(fixed.values())
    out: Dict[str, Any] = {}
    for key, value in d.items():
        name = fixed[key]
        if (name != key and seen[name] > 1) or len(name) > MLFLOW_KEY_CHARS:
            digest = hashlib.sha1(str(key).encode("utf-8")).hexdigest()[:8]
            name = f"{name[:MLFLOW_KEY_CHARS - 9]}-{digest}"
        out[name] = value
    return out


def _finite_metrics(metrics: Mapping[str, Any]) -> Dict[str, float]:
    """Numeric, finite entries of a (nested) mapping; the rest is logged and left out."""
    out = {}
    for key, value in _flatten(metrics).items():
        if isinstance(value, (bool, np.bool_)) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            logger.debug("metric %s=%r is not a number: not logged", key, value)
            continue
        if math.isfinite(number):
            out[key] = number
    return out


def _version_str(version: Any) -> str:
    if isinstance(version, ModelVersion):
        return str(version.version)
    return str(int(version))


def _check_expected(what: str, expected_current: Any, current: Optional[str]) -> None:
    """Raise RegistryError when ``expected_current`` (a version, None or ANY) is not
    ``current`` (the alias holder's version, None for none)."""
    if expected_current is ANY:
        return
    expected = None if expected_current is None else _version_str(expected_current)
    if expected != current:
        raise RegistryError(
            f"cannot {what}: expected the alias on "
            f"{'no version' if expected is None else 'version ' + expected}, but it is on "
            f"{'no version' if current is None else 'version ' + current}")


# -- the pyfunc model --------------------------------------------------------------------


class MiniBatchKMeansPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of a saved model: ``predict(pandas_df)`` returns a DataFrame
    with ``prediction`` (and ``distance`` with ``params={"with_distance": True}``).

    The input holds the feature columns (a model trained on ``inputCols``) or one column
    of vectors or lists (``featuresCol``). Loading reads the artifact with pyarrow; no
    Spark."""

    # The signature is explicit (see _signature); without this, defining the class makes
    # mlflow warn that predict has no type hints and wrap it in a pass-through.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self._model = SavedModel.read(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context, model_input, params=None):
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        with_distance = bool((params or {}).get("with_distance", False))
        return self._model.predict_pandas(model_input, with_distance)


_MLFLOW_TYPES = {"double": "double", "float": "float", "int": "integer", "integer": "integer",
                 "bigint": "long", "long": "long", "smallint": "integer", "tinyint": "integer"}


def _signature(saved: SavedModel):
    """Input: the feature columns with their training types (array<double> for a vector
    or array column); output: prediction and distance; param: with_distance."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    cols = saved.feature_columns
    if saved.kind == "columns":
        types = (saved.feature_schema or {}).get("types") or [None] * len(cols)
        inputs = Schema([ColSpec(_MLFLOW_TYPES.get(str(t), "double"), c)
                         for c, t in zip(cols, types)])
    else:
        inputs = Schema([ColSpec(Array("double"), cols[0])])
    outputs = Schema([ColSpec("integer", "prediction"), ColSpec("double", "distance")])
    params = ParamSchema([ParamSpec("with_distance", "boolean", False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _input_example(saved: SavedModel) -> pd.DataFrame:
    """Two rows: the first two centers (no data leaves the training table)."""
    centers = saved.centers[:2]
    cols = saved.feature_columns
    if saved.kind == "columns":
        return pd.DataFrame(centers, columns=cols)
    return pd.DataFrame({cols[0]: [list(map(float, c)) for c in centers]})


def _requirements() -> List[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    # no pyspark: the pyfunc model scores pandas rows with NumPy (SavedModel), and the
    # package imports pyspark only for its Spark classes
    for name in ("mlflow", "numpy", "pandas", "pyarrow"):
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:  # pragma: no cover
            reqs.append(name)
    return reqs


# -- the registry ------------------------------------------------------------------------


class Registry:
    """Runs, model versions and aliases on one MLflow tracking store and registry.

    Build it with :func:`tracking`. Methods that change the registry say so.

    Parameters
    ----------
    client : mlflow.tracking.MlflowClient
    experiment_id : str
    registry_uri : str, optional
        The client's registry URI (default: its tracking URI); it chooses the lock that
        :meth:`promote` and :meth:`rollback` hold (see
        :mod:`minibatch_kmeans.lifecycle.alias_lock`).
    lock_wait : float
        Seconds a promotion or rollback waits for another one to finish before giving up.
    """

    def __init__(self, client: MlflowClient, experiment_id: str,
                 registry_uri: Optional[str] = None, lock_wait: float = LOCK_WAIT):
        self.client = client
        self.experiment_id = experiment_id
        self.registry_uri = registry_uri or client.tracking_uri
        self.lock_wait = lock_wait

    @contextlib.contextmanager
    def alias_lock(self, name: str, alias: str) -> Iterator[AliasLock]:
        """Hold the lock of ``name``'s ``alias`` for the block (a lock file next to a local
        store, else a lease; :func:`~minibatch_kmeans.lifecycle.alias_lock.alias_lock`).

        Raises
        ------
        RegistryError
            Not taken within ``lock_wait`` seconds.
        """
        try:
            with alias_lock(self.client, self.registry_uri, name, alias,
                            wait=self.lock_wait) as held:
                yield held
        except AliasLockError as e:
            raise RegistryError(f"cannot move {name} {alias!r}: {e}") from None

    # -- runs ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def log_run(self, run_name: Optional[str] = None, params: Optional[Mapping] = None,
                metrics: Optional[Mapping] = None, pngs: Iterable[str] = (),
                tags: Optional[Mapping] = None, nested: bool = False,
                artifact_path: str = "plots") -> Iterator["mlflow.ActiveRun"]:
        """Start an MLflow run, log ``params`` (nested keys joined by dots), finite numeric
        ``metrics``, ``tags`` and the ``pngs`` that exist, yield the run, end it (FAILED
        if the block raised).

        PNG paths that do not exist yet are logged when the block ends, so a job can name
        the plots it is about to write."""
        pngs = list(pngs)
        with mlflow.start_run(run_name=run_name, experiment_id=self.experiment_id,
                              nested=nested) as run:
            if tags:
                mlflow.set_tags({k: _text(v) for k, v in _flatten(tags).items()})
            if params:
                mlflow.log_params({k: _text(v) for k, v in _flatten(params).items()})
            if metrics:
                mlflow.log_metrics(_finite_metrics(metrics))
            pending = [p for p in pngs if not os.path.exists(p)]
            for p in pngs:
                if os.path.exists(p):
                    mlflow.log_artifact(p, artifact_path)
            yield run
            for p in pending:
                if os.path.exists(p):
                    mlflow.log_artifact(p, artifact_path)
                else:
                    logger.warning("run %s: %s was not written, not logged",
                                   run.info.run_id, p)
        logger.info("run %s (%s) logged: %d params, %d metrics, %d PNGs", run.info.run_id,
                    run_name, len(params or {}), len(metrics or {}), len(pngs))

    # -- models --------------------------------------------------------------------------
    def log_model(self, model, name: str, *, training_table: Optional[str] = None,
                  delta_version: Optional[int] = None,
                  holdout_metrics: Optional[Mapping[str, float]] = None,
                  reference_stats: Optional[Mapping[str, Any]] = None,
                  tags: Optional[Mapping[str, Any]] = None, include_code: bool = True,
                  await_registration_for: int = 300) -> ModelVersion:
        """Log a fitted model as an MLflow pyfunc model and register it as a new version
        of the registered model ``name``, with its metadata as version tags.

        Uses the active run, or starts (and ends) one named ``register-<name>``. Saving
        the model directory needs the model's SparkSession (the model's own writer);
        loading the pyfunc model does not.

        Parameters
        ----------
        model : MiniBatchKMeansModel
        name : str
            Registered model name (``catalog.schema.model`` on Unity Catalog).
        training_table, delta_version : optional
            Where the training rows came from (tags ``training_table``,
            ``delta_version``).
        holdout_metrics : mapping, optional
            Tag ``holdout_metrics`` (JSON) and one ``holdout.<metric>`` tag each; also
            logged as run metrics ``holdout.<metric>``.
        reference_stats : mapping, optional
            Reference statistics of the training features (tag ``reference_stats``,
            JSON; a run artifact named by the tag ``reference_stats_artifact`` when it is
            longer than ``MAX_TAG_CHARS``).
        tags : mapping, optional
            More version tags (non-string values as JSON).
        include_code : bool
            Ship a copy of the ``minibatch_kmeans`` package with the model (its
            ``code/``), so a scoring environment needs only the requirements.

        Returns
        -------
        mlflow.entities.model_registry.ModelVersion
        """
        with contextlib.ExitStack() as stack:
            run = mlflow.active_run()
            if run is None:
                run = stack.enter_context(mlflow.start_run(
                    run_name=f"register-{name}", experiment_id=self.experiment_id))
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mbkm-mlflow-"))
            model_dir = os.path.join(tmp, MODEL_ARTIFACT)
            model.write().save(model_dir)
            saved = SavedModel.read(model_dir)
            code_file = os.path.join(tmp, "minibatch_kmeans_pyfunc.py")
            with open(code_file, "w", encoding="utf-8") as f:
                f.write(_MODEL_CODE)
            # the whole minibatch_kmeans package, not only this layer of it
            package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            code_paths = [_package_dir(package, os.path.join(tmp, "code"))] \
                if include_code else None
            info = mlflow.pyfunc.log_model(
                name="model", python_model=code_file, artifacts={MODEL_ARTIFACT: model_dir},
                code_paths=code_paths, signature=_signature(saved),
                input_example=_input_example(saved), pip_requirements=_requirements(),
                registered_model_name=name, await_registration_for=await_registration_for)
            if holdout_metrics:
                mlflow.log_metrics({f"holdout.{k}": v for k, v in
                                    _finite_metrics(holdout_metrics).items()})
            version = str(info.registered_model_version)
            all_tags = self._model_tags(model, saved, run.info.run_id, training_table,
                                        delta_version, holdout_metrics, reference_stats, tags)
            for key, value in all_tags.items():
                self.client.set_model_version_tag(name, version, key, value)
        mv = self.client.get_model_version(name, version)
        logger.info("registered %s version %s (run %s, %d tags)", name, version,
                    run.info.run_id, len(all_tags))
        return mv

    def _model_tags(self, model, saved: SavedModel, run_id: str, training_table,
                    delta_version, holdout_metrics, reference_stats, tags) -> Dict[str, str]:
        out: Dict[str, Any] = {
            "k": saved.centers.shape[0], "num_features": saved.centers.shape[1],
            "distance_measure": saved.params.get("distanceMeasure", "euclidean"),
            "feature_schema": saved.feature_schema,
            "input_schema": saved.metadata.get("inputSchema"),
            "run_id": run_id, "registered_at": _now(),
        }
        info = saved.metadata.get("trainingSummary")
        if info:
            out["training_info"] = info
        if training_table is not None:
            out["training_table"] = training_table
        if delta_version is not None:
            out["delta_version"] = int(delta_version)
        if holdout_metrics:
            out["holdout_metrics"] = dict(holdout_metrics)
            out.update({f"holdout.{k}": v for k, v in _flatten(holdout_metrics).items()})
        if reference_stats is not None:
            out["reference_stats"] = reference_stats
        out.update(tags or {})
        result = {}
        for key, value in out.items():
            if value is None:
                continue
            text = _text(value)
            if len(text) > MAX_TAG_CHARS:
                path = f"metadata/{key}.json"
                self.client.log_text(run_id, text, path)
                result[f"{key}_artifact"] = f"runs:/{run_id}/{path}"
                continue
            result[key] = text
        return result

    def find_versions(self, name: str, tags: Mapping[str, str]) -> List[ModelVersion]:
        """The versions of ``name`` carrying all these tag values (none when the model is
        not registered yet), oldest first."""
        def quoted(v):
            return "'" + str(v).replace("'", "''") + "'"

        where = " and ".join([f"name = {quoted(name)}"]
                             + [f"tags.`{k}` = {quoted(v)}" for k, v in tags.items()])
        found = self.client.search_model_versions(where)
        return sorted(found, key=lambda mv: int(mv.version))

    # -- aliases -------------------------------------------------------------------------
    def version_for(self, name: str, alias: str = CHAMPION) -> Optional[ModelVersion]:
        """The version holding ``alias``, or None when no version holds it."""
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE",
                                "NOT_FOUND"):
                return None
            raise

    def champion(self, name: str) -> Optional[ModelVersion]:
        """The deployed version (alias ``champion``), or None."""
        return self.version_for(name, CHAMPION)

    def promote(self, name: str, version, alias: str = CHAMPION, *,
                expected_current: Any = ANY, reason: Optional[str] = None) -> ModelVersion:
        """Move ``alias`` to ``version`` (mutates the registry). The alias lock
        (:meth:`alias_lock`) is held from reading the alias to moving it, so concurrent
        promotions and rollbacks take turns, each seeing the one before it.

        The promoted version gets the tags ``previous_<alias>`` (the version it replaces,
        ``""`` for none; :meth:`rollback` returns to it), ``<alias>_since`` and
        ``<alias>_reason``.

        Parameters
        ----------
        expected_current : version, None or ANY
            Compare-and-set: refuse (``RegistryError``) when, under the lock, the alias is
            not held by this version (None: held by none), e.g. when another job promoted
            meanwhile. ``ANY`` (the default) replaces whichever version holds it.

        Raises
        ------
        RegistryError
            The alias is not where ``expected_current`` says, or the lock was not taken
            within ``lock_wait`` seconds.
        """
        version = _version_str(version)
        self.client.get_model_version(name, version)  # raises on an unknown version
        with self.alias_lock(name, alias) as held:
            current = self.version_for(name, alias)
            current_v = None if current is None else str(current.version)
            _check_expected(f"promote {name} version {version} to {alias!r}",
                            expected_current, current_v)
            if current_v == version:
                logger.info("%s version %s already holds %r", name, version, alias)
                return current
            held.check()
            self.client.set_model_version_tag(name, version, f"previous_{alias}",
                                              current_v or "")
            self.client.set_model_version_tag(name, version, f"{alias}_since", _now())
            if reason:
                self.client.set_model_version_tag(name, version, f"{alias}_reason", reason)
            set_alias(self.client, name, alias, version)
        now = self.version_for(name, alias)
        if now is None or str(now.version) != version:
            logger.warning("%s: %r moved to version %s right after this promotion of version "
                           "%s (by a writer that does not take the alias lock)", name, alias,
                           None if now is None else now.version, version)
        logger.info("%s: %r moved from version %s to %s", name, alias, current_v, version)
        return self.client.get_model_version(name, version)

    def rollback(self, name: str, alias: str = CHAMPION, reason: Optional[str] = None, *,
                 expected_current: Any = ANY) -> ModelVersion:
        """Move ``alias`` back to the version it replaced (the holder's
        ``previous_<alias>`` tag); mutates the registry, under the alias lock as
        :meth:`promote`. Rolling back again walks further back. The demoted version gets
        ``rolled_back_from_<alias>`` (time) and the restored one ``restored_as_<alias>``
        (time and the demoted version).

        Parameters
        ----------
        expected_current : version or ANY
            Refuse (``RegistryError``) when, under the lock, another version than this one
            holds the alias (e.g. one promoted since the caller looked). ``ANY`` rolls
            back whichever version holds it.
        """
        with self.alias_lock(name, alias) as held:
            current = self.version_for(name, alias)
            if current is None:
                raise RegistryError(f"cannot roll back {name}: no version holds {alias!r}")
            _check_expected(f"roll back {name} {alias!r}", expected_current,
                            str(current.version))
            previous = current.tags.get(f"previous_{alias}", "")
            if not previous:
                raise RegistryError(
                    f"cannot roll back {name} {alias!r}: version {current.version} holds it "
                    f"and replaced no version (tag previous_{alias} is empty or missing)")
            held.check()
            now = _now()
            set_alias(self.client, name, alias, previous)
            self.client.set_model_version_tag(name, current.version,
                                              f"rolled_back_from_{alias}",
                                              now + (f": {reason}" if reason else ""))
            self.client.set_model_version_tag(name, previous, f"restored_as_{alias}",
                                              f"{now} (from version {current.version})")
        logger.info("%s: %r rolled back from version %s to %s", name, alias, current.version,
                    previous)
        return self.client.get_model_version(name, previous)

    # -- loading -------------------------------------------------------------------------
    def download(self, name: str, alias: str = CHAMPION,
                 dst_path: Optional[str] = None) -> Tuple[ModelVersion, str]:
        """Download the saved model directory of the version holding ``alias``; returns the
        version and the local directory (under ``dst_path``, else a new temp dir)."""
        mv = self.version_for(name, alias)
        if mv is None:
            raise RegistryError(f"no version of {name} holds the alias {alias!r}")
        dst = dst_path or tempfile.mkdtemp(prefix="mbkm-model-")
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{mv.version}", dst_path=dst)
        return mv, os.path.join(local, "artifacts", MODEL_ARTIFACT)

    def load_spark_model(self, name: str, alias: str = CHAMPION,
                         dst_path: Optional[str] = None):
        """The version holding ``alias`` and its
        :class:`~minibatch_kmeans.MiniBatchKMeansModel` (built from the downloaded
        artifact with pyarrow, so a driver-local download works on a cluster)."""
        tmp = None if dst_path else tempfile.mkdtemp(prefix="mbkm-model-")
        try:
            mv, path = self.download(name, alias, dst_path or tmp)
            model = SavedModel.read(path).to_spark_model()
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        return mv, model

    def load_champion_spark(self, name: str, dst_path: Optional[str] = None):
        """``(ModelVersion, MiniBatchKMeansModel)`` of the champion."""
        return self.load_spark_model(name, CHAMPION, dst_path)

    def json_tag(self, mv: ModelVersion, key: str) -> Any:
        """A JSON version tag decoded, read back from its run artifact when it was too
        long for a tag (``<key>_artifact``, see :meth:`log_model`); None when absent."""
        if key in mv.tags:
            return json.loads(mv.tags[key])
        uri = mv.tags.get(f"{key}_artifact")
        if not uri:
            return None
        return json.loads(mlflow.artifacts.load_text(uri))

    # -- decisions -----------------------------------------------------------------------
    def record_decision(self, name: str, version, decision: str,
                        reasons: Optional[Mapping[str, Any]] = None) -> None:
        """Record a decision about a version (e.g. "promote", "keep", "reject") with its
        reasons: version tags ``decision``, ``decision_reasons`` (JSON), ``decision_at``
        and ``decision_run_id``; and, in an active run, the run tags ``decision``,
        ``decision.version``, ``decision.reasons`` and its numeric reasons as metrics
        ``decision.<key>``. Mutates the registry (and the active run)."""
        version = _version_str(version)
        reasons = dict(reasons or {})
        run = mlflow.active_run()
        tags = {"decision": decision, "decision_reasons": _text(reasons),
                "decision_at": _now()}
        if run is not None:
            tags["decision_run_id"] = run.info.run_id
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)
        if run is not None:
            mlflow.set_tags({"decision": decision, "decision.version": version,
                             "decision.model": name, "decision.reasons": _text(reasons)})
            metrics = _finite_metrics(reasons)
            if metrics:
                mlflow.log_metrics({f"decision.{k}": v for k, v in metrics.items()})
        logger.info("%s version %s: decision %r (%s)", name, version, decision,
                    _text(reasons))


def version_tags(mv: ModelVersion, keys: Sequence[str] = ("feature_schema", "input_schema",
                                                          "holdout_metrics", "reference_stats",
                                                          "training_info")) -> Dict[str, Any]:
    """A version's tags with the JSON ones (``keys``) decoded."""
    out: Dict[str, Any] = dict(mv.tags)
    for key in keys:
        if key in out:
            try:
                out[key] = json.loads(out[key])
            except ValueError:
                pass
    return out


def track_training(cfg, model, holdout, summary: Mapping[str, Any], *, run_id: str,
                   training_table: str, delta_version: Optional[int] = None,
                   pngs: Iterable[str] = ()) -> ModelVersion:
    """What the train job does with MLflow: one run with the fit's Params, figures and
    PNGs; the model registered with its holdout metrics and reference statistics (from
    the held-out rows); and, under ``cfg.promote_first``, the version made champion when
    the registered model has none yet.

    Parameters
    ----------
    cfg : minibatch_kmeans.app.config.MlflowConfig
    model : MiniBatchKMeansModel
    holdout : DataFrame
        Rows the model was not trained on.
    summary : mapping
        The training summary (``model.summary.as_dict()`` plus the job's keys).
    """
    from .drift import reference_statistics
    from ..evaluate.holdout import (SILHOUETTE_ROWS, holdout_metrics, holdout_size,
                                    measure_centers, silhouette_sample)

    registry = tracking(cfg.tracking_uri, cfg.experiment, registry_uri=cfg.registry_uri,
                        root=cfg.root)
    params = {p.name: v for p, v in model.extractParamMap().items()}
    metrics = {k: summary.get(k) for k in ("trainingCost", "numSteps", "numIter", "numRows",
                                           "invalidRows", "fitSeconds", "rowsSeen")}
    # measured as jobs/monitor.py measures a challenger, so versions compare
    spec = model.featureSpec(holdout)
    rows, weight = holdout_size(holdout, spec)
    sample = silhouette_sample(holdout, spec, SILHOUETTE_ROWS, model.getSeed())
    measured = measure_centers(holdout, sample, spec,
                               {"model": np.array(model.clusterCenters())}, weight)["model"]
    reference = reference_statistics(model, holdout)
    metrics_on_holdout = holdout_metrics(rows, measured, reference)
    with registry.log_run(f"train-{run_id}", params=params, metrics=metrics, pngs=pngs,
                          tags={"job": "train", "run_id": run_id,
                                "training_table": training_table}):
        mv = registry.log_model(model, cfg.model_name, training_table=training_table,
                                delta_version=delta_version,
                                holdout_metrics=metrics_on_holdout,
                                reference_stats=reference, tags={"job_run_id": run_id})
    if cfg.promote_first and registry.champion(cfg.model_name) is None:
        try:
            registry.promote(cfg.model_name, mv.version, expected_current=None,
                             reason="first registered model")
        except RegistryError as e:  # another job promoted one meanwhile: keep theirs
            logger.warning("version %s not made champion: %s", mv.version, e)
    return mv


def log_job_run(cfg, job: str, params: Mapping[str, Any], metrics: Mapping[str, Any],
                pngs: Iterable[str] = (), tags: Optional[Mapping[str, Any]] = None) -> str:
    """One MLflow run for a job (compare, tune) under ``cfg``
    (:class:`~minibatch_kmeans.app.config.MlflowConfig`); returns the run id."""
    registry = tracking(cfg.tracking_uri, cfg.experiment, registry_uri=cfg.registry_uri,
                        root=cfg.root)
    with registry.log_run(job, params=params, metrics=metrics, pngs=pngs,
                          tags={"job": job, **(tags or {})}) as run:
        return run.info.run_id
