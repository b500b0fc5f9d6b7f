"""The fault-injection proxy (tests/faults/proxy.py) with real sockets and small threaded servers."""

from __future__ import annotations

import contextlib
import http.server
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from tests.faults.proxy import (
    ANSWER_LOST,
    DROP_REQUEST,
    RESET_AFTER_REQUEST,
    RESET_BEFORE_REQUEST,
    Anything,
    Contains,
    Delay,
    FaultProxy,
    KafkaApiKey,
    Regex,
    Stall,
)

WAIT = 2.0  # upper bound for anything that should happen
QUIET = 0.25  # how long to watch for data that must not arrive


class Server:
    """A threaded TCP server on 127.0.0.1 that records every byte it receives.

    ``echo``: sends every chunk back. Otherwise answers each newline-terminated line with b"ACK <line>".
    """

    def __init__(self, *, echo: bool = False) -> None:
        self.echo = echo
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.cond = threading.Condition()
        self.received = bytearray()  # from every connection, in arrival order
        self.connections = 0
        self.closed = 0  # connections that saw EOF or an error from the proxy
        self.answers = 0
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self.cond:
                self.connections += 1
                self._socks.append(sock)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        pending = b""
        try:
            while data := sock.recv(65536):
                with self.cond:
                    self.received += data
                    self.cond.notify_all()
                if self.echo:
                    sock.sendall(data)
                    continue
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    sock.sendall(b"ACK " + line + b"\n")
                    with self.cond:
                        self.answers += 1
                        self.cond.notify_all()
        except OSError:
            pass
        finally:
            with self.cond:
                self.closed += 1
                self.cond.notify_all()
            sock.close()

    def wait(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def got(self, data: bytes, timeout: float = WAIT) -> bool:
        return self.wait(lambda: data in self.received, timeout)

    def close(self) -> None:
        """Stop listening and close every connection (idempotent)."""
        with self.cond:
            socks, self._socks = self._socks, []
        # shutdown() wakes a thread blocked in accept()/recv() on Linux (close() alone does not, nor sends FIN)
        for sock in [self._listener, *socks]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def echo_server() -> Iterator[Server]:
    srv = Server(echo=True)
    yield srv
    srv.close()


@pytest.fixture
def proxy(server: Server) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", server.port, name="unit") as p:
        yield p


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_line(sock: socket.socket, timeout: float = WAIT) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\n"):
        data = sock.recv(1)
        if not data:
            raise EOFError(f"closed after {buf!r}")
        buf += data
    return buf


def assert_silent(sock: socket.socket) -> None:
    """Nothing arrives, and the connection is neither closed (FIN) nor reset."""
    sock.settimeout(QUIET)
    with pytest.raises(TimeoutError):
        data = sock.recv(1)
        raise AssertionError(f"expected silence, got {data!r}")


def kafka_frame(api_key: int, body: bytes = b"", correlation_id: int = 1) -> bytes:
    payload = struct.pack(">hhi", api_key, 0, correlation_id) + body
    return struct.pack(">i", len(payload)) + payload


def proxy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fault-proxy-")]


# -- passthrough -----------------------------------------------------------------------------------


def test_passthrough_round_trips_and_large_payload(echo_server: Server) -> None:
    with FaultProxy("127.0.0.1", echo_server.port, name="pass") as proxy:
        assert proxy.address == f"127.0.0.1:{proxy.port}" and proxy.port != echo_server.port
        with connect(proxy) as sock:
            for i in range(3):
                sock.sendall(b"hello %d" % i)
                assert sock.recv(100) == b"hello %d" % i
            blob = bytes(range(256)) * 2048  # 512 KiB
            sock.sendall(blob)
            got = bytearray()
            while len(got) < len(blob):
                got += sock.recv(65536)
            assert bytes(got) == blob
        assert echo_server.wait(lambda: echo_server.closed == 1), "client close did not close the server side"
        assert proxy.stats.connections_accepted == 1


def test_listens_on_loopback_only(proxy: FaultProxy) -> None:
    assert proxy._server is not None
    assert [s.getsockname()[0] for s in proxy._server.sockets] == ["127.0.0.1"]


def test_server_close_closes_the_client(proxy: FaultProxy, server: Server) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"ping\n")
        assert read_line(sock) == b"ACK ping\n"
        server.close()
        sock.settimeout(WAIT)
        assert sock.recv(10) == b""


# -- actions ---------------------------------------------------------------------------------------


