"""Tier 85: behind a load balancer (issue #13): the PROXY protocol (v1 and v2) on a listener, accepted
only from its trusted_proxies, and X-Forwarded-For / Forwarded believed only from trusted peers.

Runs once per transport (TRELLIS_TEST_TRANSPORT plain, tls, auto): on tls and auto listeners the
PROXY header comes in clear before the TLS handshake, as HAProxy sends it (the raw socket is wrapped
with the harness's client_context() after the header). The real client address must reach what
request_peer returns (the echo plugin's "peer") and the access log's first field.

Bad input closes the connection with no answer byte: an untrusted peer (closed at once, before
anything is read), malformed v1/v2 headers, a truncated one, a slow one (limits.header_timeout_ms).
"""

import json
import os
import re
import socket
import ssl
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (LOOPBACK, TRANSPORT, TrellisTestCase, base_config, build_request,  # noqa: E402
                     client_context, parse_responses, recv_until_closed, run_trellis, wait_for)

TRUSTED = ["127.0.0.1", "::1"]
HEADER_TIMEOUT_MS = 1500  # the reject server's limits.header_timeout_ms
AT_ONCE = 1.0             # a malformed header is refused well before that timeout

# --------------------------------------------------------------------------------------------
# PROXY protocol headers (https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt)
# --------------------------------------------------------------------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
AF_UNSPEC, AF_INET4, AF_INET6_, AF_UNIX_ = 0x00, 0x10, 0x20, 0x30
STREAM = 0x01
LOCAL, PROXY = 0x0, 0x1
PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_NOOP = 0x01, 0x02, 0x04


def v1(proto: str, src: str = "", dst: str = "", sport=None, dport=None) -> bytes:
    parts = ["PROXY", proto] + [str(x) for x in (src, dst, sport, dport) if x not in ("", None)]
    return (" ".join(parts) + "\r\n").encode()


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2(cmd: int = PROXY, fam: int = AF_INET4 | STREAM, addr: bytes = b"", tlvs: bytes = b"",
       length: int | None = None, version: int = 2, sig: bytes = V2_SIG) -> bytes:
    """A v2 header; length: the declared length (default: that of addr + tlvs)."""
    body = addr + tlvs
    return sig + bytes([(version << 4) | cmd, fam]) + struct.pack(
        "!H", len(body) if length is None else length) + body


def v2_addr4(src: str, sport: int, dst: str = "198.51.100.1", dport: int = 443) -> bytes:
    return (socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
            + struct.pack("!HH", sport, dport))


def v2_addr6(src: str, sport: int, dst: str = "2001:db8::2", dport: int = 443) -> bytes:
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", sport, dport))


def v2_tcp4(src="192.0.2.10", sport=5678, tlvs=b"", **kw) -> bytes:
    return v2(PROXY, AF_INET4 | STREAM, v2_addr4(src, sport), tlvs, **kw)


def v2_tcp6(src="2001:db8::1", sport=443, tlvs=b"", **kw) -> bytes:
    return v2(PROXY, AF_INET6_ | STREAM, v2_addr6(src, sport), tlvs, **kw)


def v2_unix_addr() -> bytes:
    return b"/run/haproxy/client.sock".ljust(108, b"\0") + b"/run/trellis/http.sock".ljust(108, b"\0")


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------

def what_follows(tls: bool, target: str = "/echo/rejected") -> bytes:
    """What a client sends after its PROXY header: a ClientHello on a TLS connection, else a
    request. A server that wrongly accepted the header would answer either."""
    if tls:
        return harness.tls_client_hello()
    return build_request("GET", target, [("Connection", "close")])


def peer_address(peer: str) -> str:
    """The address part of a request_peer string: "1.2.3.4:5" -> "1.2.3.4",
    "[2001:db8::1]:443" -> "2001:db8::1", "203.0.113.7" -> itself, "2001:db8::7" -> itself."""
    if peer.startswith("["):
        return peer[1:peer.index("]")]
    if peer.count(":") == 1:
        return peer.split(":", 1)[0]
    return peer


