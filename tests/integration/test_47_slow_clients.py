"""Tier 47: slow and hostile-by-slowness clients (issue #6), over the real binary and per transport.

- A request head has two deadlines: limits.header_read_timeout_ms between reads and
  limits.header_timeout_ms in total from its first byte; whichever comes first gives 408 + close.
- limits.handshake_timeout_ms bounds a TLS handshake (or the wait for an "auto" listener's first
  byte) from the accept: the connection is then closed without an HTTP byte.
- A body has limits.body_timeout_ms between reads, and after limits.min_body_rate_grace_ms it must
  keep limits.min_body_rate_bps on average, or it is cut with 408 + close.
- limits.send_timeout_ms drops a client that stops reading a large file, and the server does not
  buffer the file meanwhile.
- max_connections stays below RLIMIT_NOFILE; at the cap accepts pause (clients wait in the backlog)
  without burning CPU, and the waiting clients are served once connections close.
- 1,000 slowloris connections neither starve a fresh client nor outlive the head deadline.
"""

import os
import resource
import selectors
import socket
import ssl
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (LOOPBACK, TRANSPORT, TrellisTestCase, base_config,  # noqa: E402
                     build_request, client_context, parse_responses, recv_until_closed,
                     wait_for)

HELLO = b"Hello, World!"

# Long enough that only the limit under test can end a connection in these tests.
QUIET = {"keepalive_timeout_ms": 30000, "header_timeout_ms": 30000, "header_read_timeout_ms": 30000,
         "body_timeout_ms": 30000, "handshake_timeout_ms": 30000, "send_timeout_ms": 30000,
         "min_body_rate_bps": 0}


def limits(**over) -> dict:
    out = dict(QUIET)
    out.update(over)
    return out


def raise_own_nofile(want: int) -> int:
    """Raises this process's soft RLIMIT_NOFILE to at least `want` if the hard limit allows;
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def proc_status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def socket_count(pid: int) -> int:
    n = 0
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                n += 1
        except OSError:
            pass  # closed meanwhile
    return n


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled(measure, timeout: float = 3.0) -> int:
    """measure() once it returns the same value twice in a row, 100 ms apart."""
    last = [None]

    def stable():
        v = measure()
        same = v == last[0]
        last[0] = v
        return same
    wait_for(stable, timeout, interval=0.1)
    return measure()


def speak_transport(raw: socket.socket):
    """raw (connected, blocking) as the suite's transport: TLS on tls and auto listeners."""
    if TRANSPORT == "plain":
        return raw
    return client_context().wrap_socket(raw, server_hostname="localhost")


class SlowClientCase(TrellisTestCase):
    def trickle_until_closed(self, c, data: bytes, every: float, limit: float) -> float:
        """Sends data one byte at a time, `every` seconds apart, until the server answers or closes
        (or `limit` seconds pass). Returns when that happened, time.monotonic()."""
        deadline = time.monotonic() + limit
        for i in range(len(data)):
            if not c.try_send(data[i:i + 1]):
                break
            if not c.is_open_after(every):  # the pace of the client, and the watch for the server
                break
            if time.monotonic() > deadline:
                break
        return time.monotonic()


# --------------------------------------------------------------------------------------------
# Request heads: a deadline between reads and a total one from the first byte
# --------------------------------------------------------------------------------------------

