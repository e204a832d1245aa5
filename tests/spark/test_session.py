"""The session factory: a job started from another thread uses, and leaves running, the
session the process already has."""
import threading

from minibatch_kmeans.spark.session import existing_session, job_session


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
