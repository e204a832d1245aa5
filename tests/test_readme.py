"""The README is the front door: its Python example runs, and its commands are real."""
import re
import shlex
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
ROOT = Path(__file__).resolve().parents[1]


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_examples_run(spark, tmp_path):
    fit, partial, compare = _blocks("python")
    namespace = {"spark": spark}
    exec(compile(fit.replace("/tmp/mbkm-model", str(tmp_path / "model")), "README.md", "exec"),
         namespace)
    model = namespace["model"]
    assert sorted(model.summary.clusterSizes) == [300, 300, 300]
    assert "distance" in namespace["scored"].columns
    exec(compile(partial, "README.md", "exec"), namespace)  # partialFit on the same rows
    assert namespace["newer"].numUpdates == 1 and namespace["newer"].lastUpdate["rows"] == 900
    # the comparison runs on the first example's DataFrame
    exec(compile(compare.replace("/tmp/mbkm-compare", str(tmp_path / "compare")), "README.md",
                 "exec"), namespace)
    result = namespace["result"]
    assert result["data"]["rows"] == 900 and result["speedup"] > 0
    assert (tmp_path / "compare" / "compare.md").exists()


def test_make_targets_and_job_commands_exist():
    makefile = (ROOT / "Makefile").read_text()
    for block in _blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line.split("#")[0].replace("\\", ""))
            if not words:
                continue
            if words[0] == "make":
                assert re.search(rf"^{words[1]}:", makefile, flags=re.M), line
            for w in words:
                if w.startswith(("jobs/", "conf/")):
                    assert (ROOT / w).exists(), f"{w} named in the README does not exist"


def _config_of(job):
    from minibatch_kmeans.app.config import load_config

    line = next(l for b in _blocks("bash") for l in b.splitlines() if f"jobs/{job}.py" in l
                and "--set" in l)
    words = shlex.split(line)
    args = words[words.index(f"jobs/{job}.py") + 1:]
    conf = args[args.index("--conf") + 1]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return load_config(str(ROOT / conf), sets)


def test_job_commands_in_readme_parse():
    assert _config_of("train").estimator_params()["k"] == 30
    assert _config_of("compare").compare.mllib["solver"] == "row"
    from minibatch_kmeans.app.config import load_stream_config

    assert load_stream_config(str(ROOT / "conf" / "stream.yaml")).stream.half_life == 5


def test_relative_links_in_readme_exist():
    """Every relative Markdown link of the README (the latest bench results, for one)
    names a file of the repository."""
    links = [t for t in re.findall(r"\]\(([^)#]+)\)", README) if "://" not in t]
    assert any(t.startswith("bench/results/") for t in links)
    missing = [t for t in links if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_guarantee_names_tests_that_exist():
    """The "What we guarantee" table: each test file it names exists, and each
    ``file::test`` is a test function in that file."""
    section = README.split("## What we guarantee", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", section)
    assert len(named) >= 10
    for path, test in named:
        text = (ROOT / path).read_text()
        assert not test or f"def {test}(" in text, f"{path}::{test}"
