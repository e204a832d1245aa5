"""Job config: YAML (safe_load) into frozen dataclasses, validated field by field."""
import copy
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.app.config import Config, apply_override, load_config
from minibatch_kmeans.paths import driver_path
from minibatch_kmeans.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

BASE = {
    "spark": {"app_name": "t", "master": "local[2]", "conf": {"spark.sql.shuffle.partitions": 4}},
    "input": {"path": "out/data/blobs", "format": "parquet",
              "features": {"inputCols": ["x0", "x1", "x2"]}},
    "model": {"k": 3, "maxIter": 5, "tol": 0.001, "seed": 1, "initMode": "k-means++",
              "initSteps": 2, "initScope": "sample", "distanceMeasure": "euclidean",
              "batchSize": 100, "initSize": 300, "maxNoImprovement": 0,
              "reassignmentRatio": 0.0, "handleInvalid": "skip",
              "initialCenters": [[0, 0, 0], [1, 1, 1], [2, 2, 2]], "dtype": "float64",
              "computeTrainingCost": False, "prepareStorage": "disk", "localSteps": 4,
              "scratchDir": "/tmp/scratch", "checkpointDir": "/tmp/ck", "checkpointInterval": 5},
    "output": {"dir": "out/train"},
    "logging": {"level": "debug"},
}


def with_value(dotted, value):
    """BASE with one field set (value=KeyError deletes it)."""
    raw = copy.deepcopy(BASE)
    *parents, last = dotted.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    if value is KeyError:
        node.pop(last, None)
    else:
        node[last] = value
    return raw


