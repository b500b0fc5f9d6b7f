"""``scripts/services up|down|status``: the test harness's servers, started to outlive the command, for
trying every sink by hand without Docker (docs/try-every-sink.md).

``up`` starts, on 127.0.0.1, the same local processes the tests use (tests/services/*.py): a throwaway
PostgreSQL cluster, an Apache Kafka broker (KRaft), an S3 server (MinIO when ``scripts/fetch-minio``
has built it or can build it, else moto's server) and Apache Iceberg's REST catalog with its
warehouse on local disk. Each is *detached* (no PR_SET_PDEATHSIG, no atexit stop: see
``_process.detached_processes``); its PID (with the kernel's start time of that PID, so a reused PID
is never mistaken for it), ports, throwaway credentials, log and data directories go to
``state.json`` in the state directory: ``$ATOMIC_PUBLISH_SERVICES_DIR``, else
``${ATOMIC_PUBLISH_CACHE:-~/.cache/atomic-publish}/services``. It then writes and prints
``publish.toml`` (one sink per server, plus the file sink and an Iceberg SQLite catalog, which need no
server; no secret in it) and ``env.sh`` (the credentials, as ``export`` lines). ``up`` again finds
them running and prints the same. ``status`` exits 0 when every started server runs and answers,
else 3. ``down`` stops each by PID (its stop signal, SIGKILL after a few seconds), removes its data
directories, and is a no-op when nothing runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._process import ServiceError, ServiceProcess, _group_members, detached_processes

REPO = Path(__file__).resolve().parents[2]
ENV_DIR = "ATOMIC_PUBLISH_SERVICES_DIR"
SERVERS = ("postgres", "kafka", "s3", "iceberg-rest")
ALIASES = {"pg": "postgres", "postgresql": "postgres", "iceberg_rest": "iceberg-rest", "rest": "iceberg-rest"}
STOP_GRACE_SECONDS = 5.0
HEARTBEAT_SECONDS = 20.0
STATE_VERSION = 1
DATASET_KEY = ["refund_id"]  # the refunds pipeline's key (docs/pipeline.md)

Record = dict[str, Any]


def say(message: str) -> None:
    print(f"services: {message}", file=sys.stderr, flush=True)


# -- the state directory ----------------------------------------------------------------------------


def state_dir() -> Path:
    given = os.environ.get(ENV_DIR)
    if given:
        return Path(given).expanduser().resolve()
    cache = os.environ.get("ATOMIC_PUBLISH_CACHE") or str(Path.home() / ".cache" / "atomic-publish")
    return Path(cache).expanduser().resolve() / "services"


class State:
    """``state.json`` in the state directory: one record per server that ``up`` started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "state.json"
        self.services: dict[str, Record] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            if data.get("version") != STATE_VERSION:
                raise ServiceError(f"{self.path}: unknown state version {data.get('version')!r}")
            self.services = data.get("services", {})

    def save(self) -> None:
        if not self.services:
            self.path.unlink(missing_ok=True)
            return
        _write_private(self.path, json.dumps({"version": STATE_VERSION, "services": self.services}, indent=2) + "\n")

    @property
    def config_path(self) -> Path:
        return self.root / "publish.toml"

    @property
    def env_path(self) -> Path:
        return self.root / "env.sh"

    @property
    def file_root(self) -> Path:
        return self.root / "file-sink"

    @property
    def sqlite_dir(self) -> Path:
        return self.root / "iceberg-sqlite"


