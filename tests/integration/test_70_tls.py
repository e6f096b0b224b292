"""Tier 70: TLS itself (runs once, TRELLIS_TEST_TRANSPORT=tls): curl over https, the auto listener,
redirect_to_https, HSTS, SNI certificate selection and 421, protocol version / ciphersuite / ALPN /
curve policy, session resumption (tickets and cache, across a reload), client certificates under
each client_auth mode, the self-signed fallback, key/cert mismatch, bad handshakes the server must
survive (its descriptor count back at baseline after each), renegotiation refused, and large
bodies through TLS.

Certificates come from the openssl CLI (harness.make_ca / make_cert); the echo plugin reports what
the connection is (see tls_facts)."""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (LOOPBACK, Conn, TrellisTestCase, base_config, build_request,  # noqa: E402
                     make_ca, make_cert, openssl, parse_responses, recv_until_closed,
                     run_trellis, sha256, suite_pki, tls_settings, wait_for)

HELLO = b"Hello, World!"

# What the server may negotiate (issue #3): ECDHE with AES-GCM or ChaCha20-Poly1305, nothing else.
ALLOWED_OPENSSL_CIPHERS = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305",
}
ALLOWED_MBEDTLS_CIPHERS = {
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256", "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384", "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
}

SELF_SIGNED_RE = re.compile(
    r"tls: generated a self-signed certificate .*\(SHA-256 fingerprint ([0-9A-F]{2}(?::[0-9A-F]{2}){31})\)")


# --------------------------------------------------------------------------------------------
# Certificates for this file (made once, in the suite's PKI dir, removed at exit)
# --------------------------------------------------------------------------------------------

class Certs:
    def __init__(self):
        pki = suite_pki()
        d = pki.dir / "t70"
        self.ca = pki.ca
        self.localhost = pki.server
        # SNI: the first certificate is the default one.
        self.default = make_cert(d, "default", self.ca, "default.example", dns=["default.example"])
        self.a = make_cert(d, "a", self.ca, "a.example", dns=["a.example"])
        self.wild = make_cert(d, "wild", self.ca, "*.wild.example", dns=["*.wild.example"])
        self.exact = make_cert(d, "exact", self.ca, "exact.wild.example",
                               dns=["exact.wild.example"])
        # Client certificates: a "clients CA" the server trusts, and another one it does not.
        self.clients_ca = make_ca(d, "clients-ca", "Trellis Test Clients CA")
        self.client = make_cert(d, "client", self.clients_ca, "client one",
                                dns=["client.example"], client=True)
        self.other_ca = make_ca(d, "other-ca", "Some Other CA")
        self.stranger = make_cert(d, "stranger", self.other_ca, "stranger",
                                  dns=["stranger.example"], client=True)
        self.expired = make_cert(d, "expired", self.clients_ca, "expired one", client=True,
                                 not_before="20200101000000Z", not_after="20210101000000Z")
        # Signed by the trusted CA, but for serverAuth only.
        self.wrong_eku = make_cert(d, "wrong-eku", self.clients_ca, "server only", client=False)


_certs = None


def certs() -> Certs:
    global _certs
    if _certs is None:
        _certs = Certs()
    return _certs


def cert_entry(c) -> dict:
    return {"cert": str(c.cert), "key": str(c.key)}


def der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def tls_facts(j: dict):
    """What the echo plugin says about the connection's TLS (its "transport" object, with the
    peer_* names mapped to client_*), or None on a plain connection."""
    t = j["transport"]
    if t["name"] == "plain":
        assert t["secure"] is False, t
        return None
    assert t["name"] == "tls" and t["secure"] is True, t
    return {"version": t["version"], "cipher": t["cipher"], "server_name": t["server_name"],
            "alpn": t["alpn"], "client_certificate": t["peer_certificate"],
            "client_subject": t["peer_subject"], "client_san": t["peer_san"],
            "client_fingerprint": t["peer_fingerprint"], "client_verify": t["peer_verify"]}


def client_ctx(cafile=None, client_cert=None, alpn=("http/1.1",), verify=True) -> ssl.SSLContext:
    """A fresh TLS client context (TLS 1.2+), trusting cafile (default: the test CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        ctx.load_verify_locations(cafile=str(cafile or certs().ca.cert))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert.cert), str(client_cert.key))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def s_client(port: int, *args: str, input: bytes = b"", timeout: float = 10.0) -> tuple[int, str]:
    """openssl s_client to 127.0.0.1:port (bounded); returns (exit code, stdout + stderr).
    stdin is `input` then EOF, which ends the session once the handshake is done."""
    p = subprocess.run([harness.OPENSSL, "s_client", "-connect", f"{LOOPBACK}:{port}", *args],
                       input=input, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def subject_of(out: str) -> str | None:
    m = re.search(r"^subject=(.*)$", out, re.M)
    return m.group(1).strip() if m else None


def fd_count(s) -> int:
    return len(os.listdir(f"/proc/{s.pid}/fd"))


def rss_kb(s) -> int:
    with open(f"/proc/{s.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def free_port() -> int:
    with socket.socket() as so:
        so.bind((LOOPBACK, 0))
        return so.getsockname()[1]


def client_hello(server_hostname="localhost") -> bytes:
    """The bytes of a real TLS ClientHello (from Python's ssl through memory BIOs)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outgoing.read()
    assert data[:1] == b"\x16", data[:10]
    return data


class TlsTestCase(TrellisTestCase):
    def tls_server(self, tls: dict | None = None, listen: list | None = None, www=None,
                   prepare=None, **overrides):
        """A server whose listener(s) speak TLS by default, with the given top-level "tls"."""
        cfg = base_config(**overrides)
        cfg["listen"] = listen or [{"address": LOOPBACK, "port": 0, "transport": "tls"}]
        cfg["tls"] = tls if tls is not None else tls_settings()
        return self.start_server(cfg, www=www, prepare=prepare)

    def tls_conn(self, s, listener=0, ctx=None, sni="localhost", timeout=5.0, rcvbuf=None) -> Conn:
        c = Conn(s.listeners[listener][1], timeout=timeout, transport="tls", rcvbuf=rcvbuf,
                 server_hostname=sni, context=ctx or client_ctx())
        self._conns.append(c)
        if c.handshake_error is not None:
            raise c.handshake_error
        return c

    def echo_tls(self, s, listener=0, ctx=None, sni="localhost", host="localhost"):
        c = self.tls_conn(s, listener, ctx, sni)
        c.request("GET", "/echo/tls", [("Connection", "close")], host=host)
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        return tls_facts(r.json()), r

    def assertHandshakeFails(self, s, ctx, sni="localhost", listener=0, reason=None):
        """The server refuses the handshake (an alert or a close), with no HTTP ever exchanged."""
        try:
            c = Conn(s.listeners[listener][1], timeout=5, transport="tls", server_hostname=sni,
                     context=ctx)
        except ssl.SSLCertVerificationError as e:
            self.fail(f"the client refused the server certificate instead: {e}")
        self._conns.append(c)
        if c.handshake_error is None:
            # TLS 1.2 client certificates: a refusal may come just after the client's Finished.
            c.try_send(build_request("GET", "/hello", [("Connection", "close")]))
            data, closed = c.read_until_closed(5)
            self.assertEqual(data, b"", f"the server answered after a bad handshake: {data[:200]!r}")
            self.assertTrue(closed, "the connection stayed open after a bad handshake")
            return None
        if reason:
            self.assertRegex(str(c.handshake_error), reason)
        return c.handshake_error

    def settled_fds(self, s, ctx=None) -> int:
        """The server's descriptor count once it stops changing (after a warm-up request)."""
        c = self.tls_conn(s, ctx=ctx)
        c.request("GET", "/hello", [("Connection", "close")])
        self.assertEqual(c.read_response().status, 200)
        c.read_until_closed(5)
        c.close()
        last = [None]

        def stable():
            n = fd_count(s)
            same = n == last[0]
            last[0] = n
            return same
        wait_for(stable, 3, interval=0.05)
        return fd_count(s)

    def assertStillServing(self, s, baseline: int, ctx=None):
        """A fresh TLS request is answered, and the descriptor count comes back to baseline."""
        self.assertTrue(s.running(), "the server died")
        c = self.tls_conn(s, ctx=ctx)
        c.request("GET", "/hello", [("Connection", "close")])
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO), r)
        c.close()
        n = wait_for(lambda: fd_count(s) <= baseline, 5)
        self.assertTrue(n, f"descriptors: {fd_count(s)} open, baseline {baseline}")


