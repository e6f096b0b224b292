"""Tier 50: start-up logging, graceful shutdown, multiple workers, access log."""

import errno
import json
import os
import re
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (LOG_LINE_RE, LOOPBACK, Conn, TrellisTestCase, base_config,  # noqa: E402
                     build_request, parse_responses, run_trellis, sha256, wait_for)

BIG_SIZE = 20 * 1024 * 1024
HELLO = b"Hello, World!"


def delay_config(**overrides) -> dict:
    """base_config() plus the delay plugin on /delay (GET /delay?chunks=N&ms=M streams
    "chunk 1\n" ... "chunk N\n", one every M ms)."""
    cfg = base_config(**overrides)
    cfg["plugins"].append({"name": "delay", "path": "delay"})
    cfg["routes"].insert(0, {"prefix": "/delay", "plugin": "delay"})
    return cfg


def chunks_body(n: int) -> bytes:
    return b"".join(b"chunk %d\n" % i for i in range(1, n + 1))


def probe_connect(port: int) -> str:
    """One TCP connect: "accepted" (the handshake completed) or "refused" (ECONNREFUSED)."""
    so = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    so.settimeout(2)
    try:
        err = so.connect_ex((LOOPBACK, port))
    finally:
        so.close()
    if err == 0:
        return "accepted"
    if err == errno.ECONNREFUSED:
        return "refused"
    return os.strerror(err)

ACCESS_RE = re.compile(
    r'^127\.0\.0\.1 - - \[(\d{2})/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/(\d{4}):'
    r'(\d{2}):(\d{2}):(\d{2}) \+0000\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$')


class StartupLog(TrellisTestCase):
    def test_log_format_and_listening_line(self):
        s = self.start_server()
        lines = [ln for ln in s.stderr_text().splitlines() if ln.strip()]
        self.assertTrue(lines)
        for ln in lines:
            self.assertRegex(ln, LOG_LINE_RE)
        listening = [ln for ln in lines if "listening on" in ln]
        self.assertEqual(len(listening), 1, lines)
        self.assertRegex(listening[0], harness.LISTENING_LINE_RE)  # http:// or https://, per transport
        self.assertNotEqual(s.port, 0)

    def test_workers_auto(self):
        s = self.start_server(base_config(workers="auto"))
        r = s.get("/hello")
        self.assertEqual(r.status, 200)


