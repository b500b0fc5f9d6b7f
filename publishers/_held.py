"""A run held for a driver that lives in other processes: the shape an engine needs (Spark, Ray).

An engine plans a write in one process, runs its tasks in others and commits in yet another (Spark
calls a Python data source's ``writer()``, each task's ``write()`` and the job's ``commit()`` in
separate Python workers). None of them lives from the start of the job to its end, so none can hold
the run's lock, which is the evidence that tells ``diagnose`` a run is RUNNING rather than ORPHANED.

``hold_run`` starts a small *holder* process (``python -m atomic_publish.publishers._held``) on the driver's host.
The holder does what a single-process publish does before staging (``begin_run``: take the run's
lock or lease, check the run's state under it, refuse a published or running run), then waits for
exactly one request over a local socket: ``commit(parts)`` (the driver's one commit of the parts its
tasks staged; a proven refusal removes every staging of the attempt, an unknown outcome removes
nothing) or ``abort()`` (remove every staging of the attempt). It also watches the process it was
started for (the engine's driver): when that dies without a request, no commit can come any more
(only this holder can commit the attempt), so it removes the attempt's staging and exits, exactly
as a publish stopped by SIGTERM does. A holder killed itself leaves what a killed publish leaves:
the attempt's staging, with no live holder, which ``diagnose`` names ORPHANED and ``recover`` removes.

The socket is a Unix socket in a private directory (0700) with a random key: only processes of the
same user on the driver's host that were given the ``HeldRun`` can talk to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import _errors
from ._errors import AtomicPublishError, CommitOutcomeUnknown, DestinationUnavailable
from ._types import Run, Staged, parse_run_date

log = logging.getLogger("atomic_publish.held")

# How long the planner waits for the holder to take the run (its lock, its checks).
_READY_SECONDS = 300.0
# How often the holder looks at the driver's pid while it waits.
_WATCH_SECONDS = 0.5
# After an abort, the attempt's staging is removed again once a second for this many seconds.
_SETTLE_ROUNDS = 5


@dataclasses.dataclass(frozen=True)
class HeldRun:
    """The handle of a held run: picklable, shipped with an engine's plan to the process that commits.

    ``skipped`` is set (the holder has exited) when the run was already published and ``if_absent``.
    """

    run: Run
    address: str
    authkey: bytes
    skipped: dict[str, Any] | None = None

    def commit(self, staged: list[Staged]) -> dict[str, Any]:
        """Commit these parts (one staging of each) as the run; returns the result (``PublishResult.to_dict``).
        Raises what the commit raised (CommitRejected and its kinds, CommitOutcomeUnknown)."""
        if self.skipped is not None:
            return self.skipped
        return self._request({"op": "commit", "parts": [s.to_json() for s in staged]}, during_commit=True)

    def abort(self) -> None:
        """Give the run up: every staging of the attempt is removed, the lock released."""
        if self.skipped is not None:
            return
        try:
            self._request({"op": "abort"}, during_commit=False)
        except (_errors.CommitAborted, DestinationUnavailable, OSError, EOFError) as exc:
            # The holder is gone (killed, or it saw its driver die and removed the staging itself,
            # or it closed its socket as we connected): what is left, if anything, has no live
            # holder and is the diagnosis's to name. Never raised over the error that led here.
            log.warning("%s", exc)

    def _request(self, request: dict[str, Any], *, during_commit: bool) -> dict[str, Any]:
        from multiprocessing.connection import Client

        try:
            conn = Client(self.address, family="AF_UNIX", authkey=self.authkey)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            # Nobody listens: the holder is gone (killed, or it saw the driver die), so no commit
            # was sent. Not a proof that the staging is gone: the diagnosis tells.
            self._forget_workdir()
            raise _errors.CommitAborted(
                f"the holder of run {self.run.run_id} (attempt {self.run.attempt}) is gone ({exc.__class__.__name__}): "
                "nothing was committed; run `atomic-publish diagnose`"
            ) from None
        with conn:
            conn.send(request)
            try:
                reply = conn.recv()
            except (EOFError, OSError) as exc:
                self._forget_workdir()
                if during_commit:
                    raise CommitOutcomeUnknown(
                        f"the holder of run {self.run.run_id} (attempt {self.run.attempt}) died during the commit "
                        f"({exc.__class__.__name__}); the commit may have landed: run `atomic-publish diagnose`"
                    ) from None
                raise DestinationUnavailable(f"the holder of run {self.run.run_id} died ({exc})") from None
        if "error" in reply:
            raise _rebuild(reply["error"])
        return dict(reply.get("result") or {})

    def _forget_workdir(self) -> None:
        """The holder is gone: remove its private directory (its socket), which a holder that was
        killed could not (seen: one ``ap-held-*`` left in /tmp per holder killed)."""
        workdir = Path(self.address).parent
        if workdir.name.startswith("ap-held-"):
            shutil.rmtree(workdir, ignore_errors=True)


def _describe(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": _errors.first_line(exc)}


def _rebuild(doc: dict[str, Any]) -> AtomicPublishError:
    """The holder's error as the same class of the one exception tree (AtomicPublishError if not one)."""
    cls = getattr(_errors, str(doc.get("type")), None)
    message = str(doc.get("message", ""))
    if isinstance(cls, type) and issubclass(cls, AtomicPublishError):
        return cls(message)
    return AtomicPublishError(f"{doc.get('type')}: {message}")


