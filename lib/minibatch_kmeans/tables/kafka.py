"""Rows from a Kafka topic, for Structured Streaming: :func:`read_kafka_stream`.

Spark's Kafka source (``spark-sql-kafka-0-10``) delivers each event's key and value as
bytes. The value is parsed as JSON or CSV with a declared schema (DDL); its fields become
columns, next to the event's coordinates (:data:`KAFKA_COLUMNS`: ``kafka_topic``,
``kafka_partition``, ``kafka_offset``, ``kafka_timestamp``, ``kafka_key``) and the raw value
(``kafka_value``). An event whose value does not parse as the schema (not JSON, a feature
that is not a number) keeps its parsed fields as null, is flagged in ``kafka_malformed``,
and fails the quality gate through :func:`malformed_checks` (so it goes to the quarantine
table with its raw value and the reason, and is not lost).
"""
from __future__ import annotations

import re
from typing import List, Mapping, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ..errors import ConfigError

#: The event's coordinates and raw value, kept next to the parsed fields.
KAFKA_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
                 "kafka_key", "kafka_value")
#: True when the value did not parse as the declared schema.
MALFORMED = "kafka_malformed"
#: The Kafka columns' types (for checking id columns before the stream starts).
KAFKA_TYPES = {"kafka_topic": "string", "kafka_partition": "int", "kafka_offset": "bigint",
               "kafka_timestamp": "timestamp", "kafka_key": "string",
               "kafka_value": "string", MALFORMED: "boolean"}
VALUE_FORMATS = ("json", "csv")
STARTING_OFFSETS = ("earliest", "latest")

NUMERIC_TYPES = frozenset({"tinyint", "byte", "smallint", "short", "int", "integer", "bigint",
                           "long", "float", "real", "double", "decimal", "dec", "numeric"})
_PRIMITIVE = NUMERIC_TYPES | {"boolean", "string", "binary", "date", "timestamp",
                              "timestamp_ntz", "timestamp_ltz", "varchar", "char"}
_NAME = re.compile(r"^(`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)\s+(.+)$", re.S)
_TYPE = re.compile(r"^([a-z_]+)\s*(\(\s*\d+\s*(,\s*\d+\s*)?\))?$")
_CORRUPT = "__kafka_corrupt_value"


