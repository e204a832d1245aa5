"""The console scripts as a Databricks wheel task or a shell calls them: the installed
entry point function itself, which must exit through SystemExit with the job's code."""
import sys
from importlib.metadata import entry_points

import pytest

from minibatch_kmeans_jobs.entry_points import JOBS, script_name


def installed_scripts():
    return {ep.name: ep for ep in entry_points(group="console_scripts")
            if ep.name.startswith("mbkm-")}


def test_every_job_has_an_installed_console_script():
    scripts = installed_scripts()
    assert set(scripts) == {script_name(job) for job in JOBS}
    for ep in scripts.values():
        assert ep.value.startswith("minibatch_kmeans_jobs.entry_points:")


@pytest.mark.parametrize("job", JOBS)
def test_an_entry_point_with_bad_input_exits_2_through_system_exit(job, tmp_path,
                                                                   monkeypatch, capsys):
    """Called the way a wheel task calls it (no return value to read): SystemExit(2) and
    one error line for a missing config (generate_data: a bad row count)."""
    ep = installed_scripts()[script_name(job)]
    args = (["--out", str(tmp_path / "d"), "--rows", "0"] if job == "generate_data"
            else ["--conf", str(tmp_path / "missing.yaml")])
    monkeypatch.setattr(sys, "argv", [ep.name, *args])
    with pytest.raises(SystemExit) as e:
        ep.load()()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert ("missing.yaml" in err) if job != "generate_data" else ("rows" in err)


@pytest.mark.parametrize("job", JOBS)
def test_help_names_the_console_script_its_examples_and_exit_codes(job, monkeypatch, capsys):
    ep = installed_scripts()[script_name(job)]
    monkeypatch.setattr(sys, "argv", [ep.name, "--help"])
    with pytest.raises(SystemExit) as e:
        ep.load()()
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {script_name(job)} ")
    assert "exit codes: 0 " in out and "2 bad arguments, configuration or input" in out
    assert f"jobs/{job}.py" in out  # the docstring's example command
