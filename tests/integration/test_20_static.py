"""Tier 20: the static plugin (files, MIME types, redirects, caching, HEAD, large files)."""

import os
import re
import sys
import time
from urllib.parse import urlsplit

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (STRONG_ETAG_RE, TrellisTestCase, base_config, http_date,  # noqa: E402
                     parse_http_date, sha256, utc_epoch)

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
       b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
       b"\x00\x00\x00IEND\xaeB`\x82")

WWW = {
    "index.html": "<!doctype html><title>home</title><h1>static home</h1>\n",
    "style.css": "body { color: #123456; }\n",
    "app.js": "console.log('trellis');\n",
    "logo.svg": '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>\n',
    "pixel.png": PNG,
    "data.json": '{"k": [1, 2, 3]}\n',
    "notes.txt": "plain notes\n",
    "blob.qqq": bytes(range(256)),
    "noext": b"no extension\n",
    "empty.txt": b"",
    "with space.txt": "space file\n",
    "docs/index.html": "<h1>docs index</h1>\n",
    "docs/page.html": "<p>docs page</p>\n",
}

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

FIXED_MTIME = utc_epoch(2024, 1, 2, 3, 4, 5)
FIXED_MTIME_TEXT = "Tue, 02 Jan 2024 03:04:05 GMT"

BIG_SIZE = 20 * 1024 * 1024


def prepare(s):
    os.utime(s.www / "notes.txt", (FIXED_MTIME, FIXED_MTIME))
    os.symlink("index.html", s.www / "alias.html")          # inside root: served
    os.symlink("docs", s.www / "docs-link")                  # directory inside root: served


