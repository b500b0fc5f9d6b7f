"""Apache Kafka for the tests: the real broker, single node, KRaft (broker + controller in one JVM).

Jars come from Maven Central (scripts/fetch-kafka, cached); the JVM flags keep start-up around 2.5 s
on two cores. Transactions need their internal topics at replication factor 1 on one broker.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ._process import ServiceError, ServiceProcess, free_port

REPO = Path(__file__).resolve().parents[2]
ENV_BOOTSTRAP = "ATOMIC_PUBLISH_TEST_KAFKA_BOOTSTRAP"
# Serial GC and the C1-only JIT roughly halve start-up on two cores (measured 2.5 s vs 4-5 s).
DEFAULT_JVM_OPTS = "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"

_LOG4J2 = """\
status = warn
# Let Kafka log its own shutdown (log4j2's hook would stop logging first).
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = warn
"""


@dataclass
class KafkaService:
    bootstrap: str
    origin: str
    process: ServiceProcess | None = None
    startup_seconds: float | None = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def java_binary() -> str:
    java = os.environ.get("JAVA") or shutil.which("java")
    if not java:
        raise ServiceError(
            "Java not found: the Kafka broker needs a JDK >= 17 (apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    m = re.search(r'version "(\d+)', out)
    if not m or int(m.group(1)) < 17:
        raise ServiceError(f"{java} is not Java >= 17 (it says: {out.strip().splitlines()[0] if out else '?'})")
    return java


def kafka_jars() -> Path:
    """The jar directory, fetched from Maven Central on first use and cached."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "fetch-kafka")], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ServiceError(f"could not get the Kafka broker jars:\n{proc.stderr.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


def server_properties(data_dir: Path, broker_port: int, controller_port: int) -> str:
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# The default 128 MiB dedupe buffer is allocated on the heap at start-up; a small heap needs less.
log.cleaner.dedupe.buffer.size=8388608
"""


def start_local_kafka(workdir: Path, timeout: float = 60.0) -> KafkaService:
    started = time.monotonic()
    java = java_binary()
    jars = kafka_jars()
    data, logs = workdir / "data", workdir / "logs"
    shutil.rmtree(data, ignore_errors=True)  # a throwaway broker: never reuse an old cluster's storage
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    (workdir / "log4j2.properties").write_text(_LOG4J2)
    broker_port, controller_port = free_port(), free_port()
    while controller_port == broker_port:
        controller_port = free_port()
    props = workdir / "server.properties"
    props.write_text(server_properties(data, broker_port, controller_port))
    jvm = [
        java,
        "-cp",
        f"{jars}/*",
        f"-Dkafka.logs.dir={logs}",
        f"-Dlog4j2.configurationFile={workdir / 'log4j2.properties'}",
        "-Djava.awt.headless=true",
    ]
    # Any 22-character url-safe base64 of 16 random bytes is a valid cluster id.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run(
        [
            *jvm,
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(props),
            "--cluster-id",
            cluster_id,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        raise ServiceError(f"formatting Kafka storage failed:\n{fmt.stdout}\n{fmt.stderr}")
    opts = os.environ.get("KAFKA_JVM_OPTS", DEFAULT_JVM_OPTS).split()
    process = ServiceProcess("kafka", [*jvm[:1], *opts, *jvm[1:], "kafka.Kafka", str(props)], logs / "stdout.log")
    process.start()
    bootstrap = f"127.0.0.1:{broker_port}"

    def ready() -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        return bool(admin.list_topics(timeout=1).brokers)

    process.wait_ready(ready, timeout, f"broker at {bootstrap}, log {logs / 'server.log'}")
    return KafkaService(bootstrap, "local", process, time.monotonic() - started)