def write_yaml(tmp_path, raw, name="job.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw) if not isinstance(raw, str) else raw)
    return str(path)


# -- valid configs ------------------------------------------------------------------------


def test_full_config_loads_with_every_model_param():
    cfg = Config.from_dict(BASE)
    assert cfg.spark.app_name == "t" and cfg.spark.master == "local[2]"
    assert dict(cfg.spark.conf) == {"spark.sql.shuffle.partitions": "4"}
    assert cfg.input.input_cols == ("x0", "x1", "x2") and cfg.input.features_col is None
    assert cfg.output.model == "out/train/model"
    assert cfg.output.summary == "out/train/summary.json"
    assert cfg.output.plot == "out/train/convergence.png"
    assert cfg.logging.level == "DEBUG"
    params = cfg.estimator_params()
    assert set(BASE["model"]) | {"inputCols"} == set(params)
    est = MiniBatchKMeans(**params)  # every param is accepted by the estimator as given
    assert est.getK() == 3 and est.getInitialCenters() == [[0.0] * 3, [1.0] * 3, [2.0] * 3]
    assert est.getInputCols() == ["x0", "x1", "x2"] and est.getDtype() == "float64"
    assert est.getComputeTrainingCost() is False
    assert (est.getPrepareStorage(), est.getScratchDir()) == ("disk", "/tmp/scratch")
    assert (est.getCheckpointDir(), est.getCheckpointInterval()) == ("/tmp/ck", 5)


def test_minimal_config_uses_defaults():
    cfg = Config.from_dict({"input": {"path": "p", "features": {"featuresCol": "f"}},
                            "output": {"dir": "o/"}})
    assert cfg.spark.master is None and dict(cfg.spark.conf) == {}
    assert cfg.input.format == "parquet" and cfg.input.features_col == "f"
    assert dict(cfg.model) == {} and cfg.logging.level == "INFO"
    assert cfg.output.model == "o/model"
    assert cfg.estimator_params() == {"featuresCol": "f"}


def test_weight_col_and_explicit_outputs():
    raw = with_value("input.weightCol", "w")
    raw["output"] = {"dir": "s3a://b/m", "model": "s3a://b/m/v1", "summary": "/tmp/s.json",
                     "plot": None, "quality_report": None}
    cfg = Config.from_dict(raw)
    assert cfg.estimator_params()["weightCol"] == "w"
    assert (cfg.output.model, cfg.output.summary, cfg.output.plot) == \
        ("s3a://b/m/v1", "/tmp/s.json", None)


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml", "databricks.yaml",
                                  "compare.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(str(CONF_DIR / name))
    assert cfg.input.path and cfg.output.model
    MiniBatchKMeans(**cfg.estimator_params())


def test_local_config_is_the_demo():
    cfg = load_config(str(CONF_DIR / "local.yaml"))
    assert cfg.spark.master.startswith("local")
    assert cfg.input.path == "out/data/blobs" and cfg.input.format == "parquet"
    assert cfg.input.input_cols == tuple(f"x{i}" for i in range(16))
    assert cfg.model["k"] == 20
    assert cfg.output.model.startswith("out/train/")
    assert cfg.output.plot.startswith("out/train/")


def test_compare_section_defaults_and_values():
    cfg = Config.from_dict(BASE)
    assert cfg.compare.mllib == {} and cfg.compare.sample_size == 100_000
    assert cfg.compare.local_max_mb == 1024 and cfg.compare.handle_invalid == "error"
    assert cfg.compare.warm_up_rows == 10_000 and cfg.compare.repeats == 1
    raw = with_value("compare", {"mllib": {"solver": "row", "maxIter": 7, "tol": "1e-6"},
                                 "local_max_mb": 0, "handle_invalid": "skip",
                                 "warm_up_rows": 0, "repeats": 3})
    cfg = Config.from_dict(raw)
    assert dict(cfg.compare.mllib) == {"solver": "row", "maxIter": 7, "tol": 1e-6}
    assert cfg.compare.local_max_mb == 0 and cfg.compare.handle_invalid == "skip"
    assert cfg.compare.warm_up_rows == 0 and cfg.compare.repeats == 3
    assert cfg.compare.references == ("sklearn_minibatch", "sklearn_kmeans")
    assert Config.from_dict(with_value("compare.references", [])).compare.references == ()
    shipped = load_config(str(CONF_DIR / "compare.yaml"))
    assert shipped.compare.mllib["solver"] == "block"
    assert shipped.input.path == load_config(str(CONF_DIR / "local.yaml")).input.path


def test_remote_configs_have_no_master():
    for name in ("cluster.yaml", "databricks.yaml"):
        cfg = load_config(str(CONF_DIR / name))
        assert cfg.spark.master is None
        assert "://" in cfg.input.path or cfg.input.path.startswith("/Volumes/")


def test_config_is_frozen():
    cfg = Config.from_dict(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.input = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.output.dir = "x"
    with pytest.raises(TypeError):
        cfg.model["k"] = 4
    with pytest.raises(TypeError):
        cfg.spark.conf["a"] = "b"


def test_numeric_strings_are_numbers_for_number_fields():
    # YAML 1.1 reads 1e-4 (no dot) as a string
    cfg = Config.from_dict(yaml.safe_load(yaml.safe_dump(BASE).replace("tol: 0.001", "tol: 1e-4")))
    assert cfg.model["tol"] == pytest.approx(1e-4)


def test_null_optional_model_params_are_left_unset():
    raw = with_value("model.initialCenters", None)
    raw["model"]["initSize"] = None
    raw["model"]["seed"] = None
    cfg = Config.from_dict(raw)
    assert not {"initialCenters", "initSize", "seed"} & set(cfg.model)


def test_driver_path():
    assert driver_path("dbfs:/FileStore/a.json") == "/dbfs/FileStore/a.json"
    assert driver_path("file:///tmp/a.json") == "/tmp/a.json"
    assert driver_path("file:/tmp/a.json") == "/tmp/a.json"
    assert driver_path("out/a.json") == "out/a.json"


# -- overrides --------------------------------------------------------------------------------


def test_set_overrides(tmp_path):
    path = write_yaml(tmp_path, BASE)
    cfg = load_config(path, ["model.k=20", "input.path=out/x", "model.computeTrainingCost=true",
                             "spark.conf.spark.sql.shuffle.partitions=8",
                             "input.features.inputCols=[a, b]", "model.initialCenters=null",
                             "model.tol=1e-3", "logging.level=warning", "input.weightCol=w"])
    assert cfg.model["k"] == 20 and cfg.input.path == "out/x"
    assert cfg.model["computeTrainingCost"] is True
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "8"  # dotted name kept whole
    assert cfg.input.input_cols == ("a", "b")
    assert "initialCenters" not in cfg.model
    assert cfg.model["tol"] == pytest.approx(1e-3)
    assert cfg.logging.level == "WARNING" and cfg.input.weight_col == "w"


def test_overrides_apply_in_order_and_create_sections():
    raw = {}
    apply_override(raw, "model.k=5")
    apply_override(raw, "model.k=6")
    apply_override(raw, "output.dir=x=y")  # only the first '=' splits
    assert raw == {"model": {"k": 6}, "output": {"dir": "x=y"}}


@pytest.mark.parametrize("item, words", [
    ("model.k", ["model.k", "key=value"]),
    ("=3", ["key=value"]),
    ("model..k=3", ["model..k"]),
    ("input.path.x=1", ["input.path", "not a mapping"]),
    ("model.k=[1", ["model.k", "YAML"]),
])
def test_bad_overrides(tmp_path, item, words):
    with pytest.raises(ConfigError) as e:
        load_config(write_yaml(tmp_path, BASE), [item])
    for w in words:
        assert w in str(e.value)


def test_override_of_unknown_key_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.kk is not a known key"):
        load_config(write_yaml(tmp_path, BASE), ["model.kk=3"])


# -- bad fields -------------------------------------------------------------------------------

BAD = [
    ("spark.app_name", 3, "spark.app_name"),
    ("spark.master", ["local"], "spark.master"),
    ("spark.conf", ["a"], "spark.conf"),
    ("spark.conf", {"spark.x": {"nested": 1}}, "spark.conf.spark.x"),
    ("input", "out/data", "input"),
    ("input.path", KeyError, "input.path is missing"),
    ("input.path", "", "input.path"),
    ("input.path", 12, "input.path"),
    ("input.format", "csv", "input.format"),
    ("input.features", KeyError, "input.features"),
    ("input.features", {}, "input.features"),
    ("input.features", {"inputCols": ["a"], "featuresCol": "f"}, "input.features"),
    ("input.features", ["x0"], "input.features"),
    ("input.features.inputCols", [], "input.features.inputCols"),
    ("input.features.inputCols", "x0", "input.features.inputCols"),
    ("input.features.inputCols", ["x0", "x0"], "input.features.inputCols"),
    ("input.features.inputCols", ["x0", 1], "input.features.inputCols[1]"),
    ("input.weightCol", 5, "input.weightCol"),
    ("model", [1, 2], "model"),
    ("model.k", 1, "model.k"),
    ("model.k", "ten", "model.k"),
    ("model.k", 2.5, "model.k"),
    ("model.k", True, "model.k"),
    ("model.k", None, "model.k"),
    ("model.maxIter", -1, "model.maxIter"),
    ("model.tol", -1.0, "model.tol"),
    ("model.tol", "small", "model.tol"),
    ("model.tol", float("inf"), "model.tol"),
    ("model.seed", "abc", "model.seed"),
    ("model.initMode", "kmeans", "model.initMode"),
    ("model.initSteps", 0, "model.initSteps"),
    ("model.initScope", "all", "model.initScope"),
    ("model.distanceMeasure", "manhattan", "model.distanceMeasure"),
    ("model.batchSize", 0, "model.batchSize"),
    ("model.initSize", 0, "model.initSize"),
    ("model.maxNoImprovement", -1, "model.maxNoImprovement"),
    ("model.reassignmentRatio", -0.1, "model.reassignmentRatio"),
    ("model.handleInvalid", "keep", "model.handleInvalid"),
    ("model.initialCenters", [[0, 0, 0]], "model.initialCenters"),          # k=3 rows needed
    ("model.initialCenters", [[0, 0], [1, 1], [2, 2]], "model.initialCenters"),  # 3 inputCols
    ("model.initialCenters", [[0, 0, 0], [1, 1], [2, 2, 2]], "model.initialCenters[1]"),
    ("model.initialCenters", [[0, 0, "a"], [1, 1, 1], [2, 2, 2]], "model.initialCenters[0][2]"),
    ("model.initialCenters", "[[0]]", "model.initialCenters"),
    ("model.dtype", "float16", "model.dtype"),
    ("model.computeTrainingCost", "yes", "model.computeTrainingCost"),
    ("model.prepareStorage", "tape", "model.prepareStorage"),
    ("model.localSteps", 0, "model.localSteps"),
    ("model.scratchDir", 3, "model.scratchDir"),
    ("model.checkpointDir", 3, "model.checkpointDir"),
    ("model.checkpointDir", "", "model.checkpointDir"),
    ("model.checkpointInterval", 0, "model.checkpointInterval"),
    ("model.checkpointInterval", 2.5, "model.checkpointInterval"),
    ("model.predictionCol", "", "model.predictionCol"),
    ("output", KeyError, "output is missing"),
    ("output.dir", KeyError, "output.dir is missing"),
    ("output.dir", None, "output.dir"),
    ("output.model", 3, "output.model"),
    ("output.plot", 3, "output.plot"),
    ("output.centers", "main.default.my-centers", "output.centers"),
    ("output.metrics", "a.b.c.d", "output.metrics"),
    ("logging.level", "LOUD", "logging.level"),
    ("logging", "INFO", "logging"),
    ("compare.mllib.solver", "fast", "compare.mllib.solver"),
    ("compare.mllib.maxIter", 0, "compare.mllib.maxIter"),
    ("compare.mllib.initMode", "k-means++", "compare.mllib.initMode"),
    ("compare.sample_size", 1, "compare.sample_size"),
    ("compare.local_max_mb", -1, "compare.local_max_mb"),
    ("compare.handle_invalid", "keep", "compare.handle_invalid"),
    ("compare.warm_up_rows", -5, "compare.warm_up_rows"),
    ("compare.repeats", 0, "compare.repeats"),
    ("compare.references", ["sklearn_dbscan"], "compare.references"),
]


@pytest.mark.parametrize("field, value, where", BAD,
                         ids=[f"{f}={v!r}"[:60] for f, v, _ in BAD])
def test_bad_field_names_the_field_and_value(field, value, where):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(with_value(field, value))
    msg = str(e.value)
    assert where in msg
    if value is not KeyError and value is not None and not isinstance(value, (dict, list)):
        assert repr(value) in msg or str(value) in msg
    assert "\n" not in msg


def test_expected_is_stated():
    with pytest.raises(ConfigError, match=r"model\.k=1 is invalid: expected an integer >= 2"):
        Config.from_dict(with_value("model.k", 1))
    with pytest.raises(ConfigError, match=r"expected one of \['k-means\|\|', 'k-means\+\+', "
                                          r"'random'\]"):
        Config.from_dict(with_value("model.initMode", "kmeans"))


def test_remote_output_dir_keeps_the_reports_next_to_the_outputs():
    out = Config.from_dict(with_value("output.dir", "s3a://bucket/models")).output
    assert (out.summary, out.plot, out.quality_report) == (
        "s3a://bucket/models/summary.json", "s3a://bucket/models/convergence.png",
        "s3a://bucket/models/quality.json")
    raw = with_value("output.dir", "s3a://bucket/models")
    raw["output"].update(summary="/tmp/s.json", plot=None)
    out = Config.from_dict(raw).output
    assert (out.summary, out.plot) == ("/tmp/s.json", None)
    assert out.model == "s3a://bucket/models/model"
    assert (out.centers, out.quarantine, out.format) == ("s3a://bucket/models/centers",
                                                          "s3a://bucket/models/quarantine",
                                                          "parquet")
    # dbfs:/ is reachable from the driver through /dbfs
    assert Config.from_dict(with_value("output.dir", "dbfs:/x")).output.plot == \
        "dbfs:/x/convergence.png"


@pytest.mark.parametrize("section, key", [
    ("", "extra"), ("spark", "masterr"), ("input", "paths"), ("input.features", "cols"),
    ("model", "kk"), ("model", "numClusters"), ("output", "directory"), ("logging", "lvl"),
    ("compare", "samples"), ("compare.mllib", "k"), ("compare.mllib", "weightCol"),
])
def test_unknown_keys_are_rejected(section, key):
    raw = with_value(f"{section}.{key}" if section else key, 1)
    path = f"{section}.{key}" if section else key
    with pytest.raises(ConfigError, match=f"{path} is not a known key"):
        Config.from_dict(raw)


@pytest.mark.parametrize("name, where", [("inputCols", "input.features.inputCols"),
                                         ("featuresCol", "input.features.featuresCol"),
                                         ("weightCol", "input.weightCol")])
def test_input_params_in_model_section_point_to_input(name, where):
    with pytest.raises(ConfigError, match=f"model.{name} is not a known key.*{where}"):
        Config.from_dict(with_value(f"model.{name}", "x"))


def test_model_keys_are_the_estimator_params():
    raw = copy.deepcopy(BASE)
    raw["model"] = {"distanceCol": "dist", "predictionCol": "cluster"}
    cfg = Config.from_dict(raw)
    assert MiniBatchKMeans(**cfg.estimator_params()).getPredictionCol() == "cluster"


# -- files ------------------------------------------------------------------------------------


def test_yaml_is_parsed_with_safe_load(tmp_path):
    marker = tmp_path / "pwned"
    text = ("input: !!python/object/apply:os.system ['touch %s']\noutput: {dir: o}\n" % marker)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write_yaml(tmp_path, text))
    assert not marker.exists()
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write_yaml(tmp_path, "model: !!python/object:collections.OrderedDict {}\n"))


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write_yaml(tmp_path, "model: [k: 3\n"))
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="input is missing"):
        load_config(write_yaml(tmp_path, ""))


