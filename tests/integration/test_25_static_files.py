"""Tier 25: the production `static` plugin (issue 4) and the host's file responses.

Plugin config: try_files, error_pages, max_ranges, mime_types, cache_control, precompressed
sidecars, directory_listing (HTML and JSON), dotfiles, symlinks, open_file_cache, and the refusal
of unknown keys and wrong types. Host behaviour of every file response: validators and
X-Content-Type-Options, HEAD = GET's headers, the RFC 9110 §13.2.2 conditional order, byte ranges
(single, suffix, open, multipart/byteranges, max_ranges, overlap, 416, invalid syntax, If-Range),
a 5 MB file in ranges, and a path-traversal corpus that must never reach a byte outside root.

Runs over each transport (TRELLIS_TEST_TRANSPORT=plain|tls|auto): every request goes through the
harness clients (Server.get / Server.conn / Server.curl), never a hard-coded scheme."""

import datetime
import json
import os
import re
import sys
import time
from urllib.parse import quote

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (STRONG_ETAG_RE, TrellisTestCase, base_config, http_date,  # noqa: E402
                     parse_http_date, run_trellis, sha256, utc_epoch, wait_for)

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JS = "text/javascript; charset=utf-8"
OCTET = "application/octet-stream"

FIXED_MTIME = utc_epoch(2024, 1, 2, 3, 4, 5)
FIXED_MTIME_TEXT = "Tue, 02 Jan 2024 03:04:05 GMT"

NOTES = b"plain notes for the static tests\n"
RANGE_DATA = bytes((i * 37 + 11) % 251 for i in range(1000))  # 1000 bytes, no repeats nearby
RANGE_SIZE = len(RANGE_DATA)


def static_config(extra_instances=(), **plugin_config) -> dict:
    """base_config() with the "site" instance (route "/") configured with root "www" plus
    plugin_config; extra_instances: (name, route prefix, config) served by static too."""
    cfg = base_config()
    cfg["plugins"][2]["config"] = {"root": "www", **plugin_config}
    for name, prefix, config in extra_instances:
        cfg["plugins"].append({"name": name, "path": "static", "config": config})
        cfg["routes"].insert(0, {"prefix": prefix, "plugin": name})
    return cfg


def set_mtime(path, epoch=FIXED_MTIME):
    os.utime(path, (epoch, epoch), follow_symlinks=False)


def headers_but_date(resp):
    return sorted((k.lower(), v) for k, v in resp.headers if k.lower() != "date")


def tokens(resp, name):
    out = set()
    for v in resp.header_all(name):
        out.update(t.strip().lower() for t in v.split(",") if t.strip())
    return out


# Fields that describe a body: never in a 304, which has none (RFC 9110 §15.4.5).
BODY_FIELDS = ("Content-Type", "Content-Length", "Content-Encoding", "Content-Range",
               "Accept-Ranges", "X-Content-Type-Options", "Transfer-Encoding")


class FileTestCase(TrellisTestCase):
    """Assertions shared by the classes below."""

    def assertFile200(self, resp, body: bytes, content_type: str | None = None, what=""):
        """A 200 file response carrying body with every header the spec requires."""
        self.assertEqual(resp.status, 200, f"{what}: {resp!r}")
        self.assertCommonHeaders(resp)
        self.assertEqual(resp.body, body, what)
        self.assertEqual(resp.header_all("Content-Length"), [str(len(body))], f"{what}: {resp!r}")
        lm = resp.header("Last-Modified")
        self.assertIsNotNone(lm, f"{what}: no Last-Modified in {resp!r}")
        self.assertRegex(lm, harness.IMF_DATE_RE)
        etag = resp.header("ETag")
        self.assertIsNotNone(etag, f"{what}: no ETag in {resp!r}")
        self.assertRegex(etag, STRONG_ETAG_RE, f"{what}: ETag not strong")
        self.assertEqual(resp.header_all("Accept-Ranges"), ["bytes"], f"{what}: {resp!r}")
        self.assertEqual(resp.header_all("X-Content-Type-Options"), ["nosniff"], f"{what}: {resp!r}")
        self.assertFalse(resp.has_header("Transfer-Encoding"), f"{what}: {resp!r}")
        if content_type is not None:
            self.assertEqual(resp.header("Content-Type"), content_type, what)
        return resp

    def assertRefused(self, resp, what="", statuses=(403, 404), forbidden=()):
        self.assertIn(resp.status, statuses, f"{what}: {resp!r}")
        for secret in forbidden:
            self.assertNotIn(secret, resp.body, f"{what}: secret content in the body")
            self.assertNotIn(secret, resp.raw_head, f"{what}: secret content in the head")
        return resp

    def assertNoBodyThenUsable(self, s, method, target, headers, status):
        """Sends the request and a GET /hello on one connection: the first answer must be
        `status` with no body bytes (the /hello response parses right after it)."""
        c = self.conn(s)
        c.request(method, target, headers)
        c.request("GET", "/hello")
        r = c.read_response(head=(method == "HEAD"))
        self.assertEqual(r.status, status, f"{method} {target} {headers}: {r!r}")
        self.assertEqual(r.body, b"")
        tail = c.read_response()
        self.assertEqual((tail.status, tail.body), (200, b"Hello, World!"),
                         f"{method} {target} {headers}: body bytes after the {status}: {tail!r}")
        return r

    def parse_byteranges(self, resp, what=""):
        """Parses a multipart/byteranges body strictly; returns [(content_type, first, last,
        total, data)]."""
        ct = resp.header("Content-Type") or ""
        m = re.fullmatch(r'multipart/byteranges;\s*boundary=(?:"([^"]+)"|([^\s;"]+))', ct, re.I)
        self.assertIsNotNone(m, f"{what}: Content-Type {ct!r}")
        boundary = (m.group(1) or m.group(2)).encode()
        body = resp.body
        self.assertEqual(resp.header("Content-Length"), str(len(body)), what)
        delim = b"--" + boundary
        pos = 2 if body.startswith(b"\r\n") else 0
        parts = []
        while True:
            self.assertEqual(body[pos:pos + len(delim)], delim,
                             f"{what}: no boundary at {pos}: {body[pos:pos + 80]!r}")
            pos += len(delim)
            if body[pos:pos + 2] == b"--":
                self.assertIn(body[pos + 2:], (b"", b"\r\n"), f"{what}: bytes after the close")
                break
            self.assertEqual(body[pos:pos + 2], b"\r\n", f"{what}: at {pos}")
            pos += 2
            end = body.find(b"\r\n\r\n", pos)
            self.assertGreaterEqual(end, 0, f"{what}: unterminated part head")
            hdrs = {}
            for line in body[pos:end].split(b"\r\n"):
                k, _, v = line.decode("latin-1").partition(":")
                hdrs[k.strip().lower()] = v.strip()
            pos = end + 4
            cr = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", hdrs.get("content-range", ""))
            self.assertIsNotNone(cr, f"{what}: part head {hdrs}")
            first, last, total = (int(x) for x in cr.groups())
            n = last - first + 1
            data = body[pos:pos + n]
            self.assertEqual(len(data), n, f"{what}: part {first}-{last} truncated")
            pos += n
            self.assertEqual(body[pos:pos + 2], b"\r\n", f"{what}: part {first}-{last} not "
                                                         f"followed by CRLF")
            pos += 2
            parts.append((hdrs.get("content-type"), first, last, total, data))
        return parts


# --------------------------------------------------------------------------------------------
# Headers of file responses, HEAD
# --------------------------------------------------------------------------------------------

BASIC_WWW = {
    "index.html": "<!doctype html><title>t25</title><h1>static files home</h1>\n",
    "notes.txt": NOTES,
    "docs/index.html": "<h1>docs index</h1>\n",
    "blob.bin": bytes(range(256)) * 3,
    "readme.md": "# readme\n",
    "style.css": "body { color: #abcdef; }\n",
}


def prepare_basic(s):
    set_mtime(s.www / "notes.txt")


