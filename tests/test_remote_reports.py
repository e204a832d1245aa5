"""Report files (summary.json, convergence.png, quality.json, drift, compare and tune
files) at any path or URI: plain paths with the driver's file I/O, URIs through Hadoop's
FileSystem in the driver's JVM (here ``file:`` URIs, Hadoop's local file system), a clear
error for a remote URI without a JVM (Spark Connect), and a training job whose output.dir
is a ``file:`` URI writing its reports next to its outputs."""
import json
import pathlib

import pytest
import yaml

from minibatch_kmeans import paths
from minibatch_kmeans.app.config import Config
from minibatch_kmeans.errors import InvalidParamError
from minibatch_kmeans.evaluate.report import new_figure, save_figure, write_json, write_text

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def no_local_io(monkeypatch):
    """The driver's own file writer refuses: what is written went through Hadoop."""
    def refuse(*args, **kwargs):
        raise AssertionError("written with local file I/O, not through Hadoop")

    monkeypatch.setattr(paths, "replace_file", refuse)


def test_a_file_uri_is_written_through_hadoop_whole(spark, tmp_path, no_local_io):
    target = tmp_path / "reports" / "deeper" / "summary.json"  # parents created
    uri = target.as_uri()
    assert uri.startswith("file:///")
    assert write_json({"k": 3, "cost": float("nan")}, uri) == uri
    assert json.loads(target.read_text()) == {"k": 3, "cost": None}
    write_text("second\n", uri)  # replaces the file whole
    assert target.read_text() == "second\n"
    # no temporary file and no Hadoop checksum file is left beside it
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]
    assert paths.read_file(uri) == b"second\n"


def test_a_png_goes_through_hadoop_too(spark, tmp_path, no_local_io):
    fig = new_figure((2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    uri = "file://" + str(tmp_path / "plot.png")
    save_figure(fig, uri)
    data = (tmp_path / "plot.png").read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 500


def test_plain_paths_keep_the_drivers_file_io(spark, tmp_path, monkeypatch):
    """/Volumes and /dbfs paths (FUSE mounts) are plain paths: never through Hadoop."""
    monkeypatch.setattr(paths, "_hadoop", lambda: pytest.fail("went to Hadoop"))
    for path in (tmp_path / "a.json", tmp_path / "Volumes" / "main" / "x" / "b.json"):
        write_json({"ok": True}, str(path))
        assert json.loads(path.read_text()) == {"ok": True}
    assert not paths.has_scheme("/Volumes/main/default/v/r.json")
    assert not paths.has_scheme("/dbfs/tmp/r.json") and not paths.has_scheme("C:\\x.json")
    for uri in ("s3a://b/x", "abfss://c@a.dfs.core.windows.net/x", "gs://b/x", "hdfs://n/x",
                "dbfs:/x", "file:/x"):
        assert paths.has_scheme(uri)


def test_without_a_jvm_a_remote_uri_is_a_clear_error(tmp_path, monkeypatch):
    """Spark Connect (Databricks serverless) has no JVM in the driver: an s3a:// report is
    refused naming the path and what to use instead, never lost silently; file: and dbfs:
    are the driver's own files there."""
    monkeypatch.setattr(paths, "_hadoop", lambda: None)
    for uri in ("s3a://bucket/out/summary.json", "abfss://c@acct.dfs.core.windows.net/q.json"):
        with pytest.raises(InvalidParamError) as e:
            write_json({"k": 3}, uri)
        msg = str(e.value)
        assert repr(uri) in msg and "/Volumes/" in msg and "Spark Connect" in msg
        with pytest.raises(InvalidParamError, match="cannot read"):
            paths.read_file(uri)
    local = tmp_path / "c.json"
    write_json({"k": 4}, "file://" + str(local))
    assert json.loads(local.read_text()) == {"k": 4}


def test_local_copies_for_mlflow(spark, tmp_path):
    uri = (tmp_path / "r" / "x.png").as_uri()
    paths.write_file(uri, lambda f: f.write(b"png bytes"))
    plain = str(tmp_path / "plain.png")
    missing = (tmp_path / "missing.png").as_uri()
    with paths.local_copies([uri, plain, missing]) as local:
        assert local[1] == plain and local[2] == missing  # as they are
        assert local[0] != uri and pathlib.Path(local[0]).name == "x.png"
        assert pathlib.Path(local[0]).read_bytes() == b"png bytes"
    assert not pathlib.Path(local[0]).exists()  # removed afterwards


def test_the_cluster_config_keeps_its_reports_next_to_the_outputs():
    text = (ROOT / "conf" / "cluster.yaml").read_text()
    assert "/tmp" not in text
    cfg = Config.from_dict(yaml.safe_load(text))
    base = cfg.output.dir
    assert base.startswith("s3a://")
    assert (cfg.output.summary, cfg.output.plot, cfg.output.quality_report) == (
        f"{base}/summary.json", f"{base}/convergence.png", f"{base}/quality.json")


def test_train_job_with_a_file_uri_output_dir(spark, tmp_path, capsys, monkeypatch,
                                              request, no_local_io):
    """jobs/train.py with output.dir a file: URI: the model, tables and every report file
    under it, the reports written through Hadoop."""
    from minibatch_kmeans import MiniBatchKMeansModel
    from minibatch_kmeans_jobs import train

    monkeypatch.chdir(request.config.rootpath)
    data = str(tmp_path / "points")
    rows = [(float(i % 3) * 10 + (i % 7) * 0.01, float(i % 3) * 5.0) for i in range(300)]
    spark.createDataFrame(rows, "x0 double, x1 double").coalesce(1).write.parquet(data)
    out = tmp_path / "train"
    uri = out.as_uri()
    code = train.main(["--conf", "conf/local.yaml", "--set", f"input.path={data}",
                       "--set", "input.features.inputCols=[x0, x1]", "--set", "model.k=3",
                       "--set", f"output.dir={uri}", "--set", "mlflow=",
                       "--run-id", "r1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summaryPath"] == f"{uri}/summary.json" and summary["k"] == 3
    assert summary["plotPath"] == f"{uri}/convergence.png"
    assert (out / "convergence.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "quality.json").read_text())["rows"] == 300
    assert len(MiniBatchKMeansModel.load(f"{uri}/model").clusterCenters()) == 3
    assert spark.read.parquet(f"{uri}/metrics").count() == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp or .crc files
    assert f"{uri}/convergence.png" in captured.out


def test_rename_over_an_existing_file(spark, tmp_path):
    """Where Hadoop's rename does not replace a file (HDFS), FileContext's rename with
    OVERWRITE does."""
    (tmp_path / "dst").write_text("old")
    (tmp_path / "tmp").write_text("new")
    jvm, conf = paths._hadoop()
    dst = jvm.org.apache.hadoop.fs.Path((tmp_path / "dst").as_uri())
    tmp = jvm.org.apache.hadoop.fs.Path((tmp_path / "tmp").as_uri())
    paths._rename_over(jvm, conf, paths._filesystem(jvm, conf, dst), tmp, dst)
    assert (tmp_path / "dst").read_text() == "new" and not (tmp_path / "tmp").exists()


def test_a_notebook_shows_a_png_at_a_uri(spark, tmp_path):
    import base64

    from minibatch_kmeans.app.notebook import Notebook

    uri = (tmp_path / "p.png").as_uri()
    paths.write_file(uri, lambda f: f.write(b"\x89PNG not really"))
    shown = []
    Notebook({"displayHTML": shown.append}, progress=False).show_png(uri)
    assert base64.b64encode(b"\x89PNG not really").decode("ascii") in shown[0]
