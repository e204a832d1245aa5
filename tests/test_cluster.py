"""spark-submit on a real Spark standalone cluster: a master and two one-core workers on
127.0.0.1, started from the installed pyspark; the jobs ship as ``make dist``'s zip on
``--py-files``.

The driver and the executors run a Python that has every dependency but not this
project (a venv of this interpreter that sees .venv's site-packages without its
editable install), so the jobs can only import ``minibatch_kmeans`` from the zip.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import pyspark
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).resolve().parent
RUN_ID = "cluster-test"
FEATURES = ["x0", "x1", "x2", "x3"]
K = 4
START_TIMEOUT = 120   # seconds for the master and both workers (3 JVMs on a busy 2-core box)
SUBMIT_TIMEOUT = 300  # seconds for one spark-submit
STOP_TIMEOUT = 20     # seconds between SIGTERM and SIGKILL
# Every JVM of the test compiles with C1 only: these short-lived JVMs spent about half of
# their CPU in the C2 compiler (the module took 195 s of CPU with it, 113 s without).
JVM_OPTS = "-XX:TieredStopAtLevel=1"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"--- {path}: {e}"
    return f"--- last {min(lines, len(text))} lines of {path}:\n" + "\n".join(text[-lines:])


# Kill the JVMs when pytest dies without running teardown (SIGKILL): the kernel sends
# them SIGKILL when their parent goes. Executors exit with their worker (WorkerWatcher),
# and pyspark's Python daemons with their executor (stdin closed).
_PDEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StandaloneCluster:
    """A Spark standalone master and workers on 127.0.0.1, each in its own process group.

    Every process this starts, and every process that runs in its directory (executors
    and their Python workers run in the workers' work dirs), is found by :meth:`ours`;
    :meth:`stop` ends them all.
    """

    def __init__(self, root: Path, python: str, workers: int = 2):
        self.root, self.python, self.n_workers = root, python, workers
        self.tag = f"mbkm-test-cluster-{uuid.uuid4().hex[:12]}"
        self.procs = {}  # name -> Popen
        self.groups = set()  # process groups of everything started (cluster and submits)
        self.logs = {}  # name -> log file
        self.port = self.webui_port = None

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def env(self, **extra) -> dict:
        env = dict(os.environ, SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1",
                   SPARK_CONF_DIR=str(self.root / "conf"), PYSPARK_PYTHON=self.python,
                   PYSPARK_DRIVER_PYTHON=self.python, SPARK_DAEMON_MEMORY="512m",
                   SPARK_DAEMON_JAVA_OPTS=f"-Dmbkm.test.cluster={self.tag} {JVM_OPTS}")
        for name in ("PYSPARK_GATEWAY_PORT", "SPARK_REMOTE", "PYTHONPATH"):
            env.pop(name, None)
        env.update(extra)
        return env

    def _spawn(self, name: str, args, env: dict, cwd: Path):
        log = self.root / f"{name}.log"
        self.logs[name] = log
        with open(log, "wb") as out:
            proc = subprocess.Popen(_PDEATHSIG + [str(a) for a in args], env=env, cwd=cwd,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.groups.add(proc.pid)
        return proc

    def state(self, timeout: float = 5.0) -> dict:
        """The master's JSON status (workers, active and completed applications)."""
        with _NO_PROXY.open(f"http://127.0.0.1:{self.webui_port}/json/",
                            timeout=timeout) as r:
            return json.load(r)

    def log_tails(self) -> str:
        return "\n".join(_tail(log) for log in self.logs.values())

    def start(self) -> "StandaloneCluster":
        """Start the master, wait until it answers, then start the workers: they register
        while the caller prepares its job (:meth:`submit` waits for them)."""
        (self.root / "conf").mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # fresh ports when another process took ours meanwhile
            if self._start_master():
                break
            self.stop()
        else:
            pytest.fail(f"the Spark master did not start (3 attempts)\n{self.log_tails()}")
        spark_class = SPARK_HOME / "bin" / "spark-class"
        for i in range(1, self.n_workers + 1):
            work = self.root / f"worker-{i}"
            work.mkdir(exist_ok=True)
            self.procs[f"worker-{i}"] = self._spawn(
                f"worker-{i}",
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--cores", "1",
                 "--memory", "1g", "--host", "127.0.0.1", "--webui-port", _free_port(),
                 self.url],
                self.env(SPARK_WORKER_DIR=str(work)), work)
        return self

    def wait_for_workers(self) -> dict:
        return self.wait_until(lambda s: s.get("aliveworkers", 0) >= self.n_workers,
                          f"{self.n_workers} alive workers")

    def _start_master(self) -> bool:
        """Start the master on fresh ports; False when it lost a port to another process
        (it binds only the ports it was given: spark.port.maxRetries=0). Its REST
        submission server stays off: it would bind the fixed port 6066, which another
        cluster on this machine may hold (the master then never becomes ALIVE)."""
        self.port, self.webui_port = _free_port(), _free_port()
        self.procs["master"] = proc = self._spawn(
            "master",
            [SPARK_HOME / "bin" / "spark-class", "org.apache.spark.deploy.master.Master",
             "--host", "127.0.0.1", "--port", self.port, "--webui-port", self.webui_port],
            self.env(SPARK_MASTER_OPTS="-Dspark.port.maxRetries=0 "
                                       "-Dspark.master.rest.enabled=false"), self.root)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                text = self.logs["master"].read_text(errors="replace")
                if "BindException" in text or "Address already in use" in text:
                    return False
                pytest.fail(f"the Spark master exited with {proc.returncode}\n"
                            f"{self.log_tails()}")
            try:
                if self.state(timeout=2).get("status") == "ALIVE":
                    return True
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"the Spark master did not answer on http://127.0.0.1:{self.webui_port}/"
                    f"json/ within {START_TIMEOUT} s\n{self.log_tails()}")

    def wait_until(self, ready, what: str, timeout: float = START_TIMEOUT) -> dict:
        deadline, state = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                pytest.fail(f"{dead} exited while waiting for {what}\n{self.log_tails()}")
            try:
                state = self.state()
                if ready(state):
                    return state
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"no {what} within {timeout} s (master state: "
                    f"{json.dumps(state)[:2000]})\n{self.log_tails()}")

    def submit(self, name: str, job: Path, py_files: Path, *job_args, conf=None) -> list:
        """spark-submit ``job`` to this cluster; return the command after it exits 0."""
        return self.finish(name, *self.launch(name, job, py_files, *job_args, conf=conf))

    def launch(self, name: str, job: Path, py_files: Path, *job_args, conf=None):
        """Start spark-submit of ``job`` (``conf``: more Spark settings); return (its
        process, the command) without waiting: :meth:`finish` waits."""
        self.wait_for_workers()
        extra = [a for k, v in (conf or {}).items() for a in ("--conf", f"{k}={v}")]
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", self.url,
               "--py-files", str(py_files),
               "--conf", "spark.executor.cores=1", "--conf", "spark.cores.max=2",
               "--conf", "spark.sql.shuffle.partitions=4", "--conf", "spark.ui.enabled=false",
               "--driver-java-options", JVM_OPTS,
               "--conf", f"spark.executor.extraJavaOptions={JVM_OPTS}",
               "--executor-memory", "512m", *extra,
               str(job), *map(str, job_args)]
        cwd = self.root / name
        cwd.mkdir(exist_ok=True)
        return self._spawn(name, cmd, self.env(), cwd), cmd

    def finish(self, name: str, proc, cmd: list) -> list:
        """Wait for a :meth:`launch` ed spark-submit; return its command after it exits 0."""
        try:
            code = proc.wait(timeout=SUBMIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{name} did not finish within {SUBMIT_TIMEOUT} s\n"
                        f"{self.log_tails()}")
        if code != 0:
            pytest.fail(f"{name} exited with {code}: {' '.join(cmd)}\n{self.log_tails()}")
        return cmd

    def ours(self) -> list:
        """(pid, command) of every live process of this cluster, from ``ps``: in one of
        its process groups, tagged on its command line, or running in its directory."""
        out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True,
                             text=True, check=True).stdout
        found = []
        for line in out.splitlines():
            pid, pgid, stat, args = (line.split(None, 3) + [""])[:4]
            if stat.startswith("Z") or int(pid) == os.getpid():
                continue
            if int(pgid) in self.groups or self.tag in args or self._runs_in_root(pid):
                found.append((int(pid), args[:200]))
        return found

    def executors(self, app_id: str) -> list:
        """Pids of the live executor JVMs (``CoarseGrainedExecutorBackend``) of ``app_id``."""
        found = []
        for pid, _ in self.ours():
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in args
                    and app_id.encode() in args):
                found.append(pid)
        return found

    def _runs_in_root(self, pid: str) -> bool:
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            return cwd == str(self.root) or cwd.startswith(str(self.root) + os.sep)
        except OSError:
            return False

    def stop(self) -> list:
        """SIGTERM every process of the cluster (the workers stop their executors), SIGKILL
        what is left after STOP_TIMEOUT seconds; return what still runs after that."""
        for sig, timeout in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 10)):
            for group in self.groups:
                _signal_group(group, sig)
            for pid, _ in self.ours():
                _signal_pid(pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for p in self.procs.values():
                    p.poll()  # reap our children
                if not self.ours():
                    self.groups.clear()  # all gone: never signal these ids again
                    return []
                time.sleep(0.25)
        for p in self.procs.values():
            p.poll()
        return self.ours()


def _signal_group(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _venv_with_deps(where: Path) -> Path:
    """A venv of this interpreter that sees .venv's packages (numpy, pyspark, ...) but not
    this project's editable install: a .pth file names .venv's site-packages, and Python
    reads no .pth files from a directory that a .pth file names."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                                 "get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(purelib, "mbkm_test_deps.pth").write_text("\n".join(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([str(python), "-c", "import numpy, pyarrow, pyspark, yaml\n"
                                               "import minibatch_kmeans"],
                           capture_output=True, text=True, env=env)
    assert "No module named 'minibatch_kmeans'" in probe.stderr, probe.stderr
    return python


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """``make dist``'s script, into a temporary directory: (wheel, zip)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(ROOT / ".ci" / "dist.py"), str(out)], check=True,
                   capture_output=True)
    (wheel,) = out.glob("*.whl")
    return wheel, out / "minibatch_kmeans.zip"


@pytest.fixture(scope="module")
def py_files(dist):
    return dist[1]


def test_dist_wheel_and_zip(dist, tmp_path):
    """The wheel and the zip hold the same modules; the wheel's console scripts run after
    pip install; the README names both files."""
    import zipfile

    wheel, zip_path = dist
    with zipfile.ZipFile(wheel) as w, zipfile.ZipFile(zip_path) as z:
        files = [n for n in w.namelist() if ".dist-info/" not in n]
        modules = sorted(n for n in files if n.endswith(".py"))
        assert modules == sorted(z.namelist())
        assert sorted(set(files) - set(modules)) == ["minibatch_kmeans/py.typed"]
        (entry_points,) = [n for n in w.namelist() if n.endswith(".dist-info/entry_points.txt")]
        scripts = [line.split("=")[0].strip() for line in w.read(entry_points).decode()
                   .splitlines() if line.startswith("mbkm-")]
    assert "mbkm-train" in scripts and "mbkm-score" in scripts, scripts
    assert "minibatch_kmeans_jobs/train.py" in modules and "minibatch_kmeans/__init__.py" in modules
    assert all(n.endswith(".py") and "__pycache__" not in n for n in modules)
    venv = tmp_path / "venv"
    python = _venv_with_deps(venv)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True)
    for script in scripts:
        run = subprocess.run([str(venv / "bin" / script), "--help"], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.startswith("usage:"), (script, run.stderr)
    readme = (ROOT / "README.md").read_text()
    assert f"dist/{wheel.name}" in readme and f"--py-files dist/{zip_path.name}" in readme


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running standalone cluster (master + two one-core workers); stopped, with every
    process it started, at the end of the module, whether the tests passed or not."""
    root = tmp_path_factory.mktemp("cluster")
    c = StandaloneCluster(root, str(_venv_with_deps(root / "python")))
    try:
        yield c.start()
    finally:
        leftovers = c.stop()
        assert not leftovers, f"processes of the test cluster survived SIGKILL: {leftovers}"


@pytest.fixture(scope="module")
def blobs(spark, tmp_path_factory):
    from minibatch_kmeans_jobs import generate_data

    out = str(tmp_path_factory.mktemp("data") / "blobs")
    code = generate_data.main(["--out", out, "--rows", "20000", "--features", "4", "--k",
                               str(K), "--seed", "11", "--chunk-rows", "5000",
                               "--partitions", "4", "--log-level", "WARNING"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def trained(cluster, py_files, blobs, tmp_path_factory):
    """jobs/train.py, spark-submitted to the cluster: (output dir, command, master state)."""
    work = tmp_path_factory.mktemp("train")
    conf = work / "train.yaml"
    # no spark.master: the master comes from spark-submit
    conf.write_text(yaml.safe_dump({
        "spark": {"app_name": "mbkm-cluster-test-train"},
        "input": {"path": blobs, "format": "parquet", "features": {"inputCols": FEATURES}},
        "model": {"k": K, "maxIter": 3, "seed": 3, "batchSize": 2000,
                  "computeTrainingCost": True},
        "output": {"dir": str(work / "out")},
        "logging": {"level": "INFO"},
    }))
    cmd = cluster.submit("submit-train", ROOT / "jobs" / "train.py", py_files,
                         "--conf", conf, "--run-id", RUN_ID)
    state = cluster.wait_until(lambda s: any(a["name"] == "mbkm-cluster-test-train"
                                        for a in s.get("completedapps", [])),
                          "completed application mbkm-cluster-test-train", timeout=60)
    return work / "out", cmd, state


def test_train_submitted_to_standalone_cluster(trained, cluster, py_files, spark):
    from minibatch_kmeans import MiniBatchKMeansModel

    out, cmd, state = trained
    assert cmd[cmd.index("--master") + 1] == cluster.url
    model = MiniBatchKMeansModel.load(str(out / "model"))
    assert len(model.clusterCenters()) == K and model.numFeatures == len(FEATURES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["numRows"] == 20000 and summary["runId"] == RUN_ID
    # it ran on this cluster: the master lists the finished application, and its
    # executors ran in the workers' directories, each with the zip that --py-files shipped
    (app,) = [a for a in state["completedapps"] if a["name"] == "mbkm-cluster-test-train"]
    assert app["state"] == "FINISHED", app
    executors = [d for w in range(1, cluster.n_workers + 1)
                 for d in (cluster.root / f"worker-{w}" / app["id"]).glob("*")]
    assert executors, f"no executor directory of {app['id']} under the workers' dirs"
    for d in executors:
        assert (d / py_files.name).read_bytes() == py_files.read_bytes(), d


def _submit_score(cluster, py_files, model_dir: Path, data: str, work: Path):
    """jobs/score.py, spark-submitted like train; returns its output directory."""
    job = ROOT / "jobs" / "score.py"
    if not job.is_file():
        pytest.skip("jobs/score.py not present yet")
    conf = work / "score.yaml"
    conf.write_text(yaml.safe_dump({
        "spark": {"app_name": "mbkm-cluster-test-score"},
        "input": {"path": data, "format": "parquet"},
        "scoring": {"model": str(model_dir), "id_columns": ["id"]},
        "output": {"dir": str(work / "out")},
        "logging": {"level": "INFO"},
    }))
    cluster.submit("submit-score", job, py_files, "--conf", conf, "--run-id", RUN_ID)
    return work / "out"


def test_score_submitted_to_standalone_cluster(trained, cluster, py_files, blobs, spark,
                                               tmp_path):
    out = _submit_score(cluster, py_files, trained[0] / "model", blobs, tmp_path)
    predictions = spark.read.parquet(str(out / "predictions"))
    rows = predictions.groupBy("run_id").count().collect()
    assert [(r["run_id"], r["count"]) for r in rows] == [(RUN_ID, 20000)]
    labels = {r["prediction"] for r in predictions.select("prediction").distinct().collect()}
    assert labels <= set(range(K)) and len(labels) == K
    assert predictions.select("id").distinct().count() == 20000


# --- an executor SIGKILLed mid-job (issue 18, faults) ---------------------------------

def _event_log_conf(where: Path) -> dict:
    """Spark settings that write the application's event log, uncompressed, into
    ``where``: the test reads which executor ran each task from it."""
    where.mkdir(parents=True, exist_ok=True)
    return {"spark.eventLog.enabled": "true", "spark.eventLog.dir": where.as_uri(),
            "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false"}


def _events(where: Path) -> list:
    (log,) = [f for f in where.iterdir() if not f.name.startswith(".")]
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _executor_story(events: list) -> dict:
    """From an event log: the executors added and removed (ids, in order), the tasks each
    executor ran, those each ran after the first removal, the replacement (the first
    executor added after it) and the tasks each ran after the replacement was added."""
    added, removed, tasks, after, failed = [], [], {}, {}, []
    replacement, after_replacement = None, {}
    for e in events:
        kind = e["Event"]
        if kind == "SparkListenerExecutorAdded":
            added.append(e["Executor ID"])
            if removed and replacement is None:
                replacement = e["Executor ID"]
        elif kind == "SparkListenerExecutorRemoved":
            removed.append(e["Executor ID"])
        elif kind == "SparkListenerTaskEnd":
            ex = e["Task Info"]["Executor ID"]
            if e["Task End Reason"]["Reason"] != "Success":
                failed.append(e["Task End Reason"]["Reason"])
                continue
            tasks[ex] = tasks.get(ex, 0) + 1
            if removed:
                after[ex] = after.get(ex, 0) + 1
            if replacement is not None:
                after_replacement[ex] = after_replacement.get(ex, 0) + 1
    return {"added": added, "removed": removed, "tasks": tasks, "tasksAfterRemoval": after,
            "replacement": replacement, "tasksAfterReplacement": after_replacement,
            "failedTasks": failed}


def _kill_an_executor_when(cluster, proc, name: str, app_name: str, ready, what: str):
    """Wait until the driver log of the spark-submit ``name`` satisfies ``ready(text)``
    while the application ``app_name`` has an executor, then SIGKILL that executor's JVM.
    Returns (application id, the killed executor's id, the log text before the kill)."""
    log = cluster.logs[name]
    deadline = time.monotonic() + SUBMIT_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited ({proc.returncode}) before {what}\n"
                        f"{cluster.log_tails()}")
        text = log.read_text(errors="replace")
        if ready(text):
            try:
                apps = [a["id"] for a in cluster.state().get("activeapps", [])
                        if a["name"] == app_name]
            except OSError:  # the master did not answer this time: ask again
                apps = []
            pids = cluster.executors(apps[0]) if apps else []
            if pids:
                args = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
                executor_id = args[args.index(b"--executor-id") + 1].decode()
                _signal_pid(pids[0], signal.SIGKILL)
                return apps[0], executor_id, text
        time.sleep(0.2)
    pytest.fail(f"no {what} in {name} within {SUBMIT_TIMEOUT} s\n{cluster.log_tails()}")


STEP_LINE = "step {}/"


def test_train_survives_an_executor_killed_mid_fit(cluster, py_files, blobs, spark,
                                                   tmp_path):
    """A step fit whose executor is SIGKILLed after its first steps exits 0 with the
    centers, weights and training cost of an undisturbed run of the same config (the lost
    cached partition is rebuilt from the input), and the replacement executor runs its
    share of the tasks after it registered.

    Which executor rebuilds the lost partition is a race: the replacement when it has
    registered by then, else the survivor, which then holds both cached partitions and,
    with spark.locality.wait's 3 s against steps of a fraction of a second, would run
    nearly every later task (3 of 168 on the replacement in one run before the fit
    rebalanced its cache). The fit sees the executors change and caches the table again,
    spread over both (``summary.cacheRebalances``); an undisturbed run never does."""
    from minibatch_kmeans import MiniBatchKMeansModel

    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump({
        "input": {"path": blobs, "format": "parquet", "features": {"inputCols": FEATURES}},
        "model": {"k": K, "maxIter": 2, "seed": 5, "batchSize": 400, "tol": 0,
                  "maxNoImprovement": 0, "computeTrainingCost": True},
        "logging": {"level": "INFO"},
    }))
    runs = {}
    for name in ("calm", "killed"):
        args = ["--conf", conf, "--run-id", RUN_ID, "--set", "model.fitMode=step",
                "--set", f"spark.app_name=mbkm-cluster-test-{name}",
                "--set", f"output.dir={tmp_path / name}"]
        proc, cmd = cluster.launch(f"submit-{name}", ROOT / "jobs" / "train.py", py_files,
                                   *args, conf=_event_log_conf(tmp_path / f"events-{name}"))
        if name == "killed":
            app_id, executor_id, before = _kill_an_executor_when(
                cluster, proc, f"submit-{name}", f"mbkm-cluster-test-{name}",
                lambda text: STEP_LINE.format(10) in text, "step 10 of the fit")
            assert "stopped after" not in before  # killed while the steps ran
        cluster.finish(f"submit-{name}", proc, cmd)
        model = MiniBatchKMeansModel.load(str(tmp_path / name / "model"))
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        runs[name] = model, summary, _executor_story(_events(tmp_path / f"events-{name}"))
    (calm, calm_summary, calm_story), (killed, killed_summary, story) = (runs["calm"],
                                                                         runs["killed"])
    assert calm_summary["fitMode"] == "step" and calm_summary["numSteps"] == 100
    assert killed_summary["numSteps"] == calm_summary["numSteps"]
    assert np.array_equal(np.asarray(killed.clusterCenters()),
                          np.asarray(calm.clusterCenters()))
    assert np.array_equal(killed.weightSums, calm.weightSums)
    assert killed_summary["trainingCost"] == calm_summary["trainingCost"]
    # the kill was seen: the executor was removed while the application ran
    assert story["removed"][:1] == [executor_id], (app_id, story)
    print("executor story of the killed run:", json.dumps(story),
          "cacheRebalances:", killed_summary["cacheRebalances"])
    assert calm_summary["cacheRebalances"] == 0, calm_story
    assert killed_summary["cacheRebalances"] <= 1, story
    # a replacement registered while the steps ran, and took its share of the tasks
    # (each step runs one per cached partition: two) from then on
    replacement, after = story["replacement"], story["tasksAfterReplacement"]
    assert replacement is not None and sum(after.values()) >= 40, story
    assert after.get(replacement, 0) >= 0.25 * sum(after.values()), story


