"""A TCP fault-injection proxy for the fault test suite (stdlib only, listens on 127.0.0.1 only).

``FaultProxy(host, port).start()`` forwards every connection made to ``proxy.address`` to the upstream
server, on an asyncio event loop running in a daemon thread. A test adds rules from its own thread::

    rule = proxy.add_rule(KafkaApiKey(26), ANSWER_LOST)   # the next EndTxn's answer never arrives

A rule is a matcher on the client->server byte stream of one connection (``Contains``, ``Regex``,
``KafkaApiKey``, ``Anything`` or any ``Callable[[bytes], bool]`` called with each chunk read) and an
action (``ANSWER_LOST``, ``RESET_AFTER_REQUEST``, ``DROP_REQUEST``, ``RESET_BEFORE_REQUEST``,
``Stall(seconds)``, ``Delay(seconds)``). Matchers only see bytes read after the rule was added and
find matches split across reads. A rule applies to the next ``times`` matches (``None``: every
match), then retires; the action applies on that one connection from the first matched byte on
(bytes before it in the same read are forwarded normally). ``rule.triggered`` is set at the first
match, ``rule.released`` once a stall of that rule has written its held bytes to the server.
A stalled request is delivered even if its client has gone away meanwhile (a "zombie" request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import re
import socket
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

__all__ = [
    "ANSWER_LOST",
    "DROP_REQUEST",
    "RESET_AFTER_REQUEST",
    "RESET_BEFORE_REQUEST",
    "Action",
    "Anything",
    "Chunk",
    "Contains",
    "Delay",
    "Fault",
    "FaultProxy",
    "KafkaApiKey",
    "MatchSession",
    "MatchSpec",
    "Matcher",
    "ProxyStats",
    "Regex",
    "Rule",
    "Stall",
]

_HOST = "127.0.0.1"  # the only address the proxy ever listens on
_READ_SIZE = 65536
_CALL_TIMEOUT = 10.0  # seconds a public method waits for the loop thread

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


# -- matchers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One read of client->server bytes, as a matcher sees it."""

    data: bytes
    first: bool  # the first client bytes of the connection
    # (offset in ``data`` where the frame begins, 0 if it began in an earlier read; api_key) for every
    # Kafka request frame whose header (size + api_key) completed in this read
    kafka_frames: tuple[tuple[int, int], ...] = ()


class MatchSession(Protocol):
    """A matcher's state on one connection."""

    def feed(self, chunk: Chunk) -> int | None:
        """The offset in ``chunk.data`` where the matched bytes begin (0 if they began earlier), or None."""
        ...


class Matcher(ABC):
    """Makes one ``MatchSession`` per connection, the first time the connection's bytes are checked."""

    @abstractmethod
    def session(self) -> MatchSession: ...


class Contains(Matcher):
    """The bytes appear in the client->server stream, possibly split across reads."""

    def __init__(self, needle: bytes) -> None:
        if not needle:
            raise ValueError("Contains needs at least one byte")
        self.needle = bytes(needle)

    def session(self) -> MatchSession:
        return _ContainsSession(self.needle)

    def __repr__(self) -> str:
        return f"Contains({self.needle!r})"


class _ContainsSession:
    def __init__(self, needle: bytes) -> None:
        self._needle = needle
        self._tail = b""  # the last len(needle)-1 bytes already seen

    def feed(self, chunk: Chunk) -> int | None:
        buf = self._tail + chunk.data
        keep = len(self._needle) - 1
        idx = buf.find(self._needle)
        if idx < 0:
            self._tail = buf[len(buf) - keep :] if keep else b""
            return None
        rest = buf[idx + len(self._needle) :]
        self._tail = rest[len(rest) - keep :] if keep else b""
        return max(0, idx - (len(buf) - len(chunk.data)))


class Regex(Matcher):
    """A regular expression matches the client->server stream; ``window`` bytes of earlier reads are kept."""

    def __init__(self, pattern: bytes | re.Pattern[bytes], *, window: int = 4096) -> None:
        self.pattern: re.Pattern[bytes] = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        self.window = window

    def session(self) -> MatchSession:
        return _RegexSession(self.pattern, self.window)

    def __repr__(self) -> str:
        return f"Regex({self.pattern.pattern!r})"