class FileHeaders(FileTestCase):
    def test_200_file_headers(self):
        s = self.start_server(static_config(), www=BASIC_WWW, prepare=prepare_basic)
        r = self.assertFile200(s.get("/notes.txt"), NOTES, TEXT, "/notes.txt")
        self.assertEqual(r.header("Last-Modified"), FIXED_MTIME_TEXT)
        cases = {
            "/index.html": (BASIC_WWW["index.html"].encode(), HTML),
            "/": (BASIC_WWW["index.html"].encode(), HTML),
            "/docs/": (b"<h1>docs index</h1>\n", HTML),
            "/blob.bin": (bytes(range(256)) * 3, OCTET),
            "/readme.md": (b"# readme\n", "text/markdown; charset=utf-8"),
            "/style.css": (b"body { color: #abcdef; }\n", "text/css; charset=utf-8"),
        }
        etags = {}
        for path, (body, ctype) in cases.items():
            with self.subTest(path):
                etags[path] = self.assertFile200(s.get(path), body, ctype, path).header("ETag")
        self.assertEqual(etags["/"], etags["/index.html"])
        self.assertNotEqual(etags["/index.html"], etags["/docs/"])

    def test_head_has_exactly_the_get_headers(self):
        s = self.start_server(static_config(), www=BASIC_WWW, prepare=prepare_basic)
        for path in ("/notes.txt", "/index.html", "/", "/docs/", "/blob.bin", "/readme.md"):
            with self.subTest(path):
                g = s.get(path)
                h = s.get(path, method="HEAD")
                self.assertEqual(g.status, 200, g)
                self.assertEqual(h.status, 200, h)
                self.assertEqual(headers_but_date(h), headers_but_date(g),
                                 f"HEAD {path} headers differ from GET's")
                # and no body bytes after the HEAD response on a kept-alive connection
                self.assertNoBodyThenUsable(s, "HEAD", path, [], 200)

    def test_one_allow_per_resource(self):
        """RFC 9110 §15.5.6: a 405 lists the resource's methods. TRACE is refused by the core
        before any plugin, yet its Allow is the route's own, the same as for POST."""
        s = self.start_server(static_config(), www=BASIC_WWW, prepare=prepare_basic)
        for path in ("/notes.txt", "/missing"):
            for method in ("TRACE", "POST", "PUT", "DELETE"):
                with self.subTest(path=path, method=method):
                    r = s.get(path, method=method)
                    self.assertEqual(r.status, 405, r)
                    self.assertEqual(r.header_all("Allow"), ["GET, HEAD"], r)
        # hello and echo answer every method the core passes on: TRACE's Allow lists only
        # methods they do answer
        for path in ("/hello", "/echo/x"):
            r = s.get(path, method="TRACE")
            self.assertEqual(r.status, 405, r)
            allowed = tokens(r, "Allow")
            self.assertIn("get", allowed, r)
            for method in sorted(allowed):
                with self.subTest(path=path, method=method):
                    a = s.get(path, method=method.upper(), body=b"x" if method in ("post", "put") else b"")
                    self.assertNotEqual(a.status, 405, a)


# --------------------------------------------------------------------------------------------
# Conditional requests (RFC 9110 §13.2.2)
# --------------------------------------------------------------------------------------------

