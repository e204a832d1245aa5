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


# -- the spark-submit container (conf/container/Dockerfile); docker is not run here -------

ROOT = CONF.parent
DOCKERFILE = CONF / "container" / "Dockerfile"


def dockerfile():
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += " " + line.strip().rstrip("\\").strip()
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            pending = ""
    return out


def test_container_copies_only_files_that_exist_or_dist_builds():
    """Every COPY source is in the repository, or is what .ci/dist.py builds into dist/
    (the wheel, named as pip names it); the Dockerfile's ignore file lets each through."""
    import fnmatch
    import re

    version = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    dist_py = (ROOT / ".ci" / "dist.py").read_text()
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    copies = [args.split() for kw, args in dockerfile() if kw == "COPY"]
    assert copies
    for *sources, _dest in copies:
        for source in sources:
            assert not source.startswith("--"), source  # no --from stages here
            assert f"!{source.rstrip('/')}" in [line.rstrip("/") for line in ignore], source
            if source.startswith("dist/"):
                wheel = f"minibatch_kmeans-{version}-py3-none-any.whl"
                assert fnmatch.fnmatch(f"dist/{wheel}", source), source
                assert "def build_wheel" in dist_py and "*.whl" in dist_py
            else:
                assert glob.glob(str(ROOT / source)), f"{source} does not exist"


def test_container_spark_is_the_pinned_pyspark_s_and_pip_never_installs_pyspark():
    import re
    from importlib.metadata import requires

    instructions = dockerfile()
    args = dict(a.split("=", 1) for kw, a in instructions if kw == "ARG" and "=" in a)
    (base,) = [a for kw, a in instructions if kw == "FROM"]
    assert base.startswith("apache/spark:${SPARK_VERSION}-") and "python3" in base
    spark = args["SPARK_VERSION"]
    pinned = re.search(r"^pyspark==(\S+)$", (ROOT / "constraints.txt").read_text(),
                       flags=re.M).group(1)
    assert spark.split(".")[:2] == pinned.split(".")[:2], (spark, pinned)
    low = re.search(r'"pyspark\[connect\]>=([\d.]+),<(\d+)"', (ROOT / "setup.py").read_text())
    as_tuple = [int(v) for v in spark.split(".")]
    assert as_tuple >= [int(v) for v in low.group(1).split(".")]
    assert as_tuple[0] < int(low.group(2))
    runs = " ".join(a for kw, a in instructions if kw == "RUN")
    installs = [cmd for cmd in re.split(r";|&&", runs) if "pip install" in cmd]
    assert installs and not [cmd for cmd in installs if "pyspark" in cmd or "-r " in cmd]
    assert "pip show pyspark" in runs  # and the build fails if something pulled it in
    # neither the wheel nor the extras EXTRAS may name bring pyspark
    extras = [e for e in args.get("EXTRAS", "").strip('"').split(",") if e]
    assert not extras
    reqs = requires("minibatch-kmeans") or []
    base_reqs = [r for r in reqs if "extra ==" not in r]
    assert base_reqs and not [r for r in base_reqs if r.lower().startswith("pyspark")]
    text = DOCKERFILE.read_text()
    for extra in re.findall(r'"(\w+)" \(', text):  # the extras the Dockerfile offers
        named = [r for r in reqs if f'extra == "{extra}"' in r]
        assert named and not [r for r in named if r.lower().startswith(("pyspark", "delta-"))]
