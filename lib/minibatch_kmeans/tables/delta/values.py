"""Partition values and timestamps between their forms: the text of the Delta log,
Spark's partition directory names, the Python values delta-rs parses them to and the text
Spark casts back; time-travel timestamps and the session time zone they are read in."""
from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Optional, Union

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from ...errors import InvalidParamError
from .engine import session_conf

logger = logging.getLogger(__name__)

_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def session_zone(spark: SparkSession) -> timezone:
    """The session time zone (``spark.sql.session.timeZone``) as a tzinfo."""
    name = session_conf(spark, "spark.sql.session.timeZone") or "UTC"
    m = re.fullmatch(r"(?:UTC|GMT)?([+-])(\d{1,2}):?(\d{2})?", name)
    if m:
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
        return timezone(-delta if m.group(1) == "-" else delta)
    if name.upper() in ("UTC", "GMT", "Z"):
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - unknown to Python: say so, use UTC
        logger.warning("session time zone %r is unknown here; reading timestamps as UTC", name)
        return timezone.utc


def fromiso(text: str) -> datetime:
    """``datetime.fromisoformat`` as Python 3.11 reads it, also on 3.10: a ``Z`` zone and
    fractions of 1 to 9 digits (Spark writes ``00:00:00.1``; micro-seconds are kept)."""
    text = text.strip()
    text = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    text = re.sub(r"(\d{2}:\d{2}:\d{2})\.(\d{1,9})",
                  lambda m: f"{m.group(1)}.{(m.group(2) + '00000')[:6]}", text)
    return datetime.fromisoformat(text)


def parse_timestamp(value: Union[str, datetime, date], zone) -> datetime:
    """An aware datetime for a time-travel timestamp: ISO 8601 text, a datetime or a date;
    without a zone it is in ``zone`` (the session time zone, as Spark reads it)."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            when = fromiso(value)
        except ValueError:
            raise InvalidParamError(f"timestamp {value!r} is not valid: expected ISO 8601, "
                                    "e.g. '2024-05-01T12:00:00Z' or '2024-05-01'") from None
    else:
        raise InvalidParamError(f"timestamp {value!r} is not valid: expected an ISO 8601 "
                                "string or a datetime")
    return when if when.tzinfo is not None else when.replace(tzinfo=zone)


def partition_value(text: Optional[str], data_type: T.DataType):
    """A Delta partition value as the Python value delta-rs parses it to (for matching)."""
    if text is None:
        return None
    if isinstance(data_type, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return int(text)
    if isinstance(data_type, (T.FloatType, T.DoubleType)):
        return float(text)
    if isinstance(data_type, T.DecimalType):
        return Decimal(text)
    if isinstance(data_type, T.BooleanType):
        return text.lower() == "true"
    if isinstance(data_type, T.DateType):
        return date.fromisoformat(text)
    if isinstance(data_type, T.TimestampType):
        when = fromiso(text)
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    if isinstance(data_type, T.TimestampNTZType):
        return fromiso(text)
    return text


def partition_text(value) -> Optional[str]:
    """A partition value parsed by delta-rs, as text Spark casts back exactly."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is None:  # timestamp_ntz
            return value.isoformat(sep=" ")
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _unescape(text: str) -> str:
    """Spark's (Hive's) partition directory unescaping: ``%XX`` is a character."""
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def log_partition_value(text: str, data_type: T.DataType, zone) -> Optional[str]:
    """The Delta partition value for a Spark partition directory's value."""
    value = _unescape(text)
    if value == _NULL_PARTITION:
        return None
    if isinstance(data_type, T.TimestampType):  # Spark wrote it in the session zone
        when = fromiso(value)
        when = when if when.tzinfo else when.replace(tzinfo=zone)
        return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def check_stream_options(starting_version, max_files_per_trigger, skip_change_commits) -> None:
    """The Delta stream options both engines take, checked alike: ``startingVersion`` a
    table version or None, ``maxFilesPerTrigger`` at least 1 or None, ``skipChangeCommits``
    a bool."""
    if starting_version is not None and (isinstance(starting_version, bool)
                                         or not isinstance(starting_version, int)
                                         or starting_version < 0):
        raise InvalidParamError(f"starting_version={starting_version!r} is not valid: "
                                "expected a table version, an integer >= 0 (or None to "
                                "start with the latest snapshot)")
    if max_files_per_trigger is not None and (
            isinstance(max_files_per_trigger, bool) or not isinstance(max_files_per_trigger, int)
            or max_files_per_trigger < 1):
        raise InvalidParamError(f"max_files_per_trigger={max_files_per_trigger!r} is not "
                                "valid: expected an integer >= 1 (or None for no cap)")
    if not isinstance(skip_change_commits, bool):
        raise InvalidParamError(f"skip_change_commits={skip_change_commits!r} is not valid: "
                                "expected True or False")