# --------------------------------------------------------------------------------------------
# HTTP over TLS
# --------------------------------------------------------------------------------------------

class Https(TlsTestCase):
    def test_curl_with_cacert_keeps_the_connection_alive(self):
        s = self.tls_server()
        out1, out2 = self.tmp / "o1", self.tmp / "o2"
        p = subprocess.run(
            ["curl", "-q", "-sS", "-v", "--http1.1", "--noproxy", "*", "--max-time", "10",
             "--cacert", str(certs().ca.cert),
             "--resolve", f"localhost:{s.port}:{LOOPBACK}",
             "-o", str(out1), f"https://localhost:{s.port}/echo/one",
             "-o", str(out2), f"https://localhost:{s.port}/echo/two"],
            capture_output=True, timeout=20)
        err = p.stderr.decode(errors="replace")
        self.assertEqual(p.returncode, 0, err)
        j1, j2 = json.loads(out1.read_bytes()), json.loads(out2.read_bytes())
        self.assertEqual((j1["path"], j2["path"]), ("/echo/one", "/echo/two"))
        self.assertEqual(j1["peer"], j2["peer"], "the second request came on a new connection")
        self.assertRegex(err, r"(?i)re-?using existing connection")
        self.assertIn("SSL connection using TLSv1.2", err)
        self.assertRegex(err, r"ALPN.*http/1\.1")
        facts = tls_facts(j1)
        self.assertEqual(facts["version"], "TLSv1.2")
        self.assertEqual(facts["alpn"], "http/1.1")
        self.assertEqual(facts["server_name"], "localhost")
        # The certificate really is checked: without the test CA curl refuses it.
        r = harness.curl(f"https://localhost:{s.port}/hello", "--cacert",
                         str(certs().other_ca.cert), "--resolve", f"localhost:{s.port}:{LOOPBACK}")
        self.assertEqual(r.returncode, 60, r)  # CURLE_PEER_FAILED_VERIFICATION
        r = s.curl("/hello")  # through the harness: --cacert <test CA>
        self.assertEqual((r.returncode, r.status, r.body), (0, 200, HELLO), r)

    def test_echo_reports_version_cipher_alpn_and_sni(self):
        s = self.tls_server()
        # The raw client speaks HTTP/1.1, so it offers only that (offered h2, the server takes it).
        facts, r = self.echo_tls(s, ctx=client_ctx(alpn=("http/1.1",)))
        self.assertEqual(facts["version"], "TLSv1.2")
        self.assertIn(facts["cipher"], ALLOWED_MBEDTLS_CIPHERS)
        self.assertEqual(facts["alpn"], "http/1.1")
        self.assertEqual(facts["server_name"], "localhost")
        self.assertFalse(facts["client_certificate"])
        self.assertEqual(facts["client_verify"], "none")
        # ChaCha20 when the client offers it, even after AES-GCM (the server's order: mbedTLS's
        # ChaCha20-Poly1305 is faster than its AES-GCM); AES-GCM for a client without ChaCha20.
        ctx = client_ctx()
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305")
        facts, _ = self.echo_tls(s, ctx=ctx)
        self.assertEqual(facts["cipher"], "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256")
        ctx = client_ctx()
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        facts, _ = self.echo_tls(s, ctx=ctx)
        self.assertEqual(facts["cipher"], "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256")

    def test_s_client_sees_tls12_an_allowed_cipher_alpn_and_the_curves(self):
        s = self.tls_server()
        rc, out = s_client(s.port, "-servername", "localhost", "-alpn", "h2,http/1.1")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"Protocol\s*: TLSv1\.2")
        cipher = re.search(r"^\s*Cipher\s*: (\S+)", out, re.M).group(1)
        self.assertIn(cipher, ALLOWED_OPENSSL_CIPHERS, out)
        self.assertIn("ALPN protocol: h2", out)  # the server's preference, when offered
        self.assertIn("Server Temp Key: X25519", out)
        rc, out = s_client(s.port, "-servername", "localhost", "-curves", "P-256")
        self.assertEqual(rc, 0, out)
        self.assertIn("Server Temp Key: ECDH, prime256v1", out)
        rc, out = s_client(s.port, "-servername", "localhost", "-curves", "P-384:P-521")
        self.assertNotEqual(rc, 0, f"a P-384/P-521-only client was served: {out}")

    def test_old_and_too_new_protocol_versions_fail_the_handshake(self):
        s = self.tls_server(limits={"header_timeout_ms": 2000})
        baseline = self.settled_fds(s)
        # TLS 1.1 at most (OpenSSL's default security level would not even offer it: level 0).
        ctx = client_ctx(verify=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are, on purpose
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        self.assertHandshakeFails(s, ctx, reason=r"(?i)protocol.version|unsupported.protocol")
        self.assertStillServing(s, baseline)
        rc, out = s_client(s.port, "-servername", "localhost", "-tls1_1",
                           "-cipher", "DEFAULT:@SECLEVEL=0")
        self.assertNotEqual(rc, 0, out)
        self.assertNotIn("no protocols available", out, "the client never offered TLS 1.1")
        self.assertStillServing(s, baseline)
        # TLS 1.3 only (mbedTLS 2.28 has none): fails too.
        ctx = client_ctx(verify=False)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.assertHandshakeFails(s, ctx)
        self.assertStillServing(s, baseline)

    def test_client_offering_only_cbc_suites_fails_the_handshake(self):
        s = self.tls_server(limits={"header_timeout_ms": 2000})
        baseline = self.settled_fds(s)
        ctx = client_ctx(verify=False)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:"
                        "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:AES128-SHA:AES256-SHA")
        self.assertHandshakeFails(s, ctx, reason=r"(?i)handshake.failure")
        self.assertStillServing(s, baseline)
        rc, out = s_client(s.port, "-servername", "localhost", "-tls1_2",
                           "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES256-SHA")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("Cipher is (NONE)", out)
        self.assertStillServing(s, baseline)

    def test_large_file_arrives_intact(self):
        data = os.urandom(3 * 1024 * 1024 + 12345)
        s = self.tls_server(prepare=lambda srv: (srv.www / "big3.bin").write_bytes(data))
        c = self.tls_conn(s, timeout=20)
        c.request("GET", "/big3.bin")
        c.request("GET", "/hello")
        r = c.read_response(timeout=20)
        self.assertEqual((r.status, len(r.body)), (200, len(data)))
        self.assertEqual(sha256(r.body), sha256(data))
        self.assertEqual(c.read_response().body, HELLO, "keep-alive broken after a large body")
        r = s.curl("/big3.bin", timeout=20)
        self.assertEqual((r.returncode, r.status), (0, 200), r)
        self.assertEqual(sha256(r.body), sha256(data))

    def test_slow_reader_of_50_mb_does_not_grow_the_server(self):
        size = 50 * 1024 * 1024
        digest = hashlib.sha256()

        def prepare(srv):
            with open(srv.www / "big50.bin", "wb") as f:
                for i in range(50):
                    block = os.urandom(1024 * 1024)
                    digest.update(block)
                    f.write(block)
        s = self.tls_server(prepare=prepare, limits={"send_timeout_ms": 30000})
        self.assertEqual(s.get("/notes.txt").status, 200)  # warm up: one TLS connection done
        before = rss_kb(s)
        # a small receive buffer: the server's writes block on this client most of the time
        c = self.tls_conn(s, timeout=30, rcvbuf=64 * 1024)
        c.request("GET", "/big50.bin", [("Connection", "close")])
        head = c.read_head(timeout=10)
        self.assertEqual((head.status, head.header("Content-Length")), (200, str(size)))
        got = hashlib.sha256()
        received = 0
        peak = before
        rate = 25 * 1024 * 1024  # bytes/s: far slower than the server reads its disk
        t0 = time.monotonic()
        deadline = t0 + 40
        reads = 0
        while received < size:
            if c.buf:
                got.update(c.buf)
                received += len(c.buf)
                c.buf = bytearray()
            ahead = received / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
            reads += 1
            if reads % 32 == 0:
                peak = max(peak, rss_kb(s))
            if received < size and not c._recv(deadline, 256 * 1024):
                break
        got.update(c.buf)
        received += len(c.buf)
        peak = max(peak, rss_kb(s))
        self.assertEqual(received, size, "the body was cut short")
        self.assertEqual(got.hexdigest(), digest.hexdigest())
        growth_mb = (peak - before) / 1024
        self.assertLess(growth_mb, 10, f"server RSS grew by {growth_mb:.1f} MB "
                                       f"({before} kB -> {peak} kB) for one slow TLS reader")


