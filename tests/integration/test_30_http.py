"""Tier 30: HTTP/1.1 semantics: keep-alive, pipelining, bodies, 100-continue, routing,
absolute-form targets, HEAD, Date/Server, the echo plugin's view of requests."""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (Conn, TrellisTestCase, base_config, build_request, chunked,  # noqa: E402
                     exchange, parse_responses)

HELLO = b"Hello, World!"


def assert_hello(tc, r):
    tc.assertEqual(r.status, 200, r)
    tc.assertEqual(r.body, HELLO)
    tc.assertEqual(r.header("Content-Length"), "13")
    tc.assertIn(r.header("Content-Type"), ("text/plain", "text/plain; charset=utf-8"))


class Basics(TrellisTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server()

    def test_hello_with_curl(self):
        r = self.s.curl("/hello")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, HELLO)
        self.assertEqual(r.header("Content-Length"), "13")
        self.assertEqual(r.header("Server"), "trellis")

    def test_date_and_server_on_every_response(self):
        cases = [
            (build_request("GET", "/hello"), 200),
            (build_request("GET", "/nothing-here.html"), 404),
            (build_request("POST", "/echo/x", body=b"abc"), 200),
            (build_request("HEAD", "/hello"), 200),
        ]
        for raw, status in cases:
            with self.subTest(raw[:30]):
                c = self.conn(self.s)
                c.send(raw)
                r = c.read_response(head=raw.startswith(b"HEAD"))
                self.assertEqual(r.status, status, r)
                self.assertCommonHeaders(r)
        # error responses too
        resps, _, closed = harness.exchange(self.s.port, b"GET /hello HTTP/1.1\r\n\r\n")
        self.assertEqual(resps[0].status, 400)
        self.assertCommonHeaders(resps[0])

    def test_response_status_line(self):
        c = self.conn(self.s)
        c.request("GET", "/hello")
        r = c.read_response()
        self.assertTrue(r.raw_head.startswith(b"HTTP/1.1 200 OK\r\n"), r.raw_head)

    def test_head_hello(self):
        c = self.conn(self.s)
        c.request("HEAD", "/hello")
        c.request("GET", "/hello")
        h = c.read_response(head=True)
        self.assertEqual(h.status, 200)
        self.assertEqual(h.header("Content-Length"), "13")
        g = c.read_response()
        assert_hello(self, g)

    def test_keep_alive_default(self):
        c = self.conn(self.s)
        for i in range(5):
            c.request("GET", "/hello")
            r = c.read_response()
            assert_hello(self, r)
            self.assertNotIn("close", r.connection_tokens(), r)
        self.assertTrue(c.is_open_after(0.2), "the server closed a keep-alive connection")

    def test_connection_close_honoured(self):
        c = self.conn(self.s)
        c.request("GET", "/hello", [("Connection", "close")])
        data, closed = c.read_until_closed(5)
        resps, rest = parse_responses(data)
        self.assertEqual(len(resps), 1, data)
        assert_hello(self, resps[0])
        self.assertIn("close", resps[0].connection_tokens())
        self.assertTrue(closed, "server did not close after Connection: close")

    def test_connection_close_closes_without_lingering(self):
        # The client asked to close and sent nothing more: the server closes its socket at once
        # (no half-close waiting for the client's FIN), so bytes sent afterwards meet a reset.
        # A server that lingered would read and drop them silently.
        c = self.conn(self.s)
        c.request("GET", "/hello", [("Connection", "close")])
        data, closed = c.read_until_closed(5)
        self.assertTrue(closed, "server did not close after Connection: close")
        assert_hello(self, parse_responses(data)[0][0])
        # Below TLS too: raw bytes on the TCP connection (the server's kernel answers them). A
        # lingering server would drop them for its 2 s linger timeout: the reset must come well
        # before that (on loopback it comes with the first byte).
        raw = socket.socket(fileno=os.dup(c.sock.fileno()))
        reset = False
        deadline = time.monotonic() + 1.0
        while not reset and time.monotonic() < deadline:
            try:
                raw.sendall(b"x")
                raw.settimeout(0.2)
                if raw.recv(1) == b"":
                    time.sleep(0.02)  # EOF again: the server still holds the socket (for now)
            except (ConnectionResetError, BrokenPipeError):
                reset = True
            except socket.timeout:
                pass
        raw.close()
        self.assertTrue(reset, "the server still held the socket open after its answer (lingering)")

    def test_connection_close_lowercase(self):
        c = self.conn(self.s)
        c.request("GET", "/hello", [("connection", "Close")])
        data, closed = c.read_until_closed(5)
        resps, _ = parse_responses(data)
        self.assertEqual(len(resps), 1)
        self.assertTrue(closed)

    def test_connection_close_mid_pipeline_stops_there(self):
        c = self.conn(self.s)
        c.send(build_request("GET", "/echo/1") +
               build_request("GET", "/echo/2", [("Connection", "close")]) +
               build_request("GET", "/echo/3"))
        data, closed = c.read_until_closed(5)
        resps, rest = parse_responses(data)
        self.assertEqual([r.json()["path"] for r in resps], ["/echo/1", "/echo/2"])
        self.assertTrue(closed)

    def test_http10_closes_by_default(self):
        c = self.conn(self.s)
        c.send(b"GET /hello HTTP/1.0\r\n\r\n")  # no Host: fine in 1.0
        data, closed = c.read_until_closed(5)
        resps, _ = parse_responses(data)
        self.assertEqual(len(resps), 1, data)
        assert_hello(self, resps[0])
        self.assertNotIn("keep-alive", resps[0].connection_tokens())
        self.assertTrue(closed, "HTTP/1.0 without keep-alive must close")

    def test_http10_keep_alive(self):
        c = self.conn(self.s)
        for _ in range(3):
            c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            assert_hello(self, r)
            self.assertIn("keep-alive", r.connection_tokens(), r)
        self.assertTrue(c.is_open_after(0.2))

    def test_http10_echo_version(self):
        c = self.conn(self.s)
        c.send(b"GET /echo/old HTTP/1.0\r\nHost: h10.test\r\n\r\n")
        data, closed = c.read_until_closed(5)
        resps, _ = parse_responses(data)
        j = resps[0].json()
        self.assertEqual(j["version"], "HTTP/1.0")
        self.assertEqual(j["host"], "h10.test")

    def test_pipelining_16_in_order(self):
        c = self.conn(self.s)
        raw = b"".join(build_request("GET", f"/echo/p{i}?i={i}") for i in range(16))
        c.send(raw)  # one write
        for i in range(16):
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            j = r.json()
            self.assertEqual(j["path"], f"/echo/p{i}")
            self.assertEqual(j["query"], f"i={i}")
        self.assertTrue(c.is_open_after(0.2), "connection closed after the pipeline")
        c.request("GET", "/hello")
        assert_hello(self, c.read_response())

    def test_half_close_after_pipelined_requests_gets_every_answer(self):
        c = self.conn(self.s)
        c.send(b"".join(build_request("GET", f"/echo/h{i}") for i in range(16)))
        c.half_close()  # the client is done sending, not done reading (a FIN, over TLS too)
        data, closed = c.read_until_closed(5)
        resps, rest = parse_responses(data)
        self.assertEqual([r.json()["path"] for r in resps], [f"/echo/h{i}" for i in range(16)])
        self.assertEqual(rest, b"")
        self.assertTrue(closed, "the server kept the half-closed connection open")

    def test_pipelining_mixed(self):
        c = self.conn(self.s)
        raw = (build_request("GET", "/hello") +
               build_request("HEAD", "/hello") +
               build_request("POST", "/echo/cl", body=b"content-length body") +
               build_request("POST", "/echo/ch", [("Transfer-Encoding", "chunked")],
                             chunked(b"chunked ", b"body")) +
               build_request("GET", "/index.html") +
               build_request("GET", "/echo/last"))
        c.send(raw)
        assert_hello(self, c.read_response())
        h = c.read_response(head=True)
        self.assertEqual(h.status, 200)
        self.assertEqual(h.header("Content-Length"), "13")
        j = c.read_response().json()
        self.assertEqual((j["path"], j["body"]), ("/echo/cl", "content-length body"))
        j = c.read_response().json()
        self.assertEqual((j["path"], j["body"]), ("/echo/ch", "chunked body"))
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, harness.DEFAULT_WWW["index.html"].encode())
        self.assertEqual(c.read_response().json()["path"], "/echo/last")

    def test_pipelining_byte_by_byte(self):
        """Requests split at every byte boundary are still parsed."""
        c = self.conn(self.s)
        c.sock.setsockopt(harness.socket.IPPROTO_TCP, harness.socket.TCP_NODELAY, 1)
        raw = build_request("POST", "/echo/slow", body=b"xyz") + build_request("GET", "/echo/2")
        for i in range(len(raw)):
            c.send(raw[i:i + 1])
        j1 = c.read_response().json()
        j2 = c.read_response().json()
        self.assertEqual((j1["path"], j1["body"]), ("/echo/slow", "xyz"))
        self.assertEqual(j2["path"], "/echo/2")