class HeadDeadlines(SlowClientCase):
    def test_pause_between_reads_of_a_head_gets_408(self):
        s = self.start_server(base_config(limits=limits(header_read_timeout_ms=500,
                                                        header_timeout_ms=10000)))
        c = self.conn(s)
        c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n")
        t0 = time.monotonic()
        data, closed = c.read_until_closed(5)
        elapsed = time.monotonic() - t0
        self.assertClosedAfterError(data, closed, 408)
        self.assertGreater(elapsed, 0.4, "408 before header_read_timeout_ms (500) had passed")
        self.assertLess(elapsed, 2.0, "a 500 ms pause in a head was not cut within 2 s "
                                      "(header_timeout_ms is 10000: the between-reads one must act)")

    def test_each_read_restarts_the_between_reads_deadline(self):
        s = self.start_server(base_config(limits=limits(header_read_timeout_ms=700,
                                                        header_timeout_ms=10000)))
        c = self.conn(s)
        request = build_request("GET", "/hello")
        pieces = [request[i:i + 6] for i in range(0, len(request), 6)]
        self.assertGreater(len(pieces), 5)
        t0 = time.monotonic()
        for piece in pieces[:-1]:
            c.send(piece)
            # 0.35 s per piece: each pause well inside 700 ms, the whole head well beyond it.
            self.assertTrue(c.is_open_after(0.35),
                            f"answered/closed mid-head after {time.monotonic() - t0:.2f} s: "
                            f"{bytes(c.buf)[:200]!r}")
        c.send(pieces[-1])
        self.assertGreater(time.monotonic() - t0, 1.4)
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO), r)

    def test_total_head_deadline_counts_from_the_first_byte(self):
        s = self.start_server(base_config(limits=limits(header_read_timeout_ms=1000,
                                                        header_timeout_ms=1500)))
        c = self.conn(s)
        head = b"GET /hello HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 200
        t0 = time.monotonic()
        # One byte every 200 ms: the between-reads deadline (1000) never fires, the total one must.
        t_end = self.trickle_until_closed(c, head, every=0.2, limit=6)
        data, closed = c.read_until_closed(3)
        elapsed = t_end - t0
        self.assertClosedAfterError(data, closed, 408)
        self.assertGreater(elapsed, 1.35, "cut before header_timeout_ms (1500) from the first byte")
        self.assertLess(elapsed, 2.5, "a trickled head outlived header_timeout_ms (1500) by > 1 s")

    def test_idle_keepalive_time_before_a_head_does_not_count(self):
        s = self.start_server(base_config(limits=limits(header_read_timeout_ms=800,
                                                        header_timeout_ms=800,
                                                        keepalive_timeout_ms=10000)))
        c = self.conn(s)
        c.request("GET", "/hello")
        self.assertEqual(c.read_response().status, 200)
        # Idle for longer than both head deadlines: only the keep-alive timeout (10 s) applies.
        self.assertTrue(c.is_open_after(1.3), "an idle keep-alive connection got the head deadline")
        c.request("GET", "/hello")
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO), r)


# --------------------------------------------------------------------------------------------
# TLS handshakes (and the first byte on "auto"): limits.handshake_timeout_ms from the accept
# --------------------------------------------------------------------------------------------