class Conditionals(FileTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(static_config(), www=BASIC_WWW, prepare=prepare_basic)
        r = self.assertFile200(self.s.get("/notes.txt"), NOTES, TEXT)
        self.etag = r.header("ETag")
        self.lm = r.header("Last-Modified")
        self.assertEqual(self.lm, FIXED_MTIME_TEXT)

    def check(self, cases, path="/notes.txt"):
        for headers, status in cases:
            for method in ("GET", "HEAD"):
                with self.subTest(method=method, headers=headers):
                    r = self.s.get(path, headers=headers, method=method)
                    self.assertEqual(r.status, status, f"{method} {path} {headers}: {r!r}")
                    if status == 200:
                        self.assertEqual(r.body, NOTES if method == "GET" else b"")
                        self.assertEqual(r.header("ETag"), self.etag)
                    if status == 304:
                        self.assertEqual(r.body, b"")
                        self.assertEqual(r.header("ETag"), self.etag, r)
                        self.assertEqual(r.header("Last-Modified"), self.lm, r)
                        self.assertNoBodyFields(r)
                    if status in (304, 412):
                        self.assertNotEqual(r.body, NOTES)

    def assertNoBodyFields(self, r):
        """RFC 9110 §15.4.5: a 304 keeps the cache's fields, not those of the absent body."""
        for name in BODY_FIELDS:
            self.assertEqual(r.header_all(name), [], f"{name} in a 304: {r!r}")

    def test_304_has_cache_fields_only(self):
        # what a linter sees: curl -sI -H 'If-None-Match: *'
        cr = self.s.curl("/notes.txt", "-I", "-H", "If-None-Match: *")
        self.assertEqual((cr.returncode, cr.status), (0, 304), cr)
        self.assertNoBodyFields(cr)
        for name in ("ETag", "Last-Modified", "Date"):
            self.assertEqual(len(cr.header_all(name)), 1, f"{name} in {cr!r}")

    def test_if_match_and_if_unmodified_since(self):
        e = self.etag
        self.check([
            ([("If-Match", e)], 200),
            ([("If-Match", '"other-tag"')], 412),
            ([("If-Match", "*")], 200),
            ([("If-Match", f'"a-tag", {e}, "b-tag"')], 200),
            ([("If-Match", '"a-tag", "b-tag"')], 412),
            ([("If-Match", f"W/{e}")], 412),                       # strong comparison
            ([("If-Unmodified-Since", http_date(FIXED_MTIME - 1))], 412),
            ([("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")], 412),
            ([("If-Unmodified-Since", FIXED_MTIME_TEXT)], 200),
            ([("If-Unmodified-Since", http_date(FIXED_MTIME + 86400))], 200),
            # IUS is ignored when If-Match is present
            ([("If-Match", e), ("If-Unmodified-Since", http_date(FIXED_MTIME - 1))], 200),
            # unparsable dates are ignored
            ([("If-Unmodified-Since", "not a date")], 200),
            ([("If-Unmodified-Since", "Tue, 32 Foo 2024 99:99:99 GMT")], 200),
        ])
        # If-Match: * on a file that does not exist is not a 200
        r = self.s.get("/missing.txt", headers=[("If-Match", "*")])
        self.assertIn(r.status, (404, 412), r)

    def test_if_none_match_and_if_modified_since(self):
        e = self.etag
        self.check([
            ([("If-None-Match", e)], 304),
            ([("If-None-Match", f"W/{e}")], 304),                  # weak comparison
            ([("If-None-Match", "*")], 304),
            ([("If-None-Match", f'"x-tag", {e}')], 304),
            ([("If-None-Match", '"x-tag"')], 200),
            ([("If-None-Match", '"x-tag", W/"y-tag"')], 200),
            ([("If-Modified-Since", FIXED_MTIME_TEXT)], 304),
            ([("If-Modified-Since", http_date(FIXED_MTIME + 86400))], 304),
            ([("If-Modified-Since", http_date(FIXED_MTIME - 1))], 200),
            ([("If-Modified-Since", "not a date")], 200),
            ([("If-Modified-Since", "Tue, 32 Foo 2024 99:99:99 GMT")], 200),
        ])
        # a 304 carries no body: the next response on the connection parses right after it
        self.assertNoBodyThenUsable(self.s, "GET", "/notes.txt", [("If-None-Match", e)], 304)
        self.assertNoBodyThenUsable(self.s, "GET", "/notes.txt",
                                    [("If-Modified-Since", FIXED_MTIME_TEXT)], 304)

    def test_precedence(self):
        e = self.etag
        older, newer = http_date(FIXED_MTIME - 3600), http_date(FIXED_MTIME + 3600)
        self.check([
            # If-None-Match decides, If-Modified-Since is ignored when it is present
            ([("If-None-Match", e), ("If-Modified-Since", older)], 304),
            ([("If-None-Match", '"x-tag"'), ("If-Modified-Since", newer)], 200),
            # If-Match (and IUS) before If-None-Match
            ([("If-Match", '"x-tag"'), ("If-None-Match", e)], 412),
            ([("If-Unmodified-Since", older), ("If-None-Match", e)], 412),
            ([("If-Match", e), ("If-None-Match", e)], 304),
            ([("If-Match", e), ("If-Modified-Since", newer)], 304),
            # unparsable IUS is ignored, then INM decides
            ([("If-Unmodified-Since", "garbage"), ("If-None-Match", e)], 304),
        ])
        # conditionals come before Range
        r = self.s.get("/notes.txt", headers=[("If-None-Match", e), ("Range", "bytes=0-3")])
        self.assertEqual(r.status, 304, r)
        r = self.s.get("/notes.txt", headers=[("If-Match", '"x-tag"'), ("Range", "bytes=0-3")])
        self.assertEqual(r.status, 412, r)
        r = self.s.get("/notes.txt", headers=[("If-Match", e), ("Range", "bytes=0-3")])
        self.assertEqual((r.status, r.body), (206, NOTES[:4]), r)


# --------------------------------------------------------------------------------------------
# Ranges (RFC 9110 §14)
# --------------------------------------------------------------------------------------------

RANGE_WWW = dict(BASIC_WWW, **{"range.bin": RANGE_DATA, "range.txt": RANGE_DATA})


def prepare_range(s):
    set_mtime(s.www / "range.bin")
    set_mtime(s.www / "range.txt")


class Ranges(FileTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(static_config(), www=RANGE_WWW, prepare=prepare_range)
        r = self.assertFile200(self.s.get("/range.bin"), RANGE_DATA, OCTET)
        self.etag = r.header("ETag")

    def get_range(self, spec, path="/range.bin", extra=(), method="GET"):
        return self.s.get(path, headers=[("Range", spec), *extra], method=method)

    def assert206(self, r, first, last, what="", data=RANGE_DATA, ctype=OCTET, etag=None):
        self.assertEqual(r.status, 206, f"{what}: {r!r}")
        self.assertCommonHeaders(r)
        self.assertEqual(r.header_all("Content-Range"), [f"bytes {first}-{last}/{len(data)}"], what)
        self.assertEqual(r.header("Content-Length"), str(last - first + 1), what)
        self.assertEqual(r.body, data[first:last + 1], what)
        self.assertEqual(r.header("Content-Type"), ctype, what)
        self.assertEqual(r.header("ETag"), etag or self.etag, what)
        self.assertEqual(r.header("Last-Modified"), FIXED_MTIME_TEXT, what)

    def assertFull(self, r, what=""):
        self.assertFile200(r, RANGE_DATA, OCTET, what)
        self.assertFalse(r.has_header("Content-Range"), f"{what}: {r!r}")

    def test_single_ranges(self):
        n = RANGE_SIZE
        for spec, first, last in (("bytes=0-99", 0, 99),
                                  ("bytes=0-0", 0, 0),
                                  ("bytes=500-500", 500, 500),
                                  ("bytes=-100", n - 100, n - 1),
                                  ("bytes=-1", n - 1, n - 1),
                                  ("bytes=100-", 100, n - 1),
                                  (f"bytes={n - 1}-", n - 1, n - 1),
                                  ("bytes=990-2000", 990, n - 1),        # end clipped
                                  (f"bytes=0-{n - 1}", 0, n - 1),
                                  ("bytes=-5000", 0, n - 1),             # suffix > size
                                  ("BYTES=0-1", 0, 1),                   # RFC 9110 §14.1:
                                  ("ByTeS=-2", n - 2, n - 1),            # units ignore case
                                  ("bytes = 0-9", None, None)):           # not valid: whitespace
            with self.subTest(spec):
                r = self.get_range(spec)
                if first is None:
                    self.assertIn(r.status, (200, 206), r)
                    continue
                self.assert206(r, first, last, spec)
        # the text type keeps its Content-Type with charset in a 206
        self.assert206(self.get_range("bytes=10-19", "/range.txt"), 10, 19, "range.txt",
                       ctype=TEXT, etag=self.s.get("/range.txt").header("ETag"))
        # curl agrees on the bytes
        cr = self.s.curl("/range.bin", "-r", "100-199")
        self.assertEqual((cr.returncode, cr.status), (0, 206), cr)
        self.assertEqual(cr.body, RANGE_DATA[100:200])

    def test_multipart_byteranges(self):
        c = self.conn(self.s)
        c.request("GET", "/range.txt", [("Range", "bytes=0-0,10-19,30-39")])
        c.request("GET", "/hello")
        r = c.read_response()
        self.assertEqual(r.status, 206, r)
        self.assertCommonHeaders(r)
        self.assertFalse(r.has_header("Content-Range"), r)
        parts = self.parse_byteranges(r, "0-0,10-19,30-39")
        self.assertEqual([(ct, a, b, t) for ct, a, b, t, _ in parts],
                         [(TEXT, 0, 0, RANGE_SIZE), (TEXT, 10, 19, RANGE_SIZE),
                          (TEXT, 30, 39, RANGE_SIZE)])
        for _, a, b, _, data in parts:
            self.assertEqual(data, RANGE_DATA[a:b + 1])
        tail = c.read_response()
        self.assertEqual(tail.body, b"Hello, World!", "Content-Length of the multipart body wrong")
        # a suffix range, an open range and an end past EOF inside multipart requests
        for spec, want in (("bytes=-10,0-4,200-299", [(0, 4), (200, 299), (990, 999)]),
                           ("bytes=0-4,900-", [(0, 4), (900, 999)]),
                           ("bytes=0-4,990-5000", [(0, 4), (990, 999)])):
            with self.subTest(spec):
                r = self.get_range(spec)
                self.assertEqual(r.status, 206, r)
                parts = self.parse_byteranges(r, spec)
                self.assertEqual(sorted((a, b) for _, a, b, _, _ in parts), want)
                for ct, a, b, t, d in parts:
                    self.assertEqual((ct, t, d), (OCTET, RANGE_SIZE, RANGE_DATA[a:b + 1]))

    def test_too_many_or_overlapping_ranges_give_the_full_file(self):
        sixteen = ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(16))
        r = self.get_range("bytes=" + sixteen)
        self.assertEqual(r.status, 206, r)
        parts = self.parse_byteranges(r, "16 ranges")
        self.assertEqual([(a, b) for _, a, b, _, _ in parts],
                         [(i * 10, i * 10 + 1) for i in range(16)])
        seventeen = ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(17))
        self.assertFull(self.get_range("bytes=" + seventeen), "17 ranges")
        for spec in ("bytes=0-100,50-150", "bytes=0-999,0-999", "bytes=0-,0-",
                     "bytes=-500,0-600", "bytes=10-20,15-16"):
            with self.subTest(spec):
                r = self.get_range(spec)
                self.assertFull(r, spec)
                self.assertLessEqual(len(r.body), RANGE_SIZE)

    def test_max_ranges_configured(self):
        s = self.start_server(static_config(max_ranges=2), www=RANGE_WWW, prepare=prepare_range)
        r = s.get("/range.bin", headers=[("Range", "bytes=0-1,10-11")])
        self.assertEqual(r.status, 206, r)
        self.assertEqual(len(self.parse_byteranges(r)), 2)
        r = s.get("/range.bin", headers=[("Range", "bytes=0-1,10-11,20-21")])
        self.assertFile200(r, RANGE_DATA, OCTET, "3 ranges, max_ranges 2")

    def test_unsatisfiable_416(self):
        n = RANGE_SIZE
        for spec in (f"bytes={n}-", "bytes=99999999-", f"bytes={n}-{n + 10}",
                     "bytes=99999999-99999999", "bytes=-0", f"bytes={n}-,{n + 5}-"):
            with self.subTest(spec):
                r = self.get_range(spec)
                self.assertEqual(r.status, 416, r)
                self.assertCommonHeaders(r)
                self.assertEqual(r.header_all("Content-Range"), [f"bytes */{n}"], r)
                self.assertNotEqual(r.body, RANGE_DATA)

    def test_invalid_range_syntax_is_ignored(self):
        for spec in ("bytes=a-b", "items=0-1", "bytes=5-1", "bytes=", "bytes=-", "bytes=--5",
                     "bytes=0-1;x", "bytes=1.5-3", "0-99", "bytes=0x10-0x20"):
            with self.subTest(spec):
                self.assertFull(self.get_range(spec), spec)

    def test_head_and_other_methods_ignore_range(self):
        for spec in ("bytes=0-99", "bytes=0-0,10-19", f"bytes={RANGE_SIZE}-"):
            with self.subTest(spec):
                h = self.get_range(spec, method="HEAD")
                self.assertEqual(h.status, 200, h)
                self.assertEqual(h.header("Content-Length"), str(RANGE_SIZE))
                self.assertFalse(h.has_header("Content-Range"), h)
                self.assertEqual(headers_but_date(h), headers_but_date(self.s.get("/range.bin")))
        r = self.s.get("/range.bin", method="POST", headers=[("Range", "bytes=0-1")],
                       body=b"x")
        self.assertNotIn(r.status, (206, 416), r)

    def test_if_range(self):
        cases = [
            ([("If-Range", self.etag)], True),
            ([("If-Range", '"an-old-etag"')], False),
            ([("If-Range", FIXED_MTIME_TEXT)], True),
            ([("If-Range", http_date(FIXED_MTIME - 1))], False),
            ([("If-Range", http_date(FIXED_MTIME + 1))], False),   # not an exact match
            ([("If-Range", f"W/{self.etag}")], False),             # weak: never matches
        ]
        for extra, partial in cases:
            with self.subTest(extra):
                r = self.get_range("bytes=0-99", extra=extra)
                if partial:
                    self.assert206(r, 0, 99, str(extra))
                else:
                    self.assertFull(r, str(extra))
        # If-Range without Range changes nothing
        self.assertFull(self.s.get("/range.bin", headers=[("If-Range", '"an-old-etag"')]))

    def test_big_file_ranges(self):
        big = os.urandom(5 * 1024 * 1024)
        size = len(big)

        def add(s):
            (s.www / "big.bin").write_bytes(big)
        s = self.start_server(static_config(), www=RANGE_WWW, prepare=add)
        for spec, first, last in (("bytes=2000000-3999999", 2000000, 3999999),
                                  ("bytes=-1000000", size - 1000000, size - 1),
                                  ("bytes=4194304-", 4194304, size - 1),
                                  ("bytes=1048575-1048576", 1048575, 1048576)):
            with self.subTest(spec):
                c = self.conn(s, timeout=30)
                c.request("GET", "/big.bin", [("Range", spec), ("Connection", "close")])
                r = c.read_response(timeout=30)
                self.assertEqual(r.status, 206, r)
                self.assertEqual(r.header("Content-Range"), f"bytes {first}-{last}/{size}")
                self.assertEqual(len(r.body), last - first + 1)
                self.assertEqual(sha256(r.body), sha256(big[first:last + 1]))
        c = self.conn(s, timeout=30)
        c.request("GET", "/big.bin", [("Range", "bytes=100000-1099999,3000000-4499999"),
                                      ("Connection", "close")])
        r = c.read_response(timeout=30)
        self.assertEqual(r.status, 206, r)
        parts = self.parse_byteranges(r, "big multipart")
        self.assertEqual([(a, b, t) for _, a, b, t, _ in parts],
                         [(100000, 1099999, size), (3000000, 4499999, size)])
        for _, a, b, _, data in parts:
            self.assertEqual(sha256(data), sha256(big[a:b + 1]))
        cr = s.curl("/big.bin", "-r", "3500000-", timeout=30)
        self.assertEqual((cr.returncode, cr.status), (0, 206), cr)
        self.assertEqual(sha256(cr.body), sha256(big[3500000:]))