class Proxied:
    """One TCP connection that sends a PROXY header in clear, then speaks the listener's transport
    (TLS unless tls=False). mode: "plain" (header, then the rest), "coalesced" (the header and the
    first flight of what follows in one TCP segment: MSG_MORE), "split" (the header in three sends
    a little apart, as a slow network would cut it)."""

    def __init__(self, port: int, header: bytes, tls: bool, mode: str = "plain", timeout: float = 5.0):
        self.raw = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.local_port = self.raw.getsockname()[1]
        self.tls = tls
        self.sock = self.raw
        self.pending = b""
        if mode == "split" and len(header) >= 3:
            a, b = len(header) // 3, 2 * len(header) // 3
            for piece in (header[:a], header[a:b], header[b:]):
                self.raw.sendall(piece)
                time.sleep(0.05)  # pacing of the pieces, not a synchronisation
        elif mode == "coalesced":
            if tls:
                # Held back by the kernel until the next send (the ClientHello) without MSG_MORE.
                self.raw.send(header, socket.MSG_MORE)
            else:
                self.pending = header  # goes out with the first request, in one send
        else:
            self.raw.sendall(header)
        if tls:
            self.sock = client_context().wrap_socket(self.raw, server_hostname="localhost")
            self.sock.settimeout(timeout)

    def send(self, data: bytes):
        self.sock.sendall(self.pending + data)
        self.pending = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------

def pp_config(trusted=TRUSTED, proxy_protocol=True, **overrides) -> dict:
    """base_config() whose listener takes PROXY headers (proxy_protocol) from `trusted`."""
    cfg = base_config(**overrides)
    listener = cfg["listen"][0]
    if proxy_protocol:
        listener["proxy_protocol"] = True
    if trusted is not None:
        listener["trusted_proxies"] = list(trusted)
    return cfg


class ProxyCase(TrellisTestCase):
    def access_field(self, log, tag: str) -> str:
        """The first field of the access log line of the request for /echo/<tag>."""
        needle = f'"GET /echo/{tag} HTTP/1.1"'

        def line():
            if not log.exists():
                return None
            for ln in log.read_text(errors="replace").splitlines():
                if needle in ln:
                    return ln
            return None
        ln = wait_for(line, 5)
        self.assertIsNotNone(ln, f"no access log line for /echo/{tag}: "
                                 f"{log.read_text() if log.exists() else '(missing)'}")
        return ln.split(" ", 1)[0]

    def echo_through(self, port: int, header: bytes, tag: str, tls: bool = harness.TLS,
                     mode: str = "plain", headers=()) -> tuple[dict, int]:
        """Sends header, then GET /echo/<tag> (Connection: close); returns (echo JSON, the
        client's local port)."""
        c = Proxied(port, header, tls, mode)
        try:
            c.send(build_request("GET", f"/echo/{tag}", [("Connection", "close"), *headers]))
            data, closed = recv_until_closed(c.sock, 5)
        finally:
            c.close()
        resps, rest = parse_responses(data)
        self.assertEqual(len(resps), 1, f"{header!r}: expected one response, got {data[:300]!r}")
        self.assertEqual(resps[0].status, 200, resps[0])
        return resps[0].json(), c.local_port


# --------------------------------------------------------------------------------------------
# Good headers from a trusted proxy
# --------------------------------------------------------------------------------------------