# --------------------------------------------------------------------------------------------
# The auto listener, redirect_to_https, HSTS, per-listener settings
# --------------------------------------------------------------------------------------------

class AutoAndRedirects(TlsTestCase):
    def test_auto_listener_serves_plain_and_tls_on_one_port(self):
        s = self.tls_server(listen=[{"address": LOOPBACK, "port": 0, "transport": "auto"}])
        self.assertEqual(s.transports, ["auto"])
        self.assertRegex(s.stderr_text(), harness.LISTENING_RE)
        # plain
        c = Conn(s.port, transport="plain")
        self._conns.append(c)
        c.request("GET", "/echo/plain")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(tls_facts(r.json()), r.json())
        # TLS on the same port
        facts, r = self.echo_tls(s)
        self.assertIsNotNone(facts)
        self.assertEqual(facts["version"], "TLSv1.2")
        # curl, both ways
        r = harness.curl(s.http_url("/hello"))
        self.assertEqual((r.returncode, r.status, r.body), (0, 200, HELLO), r)
        r = harness.curl(s.url("/hello"))
        self.assertTrue(s.url("/hello").startswith("https://"))
        self.assertEqual((r.returncode, r.status, r.body), (0, 200, HELLO), r)
        # keep-alive on both kinds
        for c in (self.conn(s, transport="plain"), self.tls_conn(s)):
            for i in range(3):
                c.request("GET", f"/echo/{i}")
                self.assertEqual(c.read_response().json()["path"], f"/echo/{i}")

    def test_hsts_on_tls_responses_only(self):
        s = self.tls_server(tls=tls_settings(hsts="max-age=31536000"),
                            listen=[{"address": LOOPBACK, "port": 0, "transport": "auto"}])
        for target, status in (("/hello", 200), ("/missing.html", 404)):
            with self.subTest(target):
                c = self.tls_conn(s)
                c.request("GET", target)
                r = c.read_response()
                self.assertEqual(r.status, status, r)
                self.assertEqual(r.header_all("Strict-Transport-Security"), ["max-age=31536000"], r)
                p = self.conn(s, transport="plain")
                p.request("GET", target)
                r = p.read_response()
                self.assertEqual(r.status, status, r)
                self.assertFalse(r.has_header("Strict-Transport-Security"),
                                 f"HSTS on a plain response: {r!r}")

    def redirect(self, s, raw: bytes, listener=0):
        c = Conn(s.listeners[listener][1], transport="plain")
        self._conns.append(c)
        c.send(raw)
        r = c.read_response(head=raw.startswith(b"HEAD "))
        self.assertEqual(r.status, 308, r)
        self.assertCommonHeaders(r)
        self.assertFalse(r.has_header("Strict-Transport-Security"), r)
        return r.header("Location")

    def test_redirect_to_https_string_keeps_path_and_query(self):
        s = self.tls_server(listen=[
            {"address": LOOPBACK, "port": 0, "transport": "plain",
             "redirect_to_https": "https://secure.example:8443"},
            {"address": LOOPBACK, "port": 0, "transport": "auto",
             "redirect_to_https": "https://secure.example:8443"}])
        for listener in (0, 1):
            with self.subTest(listener=listener):
                loc = self.redirect(s, build_request("GET", "/docs/page.html?a=1&b=%20x"), listener)
                self.assertEqual(loc, "https://secure.example:8443/docs/page.html?a=1&b=%20x")
                loc = self.redirect(s, build_request("POST", "/echo", body=b"x"), listener)
                self.assertEqual(loc, "https://secure.example:8443/echo")
                loc = self.redirect(s, build_request("GET", "/"), listener)
                self.assertEqual(loc, "https://secure.example:8443/")
        for target, want in (("http://localhost/p/q?x=1", "/p/q?x=1"),
                             ("http://localhost/a%20b?c=%2F", "/a%20b?c=%2F"),
                             ("http://localhost", "/")):
            with self.subTest("absolute-form target", target=target):
                loc = self.redirect(s, f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                self.assertEqual(loc, "https://secure.example:8443" + want)
        # TLS on the auto listener is served, not redirected.
        facts, r = self.echo_tls(s, listener=1)
        self.assertIsNotNone(facts)
        r = harness.curl(s.url("/hello", listener=1))
        self.assertEqual((r.status, r.body), (200, HELLO), r)

    def test_redirect_never_splits_the_response(self):
        """Encoded CR LF in the target must not become a line break in Location."""
        s = self.tls_server(listen=[{"address": LOOPBACK, "port": 0, "transport": "plain",
                                     "redirect_to_https": "https://secure.example"}])
        for target in ("/x%0d%0aSet-Cookie:%20evil=1", "http://localhost/x%0d%0aSet-Cookie:%20evil=1",
                       "http://localhost/x%0aX-Injected:%201?q=%0d%0aX-Also:%201"):
            with self.subTest(target):
                c = Conn(s.port, transport="plain")
                self._conns.append(c)
                c.send(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                r = c.read_response()
                names = {k.lower() for k, _ in r.headers}
                self.assertFalse(names & {"set-cookie", "x-injected", "x-also"},
                                 f"header injected through the redirect: {r.raw_head!r}")
                self.assertIn(r.status, (308, 400), r)
                if r.status == 308:
                    self.assertNotRegex(r.header("Location"), r"[\x00-\x20\x7f]", r.raw_head)

    def test_redirect_to_https_true_uses_the_host_without_port(self):
        s = self.tls_server(listen=[{"address": LOOPBACK, "port": 0, "transport": "plain",
                                     "redirect_to_https": True}])
        loc = self.redirect(s, build_request("GET", "/a/b?x=1&y=2", host="www.example.org:8080"))
        self.assertEqual(loc.lower(), "https://www.example.org/a/b?x=1&y=2")
        self.assertTrue(loc.endswith("/a/b?x=1&y=2"), loc)  # path and query byte for byte
        loc = self.redirect(s, build_request("HEAD", "/", host="Plain.Example"))
        self.assertEqual(loc.lower(), "https://plain.example/")
        r = harness.curl(s.http_url("/x?y=z"))
        self.assertEqual(r.status, 308, r)
        self.assertEqual(r.header("Location"), f"https://{LOOPBACK}/x?y=z")

    def test_curl_follows_the_redirect_to_tls_on_the_same_auto_port(self):
        for attempt in range(3):  # the port is chosen before the server binds it: retry a race
            port = free_port()
            cfg = base_config(listen=[{"address": LOOPBACK, "port": port, "transport": "auto",
                                       "redirect_to_https": f"https://localhost:{port}"}])
            cfg["tls"] = tls_settings()
            s = self.make_server(cfg)
            s.start(wait=False)
            try:
                s.wait_listening()
                break
            except AssertionError:
                if attempt == 2:
                    raise
        r = harness.curl(f"http://{LOOPBACK}:{port}/echo/r?x=1", "-L", "--cacert",
                         str(certs().ca.cert), "--resolve", f"localhost:{port}:{LOOPBACK}")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([h.split(b" ")[1] for h in r.all_heads], [b"308", b"200"], r.all_heads)
        j = json.loads(r.body)
        self.assertEqual((j["path"], j["query"]), ("/echo/r", "x=1"))
        self.assertEqual(tls_facts(j)["version"], "TLSv1.2")

    def test_listener_tls_settings_merge_key_by_key(self):
        c = certs()
        s = self.tls_server(
            tls=tls_settings(hsts="max-age=100"),
            listen=[{"address": LOOPBACK, "port": 0, "transport": "tls"},
                    {"address": LOOPBACK, "port": 0, "transport": "tls", "tls": {"hsts": "max-age=5"}},
                    {"address": LOOPBACK, "port": 0, "transport": "tls",
                     "tls": {"certificates": [cert_entry(c.a)]}}])
        for listener, sni, hsts in ((0, "localhost", "max-age=100"), (1, "localhost", "max-age=5"),
                                    (2, "a.example", "max-age=100")):
            with self.subTest(listener=listener):
                conn = self.tls_conn(s, listener=listener, sni=sni)  # verifies the name too
                conn.request("GET", "/hello", host=sni)
                r = conn.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header("Strict-Transport-Security"), hsts, r)
                self.assertEqual(conn.sock.getpeercert(True),
                                 der(c.a.cert if listener == 2 else c.localhost.cert))


# --------------------------------------------------------------------------------------------
# SNI and 421
# --------------------------------------------------------------------------------------------

class Sni(TlsTestCase):
    def setUp(self):
        super().setUp()
        c = certs()
        # the exact certificate after the wildcard one: exact must still win
        self.s = self.tls_server(tls={"certificates": [cert_entry(x) for x in
                                                       (c.default, c.a, c.wild, c.exact)]})

    def served_der(self, sni):
        c = Conn(self.s.port, transport="tls", server_hostname=sni,
                 context=client_ctx(verify=False))
        self._conns.append(c)
        self.assertIsNone(c.handshake_error)
        return c.sock.getpeercert(True)

    def test_s_client_subject_per_server_name(self):
        c = certs()
        cases = [("a.example", "CN = a.example", c.a),
                 ("A.Example", "CN = a.example", c.a),
                 ("x.wild.example", r"CN = \*.wild.example", c.wild),
                 ("exact.wild.example", "CN = exact.wild.example", c.exact),
                 ("deep.x.wild.example", "CN = default.example", c.default),  # one label only
                 ("unknown.example", "CN = default.example", c.default)]
        for sni, subject, cert in cases:
            with self.subTest(sni):
                rc, out = s_client(self.s.port, "-servername", sni)
                self.assertEqual(rc, 0, out)
                self.assertRegex(subject_of(out) or "", subject + "$", out)
                self.assertEqual(self.served_der(sni), der(cert.cert))
        with self.subTest("no SNI"):
            rc, out = s_client(self.s.port, "-noservername")
            self.assertEqual(rc, 0, out)
            self.assertRegex(subject_of(out) or "", "CN = default.example$", out)
            self.assertEqual(self.served_der(None), der(c.default.cert))

    def test_verified_clients_get_the_right_certificate(self):
        for name in ("a.example", "x.wild.example", "exact.wild.example", "default.example"):
            with self.subTest(name):
                c = self.tls_conn(self.s, sni=name)  # check_hostname: fails on a wrong cert
                c.request("GET", "/echo/sni", host=name)
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertEqual(tls_facts(r.json())["server_name"], name)

    def test_host_served_by_another_certificate_is_421(self):
        c = self.tls_conn(self.s, sni="a.example")
        c.request("GET", "/echo/1", host="a.example")
        self.assertEqual(c.read_response().status, 200)
        c.request("GET", "/echo/2", host="A.EXAMPLE:443")
        self.assertEqual(c.read_response().status, 200, "Host matches SNI up to case and port")
        for host in ("default.example", "x.wild.example", "exact.wild.example"):
            with self.subTest(host):
                c.request("GET", "/echo/3", host=host)
                r = c.read_response()
                self.assertEqual(r.status, 421, r)
                self.assertCommonHeaders(r)
        # and on a wildcard connection, the exact name with its own certificate
        w = self.tls_conn(self.s, sni="y.wild.example")
        w.request("GET", "/hello", host="z.wild.example")  # same (wildcard) certificate: fine
        self.assertEqual(w.read_response().status, 200)
        w.request("GET", "/hello", host="exact.wild.example")
        self.assertEqual(w.read_response().status, 421)

    def test_host_no_other_certificate_serves_is_not_421(self):
        """421 is for a Host that another certificate would serve. A Host no certificate names
        belongs to the default certificate: on a connection that has it, it is served."""
        c = self.tls_conn(self.s, sni="default.example")
        c.request("GET", "/hello", host="unnamed.test")
        r = c.read_response()
        self.assertEqual(r.status, 200, f"{r!r} (SNI default.example, Host unnamed.test)")
        # A single-certificate server serves every Host on every connection.
        one = self.tls_server()
        c = self.tls_conn(one, sni="localhost")
        c.request("GET", "/hello", host="other.test")
        r = c.read_response()
        self.assertEqual(r.status, 200, f"{r!r} (one certificate, SNI localhost, Host other.test)")


class DualCertificates(TlsTestCase):
    """An RSA and an ECDSA certificate for the same names (RSA listed first): a client that takes
    ECDSA gets the ECDSA one (the cheaper full handshake with mbedTLS), one that only takes RSA
    gets the RSA one, with and without SNI."""

    def setUp(self):
        super().setUp()
        d = suite_pki().dir / "t70-dual"
        self.rsa = make_cert(d, "dual-rsa", certs().ca, "dual.example", dns=["dual.example"],
                             key_kind="rsa")
        self.ec = make_cert(d, "dual-ec", certs().ca, "dual.example", dns=["dual.example"])
        other = make_cert(d, "other", certs().ca, "other.example", dns=["other.example"])
        # Also as the SNI pick: the pair comes second, after a certificate for another name.
        self.s = self.tls_server(tls={"certificates": [cert_entry(self.rsa), cert_entry(self.ec)]})
        self.sni = self.tls_server(tls={"certificates": [cert_entry(other), cert_entry(self.rsa),
                                                         cert_entry(self.ec)]})

    def served(self, server, sni, ciphers=None):
        ctx = client_ctx(verify=False)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if ciphers:
            ctx.set_ciphers(ciphers)
        c = Conn(server.port, transport="tls", server_hostname=sni, context=ctx)
        self._conns.append(c)
        self.assertIsNone(c.handshake_error)
        return c.sock.getpeercert(True), c.sock.cipher()[0]

    def test_ecdsa_preferred_rsa_for_rsa_only_clients(self):
        for server, sni in ((self.s, None), (self.s, "dual.example"), (self.sni, "dual.example")):
            with self.subTest(sni=sni, certificates=len(server.config["tls"]["certificates"])):
                cert, cipher = self.served(server, sni)
                self.assertEqual(cert, der(self.ec.cert), cipher)
                self.assertIn("ECDSA", cipher)
                cert, cipher = self.served(server, sni, "ECDHE-RSA-AES128-GCM-SHA256")
                self.assertEqual(cert, der(self.rsa.cert), cipher)
                self.assertEqual(cipher, "ECDHE-RSA-AES128-GCM-SHA256")


# --------------------------------------------------------------------------------------------
# Session resumption
# --------------------------------------------------------------------------------------------

class Resumption(TlsTestCase):
    def resume(self, s, *extra):
        sess = self.tmp / "session.pem"
        rc, out = s_client(s.port, "-servername", "localhost", "-sess_out", str(sess), *extra)
        self.assertEqual(rc, 0, out)
        self.assertIn("New, TLSv1.2", out)
        first = out
        outs = []
        for _ in range(3):  # workers: 2, so the resumptions likely meet both workers
            rc, out = s_client(s.port, "-servername", "localhost", "-sess_in", str(sess), *extra)
            self.assertEqual(rc, 0, out)
            outs.append(out)
        return first, outs

    def test_resumption_with_tickets(self):
        s = self.tls_server(workers=2)
        first, outs = self.resume(s)
        self.assertIn("TLS session ticket:", first, "no session ticket issued")
        for out in outs:
            self.assertIn("Reused, TLSv1.2", out)

    def test_resumption_from_the_session_cache_without_tickets(self):
        s = self.tls_server(tls=tls_settings(session_tickets=False), workers=2)
        first, outs = self.resume(s, "-no_ticket")
        self.assertNotIn("TLS session ticket:", first, "a ticket was issued with tickets off")
        for out in outs:
            self.assertIn("Reused, TLSv1.2", out)

    def test_python_client_resumes_and_is_served(self):
        s = self.tls_server()
        ctx = client_ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        c1 = self.tls_conn(s, ctx=ctx)
        c1.request("GET", "/hello")
        self.assertEqual(c1.read_response().body, HELLO)
        session = c1.sock.session
        raw = socket.create_connection((LOOPBACK, s.port), timeout=5)
        c2 = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        try:
            self.assertTrue(c2.session_reused)
            c2.sendall(build_request("GET", "/hello", [("Connection", "close")]))
            data, closed = recv_until_closed(c2, 5)
        finally:
            c2.close()
        resps, _ = parse_responses(data)
        self.assertEqual([r.body for r in resps], [HELLO])

    # -- across a reload (issue #10)
    def session_of(self, s, ctx):
        """The TLS 1.2 session of a full handshake that served /hello."""
        c = self.tls_conn(s, ctx=ctx)
        c.request("GET", "/hello")
        self.assertEqual(c.read_response().body, HELLO)
        self.assertFalse(c.sock.session_reused)
        return c.sock.session

    def resumes(self, s, ctx, session) -> bool:
        """Whether a new connection offering `session` resumes it; resumed or not, it is served."""
        raw = socket.create_connection((LOOPBACK, s.port), timeout=5)
        c = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        try:
            reused = c.session_reused
            c.sendall(build_request("GET", "/hello", [("Connection", "close")]))
            data, _ = recv_until_closed(c, 5)
        finally:
            c.close()
        resps, _ = parse_responses(data)
        self.assertEqual([r.body for r in resps], [HELLO])
        return reused

    def reload_certificates(self, s) -> str:
        """SIGHUP; returns the log written once the certificates are reloaded."""
        mark = s.log_mark()
        s.send_signal(signal.SIGHUP)
        self.assertIsNotNone(s.wait_stderr_since(mark, r"tls: \S+ now serves ", timeout=10),
                             s.stderr_since(mark))
        self.assertIsNotNone(s.wait_stderr_since(mark, r"tls: \S+ (keeps its|starts with no) TLS sessions",
                                                 timeout=5), s.stderr_since(mark))
        return s.stderr_since(mark)

    def check_sessions_survive_a_reload(self, tickets: bool):
        s = self.tls_server(tls=tls_settings(session_tickets=tickets), workers=2)
        ctx = client_ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if not tickets:
            ctx.options |= ssl.OP_NO_TICKET
        session = self.session_of(s, ctx)
        self.assertEqual(session.has_ticket, tickets)
        self.assertTrue(self.resumes(s, ctx, session), "no resumption even before the reload")
        log = self.reload_certificates(s)
        # Three tries: the workers take up the reloaded settings through their mailboxes.
        for attempt in range(3):
            self.assertTrue(self.resumes(s, ctx, session), f"not resumed after the reload ({attempt})")
        self.assertIn("keeps its TLS sessions and ticket keys", log)

    def test_ticket_sessions_survive_a_reload(self):
        self.check_sessions_survive_a_reload(tickets=True)

    def test_cached_sessions_survive_a_reload(self):
        self.check_sessions_survive_a_reload(tickets=False)

    def test_a_changed_certificate_starts_new_sessions(self):
        site = self.tmp / "site"
        site.mkdir()
        crt, key = site / "site.crt", site / "site.key"
        crt.write_bytes(suite_pki().server.cert.read_bytes())
        key.write_bytes(suite_pki().server.key.read_bytes())
        s = self.tls_server(tls=tls_settings(harness.CertPair(crt, key)))
        ctx = client_ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        session = self.session_of(s, ctx)
        self.assertTrue(self.resumes(s, ctx, session))
        renewed = make_cert(self.tmp / "renewed", "localhost", suite_pki().ca, "localhost",
                            dns=["localhost"], ips=["127.0.0.1"])
        key.write_bytes(renewed.key.read_bytes())
        crt.write_bytes(renewed.cert.read_bytes())
        log = self.reload_certificates(s)

        def served():
            c = self.tls_conn(s, ctx=client_ctx())
            return c.sock.getpeercert(binary_form=True)
        # The one worker serves the new certificate: from now on it uses the new settings.
        self.assertTrue(wait_for(lambda: served() == der(renewed.cert), 5), "the old certificate stays")
        self.assertFalse(self.resumes(s, ctx, session), "a session from before the new certificate resumed")
        self.assertIn("starts with no TLS sessions", log)


# --------------------------------------------------------------------------------------------
# Client certificates
# --------------------------------------------------------------------------------------------

class ClientCertificates(TlsTestCase):
    def server(self, mode):
        return self.tls_server(tls=tls_settings(client_auth=mode,
                                                client_ca=str(certs().clients_ca.cert)),
                               limits={"header_timeout_ms": 2000})

    def test_required_with_a_good_certificate(self):
        s = self.server("required")
        facts, _ = self.echo_tls(s, ctx=client_ctx(client_cert=certs().client))
        self.assertTrue(facts["client_certificate"], facts)
        self.assertIn("CN=client one", facts["client_subject"])
        self.assertIn("DNS:client.example", facts["client_san"])
        self.assertEqual(facts["client_fingerprint"], certs().client.fingerprint())
        self.assertEqual(facts["client_verify"], "ok")

    def test_required_without_a_certificate_fails(self):
        s = self.server("required")
        good = client_ctx(client_cert=certs().client)
        baseline = self.settled_fds(s, ctx=good)
        self.assertHandshakeFails(s, client_ctx())
        self.assertStillServing(s, baseline, ctx=good)

    def test_required_with_a_certificate_from_another_ca_fails(self):
        s = self.server("required")
        good = client_ctx(client_cert=certs().client)
        baseline = self.settled_fds(s, ctx=good)
        self.assertHandshakeFails(s, client_ctx(client_cert=certs().stranger))
        self.assertStillServing(s, baseline, ctx=good)

    def test_a_reload_applies_client_auth_and_names_hsts_as_restart_only(self):
        """Issue 10, item 4: the listeners' TLS settings are applied by SIGHUP, all but hsts."""
        s = self.server("none")
        facts, _ = self.echo_tls(s)
        self.assertFalse(facts["client_certificate"], facts)
        cfg = dict(s.config)
        cfg["tls"] = dict(cfg["tls"], client_auth="required", hsts="max-age=60")
        mark = s.log_mark()
        ok, line, _ = s.reload(cfg)
        self.assertTrue(ok, line)
        self.assertIsNotNone(s.wait_stderr_since(mark, r"tls: https://\S+ starts with no TLS sessions"),
                             s.stderr_since(mark))
        self.assertIn("reload: tls.hsts changed and takes effect at the next restart", s.stderr_since(mark))
        self.assertHandshakeFails(s, client_ctx())
        facts, r = self.echo_tls(s, ctx=client_ctx(client_cert=certs().client))
        self.assertEqual(facts["client_verify"], "ok")
        self.assertIsNone(r.header("strict-transport-security"), r)

    def test_optional_without_a_certificate_is_served(self):
        s = self.server("optional")
        facts, _ = self.echo_tls(s)
        self.assertFalse(facts["client_certificate"], facts)
        self.assertEqual(facts["client_verify"], "none")
        facts, _ = self.echo_tls(s, ctx=client_ctx(client_cert=certs().client))
        self.assertTrue(facts["client_certificate"])
        self.assertEqual(facts["client_verify"], "ok")

    # Each client certificate under each client_auth mode (issue #10). "alert[:REASON]": the
    # handshake is refused (with that alert when a certificate was presented); anything else: served,
    # and the plugin sees that verification result ("ok", "none" or a part of the reasons).
    # "optional" refuses what "required" refuses except no certificate at all; "optional_no_ca"
    # serves everything and leaves the verdict to the plugin.
    MODES = ("required", "optional", "optional_no_ca")
    EXPECTED = {
        #             required                  optional                  optional_no_ca
        "none":      ("alert",                  "none",                   "none"),
        "good":      ("ok",                     "ok",                     "ok"),
        "untrusted": ("alert:ALERT_UNKNOWN_CA", "alert:ALERT_UNKNOWN_CA", "not correctly signed by the trusted CA"),
        "expired":   ("alert:CERTIFICATE_EXPIRED", "alert:CERTIFICATE_EXPIRED", "validity has expired"),
        "wrong_eku": ("alert:UNSUPPORTED_CERTIFICATE", "alert:UNSUPPORTED_CERTIFICATE", "extendedKeyUsage"),
    }

    def test_each_client_certificate_under_each_mode(self):
        c = certs()
        presented = {"none": None, "good": c.client, "untrusted": c.stranger, "expired": c.expired,
                     "wrong_eku": c.wrong_eku}
        for m, mode in enumerate(self.MODES):
            s = self.server(mode)
            for name, cert in presented.items():
                expected = self.EXPECTED[name][m]
                with self.subTest(mode=mode, certificate=name, expected=expected):
                    ctx = client_ctx(client_cert=cert)
                    if expected.startswith("alert"):
                        reason = expected.partition(":")[2] or None
                        error = self.assertHandshakeFails(s, ctx, reason=reason)
                        if cert is not None:
                            self.assertIsNotNone(error, "refused only after the handshake")
                        continue
                    facts, _ = self.echo_tls(s, ctx=ctx)
                    self.assertEqual(facts["client_certificate"], cert is not None, facts)
                    if expected in ("ok", "none"):
                        self.assertEqual(facts["client_verify"], expected, facts)
                    else:
                        self.assertIn(expected, facts["client_verify"], facts)
                    if cert is not None:
                        self.assertEqual(facts["client_fingerprint"], cert.fingerprint())
            self.assertTrue(s.running(), f"the server died under {mode}")


# --------------------------------------------------------------------------------------------
# Certificate files: self-signed fallback, mismatched key, --check
# --------------------------------------------------------------------------------------------

class CertificateFiles(TlsTestCase):
    def test_self_signed_certificate_is_generated_when_missing(self):
        site = self.tmp / "gen"
        crt, key = site / "certs" / "site.crt", site / "certs" / "site.key"
        tls = {"certificates": [{"cert": str(crt), "key": str(key)}],
               "self_signed_if_missing": True}
        s = self.tls_server(tls=tls)
        self.assertTrue(crt.is_file() and key.is_file(), "no certificate files written")
        m = SELF_SIGNED_RE.search(s.stderr_text())
        self.assertIsNotNone(m, s.stderr_text())
        self.assertIn(str(crt), m.group(0))
        generated = harness.CertPair(crt, key)
        self.assertEqual(m.group(1), generated.fingerprint())
        self.assertEqual(stat.S_IMODE(key.stat().st_mode) & 0o077, 0, "the key is readable by others")
        text = openssl("x509", "-in", str(crt), "-noout", "-text").stdout.decode()
        self.assertIn("DNS:localhost", text)
        self.assertIn("IP Address:127.0.0.1", text)
        self.assertRegex(text, r"ASN1 OID: prime256v1|NIST CURVE: P-256")
        # the served certificate verifies for localhost and 127.0.0.1 with that file as the CA
        for name in ("localhost", "127.0.0.1"):
            with self.subTest(name):
                facts, _ = self.echo_tls(s, ctx=client_ctx(cafile=crt), sni=name)
                self.assertEqual(facts["version"], "TLSv1.2")
        # a restart keeps the files
        self.assertEqual(s.stop(), 0)
        before = crt.read_bytes()
        s2 = self.tls_server(tls=tls)
        self.assertEqual(crt.read_bytes(), before, "the certificate was regenerated")
        self.assertIsNone(SELF_SIGNED_RE.search(s2.stderr_text()), s2.stderr_text())
        self.echo_tls(s2, ctx=client_ctx(cafile=crt))

    def test_sighup_reloads_certificates_and_keeps_open_connections(self):
        site = self.tmp / "reload"
        crt, key = site / "certs" / "site.crt", site / "certs" / "site.key"
        tls = {"certificates": [{"cert": str(crt), "key": str(key)}], "self_signed_if_missing": True}
        s = self.tls_server(tls=tls)
        first = crt.read_bytes()
        old = self.tls_conn(s, ctx=client_ctx(cafile=crt))
        old.request("GET", "/hello", [("Host", "localhost")])
        self.assertEqual(old.read_response().status, 200)

        # New files (generated again, since both are missing), then SIGHUP.
        crt.unlink()
        key.unlink()
        s.send_signal(signal.SIGHUP)
        self.assertIsNotNone(s.wait_stderr(r"now serves .*site\.crt", timeout=5), s.stderr_text())
        second = crt.read_bytes()
        self.assertNotEqual(first, second)
        # New handshakes present the new certificate (it verifies only with the new file) ...
        self.echo_tls(s, ctx=client_ctx(cafile=crt))
        # ... and the connection opened before the reload goes on as it was.
        old.request("GET", "/hello", [("Host", "localhost")])
        self.assertEqual(old.read_response().status, 200)

        # A certificate that fails to load keeps the current one in service, with an error line.
        crt.write_text("not a certificate\n")
        s.send_signal(signal.SIGHUP)
        self.assertIsNotNone(s.wait_stderr(r"\[error\] .*site\.crt.*keeps its previous certificates", timeout=5),
                             s.stderr_text())
        crt.write_bytes(second)  # only so the client below can trust what is served
        self.echo_tls(s, ctx=client_ctx(cafile=crt))
        self.assertTrue(s.running())

    def write_config(self, tls):
        d = self.tmp / "cfg"
        d.mkdir(exist_ok=True)
        (d / "www").mkdir(exist_ok=True)
        cfg = base_config(listen=[{"address": LOOPBACK, "port": 0, "transport": "tls"}])
        cfg["tls"] = tls
        p = d / "server.json"
        p.write_text(json.dumps(cfg))
        return p

    def test_mismatched_key_stops_the_start_naming_both_files(self):
        c = certs()
        p = self.write_config({"certificates": [{"cert": str(c.a.cert), "key": str(c.wild.key)}]})
        for args in (("--config", str(p)), ("--check", "--config", str(p))):
            with self.subTest(args[0]):
                r = run_trellis(*args)
                self.assertFalse(r.timed_out, r)
                self.assertEqual(r.returncode, 1, r)
                self.assertIn(str(c.a.cert), r.stderr, r)
                self.assertIn(str(c.wild.key), r.stderr, r)
                self.assertNotIn("listening on", r.output)
                self.assertNotIn("configuration OK", r.output)

    def test_check_names_a_missing_certificate(self):
        missing = self.tmp / "nope" / "site.crt"
        p = self.write_config({"certificates": [{"cert": str(missing),
                                                 "key": str(certs().a.key)}]})
        for args in (("--check", "--config", str(p)), ("--config", str(p))):
            with self.subTest(args[0]):
                r = run_trellis(*args)
                self.assertFalse(r.timed_out, r)
                self.assertEqual(r.returncode, 1, r)
                self.assertIn(str(missing), r.output, r)
                self.assertNotIn("configuration OK", r.output)
        # with self_signed_if_missing, --check accepts it and writes nothing
        gen = self.tmp / "gen"
        p = self.write_config({"certificates": [{"cert": str(gen / "s.crt"),
                                                 "key": str(gen / "s.key")}],
                               "self_signed_if_missing": True})
        r = run_trellis("--check", "--config", str(p))
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration OK", r.stdout)
        self.assertFalse(gen.exists() and any(gen.iterdir()), "--check wrote files")

    def test_good_certificate_passes_check(self):
        p = self.write_config(tls_settings())
        r = run_trellis("--check", "--config", str(p))
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration OK", r.stdout)


# --------------------------------------------------------------------------------------------
# Bad handshakes: that connection fails, the server keeps serving, descriptors come back
# --------------------------------------------------------------------------------------------

class BadHandshakes(TlsTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.tls_server(
            listen=[{"address": LOOPBACK, "port": 0, "transport": "tls"},
                    {"address": LOOPBACK, "port": 0, "transport": "plain"}],
            limits={"header_timeout_ms": 800, "handshake_timeout_ms": 800, "keepalive_timeout_ms": 5000})
        self.baseline = self.settled_fds(self.s)

    def raw(self, listener=0) -> socket.socket:
        so = socket.create_connection((LOOPBACK, self.s.listeners[listener][1]), timeout=5)
        self.addCleanup(so.close)
        return so

    def test_plain_http_to_a_tls_port(self):
        so = self.raw()
        so.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data, closed = recv_until_closed(so, 5)
        self.assertTrue(closed, "the connection stayed open")
        self.assertNotIn(b"HTTP/1.1", data, "plain HTTP answered on a TLS port")
        if data:  # at most a TLS alert record
            self.assertEqual(data[:1], b"\x15", data[:20])
        self.assertStillServing(self.s, self.baseline)

    def test_client_hello_to_a_plain_port(self):
        c = Conn(self.s.listeners[1][1], transport="tls", context=client_ctx())
        self._conns.append(c)
        self.assertIsNotNone(c.handshake_error, "a TLS handshake succeeded on a plain port")
        so = self.raw(listener=1)
        so.sendall(client_hello())
        data, closed = recv_until_closed(so, 5)
        self.assertTrue(closed, "the connection stayed open")
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 400"), data[:100])
        c = Conn(self.s.listeners[1][1], transport="plain")
        self._conns.append(c)
        c.request("GET", "/hello", [("Connection", "close")])
        self.assertEqual(c.read_response().body, HELLO)
        c.close()
        self.assertStillServing(self.s, self.baseline)

    def test_truncated_handshake_closed_by_client(self):
        hello = client_hello()
        for cut in (1, 5, 20, len(hello) - 1):
            with self.subTest(cut=cut):
                so = self.raw()
                so.sendall(hello[:cut])
                so.close()
        self.assertStillServing(self.s, self.baseline)

    def test_stalled_handshake_is_timed_out(self):
        so = self.raw()
        so.sendall(client_hello()[:40])
        t0 = time.monotonic()
        data, closed = recv_until_closed(so, 5)
        elapsed = time.monotonic() - t0
        self.assertTrue(closed, "a stalled handshake held the connection for 5 s "
                                "(handshake_timeout_ms is 800)")
        self.assertLess(elapsed, 3.0)
        self.assertNotIn(b"HTTP/", data)
        self.assertStillServing(self.s, self.baseline)

    def test_garbage_after_the_handshake(self):
        for garbage in (b"\x17\x03\x03\x00\x20" + os.urandom(32),   # a record that fails its MAC
                        b"\xff" * 64,                               # not a record at all
                        b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"):  # plain in TLS
            with self.subTest(garbage[:8]):
                c = self.tls_conn(self.s)
                c.request("GET", "/hello")
                self.assertEqual(c.read_response().status, 200)
                socket.socket.sendall(c.sock, garbage)  # under the TLS layer
                data, closed = c.read_until_closed(5)
                self.assertTrue(closed, "the connection survived garbage records")
                self.assertEqual(data, b"")
        self.assertStillServing(self.s, self.baseline)

    def test_many_bad_handshakes_leave_no_descriptors(self):
        hello = client_hello()
        for i in range(30):
            so = socket.create_connection((LOOPBACK, self.s.port), timeout=5)
            try:
                so.sendall([b"\x16\x03\x01\x00\x05hello", hello[:100], b"NOT TLS\r\n\r\n"][i % 3])
            finally:
                so.close()
        self.assertStillServing(self.s, self.baseline)

    def test_renegotiation_is_refused(self):
        ca = str(certs().ca.cert)
        p = subprocess.Popen([harness.OPENSSL, "s_client", "-connect", f"{LOOPBACK}:{self.s.port}",
                              "-servername", "localhost", "-CAfile", ca, "-verify_return_error"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            # s_client reads its commands once the handshake is done; "R" renegotiates.
            p.stdin.write(b"R\n")
            p.stdin.flush()
            try:
                out, _ = p.communicate(timeout=5)  # the server refusing ends the session
            except subprocess.TimeoutExpired:
                p.stdin.close()  # an accepted renegotiation leaves it open: EOF ends s_client
                out, _ = p.communicate(timeout=5)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        out = out.decode(errors="replace")
        if "RENEGOTIATING" not in out:
            self.skipTest(f"this openssl s_client did not try to renegotiate: {out[-500:]}")
        self.assertEqual(out.count("depth=0"), 1, f"a second handshake completed: {out[-1500:]}")
        self.assertIn("no renegotiation", out, out[-1500:])
        self.assertStillServing(self.s, self.baseline)


if __name__ == "__main__":
    harness.main()
