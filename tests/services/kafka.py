"""Apache Kafka for the tests: the real broker, single node, KRaft (broker + controller in one JVM).

Jars come from Maven Central (scripts/fetch-kafka, cached); the JVM flags keep start-up around 2.5 s
on two cores. Transactions need their internal topics at replication factor 1 on one broker.

Fault tests: a broker started here as a local process can be killed and started again on the same
ports and KRaft storage (topics, committed records, consumer offsets and transaction state survive):
``service.kill()`` (SIGKILL: no controlled shutdown), ``service.start_again()``, ``service.restart()``.
``start_local_kafka(workdir, proxied=True)`` also puts a ``FaultProxy`` (tests/faults/proxy.py) in
front of the broker: a second listener ``FAULTY`` whose advertised address is the proxy's, so a
client that bootstraps at ``service.proxied_bootstrap`` reaches the broker only through
``service.proxy`` (the metadata it gets names the proxy). The proxy lives as long as the service,
across restarts.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._process import ServiceError, ServiceProcess, free_port

if TYPE_CHECKING:
    from ..faults.proxy import FaultProxy

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
    # With start_local_kafka(proxied=True): the proxy in front of the FAULTY listener, and its address.
    proxy: FaultProxy | None = None
    proxied_bootstrap: str | None = None
    ready: Callable[[], bool] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self.proxy is not None:
            self.proxy.stop()

    # -- fault injection: only for a broker this harness started as a local process -----------------

    def _local_process(self) -> ServiceProcess:
        if self.process is None or self.ready is None:
            raise ServiceError(
                f"the Kafka broker at {self.bootstrap} ({self.origin}) was not started by the harness as a "
                "local process: it cannot be killed or restarted from a test"
            )
        return self.process

    def kill(self) -> None:
        """SIGKILL the broker and wait for it: a crash, no controlled shutdown. Its ports, storage and
        the proxy (which now resets new clients: nothing answers upstream) stay for ``start_again``."""
        self._local_process().kill()

    def start_again(self, timeout: float = 60.0) -> float:
        """Start the killed (or stopped) broker again with the same command line: same ports, same
        storage (it recovers its logs first). Returns the seconds until it answered metadata requests."""
        process = self._local_process()
        if process.alive():
            raise ServiceError(f"{process.name} is still running (pid {process.pid}): kill() it first")
        process.start()
        assert self.ready is not None
        return process.wait_ready(self.ready, timeout, f"{process.name} started again at {self.bootstrap}")

    def restart(self, timeout: float = 60.0) -> float:
        """``kill()`` then ``start_again()``."""
        self.kill()
        return self.start_again(timeout)


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


def server_properties(
    data_dir: Path, broker_port: int, controller_port: int, faulty: tuple[int, int] | None = None
) -> str:
    """``faulty``: (the FAULTY listener's own port, the proxy's port it advertises), or no FAULTY listener."""
    listeners = f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"
    advertised = f"PLAINTEXT://127.0.0.1:{broker_port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if faulty is not None:
        listeners += f",FAULTY://127.0.0.1:{faulty[0]}"
        advertised += f",FAULTY://127.0.0.1:{faulty[1]}"
        protocols += ",FAULTY:PLAINTEXT"
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners={listeners}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map={protocols}
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
# After a kill the restarted controller still holds the dead incarnation's registration and refuses
# the new one (DUPLICATE_BROKER_REGISTRATION) until that session times out, retrying once per
# heartbeat: with the defaults (9 s, 2 s) a restart takes ~12 s, with these ~4.5 s.
broker.session.timeout.ms=2000
broker.heartbeat.interval.ms=500
auto.create.topics.enable=false
# The default 128 MiB dedupe buffer is allocated on the heap at start-up; a small heap needs less.
log.cleaner.dedupe.buffer.size=8388608
"""


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def start_local_kafka(workdir: Path, timeout: float = 60.0, *, proxied: bool = False) -> KafkaService:
    """A single-node broker. ``proxied=True``: also a FAULTY listener reached through a ``FaultProxy``
    (``service.proxy``, ``service.proxied_bootstrap``), started now and stopped with the service."""
    started = time.monotonic()
    java = java_binary()
    jars = kafka_jars()
    data, logs = workdir / "data", workdir / "logs"
    shutil.rmtree(data, ignore_errors=True)  # a throwaway broker: never reuse an old cluster's storage
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    (workdir / "log4j2.properties").write_text(_LOG4J2)
    broker_port, controller_port, faulty_port = _distinct_free_ports(3)
    proxy = None
    if proxied:
        from ..faults.proxy import FaultProxy

        # Listening at once: its port is taken before the broker is told to advertise it.
        proxy = FaultProxy("127.0.0.1", faulty_port, name="kafka-proxy").start()
    try:
        service = _start_broker(workdir, timeout, java, jars, (broker_port, controller_port, faulty_port), proxy)
    except BaseException:
        if proxy is not None:
            proxy.stop()
        raise
    service.startup_seconds = time.monotonic() - started
    return service


def _start_broker(
    workdir: Path, timeout: float, java: str, jars: Path, ports: tuple[int, int, int], proxy: FaultProxy | None
) -> KafkaService:
    data, logs = workdir / "data", workdir / "logs"
    broker_port, controller_port, faulty_port = ports
    props = workdir / "server.properties"
    faulty = (faulty_port, proxy.port) if proxy is not None else None
    props.write_text(server_properties(data, broker_port, controller_port, faulty))
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
        if not admin.list_topics(timeout=1).brokers:
            return False
        if proxy is not None:  # the FAULTY listener too (checked directly: the proxy's stats stay clean)
            socket.create_connection(("127.0.0.1", faulty_port), timeout=1).close()
        return True

    process.wait_ready(ready, timeout, f"broker at {bootstrap}, log {logs / 'server.log'}")
    return KafkaService(
        bootstrap,
        "local",
        process,
        proxy=proxy,
        proxied_bootstrap=proxy.address if proxy is not None else None,
        ready=ready,
    )