# --------------------------------------------------------------------------------------------
# try_files, error_pages
# --------------------------------------------------------------------------------------------

SPA_WWW = {
    "spa.html": "<!doctype html><div id=app>spa shell</div>\n",
    "404.html": "<h1>custom not found</h1>\n",
    "403.html": "<h1>custom forbidden</h1>\n",
    "notes.txt": NOTES,
    "docs/index.html": "<h1>docs index</h1>\n",
    ".env": "SECRET_ENV=1\n",
}
SECRET = b"TOP-SECRET-" + os.urandom(8).hex().encode()


def prepare_spa(s):
    (s.dir / "outside").mkdir()
    (s.dir / "outside" / "secret.txt").write_bytes(SECRET)
    os.symlink(s.dir / "outside" / "secret.txt", s.www / "out_link.txt")


class TryFilesAndErrorPages(FileTestCase):
    def start(self):
        return self.start_server(static_config(
            [("pages", "/pages", {"root": "www", "try_files": ["/nope.html"],
                                  "error_pages": {"404": "/404.html", "403": "/403.html"}}),
             ("bare", "/bare", {"root": "www"})],
            try_files=["/missing.html", "/spa.html"]), www=SPA_WWW, prepare=prepare_spa)

    def test_try_files(self):
        s = self.start()
        spa = SPA_WWW["spa.html"].encode()
        for path in ("/app/route", "/nodir/deep/x.js", "/missing.html", "/app/route?q=1"):
            with self.subTest(path):
                self.assertFile200(s.get(path), spa, HTML, path)
        self.assertFile200(s.get("/notes.txt"), NOTES, TEXT)
        self.assertFile200(s.get("/docs/"), b"<h1>docs index</h1>\n", HTML)
        self.assertFile200(s.get("/spa.html"), spa, HTML)
        h = s.get("/app/route", method="HEAD")
        self.assertEqual((h.status, h.header("Content-Length")), (200, str(len(spa))), h)
        # none of the try_files exists: the 404 (here with its error page)
        r = s.get("/pages/app/route")
        self.assertEqual(r.status, 404, r)

    def test_error_pages(self):
        s = self.start()
        page404 = SPA_WWW["404.html"].encode()
        page403 = SPA_WWW["403.html"].encode()
        for path in ("/pages/missing.txt", "/pages/nodir/x", "/pages/.env"):
            with self.subTest(path):
                r = s.get(path)
                self.assertEqual(r.status, 404, r)
                self.assertCommonHeaders(r)
                self.assertEqual(r.body, page404, path)
                self.assertEqual(r.header("Content-Type"), HTML, path)
                self.assertEqual(r.header("Content-Length"), str(len(page404)))
        # a symlink out of root is refused with 403 or 404, each with its own page
        r = s.get("/pages/out_link.txt")
        self.assertRefused(r, "out_link", forbidden=[SECRET])
        self.assertEqual(r.body, page403 if r.status == 403 else page404, r)
        # the error page files themselves are still ordinary files
        self.assertFile200(s.get("/pages/404.html"), page404, HTML)
        # without error_pages a 404 is not the custom page
        r = s.get("/bare/missing.txt")
        self.assertEqual(r.status, 404, r)
        self.assertNotEqual(r.body, page404)


# --------------------------------------------------------------------------------------------
# mime_types, cache_control
# --------------------------------------------------------------------------------------------

CONFIG_WWW = {
    "readme.md": "# md\n",
    "thing.foo": "foo data\n",
    "notes.txt": NOTES,
    "page.html": "<p>page</p>\n",
    "lib.js": "var lib = 1;\n",
    "assets/app.js": "var app = 1;\n",
    "assets/logo.txt": "logo\n",
    "sub/lib.js": "var sub = 1;\n",
    "other/assets/x.txt": "x\n",
    "upper.MD": "# upper\n",
}


class MimeAndCacheControl(FileTestCase):
    def test_mime_types_merged_over_builtin(self):
        s = self.start_server(static_config(
            [("plain", "/plain", {"root": "www"})],
            mime_types={"md": "text/x-custom", "foo": "application/x-foo"}), www=CONFIG_WWW)
        cases = [
            ("/readme.md", "text/x-custom"),
            ("/thing.foo", "application/x-foo"),
            ("/notes.txt", TEXT),
            ("/page.html", HTML),
            ("/lib.js", JS),
            ("/plain/readme.md", "text/markdown; charset=utf-8"),
            ("/plain/thing.foo", OCTET),
            ("/plain/notes.txt", TEXT),
        ]
        for path, ctype in cases:
            with self.subTest(path):
                r = s.get(path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header_all("Content-Type"), [ctype], path)

    def test_cache_control_rules(self):
        rules = [{"match": "/assets/", "value": "public, max-age=31536000, immutable"},
                 {"match": "*.js", "value": "public, max-age=60"},
                 {"match": "*.html", "value": "no-cache"}]
        s = self.start_server(static_config(
            [("pre", "/pre", {"root": "www", "cache_control": rules})],
            cache_control=rules), www=CONFIG_WWW)
        imm = "public, max-age=31536000, immutable"
        cases = [
            ("/assets/app.js", imm),          # both rules match: the first wins
            ("/assets/logo.txt", imm),
            ("/lib.js", "public, max-age=60"),
            ("/sub/lib.js", "public, max-age=60"),
            ("/page.html", "no-cache"),
            ("/notes.txt", None),
            ("/other/assets/x.txt", None),    # a "/" rule is a prefix, not a substring
            ("/pre/assets/app.js", imm),      # below the route prefix
            ("/pre/assets/logo.txt", imm),
            ("/pre/lib.js", "public, max-age=60"),
            ("/pre/notes.txt", None),
        ]
        for path, value in cases:
            with self.subTest(path):
                r = s.get(path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header_all("Cache-Control"), [value] if value else [], path)
                h = s.get(path, method="HEAD")
                self.assertEqual(h.header_all("Cache-Control"), [value] if value else [], path)
                if value:
                    # RFC 9110 §15.4.5: a 304 carries the Cache-Control a 200 would
                    n = s.get(path, headers=[("If-None-Match", r.header("ETag"))])
                    self.assertEqual(n.status, 304, n)
                    self.assertEqual(n.header_all("Cache-Control"), [value], f"304 {path}")


