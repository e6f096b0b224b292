"""Tier 40: error statuses (each then closes the connection), limits, timeouts,
max_connections, and the path traversal corpus."""

import os
import sys
import threading
import time
import uuid

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (TrellisTestCase, base_config, build_request, chunked,  # noqa: E402
                     exchange, exchange_raw, parse_responses)

MAX_HEADER = 2048
MAX_BODY = 1024

ERR_LIMITS = {
    "max_header_bytes": MAX_HEADER,
    "max_body_bytes": MAX_BODY,
    "header_timeout_ms": 5000,
    "body_timeout_ms": 5000,
    "keepalive_timeout_ms": 5000,
}


class ProtocolErrors(TrellisTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(base_config(limits=ERR_LIMITS))

    def expect_error(self, raw: bytes, status):
        data, closed = exchange_raw(self.s.port, raw, timeout=5)
        return self.assertClosedAfterError(data, closed, status)

    def test_malformed_requests_400(self):
        corpus = {
            "header without colon": b"GET /hello HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n",
            "bad method chars": b"G@T /hello HTTP/1.1\r\nHost: a\r\n\r\n",
            "garbage line": b"\x01\x02\x03 nonsense\r\n\r\n",
            "space before colon": b"GET /hello HTTP/1.1\r\nHost : a\r\n\r\n",
            "bad content-length": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
            "negative content-length": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "conflicting content-length":
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            "bad chunk size":
                b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            "bad version token": b"GET /hello HTPT/1.1\r\nHost: a\r\n\r\n",
        }
        for name, raw in corpus.items():
            with self.subTest(name):
                self.expect_error(raw, 400)

    def test_request_line_too_long_414(self):
        raw = build_request("GET", "/hello?" + "a" * (MAX_HEADER * 2))
        self.expect_error(raw, 414)

    def test_headers_too_large_431(self):
        headers = [(f"X-Fill-{i}", "b" * 100) for i in range(40)]
        self.expect_error(build_request("GET", "/hello", headers), 431)

    def test_single_huge_header_431(self):
        self.expect_error(build_request("GET", "/hello", [("X-Huge", "h" * (MAX_HEADER * 2))]), 431)

    def test_head_just_under_limit_ok(self):
        headers = [(f"X-Fill-{i}", "b" * 50) for i in range(20)]  # ~1.3 KB of 2 KB
        raw = build_request("GET", "/hello", headers)
        self.assertLess(len(raw), MAX_HEADER)
        with self.conn(self.s) as c:
            c.send(raw)
            r = c.read_response()
        self.assertEqual(r.status, 200, r)

    def test_transfer_encoding_gzip_chunked_501(self):
        raw = (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n")
        self.expect_error(raw, 501)

    def test_transfer_encoding_not_ending_in_chunked_400(self):
        raw = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc"
        self.expect_error(raw, 400)

    def test_transfer_encoding_in_http10_400(self):
        raw = (b"POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n")
        self.expect_error(raw, 400)

    def test_http2_version_505(self):
        self.expect_error(b"GET /hello HTTP/2.0\r\nHost: a\r\n\r\n", 505)

    def test_http09_505_or_close(self):
        resps, rest, closed = exchange(self.s.port, b"GET /\r\n", timeout=3)
        self.assertTrue(closed, "HTTP/0.9 request: expected 505 or close, the connection stayed open")
        if resps or rest:
            self.assertEqual(len(resps), 1, (resps, rest))
            self.assertEqual(resps[0].status, 505, resps[0])
            self.assertEqual(rest, b"")

    def test_missing_host_http11_400(self):
        self.expect_error(b"GET /hello HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400)

    def test_two_host_headers_400(self):
        self.expect_error(b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)

    def test_two_identical_host_headers_400(self):
        self.expect_error(b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400)

    def test_obs_fold_400(self):
        self.expect_error(b"GET /hello HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", 400)

    def test_obs_fold_tab_400(self):
        self.expect_error(b"GET /hello HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n\ttwo\r\n\r\n", 400)

    def test_empty_header_name_400(self):
        self.expect_error(b"GET /hello HTTP/1.1\r\nHost: a\r\n: value\r\n\r\n", 400)

    def test_encoded_slash_and_nul_400(self):
        for target in ("/hello%2fx", "/echo/a%2Fb", "/echo/a%00b", "/index.html%00.txt"):
            with self.subTest(target):
                self.expect_error(build_request("GET", target), 400)

    def test_parse_error_mid_pipeline(self):
        raw = (build_request("GET", "/echo/one") +
               b"BAD\x01REQUEST \x02\r\n\r\n" +
               build_request("GET", "/echo/three"))
        with self.conn(self.s) as c:
            c.send(raw)
            data, closed = c.read_until_closed(5)
        resps, rest = parse_responses(data)
        self.assertGreaterEqual(len(resps), 2, data)
        self.assertEqual(resps[0].status, 200, resps[0])
        self.assertEqual(resps[0].json()["path"], "/echo/one")
        self.assertEqual(resps[1].status, 400, resps[1])
        self.assertEqual(len(resps), 2, f"the request after the garbage was answered: {resps!r}")
        self.assertEqual(rest, b"")
        self.assertTrue(closed, "connection not closed after the parse error")

    def test_error_after_good_request_on_keepalive(self):
        with self.conn(self.s) as c:
            c.request("GET", "/hello")
            self.assertEqual(c.read_response().status, 200)
            c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            data, closed = c.read_until_closed(5)
        self.assertClosedAfterError(data, closed, 400)

    # ---- body size

    def test_expect_over_limit_413_without_100(self):
        with self.conn(self.s) as c:
            c.send(build_request("POST", "/echo", [("Expect", "100-continue"),
                                                   ("Content-Length", str(MAX_BODY * 2))]))
            r = c.read_response(timeout=3)
            self.assertEqual(r.status, 413, f"expected 413 at once (no 100 Continue): {r!r}")
            self.assertCommonHeaders(r)

    def test_content_length_over_limit_413_close(self):
        raw = build_request("POST", "/echo", body=b"x" * (MAX_BODY * 2))
        self.expect_error(raw, 413)

    def test_chunked_over_limit_413_close(self):
        raw = build_request("POST", "/echo", [("Transfer-Encoding", "chunked")],
                            chunked(b"a" * 600, b"b" * 600, b"c" * 600))
        self.expect_error(raw, 413)

    def test_body_exactly_at_limit_ok(self):
        body = b"z" * MAX_BODY
        with self.conn(self.s) as c:
            c.send(build_request("POST", "/echo", body=body))
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body"], body.decode())

    def test_chunked_exactly_at_limit_ok(self):
        body = b"q" * MAX_BODY
        with self.conn(self.s) as c:
            c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")],
                                 chunked(body[:500], body[500:])))
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body"], body.decode())


class Timeouts(TrellisTestCase):
    def start(self, **limits):
        lim = dict(ERR_LIMITS)
        lim.update(limits)
        return self.start_server(base_config(limits=lim))

    def test_header_timeout_408(self):
        s = self.start(header_timeout_ms=300)
        with self.conn(s) as c:
            c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n")
            t0 = time.monotonic()
            data, closed = c.read_until_closed(5)
            elapsed = time.monotonic() - t0
        self.assertClosedAfterError(data, closed, 408)
        self.assertGreater(elapsed, 0.2, "408 came before the header timeout")
        self.assertLess(elapsed, 3.0)

    def test_header_timeout_not_reset_by_trickling(self):
        """Sending the head one byte at a time must not extend the header timeout forever."""
        s = self.start(header_timeout_ms=300)
        with self.conn(s) as c:
            t0 = time.monotonic()
            got_close = False
            for b in b"GET /hello HTTP/1.1\r\nX-Slow: " + b"s" * 100:
                if not c.try_send(bytes([b])):
                    got_close = True
                    break
                if not c.is_open_after(0.1):
                    got_close = True
                    break
                if time.monotonic() - t0 > 4:
                    break
            elapsed = time.monotonic() - t0
            data, closed = c.read_until_closed(3)
        self.assertTrue(got_close or closed, "a trickling client kept the connection open")
        self.assertLess(elapsed, 2.5, "header timeout was reset by every byte")

    def test_body_timeout(self):
        s = self.start(body_timeout_ms=300)
        with self.conn(s) as c:
            c.send(build_request("POST", "/echo", [("Content-Length", "100")]) + b"0123456789")
            t0 = time.monotonic()
            data, closed = c.read_until_closed(5)
            elapsed = time.monotonic() - t0
        self.assertTrue(closed, "body timeout did not close the connection")
        self.assertLess(elapsed, 3.0)
        if data:  # 408 or a silent close are both acceptable
            self.assertClosedAfterError(data, closed, 408)

    def test_keepalive_idle_timeout_closes_silently(self):
        s = self.start(keepalive_timeout_ms=300)
        with self.conn(s) as c:
            c.request("GET", "/hello")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            t0 = time.monotonic()
            data, closed = c.read_until_closed(5)
            elapsed = time.monotonic() - t0
        self.assertTrue(closed, "idle keep-alive connection was not closed")
        self.assertEqual(data, b"", "the idle close must send no bytes")
        self.assertGreater(elapsed, 0.2)
        self.assertLess(elapsed, 3.0)

    def test_keepalive_timer_restarts_per_request(self):
        s = self.start(keepalive_timeout_ms=600)
        with self.conn(s) as c:
            for _ in range(4):  # 4 x 0.3 s > 0.6 s in total, each gap < 0.6 s
                c.request("GET", "/hello")
                self.assertEqual(c.read_response().status, 200)
                self.assertTrue(c.is_open_after(0.3), "closed before the keep-alive timeout")


class MaxConnections(TrellisTestCase):
    def test_fifth_connection_waits_until_a_slot_frees(self):
        # At the cap the server stops accepting (the kernel's backlog holds the client) instead of
        # accepting and closing in a loop; the waiting client is served once a slot frees.
        cfg = base_config(workers=1, limits={"max_connections": 4})
        s = self.start_server(cfg)
        conns = [self.conn(s) for _ in range(4)]
        for c in conns:
            c.request("GET", "/hello")
            self.assertEqual(c.read_response().status, 200)
        # Connecting (a TLS handshake too) happens on a thread: it cannot finish before a slot frees.
        fifth_box = {}

        def connect_fifth():
            try:
                c = harness.Conn(s.port, timeout=10)
                c.request("GET", "/hello", [("Connection", "close")])
                fifth_box["data"], fifth_box["closed"] = c.read_until_closed(10)
                c.close()
            except Exception as e:  # reported by the assertions below
                fifth_box["error"] = e

        fifth = threading.Thread(target=connect_fifth)
        fifth.start()
        fifth.join(0.7)
        self.assertTrue(fifth.is_alive(), f"the 5th connection must wait while 4 are open: {fifth_box}")
        for c in conns:
            c.request("GET", "/hello")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, b"Hello, World!")
        self.assertIn("limits.max_connections (4) reached", s.stderr_text())
        conns[0].close()  # frees a slot: the waiting client is taken and answered
        fifth.join(10)
        self.assertNotIn("error", fifth_box, fifth_box)
        resps, _ = parse_responses(fifth_box["data"])
        self.assertEqual([r.status for r in resps], [200], fifth_box["data"][:200])
        self.assertTrue(fifth_box["closed"])


