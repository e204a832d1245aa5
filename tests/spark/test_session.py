"""The session factory: a job started from another thread uses, and leaves running, the
session the process already has."""
import threading

from minibatch_kmeans.spark.session import (JIT_SIZED_CODEGEN, LOCAL_SESSION_CONF,
                                            existing_session, job_session, session_settings)


def test_a_job_in_another_thread_uses_and_keeps_the_running_session(spark):
    """A new thread has no active session of its own; job_session must still find the
    process's one, and must not stop it when the job ends (it did, before)."""
    seen = {}

    def job():
        with job_session("threaded-job") as s:
            seen["same"] = s is spark or s._jsparkSession.equals(spark._jsparkSession)
            seen["rows"] = s.range(5).count()

    t = threading.Thread(target=job)
    t.start()
    t.join(120)
    assert seen == {"same": True, "rows": 5}
    assert existing_session() is not None
    assert spark.range(3).count() == 3  # still running


def test_only_a_local_session_it_starts_takes_large_task_results_directly():
    """A local fit's collect hands task results of tens of MB to the driver: a local master
    started here takes them directly (LOCAL_SESSION_CONF); a cluster's master, a session
    spark-submit or Connect started (master None) keep Spark's default; the caller's conf
    wins over both."""
    name = "spark.task.maxDirectResultSize"
    assert LOCAL_SESSION_CONF == {name: "128m"}
    for master in ("local[2]", "local[*]", "local-cluster[2,1,1024]"):
        settings = session_settings(master)
        assert settings[name] == "128m", master
        assert set(JIT_SIZED_CODEGEN.items()) <= set(settings.items())
    for master in ("spark://127.0.0.1:7077", "yarn", None):
        settings = session_settings(master)
        assert name not in settings, master
        assert set(JIT_SIZED_CODEGEN.items()) <= set(settings.items())
    assert session_settings("local[2]", {name: "4m"})[name] == "4m"
    assert "spark.jars" not in session_settings(None)