def test_answer_lost(proxy: FaultProxy, server: Server) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"ping\n")
        assert read_line(sock) == b"ACK ping\n"
        rule = proxy.add_rule(Contains(b"COMMIT"), ANSWER_LOST)
        sock.sendall(b"COMMIT part1")
        assert rule.triggered.wait(WAIT)
        sock.sendall(b" part2\n")  # the body comes in a later read: it still reaches the server
        assert server.got(b"COMMIT part1 part2\n")
        assert server.wait(lambda: server.answers == 2)  # the server did answer
        assert_silent(sock)
        assert rule.hits == 1


def test_reset_after_request(proxy: FaultProxy, server: Server) -> None:
    with connect(proxy) as sock:
        rule = proxy.add_rule(Contains(b"COMMIT"), RESET_AFTER_REQUEST)
        sock.sendall(b"COMMIT\n")
        sock.settimeout(WAIT)
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
        assert server.got(b"COMMIT\n") and server.wait(lambda: server.answers == 1)
        assert rule.triggered.is_set()
        assert server.wait(lambda: server.closed == 1)


def test_drop_request(proxy: FaultProxy, server: Server) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"ping\n")
        assert read_line(sock) == b"ACK ping\n"
        rule = proxy.add_rule(Contains(b"COMMIT"), DROP_REQUEST)
        sock.sendall(b"BEGIN\nCOMMIT\n")  # the bytes before the match in the same read still go
        assert rule.triggered.wait(WAIT)
        assert server.got(b"BEGIN\n")
        assert_silent(sock)  # from the match on, nothing comes back (not even the answer to BEGIN)
    assert server.received == bytearray(b"ping\nBEGIN\n")


def test_reset_before_request(proxy: FaultProxy, server: Server) -> None:
    rule = proxy.add_rule(Anything(), RESET_BEFORE_REQUEST)
    with connect(proxy) as sock:
        sock.sendall(b"COMMIT\n")
        sock.settimeout(WAIT)
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
    assert rule.triggered.is_set()
    assert server.wait(lambda: server.closed == 1), "the server side was not closed"
    assert server.received == bytearray()


def test_stall_released_by_release(proxy: FaultProxy, server: Server) -> None:
    with connect(proxy) as sock:
        rule = proxy.add_rule(Contains(b"COMMIT"), Stall())
        sock.sendall(b"COMMIT\n")
        assert rule.triggered.wait(WAIT)
        assert not server.got(b"COMMIT", timeout=QUIET)
        assert proxy.stats.stalls_held == 1
        proxy.release()
        assert read_line(sock) == b"ACK COMMIT\n"
        assert rule.released.wait(WAIT)
        sock.sendall(b"after\n")  # the connection works normally afterwards
        assert read_line(sock) == b"ACK after\n"
    assert proxy.stats.stalls_held == 0


def test_stall_released_by_timeout(proxy: FaultProxy, server: Server) -> None:
    with connect(proxy) as sock:
        rule = proxy.add_rule(Contains(b"COMMIT"), Stall(0.3))
        started = time.monotonic()
        sock.sendall(b"COMMIT\n")
        assert read_line(sock) == b"ACK COMMIT\n"
        assert time.monotonic() - started >= 0.28
        assert rule.released.is_set()


def test_stall_delivers_a_zombie_request_after_the_client_died(proxy: FaultProxy, server: Server) -> None:
    sock = connect(proxy)
    sock.sendall(b"ping\n")
    assert read_line(sock) == b"ACK ping\n"
    rule = proxy.add_rule(Contains(b"COMMIT"), Stall())
    sock.sendall(b"COMMIT\n")
    assert rule.triggered.wait(WAIT)
    sock.close()  # the client is killed while its commit is in flight
    deadline = time.monotonic() + WAIT
    while proxy.stats.stalls_orphaned != 1:
        assert time.monotonic() < deadline, "the proxy never noticed the client left"
        time.sleep(0.01)
    assert server.closed == 0, "the server side must stay open while bytes are held"
    assert b"COMMIT" not in server.received
    proxy.release(rule)
    assert server.got(b"ping\nCOMMIT\n"), "the held request never reached the server"
    assert rule.released.wait(WAIT)
    assert rule.settled.wait(WAIT), "the server's answer to the zombie request was not noticed"
    assert server.wait(lambda: server.answers == 2)
    assert server.wait(lambda: server.closed == 1), "the zombie's server side was never closed"
    assert proxy.stats.connections_open == 0


def test_a_released_request_is_settled_only_once_the_server_answers(proxy: FaultProxy, server: Server) -> None:
    """``rule.settled`` waits for the server: a test never has to guess how long it takes."""
    with connect(proxy) as sock:
        rule = proxy.add_rule(Contains(b"COMMIT"), Stall())
        sock.sendall(b"COMMIT\n")
        assert rule.triggered.wait(WAIT)
        assert not rule.settled.wait(QUIET), "settled before the request was even delivered"
        proxy.release(rule)
        assert read_line(sock) == b"ACK COMMIT\n"
        assert rule.settled.wait(WAIT)