# -- secrets ----------------------------------------------------------------------------------


def test_secret_spark_settings_are_never_shown(tmp_path):
    raw = copy.deepcopy(BASE)
    raw["spark"]["conf"].update({"spark.hadoop.fs.s3a.secret.key": "S3CRET-1",
                                 "spark.databricks.token": "S3CRET-2",
                                 "spark.ssl.keyPassword": "S3CRET-3"})
    cfg = Config.from_dict(raw)
    assert cfg.spark.conf["spark.databricks.token"] == "S3CRET-2"  # the value is kept
    shown = repr(cfg) + repr(cfg.spark) + "\n".join(cfg.describe())
    assert "S3CRET" not in shown and "redacted" in shown
    assert "spark.sql.shuffle.partitions=4" in "\n".join(cfg.describe())
    bad = copy.deepcopy(BASE)
    bad["spark"]["conf"]["spark.my.password"] = {"S3CRET-4": 1}
    with pytest.raises(ConfigError) as e:
        Config.from_dict(bad)
    assert "spark.conf.spark.my.password" in str(e.value) and "S3CRET" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write_yaml(tmp_path, BASE), ["spark.conf.spark.api.token=[S3CRET-5"])
    assert "S3CRET" not in str(e.value)


def test_secrets_by_setting_name_and_inside_values_are_never_shown():
    """Azure SAS settings, catalog credentials, *.pwd, JDBC password= and a tracking URI's
    user:password@ are hidden in the config's repr and log lines; other values stay
    readable."""
    from minibatch_kmeans.redaction import redact

    raw = copy.deepcopy(BASE)
    raw["spark"]["conf"].update({
        "fs.azure.sas.data.acct.blob.core.windows.net": "sv=2022&sig=S3CRET-1",
        "spark.sql.catalog.lake.credential": "S3CRET-2", "spark.db.pwd": "S3CRET-3",
        "spark.db.url": "jdbc:postgresql://h/db?user=u&password=S3CRET-4"})
    raw["mlflow"] = {"tracking_uri": "https://bob:S3CRET-5@mlflow.example.com"}
    cfg = Config.from_dict(raw)
    shown = repr(cfg) + "\n".join(cfg.describe()) + repr(cfg.mlflow)
    assert "S3CRET" not in shown and "redacted" in shown
    assert "jdbc:postgresql://h/db?user=u&password=" in shown and "bob:" in shown
    assert "spark.sql.shuffle.partitions=4" in shown
    assert redact("x", "https://a.blob/c?sv=1&sig=S3CRET-6&se=2").endswith("(redacted)&se=2")


