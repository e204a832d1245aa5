"""A real single-node Kafka broker for the tests: KRaft mode (broker and controller in one
JVM), from the jars ``make jars`` fetched into ``.venv/jars/kafka-broker``, on free
loopback ports, in a process group of its own that is always stopped (and killed when it
does not stop).

``kafka_fixture()`` makes the module- (or session-) scoped fixture; without java or the
jars the tests that use it are skipped, saying which is missing.
"""
import base64
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

BROKER_JARS = os.path.join(sys.prefix, "jars", "kafka-broker")
JAVA_OPTS = ["-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-Djava.awt.headless=true"]


def missing() -> str:
    """Why no broker can start here ('' when one can)."""
    if shutil.which("java") is None:
        return "no java on PATH: the Kafka broker of the tests needs a JVM"
    if not glob.glob(os.path.join(BROKER_JARS, "kafka_2.13-*.jar")):
        return (f"no Kafka broker jars in {BROKER_JARS}: `make jars` could not fetch them "
                "from Maven Central")
    return ""


#: Skips a test when no broker can start, or Spark lacks its Kafka source.
requires_kafka_broker = pytest.mark.skipif(bool(missing()), reason=missing() or "-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_id() -> str:
    """A Kafka cluster id (a random UUID, base64url without padding, not starting with
    '-'), as ``kafka-storage random-uuid`` prints it, without starting a JVM for it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaBroker:
    """One broker+controller on 127.0.0.1; ``bootstrap`` is its address once started."""

    def __init__(self, directory: str):
        self.dir = str(directory)
        self.port, self.controller_port = free_port(), free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = os.path.join(self.dir, "broker.log")
        self.proc = None

    def _properties(self) -> str:
        props = {
            "process.roles": "broker,controller", "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": os.path.join(self.dir, "data"), "num.partitions": "1",
            "offsets.topic.replication.factor": "1", "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1", "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
        }
        path = os.path.join(self.dir, "server.properties")
        with open(path, "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in props.items())
        return path

    def _java(self, *args):
        return ["java", *JAVA_OPTS, "-cp", os.path.join(BROKER_JARS, "*"), *args]

    def start(self, timeout: float = 120.0) -> "KafkaBroker":
        props = self._properties()
        fmt = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t",
                                        _cluster_id(), "-c", props),
                             capture_output=True, text=True, timeout=120)
        if fmt.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self._java("kafka.Kafka", props), stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir,
                                         start_new_session=True)
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited with {self.proc.returncode}:\n"
                                   + self.tail())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"the Kafka broker did not open port {self.port} in {timeout:.0f} "
                           "s:\n" + self.tail())

    def tail(self, n: int = 3000) -> str:
        try:
            with open(self.log) as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the broker's process group, SIGKILL when it is not gone in 30 s."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def kafka_fixture(scope: str = "module", name: str = "kafka"):
    """A fixture (bind it to a module-level name of the test module) that yields a
    started :class:`KafkaBroker` and always stops it."""

    @pytest.fixture(scope=scope, name=name)
    def broker(tmp_path_factory):
        reason = missing()
        if reason:
            pytest.skip(reason)
        with KafkaBroker(tmp_path_factory.mktemp("kafka-broker")) as b:
            yield b

    return broker


def produce(spark, bootstrap: str, topic: str, values, keys=None) -> None:
    """Write ``values`` (strings, or None for an event without value) to ``topic`` in
    this order (one partition, one task), with Spark's Kafka sink."""
    rows = [(None if keys is None else keys[i], v) for i, v in enumerate(values)]
    (spark.createDataFrame(rows, "key string, value string").coalesce(1).write
     .format("kafka").option("kafka.bootstrap.servers", bootstrap).option("topic", topic)
     .save())