# --------------------------------------------------------------------------------------------
# precompressed sidecars
# --------------------------------------------------------------------------------------------

APP_JS = b"console.log('the original, uncompressed app.js');\n"
APP_GZ = b"GZ-SIDECAR-BYTES:app.js.gz\n"
APP_BR = b"BR-SIDECAR:app.js.br\n"
APP_ZST = b"ZSTD-SIDECAR-BYTES-LONGER:app.js.zst\n"
CSS = b"body { margin: 0; padding: 0; }\n"
CSS_GZ = b"GZ:only-gz.css.gz\n"

PRE_WWW = {
    "app.js": APP_JS, "app.js.gz": APP_GZ, "app.js.br": APP_BR, "app.js.zst": APP_ZST,
    "only-gz.css": CSS, "only-gz.css.gz": CSS_GZ,
    "orphan.txt.gz": b"GZ:orphan\n",
    "notes.txt": NOTES,
}


class Precompressed(FileTestCase):
    def start(self):
        return self.start_server(static_config(
            [("raw", "/raw", {"root": "www"})], precompressed=True), www=PRE_WWW)

    def get(self, s, ae, path="/app.js", **kw):
        headers = [("Accept-Encoding", ae)] if ae is not None else []
        headers += kw.pop("headers", [])
        return s.get(path, headers=headers, **kw)

    def assertVariant(self, r, body, encoding, what, ctype=JS):
        self.assertFile200(r, body, ctype, what)
        self.assertEqual(r.header_all("Content-Encoding"), [encoding] if encoding else [], what)
        self.assertIn("accept-encoding", tokens(r, "Vary"), f"{what}: {r!r}")
        return r.header("ETag")

    def test_negotiation(self):
        s = self.start()
        cases = [
            (None, APP_JS, None),
            ("gzip", APP_GZ, "gzip"),
            ("br", APP_BR, "br"),
            ("zstd", APP_ZST, "zstd"),
            ("GZIP", APP_GZ, "gzip"),
            ("gzip, deflate, br, zstd", APP_BR, "br"),           # equal q: br, zstd, gzip
            ("gzip, zstd", APP_ZST, "zstd"),
            ("zstd;q=1.0, gzip, br;q=1", APP_BR, "br"),
            ("br;q=0.5, gzip;q=0.9, zstd;q=0.1", APP_GZ, "gzip"),
            ("br;q=0.2, zstd;q=0.8", APP_ZST, "zstd"),
            ("br ; q=0.1, gzip ; q=0.9", APP_GZ, "gzip"),
            ("gzip;Q=0.5, br;q=0.4", APP_GZ, "gzip"),
            ("br;q=0, gzip", APP_GZ, "gzip"),
            ("br;q=0, zstd;q=0, gzip;q=0", APP_JS, None),
            ("br;q=0.000, gzip;q=0.001", APP_GZ, "gzip"),
            ("identity", APP_JS, None),
            ("deflate", APP_JS, None),
            ("", APP_JS, None),
            ("*", APP_BR, "br"),
            ("gzip;q=0.5, *;q=0.1", APP_GZ, "gzip"),
        ]
        etags = {}
        for ae, body, enc in cases:
            with self.subTest(accept_encoding=ae):
                etag = self.assertVariant(self.get(s, ae), body, enc, f"Accept-Encoding {ae!r}")
                etags.setdefault(enc, set()).add(etag)
        # one ETag per variant, all different
        for enc, tags in etags.items():
            self.assertEqual(len(tags), 1, f"{enc}: {tags}")
        self.assertEqual(len({next(iter(t)) for t in etags.values()}), 4, etags)
        # a file with only a .gz sidecar
        self.assertVariant(self.get(s, "br, gzip", "/only-gz.css"), CSS_GZ, "gzip", "only-gz",
                           ctype="text/css; charset=utf-8")
        self.assertVariant(self.get(s, "br", "/only-gz.css"), CSS, None, "only-gz br",
                           ctype="text/css; charset=utf-8")
        # a sidecar without its original is never served as it
        r = self.get(s, "gzip", "/orphan.txt")
        self.assertEqual(r.status, 404, r)
        self.assertNotIn(b"GZ:orphan", r.body)
        # a file without sidecars
        r = self.get(s, "gzip, br, zstd", "/notes.txt")
        self.assertFile200(r, NOTES, TEXT)
        self.assertFalse(r.has_header("Content-Encoding"), r)
        # precompressed off (the default)
        r = self.get(s, "gzip, br, zstd", "/raw/app.js")
        self.assertFile200(r, APP_JS, JS)
        self.assertFalse(r.has_header("Content-Encoding"), r)

    def test_head_conditionals_and_ranges_on_variants(self):
        s = self.start()
        for ae in ("gzip", "br", None):
            with self.subTest(ae=ae):
                g = self.get(s, ae)
                h = self.get(s, ae, method="HEAD")
                self.assertEqual(h.status, 200, h)
                self.assertEqual(headers_but_date(h), headers_but_date(g))
        plain_etag = self.get(s, None).header("ETag")
        gz_etag = self.get(s, "gzip").header("ETag")
        # 304 for the variant's own ETag, with Vary
        n = self.get(s, "gzip", headers=[("If-None-Match", gz_etag)])
        self.assertEqual(n.status, 304, n)
        self.assertEqual(n.header("ETag"), gz_etag)
        self.assertIn("accept-encoding", tokens(n, "Vary"), n)
        # the plain ETag does not validate the gzip variant, and vice versa
        r = self.get(s, "gzip", headers=[("If-None-Match", plain_etag)])
        self.assertVariant(r, APP_GZ, "gzip", "INM plain etag, AE gzip")
        r = self.get(s, None, headers=[("If-None-Match", gz_etag)])
        self.assertVariant(r, APP_JS, None, "INM gzip etag, no AE")
        # ranges apply to the encoded bytes
        r = self.get(s, "gzip", headers=[("Range", "bytes=0-3")])
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, APP_GZ[:4])
        self.assertEqual(r.header("Content-Range"), f"bytes 0-3/{len(APP_GZ)}")
        self.assertEqual(r.header_all("Content-Encoding"), ["gzip"])
        self.assertEqual(r.header("Content-Type"), JS)
        self.assertIn("accept-encoding", tokens(r, "Vary"), r)
        r = self.get(s, "zstd", headers=[("Range", "bytes=-5")])
        self.assertEqual((r.status, r.body), (206, APP_ZST[-5:]), r)
        self.assertEqual(r.header("Content-Range"),
                         f"bytes {len(APP_ZST) - 5}-{len(APP_ZST) - 1}/{len(APP_ZST)}")
        # If-Range with the variant's ETag
        r = self.get(s, "gzip", headers=[("Range", "bytes=0-3"), ("If-Range", gz_etag)])
        self.assertEqual((r.status, r.body), (206, APP_GZ[:4]), r)
        r = self.get(s, "gzip", headers=[("Range", "bytes=0-3"), ("If-Range", plain_etag)])
        self.assertEqual((r.status, r.body), (200, APP_GZ), r)
        # unsatisfiable against the encoded size (Vary too: every response for this file)
        r = self.get(s, "br", headers=[("Range", f"bytes={len(APP_BR)}-")])
        self.assertEqual(r.status, 416, r)
        self.assertEqual(r.header("Content-Range"), f"bytes */{len(APP_BR)}")
        self.assertIn("accept-encoding", tokens(r, "Vary"), f"416 for a file with sidecars: {r!r}")