class _RegexSession:
    def __init__(self, pattern: re.Pattern[bytes], window: int) -> None:
        self._pattern = pattern
        self._window = window
        self._tail = b""

    def feed(self, chunk: Chunk) -> int | None:
        buf = self._tail + chunk.data
        old = len(buf) - len(chunk.data)
        for m in self._pattern.finditer(buf):
            if m.end() > old:  # a match wholly inside the tail was already seen (or was not there)
                rest = buf[m.end() :]
                self._tail = rest[max(0, len(rest) - self._window) :]
                return max(0, m.start() - old)
        self._tail = buf[max(0, len(buf) - self._window) :]
        return None


class KafkaApiKey(Matcher):
    """The client sends a Kafka request frame with this api_key (EndTxn 26, AddPartitionsToTxn 24, Produce 0).

    Frames are parsed per connection from its first byte (int32 size, int16 api_key, ...), so a
    header split across reads, several frames in one read, and look-alike bytes inside a frame's
    body are all handled.
    """

    def __init__(self, api_key: int) -> None:
        self.api_key = api_key

    def session(self) -> MatchSession:
        return _KafkaSession(self.api_key)

    def __repr__(self) -> str:
        return f"KafkaApiKey({self.api_key})"


class _KafkaSession:
    def __init__(self, api_key: int) -> None:
        self._api_key = api_key

    def feed(self, chunk: Chunk) -> int | None:
        for offset, api_key in chunk.kafka_frames:
            if api_key == self._api_key:
                return offset
        return None


class Anything(Matcher):
    """The first client bytes of a connection (the rule must be in force when the proxy reads them).

    With ``new_connections_only=False``: the next client bytes on any connection, new or already open.
    """

    def __init__(self, *, new_connections_only: bool = True) -> None:
        self.new_connections_only = new_connections_only

    def session(self) -> MatchSession:
        return _AnythingSession(self.new_connections_only)

    def __repr__(self) -> str:
        return "Anything()" if self.new_connections_only else "Anything(new_connections_only=False)"


class _AnythingSession:
    def __init__(self, new_connections_only: bool) -> None:
        self._new_only = new_connections_only

    def feed(self, chunk: Chunk) -> int | None:
        return 0 if chunk.first or not self._new_only else None


class _CallableMatcher(Matcher):
    def __init__(self, fn: Callable[[bytes], bool]) -> None:
        self.fn = fn

    def session(self) -> MatchSession:
        return _CallableSession(self.fn)

    def __repr__(self) -> str:
        return f"Callable({self.fn!r})"


class _CallableSession:
    def __init__(self, fn: Callable[[bytes], bool]) -> None:
        self._fn = fn

    def feed(self, chunk: Chunk) -> int | None:
        return 0 if self._fn(chunk.data) else None


MatchSpec = Matcher | Callable[[bytes], bool]


class _KafkaFrames:
    """Follows the Kafka request frames of one connection's client->server stream."""

    def __init__(self) -> None:
        self._skip = 0  # body bytes of the current frame still to pass over
        self._header = bytearray()  # size + api_key of the next frame, as far as read
        self._broken = False  # the stream is not Kafka (a size that no Kafka request has)

    def feed(self, data: bytes) -> tuple[tuple[int, int], ...]:
        if self._broken:
            return ()
        frames: list[tuple[int, int]] = []
        i, n = 0, len(data)
        start = 0
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            if not self._header:
                start = i
            take = data[i : i + 6 - len(self._header)]
            self._header += take
            i += len(take)
            if len(self._header) == 6:
                size, api_key = struct.unpack(">ih", self._header)
                self._header.clear()
                if size < 8 or size > 1 << 30:  # api_key, api_version, correlation_id at least
                    self._broken = True
                    break
                frames.append((start, api_key))
                self._skip = size - 2
        return tuple(frames)