class Shutdown(TrellisTestCase):
    def test_sigterm_idle_server_exits_zero(self):
        s = self.start_server()
        self.assertEqual(s.get("/hello").status, 200)
        t0 = time.monotonic()
        code = s.stop(signal.SIGTERM, timeout=5)
        self.assertEqual(code, 0, s.stderr_text())
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_sigterm_lets_in_flight_response_complete(self):
        data = os.urandom(BIG_SIZE)

        def add_big(s):
            (s.www / "big.bin").write_bytes(data)
        s = self.start_server(base_config(limits={"shutdown_timeout_ms": 15000,
                                                  "send_timeout_ms": 15000}),
                              prepare=add_big)
        c = self.conn(s, timeout=20, rcvbuf=32 * 1024)
        c.request("GET", "/big.bin")
        head = c.read_head()
        self.assertEqual(head.status, 200, head)
        self.assertEqual(head.header("Content-Length"), str(BIG_SIZE))
        s.send_signal(signal.SIGTERM)
        # a slow reader: the response cannot have been sent yet, the server must wait for it
        time.sleep(0.5)
        self.assertTrue(s.running(), "the server exited with a response still in flight")
        body = c.read_exact(BIG_SIZE, timeout=20)
        self.assertEqual(len(body), BIG_SIZE, "in-flight response was cut short")
        self.assertEqual(sha256(body), sha256(data))
        code = s.wait_exit(10)
        self.assertIsNotNone(code, "the server did not exit after the in-flight response")
        self.assertEqual(code, 0)

    def test_sigterm_lets_a_half_received_request_finish_with_connection_close(self):
        s = self.start_server(base_config(limits={"shutdown_timeout_ms": 10000}))
        c = self.conn(s)
        c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n")
        s.send_signal(signal.SIGTERM)
        s.wait_stderr(r"SIGTERM: shutting down")
        self.assertTrue(c.is_open_after(0.2), "a connection mid-request was dropped on SIGTERM")
        c.send(b"\r\n")
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"Hello, World!"))
        self.assertIn("close", r.connection_tokens())
        _, closed = c.read_until_closed(5)
        self.assertTrue(closed)
        self.assertEqual(s.wait_exit(5), 0)

    def test_sigterm_closes_idle_keepalive_connections(self):
        s = self.start_server(base_config(limits={"shutdown_timeout_ms": 2000,
                                                  "keepalive_timeout_ms": 60000}))
        conns = [self.conn(s) for _ in range(3)]
        for c in conns:
            c.request("GET", "/hello")
            self.assertEqual(c.read_response().status, 200)
        t0 = time.monotonic()
        s.send_signal(signal.SIGTERM)
        for c in conns:
            _, closed = c.read_until_closed(4)
            self.assertTrue(closed, "idle keep-alive connection not closed on SIGTERM")
        code = s.wait_exit(4)
        elapsed = time.monotonic() - t0
        self.assertIsNotNone(code, "did not exit")
        self.assertEqual(code, 0)
        self.assertLess(elapsed, 2.0 + 1.0, "shutdown took longer than shutdown_timeout_ms")

    def test_shutdown_timeout_bounds_a_stalled_client(self):
        data = os.urandom(BIG_SIZE)

        def add_big(s):
            (s.www / "big.bin").write_bytes(data)
        s = self.start_server(base_config(limits={"shutdown_timeout_ms": 500,
                                                  "send_timeout_ms": 60000}),
                              prepare=add_big)
        c = self.conn(s, timeout=10, rcvbuf=16 * 1024)
        c.request("GET", "/big.bin")
        self.assertEqual(c.read_head().status, 200)
        t0 = time.monotonic()
        s.send_signal(signal.SIGTERM)
        code = s.wait_exit(5)  # the client never reads: only the shutdown timeout ends this
        self.assertIsNotNone(code, "a stalled client kept the server alive past shutdown_timeout_ms")
        self.assertLess(time.monotonic() - t0, 0.5 + 2.0)

    def test_sigterm_stops_accepting_within_100_ms(self):
        s = self.start_server(delay_config(workers=2, limits={"shutdown_timeout_ms": 10000}))
        # A 3 s stream keeps the server draining (not exited) while new connects are probed.
        stream = self.conn(s, timeout=15)
        stream.request("GET", "/delay?chunks=30&ms=100")
        head = stream.read_head()
        self.assertEqual((head.status, head.header("Transfer-Encoding")), (200, "chunked"), head)
        self.assertEqual(probe_connect(s.port), "accepted")
        t0 = time.monotonic()
        s.send_signal(signal.SIGTERM)
        probes = []
        while time.monotonic() - t0 < 0.6:
            start = time.monotonic() - t0
            probes.append((round(start, 3), probe_connect(s.port)))
            time.sleep(0.005)  # pacing of the probes
        self.assertTrue(s.running(), "the server exited with a stream in flight: the probes prove nothing")
        late = [(t, what) for t, what in probes if t >= 0.1]
        self.assertGreater(len(late), 20, probes)
        self.assertEqual([p for p in late if p[1] != "refused"], [],
                         f"connects still accepted (or failing otherwise) 100 ms or more after SIGTERM; "
                         f"all probes (s since SIGTERM, outcome): {probes}")
        # The stream in flight is not disturbed.
        self.assertEqual(stream.read_chunked_body(timeout=10), chunks_body(30))
        stream.close()
        self.assertEqual(s.wait_exit(10), 0)

    def test_sigterm_drains_a_stream_and_answers_idle_keepalive_with_close(self):
        shutdown_ms = 10000
        s = self.start_server(delay_config(limits={"shutdown_timeout_ms": shutdown_ms,
                                                   "keepalive_timeout_ms": 60000}))
        idle = self.conn(s, timeout=10)
        idle.request("GET", "/hello")
        r = idle.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO), r)
        self.assertNotIn("close", r.connection_tokens())
        # 50 chunks, one every 100 ms: a 5 s response.
        stream = self.conn(s, timeout=15)
        t_start = time.monotonic()
        stream.request("GET", "/delay?chunks=50&ms=100")
        head = stream.read_head()
        self.assertEqual((head.status, head.header("Transfer-Encoding")), (200, "chunked"), head)
        deadline = t_start + 5
        while b"chunk 10\n" not in stream.buf:  # about 1 s into the stream
            self.assertTrue(stream._recv(deadline), "the stream ended early")
        mark = s.log_mark()
        t_sig = time.monotonic()
        s.send_signal(signal.SIGTERM)
        self.assertIsNotNone(s.wait_stderr_since(mark, r"SIGTERM: shutting down", 2), s.stderr_since(mark))
        self.assertTrue(wait_for(lambda: probe_connect(s.port) == "refused", 1.0),
                        "the listener still accepts during the drain")
        # A request on the idle keep-alive connection during the drain: answered, with close.
        self.assertTrue(idle.is_open_after(0.2), "the idle keep-alive connection was dropped while "
                                                 "another response was still being sent")
        idle.request("GET", "/hello")
        r = idle.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO), r)
        self.assertIn("close", r.connection_tokens(), r)
        rest, closed = idle.read_until_closed(5)
        self.assertEqual((rest, closed), (b"", True))
        idle.close()
        self.assertTrue(s.running(), "the server exited with the stream in flight")
        # The stream arrives whole, at its own pace, and its connection closes after it.
        body = stream.read_chunked_body(timeout=10)
        t_end = time.monotonic()
        self.assertEqual(body, chunks_body(50))
        self.assertGreater(t_end - t_start, 4.5, "the stream was hurried")
        rest, closed = stream.read_until_closed(5)
        self.assertEqual((rest, closed), (b"", True))
        stream.close()
        code = s.wait_exit(shutdown_ms / 1000 + 2)
        t_exit = time.monotonic()
        self.assertEqual(code, 0, s.stderr_text()[-2000:])
        self.assertLess(t_exit - t_sig, shutdown_ms / 1000, "exit came after shutdown_timeout_ms")
        self.assertLess(t_exit - t_end, 3.0, "the server lingered after its last response")