def split_top(text: str) -> List[str]:
    """``text`` split at the commas outside ``<...>`` and ``(...)``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _check_type(typ: str, nested: bool) -> str:
    t = typ.strip().lower()
    m = re.fullmatch(r"(array|map|struct)\s*<(.*)>", t, flags=re.S)
    if m is not None:
        if not nested:
            raise ValueError(f"{typ!r}: CSV values have no nested types")
        kind, inner = m.groups()
        if kind == "array":
            _check_type(inner, nested)
        elif kind == "map":
            kv = split_top(inner)
            if len(kv) != 2:
                raise ValueError(f"{typ!r}: expected map<key type, value type>")
            for part in kv:
                _check_type(part, nested)
        else:
            for field in split_top(inner):
                name, _, sub = field.partition(":")
                if not name.strip() or not sub.strip():
                    raise ValueError(f"{typ!r}: expected struct<name: type, ...>")
                _check_type(sub, nested)
        return t
    m = _TYPE.match(t)
    if m is None or m.group(1) not in _PRIMITIVE:
        raise ValueError(f"{typ!r} is not a Spark SQL type (double, bigint, string, "
                         "array<double>...)")
    return t


def schema_fields(ddl: str, nested: bool = True) -> List[Tuple[str, str]]:
    """The ``(name, type)`` fields of a DDL schema such as ``"id string, x0 double"``,
    types lower-cased.

    Raises
    ------
    ValueError
        Not ``name type`` pairs, an unknown type, a name twice (or nested types where
        ``nested`` is false: CSV).
    """
    if not ddl.strip():
        raise ValueError("it is empty")
    fields: List[Tuple[str, str]] = []
    for part in split_top(ddl):
        m = _NAME.match(part)
        if m is None:
            raise ValueError(f"{part!r} is not 'name type'")
        name = m.group(1).strip("`")
        if name in (n for n, _ in fields):
            raise ValueError(f"field {name!r} is declared twice")
        fields.append((name, _check_type(m.group(2), nested)))
    return fields


def is_numeric(typ: str) -> bool:
    return re.split(r"[\s(]", typ, maxsplit=1)[0] in NUMERIC_TYPES


def is_numeric_array(typ: str) -> bool:
    m = re.fullmatch(r"array\s*<(.*)>", typ, flags=re.S)
    return m is not None and is_numeric(m.group(1).strip())


def read_kafka_stream(spark: SparkSession, bootstrap_servers: str, topics: Sequence[str],
                      value_schema: str, value_format: str = "json",
                      starting_offsets: str = "earliest",
                      max_offsets_per_trigger: Optional[int] = None,
                      options: Optional[Mapping[str, str]] = None) -> DataFrame:
    """The streaming DataFrame of the events of ``topics``: the value's fields as columns
    (``value_schema``, DDL), :data:`KAFKA_COLUMNS` and :data:`MALFORMED`.

    ``starting_offsets`` applies to a new query only; a query that resumes from its
    checkpoint goes on from the offsets recorded there.

    Raises
    ------
    ConfigError
        ``value_schema`` is not a schema Spark reads, or the session lacks the Kafka
        source.
    """
    from pyspark.errors import PySparkException

    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", bootstrap_servers)
              .option("subscribe", ",".join(topics))
              .option("startingOffsets", starting_offsets))
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(int(max_offsets_per_trigger)))
    for key, value in (options or {}).items():
        reader = reader.option(key, value)
    try:
        raw = reader.load()
    except PySparkException as e:  # the source is not on the classpath
        if "kafka" in str(e).lower() and "data source" in str(e).lower():
            raise ConfigError(
                "input.format=kafka needs Spark's Kafka source on the classpath: run "
                "spark-submit with --packages org.apache.spark:spark-sql-kafka-0-10_2.13:"
                "<Spark version> (make jars fetches it for local sessions)") from None
        raise
    value = F.col("value").cast("string")
    schema = f"{value_schema}, {_CORRUPT} string"
    opts = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}
    parsed = (F.from_json(value, schema, opts) if value_format == "json"
              else F.from_csv(value, F.lit(schema), opts))
    names = [n for n, _ in schema_fields(value_schema, value_format == "json")]
    try:
        df = raw.select(parsed.alias("parsed"), F.col("topic").alias("kafka_topic"),
                        F.col("partition").alias("kafka_partition"),
                        F.col("offset").alias("kafka_offset"),
                        F.col("timestamp").alias("kafka_timestamp"),
                        F.col("key").cast("string").alias("kafka_key"),
                        value.alias("kafka_value"))
    except PySparkException as e:  # a ParseException or AnalysisException
        raise ConfigError(f"stream.value_schema={value_schema!r} is not a schema Spark "
                          f"reads: {' '.join(str(e).split())[:300]}") from None
    return df.select(*[F.col("parsed").getField(n).alias(n) for n in names],
                     *KAFKA_COLUMNS,
                     F.col("parsed").getField(_CORRUPT).isNotNull().alias(MALFORMED))


def malformed_checks(value_format: str) -> List[Tuple[str, str, Column]]:
    """The quality gate's extra problems of a Kafka stream's rows (``(column, reason,
    condition)``, see :func:`minibatch_kmeans.tables.quality.check_quality`): an event
    without a value, and one whose value does not parse as the declared schema."""
    return [("kafka_value", "null", F.col("kafka_value").isNull()),
            ("kafka_value", f"malformed {value_format.upper()}", F.col(MALFORMED))]
