"""The wheel respects the runtime's Spark: pyspark is an extra, never pulled over the one a
cluster or Databricks brings, and ``import minibatch_kmeans`` does not import it."""
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
OTHER_PYSPARK = "4.1.1"  # the oldest minor this package supports (arrow_udf is new in 4.1)


def test_importing_the_package_does_not_import_pyspark():
    """The Spark classes load when first used; the NumPy core and the Spark-free model
    reader need no pyspark."""
    code = ("import sys, minibatch_kmeans, minibatch_kmeans.core.kernels; "
            "assert 'pyspark' not in sys.modules, 'pyspark imported'; "
            "from minibatch_kmeans import MiniBatchKMeans; "
            "assert 'pyspark' in sys.modules and MiniBatchKMeans.__name__ == 'MiniBatchKMeans'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_wheel_requires_no_pyspark_and_ships_its_license_and_types(tmp_path):
    import zipfile

    sys.path.insert(0, str(ROOT / ".ci"))
    try:
        from dist import build_wheel
    finally:
        sys.path.remove(str(ROOT / ".ci"))
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    assert [r for r in requires if r.startswith("pyspark")] == \
        ['pyspark[connect]<5,>=4.1; extra == "spark"']
    assert "minibatch_kmeans/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "License: Apache-2.0" in meta or "License-Expression: Apache-2.0" in meta


def _clean_env(venv):
    """This environment without what points at the project's own venv or Spark."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK"))
           and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv}/bin:" + ":".join(
        p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    env["PYSPARK_PYTHON"] = str(venv / "bin" / "python")
    return env


def _pip(python, *args):
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *args], check=True, cwd=ROOT, timeout=900)


@pytest.mark.slow
def test_wheel_into_a_venv_with_another_pyspark_keeps_it_and_fits(tmp_path):
    """A venv that already holds pyspark 4.1.1 (as a cluster's runtime would): installing the
    wheel leaves that pyspark as it is, and a fit and a transform run on it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # the project's tested versions of everything but pyspark and py4j
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
            if not line.startswith(("pyspark", "py4j"))]
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    _pip(python, "-c", str(constraints), f"pyspark=={OTHER_PYSPARK}", "numpy", "pandas",
         "pyarrow", "pyyaml", "matplotlib")
    sys.path.insert(0, str(ROOT / ".ci"))
    try:
        from dist import build_wheel
    finally:
        sys.path.remove(str(ROOT / ".ci"))
    _pip(python, "-c", str(constraints), str(build_wheel(tmp_path / "dist")))
    script = textwrap.dedent("""
        import json, sys
        import minibatch_kmeans
        assert "pyspark" not in sys.modules
        from minibatch_kmeans import MiniBatchKMeans
        import pyspark
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master("local[1]")
                 .config("spark.ui.enabled", "false").getOrCreate())
        rows = [(float(i % 3) * 10 + j * 0.01, float(i % 3) * 5 - j * 0.01)
                for i in range(90) for j in range(3)]
        df = spark.createDataFrame(rows, ["x", "y"])
        model = MiniBatchKMeans(k=3, inputCols=["x", "y"], seed=1).fit(df)
        sizes = sorted(r["count"] for r in model.transform(df).groupBy("prediction")
                       .count().collect())
        print(json.dumps({"pyspark": pyspark.__version__, "sizes": sizes,
                          "where": minibatch_kmeans.__file__}))
        spark.stop()
    """)
    out = subprocess.run([str(python), "-c", script], check=True, capture_output=True,
                         text=True, cwd=tmp_path, timeout=600,
                         env=_clean_env(venv))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["pyspark"] == OTHER_PYSPARK  # untouched by the wheel's install
    assert result["sizes"] == [90, 90, 90]
    assert str(venv) in result["where"]
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], check=True,
                            capture_output=True, text=True).stdout
    assert f"pyspark=={OTHER_PYSPARK}" in freeze