class Health(TrellisTestCase):
    """Top-level "health": {"path": ...}: answered by the server (no plugin call, before listener
    rules), 200 while serving, 503 once the drain has begun."""

    def config(self, **overrides):
        cfg = delay_config(limits={"shutdown_timeout_ms": 10000, "keepalive_timeout_ms": 60000},
                           **overrides)
        cfg["health"] = {"path": "/healthz"}
        # A catch-all route that would answer anything else: the health check must not reach it.
        cfg["routes"].insert(0, {"prefix": "/", "plugin": "echo"})
        return cfg

    def test_answers_200_without_a_plugin(self):
        s = self.start_server(self.config())
        c = self.conn(s)
        for target in ("/healthz", "/healthz?probe=1"):
            c.request("GET", target)
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"ok\n"), r)
            self.assertEqual(r.header("Cache-Control"), "no-store")
            self.assertTrue(r.header("Content-Type").startswith("text/plain"), r)
        c.request("HEAD", "/healthz")
        r = c.read_response(head=True)
        self.assertEqual((r.status, r.body), (200, b""), r)
        c.request("POST", "/healthz", body=b"x")
        r = c.read_response()
        self.assertEqual((r.status, r.header("Allow")), (405, "GET, HEAD"), r)
        c.request("GET", "/healthz/more")  # only the exact path
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["path"], "/healthz/more")

    def test_503_once_the_drain_begins(self):
        s = self.start_server(self.config())
        probe = self.conn(s, timeout=10)
        probe.request("GET", "/healthz")
        self.assertEqual(probe.read_response().status, 200)
        # A long answer in flight keeps the worker draining instead of exiting.
        stream = self.conn(s, timeout=15)
        stream.request("GET", "/delay?chunks=40&ms=100")
        self.assertEqual(stream.read_head().status, 200)
        mark = s.log_mark()
        s.send_signal(signal.SIGTERM)
        self.assertIsNotNone(s.wait_stderr_since(mark, r"SIGTERM: shutting down", 2))
        # The main thread logs the signal, then tells the worker: until the worker has begun its
        # drain the probe still gets 200 on its keep-alive connection, so ask again until it has.
        deadline = time.monotonic() + 5
        while True:
            probe.request("GET", "/healthz")
            r = probe.read_response()
            if r.status != 200 or time.monotonic() > deadline:
                break
            self.assertEqual(r.body, b"ok\n")
            time.sleep(0.02)
        self.assertEqual((r.status, r.body), (503, b"draining\n"), r)
        self.assertEqual(r.header("Connection"), "close", r)
        self.assertEqual(stream.read_chunked_body(timeout=10), chunks_body(40))
        self.assertEqual(s.wait_exit(12), 0)

    def test_bad_health_config_names_the_path(self):
        for health, pointer in (({"path": "healthz"}, "/health/path"), ({"path": "/a/../b"}, "/health/path"),
                                ({"path": "/h?x"}, "/health/path"), ({"path": 1}, "/health/path"),
                                ({}, "/health"), ({"path": "/h", "extra": 1}, "/health/extra"),
                                ("/healthz", "/health")):
            with self.subTest(health=health):
                cfg = base_config()
                cfg["health"] = health
                path = self.tmp / "health.json"
                path.write_text(json.dumps(cfg))
                r = run_trellis("--check", "--config", str(path))
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(f"{pointer}: ", r.stderr)