def refuse_single_part_sinks(definition: Any, engine: str) -> None:
    """A sink that cannot take a run staged in parts is refused on the driver, before any task runs;
    the message names the sinks that can (every registered sink whose definition declares it)."""
    limit = definition.capabilities.max_parts
    if limit is not None and limit < 2:
        from . import registry

        able = []
        for name in registry.available():
            with contextlib.suppress(_errors.AtomicPublishError):  # an extra not installed: not offered
                if registry.load(name).capabilities.max_parts != 1:
                    able.append(name)
        raise _errors.CommitRejected(
            f"the {definition.name} sink cannot take a run staged by several {engine} tasks (it takes a run in "
            f"one piece: Capabilities.max_parts = 1); publish through one of: {', '.join(able)}"
        )


def driver_pid() -> int:
    """The pid of the JVM above this Python worker (Spark: worker <- pyspark.daemon <- java), found
    by walking up the process tree; else the parent's. The holder lives as long as it does."""
    pid = os.getppid()
    for _ in range(8):
        if pid <= 1:
            break
        name = _process_name(pid)
        if name == "java":
            return pid
        parent = _parent_pid(pid)
        if parent is None:
            break
        pid = parent
    return os.getppid()


def _process_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:  # no /proc (macOS): the walk stops, the parent is watched (pyspark.daemon ends with the JVM)
        return None


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def hold_run(
    *,
    dataset: str,
    run_date: str,
    sink: str | None,
    config: str | None,
    if_absent: bool = False,
    watch_pid: int | None = None,
) -> HeldRun:
    """Start the holder of a new attempt of run ``dataset``/``run_date`` and return once it holds the
    run (or raise what refused it: AlreadyPublished, RunInProgress, RecoveryNeeded, ConfigError, ...).
    ``watch_pid``: the process whose death ends the hold (default: this process's driver_pid())."""
    workdir = Path(tempfile.mkdtemp(prefix="ap-held-"))  # 0700; a short path (Unix sockets: 108 bytes)
    address = str(workdir / "s")
    authkey = secrets.token_bytes(32)
    request = {
        "dataset": dataset,
        "run_date": run_date,
        "sink": sink,
        "config": config,
        "if_absent": if_absent,
        "address": address,
        "authkey": authkey.hex(),
        "watch_pid": watch_pid if watch_pid is not None else driver_pid(),
        "workdir": str(workdir),
    }
    # Its log lines go where the engine's worker's do (Spark: the driver's log).
    proc = subprocess.Popen(
        [sys.executable, "-m", "atomic_publish.publishers._held"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,  # not in the engine's process group: a Ctrl-C there is the driver's
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.close()
    line = _read_line(proc, _READY_SECONDS)
    proc.stdout.close()
    if not line:
        shutil.rmtree(workdir, ignore_errors=True)
        raise DestinationUnavailable(
            f"the holder of {dataset}/{run_date} did not report within {_READY_SECONDS:g} s (exit "
            f"{proc.poll()}; its log is in the driver's)"
        )
    doc = json.loads(line)
    if "error" in doc:
        proc.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)
        raise _rebuild(doc["error"])
    run = Run(dataset, parse_run_date(run_date), doc["attempt"])
    if doc.get("skipped") is not None:
        proc.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)
    return HeldRun(run, address, authkey, doc.get("skipped"))


