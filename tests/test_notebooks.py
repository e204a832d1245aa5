"""The Databricks notebooks: source format, and each runs as a plain Python script on small
generated data (here on the test session, which a notebook finds as Databricks' ``spark``)."""
import ast
import runpy
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


@pytest.fixture(autouse=True)
def no_progress_handler_left():
    """A notebook adds a handler that prints the package's log lines: removed after each
    test, with the logger's level, so other tests' logging is as they expect."""
    import logging

    log = logging.getLogger("minibatch_kmeans")
    level = log.level
    yield
    for handler in list(log.handlers):
        if handler.get_name() == "mbkm-notebook-progress":
            log.removeHandler(handler)
    log.setLevel(level)


def test_a_notebook_shows_the_fit_s_progress_by_default(capsys):
    """A notebook's logging shows only warnings: Notebook() prints the package's INFO lines
    (a fit's passes and steps) to the cell's output, once, secrets redacted."""
    import logging

    from minibatch_kmeans.app.notebook import Notebook

    Notebook({})
    Notebook({})  # a second cell: still one handler
    logging.getLogger("minibatch_kmeans.spark.passes").info(
        "pass 1 (epochs) to http://u:S3CRET@h")
    out = capsys.readouterr().out
    assert out.count("pass 1 (epochs)") == 1 and "S3CRET" not in out
    Notebook({}, progress=False)


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_train_and_compare_with_mllib.py",
                                           "02_monitor_and_retrain.py", "03_choose_k.py",
                                           "04_keep_clusters_current.py"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_databricks_source_format(path):
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == "# Databricks notebook source"
    assert text.count("\n# COMMAND ----------\n") >= 2
    # every magic is behind "# MAGIC", so the file is plain Python
    assert not [line for line in lines if line.lstrip().startswith("%")]
    ast.parse(text)


def widget_defaults(path, nb):
    """Each ``nb.widget(name, default, ...)`` of a notebook: its name and its default, the
    default's expression evaluated against ``nb`` (no cell of the notebook runs)."""
    defaults = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "widget" and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "nb"):
            name = ast.literal_eval(node.args[0])
            expr = compile(ast.Expression(node.args[1]), str(path), "eval")
            defaults[name] = eval(expr, {"nb": nb})  # noqa: S307 (our own notebooks' source)
    return defaults


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_widget_defaults_are_volume_paths_on_databricks_and_local_elsewhere(path, monkeypatch):
    """On Databricks (DATABRICKS_RUNTIME_VERSION set) a notebook writes under the Unity
    Catalog volume of conf/databricks*.yaml, registers in Unity Catalog and logs to a
    workspace experiment; elsewhere under out/ with local names, so that it runs as a
    plain script."""
    from minibatch_kmeans.app.notebook import Notebook

    number = path.name[:2]
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    nb = Notebook({}, progress=False)
    assert nb.on_databricks
    on_databricks = widget_defaults(path, nb)
    assert on_databricks["output_dir"] == (
        f"/Volumes/main/default/minibatch_kmeans/notebooks/{number}")
    assert not [v for v in on_databricks.values() if v.startswith("out")]
    if "model_name" in on_databricks:  # catalog.schema.name
        assert on_databricks["model_name"] == "main.default.minibatch_kmeans_notebook"
    if "experiment" in on_databricks:  # a workspace path
        assert on_databricks["experiment"].startswith("/Shared/")

    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    nb = Notebook({}, progress=False)
    assert not nb.on_databricks
    local = widget_defaults(path, nb)
    assert local["output_dir"] == f"out/notebooks/{number}"
    assert not [v for v in local.values() if v.startswith("/Volumes")]
    assert local.keys() == on_databricks.keys()


def test_the_notebooks_volume_is_the_databricks_configs():
    """The notebooks' volume root is the one conf/databricks*.yaml write under."""
    import yaml

    from minibatch_kmeans.app.notebook import VOLUME_ROOT

    conf = Path(__file__).resolve().parents[1] / "conf"
    volumes = []

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value.startswith("/Volumes/"):
            volumes.append(value)

    for path in sorted(conf.glob("databricks*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    assert volumes and all(v.startswith(VOLUME_ROOT + "/") for v in volumes), volumes


def test_01_train_and_compare_runs(spark, tmp_path, monkeypatch):
    out = tmp_path / "nb01"
    for name, value in {"OUTPUT_DIR": str(out), "ROWS": "3000", "FEATURES": "4", "K": "4",
                        "BATCH_SIZE": "500"}.items():
        monkeypatch.setenv(f"MBKM_{name}", value)
    ns = runpy.run_path(str(NOTEBOOKS[0]), init_globals={"spark": spark}, run_name="__main__")
    assert ns["model"].getK() == 4 and ns["summary"]["numRows"] == 3000
    assert ns["result"]["data"]["rows"] == 3000
    assert (out / "convergence.png").stat().st_size > 1000
    assert (out / "compare" / "compare.md").exists()


def test_02_monitor_and_retrain_runs(spark, tmp_path, monkeypatch):
    out = tmp_path / "nb02"
    for name, value in {"OUTPUT_DIR": str(out), "ROWS": "4000", "K": "4",
                        "TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}.items():
        monkeypatch.setenv(f"MBKM_{name}", value)
    ns = runpy.run_path(str(NOTEBOOKS[1]), init_globals={"spark": spark}, run_name="__main__")
    result = ns["result"]
    assert result.report["drift"] and result.outcome_code in (3, 4) and result.code == 0
    assert {"x0", "x1", "x2"} <= set(result.report["driftedFeatures"])
    assert (out / "monitor" / "notebook" / "drift.png").stat().st_size > 1000  # its run's dir


def test_03_choose_k_runs(spark, tmp_path, monkeypatch):
    out = tmp_path / "nb03"
    for name, value in {"OUTPUT_DIR": str(out), "ROWS": "3000", "TRUE_K": "4",
                        "K_VALUES": "2,3,4,5,6"}.items():
        monkeypatch.setenv(f"MBKM_{name}", value)
    ns = runpy.run_path(str(NOTEBOOKS[2]), init_globals={"spark": spark}, run_name="__main__")
    assert ns["result"]["recommended"]["k"] == 4
    assert (out / "k_curves.png").stat().st_size > 1000


def test_04_keep_clusters_current_runs(spark, tmp_path, monkeypatch):
    out = tmp_path / "nb04"
    for name, value in {"OUTPUT_DIR": str(out), "ROWS": "1000", "K": "3"}.items():
        monkeypatch.setenv(f"MBKM_{name}", value)
    ns = runpy.run_path(str(NOTEBOOKS[3]), init_globals={"spark": spark}, run_name="__main__")
    assert ns["first"].applied_batches == 3 and ns["second"].applied_batches == 5
    assert ns["current"].numUpdates == 8
    assert ns["distance_to_moved"].max() < 1.0  # moved by 5.2; five micro-batches later