class Traversal(TrellisTestCase):
    """No request may ever return a file outside the static root."""

    def setUp(self):
        super().setUp()
        self.secret = f"TRELLIS-SECRET-{uuid.uuid4().hex}"

        def prepare(s):
            (s.dir / "secret.txt").write_text(self.secret + "\n")
            (s.dir / "www-private").mkdir()
            (s.dir / "www-private" / "secret.txt").write_text(self.secret + " private\n")
            os.symlink(s.dir / "secret.txt", s.www / "leak.txt")            # absolute, outside
            os.symlink("../secret.txt", s.www / "leakrel.txt")              # relative, outside
            os.symlink(s.dir, s.www / "leakdir", target_is_directory=True)  # dir outside
            os.symlink("../www-private", s.www / "sib")                     # sibling prefix
            os.symlink("/etc/passwd", s.www / "passwd")
        self.s = self.start_server(base_config(), prepare=prepare)

    CORPUS = [
        # (target, exact status or None for any of 400/403/404)
        ("/../secret.txt", None),
        ("/../../secret.txt", None),
        ("/%2e%2e/secret.txt", None),
        ("/%2E%2E/secret.txt", None),
        ("/.%2e/secret.txt", None),
        ("/docs/../../secret.txt", None),
        ("/docs/%2e%2e/%2e%2e/secret.txt", None),
        ("/./.././secret.txt", None),
        ("//../secret.txt", None),
        ("/..%2fsecret.txt", 400),
        ("/%2e%2e%2fsecret.txt", 400),
        ("/docs/..%2f..%2fsecret.txt", 400),
        ("/%2e%2e%2f%2e%2e%2fsecret.txt", 400),
        ("/..\\secret.txt", None),
        ("/docs\\..\\..\\secret.txt", None),
        ("/%5c..%5csecret.txt", None),
        ("/..%5csecret.txt", None),
        ("/%252e%252e/secret.txt", None),
        ("/%252e%252e%252fsecret.txt", None),
        ("/secret.txt%00.html", 400),
        ("/%00", 400),
        ("/docs/%00/../../secret.txt", 400),
        ("/leak.txt", None),
        ("/leakrel.txt", None),
        ("/leakdir/secret.txt", None),
        ("/leakdir/www-private/secret.txt", None),
        ("/sib/secret.txt", None),
        ("/passwd", None),
        ("http://localhost/../secret.txt", None),
    ]

    def test_traversal_corpus(self):
        for target, status in self.CORPUS:
            with self.subTest(target):
                raw = (f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                       .encode("latin-1"))
                everything, closed = exchange_raw(self.s.port, raw, timeout=5)
                self.assertNotIn(self.secret.encode(), everything, "SECRET LEAKED")
                self.assertNotIn(b"root:", everything, "/etc/passwd leaked")
                resps, rest = parse_responses(everything)
                self.assertTrue(resps, f"no response for {target!r}: {rest[:200]!r}")
                if status is None:
                    self.assertIn(resps[0].status, (400, 403, 404), resps[0])
                else:
                    self.assertEqual(resps[0].status, status, resps[0])

    def test_traversal_with_curl_path_as_is(self):
        r = self.s.curl("/../secret.txt", "--path-as-is")
        self.assertNotIn(self.secret.encode(), r.body)
        self.assertIn(r.status, (400, 403, 404), r)

    def test_inside_root_still_served(self):
        r = self.s.get("/docs/../index.html")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, harness.DEFAULT_WWW["index.html"].encode())