# -- actions ---------------------------------------------------------------------------------------


class Fault(enum.Enum):
    ANSWER_LOST = "answer_lost"
    """Forward the request; drop every server->client byte from the match on; the client stays open and silent."""
    RESET_AFTER_REQUEST = "reset_after_request"
    """Forward the request; when the server's first bytes come back, reset (RST) the client instead."""
    DROP_REQUEST = "drop_request"
    """Discard client->server bytes from the match on; the client stays open and silent."""
    RESET_BEFORE_REQUEST = "reset_before_request"
    """RST the client and close the server side; the matched bytes are not forwarded."""


ANSWER_LOST = Fault.ANSWER_LOST
RESET_AFTER_REQUEST = Fault.RESET_AFTER_REQUEST
DROP_REQUEST = Fault.DROP_REQUEST
RESET_BEFORE_REQUEST = Fault.RESET_BEFORE_REQUEST


@dataclass(frozen=True)
class Stall:
    """Hold client->server bytes from the match on until ``seconds`` pass or ``release()``, whichever first.

    The held bytes are delivered even if the client has gone away meanwhile; then the server side
    is closed as soon as the server answers (the answer is dropped) or closes, at most
    ``zombie_linger`` seconds later. ``rule.settled`` says the server answered or closed.
    """

    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.seconds is not None and self.seconds < 0:
            raise ValueError("Stall seconds must be >= 0")


@dataclass(frozen=True)
class Delay:
    """Delay every chunk, both directions, from the match on by ``seconds`` (order is kept)."""

    seconds: float

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError("Delay seconds must be >= 0")


Action = Fault | Stall | Delay


class Rule:
    """A matcher and an action; see ``FaultProxy.add_rule``. Identity-hashed."""

    def __init__(self, match: MatchSpec, action: Action, times: int | None) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None for every match)")
        if not isinstance(action, Fault | Stall | Delay):
            raise TypeError(f"not an action: {action!r}")
        self.matcher: Matcher = match if isinstance(match, Matcher) else _CallableMatcher(match)
        self.action: Action = action
        self.times = times
        self.hits = 0  # matches applied so far (written on the loop thread only)
        self.triggered = threading.Event()  # set at the first match
        self.released = threading.Event()  # set once a stall of this rule wrote its held bytes to the server
        # set once the held request is settled: the server answered it or closed the connection after
        # it was delivered, or the server side was gone before it could be (it never will be); a test
        # waits for this, never for a fixed time
        self.settled = threading.Event()

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def __repr__(self) -> str:
        times = "every" if self.times is None else self.times
        return f"Rule({self.matcher!r}, {self.action!r}, times={times}, hits={self.hits})"


@dataclass(frozen=True)
class ProxyStats:
    connections_accepted: int
    connections_open: int
    stalls_held: int  # connections whose client->server bytes are held right now
    stalls_orphaned: int  # of those, how many lost their client (held bytes will still be delivered)
    rule_hits: dict[Rule, int] = field(default_factory=dict)  # every rule ever added, also cleared ones


# -- the proxy -------------------------------------------------------------------------------------


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Sender:
    """Writes one direction in order, each item no earlier than its due time (for Delay)."""

    def __init__(self, writer: asyncio.StreamWriter, on_failure: Callable[[], None]) -> None:
        self._writer = writer
        self._on_failure = on_failure
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[float, bytes | Callable[[], None]]] = asyncio.Queue()
        self.failed = False
        self.task = self._loop.create_task(self._run())

    def send(self, data: bytes, delay: float) -> None:
        self._queue.put_nowait((self._loop.time() + delay, data))

    def call(self, fn: Callable[[], None], delay: float) -> None:
        """Run ``fn`` once everything queued before it has been written."""
        self._queue.put_nowait((self._loop.time() + delay, fn))

    async def _run(self) -> None:
        while True:
            due, item = await self._queue.get()
            wait = due - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not isinstance(item, bytes):
                item()
                continue
            if self.failed:
                continue
            try:
                if self._writer.is_closing():
                    raise ConnectionResetError("closed")
                self._writer.write(item)
                await self._writer.drain()
            except (ConnectionError, OSError):
                self.failed = True
                self._on_failure()