class HandshakeDeadline(SlowClientCase):
    def setUp(self):
        super().setUp()
        if TRANSPORT == "plain":
            self.skipTest("handshake_timeout_ms applies to tls and auto listeners; "
                          "a plain listener has no handshake")

    def raw(self, s) -> socket.socket:
        so = socket.create_connection((LOOPBACK, s.port), timeout=5)
        self.addCleanup(so.close)
        return so

    def test_silent_client_is_closed_at_the_handshake_deadline(self):
        s = self.start_server(base_config(limits=limits(handshake_timeout_ms=700)))
        so = self.raw(s)
        t0 = time.monotonic()
        data, closed = recv_until_closed(so, 5)
        elapsed = time.monotonic() - t0
        self.assertTrue(closed, "a connection that never started its handshake outlived "
                                "handshake_timeout_ms (700) by 4 s")
        self.assertNotIn(b"HTTP/", data)
        self.assertGreater(elapsed, 0.6, "closed before handshake_timeout_ms (700)")
        self.assertLess(elapsed, 2.0)
        self.assertEqual(s.get("/hello").body, HELLO)

    def test_trickled_client_hello_does_not_extend_the_deadline(self):
        s = self.start_server(base_config(limits=limits(handshake_timeout_ms=1000)))
        hello = harness.tls_client_hello()
        so = self.raw(s)
        t0 = time.monotonic()
        received = b""
        closed = False
        # One byte of the ClientHello every 100 ms: the handshake would take > 10 s.
        for i in range(len(hello)):
            try:
                so.sendall(hello[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            so.settimeout(0.1)
            try:
                chunk = so.recv(65536)
            except socket.timeout:
                chunk = None
            except ConnectionResetError:
                closed = True
                break
            if chunk == b"":
                closed = True
                break
            if chunk:
                received += chunk  # a TLS alert at most
            if time.monotonic() - t0 > 5:
                break
        elapsed = time.monotonic() - t0
        if not closed:
            more, closed = recv_until_closed(so, 0.5)
            received += more
        self.assertTrue(closed, f"a trickled handshake was still open after {elapsed:.1f} s "
                                "(handshake_timeout_ms is 1000)")
        self.assertNotIn(b"HTTP/", received)
        self.assertGreater(elapsed, 0.9, "closed before handshake_timeout_ms (1000)")
        self.assertLess(elapsed, 2.2, "each handshake byte restarted the deadline")

    def test_handshake_deadline_is_its_own_not_the_head_one(self):
        s = self.start_server(base_config(limits=limits(handshake_timeout_ms=2000,
                                                        header_timeout_ms=400,
                                                        header_read_timeout_ms=400)))
        so = self.raw(s)
        so.sendall(harness.tls_client_hello()[:40])
        t0 = time.monotonic()
        # The head deadlines (400 ms) must not cut a handshake in progress...
        so.settimeout(1.0)
        try:
            early = so.recv(65536)
        except socket.timeout:
            early = None
        self.assertIsNone(early, f"a handshake was cut after {time.monotonic() - t0:.2f} s by the "
                                 f"head deadline (handshake_timeout_ms is 2000): {early!r}")
        data, closed = recv_until_closed(so, 4)
        elapsed = time.monotonic() - t0
        # ...the handshake deadline does.
        self.assertTrue(closed, "a stalled handshake outlived handshake_timeout_ms (2000)")
        self.assertNotIn(b"HTTP/", data)
        self.assertLess(elapsed, 3.2)
        # After a handshake, the head deadlines apply from the head's first byte.
        c = self.conn(s)
        self.assertIsNone(c.handshake_error)
        c.send(b"GET /hello HTTP/1.1\r\n")
        t1 = time.monotonic()
        data, closed = c.read_until_closed(4)
        self.assertClosedAfterError(data, closed, 408)
        self.assertLess(time.monotonic() - t1, 1.5)


# --------------------------------------------------------------------------------------------
# Bodies: a deadline between reads and a minimum rate after a grace period
# --------------------------------------------------------------------------------------------

class BodyDeadlines(SlowClientCase):
    def post_head(self, length: int) -> bytes:
        return build_request("POST", "/echo/slow", [("Content-Length", str(length))])

    def test_pause_in_a_body_gets_408(self):
        s = self.start_server(base_config(limits=limits(body_timeout_ms=500)))
        c = self.conn(s)
        c.send(self.post_head(100) + b"0123456789")
        t0 = time.monotonic()
        data, closed = c.read_until_closed(5)
        elapsed = time.monotonic() - t0
        self.assertClosedAfterError(data, closed, 408)
        self.assertGreater(elapsed, 0.4, "408 before body_timeout_ms (500)")
        self.assertLess(elapsed, 2.0)

    def test_body_below_the_minimum_rate_is_cut_after_the_grace(self):
        s = self.start_server(base_config(limits=limits(body_timeout_ms=1000, min_body_rate_bps=1000,
                                                        min_body_rate_grace_ms=1000)))
        c = self.conn(s)
        c.send(self.post_head(100000))
        t0 = time.monotonic()
        # 10 bytes every 200 ms = 50 B/s: every pause is far inside body_timeout_ms (1000).
        cut = None
        while time.monotonic() - t0 < 6:
            if not c.try_send(b"x" * 10) or not c.is_open_after(0.2):
                cut = time.monotonic() - t0
                break
        data, closed = c.read_until_closed(3)
        self.assertIsNotNone(cut, "a 50 B/s body ran 6 s with min_body_rate_bps 1000 (grace 1 s)")
        self.assertClosedAfterError(data, closed, 408)
        self.assertGreater(cut, 0.9, "cut before min_body_rate_grace_ms (1000)")
        self.assertLess(cut, 2.2, "a body below the minimum rate was not cut soon after the grace")

    def test_body_above_the_minimum_rate_is_served(self):
        s = self.start_server(base_config(limits=limits(body_timeout_ms=1000, min_body_rate_bps=1000,
                                                        min_body_rate_grace_ms=500)))
        body = bytes(ord("a") + i % 26 for i in range(4000))
        c = self.conn(s)
        c.send(self.post_head(len(body)))
        t0 = time.monotonic()
        for i in range(0, len(body), 400):  # 400 bytes every 200 ms = 2000 B/s for 2 s
            c.send(body[i:i + 400])
            if i + 400 < len(body):
                self.assertTrue(c.is_open_after(0.2), f"a 2000 B/s body was cut after "
                                                      f"{time.monotonic() - t0:.2f} s: {bytes(c.buf)[:200]!r}")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body"].encode("latin-1"), body)

    def test_slow_start_inside_the_grace_is_not_cut(self):
        s = self.start_server(base_config(limits=limits(body_timeout_ms=1000, min_body_rate_bps=1000,
                                                        min_body_rate_grace_ms=1500)))
        body = b"z" * 3000
        c = self.conn(s)
        c.send(self.post_head(len(body)))
        for i in range(4):  # 4 bytes in ~1 s: far below 1000 B/s, but inside the grace
            c.send(body[i:i + 1])
            self.assertTrue(c.is_open_after(0.25), f"cut inside the grace: {bytes(c.buf)[:200]!r}")
        c.send(body[4:])
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json()["body"]), len(body))

    def test_min_rate_zero_turns_the_check_off(self):
        s = self.start_server(base_config(limits=limits(body_timeout_ms=1000, min_body_rate_bps=0,
                                                        min_body_rate_grace_ms=200)))
        body = b"q" * 80
        c = self.conn(s)
        c.send(self.post_head(len(body)))
        for i in range(0, len(body), 10):  # 50 B/s for 1.6 s, 1.4 s past the grace
            c.send(body[i:i + 10])
            if i + 10 < len(body):
                self.assertTrue(c.is_open_after(0.2), f"cut with min_body_rate_bps 0: {bytes(c.buf)[:200]!r}")
        r = c.read_response()
        self.assertEqual((r.status, r.json()["body"]), (200, body.decode()), r)


