"""Tables: reading and writing Parquet and Delta (delta-rs or Spark's), the data
quality gate, synthetic data. Imports core, spark and ml, never evaluate, lifecycle or app."""
