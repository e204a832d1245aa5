"""Airflow DAG: the daily train -> score -> monitor job, each a ``spark-submit``.

Each task runs ``spark-submit --py-files <zip> jobs/<job>.py --conf <yaml> --run-id
<ds_nodash>`` through ``SparkSubmitOperator`` (apache-airflow-providers-apache-spark), so a
re-run of a date replaces that date's output partitions and a train re-run resumes from its
checkpoints (``model.checkpointDir``) instead of starting afresh. The zip is ``make dist``'s
``dist/minibatch_kmeans.zip``; the Python of the driver and the executors needs the
project's dependencies (numpy, pandas, pyarrow, pyyaml, matplotlib; mlflow for the
``mlflow:`` sections that monitor needs), as for any spark-submit of these jobs.

Settings, each looked up when a task runs, first match wins:

1. the DAG run's param (Trigger DAG w/ config, or ``airflow dags test -c '{...}'``),
2. the Airflow Variable ``mbkm_<name>`` (or the environment variable
   ``AIRFLOW_VAR_MBKM_<NAME>``),
3. the default below.

================  ===========================================================
``project_dir``   the checkout holding ``jobs/`` and ``dist/`` (default: the
                  repository this file is in)
``py_files``      ``<project_dir>/dist/minibatch_kmeans.zip``
``train_conf``    ``<project_dir>/conf/airflow/train.yaml``
``score_conf``    ``<project_dir>/conf/airflow/score.yaml``
``monitor_conf``  ``<project_dir>/conf/airflow/monitor.yaml``
================  ===========================================================

The Spark connection (master URL, deploy mode, ``spark-binary``) is read when the DAG is
parsed: the Variable ``mbkm_spark_conn_id`` (default ``spark_default``), and so is the
number of retries of each task, ``mbkm_retries`` (default 1; a retry of train resumes from
its checkpoints). ``spark-submit`` must be on the worker's PATH (the provider no longer
takes a ``spark-home``).
"""
from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param, Variable

DAG_ID = "minibatch_kmeans_spark_submit"
#: the repository this file lives in (conf/airflow/<this file>)
REPO = Path(__file__).resolve().parents[2]
JOBS = ("train", "score", "monitor")
DEFAULTS = {
    "project_dir": str(REPO),
    "py_files": "{project_dir}/dist/minibatch_kmeans.zip",
    **{f"{job}_conf": f"{{project_dir}}/conf/airflow/{job}.yaml" for job in JOBS},
}


def mbkm_setting(params, name: str) -> str:
    """The setting ``name`` of this run: its param, else the Variable ``mbkm_<name>``, else
    the default (a Jinja macro: ``{{ mbkm_setting(params, 'py_files') }}``)."""
    value = (params or {}).get(name) or Variable.get(f"mbkm_{name}", default=None)
    if value:
        return str(value)
    if name == "project_dir":
        return DEFAULTS[name]
    return DEFAULTS[name].format(project_dir=mbkm_setting(params, "project_dir").rstrip("/"))


def parse_time_variable(name: str, default: str) -> str:
    """The Airflow Variable ``name`` when the DAG is parsed, for what cannot be a template
    (SparkSubmitOperator's conn_id, retries). An environment variable AIRFLOW_VAR_<NAME>
    answers without the metadata database; a parser that cannot reach one gets the default."""
    try:
        return Variable.get(name, default=None) or default
    except Exception:  # noqa: BLE001 - no metastore while parsing: the default
        return default


def _setting(name: str) -> str:
    return f"{{{{ mbkm_setting(params, '{name}') }}}}"


with DAG(
    dag_id=DAG_ID,
    description="minibatch-kmeans: train, score, monitor by spark-submit",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # the runs share the model directory and the registry's champion
    default_args={"retries": int(parse_time_variable("mbkm_retries", "1")),
                  "retry_delay": pendulum.duration(minutes=10)},
    params={name: Param("", type="string", description=f"overrides the Variable "
                        f"mbkm_{name} (empty: the Variable, else {DEFAULTS[name]})")
            for name in DEFAULTS},
    user_defined_macros={"mbkm_setting": mbkm_setting},
    tags=["minibatch-kmeans", "spark"],
    doc_md=__doc__,
) as dag:
    conn_id = parse_time_variable("mbkm_spark_conn_id", "spark_default")
    tasks = [
        SparkSubmitOperator(
            task_id=job,
            conn_id=conn_id,
            application=f"{_setting('project_dir')}/jobs/{job}.py",
            py_files=_setting("py_files"),
            application_args=["--conf", _setting(f"{job}_conf"), "--run-id", "{{ ds_nodash }}"],
            # spark-submit's --name; the job's spark.app_name names the application
            name=f"mbkm-{job}-{{{{ ds_nodash }}}}",
        )
        for job in JOBS
    ]
    tasks[0] >> tasks[1] >> tasks[2]