class Echo(TrellisTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server()

    def echo(self, raw: bytes, conn=None):
        c = conn or self.conn(self.s)
        c.send(raw)
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertIn(r.header("Content-Type"), ("application/json",
                                                 "application/json; charset=utf-8"))
        self.assertCommonHeaders(r)
        return r.json(), c

    def test_echo_fields(self):
        raw = build_request("GET", "/echo/a/b?x=1&y=%20", [("X-Test-Header", "abc"),
                                                           ("User-Agent", "itest/1")],
                            host="Echo.Example:8080")
        j, c = self.echo(raw)
        self.assertEqual(j["method"], "GET")
        self.assertEqual(j["target"], "/echo/a/b?x=1&y=%20")
        self.assertEqual(j["path"], "/echo/a/b")
        self.assertEqual(j["query"], "x=1&y=%20")
        self.assertEqual(j["version"], "HTTP/1.1")
        self.assertEqual(j["host"], "echo.example")
        self.assertIn(["X-Test-Header", "abc"], j["headers"])
        self.assertIn(["User-Agent", "itest/1"], j["headers"])
        self.assertEqual(j["headers"][0], ["Host", "Echo.Example:8080"])
        self.assertEqual(j["body"], "")
        self.assertEqual(j["peer"], f"127.0.0.1:{c.local_port}")
        self.assertEqual(j["route_prefix"], "/echo")
        self.assertEqual(j["path_below"], "/a/b")

    def test_path_below_at_prefix(self):
        j, _ = self.echo(build_request("GET", "/echo"))
        self.assertEqual(j["path"], "/echo")
        self.assertEqual(j["path_below"], "/")
        self.assertEqual(j["query"], "")

    def test_path_normalisation(self):
        cases = [
            ("/echo/a%20b", "/echo/a b"),
            ("/echo/a/../b", "/echo/b"),
            ("/echo/./a/./b", "/echo/a/b"),
            ("/echo//a///b", "/echo/a/b"),
            ("/echo/%41%42", "/echo/AB"),
            ("/echo/%2541", "/echo/%41"),  # decoded once only
        ]
        for target, path in cases:
            with self.subTest(target):
                j, _ = self.echo(build_request("GET", target))
                self.assertEqual(j["target"], target)
                self.assertEqual(j["path"], path)

    def test_header_order_and_duplicates_kept(self):
        raw = build_request("GET", "/echo", [("X-Multi", "one"), ("X-Other", "o"),
                                             ("X-Multi", "two")])
        j, _ = self.echo(raw)
        names = [h for h in j["headers"] if h[0] in ("X-Multi", "X-Other")]
        self.assertEqual(names, [["X-Multi", "one"], ["X-Other", "o"], ["X-Multi", "two"]])

    def test_content_length_body(self):
        body = b"name=trellis&kind=server"
        j, _ = self.echo(build_request("POST", "/echo/form", [("Content-Type", "text/plain")], body))
        self.assertEqual(j["method"], "POST")
        self.assertEqual(j["body"], body.decode())

    def test_binary_body_latin1(self):
        body = bytes(range(256)) * 4
        j, _ = self.echo(build_request("PUT", "/echo/bin", body=body))
        self.assertEqual(j["body"].encode("latin-1"), body)

    def test_empty_body_with_content_length_zero(self):
        j, _ = self.echo(build_request("POST", "/echo/e", body=b"", content_length=True))
        self.assertEqual(j["body"], "")

    def test_chunked_body(self):
        pieces = [b"first,", b"second" * 100, bytes(range(128, 256)), b"last"]
        raw = build_request("POST", "/echo/ch", [("Transfer-Encoding", "chunked")],
                            chunked(*pieces, extensions=True))
        j, _ = self.echo(raw)
        self.assertEqual(j["body"].encode("latin-1"), b"".join(pieces))

    def test_chunked_body_with_trailer_and_uppercase_hex(self):
        payload = b"A" * 26 + b"B" * 5
        body = b"1A\r\n" + b"A" * 26 + b"\r\n5\r\nBBBBB\r\n0\r\nX-Trailer: t\r\n\r\n"
        raw = build_request("POST", "/echo/tr", [("Transfer-Encoding", "chunked")], body)
        c = self.conn(self.s)
        j, _ = self.echo(raw, c)
        self.assertEqual(j["body"].encode("latin-1"), payload)
        # connection still in sync
        c.request("GET", "/hello")
        assert_hello(self, c.read_response())

    def test_trailers_cannot_change_the_head(self):
        # RFC 9110 section 6.5.1: trailer fields must not be merged into the header section.
        body = b"3\r\nabc\r\n0\r\nHost: evil.test\r\nContent-Length: 99\r\n\r\n"
        raw = build_request("POST", "/echo/tr", [("Transfer-Encoding", "chunked")], body)
        c = self.conn(self.s)
        j, _ = self.echo(raw, c)
        self.assertEqual(j["body"], "abc")
        self.assertNotEqual(j["host"], "evil.test")
        names = [name.lower() for name, _ in j["headers"]]
        self.assertNotIn("content-length", names)
        self.assertEqual(names.count("host"), 1)
        c.request("GET", "/hello")
        assert_hello(self, c.read_response())

    def test_transfer_encoding_trailer_is_refused_or_ignored(self):
        # llhttp refuses a Transfer-Encoding trailer outright (400 and close); either that or a
        # normal answer with the framing unchanged is safe.
        body = b"3\r\nabc\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n"
        raw = build_request("POST", "/echo/tr", [("Transfer-Encoding", "chunked")], body)
        raw += build_request("GET", "/hello")
        resps, rest, closed = exchange(self.s.port, raw, timeout=3)
        self.assertEqual(rest, b"")
        if resps[0].status == 400:
            self.assertEqual(len(resps), 1, resps)
            self.assertTrue(closed)
        else:
            self.assertEqual([r.status for r in resps], [200, 200], resps)
            self.assertEqual(resps[0].json()["body"], "abc")

    def test_chunked_body_sent_slowly(self):
        c = self.conn(self.s)
        c.send(build_request("POST", "/echo/slowch", [("Transfer-Encoding", "chunked")]))
        for piece in (b"5\r\nhel", b"lo\r\n", b"6\r\n world\r\n", b"0\r\n", b"\r\n"):
            time.sleep(0.02)
            c.send(piece)
        r = c.read_response()
        self.assertEqual(r.json()["body"], "hello world")

    def test_large_body_one_megabyte(self):
        body = (b"0123456789abcdef" * 65536)
        c = self.conn(self.s, timeout=15)
        j, _ = self.echo(build_request("POST", "/echo/big", body=body), c)
        self.assertEqual(len(j["body"]), len(body))
        self.assertEqual(j["body"].encode(), body)

    def test_large_header_within_limit(self):
        value = "v" * 8000
        j, _ = self.echo(build_request("GET", "/echo", [("X-Big", value)]))
        self.assertIn(["X-Big", value], j["headers"])

    def test_expect_100_continue(self):
        body = b"sent after 100"
        c = self.conn(self.s)
        c.send(build_request("POST", "/echo/expect", [("Expect", "100-continue"),
                                                      ("Content-Length", str(len(body)))]))
        interim = c.read_response(timeout=5)
        self.assertEqual(interim.status, 100, interim)
        self.assertTrue(interim.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n"),
                        interim.raw_head)
        c.send(body)
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["body"], body.decode())
        self.assertIn(["Expect", "100-continue"], j["headers"])

    def test_expect_100_continue_chunked(self):
        c = self.conn(self.s)
        c.send(build_request("POST", "/echo/expect", [("Expect", "100-continue"),
                                                      ("Transfer-Encoding", "chunked")]))
        interim = c.read_response(timeout=5)
        self.assertEqual(interim.status, 100, interim)
        c.send(chunked(b"abc", b"def"))
        r = c.read_response()
        self.assertEqual(r.json()["body"], "abcdef")

    def test_expect_with_curl(self):
        r = self.s.curl("/echo/curl", "-H", "Expect: 100-continue", "--data-binary", "@-",
                        "--expect100-timeout", "5", input=b"x" * 2000)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.all_heads), 2, f"expected 100 then 200: {r.all_heads}")
        self.assertTrue(r.all_heads[0].startswith(b"HTTP/1.1 100"), r.all_heads)
        self.assertEqual(harness.json.loads(r.body)["body"], "x" * 2000)