def test_delay_applies_both_directions(proxy: FaultProxy, server: Server) -> None:
    with connect(proxy) as sock:
        rule = proxy.add_rule(Contains(b"slow"), Delay(0.2))
        started = time.monotonic()
        sock.sendall(b"fast\n")
        assert read_line(sock) == b"ACK fast\n"
        fast = time.monotonic() - started
        started = time.monotonic()
        sock.sendall(b"slow\n")
        assert not server.got(b"slow", timeout=0.1)  # delayed on the way in ...
        assert read_line(sock) == b"ACK slow\n"
        slow = time.monotonic() - started
    assert rule.hits == 1
    assert fast < 0.15
    assert slow >= 0.38  # ... and on the way out


# -- matchers --------------------------------------------------------------------------------------


def test_contains_match_split_across_two_reads(proxy: FaultProxy, server: Server) -> None:
    rule = proxy.add_rule(Contains(b"COMMIT"), DROP_REQUEST)
    with connect(proxy) as sock:
        sock.sendall(b"hello COM")
        assert server.got(b"hello COM")  # the proxy has read and forwarded the first half
        assert not rule.triggered.is_set()
        sock.sendall(b"MIT world\n")
        assert rule.triggered.wait(WAIT)
        assert_silent(sock)
    assert server.received == bytearray(b"hello COM")


def test_regex_match_split_across_two_reads(proxy: FaultProxy, server: Server) -> None:
    rule = proxy.add_rule(Regex(rb"COMMIT \d+"), DROP_REQUEST)
    with connect(proxy) as sock:
        sock.sendall(b"COMMIT x\nCOMMIT ")
        assert server.got(b"COMMIT x\nCOMMIT ")
        assert not rule.triggered.is_set()
        sock.sendall(b"42\n")
        assert rule.triggered.wait(WAIT)
    assert not server.got(b"42", timeout=QUIET)


def test_kafka_api_key_split_across_two_sends(proxy: FaultProxy, server: Server) -> None:
    add_partitions = kafka_frame(24, b"txn-a")
    end_txn = kafka_frame(26, b"commit", correlation_id=7)
    rule = proxy.add_rule(KafkaApiKey(26), Stall())
    with connect(proxy) as sock:
        sock.sendall(add_partitions + end_txn[:5])  # EndTxn's api_key is split: one byte here ...
        assert server.got(add_partitions + end_txn[:5])  # ... forwarded, since nothing matched yet
        assert not rule.triggered.is_set()
        sock.sendall(end_txn[5:])  # ... one byte here
        assert rule.triggered.wait(WAIT)
        assert not server.got(end_txn, timeout=QUIET)
        proxy.release(rule)
        assert server.got(add_partitions + end_txn)


def test_kafka_api_key_two_frames_in_one_send(proxy: FaultProxy, server: Server) -> None:
    # a Produce whose body holds bytes that look like an EndTxn header: only real frame headers count
    decoy = kafka_frame(26, b"not-a-frame")
    produce = kafka_frame(0, b"records:" + decoy)
    end_txn = kafka_frame(26, b"commit")
    rule = proxy.add_rule(KafkaApiKey(26), DROP_REQUEST)
    with connect(proxy) as sock:
        sock.sendall(produce + end_txn)
        assert rule.triggered.wait(WAIT)
        assert server.got(produce)  # the frame before the match in the same read is forwarded
        assert not server.got(produce + end_txn[:1], timeout=QUIET)
    assert bytes(server.received) == produce
    assert rule.hits == 1


def test_kafka_api_key_ignores_non_kafka_streams(proxy: FaultProxy, server: Server) -> None:
    rule = proxy.add_rule(KafkaApiKey(26), DROP_REQUEST)
    with connect(proxy) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n" + kafka_frame(26) + b"\n")
        assert server.got(kafka_frame(26))
    assert not rule.triggered.is_set()


def test_times_one_affects_one_connection_only(proxy: FaultProxy, server: Server) -> None:
    first, second = connect(proxy), connect(proxy)
    with first, second:
        rule = proxy.add_rule(Contains(b"COMMIT"), DROP_REQUEST)
        first.sendall(b"COMMIT 1\n")
        assert rule.triggered.wait(WAIT)
        second.sendall(b"COMMIT 2\n")
        assert read_line(second) == b"ACK COMMIT 2\n"
        assert_silent(first)
    stats = proxy.stats
    assert rule.hits == 1 and stats.rule_hits[rule] == 1
    assert stats.connections_accepted == 2
    assert b"COMMIT 1" not in server.received