def test_score_survives_an_executor_killed_mid_run(trained, cluster, py_files, blobs,
                                                   spark, tmp_path):
    """A score job whose executor is SIGKILLed while it writes its predictions exits 0,
    and the run's predictions hold every input row once."""
    conf = tmp_path / "score.yaml"
    conf.write_text(yaml.safe_dump({
        "spark": {"app_name": "mbkm-cluster-test-score-killed"},
        "input": {"path": blobs, "format": "parquet"},
        "scoring": {"model": str(trained[0] / "model"), "id_columns": ["id"]},
        "output": {"dir": str(tmp_path / "out")},
        "logging": {"level": "INFO"},
    }))
    name = "submit-score-killed"
    proc, cmd = cluster.launch(name, ROOT / "jobs" / "score.py", py_files, "--conf", conf,
                               "--run-id", RUN_ID, conf=_event_log_conf(tmp_path / "events"))
    app_id, executor_id, before = _kill_an_executor_when(
        cluster, proc, name, "mbkm-cluster-test-score-killed",
        lambda text: "Starting task" in text.partition("wrote summary")[2],
        "a task of the predictions' write")
    assert "/out/predictions' (mode" not in before  # killed before they were written
    cluster.finish(name, proc, cmd)
    story = _executor_story(_events(tmp_path / "events"))
    print("executor story of the killed score run:", json.dumps(story))
    assert story["removed"][:1] == [executor_id], (app_id, story)
    predictions = spark.read.parquet(str(tmp_path / "out" / "predictions"))
    inputs = spark.read.parquet(blobs).count()
    assert predictions.count() == inputs
    assert predictions.select("id").distinct().count() == inputs