class ProxyProtocolAccepted(ProxyCase):
    def setUp(self):
        super().setUp()
        self.log = self.tmp / "access.log"
        self.s = self.start_server(pp_config(access_log=str(self.log)))

    def check(self, header: bytes, peer: str | None, logged: str | None, tag: str, **kw):
        """peer None: the socket's own peer (127.0.0.1 and the client's port) is kept."""
        j, local_port = self.echo_through(self.s.port, header, tag, **kw)
        if peer is None:
            self.assertEqual(j["peer"], f"{LOOPBACK}:{local_port}", header)
            self.assertEqual(self.access_field(self.log, tag), LOOPBACK, header)
        else:
            self.assertEqual(j["peer"], peer, header)
            self.assertEqual(self.access_field(self.log, tag), logged, header)

    def test_v1_tcp4(self):
        self.check(v1("TCP4", "192.0.2.10", "198.51.100.1", 5678, 443), "192.0.2.10:5678",
                   "192.0.2.10", "v1-tcp4")

    def test_v1_tcp6(self):
        self.check(v1("TCP6", "2001:db8::1", "2001:db8::2", 443, 8443), "[2001:db8::1]:443",
                   "2001:db8::1", "v1-tcp6")

    def test_v1_unknown_keeps_the_socket_peer(self):
        self.check(b"PROXY UNKNOWN\r\n", None, None, "v1-unknown")
        # The protocol says a receiver ignores whatever follows UNKNOWN on the line.
        self.check(b"PROXY UNKNOWN 192.0.2.10 198.51.100.1 5678 443\r\n", None, None, "v1-unknown-addr")

    def test_v2_tcp4(self):
        self.check(v2_tcp4("192.0.2.10", 5678), "192.0.2.10:5678", "192.0.2.10", "v2-tcp4")

    def test_v2_tcp6(self):
        self.check(v2_tcp6("2001:db8::1", 443), "[2001:db8::1]:443", "2001:db8::1", "v2-tcp6")

    def test_v2_with_tlvs_as_haproxy_sends_them(self):
        tlvs = (tlv(PP2_TYPE_ALPN, b"http/1.1") + tlv(PP2_TYPE_AUTHORITY, b"www.example.com")
                + tlv(PP2_TYPE_NOOP, b"\0" * 7))
        self.check(v2_tcp4("203.0.113.50", 40000, tlvs=tlvs), "203.0.113.50:40000", "203.0.113.50",
                   "v2-tlvs")

    def test_v2_declared_length_1024_is_accepted(self):
        """The limit is "more than 1024 bytes": a header of exactly 1024 (padded with NOOP) passes."""
        pad = 1024 - 12 - 3
        self.check(v2_tcp4("203.0.113.51", 40001, tlvs=tlv(PP2_TYPE_NOOP, b"\0" * pad)),
                   "203.0.113.51:40001", "203.0.113.51", "v2-1024")

    def test_v2_local_keeps_the_socket_peer(self):
        self.check(v2(LOCAL, AF_UNSPEC), None, None, "v2-local")
        # LOCAL (a balancer's own health check) with an address block: the block is ignored.
        self.check(v2(LOCAL, AF_INET4 | STREAM, v2_addr4("192.0.2.10", 5678)), None, None,
                   "v2-local-addr")

    def test_v2_unspec_and_unix_families_keep_the_socket_peer(self):
        self.check(v2(PROXY, AF_UNSPEC), None, None, "v2-unspec")
        self.check(v2(PROXY, AF_UNIX_ | STREAM, v2_unix_addr()), None, None, "v2-unix")

    def test_header_and_data_in_one_segment_and_header_in_pieces(self):
        for mode in ("coalesced", "split"):
            with self.subTest(mode=mode):
                self.check(v1("TCP4", "192.0.2.20", "198.51.100.1", 1111, 443), "192.0.2.20:1111",
                           "192.0.2.20", f"v1-{mode}", mode=mode)
                self.check(v2_tcp6("2001:db8::20", 2222), "[2001:db8::20]:2222", "2001:db8::20",
                           f"v2-{mode}", mode=mode)

    def test_every_request_of_a_keep_alive_connection_has_the_proxied_peer(self):
        c = Proxied(self.s.port, v2_tcp4("192.0.2.30", 3333), harness.TLS)
        self.addCleanup(c.close)
        raw = b"".join(build_request("GET", f"/echo/ka{i}") for i in range(3))
        c.send(raw + build_request("GET", "/echo/ka3", [("Connection", "close")]))
        data, closed = recv_until_closed(c.sock, 5)
        resps, rest = parse_responses(data)
        self.assertEqual([r.status for r in resps], [200] * 4, data[:500])
        self.assertEqual([r.json()["peer"] for r in resps], ["192.0.2.30:3333"] * 4)
        for i in range(4):
            self.assertEqual(self.access_field(self.log, f"ka{i}"), "192.0.2.30")

    def test_auto_listener_takes_plain_http_after_the_header_too(self):
        if TRANSPORT != "auto":
            self.skipTest("an auto listener only")
        j, _ = self.echo_through(self.s.port, v1("TCP4", "192.0.2.40", "198.51.100.1", 4444, 80),
                                 "auto-plain", tls=False)
        self.assertEqual(j["peer"], "192.0.2.40:4444")
        self.assertEqual(j["transport"]["name"], "plain")
        j, _ = self.echo_through(self.s.port, v2_tcp4("192.0.2.41", 4445), "auto-tls", tls=True)
        self.assertEqual(j["peer"], "192.0.2.41:4445")
        self.assertEqual(j["transport"]["name"], "tls")