def test_times_two_and_anything_only_on_new_connections(proxy: FaultProxy, server: Server) -> None:
    before = connect(proxy)
    before.sendall(b"early\n")
    assert read_line(before) == b"ACK early\n"
    rule = proxy.add_rule(Anything(), RESET_BEFORE_REQUEST, times=2)
    with before:
        before.sendall(b"still fine\n")  # an already open connection is not new
        assert read_line(before) == b"ACK still fine\n"
        for _ in range(2):
            with connect(proxy) as sock:
                sock.sendall(b"x\n")
                sock.settimeout(WAIT)
                with pytest.raises(ConnectionResetError):
                    sock.recv(10)
        with connect(proxy) as sock:
            sock.sendall(b"third\n")
            assert read_line(sock) == b"ACK third\n"
    assert rule.hits == 2


def test_clear_removes_rules(proxy: FaultProxy, server: Server) -> None:
    rule = proxy.add_rule(Contains(b"COMMIT"), DROP_REQUEST)
    proxy.clear()
    with connect(proxy) as sock:
        sock.sendall(b"COMMIT\n")
        assert read_line(sock) == b"ACK COMMIT\n"
    assert rule.hits == 0


# -- proxy controls --------------------------------------------------------------------------------


def test_reset_all(proxy: FaultProxy, server: Server) -> None:
    with connect(proxy) as a, connect(proxy) as b:
        for sock in (a, b):
            sock.sendall(b"hi\n")
            assert read_line(sock) == b"ACK hi\n"
        proxy.reset_all()
        for sock in (a, b):
            sock.settimeout(WAIT)
            with pytest.raises(ConnectionResetError):
                sock.recv(10)
    assert server.wait(lambda: server.closed == 2)


def test_set_upstream(proxy: FaultProxy, server: Server, echo_server: Server) -> None:
    with connect(proxy) as old:
        old.sendall(b"first\n")  # a round trip: the proxy has accepted this one and chosen its upstream
        assert read_line(old) == b"ACK first\n"
        proxy.set_upstream("127.0.0.1", echo_server.port)
        with connect(proxy) as new:
            new.sendall(b"to echo\n")
            assert new.recv(100) == b"to echo\n"
        old.sendall(b"to old\n")
        assert read_line(old) == b"ACK to old\n"


def test_upstream_down_resets_the_client() -> None:
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    with FaultProxy("127.0.0.1", port, name="dead-upstream") as proxy:
        # the reset may come at connect, send or recv
        with pytest.raises((ConnectionResetError, BrokenPipeError)), connect(proxy) as sock:
            sock.sendall(b"x")
            sock.recv(10)
        assert proxy.stats.connections_accepted == 1


def test_stop_closes_everything_and_leaves_no_thread(server: Server) -> None:
    proxy = FaultProxy("127.0.0.1", server.port, name="stopper").start()
    assert "fault-proxy-stopper" in proxy_threads()
    stalled = connect(proxy)
    proxy.add_rule(Contains(b"COMMIT"), Stall())
    stalled.sendall(b"COMMIT\n")
    other = connect(proxy)
    other.sendall(b"ping\n")
    assert read_line(other) == b"ACK ping\n"
    proxy.stop()
    proxy.stop()  # idempotent
    for sock in (stalled, other):
        sock.settimeout(WAIT)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""
        sock.close()
    assert "fault-proxy-stopper" not in proxy_threads()
    assert server.wait(lambda: server.closed == 2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
    assert b"COMMIT" not in server.received  # held bytes are discarded by stop()


# -- a real protocol -------------------------------------------------------------------------------


def test_http_answer_lost_times_out_urllib_after_the_server_logged_it() -> None:
    seen: list[str] = []
    logged = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if self.path == "/commit":
                logged.set()
            body = b"pong"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with FaultProxy("127.0.0.1", httpd.server_address[1], name="http") as proxy:
            with urllib.request.urlopen(f"http://{proxy.address}/ok", timeout=WAIT) as resp:
                assert resp.read() == b"pong"
            rule = proxy.add_rule(Contains(b"GET /commit"), ANSWER_LOST)
            with pytest.raises((TimeoutError, urllib.error.URLError)):
                urllib.request.urlopen(f"http://{proxy.address}/commit", timeout=0.5)
            assert logged.wait(WAIT) and seen == ["/ok", "/commit"]
            assert rule.hits == 1
    finally:
        httpd.shutdown()
        httpd.server_close()
