"""Apache Kafka for the tests: the real broker, single node, KRaft.

Jars come from Maven Central (scripts/fetch-kafka, cached); the JVM flags keep start-up around 2.5 s
on two cores. Transactions need their internal topics at replication factor 1 on one broker. By
default broker and controller share one JVM; ``separate_controller=True`` runs the KRaft controller
as a second process (start-up ~4.5 s instead of ~3.5 s).

Fault tests: a broker started here as a local process can be killed and started again on the same
ports and storage: ``service.kill()`` (SIGKILL: no controlled shutdown), ``service.start_again()``,
``service.restart()``. Use ``separate_controller=True`` for that (the ``fault_kafka`` fixture does):
then ``kill()`` kills the broker only, as a broker crash in a real cluster, and the controller
fences it while it is down. With both roles in one JVM, the restarted node first acts on its own
stale metadata (still the partitions' leader), and is then fenced for its dead incarnation: if a
transaction's COMMIT markers were still unwritten at the kill (commit_transaction() had returned,
the markers follow it asynchronously), the coordinator drops them while the partitions have no
leader ("likely deleted") and records the transaction complete: the partition's last stable offset
then stays stuck for good, and read_committed consumers never see that transaction or anything
after it (4 kills out of 6 right after a commit, measured; with a separate controller, 0 of 8).

``start_local_kafka(workdir, proxied=True)`` also puts a ``FaultProxy`` (tests/faults/proxy.py) in
front of the broker: a second listener ``FAULTY`` whose advertised address is the proxy's, so a
client that bootstraps at ``service.proxied_bootstrap`` reaches the broker only through
``service.proxy`` (the metadata it gets names the proxy). The proxy lives as long as the service,
across restarts (while the broker is down it resets every new client).
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
BROKER_ID = 1
CONTROLLER_ID = 1000  # with separate_controller=True (in one JVM, both roles are node 1)
# After a kill, the controller holds the dead incarnation's registration and refuses the new one
# (DUPLICATE_BROKER_REGISTRATION) until that session times out, retrying once per heartbeat: with
# Kafka's defaults (9 s, 2 s) a restart in one JVM takes ~12 s, with these ~4.5 s.
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_INTERVAL_MS = 500

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
    process: ServiceProcess | None = None  # the broker (with both roles, unless ``controller`` is set)
    startup_seconds: float | None = None
    # With start_local_kafka(proxied=True): the proxy in front of the FAULTY listener, and its address.
    proxy: FaultProxy | None = None
    proxied_bootstrap: str | None = None
    # With start_local_kafka(separate_controller=True): the KRaft controller, which kill() spares.
    controller: ServiceProcess | None = None
    ready: Callable[[], bool] | None = field(default=None, repr=False)
    _killed: tuple[float, int] | None = field(default=None, init=False, repr=False)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self.controller is not None:
            self.controller.stop()
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
        """SIGKILL the broker and wait for it: a crash, no controlled shutdown. Its ports, storage, the
        controller (when separate) and the proxy (which resets new clients meanwhile) stay as they are."""
        process = self._local_process()
        self._killed = (time.monotonic(), _size(self._controller_log()))
        process.kill()

    def start_again(self, timeout: float = 60.0) -> float:
        """Start the killed (or stopped) broker again with the same command line: same ports, same
        storage (it recovers its logs first). With a separate controller, first wait until that has
        fenced the dead broker (up to ~2.5 s after the kill), so that the new one never acts on the
        stale metadata. Returns the seconds until it answered metadata requests (that wait included)."""
        process = self._local_process()
        if process.alive():
            raise ServiceError(f"{process.name} is still running (pid {process.pid}): kill() it first")
        started = time.monotonic()
        if self.controller is not None and self._killed is not None:
            _await_fenced(self._controller_log(), *self._killed)
        self._killed = None
        process.start()
        assert self.ready is not None
        process.wait_ready(self.ready, timeout, f"{process.name} started again at {self.bootstrap}")
        return time.monotonic() - started

    def restart(self, timeout: float = 60.0) -> float:
        """``kill()`` then ``start_again()``."""
        self.kill()
        return self.start_again(timeout)

    def _controller_log(self) -> Path | None:
        return None if self.controller is None else self.controller.log_path.parent / "server.log"


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def _await_fenced(controller_log: Path | None, killed_at: float, offset: int) -> None:
    """Until the controller logs that it fenced the broker (its session timed out), at most until a
    few sessions have passed (it may have been fenced already, e.g. killed while starting)."""
    fenced = re.compile(rf"Fencing broker {BROKER_ID} at epoch \d+".encode())
    deadline = killed_at + 3 * SESSION_TIMEOUT_MS / 1000 + 1
    while time.monotonic() < deadline:
        if controller_log is not None:
            try:
                with open(controller_log, "rb") as f:
                    f.seek(offset)
                    if fenced.search(f.read()):
                        return
            except OSError:
                pass
        time.sleep(0.05)


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
    data_dir: Path,
    broker_port: int,
    controller_port: int,
    faulty: tuple[int, int] | None = None,
    *,
    role: str = "broker,controller",
) -> str:
    """One node's configuration. ``role``: "broker,controller" (one JVM, node 1), or "broker" (node 1)
    / "controller" (node 1000) for two processes. ``faulty``: (the FAULTY listener's own port, the
    proxy port it advertises), or no FAULTY listener."""
    controller_id = BROKER_ID if role == "broker,controller" else CONTROLLER_ID
    node_id = CONTROLLER_ID if role == "controller" else BROKER_ID
    broker_listeners = [f"PLAINTEXT://127.0.0.1:{broker_port}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{broker_port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if faulty is not None:
        broker_listeners.append(f"FAULTY://127.0.0.1:{faulty[0]}")
        advertised.append(f"FAULTY://127.0.0.1:{faulty[1]}")
        protocols.append("FAULTY:PLAINTEXT")
    controller_listener = f"CONTROLLER://127.0.0.1:{controller_port}"
    if role == "controller":
        listeners = f"listeners={controller_listener}\n"
        protocols = ["CONTROLLER:PLAINTEXT"]
    elif role == "broker":
        listeners = f"listeners={','.join(broker_listeners)}\nadvertised.listeners={','.join(advertised)}\n"
    else:
        listeners = (
            f"listeners={','.join([*broker_listeners, controller_listener])}\n"
            f"advertised.listeners={','.join(advertised)}\n"
        )
    inter_broker = "" if role == "controller" else "inter.broker.listener.name=PLAINTEXT\n"
    return f"""\
