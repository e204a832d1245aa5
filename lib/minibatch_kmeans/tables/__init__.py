"""Tables: reading and writing Parquet and Delta (delta-rs or Spark's), the data
quality gate, synthetic data. Imports core and spark (ml is allowed but unused), never
evaluate, lifecycle or app."""
