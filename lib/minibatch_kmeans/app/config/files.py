"""Config files: YAML read with ``yaml.safe_load``, ``--set key=value`` overrides, the
``--run-id`` override, and the jobs' logging set-up."""
from __future__ import annotations

import json
import logging
import sys
from typing import Any, Dict, List, Optional, Sequence

import yaml

from ...errors import ConfigError
from ...redaction import redact, redact_text
from . import values as val

logger = logging.getLogger(__name__)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def read_yaml(path: str, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """A YAML config file as a mapping of sections, with ``key=value`` overrides applied
    (each job's loader then validates it).

    Parameters
    ----------
    path : str
        A YAML file (parsed with ``yaml.safe_load``: no Python tags).
    overrides : sequence of str
        ``"dotted.key=value"`` strings (from ``--set``), applied in order; values are
        parsed as YAML (``model.k=20``, ``model.initialCenters=[[0, 0], [1, 1]]``).

    Raises
    ------
    ConfigError
        The file is missing or not valid YAML, or an override is malformed.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path!r}: {e.strerror or e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML (safe subset): "
                          f"{val.one_line(e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections, got "
                          f"{val.type_name(raw)}")
    for item in overrides:
        apply_override(raw, item)
    return raw


def run_id_override(run_id: Optional[str]) -> List[str]:
    """The ``--set`` override for a job's ``--run-id`` (validated like the file's run_id;
    quoted, so that 2026-11-24 stays text)."""
    return [] if not run_id else [f"run_id={json.dumps(run_id)}"]


def apply_override(raw: Dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override to a raw config mapping (mutates ``raw``).

    Keys under ``spark.conf`` keep their dots: ``spark.conf.spark.sql.shuffle.partitions=8``
    sets the Spark setting ``spark.sql.shuffle.partitions``.
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is invalid: expected key=value, e.g. model.k=20")
    parts = key.split(".")
    if parts[:2] == ["spark", "conf"] and len(parts) > 2:
        parts = ["spark", "conf", ".".join(parts[2:])]
    if any(not p for p in parts):
        raise ConfigError(f"override key {key!r} is invalid: expected dotted names such as "
                          "model.k")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        detail = "" if val.is_secret(key) else f" ({val.one_line(e)})"
        raise ConfigError(f"override {key}={redact(key, text)} is invalid: the value is not "
                          f"valid YAML{detail}") from None
    node = raw
    for i, name in enumerate(parts[:-1]):
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[:i + 1])
            raise ConfigError(f"override {key}=... cannot be applied: {where} is "
                              f"{val.type_name(child)}, not a mapping")
        node = child
    node[parts[-1]] = value


class RedactingFormatter(logging.Formatter):
    """Log lines (tracebacks included) with the secrets inside them hidden
    (:func:`~minibatch_kmeans.redaction.redact_text`), whichever library logged them."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_logging(level: str = "INFO") -> None:
    """Jobs configure logging (libraries only log): a timestamped line per record on
    stderr at ``level``, secrets redacted; py4j and matplotlib only from WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger().setLevel(level)
    for name in ("minibatch_kmeans", "minibatch_kmeans_jobs"):
        logging.getLogger(name).setLevel(level)
    for name in ("py4j", "matplotlib"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