process.roles={role}
node.id={node_id}
controller.quorum.voters={controller_id}@127.0.0.1:{controller_port}
{listeners}controller.listener.names=CONTROLLER
{inter_broker}listener.security.protocol.map={",".join(protocols)}
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
broker.session.timeout.ms={SESSION_TIMEOUT_MS}
broker.heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}
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


def start_local_kafka(
    workdir: Path, timeout: float = 60.0, *, proxied: bool = False, separate_controller: bool = False
) -> KafkaService:
    """A single-node broker on fresh storage under ``workdir``. ``proxied=True``: also a FAULTY
    listener reached through a ``FaultProxy`` (``service.proxy``, ``service.proxied_bootstrap``),
    started now and stopped with the service. ``separate_controller=True``: the KRaft controller in
    a process of its own (``service.controller``), which ``kill()`` spares: see the module docstring."""
    started = time.monotonic()
    java = java_binary()
    jars = kafka_jars()
    broker_port, controller_port, faulty_port = _distinct_free_ports(3)
    proxy = None
    if proxied:
        from ..faults.proxy import FaultProxy

        # Listening at once: its port is taken before the broker is told to advertise it.
        proxy = FaultProxy("127.0.0.1", faulty_port, name="kafka-proxy").start()
    faulty = (faulty_port, proxy.port) if proxy is not None else None
    # Any 16 random bytes, but like Kafka's own Uuid.randomUuid never one whose text starts with "-":
    # kafka-storage would read it as an option (seen: "--cluster-id: expected one argument").
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "log4j2.properties").write_text(_LOG4J2)
    roles = ["broker", "controller"] if separate_controller else ["broker,controller"]
    processes: list[ServiceProcess] = []
    try:
        for role in roles:
            # The broker (or the single node) keeps the historical layout: data/, logs/, server.properties.
            name = "controller" if role == "controller" else ""
            data = workdir / (f"{name}-data" if name else "data")
            logs = workdir / (f"{name}-logs" if name else "logs")
            props = workdir / (f"{name}.properties" if name else "server.properties")
            shutil.rmtree(data, ignore_errors=True)  # a throwaway broker: never reuse an old cluster's storage
            data.mkdir(parents=True, exist_ok=True)
            logs.mkdir(parents=True, exist_ok=True)
            props.write_text(server_properties(data, broker_port, controller_port, faulty, role=role))
            jvm = [
                java,
                "-cp",
                f"{jars}/*",
                f"-Dkafka.logs.dir={logs}",
                f"-Dlog4j2.configurationFile={workdir / 'log4j2.properties'}",
                "-Djava.awt.headless=true",
            ]
            _format_storage(jvm, props, cluster_id)
            opts = os.environ.get("KAFKA_JVM_OPTS", DEFAULT_JVM_OPTS).split()
            process = ServiceProcess(
                "kafka-controller" if name else "kafka",
                [*jvm[:1], *opts, *jvm[1:], "kafka.Kafka", str(props)],
                logs / "stdout.log",
            )
            processes.append(process.start())
        broker = processes[0]
        bootstrap = f"127.0.0.1:{broker_port}"

        def ready() -> bool:
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
            if not admin.list_topics(timeout=1).brokers:
                return False
            if proxy is not None:  # the FAULTY listener too (checked directly: the proxy's stats stay clean)
                socket.create_connection(("127.0.0.1", faulty_port), timeout=1).close()
            return True

        broker.wait_ready(ready, timeout, f"broker at {bootstrap}, log {workdir / 'logs' / 'server.log'}")
    except BaseException:
        for process in reversed(processes):
            process.stop()
        if proxy is not None:
            proxy.stop()
        raise
    return KafkaService(
        bootstrap,
        "local",
        broker,
        time.monotonic() - started,
        proxy=proxy,
        proxied_bootstrap=proxy.address if proxy is not None else None,
        controller=processes[1] if separate_controller else None,
        ready=ready,
    )


def _format_storage(jvm: list[str], props: Path, cluster_id: str) -> None:
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