class ServiceManagerNotify(TrellisTestCase):
    """systemd's Type=notify protocol, against a socket the test owns: READY=1 once every
    listener is bound, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around SIGHUP, also when
    the reload fails, STOPPING=1 when SIGTERM starts the drain. Path and abstract sockets."""

    def listen(self, abstract: bool):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"@trellis-test-{os.getpid()}-{time.monotonic_ns()}"
            sock.bind("\0" + name[1:])
        else:
            name = os.path.join(self.tmp, "notify.sock")
            sock.bind(name)
        sock.settimeout(10)
        self.addCleanup(sock.close)
        return sock, name

    def start_notifying(self, name: str, config=None):
        def set_socket():
            os.environ["NOTIFY_SOCKET"] = name
        return self.start_server(config, preexec=set_socket)

    def check_protocol(self, abstract: bool):
        sock, name = self.listen(abstract)
        s = self.start_notifying(name)
        self.assertEqual(sock.recv(4096), b"READY=1")
        self.assertEqual(s.get("/hello").status, 200)  # ready meant serving
        s.send_signal(signal.SIGHUP)
        reloading = sock.recv(4096).decode()
        self.assertRegex(reloading, r"^RELOADING=1\nMONOTONIC_USEC=\d+$")
        usec = int(reloading.split("=")[-1])
        self.assertLess(abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)), 30)
        self.assertEqual(sock.recv(4096), b"READY=1")
        s.wait_stderr(r"reload: generation 2 active")
        s.send_signal(signal.SIGTERM)
        self.assertEqual(sock.recv(4096), b"STOPPING=1")
        self.assertEqual(s.wait_exit(10), 0, s.stderr_text())

    def test_path_socket(self):
        self.check_protocol(abstract=False)

    def test_abstract_socket(self):
        self.check_protocol(abstract=True)

    def test_failed_reload_is_still_ready(self):
        sock, name = self.listen(abstract=False)
        s = self.start_notifying(name)
        self.assertEqual(sock.recv(4096), b"READY=1")
        s.reload(raw="{ not json")
        self.assertTrue(sock.recv(4096).startswith(b"RELOADING=1\n"))
        self.assertEqual(sock.recv(4096), b"READY=1")
        s.wait_stderr(r"reload failed")
        self.assertEqual(s.get("/hello").status, 200)

    def test_no_socket_no_notification(self):
        # Without NOTIFY_SOCKET nothing is sent: a socket nobody names hears nothing.
        sock, _ = self.listen(abstract=False)
        sock.settimeout(0.5)
        s = self.start_server()
        self.assertEqual(s.get("/hello").status, 200)
        s.send_signal(signal.SIGHUP)
        s.wait_stderr(r"reload: generation 2 active")
        with self.assertRaises(socket.timeout):
            sock.recv(4096)