# --------------------------------------------------------------------------------------------
# A client that stops reading a large file
# --------------------------------------------------------------------------------------------

class SendTimeout(SlowClientCase):
    SIZE = 100 * 1024 * 1024

    def test_stalled_reader_of_100_mb_is_dropped_without_the_server_growing(self):
        def add_big(s):
            with open(s.www / "big.bin", "wb") as f:
                f.truncate(self.SIZE)  # sparse: no 100 MB written to the test's disk
        s = self.start_server(base_config(limits=limits(send_timeout_ms=1500)), prepare=add_big)
        self.assertEqual(s.get("/hello").body, HELLO)  # warm up
        sockets_before = settled(lambda: socket_count(s.pid))
        rss_before = proc_status_kb(s.pid, "VmRSS")
        c = self.conn(s, timeout=10, rcvbuf=64 * 1024)
        c.request("GET", "/big.bin")  # keep-alive: only a drop ends this connection early
        head = c.read_head()
        self.assertEqual((head.status, head.header("Content-Length")), (200, str(self.SIZE)), head)
        first = c.read_exact(1024 * 1024, timeout=10)
        self.assertEqual(len(first), 1024 * 1024)
        self.assertEqual(first, bytes(len(first)))
        self.assertEqual(socket_count(s.pid), sockets_before + 1)
        t_stop = time.monotonic()  # from here on the client reads nothing
        peak = [rss_before]

        def dropped():
            peak[0] = max(peak[0], proc_status_kb(s.pid, "VmRSS"))
            return socket_count(s.pid) <= sockets_before
        self.assertTrue(wait_for(dropped, 8, interval=0.05),
                        "a client that stopped reading was not dropped within 8 s "
                        "(send_timeout_ms is 1500)")
        elapsed = time.monotonic() - t_stop
        self.assertGreater(elapsed, 1.4, "dropped before send_timeout_ms (1500)")
        self.assertLess(elapsed, 4.5, "dropped long after send_timeout_ms (1500)")
        growth_mb = (peak[0] - rss_before) / 1024
        self.assertLess(growth_mb, 16, f"the server's RSS grew by {growth_mb:.1f} MB while a client "
                                       f"stalled on a {self.SIZE >> 20} MB file")
        self.assertTrue(s.running())
        # The client sees the end: what the kernel still held, then EOF or reset; never the file.
        rest, closed = c.read_until_closed(10)
        self.assertTrue(closed, "the dropped connection did not end for the client")
        self.assertLess(len(first) + len(rest), self.SIZE // 2)
        self.assertEqual(s.get("/hello").body, HELLO)


# --------------------------------------------------------------------------------------------
# The connection cap under a low descriptor limit
# --------------------------------------------------------------------------------------------

class DescriptorLimit(SlowClientCase):
    N = 400

    def test_400_connections_under_ulimit_256(self):
        if raise_own_nofile(self.N + 200) < self.N + 200:
            self.skipTest(f"this process cannot open {self.N + 200} descriptors "
                          f"(RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)})")
        s = self.start_server(
            base_config(limits={"keepalive_timeout_ms": 60000, "handshake_timeout_ms": 60000,
                                "header_timeout_ms": 60000}),
            preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
        with open(f"/proc/{s.pid}/limits") as f:
            self.assertRegex(f.read(), r"Max open files\s+256\s+256", "the server's limit is not 256")
        m = s.wait_stderr(r"\[info\] file descriptor limit: 256; limits\.max_connections (\d+)$", 5)
        self.assertIsNotNone(m, s.stderr_text())
        cap = int(m.group(1))
        self.assertLess(cap, 256 - 16, "max_connections must leave a margin below the fd limit")
        self.assertGreater(cap, 64)
        self.assertRegex(s.stderr_text(), r"(?m)\[warn\] file descriptor limit 256: limits\.max_connections "
                                          rf"lowered from 10000 to {cap}$")
        sockets_idle = settled(lambda: socket_count(s.pid))

        # 400 connections at once: non-blocking connects, all in flight together.
        socks = []
        sel = selectors.DefaultSelector()
        try:
            for _ in range(self.N):
                so = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                so.setblocking(False)
                so.connect_ex((LOOPBACK, s.port))
                socks.append(so)
            # The kernel completes every connect (the backlog, SOMAXCONN, holds those not accepted).
            for so in socks:
                sel.register(so, selectors.EVENT_WRITE)
            pending, deadline = set(socks), time.monotonic() + 10
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(0.5):
                    err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    self.assertEqual(err, 0, f"a connect failed: {os.strerror(err)}")
                    sel.unregister(key.fileobj)
                    pending.discard(key.fileobj)
            self.assertFalse(pending, f"{len(pending)} connects did not complete in 10 s")

            accepted = wait_for(lambda: socket_count(s.pid) - sockets_idle >= cap, 5)
            self.assertTrue(accepted, f"the server took {socket_count(s.pid) - sockets_idle} "
                                      f"connections, not its cap {cap}")
            # While 400 are open (cap accepted, the rest waiting): up, not spinning, not over the cap.
            cpu0, t0 = cpu_seconds(s.pid), time.monotonic()
            over = []
            while time.monotonic() - t0 < 2.0:  # the measuring window
                n = socket_count(s.pid) - sockets_idle
                if n > cap:
                    over.append(n)
                self.assertTrue(s.running(), f"the server died at the cap:\n{s.stderr_text()[-2000:]}")
                time.sleep(0.2)
            cpu = cpu_seconds(s.pid) - cpu0
            window = time.monotonic() - t0
            self.assertLess(cpu, 0.3, f"the server used {cpu:.2f} s of CPU in {window:.1f} s at the "
                                      "connection cap: it spins instead of pausing accepts")
            self.assertEqual(over, [], f"more connections than max_connections ({cap}) were open")
            self.assertLess(fd_count(s.pid), 256)
            self.assertIn(f"limits.max_connections ({cap}) reached: new connections wait", s.stderr_text())
            # Nobody was accepted only to be closed: no client sees an EOF or a reset.
            for so in socks:
                sel.register(so, selectors.EVENT_READ)
            ended = sel.select(0.2)
            self.assertEqual(len(ended), 0, f"{len(ended)} waiting connections were closed by the server")
            for so in socks:
                sel.unregister(so)

            # The waiting ones are served once others close.
            for so in socks[:300]:
                so.close()
            for i, so in enumerate(socks[300:]):
                so.setblocking(True)
                so.settimeout(10)
                conn = speak_transport(so)
                socks[300 + i] = conn
                conn.sendall(build_request("GET", "/hello", [("Connection", "close")]))
                data, closed = recv_until_closed(conn, 10)
                resps, _ = parse_responses(data)
                self.assertEqual([(r.status, r.body) for r in resps], [(200, HELLO)],
                                 f"waiting connection {300 + i}: {data[:200]!r}")
        finally:
            sel.close()
            for so in socks:
                so.close()
        # And every fresh client afterwards.
        for i in range(50):
            r = s.get("/hello")
            self.assertEqual((r.status, r.body), (200, HELLO), f"request {i} after the flood: {r!r}")
        self.assertTrue(s.running())


# --------------------------------------------------------------------------------------------
# Slowloris: 1,000 trickling connections
# --------------------------------------------------------------------------------------------

class Slowloris(SlowClientCase):
    N = 1000
    TOTAL = 3.0     # header_timeout_ms
    BETWEEN = 2.0   # header_read_timeout_ms
    ROUND = 0.6     # each trickler sends a byte every ROUND seconds (< BETWEEN)
    SLACK = 1.5

    def test_1000_trickling_connections(self):
        need = self.N + 300
        if raise_own_nofile(need) < need:
            self.skipTest(f"this process cannot open {need} descriptors "
                          f"(RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)})")
        s = self.start_server(base_config(limits={
            "header_timeout_ms": int(self.TOTAL * 1000), "header_read_timeout_ms": int(self.BETWEEN * 1000),
            "keepalive_timeout_ms": 60000, "handshake_timeout_ms": 30000}))
        m = s.wait_stderr(r"file descriptor limit: \S+; limits\.max_connections (\d+)", 5)
        if m is not None and int(m.group(1)) < self.N + 10:
            self.skipTest(f"the server's descriptor limit allows only {m.group(1)} connections")

        conns = []
        t_setup = time.monotonic()
        try:
            for i in range(self.N):
                raw = socket.create_connection((LOOPBACK, s.port), timeout=10)
                try:
                    conns.append(speak_transport(raw))
                except BaseException:
                    raw.close()
                    raise
            for c in conns:
                c.setblocking(False)
            head = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nX-Slowloris: " + b"a" * 200
            n = self.N
            first = [None] * n     # when the first byte went out
            last = [None] * n      # when the last byte went out
            sent = [0] * n
            max_gap = [0.0] * n    # the longest pause between two of its bytes
            data = [b""] * n
            ended = [None] * n     # when the server's EOF/reset arrived
            answered = [None] * n  # when its first bytes (the 408) arrived
            errors = []
            stop = threading.Event()
            sel = selectors.DefaultSelector()
            for i, c in enumerate(conns):
                sel.register(c, selectors.EVENT_READ, i)

            def read_ready(timeout):
                for key, _ in sel.select(timeout):
                    i, c = key.data, key.fileobj
                    while True:
                        try:
                            chunk = c.recv(65536)
                        except (ssl.SSLWantReadError, BlockingIOError):
                            break
                        except (ConnectionResetError, ssl.SSLError, OSError):
                            chunk = b""
                        if not chunk:
                            ended[i] = time.monotonic()
                            sel.unregister(c)
                            break
                        if answered[i] is None:
                            answered[i] = time.monotonic()
                        data[i] += chunk

            def trickle():
                try:
                    batch = 50
                    step = self.ROUND * batch / n  # 50 connections every 30 ms
                    hard_end = None
                    i = 0
                    next_batch = time.monotonic()
                    while not stop.is_set():
                        now = time.monotonic()
                        if now >= next_batch:
                            for _ in range(batch):
                                if answered[i] is None and ended[i] is None and sent[i] < len(head):
                                    try:
                                        conns[i].send(head[sent[i]:sent[i] + 1])
                                        t = time.monotonic()
                                        sent[i] += 1
                                        if last[i] is not None:
                                            max_gap[i] = max(max_gap[i], t - last[i])
                                        last[i] = t
                                        if first[i] is None:
                                            first[i] = t
                                    except (ssl.SSLWantWriteError, BlockingIOError):
                                        pass
                                    except (OSError, ssl.SSLError):
                                        pass  # the server is gone on this one: the read side sees it
                                i = (i + 1) % n
                            next_batch += step
                        if all(e is not None for e in ended):
                            return
                        if hard_end is None and all(f is not None for f in first):
                            hard_end = max(first) + self.TOTAL + self.SLACK + 3
                        if hard_end is not None and time.monotonic() > hard_end:
                            return
                        read_ready(max(0.0, next_batch - time.monotonic()))
                except BaseException as e:  # noqa: BLE001 - reported by the main thread
                    errors.append(repr(e))

            t_setup = time.monotonic() - t_setup
            th = threading.Thread(target=trickle, daemon=True)
            th.start()
            try:
                self.assertTrue(wait_for(lambda: all(f is not None for f in first), 10),
                                "the tricklers did not all start")
                earliest_deadline = min(first) + self.TOTAL
                # Fresh clients while all 1,000 trickle: each answered within 1 s.
                round_trips = []
                while time.monotonic() < earliest_deadline - 0.8:
                    self.assertEqual(sum(e is not None for e in ended), 0,
                                     "tricklers were closed before any head deadline")
                    t0 = time.monotonic()
                    r = s.get("/hello")
                    rtt = time.monotonic() - t0
                    round_trips.append(round(rtt, 3))
                    self.assertEqual((r.status, r.body), (200, HELLO), r)
                    self.assertLess(rtt, 1.0, f"a fresh client waited {rtt:.2f} s behind "
                                              f"{self.N} slowloris connections")
                    time.sleep(0.2)  # pacing of the fresh clients
                self.assertGreaterEqual(len(round_trips), 2, "no time left to try a fresh client "
                                                             f"(setup too slow?): {round_trips}")
                th.join(self.TOTAL + self.SLACK + 10)
                self.assertFalse(th.is_alive(), "the trickling thread did not finish")
            finally:
                stop.set()
                th.join(5)
            self.assertEqual(errors, [])
            still_open = [i for i in range(n) if ended[i] is None]
            self.assertEqual(len(still_open), 0,
                             f"{len(still_open)} of {n} trickling connections were not closed by the "
                             f"server within header_timeout_ms + {self.SLACK + 3} s")
            not_408 = [(i, data[i][:40]) for i in range(n) if not data[i].startswith(b"HTTP/1.1 408 ")]
            self.assertEqual(not_408[:5], [], f"{len(not_408)} tricklers ended without a 408")
            lives = sorted(ended[i] - first[i] for i in range(n))
            self.assertGreater(lives[0], self.TOTAL - 0.25,
                               f"a trickler was closed {lives[0]:.2f} s after its first byte, before "
                               f"header_timeout_ms ({self.TOTAL:.0f} s); no pause reached "
                               f"header_read_timeout_ms ({self.BETWEEN:.0f} s)")
            self.assertLess(lives[-1], self.TOTAL + self.SLACK,
                            f"a trickler lived {lives[-1]:.2f} s after its first byte "
                            f"(header_timeout_ms {self.TOTAL:.0f} s)")
            self.assertLess(max(max_gap), self.BETWEEN - 0.3,
                            "the test did not keep each trickler's pauses below header_read_timeout_ms")
            if harness.VERBOSE:
                sys.stderr.write(f"\nslowloris: setup {t_setup:.1f} s, fresh round trips {round_trips}, "
                                 f"lives {lives[0]:.2f}..{lives[-1]:.2f} s\n")
        finally:
            for c in conns:
                try:
                    c.close()
                except OSError:
                    pass
        self.assertTrue(s.running())
        self.assertEqual(s.get("/hello").body, HELLO)


if __name__ == "__main__":
    harness.main()
