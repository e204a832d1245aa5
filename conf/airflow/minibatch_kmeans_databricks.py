"""Airflow DAG: the daily train -> score -> monitor job on Databricks, the twin of
``minibatch_kmeans_spark_submit``.

Each task submits a one-task run (``DatabricksSubmitRunOperator``,
apache-airflow-providers-databricks) of a Python wheel task on serverless compute: package
``minibatch_kmeans``, entry point ``mbkm-train`` / ``mbkm-score`` / ``mbkm-monitor`` (setup.py's
console scripts, which exit with the job's code, so a failed job fails the run and the Airflow
task), parameters ``--conf <yaml> --run-id <ds_nodash>``, and the wheel as a dependency of
the task's environment. It is the same job as the Databricks Asset Bundle
``conf/resources/minibatch_kmeans_job.yml``, scheduled by Airflow instead of Databricks
Workflows; its configs are ``conf/databricks.yaml``, ``databricks_score.yaml`` and
``databricks_monitor.yaml`` (paths on a Unity Catalog volume, models in ``databricks-uc``).

Upload the wheel (``make dist``) and the three configs, e.g. to the volume, then set, where
the defaults do not fit, these Airflow Variables (or ``AIRFLOW_VAR_<NAME>`` environment
variables), read when a task runs:

==================================  ======================================================
``mbkm_databricks_conn_id``         ``databricks_default``
``mbkm_databricks_wheel``           ``/Volumes/main/default/minibatch_kmeans/wheels/``
                                    ``minibatch_kmeans-0.1.0-py3-none-any.whl``
``mbkm_databricks_conf_dir``        ``/Volumes/main/default/minibatch_kmeans/conf``
``mbkm_databricks_model_name``      ``main.default.minibatch_kmeans`` (Unity Catalog)
==================================  ======================================================

The number of retries of each task is read when the DAG is parsed: the Variable
``mbkm_retries`` (default 1).

No DAG params on purpose: the provider forwards a DAG's params into a wheel task's
``named_parameters`` when it has none, which the entry points would get as ``--name=value``
arguments they do not know (exit 2).
"""
from __future__ import annotations

import pendulum
from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk import DAG, Variable

DAG_ID = "minibatch_kmeans_databricks"
VOLUME = "/Volumes/main/default/minibatch_kmeans"
ENVIRONMENT = "mbkm"
#: task -> (entry point, config file in the conf dir, sets the registered model name)
JOBS = {
    "train": ("mbkm-train", "databricks.yaml", True),
    "score": ("mbkm-score", "databricks_score.yaml", False),
    "monitor": ("mbkm-monitor", "databricks_monitor.yaml", True),
}


def _var(name: str, default: str) -> str:
    return f"{{{{ var.value.get('mbkm_databricks_{name}', '{default}') }}}}"


CONN_ID = _var("conn_id", "databricks_default")
WHEEL = _var("wheel", f"{VOLUME}/wheels/minibatch_kmeans-0.1.0-py3-none-any.whl")
CONF_DIR = _var("conf_dir", f"{VOLUME}/conf")
MODEL_NAME = _var("model_name", "main.default.minibatch_kmeans")


def parse_time_variable(name: str, default: str) -> str:
    """The Airflow Variable ``name`` when the DAG is parsed (AIRFLOW_VAR_<NAME> answers
    without the metadata database; a parser that cannot reach one gets the default)."""
    try:
        return Variable.get(name, default=None) or default
    except Exception:  # noqa: BLE001 - no metastore while parsing: the default
        return default


def wheel_task(task: str) -> dict:
    """The one task of a run of ``task``: a Python wheel task in the serverless environment
    that holds the wheel."""
    entry_point, conf, model_name = JOBS[task]
    parameters = ["--conf", f"{CONF_DIR}/{conf}", "--run-id", "{{ ds_nodash }}"]
    if model_name:
        parameters += ["--set", f"mlflow.model_name={MODEL_NAME}"]
    return {"task_key": task, "environment_key": ENVIRONMENT,
            "python_wheel_task": {"package_name": "minibatch_kmeans",
                                  "entry_point": entry_point, "parameters": parameters}}


with DAG(
    dag_id=DAG_ID,
    description="minibatch-kmeans: train, score, monitor as Databricks wheel tasks",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": int(parse_time_variable("mbkm_retries", "1")),
                  "retry_delay": pendulum.duration(minutes=10)},
    tags=["minibatch-kmeans", "databricks"],
    doc_md=__doc__,
) as dag:
    tasks = [
        DatabricksSubmitRunOperator(
            task_id=task,
            databricks_conn_id=CONN_ID,
            run_name=f"minibatch-kmeans {task} {{{{ ds_nodash }}}}",
            tasks=[wheel_task(task)],
            environments=[{"environment_key": ENVIRONMENT,
                           "spec": {"client": "3", "dependencies": [WHEEL]}}],
            # a retry of the same try (the hook's own HTTP retries) never starts a second run
            idempotency_token=f"mbkm-{task}-{{{{ ds_nodash }}}}-{{{{ ti.try_number }}}}",
            polling_period_seconds=30,
        )
        for task in JOBS
    ]
    tasks[0] >> tasks[1] >> tasks[2]
