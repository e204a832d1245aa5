"""One session-scoped local SparkSession for every test (local[2], few shuffle partitions,
UTC, log level ERROR), with the connector jars ``make jars`` fetched (Delta on, the Kafka
source) when they are there. Core tests do not touch it."""
import os
import sys
import tempfile

import pytest

# Executors must run the same interpreter (and so see the installed package) as the tests.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Jobs whose config has an mlflow section track into a throwaway store, never the repo's out/.
os.environ.setdefault("MLFLOW_TRACKING_URI",
                      f"sqlite:///{tempfile.mkdtemp(prefix='mbkm-tests-mlflow-')}/mlflow.db")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests that take more than ~30 s")


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from minibatch_kmeans.spark.session import connector_conf

    builder = (SparkSession.builder.master("local[2]").appName("minibatch-kmeans-tests")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.default.parallelism", "2")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.memory", "2g"))
    for key, value in connector_conf().items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
