"""The distributed adapter: DataFrame API only (no RDD, no sparkContext, no _jvm). Imports
core and the base modules only."""