class ReviewRegressions(TrellisTestCase):
    """Bugs found in review of the first version; each test failed before its fix."""

    def test_each_pipelined_request_gets_its_own_header_deadline(self):
        s = self.start_server(base_config(limits={"header_timeout_ms": 1000}))
        c = self.conn(s)
        request = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
        c.send(request[:10])
        # Every 0.3 s: the rest of one request and the start of the next, in one write. Each head
        # takes 0.3 s, well inside its own deadline, though the whole run outlasts one deadline.
        for _ in range(6):
            time.sleep(0.3)  # the client's pace is the point of the test
            c.send(request[10:] + request[:10])
            r = c.read_response()
            self.assertEqual(r.status, 200, r)

    def test_pipelined_file_requests_do_not_pin_descriptors(self):
        big = os.urandom(256 * 1024)

        def add_big(s):
            (s.www / "big.bin").write_bytes(big)
        s = self.start_server(base_config(), prepare=add_big)
        fd_dir = f"/proc/{s.pid}/fd"
        baseline = len(os.listdir(fd_dir))
        c = self.conn(s, rcvbuf=16 * 1024)
        c.send(build_request("GET", "/big.bin") * 300)  # and do not read
        # Watch the descriptor count for half a second while the server parses what it will.
        opened = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            opened = max(opened, len(os.listdir(fd_dir)) - baseline)
            time.sleep(0.01)
        self.assertLess(opened, 20, f"{opened} descriptors held for one non-reading client")
        # It still serves the pipeline in order once the client reads.
        for _ in range(3):
            r = c.read_response()
            self.assertEqual((r.status, len(r.body)), (200, len(big)))

    def test_upgrade_header_is_ignored_and_pipeline_continues(self):
        s = self.start_server(base_config())
        raw = (b"GET /echo/u HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n"
               + build_request("GET", "/echo/after"))
        resps, rest, closed = exchange(s.port, raw, timeout=2)
        self.assertEqual([r.status for r in resps], [200, 200], resps)
        self.assertEqual([r.json()["path"] for r in resps], ["/echo/u", "/echo/after"])
        self.assertEqual(rest, b"")
        self.assertIsNone(s.wait_stderr(r"answered a request twice", timeout=0.2))

    def test_error_answer_to_head_has_no_body(self):
        s = self.start_server(base_config())
        resps, rest, closed = exchange(s.port, b"HEAD / HTTP/1.1\r\n\r\n", timeout=2, heads=(0,))
        self.assertEqual(resps[0].status, 400, resps)
        self.assertEqual(rest, b"", "a body followed the head of an answer to HEAD")
        self.assertTrue(closed)


if __name__ == "__main__":
    harness.main()