class Static(TrellisTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(base_config(), www=WWW, prepare=prepare)

    def get_ok(self, path, **kw):
        r = self.s.get(path, **kw)
        self.assertEqual(r.status, 200, f"{path}: {r!r}")
        self.assertCommonHeaders(r)
        return r

    def test_root_serves_index_html(self):
        r = self.get_ok("/")
        self.assertEqual(r.body, WWW["index.html"].encode())
        self.assertEqual(r.header("Content-Type"), HTML)
        self.assertEqual(r.header("Content-Length"), str(len(WWW["index.html"])))

    def test_subdirectory_with_slash_serves_index(self):
        r = self.get_ok("/docs/")
        self.assertEqual(r.body, b"<h1>docs index</h1>\n")
        self.assertEqual(r.header("Content-Type"), HTML)

    def test_directory_without_slash_redirects(self):
        r = self.s.get("/docs")
        self.assertEqual(r.status, 301, r)
        self.assertCommonHeaders(r)
        loc = r.header("Location")
        self.assertIsNotNone(loc, r)
        u = urlsplit(loc)
        self.assertEqual(u.path, "/docs/", loc)
        if u.netloc:
            self.assertIn(u.netloc, (f"127.0.0.1:{self.s.port}", "localhost"), loc)

    def test_curl_follows_redirect(self):
        r = self.s.curl("/docs", "-L")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"<h1>docs index</h1>\n")

    def test_file_in_subdirectory(self):
        r = self.get_ok("/docs/page.html")
        self.assertEqual(r.body, b"<p>docs page</p>\n")

    def test_mime_types(self):
        cases = {
            "/index.html": [HTML],
            "/notes.txt": [TEXT],
            "/logo.svg": ["image/svg+xml", "image/svg+xml; charset=utf-8"],
            "/pixel.png": ["image/png"],
            "/data.json": ["application/json", "application/json; charset=utf-8"],
            "/style.css": ["text/css", "text/css; charset=utf-8"],
            "/app.js": ["text/javascript", "text/javascript; charset=utf-8",
                        "application/javascript", "application/javascript; charset=utf-8"],
            "/blob.qqq": ["application/octet-stream"],
            "/noext": ["application/octet-stream"],
        }
        for path, types in cases.items():
            with self.subTest(path):
                r = self.get_ok(path)
                self.assertIn(r.header("Content-Type"), types)
                rel = path.lstrip("/")
                content = WWW[rel].encode() if isinstance(WWW[rel], str) else WWW[rel]
                self.assertEqual(r.body, content)
                self.assertEqual(r.header("Content-Length"), str(len(content)))

    def test_binary_file_exact(self):
        r = self.get_ok("/blob.qqq")
        self.assertEqual(r.body, bytes(range(256)))

    def test_empty_file(self):
        r = self.get_ok("/empty.txt")
        self.assertEqual(r.header("Content-Length"), "0")
        self.assertEqual(r.body, b"")

    def test_query_string_ignored_for_file_lookup(self):
        r = self.get_ok("/notes.txt?v=123&x=y")
        self.assertEqual(r.body, b"plain notes\n")

    def test_percent_encoded_name(self):
        r = self.get_ok("/with%20space.txt")
        self.assertEqual(r.body, b"space file\n")

    def test_missing_file_404(self):
        for path in ("/nope.html", "/docs/nope.html", "/nodir/x.txt", "/index.html/extra"):
            with self.subTest(path):
                r = self.s.get(path)
                self.assertEqual(r.status, 404, r)
                self.assertCommonHeaders(r)

    def test_symlink_inside_root_is_served(self):
        r = self.get_ok("/alias.html")
        self.assertEqual(r.body, WWW["index.html"].encode())
        r = self.get_ok("/docs-link/page.html")
        self.assertEqual(r.body, b"<p>docs page</p>\n")

    def test_last_modified_and_strong_etag(self):
        r = self.get_ok("/notes.txt")
        self.assertEqual(r.header("Last-Modified"), FIXED_MTIME_TEXT)
        etag = r.header("ETag")
        self.assertIsNotNone(etag, r)
        self.assertFalse(etag.startswith("W/"), f"weak ETag {etag}")
        self.assertRegex(etag, STRONG_ETAG_RE)
        r2 = self.get_ok("/notes.txt")
        self.assertEqual(r2.header("ETag"), etag, "ETag not stable")
        other = self.get_ok("/index.html").header("ETag")
        self.assertNotEqual(other, etag, "two different files share an ETag")

    def test_etag_changes_when_file_changes(self):
        etag = self.get_ok("/notes.txt").header("ETag")
        p = self.s.www / "notes.txt"
        p.write_bytes(b"changed notes, longer\n")
        os.utime(p, (FIXED_MTIME + 3600, FIXED_MTIME + 3600))
        # The open-file cache revalidates within its TTL (1 s by default): poll, bounded.
        r = harness.wait_for(lambda: (lambda r: r if r.body == b"changed notes, longer\n" else None)(
            self.get_ok("/notes.txt")), timeout=3)
        self.assertIsNotNone(r, "the change was not served within the open-file cache TTL")
        self.assertNotEqual(r.header("ETag"), etag)
        self.assertEqual(r.header("Last-Modified"), http_date(FIXED_MTIME + 3600))

    def assert304ThenUsable(self, headers):
        """Sends a conditional GET then a plain GET on one connection: the 304 must carry no body
        (the second response must parse right after it)."""
        c = self.conn(self.s)
        c.request("GET", "/notes.txt", headers)
        c.request("GET", "/hello")
        r = c.read_response()
        self.assertEqual(r.status, 304, r)
        self.assertEqual(r.body, b"")
        self.assertCommonHeaders(r)
        r2 = c.read_response()
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.body, b"Hello, World!")
        return r

    def test_if_none_match_304(self):
        etag = self.get_ok("/notes.txt").header("ETag")
        r = self.assert304ThenUsable([("If-None-Match", etag)])
        te = r.header("Transfer-Encoding")
        self.assertIsNone(te, r)

    def test_if_none_match_list_304(self):
        etag = self.get_ok("/notes.txt").header("ETag")
        self.assert304ThenUsable([("If-None-Match", f'"nope-1", {etag}, "nope-2"')])

    def test_if_none_match_other_etag_200(self):
        r = self.get_ok("/notes.txt", headers=[("If-None-Match", '"definitely-not-it"')])
        self.assertEqual(r.body, b"plain notes\n")

    def test_if_modified_since_equal_304(self):
        self.assert304ThenUsable([("If-Modified-Since", FIXED_MTIME_TEXT)])

    def test_if_modified_since_later_304(self):
        self.assert304ThenUsable([("If-Modified-Since", http_date(time.time()))])

    def test_if_modified_since_earlier_200(self):
        r = self.get_ok("/notes.txt", headers=[("If-Modified-Since", http_date(FIXED_MTIME - 1))])
        self.assertEqual(r.body, b"plain notes\n")
        r = self.get_ok("/notes.txt",
                        headers=[("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")])
        self.assertEqual(r.body, b"plain notes\n")

    def test_if_modified_since_garbage_200(self):
        r = self.get_ok("/notes.txt", headers=[("If-Modified-Since", "not a date")])
        self.assertEqual(r.body, b"plain notes\n")

    def test_curl_conditional(self):
        r1 = self.s.curl("/notes.txt")
        self.assertEqual(r1.status, 200, r1)
        r2 = self.s.curl("/notes.txt", "-H", f"If-None-Match: {r1.header('ETag')}")
        self.assertEqual(r2.status, 304, r2)
        self.assertEqual(r2.body, b"")

    def test_head_same_headers_no_body(self):
        for path in ("/notes.txt", "/index.html", "/pixel.png", "/docs/"):
            with self.subTest(path):
                c = self.conn(self.s)
                c.request("HEAD", path)
                c.request("GET", path)
                c.request("GET", "/hello")
                h = c.read_response(head=True)
                g = c.read_response()
                tail = c.read_response()
                self.assertEqual(h.status, 200, h)
                self.assertEqual(g.status, 200, g)
                self.assertEqual(tail.body, b"Hello, World!",
                                 "HEAD response carried body bytes")
                for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified"):
                    self.assertIsNotNone(g.header(name), f"GET lacks {name}")
                    self.assertEqual(h.header(name), g.header(name), name)
                self.assertEqual(int(h.header("Content-Length")), len(g.body))
                self.assertCommonHeaders(h)

    def test_head_with_curl(self):
        r = self.s.curl("/notes.txt", "-I")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Length"), "12")
        # (curl -I writes the head to the output file: no body check here; the raw-socket HEAD
        # tests check that no body bytes follow.)

    def test_other_methods_405(self):
        for method, body in (("POST", b"abc"), ("PUT", b"data"), ("DELETE", b""),
                             ("PATCH", b"x"), ("OPTIONS", b"")):
            with self.subTest(method):
                r = self.s.get("/index.html", method=method, body=body,
                               content_length=True)
                self.assertEqual(r.status, 405, r)
                self.assertEqual(r.header("Allow"), "GET, HEAD")
                self.assertCommonHeaders(r)

    def test_405_keeps_connection_usable(self):
        c = self.conn(self.s)
        c.request("POST", "/index.html", body=b"payload")
        c.request("GET", "/notes.txt")
        r = c.read_response()
        self.assertEqual(r.status, 405, r)
        r2 = c.read_response()
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.body, b"plain notes\n")