class Routing(TrellisTestCase):
    def setUp(self):
        super().setUp()
        cfg = base_config(
            routes=[
                {"prefix": "/hello", "plugin": "hello"},
                {"prefix": "/echo", "plugin": "echo"},
                {"prefix": "/echo/deep", "plugin": "hello"},
                {"host": "example.test", "prefix": "/", "plugin": "echo"},
            ])
        self.s = self.start_server(cfg)

    def req(self, target, host="localhost", headers=None):
        c = self.conn(self.s)
        c.send(build_request("GET", target, headers, host=host))
        return c.read_response()

    def test_prefix_on_segment_boundary(self):
        assert_hello(self, self.req("/hello"))
        assert_hello(self, self.req("/hello/"))
        assert_hello(self, self.req("/hello/x/y"))
        r = self.req("/helloworld")
        self.assertEqual(r.status, 404, r)
        self.assertCommonHeaders(r)

    def test_no_route_404(self):
        for target in ("/", "/nothing", "/ech", "/echoes"):
            with self.subTest(target):
                r = self.req(target)
                self.assertEqual(r.status, 404, r)

    def test_longest_prefix_wins(self):
        assert_hello(self, self.req("/echo/deep"))
        assert_hello(self, self.req("/echo/deep/x"))
        j = self.req("/echo/deeper").json()
        self.assertEqual(j["route_prefix"], "/echo")
        self.assertEqual(j["path_below"], "/deeper")
        j = self.req("/echo/x").json()
        self.assertEqual(j["path"], "/echo/x")

    def test_host_route_exact_case_insensitive_port_ignored(self):
        for host in ("example.test", "EXAMPLE.Test", "example.test:8080"):
            with self.subTest(host):
                r = self.req("/anything/here", host=host)
                self.assertEqual(r.status, 200, r)
                j = r.json()
                self.assertEqual(j["host"], "example.test")
                self.assertEqual(j["path"], "/anything/here")
                self.assertEqual(j["route_prefix"], "/")
                self.assertEqual(j["path_below"], "/anything/here")

    def test_other_host_does_not_match_host_route(self):
        for host in ("other.test", "sub.example.test", "example.test.evil"):
            with self.subTest(host):
                r = self.req("/anything", host=host)
                self.assertEqual(r.status, 404, r)

    def test_absolute_form_routed_by_authority(self):
        # Host header says something else; the authority of the target decides.
        c = self.conn(self.s)
        c.send(b"GET http://example.test/abs/path?q=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["host"], "example.test")
        self.assertEqual(j["path"], "/abs/path")
        self.assertEqual(j["query"], "q=1")
        self.assertEqual(j["target"], "http://example.test/abs/path?q=1")

    def test_absolute_form_with_port_and_star_route(self):
        c = self.conn(self.s)
        c.send(b"GET http://Other.Test:9999/hello HTTP/1.1\r\nHost: other.test:9999\r\n\r\n")
        assert_hello(self, c.read_response())
        c.send(b"GET http://Example.Test:9999/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["host"], "example.test")


class MultipleListeners(TrellisTestCase):
    def test_two_listeners(self):
        # The first without "transport" (plain by default), the second of the suite's transport.
        cfg = base_config(listen=[{"address": "127.0.0.1", "port": 0},
                                  {"address": "127.0.0.1", "port": 0,
                                   "transport": harness.TRANSPORT}])
        s = self.start_server(cfg)
        self.assertEqual(len(s.listeners), 2)
        self.assertNotEqual(s.listeners[0][1], s.listeners[1][1])
        self.assertEqual(s.transports, ["plain", harness.TRANSPORT])
        for i in range(2):
            with Conn(s.listeners[i][1]) as c:
                c.request("GET", "/hello")
                assert_hello(self, c.read_response())


if __name__ == "__main__":
    harness.main()
