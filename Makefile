# Every target creates and uses .venv itself, so a fresh clone needs only Python 3.11 and Java 17.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

JARS := $(VENV)/jars
JARS_STAMP := $(JARS)/.fetched
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

.PHONY: install jars airflow native-blas demo test bench dist clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[spark,dev,compare,mlops]'
	touch $(STAMP)

install: $(STAMP)

# Spark's Delta and Kafka connectors (.ci/jars/spark-connectors.xml, into .venv/jars/spark,
# which local sessions put on their classpath) and a Kafka broker for the tests
# (.ci/jars/kafka-broker.xml, into .venv/jars/kafka-broker), from Maven Central through
# Maven's local cache (~/.m2). Without Maven or the network this warns, and the tests that
# need these jars are skipped, saying why.
$(JARS_STAMP): .ci/jars/spark-connectors.xml .ci/jars/kafka-broker.xml
	@mkdir -p $(JARS)
	@if command -v mvn >/dev/null 2>&1 \
	  && mvn -q -B -f .ci/jars/spark-connectors.xml dependency:copy-dependencies \
	    -DexcludeTransitive=true -DoutputDirectory=$(abspath $(JARS))/spark \
	  && mvn -q -B -f .ci/jars/kafka-broker.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(JARS))/kafka-broker; \
	then touch $@; \
	else echo "warning: could not fetch the connector jars from Maven Central: the native" \
	  "Delta and Kafka tests will be skipped"; fi

jars: $(JARS_STAMP)

# MLlib's BLAS loader (dev.ludovic.netlib) looks for libblas.so.3; without it MLlib KMeans
# runs on its slower Java fallback. Install Debian's OpenBLAS when it is missing and this is
# root with apt-get; otherwise warn (compare.md states which BLAS MLlib had).
native-blas:
	@if /sbin/ldconfig -p 2>/dev/null | grep -q 'libblas\.so\.3 '; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends libopenblas0-pthread >/dev/null) \
	  || echo "warning: could not install libopenblas0-pthread: MLlib will use its Java BLAS"; \
	else echo "warning: no libblas.so.3 and no root apt-get: MLlib will use its Java BLAS"; fi

# 1,000,000 rows x 16 features in 20 blobs, then a k=20 fit; train prints a summary table and
# where the model (out/train/model) and the convergence plot (out/train/convergence.png) are.
# Then the same table against MLlib KMeans: compare prints its Markdown table and names the
# PNGs under out/compare.
demo: $(STAMP) native-blas
	$(PY) jobs/generate_data.py --out out/data/blobs --rows 1000000 --features 16 --k 20 --seed 7
	$(PY) jobs/train.py --conf conf/local.yaml
	$(PY) jobs/compare.py --conf conf/compare.yaml

# Apache Airflow 3 and its Spark and Databricks providers, for tests/test_airflow.py (the DAGs
# in conf/airflow), in a venv of their own: Airflow's pins (pandas 3, ...) are not the
# project's. conf/airflow/constraints.txt pins every package (Airflow's own constraint files
# are not on PyPI). Without the network this warns, and the Airflow tests are skipped.
$(AIRFLOW_STAMP): conf/airflow/constraints.txt
	@rm -rf $(AIRFLOW_VENV)
	@if $(PYTHON) -m venv $(AIRFLOW_VENV) && $(AIRFLOW_VENV)/bin/python -m pip install -q \
	    --disable-pip-version-check -c conf/airflow/constraints.txt apache-airflow \
	    apache-airflow-providers-apache-spark apache-airflow-providers-databricks; \
	then touch $@; \
	else echo "warning: could not install Apache Airflow into $(AIRFLOW_VENV): the Airflow" \
	  "tests will be skipped"; fi

airflow: $(AIRFLOW_STAMP)

test: $(STAMP) native-blas jars airflow
	$(PY) -m pytest -q tests

bench: $(STAMP) native-blas
	$(PY) bench/run.py

# dist/minibatch_kmeans-<version>-py3-none-any.whl (pip install, Databricks wheel tasks) and
# dist/minibatch_kmeans.zip (spark-submit --py-files), both with minibatch_kmeans and
# minibatch_kmeans_jobs; tests/test_cluster.py builds them with the same script.
dist: $(STAMP)
	$(PY) .ci/dist.py dist

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) out dist build *.egg-info lib/*.egg-info
