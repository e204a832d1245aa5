"""Both Delta engines as a pytest parameter: ``engine`` is "spark" (Spark's own Delta source,
delta-spark; needs the jars `make jars` fetches, skipped saying so without them) or
"deltalake" (the delta-rs fallback), set through MINIBATCH_KMEANS_DELTA for the test.
Import ``engine`` into a test module to use it."""
import pytest

from minibatch_kmeans.tables import delta

from helpers import requires_delta_jars

ENGINES = [pytest.param("spark", marks=requires_delta_jars, id="native"),
           pytest.param("deltalake", id="delta-rs")]


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch, spark):
    """The Delta engine of this run of the test (and the environment set for it)."""
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    monkeypatch.setenv(delta.ENGINE_ENV, request.param)
    assert delta.native_delta_available(spark) is (request.param == "spark")
    return request.param