class _Mode(enum.Enum):
    NORMAL = "normal"
    ANSWER_LOST = "answer_lost"
    RESET_AFTER = "reset_after"
    DROP = "drop"
    DEAD = "dead"


@dataclass
class _Held:
    rule: Rule
    data: bytearray
    timer: asyncio.TimerHandle | None = None


class _Conn:
    """One client connection and its upstream connection; lives on the loop thread only."""

    def __init__(
        self,
        proxy: FaultProxy,
        cid: int,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.cid = cid
        self.c_reader, self.c_writer = client
        self.s_reader, self.s_writer = server
        self.loop = asyncio.get_running_loop()
        self.mode = _Mode.NORMAL
        self.delay = 0.0
        self.stall: _Held | None = None
        self.released_rule: Rule | None = None  # the rule whose held bytes this connection delivered
        self.client_gone = False
        self.server_gone = False
        self.closed = False
        self.first = True
        self.kafka = _KafkaFrames()
        self.sessions: dict[Rule, MatchSession] = {}
        self.done = asyncio.Event()
        self.to_server = _Sender(self.s_writer, self._server_write_failed)
        self.to_client = _Sender(self.c_writer, self._client_write_failed)
        self.tasks = [
            self.to_server.task,
            self.to_client.task,
            self.loop.create_task(self._pump_client()),
            self.loop.create_task(self._pump_server()),
        ]

    def _debug(self, msg: str, *args: object) -> None:
        _log.debug("%s#%d: " + msg, self.proxy.name, self.cid, *args)

    async def run(self) -> None:
        try:
            await self.done.wait()
        finally:
            self.close()

    # -- client -> server

    async def _pump_client(self) -> None:
        while True:
            try:
                data = await self.c_reader.read(_READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self._client_left()
                return
            self._on_client_data(data)

    def _on_client_data(self, data: bytes) -> None:
        if self.closed:
            return
        chunk = Chunk(data, self.first, self.kafka.feed(data))
        self.first = False
        if self.stall is None and self.mode is _Mode.NORMAL:
            hit = self.proxy._match(self, chunk)
            if hit is not None:
                rule, offset = hit
                offset = min(max(offset, 0), len(data))
                if offset:
                    self._forward(data[:offset])
                self._apply(rule, data[offset:])
                rule.triggered.set()
                return
        self._forward(data)

    def _forward(self, data: bytes) -> None:
        if self.stall is not None:
            self.stall.data += data
        elif self.mode in (_Mode.DROP, _Mode.DEAD) or self.server_gone or self.closed:
            return
        else:
            self.to_server.send(data, self.delay)

    def _apply(self, rule: Rule, rest: bytes) -> None:
        action = rule.action
        self._debug("%r matched", rule)
        if action is Fault.ANSWER_LOST:
            self.mode = _Mode.ANSWER_LOST
            self._forward(rest)
        elif action is Fault.RESET_AFTER_REQUEST:
            self.mode = _Mode.RESET_AFTER
            self._forward(rest)
        elif action is Fault.DROP_REQUEST:
            self.mode = _Mode.DROP
        elif action is Fault.RESET_BEFORE_REQUEST:
            self.mode = _Mode.DEAD
            self._reset_client()
            self.to_server.call(self.close, self.delay)  # bytes before the match still go first
        elif isinstance(action, Stall):
            self.stall = _Held(rule, bytearray(rest))
            if action.seconds is not None:
                self.stall.timer = self.loop.call_later(action.seconds, self.release_stall)
        elif isinstance(action, Delay):
            self.delay = action.seconds
            self._forward(rest)

    def release_stall(self) -> None:
        held, self.stall = self.stall, None
        if held is None:
            return
        if held.timer is not None:
            held.timer.cancel()
        if self.closed or self.server_gone:
            self._debug("stall of %r discarded: server side gone", held.rule)
            held.rule.settled.set()  # the held request can never reach the server now
            return
        self._debug("releasing %d held bytes (client %s)", len(held.data), "gone" if self.client_gone else "here")
        if held.data:
            self.to_server.send(bytes(held.data), self.delay)

        def written() -> None:
            if not self.to_server.failed:
                held.rule.released.set()
                self.released_rule = held.rule
            if self.client_gone:  # a zombie request: give the server a moment to take it, then hang up
                self.loop.call_later(self.proxy.zombie_linger, self.close)

        self.to_server.call(written, self.delay)

    def _client_left(self) -> None:
        if self.client_gone or self.closed:
            return
        self.client_gone = True
        if self.stall is not None:  # keep the server side: the held bytes will still be delivered
            self._debug("client left with held bytes")
            self.c_writer.close()
        elif self.mode in (_Mode.DROP, _Mode.DEAD) or self.server_gone:
            self.close()
        else:
            self.to_server.call(self.close, self.delay)

    def _client_write_failed(self) -> None:
        self._client_left()

    def _reset_client(self) -> None:
        self.client_gone = True
        _rst(self.c_writer)

    # -- server -> client

    async def _pump_server(self) -> None:
        while True:
            try:
                data = await self.s_reader.read(_READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self._server_left()
                return
            self._on_server_data(data)

    def _on_server_data(self, data: bytes) -> None:
        if self.released_rule is not None:
            self.released_rule.settled.set()
            if self.client_gone:  # the zombie request's answer, which nobody reads: hang up now
                self.close()
                return
        if self.closed:
            return
        if self.mode is _Mode.RESET_AFTER:
            self._debug("server answered: resetting the client")
            self.mode = _Mode.DEAD
            self._reset_client()
            self.close()
            return
        if self.mode in (_Mode.ANSWER_LOST, _Mode.DROP, _Mode.DEAD) or self.client_gone:
            return
        self.to_client.send(data, self.delay)

    def _server_left(self) -> None:
        if self.released_rule is not None:
            self.released_rule.settled.set()
        if self.server_gone or self.closed:
            return
        self.server_gone = True
        if self.stall is not None:
            self._debug("server left while bytes were held: they are discarded")
            if self.stall.timer is not None:
                self.stall.timer.cancel()
            self.stall.rule.settled.set()  # the held request can never reach the server now
            self.stall = None
        if self.client_gone:
            self.close()
        elif self.mode in (_Mode.ANSWER_LOST, _Mode.DROP):
            return  # the client stays open and silent
        else:
            self.to_client.call(self.close, self.delay)

    def _server_write_failed(self) -> None:
        self._server_left()

    # -- both

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.stall is not None:
            if self.stall.timer is not None:
                self.stall.timer.cancel()
            self.stall.rule.settled.set()  # closed with the request held: it never reaches the server
        self.stall = None
        self.c_writer.close()
        self.s_writer.close()
        for task in self.tasks:  # the current one too: it stops at its next await
            task.cancel()
        self.done.set()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 that injects faults by rule; see the module docstring."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_port: int = 0,
        name: str = "proxy",
        zombie_linger: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.port = listen_port
        self.zombie_linger = zombie_linger
        self.connect_timeout = connect_timeout
        self._upstream = (upstream_host, upstream_port)
        self._listen_port = listen_port
        self._rules: list[Rule] = []  # active rules, in the order added
        self._all_rules: list[Rule] = []
        self._conns: set[_Conn] = set()
        self._accepted = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._stopped = False

    @property
    def address(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def upstream(self) -> tuple[str, int]:
        return self._upstream

    # -- lifecycle

    def start(self) -> FaultProxy:
        with self._lock:
            if self._thread is not None or self._stopped:
                raise RuntimeError(f"{self.name}: start() may be called once")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=f"fault-proxy-{self.name}", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        try:
            server = self._submit(asyncio.start_server(self._handle, _HOST, self._listen_port))
        except BaseException:
            self._stop_loop()
            raise
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        _log.debug("%s: listening on %s, upstream %s:%d", self.name, self.address, *self._upstream)
        return self

    def stop(self) -> None:
        """Close the listener and every connection (held bytes are discarded); the thread ends. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if self._loop is None:
                return
        try:
            self._submit(self._shutdown())
        finally:
            self._stop_loop()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- rules

    def add_rule(self, match: MatchSpec, action: Action, *, times: int | None = 1) -> Rule:
        """Apply ``action`` to the next ``times`` matches (None: every match); in force when this returns."""
        rule = Rule(match, action, times)

        def add() -> None:
            self._rules.append(rule)
            self._all_rules.append(rule)

        self._call(add)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        """Retire one rule (what it already did to connections stays done)."""
        self._call(lambda: self._retire(rule))

    def clear(self) -> None:
        """Remove every rule; held data stays held until ``release``."""
        self._call(self._rules.clear)

    def release(self, rule: Rule | None = None) -> None:
        """Deliver the bytes held by stalls (of ``rule``, or all of them); a no-op where nothing is held."""

        def release() -> None:
            for conn in list(self._conns):
                if conn.stall is not None and (rule is None or conn.stall.rule is rule):
                    conn.release_stall()

        self._call(release)

    def reset_all(self) -> None:
        """RST every open client connection; connections with held bytes keep them (they become zombies)."""

        def reset() -> None:
            for conn in list(self._conns):
                if conn.client_gone:
                    continue
                conn._reset_client()
                if conn.stall is None:
                    conn.close()

        self._call(reset)

    def set_upstream(self, host: str, port: int) -> None:
        """Connections accepted from now on go to this upstream (open ones keep theirs)."""

        def set_() -> None:
            self._upstream = (host, port)

        self._call(set_)

    @property
    def stats(self) -> ProxyStats:
        def snapshot() -> ProxyStats:
            held = [c for c in self._conns if c.stall is not None]
            return ProxyStats(
                connections_accepted=self._accepted,
                connections_open=len(self._conns),
                stalls_held=len(held),
                stalls_orphaned=sum(1 for c in held if c.client_gone),
                rule_hits={r: r.hits for r in self._all_rules},
            )

        return self._call(snapshot)

    # -- loop thread

    def _match(self, conn: _Conn, chunk: Chunk) -> tuple[Rule, int] | None:
        found: tuple[Rule, int] | None = None
        for rule in list(self._rules):
            session = conn.sessions.get(rule)
            if session is None:
                session = conn.sessions[rule] = rule.matcher.session()
            offset = session.feed(chunk)
            if offset is not None and found is None:
                found = (rule, offset)
        if found is not None:
            rule = found[0]
            rule.hits += 1
            if rule.exhausted:
                self._retire(rule)
        return found

    def _retire(self, rule: Rule) -> None:
        if rule in self._rules:
            self._rules.remove(rule)

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(c_reader, c_writer)
        except asyncio.CancelledError:  # stop(): end normally, or asyncio.streams logs the cancelled task
            c_writer.close()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        cid = self._accepted
        _nodelay(c_writer)
        host, port = self._upstream
        try:
            s_reader, s_writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            _log.debug("%s#%d: upstream %s:%d unreachable (%s): resetting the client", self.name, cid, host, port, exc)
            _rst(c_writer)
            return
        _nodelay(s_writer)
        conn = _Conn(self, cid, (c_reader, c_writer), (s_reader, s_writer))
        self._conns.add(conn)
        try:
            await conn.run()
        finally:
            self._conns.discard(conn)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
        current = asyncio.current_task()
        while tasks := [t for t in asyncio.all_tasks() if t is not current]:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- plumbing

    def _submit(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT)

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the loop thread and return its result (directly when the loop is not running)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive() or threading.current_thread() is thread:
            return fn()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(_CALL_TIMEOUT)

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CALL_TIMEOUT)
        if not thread.is_alive():
            loop.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.name!r}, {self.address} -> {self._upstream[0]}:{self._upstream[1]})"