def _read_line(proc: subprocess.Popen[bytes], seconds: float) -> bytes:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(seconds):
            proc.kill()
            return b""
    return proc.stdout.readline()


# -- the holder process ---------------------------------------------------------------------------


def _serve(request: dict[str, Any]) -> int:
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Listener

    from ._publish import begin_run, resolve_config

    out = sys.stdout
    workdir = Path(request["workdir"])
    watch_pid = int(request["watch_pid"])

    def say(doc: dict[str, Any]) -> None:
        out.write(json.dumps(doc) + "\n")
        out.flush()

    try:
        definition, options = resolve_config(request["config"]).sink(request["sink"])
        publisher, diagnostic = definition.make_publisher(options), definition.make_diagnostic(options)
        run = Run.new(request["dataset"], request["run_date"])
        listener = Listener(request["address"], family="AF_UNIX", authkey=bytes.fromhex(request["authkey"]))
    except Exception as exc:
        say({"error": _describe(exc)})
        return 2
    answer: Any = None  # the connection of the commit request, answered once the run is settled
    try:
        with begin_run(publisher, diagnostic, run, if_absent=bool(request["if_absent"])) as job:
            if job.skipped is not None:
                say({"attempt": run.attempt, "skipped": job.skipped.to_dict()})
                return 0
            say({"attempt": run.attempt, "skipped": None})
            log.info("holding %s (attempt %s) for driver pid %s", run.run_id, run.attempt, watch_pid)
            _watch(watch_pid, request["address"], bytes.fromhex(request["authkey"]))
            while answer is None:
                try:
                    conn = listener.accept()
                except (OSError, AuthenticationError) as exc:  # a stranger at the socket changes nothing
                    log.warning("refused a connection to the holder: %s", exc)
                    continue
                message = _receive(conn)
                if message.get("op") == "driver-gone":
                    log.warning(
                        "the driver (pid %s) is gone without committing %s: removing the attempt's staging",
                        watch_pid,
                        run.run_id,
                    )
                    job.abort()
                    _settle(publisher, run)
                    return 3
                if message.get("op") == "abort":
                    with conn:
                        job.abort()
                        _settle(publisher, run)
                        conn.send({"result": {}})
                    return 0
                if message.get("op") == "commit":
                    answer = conn
                    result = job.commit([Staged.from_json(text) for text in message["parts"]])
                else:
                    conn.close()
        # Answered after begin_run has finished (a multi-part commit then tidies the attempt's
        # unused parts): when the engine's commit returns, the run is settled.
        with answer:
            answer.send({"result": result.to_dict()})
    except BaseException as exc:
        for send in (answer.send if answer is not None else None, say):
            if send is not None:
                with contextlib.suppress(Exception):
                    send({"error": _describe(exc)})
        log.error("%s", _errors.first_line(exc))
        return 1
    finally:
        listener.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _settle(publisher: Any, run: Run) -> None:
    """Remove the attempt's staging again for a few seconds after giving it up: the tasks an engine
    cancels with a failed job stop asynchronously, and one may finish staging its part after the
    abort (seen with Spark: a whole part uploaded a second after abort() was called). The run stays
    held meanwhile (RUNNING, which it is). A task later still leaves a staging of a dead attempt:
    ORPHANED, named by the diagnosis, removed by recover."""
    for _ in range(_SETTLE_ROUNDS):
        time.sleep(1.0)
        try:
            publisher.discard(run, [])
        except Exception as exc:
            log.warning("could not remove the staging of attempt %s (%s); `diagnose` will name it", run.attempt, exc)
            return


def _receive(conn: Any) -> dict[str, Any]:
    try:
        message = conn.recv()
    except (EOFError, OSError):
        return {}
    return message if isinstance(message, dict) else {}


def _watch(pid: int, address: str, authkey: bytes) -> None:
    """A thread that tells the holder (through its own socket) once ``pid`` is gone."""
    from multiprocessing.connection import Client

    def watch() -> None:
        from ._lease import pid_alive

        while pid_alive(pid):
            time.sleep(_WATCH_SECONDS)
        with contextlib.suppress(OSError), Client(address, family="AF_UNIX", authkey=authkey) as conn:
            conn.send({"op": "driver-gone"})

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    request = json.loads(sys.stdin.readline())
    return _serve(request)


if __name__ == "__main__":
    sys.exit(main())
