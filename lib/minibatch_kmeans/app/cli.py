"""What every job's ``main`` shares: argument errors, exit codes, one-line error messages.

Exit codes: 0 success; 2 bad arguments, configuration or input (a
:class:`~minibatch_kmeans.errors.MiniBatchKMeansError`, one line on stderr); 1 anything
else (logged with its traceback, one line on stderr).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, List, Optional

from ..errors import MiniBatchKMeansError


def one_line(message: str, limit: Optional[int] = None) -> str:
    text = " ".join(str(message).split())
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
