"""The console scripts (``mbkm-train``, ``mbkm-score``, ...): each runs its job's ``main``
on ``sys.argv`` and exits with its code through ``sys.exit``.

A Databricks Python wheel task, like the console script, calls the entry point function
itself and reads the outcome from ``SystemExit``: a function that returned the code would
be reported as succeeded whatever it returned. ``main()`` stays a plain function returning
the code, for tests and for calling a job from Python.
"""
from __future__ import annotations

import sys
from importlib import import_module

#: the jobs, by module name under minibatch_kmeans_jobs (console script mbkm-<name, dashed>)
JOBS = ("generate_data", "train", "score", "compare", "tune", "monitor", "stream")


def script_name(job: str) -> str:
    """The console script of ``job``: ``mbkm-generate-data`` for ``generate_data``."""
    return "mbkm-" + job.replace("_", "-")


def run(job: str) -> None:
    """Run ``job``'s main on the command line's arguments and exit with its code."""
    main = import_module(f"minibatch_kmeans_jobs.{job}").main
    sys.exit(main(sys.argv[1:]))


def generate_data() -> None:
    run("generate_data")


def train() -> None:
    run("train")


def score() -> None:
    run("score")


def compare() -> None:
    run("compare")


def tune() -> None:
    run("tune")


def monitor() -> None:
    run("monitor")


def stream() -> None:
    run("stream")
