"""The estimator fits, transforms, saves and loads, and compare_with_mllib runs, through Spark
Connect (SparkSession.builder.remote("local[2]")). It runs in a child process because a
Python process holds either a classic or a Connect session, and the tests share a classic
one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).parent / "scripts" / "connect_roundtrip.py"


def test_fit_transform_save_load_on_spark_connect(tmp_path):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["connect"] is True
    centers = np.array(result["centers"])
    truth = np.array([[0.0, 0.0], [6.0, 6.0], [0.0, 6.0]])
    for t in truth:
        assert np.min(np.linalg.norm(centers - t, axis=1)) < 0.1
    np.testing.assert_array_equal(np.array(result["loaded_centers"]), centers)
    assert sorted(result["sizes"]) == [300, 300, 300]
    for mode, r in result["modes"].items():
        assert r["fit_mode"] == mode and r["sizes"] == [300, 300, 300]
        assert r["cost"] <= 1.01 * result["cost"]
    assert result["same_predictions"]
    assert abs(result["compute_cost"] - result["cost"]) <= 1e-9 * result["cost"]
    assert 0 < result["max_distance"] < 2.0
    assert result["estimator_k"] == 3
    compared = result["compare"]
    assert compared["data"]["rows"] == 900 and compared["data"]["sample_rows"] == 300
    assert compared["agreement"]["ari"] > 0.99  # three well-separated blobs: the same clusters
    assert (tmp_path / "compare" / "compare.json").exists()


def test_stream_on_spark_connect(tmp_path):
    """run_stream through Spark Connect, where foreachBatch runs in a server-side Python
    process: the model after three micro-batches is partialFit's on the same files."""
    script = Path(__file__).parent / "scripts" / "connect_stream.py"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path),
                           str(Path(__file__).parent)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["streamed"], result["expected"], rtol=1e-12)
    assert result["updates"] == 3 and result["predictions"] == 600
    assert result["batches"] == result["applied_batches"] == 3
    # bad input inside the server's foreachBatch process still reaches the job as ours
    name, message = result["error"]
    assert name == "InvalidInputError" and message.startswith("micro-batch 0 of parquet")
    assert "1 invalid rows" in message and "\n" not in message