# --------------------------------------------------------------------------------------------
# directory_listing, dotfiles
# --------------------------------------------------------------------------------------------

ODD_NAME = "<b>&\"x'.txt"
LIST_WWW = {
    "list/alpha.txt": b"a" * 700,
    "list/beta.txt": b"bbb",
    f"list/{ODD_NAME}": b"odd name\n",
    "list/zdir/inner.txt": b"inner\n",
    "list/.hidden": b"hidden\n",
    "withindex/index.html": b"<p>an index</p>\n",
    "withindex/other.txt": b"other\n",
    ".well-known/acme-challenge/token1": b"acme token one\n",
    ".well-known/security.txt": b"Contact: mailto:security@example.com\n",
    ".env": b"SECRET_ENV=1\n",
    ".git/config": b"[core]\n\tbare = false\n",
    "sub/.secret": b"sub secret\n",
    "sub/visible.txt": b"visible\n",
    ".hiddendir/file.txt": b"in a hidden dir\n",
    "not.hidden.txt": b"dots inside a name are fine\n",
}


def prepare_list(s):
    (s.www / "list" / "emptydir").mkdir()
    for rel in ("list/alpha.txt", "list/beta.txt", f"list/{ODD_NAME}", "list/zdir",
                "list/zdir/inner.txt"):
        set_mtime(s.www / rel)


def mtime_matches(value, epoch) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return abs(value - epoch) < 1 or abs(value / 1000 - epoch) < 1
    if isinstance(value, str):
        try:
            return abs(parse_http_date(value) - epoch) < 1
        except (TypeError, ValueError):
            pass
        try:
            dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=datetime.timezone.utc)
            return abs(dt.timestamp() - epoch) < 1
        except ValueError:
            return False
    return False


class DirectoryListing(FileTestCase):
    def start(self, **cfg):
        return self.start_server(static_config(directory_listing=True, **cfg), www=LIST_WWW,
                                 prepare=prepare_list)

    def test_html_listing(self):
        s = self.start()
        r = s.get("/list/")
        self.assertEqual(r.status, 200, r)
        self.assertCommonHeaders(r)
        self.assertEqual(r.header("Content-Type"), HTML)
        self.assertEqual(r.header("Content-Length"), str(len(r.body)))
        body = r.body.decode("utf-8")
        # escaped, never raw
        self.assertNotIn("<b>&", body)
        self.assertNotIn("\"x'", body)
        self.assertIn("&lt;b&gt;&amp;", body)
        # every entry, sorted by name ("<" < "a" < "b" < "e" < "z"), directories with "/"
        marks = ["&lt;b&gt;&amp;", "alpha.txt", "beta.txt", "emptydir/", "zdir/"]
        positions = [body.find(m) for m in marks]
        for m, p in zip(marks, positions):
            self.assertGreaterEqual(p, 0, f"{m!r} not in the listing:\n{body}")
        self.assertEqual(positions, sorted(positions), f"not sorted by name:\n{body}")
        self.assertNotIn("inner.txt", body)       # not recursive
        self.assertNotIn(".hidden", body)         # dotfiles denied: not listed
        # sizes and dates: the alpha.txt row (up to beta.txt) holds 700 and the year
        row = body[positions[1]:positions[2]]
        self.assertIn("700", row, f"no size in the alpha.txt row: {row!r}")
        self.assertIn("2024", row, f"no date in the alpha.txt row: {row!r}")
        # the odd name can be fetched
        f = s.get("/list/" + quote(ODD_NAME))
        self.assertFile200(f, b"odd name\n", TEXT)
        # an empty directory lists nothing, and a directory with an index serves the index
        e = s.get("/list/emptydir/")
        self.assertEqual(e.status, 200, e)
        self.assertNotIn("alpha.txt", e.body.decode())
        self.assertFile200(s.get("/withindex/"), b"<p>an index</p>\n", HTML)
        h = s.get("/list/", method="HEAD")
        self.assertEqual(h.status, 200, h)
        self.assertEqual(h.header("Content-Type"), HTML)

    def test_json_listing(self):
        s = self.start()
        r = s.get("/list/", headers=[("Accept", "application/json")])
        self.assertEqual(r.status, 200, r)
        self.assertRegex(r.header("Content-Type") or "", r"^application/json(; ?charset=utf-8)?$")
        entries = r.json()
        self.assertIsInstance(entries, list)
        names = [e["name"].rstrip("/") for e in entries]
        self.assertEqual(names, [ODD_NAME, "alpha.txt", "beta.txt", "emptydir", "zdir"], entries)
        by_name = {e["name"].rstrip("/"): e for e in entries}
        for e in entries:
            self.assertLessEqual({"name", "type", "size", "mtime"}, set(e), e)
        self.assertEqual(by_name["alpha.txt"]["type"], "file")
        self.assertEqual(by_name["alpha.txt"]["size"], 700)
        self.assertEqual(by_name["beta.txt"]["size"], 3)
        self.assertEqual(by_name[ODD_NAME]["size"], 9)
        self.assertEqual(by_name["zdir"]["type"], "directory")
        self.assertEqual(by_name["emptydir"]["type"], "directory")
        for name in ("alpha.txt", "beta.txt", ODD_NAME, "zdir"):
            self.assertTrue(mtime_matches(by_name[name]["mtime"], FIXED_MTIME),
                            f"{name}: mtime {by_name[name]['mtime']!r}")
        r = s.get("/list/emptydir/", headers=[("Accept", "application/json")])
        self.assertEqual((r.status, r.json()), (200, []), r)

    def test_listing_off_and_dotfiles_allowed(self):
        off = self.start_server(static_config(), www=LIST_WWW, prepare=prepare_list)
        for path in ("/list/", "/list/emptydir/", "/list/zdir/"):
            with self.subTest(path):
                r = off.get(path)
                self.assertEqual(r.status, 404, r)
                self.assertNotIn(b"alpha.txt", r.body)
        r = off.get("/list/", headers=[("Accept", "application/json")])
        self.assertEqual(r.status, 404, r)
        self.assertFile200(off.get("/withindex/"), b"<p>an index</p>\n", HTML)
        allow = self.start(dotfiles="allow")
        r = allow.get("/list/", headers=[("Accept", "application/json")])
        self.assertEqual(r.status, 200, r)
        self.assertIn(".hidden", [e["name"] for e in r.json()])
        self.assertIn(".hidden", allow.get("/list/").body.decode())


class Dotfiles(FileTestCase):
    def test_deny_default_and_well_known(self):
        s = self.start_server(static_config(), www=LIST_WWW, prepare=prepare_list)
        for path in ("/.env", "/.git/config", "/.git/", "/sub/.secret", "/.hiddendir/file.txt",
                     "/list/.hidden", "/%2eenv", "/sub/%2Esecret", "/.env?x=1"):
            with self.subTest(path):
                r = s.get(path)
                self.assertEqual(r.status, 404, r)
                for secret in (b"SECRET_ENV", b"bare = false", b"sub secret", b"hidden"):
                    self.assertNotIn(secret, r.body)
        for path, body in (("/.well-known/acme-challenge/token1", b"acme token one\n"),
                           ("/.well-known/security.txt", b"Contact: mailto:security@example.com\n"),
                           ("/not.hidden.txt", b"dots inside a name are fine\n"),
                           ("/sub/visible.txt", b"visible\n")):
            with self.subTest(path):
                self.assertFile200(s.get(path), body, what=path)

    def test_allow(self):
        s = self.start_server(static_config(dotfiles="allow"), www=LIST_WWW, prepare=prepare_list)
        for path, body in (("/.env", b"SECRET_ENV=1\n"),
                           ("/.git/config", b"[core]\n\tbare = false\n"),
                           ("/sub/.secret", b"sub secret\n"),
                           ("/.hiddendir/file.txt", b"in a hidden dir\n"),
                           ("/.well-known/security.txt", b"Contact: mailto:security@example.com\n")):
            with self.subTest(path):
                self.assertFile200(s.get(path), body, what=path)


# --------------------------------------------------------------------------------------------
# symlinks
# --------------------------------------------------------------------------------------------

LINK_WWW = {"notes.txt": NOTES, "docs/page.html": "<p>docs page</p>\n"}