# -- the quality section and the scoring config ------------------------------------------

def test_quality_section_parses_and_names_bad_fields():
    raw = with_value("quality", {"ranges": {"x0": [0, None], "x1": [-1, 1]},
                                 "max_invalid_fraction": 0.1, "min_rows": 10,
                                 "expected_columns": {"id": "BIGINT"}})
    q = Config.from_dict(raw).quality
    assert dict(q.ranges) == {"x0": (0.0, None), "x1": (-1.0, 1.0)}
    assert (q.max_invalid_fraction, q.min_rows, dict(q.expected_columns)) == \
        (0.1, 10, {"id": "bigint"})
    assert Config.from_dict(with_value("quality", None)).quality.max_invalid_fraction == 0.05
    for field, value, message in [
            ("quality.max_invalid_fraction", 2, "quality.max_invalid_fraction=2.0"),
            ("quality.ranges", {"x0": [1, 0]}, "quality.ranges.x0=[1, 0]"),
            ("quality.ranges", {"x0": [None, None]}, "quality.ranges.x0"),
            ("quality.ranges", {"x0": 3}, "quality.ranges.x0=3"),
            ("quality.min_rows", 0, "quality.min_rows=0"),
            ("quality.max_rows", 0, "quality.max_rows is not a known key")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Config.from_dict(with_value(field, value))


def test_score_config_sections():
    from minibatch_kmeans.app.config import ScoreConfig, load_score_config

    cfg = load_score_config("conf/score.yaml", ["run_id=day-1", "output.format=delta"])
    assert cfg.run_id == "day-1" and cfg.output.format == "delta"
    assert cfg.output.predictions == "out/score/predictions"
    assert cfg.output.model is None and cfg.scoring.id_columns == ("id",)
    base = {"input": {"path": "t"}, "scoring": {"model": "m"}, "output": {"dir": "o"}}
    for change, message in [
            ({"model": {"path": "m"}}, "put the model path under scoring.model"),
            ({"input": {"path": "t", "features": {"inputCols": ["a"]}}},
             "input.features is not a known key"),
            ({"scoring": {"model": "m", "prediction_col": "p", "distance_col": "p"}},
             "distinct output column names"),
            ({"scoring": {}}, "scoring.model is missing"),
            ({"run_id": "a b"}, "run_id='a b' is invalid"),
            ({"output": {"dir": "o", "format": "orc"}}, "output.format='orc'")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            ScoreConfig.from_dict({**base, **change})


def test_input_table_format_delta_and_time_travel(tmp_path):
    def inp(**changes):
        raw = copy.deepcopy(BASE)
        raw["input"].update(changes)
        raw["input"] = {k: v for k, v in raw["input"].items() if v is not KeyError}
        return raw

    cfg = Config.from_dict(inp(format="delta", version=3))
    assert (cfg.input.path, cfg.input.format, cfg.input.version) == ("out/data/blobs", "delta", 3)
    cfg = Config.from_dict(inp(path=KeyError, table="main.ml.points", format="delta"))
    assert cfg.input.path is None and cfg.input.table == "main.ml.points"
    # an unquoted YAML timestamp arrives as a datetime: kept as ISO 8601 text
    path = write_yaml(tmp_path, "input: {path: t, format: delta, timestamp: 2024-05-01T12:00:00Z,"
                                " features: {inputCols: [x0]}}\noutput: {dir: o}\n")
    assert load_config(path).input.timestamp == "2024-05-01T12:00:00+00:00"
    assert Config.from_dict(inp(format="delta", timestamp="2024-05-01")).input.timestamp \
        == "2024-05-01"
    for changes, message in [
            ({"table": "t"}, "input.path and input.table are both set"),
            ({"path": KeyError}, "input.path is missing"),
            ({"table": "", "path": KeyError}, "input.table=''"),
            ({"version": 1}, "input.version is set but input.format='parquet'"),
            ({"format": "delta", "version": -1}, "input.version=-1 is invalid"),
            ({"format": "delta", "version": True}, "input.version=True is invalid"),
            ({"format": "delta", "timestamp": "noon"}, "input.timestamp='noon' is invalid"),
            ({"format": "delta", "version": 1, "timestamp": "2024-05-01"},
             "input.version=1 and input.timestamp='2024-05-01' are both set")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Config.from_dict(inp(**changes))


def test_since_version_needs_delta_and_an_earlier_version():
    raw = with_value("input.since_version", 3)
    with pytest.raises(ConfigError, match="input.since_version is set but input.format"):
        Config.from_dict(raw)
    raw["input"]["format"] = "delta"
    cfg = Config.from_dict(raw)
    assert cfg.input.read_options() == {"since_version": 3}
    assert cfg.input.describe().endswith("@since_version 3")
    raw["input"]["version"] = 3
    with pytest.raises(ConfigError, match="input.since_version=3 is not before"):
        Config.from_dict(raw)
