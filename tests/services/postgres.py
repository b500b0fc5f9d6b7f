"""PostgreSQL for the tests: Debian's server binaries, a throwaway cluster on a free 127.0.0.1 port.

initdb refuses to run as root, so when the tests run as root the cluster belongs to the ``postgres``
OS user (created by Debian's package) and the server runs as that user; otherwise it runs as the
current user. Durability is switched off (fsync, full-page writes): the data is thrown away anyway.

Fault tests: a server started here as a local process can be killed and started again on the same
port and data directory: ``service.kill()`` (SIGKILL of the postmaster and every backend: a crash),
``service.start_again()`` (crash recovery replays the WAL), or ``service.restart()`` for both. Start
it with ``start_local_postgres(crash_safe=True)`` for that: only then does every acknowledged commit
survive a kill (see there). ``service.proxied()`` puts a ``FaultProxy`` (tests/faults/proxy.py) in
front of any server and gives a DSN through it.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._process import ServiceError, ServiceProcess, free_port

if TYPE_CHECKING:
    from ..faults.proxy import FaultProxy

ENV_DSN = "ATOMIC_PUBLISH_TEST_POSTGRES_DSN"


@dataclass
class PostgresService:
    dsn: str
    origin: str
    process: ServiceProcess | None = None
    startup_seconds: float | None = None
    ready: Callable[[], bool] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    # -- fault injection -----------------------------------------------------------------------------

    def _local_process(self) -> ServiceProcess:
        if self.process is None or self.ready is None:
            raise ServiceError(
                f"the Postgres server at {self.dsn.split('@')[-1]} ({self.origin}) was not started by the "
                "harness as a local process: it cannot be killed or restarted from a test"
            )
        return self.process

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (one process group) and wait for them: a crash, no
        shutdown checkpoint. The port and the data directory stay as they are for ``start_again``."""
        self._local_process().kill()

    def start_again(self, timeout: float = 60.0) -> float:
        """Start the killed (or stopped) server again with the same command line: same port, same data
        directory, same password. It replays its WAL first. Returns the seconds until it answered."""
        process = self._local_process()
        if process.alive():
            raise ServiceError(f"{process.name} is still running (pid {process.pid}): kill() it first")
        process.start()
        assert self.ready is not None
        return process.wait_ready(self.ready, timeout, f"{process.name} started again at {self.dsn.split('@')[-1]}")

    def restart(self, timeout: float = 60.0) -> float:
        """``kill()`` then ``start_again()``."""
        self.kill()
        return self.start_again(timeout)

    def proxied(self, name: str = "postgres-proxy") -> tuple[FaultProxy, str]:
        """A started ``FaultProxy`` in front of this server, and a DSN through it (same user, password
        and database; ``sslmode=disable`` so the proxy sees the plaintext protocol). The caller stops
        the proxy (it is also a context manager)."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        from ..faults.proxy import FaultProxy

        params = conninfo_to_dict(self.dsn)
        host = str(params.get("host") or params.get("hostaddr") or "")
        if not host or host.startswith("/") or "," in host or "," in str(params.get("port", "")):
            raise ServiceError(f"cannot proxy {self.dsn.split('@')[-1]}: it does not name one TCP host and port")
        proxy = FaultProxy(host, int(params.get("port") or 5432), name=name).start()
        params.pop("hostaddr", None)
        params.update(host="127.0.0.1", port=str(proxy.port), sslmode="disable")
        return proxy, make_conninfo(**params)

    def dsn_for(self, dbname: str) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self.dsn)
        params["dbname"] = dbname
        return make_conninfo(**params)

    def create_database(self, name: str) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)


def server_bin_dir() -> Path:
    """The newest Debian PostgreSQL server >= 15 (MERGE needs 15)."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    found = [p for p in found if p.parent.name.isdigit() and int(p.parent.name) >= 15]
    if not found:
        raise ServiceError(
            "PostgreSQL server binaries (>= 15) not found under /usr/lib/postgresql/*/bin: "
            "run `bash scripts/bootstrap-services` (it does apt-get install postgresql), or set "
            f"{ENV_DSN} to a running server"
        )
    return found[-1]


def start_local_postgres(timeout: float = 60.0, *, crash_safe: bool = False) -> PostgresService:
    """A throwaway cluster. ``crash_safe=True`` (for fault tests that ``kill()`` it) commits
    synchronously: with the default ``synchronous_commit=off`` a commit acknowledged in the last
    ~200 ms (the WAL writer's delay) is still in shared memory and a SIGKILL loses it. fsync stays
    off either way: WAL written to the OS survives the death of the server's processes."""
    started = time.monotonic()
    bin_dir = server_bin_dir()
    as_root = os.geteuid() == 0
    uid = gid = None
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError("running as root, but there is no `postgres` OS user to own the cluster") from None
        uid, gid = owner.pw_uid, owner.pw_gid
    base = Path(tempfile.mkdtemp(prefix="atomic-publish-pg-"))
    data, sockets = base / "data", base / "sockets"
    sockets.mkdir()
    password = secrets.token_urlsafe(16)
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if as_root:
        for path in (base, sockets, pwfile):
            os.chown(path, uid, gid)  # type: ignore[arg-type]
        os.chmod(base, 0o700)

    def as_owner() -> None:
        if gid is not None and uid is not None:
            os.setgid(gid)
            os.setuid(uid)

    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
        ],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=as_owner,
    )
    pwfile.unlink()
    if init.returncode != 0:
        raise ServiceError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    port = free_port()
    process = ServiceProcess(
        "postgres",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={sockets}",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            f"synchronous_commit={'on' if crash_safe else 'off'}",
            "-c",
            "max_prepared_transactions=10",
            "-c",
            "max_connections=100",
        ],
        base / "postgres.log",
        uid=uid,
        gid=gid,
        stop_signal=signal.SIGINT,  # "fast" shutdown: abort sessions, stop at once
        remove_after=base,
    )
    if as_root:
        (base / "postgres.log").touch()
        os.chown(base / "postgres.log", uid, gid)  # type: ignore[arg-type]
    process.start()
    dsn = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    process.wait_ready(ready, timeout, f"server on 127.0.0.1:{port}")
    return PostgresService(dsn, "local", process, time.monotonic() - started, ready=ready)