def prepare_links(s):
    out = s.dir / "outside"
    out.mkdir()
    (out / "secret.txt").write_bytes(SECRET)
    os.symlink("notes.txt", s.www / "in_link.txt")
    os.symlink("../notes.txt", s.www / "docs" / "up_link.txt")
    os.symlink("docs", s.www / "in_dir")
    os.symlink(s.www / "notes.txt", s.www / "abs_in.txt")
    os.symlink(out / "secret.txt", s.www / "out_link.txt")
    os.symlink("../outside/secret.txt", s.www / "out_rel.txt")
    os.symlink(out, s.www / "out_dir")
    os.symlink("in_link.txt", s.www / "chain_in.txt")
    os.symlink("out_link.txt", s.www / "chain_out.txt")


LINKS_IN = [("/in_link.txt", NOTES), ("/docs/up_link.txt", NOTES),
            ("/in_dir/page.html", b"<p>docs page</p>\n"), ("/abs_in.txt", NOTES),
            ("/chain_in.txt", NOTES)]
LINKS_OUT = ["/out_link.txt", "/out_rel.txt", "/out_dir/secret.txt", "/chain_out.txt"]


class Symlinks(FileTestCase):
    def start(self, mode):
        cfg = static_config(symlinks=mode) if mode else static_config()
        return self.start_server(cfg, www=LINK_WWW, prepare=prepare_links)

    def test_within_root_default(self):
        s = self.start(None)
        for path, body in LINKS_IN:
            with self.subTest(path):
                self.assertFile200(s.get(path), body, what=path)
        for path in LINKS_OUT:
            with self.subTest(path):
                self.assertRefused(s.get(path), path, forbidden=[SECRET])
        self.assertFile200(s.get("/notes.txt"), NOTES, TEXT)

    def test_within_root_explicit(self):
        s = self.start("within_root")
        self.assertFile200(s.get("/in_link.txt"), NOTES, TEXT)
        self.assertRefused(s.get("/out_link.txt"), "out_link", forbidden=[SECRET])
        self.assertRefused(s.get("/out_dir/secret.txt"), "out_dir", forbidden=[SECRET])

    def test_never(self):
        s = self.start("never")
        for path, _ in LINKS_IN:
            with self.subTest(path):
                self.assertRefused(s.get(path), path, forbidden=[NOTES, b"docs page"])
        for path in LINKS_OUT:
            with self.subTest(path):
                self.assertRefused(s.get(path), path, forbidden=[SECRET])
        self.assertFile200(s.get("/notes.txt"), NOTES, TEXT)
        self.assertFile200(s.get("/docs/page.html"), b"<p>docs page</p>\n", HTML)

    def test_follow(self):
        s = self.start("follow")
        for path, body in LINKS_IN:
            with self.subTest(path):
                self.assertFile200(s.get(path), body, what=path)
        for path in LINKS_OUT:
            with self.subTest(path):
                self.assertFile200(s.get(path), SECRET, what=path)


# --------------------------------------------------------------------------------------------
# open_file_cache
# --------------------------------------------------------------------------------------------

class OpenFileCache(FileTestCase):
    def body_of(self, s, path):
        r = s.get(path)
        return r.status, r.body, r.header("ETag")

    def test_changed_and_deleted_files_within_ttl(self):
        s = self.start_server(static_config(open_file_cache={"entries": 1024, "ttl_ms": 100}),
                              www={"live.txt": b"v1\n", "gone.txt": b"soon gone\n"})
        p = s.www / "live.txt"
        set_mtime(p)
        for _ in range(3):  # cached now
            st, body, etag1 = self.body_of(s, "/live.txt")
            self.assertEqual((st, body), (200, b"v1\n"))
        new = b"version two, a longer body\n"
        p.write_bytes(new)
        set_mtime(p, FIXED_MTIME + 3600)
        t0 = time.monotonic()
        seen = wait_for(lambda: self.body_of(s, "/live.txt")[1] == new, 2.0, 0.02)
        self.assertTrue(seen, "the changed file was not served within 2 s (ttl_ms 100)")
        for _ in range(3):  # and stays fresh
            r = s.get("/live.txt")
            self.assertFile200(r, new, TEXT)
            self.assertNotEqual(r.header("ETag"), etag1)
            self.assertEqual(r.header("Last-Modified"), http_date(FIXED_MTIME + 3600))
        self.assertLess(time.monotonic() - t0, 2.5)

        self.assertEqual(self.body_of(s, "/gone.txt")[:2], (200, b"soon gone\n"))
        os.unlink(s.www / "gone.txt")
        gone = wait_for(lambda: s.get("/gone.txt").status == 404, 2.0, 0.02)
        self.assertTrue(gone, "the deleted file was still served after 2 s (ttl_ms 100)")
        self.assertEqual(s.get("/gone.txt").status, 404)

        # a file that appears after a 404 is served within the TTL too
        self.assertEqual(s.get("/late.txt").status, 404)
        (s.www / "late.txt").write_bytes(b"late\n")
        self.assertTrue(wait_for(lambda: s.get("/late.txt").body == b"late\n", 2.0, 0.02),
                        "a new file was not served within 2 s (ttl_ms 100)")

    def test_cache_disabled(self):
        s = self.start_server(static_config(open_file_cache={"entries": 0, "ttl_ms": 60000}),
                              www={"live.txt": b"v1\n"})
        p = s.www / "live.txt"
        for i in range(1, 4):  # same size, (likely) same mtime second: still fresh at once
            self.assertEqual(s.get("/live.txt").body, b"v%d\n" % i)
            p.write_bytes(b"v%d\n" % (i + 1))
        p.write_bytes(b"now a longer v4\n")
        self.assertFile200(s.get("/live.txt"), b"now a longer v4\n", TEXT)
        os.unlink(p)
        self.assertEqual(s.get("/live.txt").status, 404)


# --------------------------------------------------------------------------------------------
# config validation
# --------------------------------------------------------------------------------------------

FULL_CONFIG = {
    "index": ["index.html", "index.htm"],
    "try_files": ["/index.html"],
    "error_pages": {"404": "/404.html", "403": "/403.html"},
    "max_ranges": 4,
    "mime_types": {"md": "text/x-custom"},
    "cache_control": [{"match": "*.js", "value": "no-cache"}],
    "precompressed": True,
    "directory_listing": True,
    "dotfiles": "allow",
    "symlinks": "follow",
    "open_file_cache": {"entries": 16, "ttl_ms": 500},
}

BAD_CONFIGS = [
    # (name, plugin config (root "www" added unless given), words one of which names the key)
    ("unknown_key", {"bogus_key": 1}, ["bogus_key"]),
    ("missing_root", {"root": None}, ["root"]),
    ("root_number", {"root": 5}, ["root"]),
    ("index_string", {"index": "index.html"}, ["index"]),
    ("try_files_string", {"try_files": "/index.html"}, ["try_files"]),
    ("try_files_numbers", {"try_files": [1, 2]}, ["try_files"]),
    ("error_pages_list", {"error_pages": ["/404.html"]}, ["error_pages"]),
    ("error_pages_value_number", {"error_pages": {"404": 404}}, ["error_pages", "404"]),
    ("max_ranges_string", {"max_ranges": "many"}, ["max_ranges"]),
    ("max_ranges_float", {"max_ranges": 1.5}, ["max_ranges"]),
    ("mime_types_list", {"mime_types": ["md"]}, ["mime_types"]),
    ("mime_types_value_number", {"mime_types": {"md": 5}}, ["mime_types", "md"]),
    ("cache_control_object", {"cache_control": {"*.js": "no-cache"}}, ["cache_control"]),
    ("cache_control_no_value", {"cache_control": [{"match": "*.js"}]},
     ["cache_control", "value"]),
    ("cache_control_unknown_key",
     {"cache_control": [{"match": "*.js", "value": "x", "extra_key": 1}]},
     ["extra_key", "cache_control"]),
    ("precompressed_string", {"precompressed": "yes"}, ["precompressed"]),
    ("directory_listing_number", {"directory_listing": 1}, ["directory_listing"]),
    ("dotfiles_unknown", {"dotfiles": "sometimes"}, ["dotfiles"]),
    ("dotfiles_bool", {"dotfiles": True}, ["dotfiles"]),
    ("symlinks_unknown", {"symlinks": "maybe"}, ["symlinks"]),
    ("open_file_cache_number", {"open_file_cache": 5}, ["open_file_cache"]),
    ("open_file_cache_unknown", {"open_file_cache": {"entries": 1, "ttl": 5}}, ["ttl"]),
    ("open_file_cache_entries_string", {"open_file_cache": {"entries": "many"}}, ["entries"]),
]