def _write_private(path: Path, text: str) -> None:
    """Written whole (a temporary file renamed over it), readable by the owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


MARKER = ".atomic-publish-services"
# What a state directory holds (besides *.tmp files being written).
OWN_NAMES = {MARKER, ".lock", "state.json", "publish.toml", "env.sh"}
OWN_NAMES |= {"kafka", "s3", "iceberg-rest", "file-sink", "iceberg-sqlite"}


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per state directory. A directory that holds anything else
    (ATOMIC_PUBLISH_SERVICES_DIR pointed at your home, say) is refused: ``up`` replaces, and ``down``
    removes, subdirectories such as ``kafka/`` and ``s3/`` in it."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (root / MARKER).exists():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in OWN_NAMES and not p.name.endswith(".tmp"))
        if foreign:
            raise ServiceError(
                f"{root} holds files of its own ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): "
                f"not a state directory of scripts/services; set {ENV_DIR} to a new or empty directory"
            )
        (root / MARKER).touch()
    with open(root / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another `scripts/services` is working on {root}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- processes, by PID --------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # comm may hold spaces and parentheses
    return fields[0], int(fields[19])


def start_ticks(pid: int) -> int:
    found = _stat(pid)
    if found is None:
        raise ServiceError(f"process {pid} is gone")
    return found[1]


def alive(record: Record) -> bool:
    """The recorded process runs: its PID exists, is not a zombie, and started when it did (a PID
    reused by another process is not it)."""
    found = _stat(int(record["pid"]))
    return found is not None and found[0] not in ("Z", "X") and found[1] == record["start_ticks"]


def stop(record: Record) -> str:
    """Stop the recorded server: its stop signal to the PID, SIGKILL to its process group after
    STOP_GRACE_SECONDS, then wait for every member of the group. Says what happened."""
    pid = int(record["pid"])
    if not alive(record):
        what = f"was not running (pid {pid})"
        left = _group_members(pid)
        if left:  # never signalled: the PID, hence the group, may by now be another program's
            what += f"; processes {left} are in a process group of that id: not ours to signal, check them"
        return what
    stop_signal = signal.Signals[record.get("stop_signal", "SIGTERM")]
    started = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, stop_signal)
    while alive(record) and time.monotonic() - started < STOP_GRACE_SECONDS:
        time.sleep(0.05)
    what = f"stopped (pid {pid}, {stop_signal.name}, {time.monotonic() - started:.1f}s)"
    if alive(record):
        what = f"killed (pid {pid}: still running {STOP_GRACE_SECONDS:.0f}s after {stop_signal.name}, so SIGKILL)"
    # Whatever the server started that is still in its process group (which it leads).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (alive(record) or _group_members(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return what


def remove_data(record: Record) -> None:
    for directory in record.get("data_dirs", []):
        shutil.rmtree(directory, ignore_errors=True)


# -- readiness probes ---------------------------------------------------------------------------------


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # our own http://127.0.0.1 URL
        return bool(response.status == 200)


def answers(record: Record) -> bool:
    """The server answers its own protocol (not only: its PID runs)."""
    try:
        server = record["server"]
        if server == "postgres":
            import psycopg

            with psycopg.connect(record["conninfo"], password=record["credentials"]["password"], connect_timeout=2):
                return True
        if server == "kafka":
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({"bootstrap.servers": record["address"], "log_level": 0})
            return bool(admin.list_topics(timeout=2).brokers)
        if server == "minio":
            return _http_ok(record["endpoint"] + "/minio/health/live")
        if server == "moto":
            return _http_ok(record["endpoint"] + "/moto-api/")
        if server == "iceberg-rest":
            return _http_ok(record["uri"] + "/v1/config")
    except Exception:
        return False
    return False


# -- starting each server -----------------------------------------------------------------------------


def fetch(script: str, what: str) -> Path:
    """Run ``scripts/<script>`` (a check when its cache is complete; a download or a build the first
    time), its own progress lines on stderr, a heartbeat while it works. Returns the path it prints."""
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / script)], stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    while True:
        try:
            out, _ = proc.communicate(timeout=HEARTBEAT_SECONDS)
            break
        except subprocess.TimeoutExpired:
            say(f"{what}: scripts/{script} still working ({time.monotonic() - started:.0f}s so far)")
    if proc.returncode != 0:
        raise ServiceError(f"scripts/{script} failed (exit {proc.returncode}); its messages are above")
    return Path(out.strip().splitlines()[-1])


def _base(process: ServiceProcess | None, server: str, address: str, seconds: float | None) -> Record:
    assert process is not None
    stop_signal = signal.Signals(process.stop_signal).name
    return {
        "server": server,
        "pid": process.pid,
        "start_ticks": start_ticks(process.pid),
        "stop_signal": stop_signal,
        "address": address,
        "log": str(process.log_path),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "startup_seconds": round(seconds or 0.0, 2),
    }


def start_postgres(root: Path, options: argparse.Namespace) -> Record:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from .postgres import server_bin_dir, start_local_postgres

    say(f"postgres: starting a throwaway cluster (PostgreSQL {server_bin_dir().parent.name}; ~1 s)")
    service = start_local_postgres()
    assert service.process is not None
    params = conninfo_to_dict(service.dsn)
    password = str(params.pop("password"))
    record = _base(service.process, "postgres", f"{params['host']}:{params['port']}", service.startup_seconds)
    record.update(
        conninfo=make_conninfo(
            host=str(params["host"]), port=str(params["port"]), dbname=str(params["dbname"]), user=str(params["user"])
        ),
        ports={"postgres": int(str(params["port"]))},
        credentials={"user": str(params["user"]), "password": password},
        # A directory of its own under $TMPDIR, not in the state directory: when run as root, the
        # cluster belongs to the postgres OS user, who may not be able to reach the root's home.
        data_dirs=[str(service.process.remove_after)],
    )
    return record


def start_kafka(root: Path, options: argparse.Namespace) -> Record:
    from .kafka import java_binary, start_local_kafka

    java_binary()
    fetch("fetch-kafka", "kafka")
    say("kafka: starting the broker (Apache Kafka, KRaft, broker and controller in one JVM; ~3-5 s)")
    workdir = root / "kafka"
    shutil.rmtree(workdir, ignore_errors=True)
    service = start_local_kafka(workdir)
    port = int(service.bootstrap.rsplit(":", 1)[1])
    voters = _property(workdir / "server.properties", "controller.quorum.voters")
    record = _base(service.process, "kafka", service.bootstrap, service.startup_seconds)
    record.update(
        ports={"broker": port, "controller": int(voters.rsplit(":", 1)[1])},
        credentials={},
        data_dirs=[str(workdir)],
        log=str(workdir / "logs" / "server.log"),
    )
    return record


def _property(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    raise ServiceError(f"{path}: no {key}")


def start_s3(root: Path, options: argparse.Namespace) -> Record:
    from .minio import start_local_minio
    from .s3 import start_local_s3

    workdir = root / "s3"
    shutil.rmtree(workdir, ignore_errors=True)
    server = options.s3
    if server in ("auto", "minio"):
        say("s3: MinIO (scripts/fetch-minio: a quick check once built; building it the first time takes minutes)")
        try:
            fetch("fetch-minio", "s3")
        except ServiceError as exc:
            if server == "minio":
                raise
            say(f"s3: no MinIO ({exc}); using moto's server instead (--s3 moto skips this check)")
            server = "moto"
        else:
            server = "minio"
    say("s3: starting " + ("MinIO" if server == "minio" else "moto's server"))
    service = start_local_minio(workdir) if server == "minio" else start_local_s3(workdir)
    assert service.process is not None
    argv = list(service.process.argv)
    ports = {"s3": int(service.endpoint.rsplit(":", 1)[1])}
    if "--console-address" in argv:
        ports["console"] = int(argv[argv.index("--console-address") + 1].rsplit(":", 1)[1])
    record = _base(service.process, server, service.endpoint, service.startup_seconds)
    record.update(
        endpoint=service.endpoint,
        region=service.region,
        bucket=service.bucket,
        buckets=list(service.buckets),
        ports=ports,
        credentials=service.env(),  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: throwaway, this server's only
        data_dirs=[str(workdir)],
    )
    return record


def start_iceberg_rest(root: Path, options: argparse.Namespace) -> Record:
    from .iceberg_rest import start_local_iceberg_rest
    from .kafka import java_binary

    java_binary()
    fetch("fetch-iceberg-rest", "iceberg-rest")
    say("iceberg-rest: starting Apache Iceberg's REST catalog (one JVM; JDBC catalog on SQLite, warehouse on disk)")
    workdir = root / "iceberg-rest"
    shutil.rmtree(workdir, ignore_errors=True)
    service = start_local_iceberg_rest(workdir)
    (workdir / "work").mkdir(exist_ok=True)
    record = _base(service.process, "iceberg-rest", service.uri, service.startup_seconds)
    record.update(
        uri=service.uri,
        warehouse=service.warehouse,
        work_location=(workdir / "work").as_uri(),
        ports={"rest": int(service.uri.rsplit(":", 1)[1])},
        credentials={},
        data_dirs=[str(workdir)],
    )
    return record


STARTERS: dict[str, Callable[[Path, argparse.Namespace], Record]] = {
    "postgres": start_postgres,
    "kafka": start_kafka,
    "s3": start_s3,
    "iceberg-rest": start_iceberg_rest,
}


# -- what the user gets: publish.toml and env.sh --------------------------------------------------------


def _q(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def publish_toml(state: State) -> str:
    running = state.services
    lines = [
        f"# publish.toml for the local servers of `bash scripts/services up` (state: {state.root}).",
        "# No secret in it: the credentials are in env.sh next to it (source it first).",
        "[defaults]",
        'sink = "file"',
        "",
        "[sinks.file]                 # no server: a directory",
        'type = "file"',
        f"root = {_q(str(state.file_root))}",
    ]
    if "postgres" in running:
        pg = running["postgres"]
        lines += [
            "",
            "[sinks.postgres]             # password: PGPASSWORD (env.sh)",
            'type = "postgres"',
            f"conninfo = {_q(pg['conninfo'])}",
            f"key_columns = {json.dumps(DATASET_KEY)}",
        ]
    if "kafka" in running:
        lines += [
            "",
            "[sinks.kafka]                # consumers: isolation.level=read_committed",
            'type = "kafka"',
            f"bootstrap_servers = {_q(running['kafka']['address'])}",
            f"key_columns = {json.dumps(DATASET_KEY)}",
            "topic_partitions = 1",
        ]
    if "s3" in running:
        s3 = running["s3"]
        lines += [
            "",
            f"[sinks.s3]                   # {s3['server']}; AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (env.sh)",
            'type = "s3"',
            f"bucket = {_q(s3['bucket'])}",
            'prefix = "published"',
            f"endpoint_url = {_q(s3['endpoint'])}",
            f"region = {_q(s3['region'])}",
            'addressing_style = "path"',
        ]
    if "iceberg-rest" in running:
        rest = running["iceberg-rest"]
        lines += [
            "",
            "[sinks.iceberg_rest]         # Apache Iceberg's REST catalog; warehouse on local disk",
            'type = "iceberg"',
            'catalog_name = "local_rest"',
            'namespace = "reports"',
            f"work_location = {_q(rest['work_location'])}   # the run leases",
            "[sinks.iceberg_rest.catalog]",
            'type = "rest"',
            f"uri = {_q(rest['uri'])}",
        ]
    lines += [
        "",
        "[sinks.iceberg_sqlite]       # no server: pyiceberg's SQL catalog on a SQLite file",
        'type = "iceberg"',
        'catalog_name = "local_sqlite"',
        'namespace = "reports"',
        "[sinks.iceberg_sqlite.catalog]",
        'type = "sql"',
        f"uri = {_q('sqlite:///' + str(state.sqlite_dir / 'catalog.db'))}",
        f"warehouse = {_q((state.sqlite_dir / 'warehouse').as_uri())}",
    ]
    return "\n".join(lines) + "\n"


def env_sh(state: State) -> str:
    running = state.services
    lines = [
        f"# The throwaway credentials of the local servers of `bash scripts/services up` (state: {state.root}).",
        "# source this file; publish.toml next to it names the servers.",
    ]
    if "postgres" in running:
        lines.append(f"export PGPASSWORD={shlex.quote(running['postgres']['credentials']['password'])}")
    if "s3" in running:
        for name, value in sorted(running["s3"]["credentials"].items()):
            lines.append(f"export {name}={shlex.quote(value)}")
        lines.append("unset AWS_SESSION_TOKEN AWS_PROFILE  # another account's token or profile would override them")
    return "\n".join(lines) + "\n"


def write_outputs(state: State) -> None:
    if state.services:
        state.file_root.mkdir(parents=True, exist_ok=True)
        state.sqlite_dir.mkdir(parents=True, exist_ok=True)
        for path, text, what in (
            (state.config_path, publish_toml(state), "copy it again"),
            (state.env_path, env_sh(state), "source it again"),
        ):
            with contextlib.suppress(OSError):
                if path.read_text() != text:
                    say(f"{path.name} changed (new servers, ports or credentials): {what}")
            _write_private(path, text)
    else:
        state.config_path.unlink(missing_ok=True)
        state.env_path.unlink(missing_ok=True)


def print_outputs(state: State) -> None:
    print(f"# ---- {state.config_path} (copy it where you run atomic-publish) ----")
    print(state.config_path.read_text(), end="")
    print(f"# ---- {state.env_path}: `source {shlex.quote(str(state.env_path))}` ----")
    print(state.env_path.read_text(), end="", flush=True)


# -- the commands ---------------------------------------------------------------------------------------


def describe(record: Record) -> str:
    """pid, address (and the server's other ports), log."""
    address = record["address"]
    extra = [f"{k} port {v}" for k, v in record.get("ports", {}).items() if not address.endswith(f":{v}")]
    return f"pid {record['pid']}, {address}{' (' + ', '.join(extra) + ')' if extra else ''}, log {record['log']}"


def label(name: str, record: Record | None) -> str:
    if name == "s3" and record is not None:
        return f"s3 ({record['server']})"
    return name


def cmd_up(options: argparse.Namespace) -> int:
    root = state_dir()
    began = time.monotonic()
    with locked(root):
        say(f"state directory {root}")
        state = State(root)
        failures: list[str] = []
        for name in options.only:
            record = state.services.get(name)
            if record is not None:
                if alive(record) and answers(record):
                    say(f"{label(name, record)}: already running ({describe(record)})")
                    if name == "s3" and options.s3 not in ("auto", record["server"]):
                        say(f"s3: --s3 {options.s3} not applied: `down --only s3`, then `up --s3 {options.s3}`")
                    continue
                if alive(record):
                    failures.append(
                        f"{label(name, record)}: running but not answering ({describe(record)}); "
                        f"`bash scripts/services down --only {name}` then `up` again starts a fresh one"
                    )
                    say(failures[-1])
                    continue
                say(f"{label(name, record)}: found dead (was pid {record['pid']}); removing its data, starting anew")
                stop(record)
                remove_data(record)
                del state.services[name]
                state.save()
            with detached_processes() as started:
                try:
                    record = STARTERS[name](root, options)
                except BaseException as exc:
                    for process in reversed(started):
                        process.stop()
                    if name != "postgres":  # (Postgres' directory went with its process)
                        shutil.rmtree(root / name, ignore_errors=True)
                    if not isinstance(exc, ServiceError):
                        raise
                    failures.append(f"{name}: could not start: {exc}")
                    say(failures[-1])
                    continue
            state.services[name] = record
            state.save()  # at once: a later failure, or Ctrl-C, leaves this one recorded for `down`
            say(f"{label(name, record)}: ready in {record['startup_seconds']:.1f}s ({describe(record)})")
        write_outputs(state)
        if state.services:
            say(f"up in {time.monotonic() - began:.1f}s; `bash scripts/services status` lists them, `down` stops them")
            print_outputs(state)
        for failure in failures:
            say(f"FAILED {failure}")
        return 1 if failures else 0


def cmd_status(options: argparse.Namespace) -> int:
    root = state_dir()
    state = State(root)
    recorded = [name for name in options.only if name in state.services]
    all_running = bool(recorded)
    for name in options.only:
        record = state.services.get(name)
        if record is None:
            print(f"{name:20} not started")
            continue
        if not alive(record):
            print(f"{label(name, record):20} dead (was pid {record['pid']}, {record['address']}; log {record['log']})")
            all_running = False
        elif not answers(record):
            print(f"{label(name, record):20} running but not answering ({describe(record)})")
            all_running = False
        else:
            print(f"{label(name, record):20} running ({describe(record)})")
    if state.services:
        print(f"publish.toml: {state.config_path}\nenv.sh:       {state.env_path}")
    return 0 if all_running else 3


def cmd_down(options: argparse.Namespace) -> int:
    root = state_dir()
    if not root.exists():
        say(f"nothing to stop ({root} does not exist)")
        return 0
    began = time.monotonic()
    with locked(root):
        state = State(root)
        for name in reversed(options.only):
            record = state.services.get(name)
            if record is None:
                say(f"{name}: not started")
                continue
            say(
                f"{label(name, record)}: {stop(record)}; removing {', '.join(record.get('data_dirs', [])) or 'nothing'}"
            )
            remove_data(record)
            del state.services[name]
            state.save()
        if not state.services:  # everything is down: the serverless sinks' data goes too
            for directory in (state.file_root, state.sqlite_dir):
                shutil.rmtree(directory, ignore_errors=True)
        write_outputs(state)
        say(f"down in {time.monotonic() - began:.1f}s")
    return 0


def parse_only(value: str) -> list[str]:
    chosen = []
    for part in value.split(","):
        name = ALIASES.get(part.strip().lower(), part.strip().lower())
        if name not in SERVERS:
            raise argparse.ArgumentTypeError(f"unknown server {part.strip()!r}: choose from {', '.join(SERVERS)}")
        if name not in chosen:
            chosen.append(name)
    return [name for name in SERVERS if name in chosen]


def _stopped(signum: int, frame: object) -> None:
    say("stopped by SIGTERM; a server still starting is stopped, the ones already up stay recorded")
    sys.exit(143)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/services",
        description="Start (up), list (status) or stop (down) the local servers the tests use, on 127.0.0.1, "
        "detached: PostgreSQL, Apache Kafka, S3 (MinIO or moto), Apache Iceberg's REST catalog. "
        f"State: ${ENV_DIR}, else ~/.cache/atomic-publish/services. See docs/try-every-sink.md.",
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--only",
        type=parse_only,
        default=list(SERVERS),
        metavar="LIST",
        help=f"comma-separated subset of {','.join(SERVERS)} (default: all)",
    )
    parser.add_argument(
        "--s3",
        choices=("auto", "minio", "moto"),
        default="auto",
        help="up: the S3 server; auto (default): MinIO if scripts/fetch-minio has built it or can build it, else moto",
    )
    options = parser.parse_args(argv)
    # An orchestrator's stop (SIGTERM) unwinds like Ctrl-C: a server half-started is stopped, not left behind.
    signal.signal(signal.SIGTERM, _stopped)
    try:
        return {"up": cmd_up, "down": cmd_down, "status": cmd_status}[options.command](options)
    except ServiceError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
