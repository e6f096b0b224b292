"""Tier 65: ABI 1.1 request handling through the real server: handlers on the thread pool
(TRELLIS_BLOCKING and routes with "blocking": true, 503 when the pool's queue is full, 504 after
limits.handler_timeout_ms), answers from other threads (TRELLIS_ASYNC), on_abort, streamed
responses with backpressure (on_writable), streamed request bodies with flow control
(TRELLIS_STREAM_BODY, request_resume_body), request_query_param.

Fixtures (tests/fixtures/plugins, see the comment at the top of each):
  handlers_fixture.so     instance "handlers" on /h, and on /hb with "blocking": true
  blocking_fixture.so     instance "blocker" (TRELLIS_BLOCKING) on /b
  stream_body_fixture.so  instance "uploads" (TRELLIS_STREAM_BODY) on /up
and the C hello plugin on /hello-blocking with "blocking": true.
"""

import json
import os
import re
import sys
import threading
import time
import zlib

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (FIXTURE_PLUGIN_DIR, ChunkedDecoder, TrellisTestCase, base_config,  # noqa: E402
                     build_request, chunked, main, parse_responses, sha256, wait_for)

HELLO = b"Hello, World!"
MiB = 1024 * 1024


def pattern(n: int) -> bytes:
    """What the fixture streams: byte i is i % 251."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def first_difference(got: bytes, want: bytes) -> str:
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"first difference at byte {i}: got {a}, want {b}"
    return f"lengths differ: got {len(got)}, want {len(want)}"


def handlers_config(threads: int = 4, queue: int = 16, handler_timeout_ms: int | None = None,
                    workers: int = 1) -> dict:
    cfg = base_config(workers=workers)
    cfg["plugins"] += [
        {"name": "handlers", "path": str(FIXTURE_PLUGIN_DIR / "handlers_fixture.so")},
        {"name": "blocker", "path": str(FIXTURE_PLUGIN_DIR / "blocking_fixture.so")},
        {"name": "uploads", "path": str(FIXTURE_PLUGIN_DIR / "stream_body_fixture.so")},
    ]
    cfg["routes"][0:0] = [
        {"prefix": "/h", "plugin": "handlers"},
        {"prefix": "/hb", "plugin": "handlers", "blocking": True},
        {"prefix": "/b", "plugin": "blocker"},
        {"prefix": "/up", "plugin": "uploads"},
        {"prefix": "/hello-blocking", "plugin": "hello", "blocking": True},
    ]
    cfg["thread_pool"] = {"threads": threads, "queue": queue}
    # Above every upload here, so the body limit plays no part in these tests either way.
    limits = {"max_body_bytes": 64 * MiB}
    if handler_timeout_ms is not None:
        limits["handler_timeout_ms"] = handler_timeout_ms
    cfg["limits"] = limits
    return cfg


class HandlersTestCase(TrellisTestCase):
    def get_json(self, s, target):
        r = s.get(target)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def poll_json(self, s, target, predicate, timeout=5.0, what=""):
        """Polls target (JSON) until predicate(json) holds; returns that JSON or fails with the
        last one seen."""
        last = {}

        def check():
            last["j"] = self.get_json(s, target)
            return predicate(last["j"])
        if not wait_for(check, timeout, interval=0.02):
            self.fail(f"{target} did not reach {what or 'the expected state'} within {timeout}s; "
                      f"last: {last.get('j')}")
        return last["j"]

    def assertHello(self, r):
        self.assertEqual((r.status, r.body), (200, HELLO), r)


# --------------------------------------------------------------------------------------------
# The thread pool
# --------------------------------------------------------------------------------------------

class Blocking(HandlersTestCase):
    SLEEP_RE = re.compile(rb"^slept (\d+) on thread (\d+)$")

    def test_blocking_plugin_runs_on_the_pool_concurrently(self):
        s = self.start_server(handlers_config(threads=8, queue=16))
        conns = [self.conn(s, timeout=15) for _ in range(8)]  # connected (and TLS done) first
        for c in conns:
            c.request("GET", "/b/blocking-sleep?ms=500")
        tids = set()
        for c in conns:
            r = c.read_response(timeout=15)
            self.assertEqual(r.status, 200, r)
            m = self.SLEEP_RE.match(r.body)
            self.assertIsNotNone(m, r)
            self.assertEqual(m.group(1), b"500")
            tids.add(m.group(2))
        # 8 sleepers at once: 8 pool threads, none of them blocked behind another.
        self.assertEqual(s.get("/b/blocking-max").body, b"8")
        self.assertEqual(len(tids), 8, tids)

    def test_pool_size_bounds_the_concurrency(self):
        s = self.start_server(handlers_config(threads=2, queue=16))
        conns = [self.conn(s, timeout=15) for _ in range(6)]
        for c in conns:
            c.request("GET", "/b/blocking-sleep?ms=200")
        tids = set()
        for c in conns:
            r = c.read_response(timeout=15)
            self.assertEqual(r.status, 200, r)
            tids.add(self.SLEEP_RE.match(r.body).group(2))
        self.assertEqual(s.get("/b/blocking-max").body, b"2")
        self.assertLessEqual(len(tids), 2, tids)

    def test_handlers_on_the_pool_are_off_the_event_loop(self):
        s = self.start_server(handlers_config())
        inline = self.get_json(s, "/h/thread")
        # The control: the fixture does recognise an event loop's thread.
        self.assertTrue(inline["on_worker_thread"], inline)
        flagged = self.get_json(s, "/b/blocking-thread")  # TRELLIS_BLOCKING
        self.assertFalse(flagged["on_worker_thread"], flagged)
        routed = self.get_json(s, "/hb/thread")  # the same instance as /h, "blocking": true route
        self.assertFalse(routed["on_worker_thread"], routed)
        self.assertNotEqual(routed["tid"], inline["tid"])

    def test_blocking_route_on_the_c_hello_plugin(self):
        s = self.start_server(handlers_config())
        self.assertHello(s.get("/hello-blocking"))
        self.assertHello(s.get("/hello-blocking/below"))
        # Pipelined, pool and inline handlers mixed: answered in request order on one connection.
        c = self.conn(s)
        c.send(build_request("GET", "/hello-blocking") + build_request("GET", "/h/thread")
               + build_request("GET", "/hb/thread") + build_request("GET", "/hello-blocking/x"))
        self.assertHello(c.read_response())
        self.assertTrue(c.read_response().json()["on_worker_thread"])
        self.assertFalse(c.read_response().json()["on_worker_thread"])
        self.assertHello(c.read_response())
        c.request("GET", "/hello")
        self.assertHello(c.read_response())


class PoolQueue(HandlersTestCase):
    def test_full_queue_is_503(self):
        # One thread, one queue slot: a running handler, a queued one, and the third is refused.
        s = self.start_server(handlers_config(threads=1, queue=1))
        a = self.conn(s, timeout=20)
        a.request("GET", "/hb/hold")
        # /h/state is answered inline on the event loop while the pool thread holds.
        self.poll_json(s, "/h/state", lambda j: j["holding"] == 1, what="one holder on the pool")
        b = self.conn(s, timeout=20)
        b.request("GET", "/hb/hold")
        c = self.conn(s, timeout=20)
        c.request("GET", "/hb/hold")

        results = {}

        def read(name, conn):
            try:
                results[name] = conn.read_response(timeout=15)
            except Exception as e:  # noqa: BLE001 - reported below
                results[name] = e
        readers = [threading.Thread(target=read, args=(n, conn)) for n, conn in
                   (("a", a), ("b", b), ("c", c))]
        for t in readers:
            t.start()
        refused = wait_for(lambda: [n for n, r in list(results.items())
                                    if getattr(r, "status", None) == 503], 5)
        # The held and the queued requests wait for the gate; only the refusal came already.
        answered_before_gate = dict(results)
        self.assertEqual(self.get_json(s, "/h/state")["holding"], 1)
        self.assertEqual(s.get("/h/open-gate").status, 200)
        for t in readers:
            t.join(20)
        self.assertTrue(refused, f"no 503 while the queue was full: {results}")
        self.assertEqual(list(answered_before_gate), refused, answered_before_gate)
        self.assertIn(refused[0], ("b", "c"))
        for name in ("a", "b", "c"):
            self.assertIn(name, results, f"{name} got no answer")
            self.assertNotIsInstance(results[name], Exception, f"{name}: {results[name]!r}")
        self.assertEqual(sorted(r.status for r in results.values()), [200, 200, 503], results)
        self.assertEqual(results["a"].body, b"held\n")
        self.assertCommonHeaders(results[refused[0]])
        # One thread: never two holders at once.
        self.assertEqual(self.get_json(s, "/h/state")["max_holding"], 1)
        # With the pool free again the same route is served.
        r = s.get("/hb/hold")
        self.assertEqual((r.status, r.body), (200, b"held\n"), r)


class HandlerTimeout(HandlersTestCase):
    def test_stuck_handler_is_504_and_the_server_goes_on(self):
        s = self.start_server(handlers_config(threads=2, queue=4, handler_timeout_ms=500))
        mark = s.log_mark()
        c = self.conn(s, timeout=10)
        c.request("GET", "/b/blocking-forever")
        r = c.read_response(timeout=8)
        self.assertEqual(r.status, 504, r)
        self.assertCommonHeaders(r)
        # The event loop and the other pool thread still serve.
        self.assertHello(s.get("/hello"))
        self.assertEqual(s.get("/b/blocking-sleep?ms=1").status, 200)
        self.assertIsNotNone(s.wait_stderr_since(mark, r"\[(info|warn|error)\] .*\bblocker\b", 5),
                             f"no log line naming the plugin instance: {s.stderr_since(mark)}")
        # on_abort told the fixture, which let its pool thread go.
        stats = self.poll_json(s, "/b/blocking-stats",
                               lambda j: j["woken_by_abort"] == 1 and j["forever_waiting"] == 0,
                               what="the stuck handler woken by on_abort")
        self.assertEqual(stats["aborts"], 1, stats)


# --------------------------------------------------------------------------------------------
# Answers from other threads
# --------------------------------------------------------------------------------------------

class Async(HandlersTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(handlers_config())

    def test_answer_from_another_thread(self):
        r = self.s.get("/h/async?ms=50")
        self.assertEqual((r.status, r.body), (200, b"async 50"), r)
        self.assertEqual(r.header_all("Content-Length"), ["8"])
        self.assertEqual(r.header("Content-Type"), "text/plain")
        self.assertCommonHeaders(r)
        c = self.s.curl("/h/async?ms=20")
        self.assertEqual((c.returncode, c.status, c.body), (0, 200, b"async 20"), c)

    def test_pipelined_async_answers_keep_request_order(self):
        c = self.conn(self.s, timeout=10)
        c.send(b"".join(build_request("GET", f"/h/async?ms={ms}") for ms in (600, 300, 10)))
        bodies = [c.read_response().body for _ in range(3)]
        self.assertEqual(bodies, [b"async 600", b"async 300", b"async 10"])
        c.request("GET", "/hello")
        self.assertHello(c.read_response())
        self.assertEqual(self.get_json(self.s, "/h/state")["async_pending"], 0)

    def test_async_answers_on_one_keepalive_connection(self):
        c = self.conn(self.s)
        for ms in (0, 30, 0, 5):
            c.request("GET", f"/h/async?ms={ms}")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"async {ms}".encode()), r)
        self.assertTrue(c.is_open_after(0.1))

    def test_release_without_answer_is_500(self):
        r = self.s.get("/h/async-release-only")
        self.assertEqual(r.status, 500, r)
        self.assertCommonHeaders(r)
        self.assertHello(self.s.get("/hello"))
        self.assertEqual(self.get_json(self.s, "/h/state")["async_pending"], 0)


class Abort(HandlersTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(handlers_config())

    def test_client_leaving_calls_on_abort(self):
        c = self.conn(self.s)
        c.request("GET", "/h/abort-watch?ms=10000")
        # The fixture holds it: only now can the client leave "while the plugin holds it".
        self.poll_json(self.s, "/h/aborts", lambda j: j["watching"] == 1, what="the request held")
        c.abort()  # RST: the client is gone, not merely done sending
        j = self.poll_json(self.s, "/h/aborts", lambda j: j["aborts"] == 1, timeout=5,
                           what="on_abort called")
        j = self.poll_json(self.s, "/h/aborts", lambda j: j["released"] == 1, timeout=5,
                           what="the request released")
        # The fixture answered after on_abort: the host refused it.
        self.assertEqual((j["late_refused"], j["late_accepted"], j["watching"]), (1, 0, 0), j)
        self.assertEqual(j["all_aborts"], 1, j)
        self.assertHello(self.s.get("/hello"))

    def test_client_leaving_a_stalled_stream_calls_on_abort(self):
        c = self.conn(self.s, timeout=10, rcvbuf=16 * 1024)
        c.request("GET", "/h/stream?bytes=67108864&chunk=65536")
        self.assertEqual(c.read_head().status, 200)
        # The client reads nothing: the host must push back, then the client leaves.
        self.poll_json(self.s, "/h/stream-stats", lambda j: j["again"] >= 1, timeout=10,
                       what="a write answered TRELLIS_AGAIN")
        c.abort()
        j = self.poll_json(self.s, "/h/stream-stats", lambda j: j["aborted"] == 1, timeout=10,
                           what="on_abort for the stream")
        self.assertEqual(j["done"], 0, j)
        self.assertHello(self.s.get("/hello"))


class PluginFailures(HandlersTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(handlers_config())

    def test_second_answer_is_ignored(self):
        mark = self.s.log_mark()
        c = self.conn(self.s)
        c.request("GET", "/h/twice")
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"first\n"), r)
        # Still in step: the next answer is the next request's.
        c.request("GET", "/hello")
        self.assertHello(c.read_response())
        self.assertIsNotNone(self.s.wait_stderr_since(mark, r"answered a request twice"),
                             self.s.stderr_since(mark))

    def test_exception_is_500_and_a_log_line_with_the_instance_name(self):
        mark = self.s.log_mark()
        r = self.s.get("/h/throw")
        self.assertEqual(r.status, 500, r)
        self.assertIsNotNone(self.s.wait_stderr_since(mark, r"\[error\] handlers: on_request threw: boom"),
                             self.s.stderr_since(mark))
        self.assertHello(self.s.get("/hello"))

    def test_error_result_is_500(self):
        mark = self.s.log_mark()
        r = self.s.get("/h/error")
        self.assertEqual(r.status, 500, r)
        self.assertIsNotNone(self.s.wait_stderr_since(mark, r'plugin "handlers" failed on GET /h/error'),
                             self.s.stderr_since(mark))


# --------------------------------------------------------------------------------------------
# Streamed responses
# --------------------------------------------------------------------------------------------

class Streaming(HandlersTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(handlers_config())

    def stats(self):
        return self.get_json(self.s, "/h/stream-stats")

    def test_8_mib_chunked_byte_for_byte(self):
        n = 8 * MiB
        c = self.conn(self.s, timeout=30)
        c.request("GET", f"/h/stream?bytes={n}&chunk=65536")
        head = c.read_head()
        self.assertEqual(head.status, 200, head)
        self.assertEqual(head.header("Transfer-Encoding", "").lower(), "chunked", head)
        self.assertFalse(head.has_header("Content-Length"), head)
        self.assertEqual(head.header("Content-Type"), "application/octet-stream")
        self.assertCommonHeaders(head)
        body = c.read_chunked_body(timeout=30)
        if body != pattern(n):
            self.fail(first_difference(body, pattern(n)))
        # The last chunk ended the response: the connection goes on.
        c.request("GET", "/hello")
        self.assertHello(c.read_response())
        self.assertEqual(self.stats()["done"], 1)

    def test_8_mib_with_curl(self):
        n = 8 * MiB
        r = self.s.curl(f"/h/stream?bytes={n}&chunk=10000", timeout=30)
        self.assertEqual((r.returncode, r.status), (0, 200), r)
        self.assertEqual(len(r.body), n)
        self.assertEqual(sha256(r.body), sha256(pattern(n)))

    def test_slow_reader_gets_backpressure_and_every_byte(self):
        n = 16 * MiB
        c = self.conn(self.s, timeout=30, rcvbuf=16 * 1024)
        c.request("GET", f"/h/stream?bytes={n}&chunk=16384")
        head = c.read_head()
        self.assertEqual(head.status, 200, head)
        # Reading nothing: the host must say TRELLIS_AGAIN instead of buffering 16 MiB.
        self.poll_json(self.s, "/h/stream-stats", lambda j: j["again"] >= 1, timeout=10,
                       what="a write answered TRELLIS_AGAIN")
        dec = ChunkedDecoder()
        deadline = time.monotonic() + 30
        # The first MiB in small reads with short pauses (the pauses pace a slow client; they
        # synchronise nothing), then the rest at full speed.
        while len(dec.decoded) < MiB and not dec.done:
            dec.feed(bytes(c.buf))
            c.buf = bytearray()
            time.sleep(0.002)
            if not dec.done and not c._recv(deadline, 4096):
                break
        while not dec.done:
            dec.feed(bytes(c.buf))
            c.buf = bytearray()
            if not dec.done and not c._recv(deadline, 65536):
                break
        dec.feed(bytes(c.buf))
        self.assertTrue(dec.done, f"the stream ended early after {len(dec.decoded)} bytes")
        if bytes(dec.decoded) != pattern(n):
            self.fail(first_difference(bytes(dec.decoded), pattern(n)))
        j = self.poll_json(self.s, "/h/stream-stats", lambda j: j["done"] == 1, what="the stream ended")
        self.assertGreaterEqual(j["writable"], 1, j)
        self.assertEqual(j["aborted"], 0, j)

    def test_http10_gets_a_body_delimited_by_close(self):
        n = 300000
        c = self.conn(self.s, timeout=20)
        c.request("GET", f"/h/stream?bytes={n}&chunk=7000", version="HTTP/1.0", host="h10.test")
        data, closed = c.read_until_closed(20)
        self.assertTrue(closed, "the server did not close to end the HTTP/1.0 body")
        resps, rest = parse_responses(data)
        self.assertEqual(len(resps), 1, resps)
        r = resps[0]
        self.assertEqual(r.status, 200, r)
        self.assertFalse(r.has_header("Content-Length"), r)
        self.assertFalse(r.has_header("Transfer-Encoding"), r)
        if r.body != pattern(n):
            self.fail(first_difference(r.body, pattern(n)))

    def test_head_of_a_stream_has_no_body(self):
        c = self.conn(self.s)
        c.request("HEAD", "/h/stream?bytes=100000&chunk=4096")
        r = c.read_response(head=True)
        self.assertEqual(r.status, 200, r)
        self.assertCommonHeaders(r)
        # No body bytes followed the head: the next response parses from its first byte.
        c.request("GET", "/hello")
        self.assertHello(c.read_response())

    def test_declared_length(self):
        n = 1000003
        c = self.conn(self.s, timeout=20)
        c.request("GET", f"/h/stream-length?bytes={n}&chunk=65536")
        r = c.read_response(timeout=20)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header_all("Content-Length"), [str(n)], r)
        self.assertFalse(r.has_header("Transfer-Encoding"), r)
        if r.body != pattern(n):
            self.fail(first_difference(r.body, pattern(n)))
        c.request("GET", "/hello")
        self.assertHello(c.read_response())

    def test_empty_streams(self):
        c = self.conn(self.s)
        c.request("GET", "/h/stream?bytes=0")
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b""), r)
        self.assertEqual(r.header("Transfer-Encoding", "").lower(), "chunked", r)
        c.request("GET", "/h/stream-length?bytes=0")
        r = c.read_response()
        self.assertEqual((r.status, r.body, r.header("Content-Length")), (200, b"", "0"), r)
        c.request("GET", "/hello")
        self.assertHello(c.read_response())

    def test_pipelined_streams_stay_in_order(self):
        c = self.conn(self.s, timeout=20)
        c.send(build_request("GET", "/h/stream?bytes=200000&chunk=5000")
               + build_request("GET", "/h/stream-length?bytes=150000&chunk=3000")
               + build_request("GET", "/hello")
               + build_request("GET", "/h/stream?bytes=1"))
        r1 = c.read_response(timeout=20)
        self.assertEqual((r1.status, r1.body == pattern(200000)), (200, True), r1)
        r2 = c.read_response(timeout=20)
        self.assertEqual((r2.status, r2.header("Content-Length"), r2.body == pattern(150000)),
                         (200, "150000", True), r2)
        self.assertHello(c.read_response())
        r4 = c.read_response()
        self.assertEqual((r4.status, r4.body), (200, b"\x00"), r4)


# --------------------------------------------------------------------------------------------
# Streamed request bodies
# --------------------------------------------------------------------------------------------

class Uploads(HandlersTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(handlers_config())

    def check_answer(self, r, data):
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["bytes"], len(data), j)
        self.assertEqual(j["crc32"], f"{zlib.crc32(data):08x}", j)
        self.assertGreaterEqual(j["pauses"], 1, f"the fixture never paused the body: {j}")
        self.assertEqual(j["early"], 0, f"on_body came while paused: {j}")
        # Delivered as a stream, not as one buffered body.
        self.assertGreater(j["calls"], j["pauses"], j)
        return j

    def test_32_mib_with_content_length(self):
        data = os.urandom(32 * MiB)
        c = self.conn(self.s, timeout=60)
        c.request("POST", "/up/upload", [("Content-Type", "application/octet-stream")], data)
        j = self.check_answer(c.read_response(timeout=60), data)
        self.assertGreaterEqual(j["pauses"], 2, j)
        c.request("GET", "/hello")
        self.assertHello(c.read_response())

    def test_chunked_with_curl(self):
        data = os.urandom(16 * MiB)
        path = self.tmp / "upload.bin"
        path.write_bytes(data)
        r = self.s.curl("/up/upload", "--data-binary", f"@{path}", "-H", "Transfer-Encoding: chunked",
                        "-H", "Content-Type: application/octet-stream", timeout=60)
        self.assertEqual((r.returncode, r.status), (0, 200), r)
        j = json.loads(r.body)
        self.assertEqual((j["bytes"], j["crc32"], j["early"]), (len(data), f"{zlib.crc32(data):08x}", 0), j)
        self.assertGreaterEqual(j["pauses"], 1, j)

    def test_raw_chunked_with_odd_chunk_sizes_released_later(self):
        data = os.urandom(3 * MiB + 12345)
        sizes = [1, 7, 4096, 65536, 100003, 2, 300000]
        pieces, pos, i = [], 0, 0
        while pos < len(data):
            pieces.append(data[pos:pos + sizes[i % len(sizes)]])
            pos += sizes[i % len(sizes)]
            i += 1
        c = self.conn(self.s, timeout=30)
        c.request("POST", "/up/upload?release=later", [("Transfer-Encoding", "chunked")],
                  chunked(*pieces))
        self.check_answer(c.read_response(timeout=30), data)
        c.request("GET", "/hello")
        self.assertHello(c.read_response())
        j = self.poll_json(self.s, "/up/stats", lambda j: j["released"] == 1, what="the release")
        self.assertEqual((j["uploads"], j["done"], j["aborts"]), (1, 1, 0), j)

    def test_client_leaving_mid_upload_calls_on_abort(self):
        c = self.conn(self.s, timeout=10)
        c.send(build_request("POST", "/up/upload", [("Content-Length", str(32 * MiB))]))
        c.send(os.urandom(3 * MiB))
        self.poll_json(self.s, "/up/stats", lambda j: j["uploads"] == 1, what="the upload started")
        c.abort()
        j = self.poll_json(self.s, "/up/stats", lambda j: j["aborts"] == 1 and j["released"] == 1,
                           timeout=5, what="on_abort and the release")
        self.assertEqual(j["done"], 0, j)
        # The next upload is served as usual.
        data = os.urandom(2 * MiB)
        r = self.s.get("/up/upload", method="POST", body=data)
        self.check_answer(r, data)


# --------------------------------------------------------------------------------------------
# request_query_param
# --------------------------------------------------------------------------------------------

class QueryParams(HandlersTestCase):
    CASES = [
        ("?name=a%20b", 200, b"a b"),
        ("?name=a+b", 200, b"a b"),
        ("?name=", 200, b""),
        ("?name", 200, b""),  # no '=': present, empty
        ("?name=first&name=second", 200, b"first"),  # the first of a repeated name
        ("?x=1&name=%41%2Bc&y=2", 200, b"A+c"),
        ("?xname=no&name=yes", 200, b"yes"),
        ("?name=%E2%82%AC", 200, "\u20ac".encode()),
        ("?name=a%2Fb%3F%26%3D", 200, b"a/b?&="),
        ("?name=" + "v" * 300, 200, b"v" * 300),  # longer than the helper's first buffer
        ("?x=1", 404, b"absent"),
        ("?namex=1&xname=2", 404, b"absent"),
        ("", 404, b"absent"),
    ]

    def test_decoding(self):
        s = self.start_server(handlers_config())
        c = self.conn(s)
        for query, status, body in self.CASES:
            with self.subTest(query=query):
                c.request("GET", "/h/query" + query)
                r = c.read_response()
                self.assertEqual((r.status, r.body), (status, body), r)


if __name__ == "__main__":
    main()