class ConfigValidation(FileTestCase):
    def test_every_key_accepted(self):
        www = {"index.html": "<p>i</p>\n", "404.html": "nf\n", "403.html": "fb\n",
               "a.md": "# a\n", "x.js": "1;\n", "alt/index.htm": "<p>htm</p>\n"}
        s = self.start_server(static_config(**FULL_CONFIG), www=www)
        self.assertFile200(s.get("/alt/"), b"<p>htm</p>\n", HTML)     # second index name
        self.assertFile200(s.get("/a.md"), b"# a\n", "text/x-custom")
        self.assertEqual(s.get("/x.js").header("Cache-Control"), "no-cache")
        self.assertFile200(s.get("/spa/route"), b"<p>i</p>\n", HTML)

    def test_bad_plugin_config_refuses_to_start(self):
        d = self.tmp / "cfg"
        (d / "www").mkdir(parents=True)
        for name, plugin_cfg, words in BAD_CONFIGS:
            with self.subTest(name):
                conf = {"root": "www", **plugin_cfg}
                conf = {k: v for k, v in conf.items() if v is not None}
                cfg = base_config()
                cfg["plugins"][2]["config"] = conf
                p = d / "server.json"
                p.write_text(json.dumps(cfg, indent=2))
                r = run_trellis("--config", str(p), timeout=5)
                self.assertFalse(r.timed_out, f"did not exit on a bad config: {r}")
                self.assertEqual(r.returncode, 1, r)
                self.assertNotIn("listening on", r.output)
                self.assertTrue(any(w in r.stderr for w in words),
                                f"none of {words} named in: {r.stderr!r}")


# --------------------------------------------------------------------------------------------
# traversal corpus
# --------------------------------------------------------------------------------------------

TRAVERSAL_TARGETS = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/docs/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/%2e./secret.txt",
    "/docs/%2e%2e/%2e%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/%2fetc%2fpasswd",
    "/docs%2f..%2f..%2fsecret.txt",
    "/..\\secret.txt",
    "/docs\\..\\..\\secret.txt",
    "/%5c..%5csecret.txt",
    "/..%5csecret.txt",
    "/docs/..%5c..%5csecret.txt",
    "/secret.txt%00.html",
    "/notes.txt%00",
    "/%00/../secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%c0%ae%c0%ae%c0%afsecret.txt",
    "/%c0%af..%c0%afsecret.txt",
    "/%e0%80%ae%e0%80%ae/secret.txt",
    "/%ef%bc%8e%ef%bc%8e/secret.txt",
    "/%252e%252e/secret.txt",
    "/%252e%252e%252fsecret.txt",
    "/%25%32%65%25%32%65/secret.txt",
    "/./././../secret.txt",
    "/././.././../etc/passwd",
    "/docs/./../.././secret.txt",
    "/..;/secret.txt",
    "/....//secret.txt",
    "/..../secret.txt",
    "//../secret.txt",
    "/out_link.txt",
    "/out_rel.txt",
    "/out_dir/secret.txt",
    "/out_dir/../secret.txt",
    "/docs/out_up.txt",
    "http://localhost/../secret.txt",
    "http://localhost/%2e%2e/secret.txt",
    "http://localhost/..%2fsecret.txt",
    "http://localhost/../../../etc/passwd",
    "http://localhost:1/..\\secret.txt",
    "http://..@localhost/secret.txt",
    "http://localhost/out_link.txt",
    "file:///etc/passwd",
    "file://localhost/etc/passwd",
    "../secret.txt",
    "secret.txt",
    "*",
]


def prepare_traversal(s):
    (s.dir / "secret.txt").write_bytes(SECRET)
    out = s.dir / "outside"
    out.mkdir()
    (out / "secret.txt").write_bytes(SECRET)
    os.symlink(out / "secret.txt", s.www / "out_link.txt")
    os.symlink("../outside/secret.txt", s.www / "out_rel.txt")
    os.symlink("../../secret.txt", s.www / "docs" / "out_up.txt")
    os.symlink(out, s.www / "out_dir")


class ReviewRegressions(FileTestCase):
    """Bugs found in review of the first version; each test failed before its fix."""

    def test_range_on_an_empty_file_answers_the_empty_whole(self):
        s = self.start_server(static_config(), www={"empty.txt": ""})
        for spec in ("bytes=-5", "bytes=0-", "bytes=0-0"):
            with self.subTest(spec):
                r = s.get("/empty.txt", {"Range": spec})
                self.assertEqual((r.status, r.body), (200, b""), r)

    def test_cache_rules_do_not_follow_fallbacks_and_error_pages(self):
        s = self.start_server(static_config(
            try_files=["/spa.html"],
            cache_control=[{"match": "/assets/", "value": "public, max-age=31536000, immutable"}]),
            www={"spa.html": "<p>spa</p>", "assets/app.js": "x"})
        self.assertEqual(s.get("/assets/app.js").header("Cache-Control"), "public, max-age=31536000, immutable")
        fallback = s.get("/assets/missing.js")
        self.assertEqual((fallback.status, fallback.body), (200, b"<p>spa</p>"))
        self.assertIsNone(fallback.header("Cache-Control"), fallback)

    def test_directory_redirect_encodes_the_location(self):
        def prepare(server):
            (server.www / "a?b").mkdir()
            (server.www / "a?b" / "index.html").write_text("in a?b")
        s = self.start_server(static_config(), prepare=prepare)
        r = s.get("/a%3Fb")
        self.assertEqual(r.status, 301, r)
        self.assertEqual(r.header("Location"), "/a%3Fb/")

    def test_route_prefix_without_slash_still_redirects_to_the_directory(self):
        s = self.start_server(static_config([("st", "/static", {"root": "www/docs"})]))
        r = s.get("/static")
        self.assertEqual(r.status, 301, r)
        self.assertEqual(r.header("Location"), "/static/")
        self.assertEqual(s.get("/static/").status, 200)

    def test_listing_survives_index_lookups_filling_the_cache(self):
        def prepare(server):
            (server.www / "sub" / "inner").mkdir(parents=True)
            (server.www / "sub" / "listed.txt").write_text("x")
            (server.www / "sub" / "inner" / "hidden_from_sub.txt").write_text("y")
        index = [f"i{n}.html" for n in range(16)] + ["inner"]
        s = self.start_server(static_config(index=index, directory_listing=True,
                                            open_file_cache={"entries": 16, "ttl_ms": 1000}), prepare=prepare)
        for _ in range(2):
            r = s.get("/sub/", {"Accept": "application/json"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(sorted(e["name"] for e in r.json()), ["inner", "listed.txt"])


class Traversal(FileTestCase):
    def test_corpus(self):
        s = self.start_server(static_config(), www={
            "notes.txt": NOTES, "docs/page.html": "<p>docs page</p>\n"}, prepare=prepare_traversal)
        passwd = b"root:x:0:0"
        for target in TRAVERSAL_TARGETS:
            with self.subTest(target=target):
                with self.conn(s) as c:
                    c.request("GET", target, [("Connection", "close")])
                    data, closed = c.read_until_closed(5)
                self.assertTrue(closed, f"{target}: the server did not answer and close")
                self.assertNotIn(SECRET, data, f"{target}: SECRET LEAKED")
                self.assertNotIn(passwd, data, f"{target}: /etc/passwd leaked")
                resps, rest = harness.parse_responses(data)
                self.assertEqual(len(resps), 1, f"{target}: {data[:300]!r}")
                self.assertIn(resps[0].status, (400, 403, 404), f"{target}: {resps[0]!r}")
        # the same with curl --path-as-is (no client-side normalisation)
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/out_link.txt",
                     "/docs/../../secret.txt"):
            with self.subTest(curl=path):
                cr = s.curl(path, "--path-as-is")
                self.assertIn(cr.status, (400, 403, 404), cr)
                self.assertNotIn(SECRET, cr.body)
        # the server still serves normally afterwards
        self.assertFile200(s.get("/notes.txt"), NOTES, TEXT)
        self.assertFile200(s.get("/docs/../notes.txt"), NOTES, TEXT)


if __name__ == "__main__":
    harness.main()
