"""The deployment files: the Databricks Asset Bundle (conf/databricks.yml) names entry
points that exist, configs that exist and load, and runs every task with the job run's
id; the Databricks configs use Unity Catalog volumes."""
import glob
import pathlib

import pytest
import yaml

from minibatch_kmeans.app.config import load_config
from minibatch_kmeans.app.config.monitor import load_monitor_config
from minibatch_kmeans.app.config.score import load_score_config
from minibatch_kmeans_jobs.entry_points import JOBS, script_name

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"
LOADERS = {"mbkm-train": load_config, "mbkm-score": load_score_config,
           "mbkm-monitor": load_monitor_config}


def bundle():
    root = yaml.safe_load((CONF / "databricks.yml").read_text())
    resources = {}
    for pattern in root["include"]:
        files = sorted(glob.glob(str(CONF / pattern)))
        assert files, pattern
        for path in files:
            for kind, items in yaml.safe_load(pathlib.Path(path).read_text())["resources"].items():
                resources.setdefault(kind, {}).update(items)
    return root, resources


def test_bundle_daily_job_runs_train_score_monitor_as_wheel_tasks():
    root, resources = bundle()
    (job,) = resources["jobs"].values()
    assert job["schedule"]["quartz_cron_expression"]
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert list(tasks) == ["train", "score", "monitor"]
    assert tasks["score"]["depends_on"] == [{"task_key": "train"}]
    assert tasks["monitor"]["depends_on"] == [{"task_key": "score"}]
    scripts = {script_name(j) for j in JOBS}
    for task in tasks.values():
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == "minibatch_kmeans"
        assert wheel["entry_point"] in scripts
        args = wheel["parameters"]
        assert args[args.index("--run-id") + 1] == "{{job.run_id}}"
        conf = args[args.index("--conf") + 1]
        assert conf.startswith("${workspace.file_path}/")
        name = conf.split("/", 1)[1]
        assert (CONF / name).is_file(), name
        cfg = LOADERS[wheel["entry_point"]](str(CONF / name))
        assert cfg.output.dir.startswith("/Volumes/")


def test_bundle_builds_the_wheel_the_tasks_install():
    root, resources = bundle()
    (artifact,) = root["artifacts"].values()
    script = artifact["build"].split()[1]
    assert (CONF / artifact["path"] / script).resolve().is_file()
    (job,) = resources["jobs"].values()
    (env,) = job["environments"]
    (dep,) = env["spec"]["dependencies"]
    assert dep.endswith("minibatch_kmeans-*.whl")
    assert artifact["files"][0]["source"].endswith(pathlib.Path(dep).name)
    assert "*.yaml" in root["sync"]["include"]


@pytest.mark.parametrize("name", ["databricks.yaml", "databricks_score.yaml",
                                  "databricks_monitor.yaml"])
def test_databricks_configs_use_volumes_and_the_workspace_registry(name):
    text = (CONF / name).read_text()
    assert "dbfs:/FileStore" not in text
    loader = {"databricks.yaml": load_config, "databricks_score.yaml": load_score_config,
              "databricks_monitor.yaml": load_monitor_config}[name]
    cfg = loader(str(CONF / name))
    assert cfg.input.path.startswith("/Volumes/")
    assert cfg.spark.master is None
    if getattr(cfg, "mlflow", None) is not None:
        assert (cfg.mlflow.tracking_uri, cfg.mlflow.registry_uri) == ("databricks",
                                                                      "databricks-uc")