class Workers(TrellisTestCase):
    def test_two_workers_many_connections(self):
        s = self.start_server(base_config(workers=2))
        errors = []
        ok = []

        def client(n):
            try:
                with Conn(s.port, timeout=10) as c:
                    for i in range(5):
                        c.request("GET", f"/echo/c{n}/r{i}")
                        r = c.read_response()
                        if r.status != 200 or r.json()["path"] != f"/echo/c{n}/r{i}":
                            errors.append((n, i, r))
                            return
                    c.request("GET", "/hello")
                    r = c.read_response()
                    if r.body != b"Hello, World!":
                        errors.append((n, "hello", r))
                        return
                ok.append(n)
            except Exception as e:  # noqa: BLE001
                errors.append((n, repr(e)))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(60)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(ok), list(range(60)))
        self.assertEqual(s.stop(), 0)

    def test_two_workers_pipelines_in_parallel(self):
        s = self.start_server(base_config(workers=2))
        results = {}

        def client(n):
            with Conn(s.port, timeout=10) as c:
                c.send(b"".join(build_request("GET", f"/echo/{n}/{i}") for i in range(16)))
                results[n] = [c.read_response().json()["path"] for _ in range(16)]

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for n in range(8):
            self.assertEqual(results.get(n), [f"/echo/{n}/{i}" for i in range(16)])


class AccessLog(TrellisTestCase):
    def wait_lines(self, path, count, timeout=5.0):
        def get():
            if not path.exists():
                return None
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            return lines if len(lines) >= count else None
        lines = wait_for(get, timeout)
        self.assertIsNotNone(lines, f"access log {path} did not get {count} line(s): "
                                    f"{path.read_text() if path.exists() else '(missing)'}")
        return lines

    def test_access_log_file_combined_format(self):
        log = self.tmp / "access.log"
        s = self.start_server(base_config(access_log=str(log)))
        before = time.time()
        r = s.curl("/hello")
        self.assertEqual(r.status, 200, r)
        lines = self.wait_lines(log, 1)
        self.assertEqual(len(lines), 1, lines)
        m = ACCESS_RE.match(lines[0])
        self.assertIsNotNone(m, f"not combined log format: {lines[0]!r}")
        self.assertEqual(m["request"], "GET /hello HTTP/1.1")
        self.assertEqual(m["status"], "200")
        self.assertEqual(m["bytes"], "13")
        self.assertEqual(m["referer"], "-")
        self.assertRegex(m["agent"], r"^curl/\d")
        stamp = time.strptime(lines[0].split("[", 1)[1].split("]", 1)[0], "%d/%b/%Y:%H:%M:%S +0000")
        self.assertLess(abs(harness.calendar.timegm(stamp) - before), 30)

    def test_access_log_referer_agent_status(self):
        log = self.tmp / "access.log"
        s = self.start_server(base_config(access_log=str(log)))
        s.curl("/missing.html", "-e", "http://ref.test/page", "-A", "itest-agent/2.0")
        s.curl("/echo/q?x=1", "--data-binary", "abc")
        lines = self.wait_lines(log, 2)
        m1 = ACCESS_RE.match(lines[0])
        self.assertIsNotNone(m1, lines[0])
        self.assertEqual(m1["request"], "GET /missing.html HTTP/1.1")
        self.assertEqual(m1["status"], "404")
        self.assertEqual(m1["referer"], "http://ref.test/page")
        self.assertEqual(m1["agent"], "itest-agent/2.0")
        m2 = ACCESS_RE.match(lines[1])
        self.assertIsNotNone(m2, lines[1])
        self.assertEqual(m2["request"], "POST /echo/q?x=1 HTTP/1.1")
        self.assertEqual(m2["status"], "200")

    def test_access_log_stdout(self):
        s = self.start_server(base_config(access_log="-"))
        s.curl("/hello")

        def got():
            return [ln for ln in s.stdout_text().splitlines() if '"GET /hello HTTP/1.1"' in ln]
        lines = wait_for(got, 5)
        self.assertTrue(lines, f"no access log line on stdout: {s.stdout_text()!r}")
        self.assertRegex(lines[0], ACCESS_RE)

    def test_access_log_off(self):
        s = self.start_server(base_config(access_log="off"))
        s.curl("/hello")
        self.assertEqual(s.stop(), 0)
        self.assertEqual(s.stdout_text(), "")
        self.assertNotIn("GET /hello", s.stderr_text())

    def test_access_log_flushed_on_shutdown(self):
        log = self.tmp / "access.log"
        s = self.start_server(base_config(access_log=str(log)))
        for i in range(5):
            s.get(f"/echo/{i}")
        self.assertEqual(s.stop(), 0)
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        self.assertEqual(len(lines), 5, lines)


if __name__ == "__main__":
    harness.main()
