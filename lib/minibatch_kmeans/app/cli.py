"""What every job's ``main`` shares: argument errors, exit codes, one-line error messages,
and for the config-driven jobs the start-up (:func:`config_job`): the arguments, the
config, logging, the Spark session.

Exit codes: 0 success; 2 bad arguments, configuration or input (a
:class:`~minibatch_kmeans.errors.MiniBatchKMeansError`, one line on stderr); 1 anything
else (logged with its traceback, one line on stderr).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import MiniBatchKMeansError
from ..redaction import redact_text
from ..spark.session import job_session
from .config import configure_logging, run_id_override


#: the exit codes every job's --help lists
EXIT_CODES = ("exit codes: 0 success; 2 bad arguments, configuration or input (one line on "
              "stderr); 1 anything else")


def job_parser(name: str, doc: str, exit_codes: str = EXIT_CODES) -> argparse.ArgumentParser:
    """The argument parser of job ``name``: named as its console script (``mbkm-train``),
    with the job's docstring (its examples) as description and its exit codes."""
    return argparse.ArgumentParser(prog="mbkm-" + name.replace("_", "-"), description=doc,
                                   epilog=exit_codes,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def one_line(message: str, limit: Optional[int] = None) -> str:
    """``message`` on one line (at most ``limit`` characters), secrets redacted."""
    text = redact_text(" ".join(str(message).split()))
    return text if limit is None else text[:limit]


def run_job(name: str, parse_args: Callable[[Optional[List[str]]], argparse.Namespace],
            run: Callable[[argparse.Namespace], int], argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` and run the job, mapping failures to exit codes."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help, or bad arguments (argparse printed why)
        return e.code if isinstance(e.code, int) else 2
    try:
        return run(args)
    except MiniBatchKMeansError as e:
        print("error: " + one_line(e), file=sys.stderr)
        return 2
    except Exception as e:
        logging.getLogger(f"minibatch_kmeans_jobs.{name}").exception("%s failed", name)
        print(f"error: {type(e).__name__}: " + one_line(e, 500), file=sys.stderr)
        return 1


def config_job(name: str, doc: str, load, run, argv: Optional[List[str]] = None, *,
               default_conf: str, example: str, run_id_help: Optional[str] = None,
               check=None, flags: Optional[Dict[str, Tuple[str, str]]] = None,
               exit_codes: str = EXIT_CODES) -> int:
    """The ``main`` of a job driven by a YAML config.

    Parses ``--conf``, ``--set`` (and ``--run-id`` when ``run_id_help`` is given), loads
    the config with ``load(path, overrides)`` (``flags``: ``--name`` switches, each
    (the override it stands for, its help)), sets up logging and logs the config, calls
    ``check(cfg)`` (what can be refused before Spark starts), then ``run(spark, cfg,
    args)`` in the job's session; prints the result's ``text()`` and returns its
    ``code``. Failures map to exit codes as :func:`run_job` says.
    """
    def parse_args(argv):
        parser = job_parser(name, doc, exit_codes)
        for flag, (_, text) in (flags or {}).items():
            parser.add_argument(flag, action="store_true", help=text)
        parser.add_argument("--conf", default=default_conf,
                            help="YAML job config (default: %(default)s)")
        parser.add_argument("--set", dest="overrides", action="append", default=[],
                            metavar="KEY=VALUE", help=f"override a config field, e.g. "
                            f"--set {example} (repeatable)")
        if run_id_help:
            parser.add_argument("--run-id", dest="run_id", metavar="ID", help=run_id_help)
        return parser.parse_args(argv)

    def start(args) -> int:
        switched = [override for flag, (override, _) in (flags or {}).items()
                    if getattr(args, flag.lstrip("-").replace("-", "_"))]
        cfg = load(args.conf, args.overrides + switched
                   + run_id_override(getattr(args, "run_id", None)))
        configure_logging(cfg.logging.level)
        log = logging.getLogger(f"minibatch_kmeans_jobs.{name}")
        for line in cfg.describe():
            log.info("config %s", line)
        if check is not None:
            check(cfg)
        with job_session(cfg.spark.app_name, cfg.spark.master, cfg.spark.conf) as spark:
            result = run(spark, cfg, args)
        print(result.text())
        return result.code

    return run_job(name, parse_args, start, argv)