class LargeFile(TrellisTestCase):
    def test_large_file_whole_and_correct(self):
        data = os.urandom(BIG_SIZE)

        def add_big(s):
            (s.www / "big.bin").write_bytes(data)
        s = self.start_server(base_config(), www=WWW, prepare=add_big)
        r = s.curl("/big.bin", timeout=30)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Length"), str(BIG_SIZE))
        self.assertEqual(r.header("Content-Type"), "application/octet-stream")
        self.assertEqual(len(r.body), BIG_SIZE)
        self.assertEqual(sha256(r.body), sha256(data))

        # raw socket, keep-alive: two large responses back to back, then a small one
        c = self.conn(s, timeout=30)
        c.request("GET", "/big.bin")
        c.request("HEAD", "/big.bin")
        c.request("GET", "/notes.txt")
        g = c.read_response(timeout=30)
        self.assertEqual(sha256(g.body), sha256(data))
        h = c.read_response(head=True)
        self.assertEqual(h.header("Content-Length"), str(BIG_SIZE))
        t = c.read_response()
        self.assertEqual(t.body, b"plain notes\n")

    def test_concurrent_large_downloads(self):
        data = os.urandom(4 * 1024 * 1024)

        def add_big(s):
            (s.www / "big4.bin").write_bytes(data)
        s = self.start_server(base_config(workers=2), www=WWW, prepare=add_big)
        results = []
        threads = [harness.threading.Thread(
            target=lambda: results.append(s.curl("/big4.bin", timeout=30))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        self.assertEqual(len(results), 4)
        for r in results:
            self.assertEqual(r.status, 200, r)
            self.assertEqual(sha256(r.body), sha256(data))


if __name__ == "__main__":
    harness.main()