# --------------------------------------------------------------------------------------------
# Bad input: the connection is closed, nothing is answered
# --------------------------------------------------------------------------------------------

BAD_HEADERS = [
    # v1
    ("v1 address out of range", v1("TCP4", "256.1.1.1", "198.51.100.1", 5678, 443)),
    ("v1 three-part address", v1("TCP4", "192.0.2", "198.51.100.1", 5678, 443)),
    ("v1 host name for an address", v1("TCP4", "localhost", "198.51.100.1", 5678, 443)),
    ("v1 IPv6 address in TCP4", v1("TCP4", "2001:db8::1", "198.51.100.1", 5678, 443)),
    ("v1 IPv4 address in TCP6", v1("TCP6", "192.0.2.10", "2001:db8::2", 5678, 443)),
    ("v1 port out of range", v1("TCP4", "192.0.2.10", "198.51.100.1", 65536, 443)),
    ("v1 negative port", v1("TCP4", "192.0.2.10", "198.51.100.1", -1, 443)),
    ("v1 port not a number", v1("TCP4", "192.0.2.10", "198.51.100.1", "56a", 443)),
    ("v1 missing destination port", v1("TCP4", "192.0.2.10", "198.51.100.1", 5678)),
    ("v1 unknown protocol", v1("UDP4", "192.0.2.10", "198.51.100.1", 5678, 443)),
    ("v1 lower-case proxy", b"proxy TCP4 192.0.2.10 198.51.100.1 5678 443\r\n"),
    ("v1 too long (113 bytes)", b"PROXY TCP4 " + b"1" * 100 + b"\r\n"),
    ("v1 too long UNKNOWN (116 bytes)", b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n"),
    ("v1 bare LF", b"PROXY TCP4 192.0.2.10 198.51.100.1 5678 443\n"),
    ("no PROXY header at all", b""),
    # v2
    ("v2 wrong signature", v2_tcp4(sig=V2_SIG[:-1] + b"X")),
    ("v2 version 1", v2_tcp4(version=1)),
    ("v2 version 3", v2_tcp4(version=3)),
    ("v2 unknown command", v2(0xF, AF_INET4 | STREAM, v2_addr4("192.0.2.10", 5678))),
    ("v2 TCP4 address longer than the declared length",
     v2(PROXY, AF_INET4 | STREAM, v2_addr4("192.0.2.10", 5678)[:8])),
    ("v2 TCP6 address longer than the declared length",
     v2(PROXY, AF_INET6_ | STREAM, v2_addr6("2001:db8::1", 443)[:20])),
    ("v2 declared length 1025", v2_tcp4(tlvs=tlv(PP2_TYPE_NOOP, b"\0" * (1025 - 15)))),
    ("v2 TLV flood: declared length 60000, all sent",
     v2_tcp4(tlvs=tlv(PP2_TYPE_NOOP, b"\0" * (60000 - 15)))),
]

TRUNCATED = [
    ("v1 without its CRLF", b"PROXY TCP4 192.0.2.10 198.51.100.1 5678 443"),
    ("v1 cut after PROXY", b"PROXY "),
    ("v2 signature cut", V2_SIG[:6]),
    ("v2 cut in the address", v2_tcp4()[:22]),
]


class ProxyProtocolRejected(ProxyCase):
    def setUp(self):
        super().setUp()
        self.log = self.tmp / "access.log"
        self.s = self.start_server(pp_config(access_log=str(self.log),
                                             limits={"header_timeout_ms": HEADER_TIMEOUT_MS}))

    def rejected(self, payload: bytes, eof: bool = False, port: int | None = None,
                 follow: bool = True) -> tuple[bytes, bool, float]:
        """Sends payload (then, unless eof, what a client sends next; with eof, a FIN); returns
        (bytes received until close, closed within 5 s, seconds until then)."""
        so = socket.create_connection((LOOPBACK, port or self.s.port), timeout=5)
        self.addCleanup(so.close)
        t0 = time.monotonic()
        try:
            so.sendall(payload + (what_follows(harness.TLS) if follow and not eof else b""))
            if eof:
                so.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # closed while we were still sending: what a flood should get
        data, closed = recv_until_closed(so, 5)
        return data, closed, time.monotonic() - t0

    def assertStillServes(self):
        j, _ = self.echo_through(self.s.port, v1("TCP4", "192.0.2.99", "198.51.100.1", 9999, 443),
                                 f"alive{time.monotonic_ns()}")
        self.assertEqual(j["peer"], "192.0.2.99:9999")

    def test_malformed_headers_are_closed_at_once_unanswered(self):
        for name, payload in BAD_HEADERS:
            with self.subTest(name):
                data, closed, took = self.rejected(payload)
                self.assertEqual(data, b"", f"{name}: the server answered")
                self.assertTrue(closed, f"{name}: not closed")
                self.assertLess(took, AT_ONCE, f"{name}: closed only after {took:.2f} s "
                                               f"(the header timeout, not the malformed header)")
        self.assertStillServes()
        self.assertNotIn("/echo/rejected", self.log.read_text() if self.log.exists() else "")

    def test_refusals_are_counted_in_the_metrics(self):
        cfg = pp_config(limits={"header_timeout_ms": HEADER_TIMEOUT_MS})
        cfg["plugins"].append({"name": "status", "path": "status"})
        cfg["routes"].insert(0, {"prefix": "/metrics", "plugin": "status"})
        s = self.start_server(cfg)
        bad = [payload for _, payload in BAD_HEADERS[:3]]
        for payload in bad:
            _, closed, _ = self.rejected(payload, port=s.port)
            self.assertTrue(closed)

        def refused():
            # From loopback, as PROXY says: the status plugin is private (loopback only).
            c = Proxied(s.port, v1("TCP4", "127.0.0.1", "127.0.0.1", 1, 443), harness.TLS)
            try:
                c.send(build_request("GET", "/metrics", [("Connection", "close")]))
                data, _ = recv_until_closed(c.sock, 5)
            finally:
                c.close()
            m = re.search(rb"^trellis_proxy_protocol_refused_total (\d+)$", data, re.M)
            self.assertIsNotNone(m, data[:500])
            return int(m.group(1))
        self.assertEqual(refused(), len(bad))

    def test_truncated_headers_are_closed_unanswered(self):
        for name, payload in TRUNCATED:
            with self.subTest(name):
                data, closed, took = self.rejected(payload, eof=True)
                self.assertEqual(data, b"", f"{name}: the server answered")
                self.assertTrue(closed, f"{name}: not closed after the client's EOF")
                self.assertLess(took, AT_ONCE, f"{name}: closed only after {took:.2f} s")
        self.assertStillServes()

    def test_slow_headers_are_closed_after_the_header_timeout(self):
        for name, payload in (("v1", b"PROXY TCP4 "), ("v2", v2_tcp4()[:20])):
            with self.subTest(name):
                so = socket.create_connection((LOOPBACK, self.s.port), timeout=5)
                self.addCleanup(so.close)
                t0 = time.monotonic()
                so.sendall(payload)
                so.settimeout(0.6)
                try:
                    early = so.recv(1)
                    self.fail(f"{name}: closed or answered ({early!r}) before the header timeout")
                except socket.timeout:
                    pass
                data, closed = recv_until_closed(so, HEADER_TIMEOUT_MS / 1000 + 3)
                took = time.monotonic() - t0
                self.assertEqual(data, b"", name)
                self.assertTrue(closed, f"{name}: still open {took:.1f} s after a partial header")
                self.assertLess(took, HEADER_TIMEOUT_MS / 1000 + 2.0, name)
        self.assertStillServes()

    def test_bad_clients_do_not_hurt_a_good_one(self):
        def fds():
            return len(os.listdir(f"/proc/{self.s.pid}/fd"))
        self.assertStillServes()
        last = [None]

        def stable():
            n = fds()
            same = n == last[0]
            last[0] = n
            return same
        wait_for(stable, 3, interval=0.05)
        baseline = fds()
        # Three slow clients hold partial headers while a good one comes and goes.
        slow = []
        for payload in (b"PROXY TCP4 19", V2_SIG[:8], v2_tcp4()[:18]):
            so = socket.create_connection((LOOPBACK, self.s.port), timeout=5)
            self.addCleanup(so.close)
            so.sendall(payload)
            slow.append(so)
        t0 = time.monotonic()
        j, _ = self.echo_through(self.s.port, v2_tcp4("192.0.2.77", 7777), "good-among-slow")
        self.assertEqual(j["peer"], "192.0.2.77:7777")
        self.assertLess(time.monotonic() - t0, 1.0, "the good client waited for the slow ones")
        # A burst of malformed ones, from several threads at once.
        errors = []

        def burst(k):
            for i in range(10):
                name, payload = BAD_HEADERS[(k * 10 + i) % len(BAD_HEADERS)]
                try:
                    with socket.create_connection((LOOPBACK, self.s.port), timeout=5) as so:
                        try:
                            so.sendall(payload + what_follows(harness.TLS))
                        except (BrokenPipeError, ConnectionResetError, TimeoutError):
                            pass
                        data, closed = recv_until_closed(so, 5)
                        if data or not closed:
                            errors.append((name, data[:100], closed))
                except OSError as e:
                    errors.append((name, repr(e)))
        threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        j, _ = self.echo_through(self.s.port, v1("TCP6", "2001:db8::77", "2001:db8::2", 7778, 443),
                                 "good-among-bad")
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(j["peer"], "[2001:db8::77]:7778")
        for so in slow:
            so.close()
        self.assertStillServes()
        self.assertTrue(wait_for(lambda: fds() <= baseline, 5),
                        f"descriptors: {fds()} after the bad clients, {baseline} before")
        self.assertTrue(self.s.running())


class UntrustedPeer(ProxyCase):
    """The listener takes PROXY headers from 10.0.0.0/8 only; the test connects from 127.0.0.1."""

    def test_closed_at_once_without_reading(self):
        log = self.tmp / "access.log"
        s = self.start_server(pp_config(trusted=["10.0.0.0/8"], access_log=str(log)))
        # Nothing sent: the default header timeout is 10 s, so a close now is the refusal.
        so = socket.create_connection((LOOPBACK, s.port), timeout=5)
        self.addCleanup(so.close)
        t0 = time.monotonic()
        data, closed = recv_until_closed(so, 5)
        self.assertEqual(data, b"")
        self.assertTrue(closed, "a connection from an untrusted peer was kept open")
        self.assertLess(time.monotonic() - t0, 2.0, "not closed at once")
        # A well-formed header (v1 and v2) with what follows: still nothing answered.
        for name, header in (("v1", v1("TCP4", "10.1.2.3", "10.0.0.1", 5678, 443)),
                             ("v2", v2_tcp4("10.1.2.3", 5678))):
            with self.subTest(name):
                so = socket.create_connection((LOOPBACK, s.port), timeout=5)
                self.addCleanup(so.close)
                try:
                    so.sendall(header + what_follows(harness.TLS, "/echo/untrusted"))
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass
                data, closed = recv_until_closed(so, 5)
                self.assertEqual(data, b"", f"{name}: answered an untrusted peer")
                self.assertTrue(closed)
        # A plain client with no header at all: refused the same way.
        so = socket.create_connection((LOOPBACK, s.port), timeout=5)
        self.addCleanup(so.close)
        try:
            so.sendall(what_follows(harness.TLS, "/echo/untrusted"))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        data, closed = recv_until_closed(so, 5)
        self.assertEqual((data, closed), (b"", True))
        self.assertTrue(s.running())
        self.assertNotIn("/echo/untrusted", log.read_text() if log.exists() else "")


# --------------------------------------------------------------------------------------------
# X-Forwarded-For and Forwarded
# --------------------------------------------------------------------------------------------

# (name, headers, the client's address), with the default real_ip_header, X-Forwarded-For.
XFF_CASES = [
    ("XFF: the right-most address", [("X-Forwarded-For", "198.51.100.9, 203.0.113.7")], "203.0.113.7"),
    ("XFF: trusted hops skipped", [("X-Forwarded-For", "198.51.100.9, 203.0.113.7, 127.0.0.1")],
     "203.0.113.7"),
    ("XFF: two header lines are one list",
     [("X-Forwarded-For", "198.51.100.9"), ("X-Forwarded-For", "203.0.113.7")], "203.0.113.7"),
    ("XFF: IPv6", [("X-Forwarded-For", "2001:db8::5")], "2001:db8::5"),
    # What the client wrote left of the first untrusted hop is never read: a forged or broken
    # value there cannot hide the real client behind the proxy's address.
    ("XFF: garbage left of the client", [("X-Forwarded-For", "x, 203.0.113.7")], "203.0.113.7"),
    # A Forwarded header the client sent through an X-Forwarded-For proxy is not believed.
    ("XFF: a client's Forwarded ignored",
     [("Forwarded", "for=198.51.100.1"), ("X-Forwarded-For", "203.0.113.7")], "203.0.113.7"),
]
# With "real_ip_header": "Forwarded".
FORWARDED_CASES = [
    ("Forwarded: the right-most for=", [("Forwarded", "for=192.0.2.60;proto=http, for=203.0.113.7")],
     "203.0.113.7"),
    ("Forwarded: quoted IPv6 with a port", [("Forwarded", 'for="[2001:db8::7]:4711"')], "2001:db8::7"),
    ("Forwarded: a client's X-Forwarded-For ignored",
     [("X-Forwarded-For", "198.51.100.1"), ("Forwarded", "for=203.0.113.7")], "203.0.113.7"),
]


class ForwardedHeaders(ProxyCase):
    def echo(self, s, tag, headers):
        c = self.conn(s)
        c.request("GET", f"/echo/{tag}", [("Connection", "close"), *headers])
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        return r.json()["peer"], c.local_port

    def check_believed(self, s, log, cases, prefix):
        for i, (name, headers, client) in enumerate(cases):
            with self.subTest(name):
                peer, _ = self.echo(s, f"{prefix}{i}", headers)
                self.assertEqual(peer_address(peer), client, f"{name}: peer {peer!r}")
                self.assertEqual(self.access_field(log, f"{prefix}{i}"), client, name)

    def test_believed_from_a_trusted_peer(self):
        log = self.tmp / "access.log"
        s = self.start_server(pp_config(proxy_protocol=False, access_log=str(log)))
        self.check_believed(s, log, XFF_CASES, "xff")
        # An unreadable hop where the trusted chain ends: the peer stays the socket's.
        for name, headers in (("XFF", [("X-Forwarded-For", "not-an-address")]),
                              ("XFF behind a trusted hop", [("X-Forwarded-For", "x, 127.0.0.1")])):
            with self.subTest(f"unparsable {name}"):
                peer, local_port = self.echo(s, f"bad-{name.replace(' ', '-')}", headers)
                self.assertEqual(peer, f"{LOOPBACK}:{local_port}")
        # Without the header: the socket's peer.
        peer, local_port = self.echo(s, "none", [])
        self.assertEqual(peer, f"{LOOPBACK}:{local_port}")

    def test_forwarded_when_the_listener_names_it(self):
        log = self.tmp / "access.log"
        cfg = pp_config(proxy_protocol=False, access_log=str(log))
        cfg["listen"][0]["real_ip_header"] = "Forwarded"
        s = self.start_server(cfg)
        self.check_believed(s, log, FORWARDED_CASES, "fwd")
        peer, local_port = self.echo(s, "bad-fwd", [("Forwarded", "for=;;==,")])
        self.assertEqual(peer, f"{LOOPBACK}:{local_port}")

    def test_none_believes_no_header(self):
        cfg = pp_config(proxy_protocol=False)
        cfg["listen"][0]["real_ip_header"] = "none"
        s = self.start_server(cfg)
        peer, local_port = self.echo(s, "off", [("X-Forwarded-For", "203.0.113.7")])
        self.assertEqual(peer, f"{LOOPBACK}:{local_port}")

    def test_ignored_from_an_untrusted_peer(self):
        log = self.tmp / "access.log"
        s = self.start_server(pp_config(trusted=["10.0.0.0/8"], proxy_protocol=False,
                                        access_log=str(log)))
        for i, (name, headers, _) in enumerate(XFF_CASES + FORWARDED_CASES):
            with self.subTest(name):
                peer, local_port = self.echo(s, f"untrusted{i}", headers)
                self.assertEqual(peer, f"{LOOPBACK}:{local_port}", f"{name}: believed an untrusted peer")
                self.assertEqual(self.access_field(log, f"untrusted{i}"), LOOPBACK)

    def test_after_a_proxy_header_the_proxied_peer_decides(self):
        """XFF is believed when the address the PROXY header gave is trusted, not otherwise."""
        log = self.tmp / "access.log"
        s = self.start_server(pp_config(trusted=["127.0.0.1", "10.0.0.0/8"], access_log=str(log)))
        xff = [("X-Forwarded-For", "203.0.113.7")]
        j, _ = self.echo_through(s.port, v1("TCP4", "10.1.2.3", "10.0.0.1", 5678, 443), "pp-trusted",
                                 headers=xff)
        self.assertEqual(peer_address(j["peer"]), "203.0.113.7", j["peer"])
        self.assertEqual(self.access_field(log, "pp-trusted"), "203.0.113.7")
        j, _ = self.echo_through(s.port, v2_tcp4("192.0.2.10", 5678), "pp-untrusted", headers=xff)
        self.assertEqual(j["peer"], "192.0.2.10:5678")
        self.assertEqual(self.access_field(log, "pp-untrusted"), "192.0.2.10")


# --------------------------------------------------------------------------------------------
# Configuration errors
# --------------------------------------------------------------------------------------------

class ProxyConfig(TrellisTestCase):
    def listener_config(self, **listener) -> dict:
        cfg = base_config()
        cfg["listen"][0].update(listener)
        return cfg

    def test_errors_name_the_json_pointer(self):
        cases = [
            ({"proxy_protocol": True}, "/listen/0/trusted_proxies"),
            ({"proxy_protocol": True, "trusted_proxies": []}, "/listen/0/trusted_proxies"),
            ({"proxy_protocol": True, "trusted_proxies": ["127.0.0.1", "10.0.0.0/33"]},
             "/listen/0/trusted_proxies/1"),
            ({"proxy_protocol": True, "trusted_proxies": ["127.0.0.1", "nope"]},
             "/listen/0/trusted_proxies/1"),
            ({"trusted_proxies": ["::1", "::1/129"]}, "/listen/0/trusted_proxies/1"),
            ({"trusted_proxies": "127.0.0.1"}, "/listen/0/trusted_proxies"),
            ({"proxy_protocol": "yes", "trusted_proxies": ["127.0.0.1"]}, "/listen/0/proxy_protocol"),
            ({"real_ip_header": "X-Real-IP"}, "/listen/0/real_ip_header"),
            # A Unix socket's peers have no address: only "unix" can let their PROXY headers in.
            ({"address": f"unix:{self.tmp}/pp.sock", "proxy_protocol": True,
              "trusted_proxies": ["127.0.0.1"]}, "/listen/0/trusted_proxies"),
        ]
        for listener, pointer in cases:
            with self.subTest(listener=listener):
                cfg = self.listener_config(**listener)
                if str(listener.get("address", "")).startswith("unix:"):
                    del cfg["listen"][0]["port"]
                p = self.write_config_file(cfg)
                r = run_trellis("--check", "--config", str(p))
                self.assertFalse(r.timed_out, r)
                self.assertEqual(r.returncode, 1, r)
                self.assertIn(pointer, r.stderr, r)
                self.assertNotIn("configuration OK", r.output, r)
        # The same refusal at start: nothing listens.
        p = self.write_config_file(self.listener_config(proxy_protocol=True, trusted_proxies=["nope"]))
        r = run_trellis("--config", str(p))
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("/listen/0/trusted_proxies/0", r.stderr, r)
        self.assertNotIn("listening on", r.output, r)

    def test_good_lists_pass(self):
        p = self.write_config_file(self.listener_config(
            proxy_protocol=True,
            trusted_proxies=["127.0.0.1", "10.0.0.0/8", "::1/128", "2001:db8::/32", "unix"]))
        r = run_trellis("--check", "--config", str(p))
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration OK", r.stdout, r)


if __name__ == "__main__":
    harness.main()
