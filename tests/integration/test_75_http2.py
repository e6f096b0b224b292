"""Tier 75: HTTP/2 (RFC 9113) over the real binary: negotiation (ALPN h2 on tls/auto listeners,
prior knowledge on plain/auto ones, "http2": {"enabled": false}, no h2c Upgrade), the "http2"
settings (global and per listener, and the config errors naming their JSON path), plugins over h2
(hello, echo, static ranges/conditionals/HEAD, async, blocking, streamed responses and bodies,
delay), response headers (no connection-specific ones), the request_transport/access log/metrics
view of h2, the protocol rules a server must enforce (malformed requests §8.1.1/§8.2, streams in
the wrong state §5.1, frame sizes §4.2, flow control §5.2/§6.9, stream limits §5.1.2), the known
attacks (Rapid Reset, CONTINUATION flood, HPACK bomb, SETTINGS/PING/empty-DATA floods, a window
held at zero, stream exhaustion, a peer that never reads), graceful GOAWAY on SIGTERM and SIGHUP,
and per-stream limits and the idle timeout.

The raw-frame client is tests/integration/h2client.py; curl (--http2, --http2-prior-knowledge) and
nghttp do the end-to-end checks.

Transports: like the other tiers this file runs once per TRELLIS_TEST_TRANSPORT. The base
server's listener speaks that transport and the raw client follows it: prior knowledge on plain,
TLS with ALPN h2 on tls and auto. Tests that make their own listeners of every kind (negotiation,
config) run in the plain pass only (RUN_ONCE).

H2_TEST_EXTERNAL=host:port[,tls] points the protocol and attack tests (classes Protocol*, Attack*)
at another HTTP/2 server instead of starting trellis, to check what the frame-level expectations
demand of a real implementation (nghttpd, nginx, h2o); every other test is skipped. That server
must serve, from its document root: /hello (a small file, e.g. "Hello, World!"), /big.bin (at
least 1 MiB) and /huge.bin (at least 32 MiB). Tests that depend on trellis settings
(max_concurrent_streams 4, send_timeout_ms, max_body_bytes, ...) read the peer's SETTINGS where
they can and are skipped where they cannot.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest
import zlib

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (FIXTURE_PLUGIN_DIR, IMF_DATE_RE, LOOPBACK, TRANSPORT,  # noqa: E402
                     TrellisTestCase, base_config, parse_http_date, parse_responses, run_trellis,
                     suite_pki, tls_settings, wait_for)
import h2client as h2  # noqa: E402
from h2client import H2Conn  # noqa: E402

HELLO = b"Hello, World!"
BIG_SIZE = 1024 * 1024           # /big.bin: random bytes
HUGE_SIZE = 64 * 1024 * 1024     # /huge.bin: sparse zeros
RUN_ONCE = TRANSPORT == "plain"  # tests with listeners of their own run in one pass only
CONNECTION_SPECIFIC = ("connection", "keep-alive", "proxy-connection", "transfer-encoding",
                       "upgrade")

EXTERNAL = os.environ.get("H2_TEST_EXTERNAL", "").strip()
trellis_only = unittest.skipIf(bool(EXTERNAL), "H2_TEST_EXTERNAL: trellis-only test")
run_once = unittest.skipUnless(RUN_ONCE and not EXTERNAL,
                               "makes its own listeners: runs in the plain pass only")

# Quiet limits: only the limit under test ends a connection.
QUIET = {"keepalive_timeout_ms": 30000, "header_timeout_ms": 30000,
         "header_read_timeout_ms": 30000, "body_timeout_ms": 30000, "handshake_timeout_ms": 30000,
         "send_timeout_ms": 30000, "min_body_rate_bps": 0}


def limits(**over) -> dict:
    out = dict(QUIET)
    out.update(over)
    return out


def pattern(n: int) -> bytes:
    """What the handlers fixture streams: byte i is i % 251."""
    return bytes(i % 251 for i in range(251)) * (n // 251) + bytes(i % 251 for i in range(n % 251))


def socket_count(pid: int) -> int:
    n = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def add_files(s):
    """www/big.bin (1 MiB random) and www/huge.bin (64 MiB sparse)."""
    (s.www / "big.bin").write_bytes(os.urandom(BIG_SIZE))
    with open(s.www / "huge.bin", "wb") as f:
        f.truncate(HUGE_SIZE)


def h2_config(http2: dict | None = None, lim: dict | None = None, delay: bool = False,
              handlers: bool = False, **overrides) -> dict:
    cfg = base_config(limits=limits(**(lim or {})), **overrides)
    if http2 is not None:
        cfg["http2"] = http2
    if delay:
        cfg["plugins"].append({"name": "delay", "path": "delay"})
        cfg["routes"].insert(0, {"prefix": "/delay", "plugin": "delay"})
    if handlers:
        cfg["plugins"] += [
            {"name": "handlers", "path": str(FIXTURE_PLUGIN_DIR / "handlers_fixture.so")},
            {"name": "uploads", "path": str(FIXTURE_PLUGIN_DIR / "stream_body_fixture.so")},
        ]
        cfg["routes"][0:0] = [
            {"prefix": "/h", "plugin": "handlers"},
            {"prefix": "/up", "plugin": "uploads"},
            {"prefix": "/hello-blocking", "plugin": "hello", "blocking": True},
        ]
        cfg["thread_pool"] = {"threads": 4, "queue": 16}
    return cfg


class Peer:
    """Where the h2 client connects: a trellis Server's listener, or H2_TEST_EXTERNAL."""

    def __init__(self, port: int, tls: bool, server=None, host: str = LOOPBACK):
        self.port, self.tls, self.server, self.host = port, tls, server, host

    @property
    def trellis(self) -> bool:
        return self.server is not None

    def connect(self, **kw) -> H2Conn:
        kw.setdefault("tls", self.tls)
        if kw["tls"]:
            if self.trellis:
                kw.setdefault("cafile", suite_pki().ca.cert)
            else:
                kw.setdefault("context", h2.tls_context(verify=False))
        return H2Conn.connect(self.port, host=self.host, **kw)


def external_peer() -> Peer:
    spec, _, flag = EXTERNAL.partition(",")
    host, _, port = spec.rpartition(":")
    return Peer(int(port), flag.strip() == "tls", host=host or LOOPBACK)


class H2Case(TrellisTestCase):
    def setUp(self):
        super().setUp()
        self._h2: list[H2Conn] = []
        self.addCleanup(self._close_h2)

    def _close_h2(self):
        for c in self._h2:
            c.close()

    def h2_server(self, config=None, **kw):
        return self.start_server(config if config is not None else h2_config(**kw),
                                 prepare=add_files)

    def peer(self, config=None, **kw) -> Peer:
        """The server under test: H2_TEST_EXTERNAL, or trellis started from h2_config(**kw)."""
        if EXTERNAL:
            return external_peer()
        s = self.h2_server(config, **kw)
        return Peer(s.port, s.transports[0] != "plain", s)

    def h2conn(self, target, listener: int = 0, **kw) -> H2Conn:
        """An h2 connection to a Peer or to a trellis Server's listener (TLS+ALPN on tls/auto
        listeners unless tls=False: prior knowledge)."""
        if isinstance(target, Peer):
            c = target.connect(**kw)
        else:
            kw.setdefault("tls", target.transports[listener] != "plain")
            if kw["tls"]:
                kw.setdefault("cafile", suite_pki().ca.cert)
            c = H2Conn.connect(target.listeners[listener][1], **kw)
        self._h2.append(c)
        return c

    # -- assertions
    def assertServes(self, target, path="/hello", **kw):
        """A fresh connection gets a 200 for path (the server survived whatever came before)."""
        c = self.h2conn(target, **kw)
        r = c.response(c.request("GET", path), 5)
        self.assertEqual(r.status, 200, f"{r!r}; {c.summary()}")
        if path == "/hello" and (not isinstance(target, Peer) or target.trellis):
            self.assertEqual(bytes(r.body), HELLO)
        c.close()
        return r

    def assertStreamRefused(self, c: H2Conn, sid: int, codes=(h2.PROTOCOL_ERROR,),
                            statuses=(400,), allow_goaway=False, what=""):
        """The stream got RST_STREAM with one of codes, or a response with one of statuses (RFC
        9113 §8.1.1: a server MAY answer a malformed request before resetting it); never a
        success. allow_goaway: a connection error with one of codes also does."""
        r = c.response(sid, 5)
        if r.reset_code is not None:
            self.assertIn(r.reset_code, codes, f"{what}: RST_STREAM {h2.error_name(r.reset_code)}, "
                                               f"expected one of {[h2.error_name(x) for x in codes]}")
            return "rst"
        if r.status is not None:
            self.assertIn(r.status, statuses, f"{what}: answered {r!r}")
            return "status"
        if allow_goaway and c.goaway is not None:
            self.assertIn(c.goaway.error_code, codes, f"{what}: {c.summary()}")
            return "goaway"
        self.fail(f"{what}: stream {sid} neither reset nor answered; {c.summary()}")

    def assertConnectionError(self, c: H2Conn, codes, what="", timeout=5.0, allow_close=False):
        """GOAWAY with one of codes (and the connection closed after it, or at least no further
        stream served); allow_close: a close without GOAWAY also does."""
        c.wait_goaway_or_close(timeout)
        if c.goaway is None:
            self.assertTrue(allow_close and c.eof, f"{what}: no GOAWAY; {c.summary()}")
            return
        self.assertIn(c.goaway.error_code, codes,
                      f"{what}: GOAWAY {h2.error_name(c.goaway.error_code)}, expected "
                      f"{[h2.error_name(x) for x in codes]}; {c.summary()}")

    def assertH2Headers(self, r, length=None):
        """No connection-specific header; lowercase names; content-length when known; date
        (IMF-fixdate, near now) and server (trellis on trellis)."""
        for k, v in r.headers:
            self.assertEqual(k, k.lower(), f"uppercase header name {k!r} in {r!r}")
            self.assertFalse(k.startswith(":"), f"pseudo-header {k!r} among the regular ones")
            self.assertNotIn(k, CONNECTION_SPECIFIC, f"connection-specific header {k}: {v} in {r!r}")
        if length is not None:
            self.assertEqual(r.header_all("content-length"), [str(length)], r)
        date = r.header("date")
        self.assertIsNotNone(date, r)
        self.assertRegex(date, IMF_DATE_RE)
        self.assertLess(abs(parse_http_date(date) - time.time()), 120)
        self.assertEqual(r.header_all("server"), ["trellis"], r)


# ============================================================================================
# Negotiation
# ============================================================================================

def all_listeners(http2_per_listener=(None, None, None), **overrides) -> dict:
    cfg = h2_config(**overrides)
    cfg["listen"] = []
    for transport, h in zip(("plain", "tls", "auto"), http2_per_listener):
        listener = {"address": LOOPBACK, "port": 0, "transport": transport}
        if h is not None:
            listener["http2"] = h
        cfg["listen"].append(listener)
    cfg["tls"] = tls_settings()
    return cfg


def alpn_of(port: int, offer) -> str | None:
    with harness.Conn(port, transport="tls", context=h2.tls_context(suite_pki().ca.cert, offer)) as c:
        if c.handshake_error is not None:
            raise c.handshake_error
        return c.sock.selected_alpn_protocol()


def preface_answer(port: int, transport: str = "plain") -> bytes:
    """What an HTTP/2 client preface (+ empty SETTINGS) gets, read until close or 3 s."""
    with harness.Conn(port, transport=transport, timeout=3) as c:
        c.try_send(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))
        data, _ = c.read_until_closed(3)
        return data


class Negotiation(H2Case):
    @run_once
    def test_alpn_h2_on_tls_and_auto_prior_knowledge_on_plain_and_auto(self):
        s = self.start_server(all_listeners(), prepare=add_files)
        for i, tls in ((0, False), (1, True), (2, True), (2, False)):
            with self.subTest(listener=s.transports[i], tls=tls):
                c = self.h2conn(s, listener=i, tls=tls)
                self.assertEqual(c.alpn, "h2" if tls else None)
                r = c.response(c.request("GET", "/hello"), 5)
                self.assertEqual((r.status, bytes(r.body)), (200, HELLO), r)
        # A TLS client offering only http/1.1 (or nothing) gets HTTP/1.1.
        for i in (1, 2):
            self.assertEqual(alpn_of(s.listeners[i][1], ["http/1.1"]), "http/1.1")
            self.assertIn(alpn_of(s.listeners[i][1], None), (None, "http/1.1"))
            self.assertEqual(alpn_of(s.listeners[i][1], ["h2", "http/1.1"]), "h2")
            self.assertEqual(alpn_of(s.listeners[i][1], ["http/1.1", "h2"]), "h2",
                             "the server's preference (h2) should win when both are offered")

    @run_once
    def test_disabled_globally_preface_gets_505_and_alpn_no_h2(self):
        cfg = all_listeners((None, None, {"enabled": True}), http2={"enabled": False})
        s = self.start_server(cfg, prepare=add_files)
        data = preface_answer(s.listeners[0][1])
        resps, _ = parse_responses(data)
        self.assertTrue(resps and resps[0].status == 505, f"preface on a disabled listener: {data[:300]!r}")
        self.assertTrue(resps[0].version == "HTTP/1.1")
        self.assertIn(alpn_of(s.listeners[1][1], ["h2", "http/1.1"]), ("http/1.1", None))
        # listen[2].http2.enabled overrides the global false
        c = self.h2conn(s, listener=2, tls=False)
        self.assertEqual(c.response(c.request("GET", "/hello"), 5).status, 200)
        self.assertEqual(alpn_of(s.listeners[2][1], ["h2", "http/1.1"]), "h2")

    @run_once
    def test_disabled_per_listener(self):
        cfg = all_listeners(({"enabled": False}, {"enabled": False}, None))
        s = self.start_server(cfg, prepare=add_files)
        resps, _ = parse_responses(preface_answer(s.listeners[0][1]))
        self.assertEqual([r.status for r in resps][:1], [505])
        self.assertIn(alpn_of(s.listeners[1][1], ["h2", "http/1.1"]), ("http/1.1", None))
        # HTTP/1.1 still works on the disabled listeners
        r = harness.curl(s.url("/hello", 1))
        self.assertEqual((r.returncode, r.status, r.body), (0, 200, HELLO), r)
        self.assertEqual(alpn_of(s.listeners[2][1], ["h2", "http/1.1"]), "h2")

    @trellis_only
    def test_no_h2c_upgrade(self):
        if TRANSPORT == "tls":
            self.skipTest("h2c Upgrade is a cleartext matter")
        s = self.h2_server()
        c = self.conn(s, transport="plain")
        c.request("GET", "/hello", [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                                    ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])
        r = c.read_response()
        self.assertEqual((r.version, r.status, r.body), ("HTTP/1.1", 200, HELLO), r)
        self.assertNotIn("upgrade", r.connection_tokens())

    @trellis_only
    def test_curl_prior_knowledge_and_alpn(self):
        s = self.h2_server()
        flag = "--http2-prior-knowledge" if s.transports[0] == "plain" else "--http2"
        r = s.curl("/hello", flag)
        self.assertEqual((r.returncode, r.status, r.body), (0, 200, HELLO), r)
        self.assertTrue(r.all_heads[-1].startswith(b"HTTP/2 200"), r.all_heads)
        if s.transports[0] == "auto":  # the plain side of an auto listener speaks h2c too
            r = harness.curl(s.http_url("/hello"), "--http2-prior-knowledge")
            self.assertEqual((r.returncode, r.status, r.body), (0, 200, HELLO), r)
            self.assertTrue(r.all_heads[-1].startswith(b"HTTP/2 200"), r.all_heads)
        # Without asking for h2, curl keeps HTTP/1.1 (no upgrade offered or taken).
        r = s.curl("/hello", "--http1.1")
        self.assertTrue(r.all_heads[-1].startswith(b"HTTP/1.1 200"), r.all_heads)


# ============================================================================================
# Settings and config errors
# ============================================================================================

def _set(path, value):
    def f(cfg):
        node = cfg
        for k in path[:-1]:
            node = node.setdefault(k, {}) if isinstance(k, str) else node[k]
        node[path[-1]] = value
    return f


HTTP2_CONFIG_ERRORS = [
    ("enabled_string", _set(["http2", "enabled"], "yes"), "/http2/enabled"),
    ("max_frame_size_small", _set(["http2", "max_frame_size"], 16383), "/http2/max_frame_size"),
    ("max_frame_size_large", _set(["http2", "max_frame_size"], 16777216), "/http2/max_frame_size"),
    ("max_frame_size_string", _set(["http2", "max_frame_size"], "16k"), "/http2/max_frame_size"),
    ("initial_window_too_large", _set(["http2", "initial_window_size"], 2 ** 31),
     "/http2/initial_window_size"),
    ("initial_window_negative", _set(["http2", "initial_window_size"], -1),
     "/http2/initial_window_size"),
    ("max_concurrent_streams_zero", _set(["http2", "max_concurrent_streams"], 0),
     "/http2/max_concurrent_streams"),
    ("max_concurrent_streams_float", _set(["http2", "max_concurrent_streams"], 1.5),
     "/http2/max_concurrent_streams"),
    ("max_header_list_size_string", _set(["http2", "max_header_list_size"], "64k"),
     "/http2/max_header_list_size"),
    ("http2_not_object", _set(["http2"], True), "/http2"),
    ("unknown_key", _set(["http2", "max_streams"], 5), "/http2", "max_streams"),
    ("listener_max_frame_size", _set(["listen", 0, "http2", "max_frame_size"], 1),
     "/listen/0/http2/max_frame_size"),
    ("listener_enabled_number", _set(["listen", 0, "http2", "enabled"], 1),
     "/listen/0/http2/enabled"),
]


class DefaultSite(TrellisTestCase):
    @run_once
    def test_the_default_server_json_serves_the_site_over_h2(self):
        """The repository's server.json, only its ports made ephemeral and its paths absolute:
        HTTP/2 needs no configuration (ALPN h2 on the tls listener, prior knowledge on plain)."""
        cfg = json.loads((harness.SOURCE_DIR / "server.json").read_text())
        for listener in cfg["listen"]:
            listener["address"], listener["port"] = LOOPBACK, 0
        cfg["plugin_dir"] = str(harness.PLUGIN_DIR)
        for plugin in cfg["plugins"]:
            root = plugin.get("config", {}).get("root")
            if root and not root.startswith("/"):  # the site and the dashboard, under the source
                plugin["config"]["root"] = str(harness.SOURCE_DIR / root)
        cfg["access_log"] = "off"
        self.assertNotIn("http2", json.dumps(cfg), "the default configuration says nothing of HTTP/2")
        s = self.start_server(cfg)
        tls = s.transports.index("tls")
        plain = s.transports.index("plain")
        index = (harness.SOURCE_DIR / "www" / "index.html").read_bytes()
        certificate = s.dir / "certs" / "site.crt"  # made at the first start (self_signed_if_missing)
        port = s.listeners[tls][1]
        r = harness.curl(f"https://localhost:{port}/", "--http2", "--cacert", str(certificate))
        self.assertEqual((r.returncode, r.status, r.http_version), (0, 200, "2"), r)
        self.assertEqual(r.body, index)
        out = subprocess.run(["nghttp", "-n", "-s", f"http://{LOOPBACK}:{s.listeners[plain][1]}/"],
                             capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"\b200\b")


class Regressions(H2Case):
    """Each found in review of the first HTTP/2 code; each failed before its fix."""

    @trellis_only
    def test_preface_split_across_reads(self):
        # The first read holds only the start of the preface: the connection must wait for the
        # rest, not stop reading (it did: the bytes sat unparsed and reading was switched off).
        s = self.h2_server()
        c = self.h2conn(s, preface=False)
        c.send(h2.PREFACE[:5])
        time.sleep(0.05)  # two TCP segments, so two reads (nothing to wait for on the server)
        c.send(h2.PREFACE[5:] + h2.frame(h2.SETTINGS, 0, 0, b""))
        self.assertTrue(c.read_until(lambda: c.server_settings_received, 5), c.summary())
        r = c.response(c.request("GET", "/hello"), 5)
        self.assertEqual((r.status, bytes(r.body)), (200, HELLO))

    @trellis_only
    def test_cookie_fields_reach_plugins_joined(self):
        s = self.h2_server()
        c = self.h2conn(s)
        sid = c.request("GET", "/echo/c", headers=[("cookie", "a=1"), ("cookie", "b=2")])
        r = c.response(sid, 5)
        self.assertEqual(r.status, 200, r)
        cookies = [v for k, v in json.loads(bytes(r.body))["headers"] if k.lower() == "cookie"]
        self.assertEqual(cookies, ["a=1; b=2"], bytes(r.body))

    @trellis_only
    def test_no_100_continue_for_a_request_without_body(self):
        s = self.h2_server()
        c = self.h2conn(s)
        sid = c.new_stream_id()
        c.send_headers(sid, c.request_headers("GET", "/hello", [("expect", "100-continue")]),
                       end_stream=True)
        r = c.response(sid, 5)
        self.assertEqual(r.status, 200)
        statuses = [f for f in c.frames_of(h2.HEADERS, sid)]
        self.assertEqual(len(statuses), 1, f"a 100 went out for a request with no body: {statuses}")

    @trellis_only
    def test_header_block_left_half_way_closes_the_connection_and_the_server_lives(self):
        s = self.h2_server(lim={"header_timeout_ms": 300})
        c = self.h2conn(s)
        sid = c.new_stream_id()
        c.send_headers(sid, c.request_headers("GET", "/hello"), end_stream=True, end_headers=False)
        self.assertTrue(c.read_until_closed(5), c.summary())
        other = self.h2conn(s)
        r = other.response(other.request("GET", "/hello"), 5)
        self.assertEqual((r.status, bytes(r.body)), (200, HELLO))
        self.assertTrue(s.running())


class Settings(H2Case):
    @run_once
    def test_each_config_error_stops_check_and_start(self):
        for name, mutate, pointer, *words in HTTP2_CONFIG_ERRORS:
            cfg = h2_config()
            mutate(cfg)
            d = self.tmp / name
            d.mkdir()
            (d / "www").mkdir()
            p = d / "server.json"
            p.write_text(json.dumps(cfg, indent=2))
            for args in (("--check", "--config", str(p)), ("--config", str(p))):
                with self.subTest(name, args=args[0]):
                    r = run_trellis(*args, timeout=5)
                    self.assertFalse(r.timed_out, f"did not exit on a bad config: {r}")
                    self.assertNotEqual(r.returncode, 0, r)
                    self.assertIn(pointer, r.output, r)
                    for w in words:
                        self.assertIn(w, r.output, r)
                    self.assertNotIn("listening on", r.output, r)
                    self.assertNotIn("configuration OK", r.output, r)

    @run_once
    def test_good_http2_config_passes_check(self):
        cfg = h2_config(http2={"enabled": True, "max_concurrent_streams": 1,
                               "initial_window_size": 2 ** 31 - 1, "max_frame_size": 16777215,
                               "max_header_list_size": 65536})
        cfg["listen"][0]["http2"] = {"max_frame_size": 16384, "initial_window_size": 1}
        p = self.tmp / "ok.json"
        (self.tmp / "www").mkdir()
        p.write_text(json.dumps(cfg))
        r = run_trellis("--check", "--config", str(p))
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration OK", r.stdout, r)

    @trellis_only
    def test_default_settings_advertised(self):
        s = self.h2_server()
        c = self.h2conn(s)
        st = c.server_settings
        self.assertEqual(st.get(h2.MAX_CONCURRENT_STREAMS), 128, st)
        self.assertEqual(st.get(h2.INITIAL_WINDOW_SIZE, 65535), 65535, st)
        self.assertEqual(st.get(h2.MAX_FRAME_SIZE, 16384), 16384, st)
        self.assertEqual(st.get(h2.MAX_HEADER_LIST_SIZE), 65536, st)
        self.assertIn(st.get(h2.ENABLE_PUSH, 0), (0, 1), st)  # a server may send 0 or nothing

    @run_once
    def test_configured_settings_and_listener_overrides(self):
        cfg = all_listeners((None, {"max_concurrent_streams": 3}, {"max_frame_size": 65536}),
                            http2={"max_concurrent_streams": 7, "initial_window_size": 100000,
                                   "max_frame_size": 32768, "max_header_list_size": 20000})
        s = self.start_server(cfg, prepare=add_files)
        want = {0: (7, 32768), 1: (3, 32768), 2: (7, 65536)}
        for i, (streams, frame_size) in want.items():
            with self.subTest(listener=s.transports[i]):
                st = self.h2conn(s, listener=i).server_settings
                self.assertEqual(st.get(h2.MAX_CONCURRENT_STREAMS), streams, st)
                self.assertEqual(st.get(h2.INITIAL_WINDOW_SIZE), 100000, st)
                self.assertEqual(st.get(h2.MAX_FRAME_SIZE), frame_size, st)
                self.assertEqual(st.get(h2.MAX_HEADER_LIST_SIZE), 20000, st)

    @trellis_only
    def test_larger_max_frame_size_is_accepted_up_to_the_setting(self):
        s = self.h2_server(http2={"max_frame_size": 32768})
        c = self.h2conn(s)
        self.assertEqual(c.server_settings.get(h2.MAX_FRAME_SIZE), 32768)
        self.assertTrue(c.read_until(lambda: c.settings_acks >= 1, 5))
        sid = c.request("POST", "/echo/big-frame", end_stream=False)
        c.send_data_frame(sid, b"a" * 20000, end_stream=True)  # > 16384, within the window
        r = c.response(sid, 5)
        self.assertEqual(r.status, 200, f"{r!r} {c.summary()}")
        self.assertEqual(len(json.loads(bytes(r.body))["body"]), 20000)
        sid = c.request("POST", "/echo/too-big", end_stream=False)
        c.send_data_frame(sid, b"a" * 32769, end_stream=True)
        self.assertConnectionError(c, (h2.FRAME_SIZE_ERROR,), "a 32769-byte DATA frame")


# ============================================================================================
# Plugins and responses over h2 (trellis)
# ============================================================================================

@trellis_only
class Plugins(H2Case):
    def test_response_headers_hello_static_404_echo_head(self):
        s = self.h2_server()
        c = self.h2conn(s)
        notes = (s.www / "notes.txt").read_bytes()
        cases = [("GET", "/hello", 200, HELLO), ("GET", "/notes.txt", 200, notes),
                 ("GET", "/nothing-here.html", 404, None), ("POST", "/echo/x", 200, None)]
        for method, path, status, body in cases:
            with self.subTest(path):
                r = c.response(c.request(method, path, body=b"abc" if method == "POST" else None), 5)
                self.assertEqual(r.status, status, r)
                self.assertTrue(r.ended, r)
                if body is not None:
                    self.assertEqual(bytes(r.body), body)
                self.assertH2Headers(r, length=len(r.body))
        sid = c.request("HEAD", "/notes.txt")
        r = c.response(sid, 5)
        self.assertEqual((r.status, bytes(r.body)), (200, b""), r)
        self.assertH2Headers(r, length=len(notes))
        self.assertEqual(c.frames_of(h2.DATA, sid), [], "DATA frames after a HEAD")
        self.assertTrue(c.frames_of(h2.HEADERS, sid)[0].flags & h2.END_STREAM)

    def test_echo_sees_the_request(self):
        s = self.h2_server()
        c = self.h2conn(s)
        body = os.urandom(300000)
        sid = c.request("POST", "/echo/path?x=1", [("x-test", "yes"), ("content-type", "a/b")],
                        body=body)
        r = c.response(sid, 10)
        self.assertEqual(r.status, 200, r)
        j = json.loads(bytes(r.body))
        self.assertEqual((j["method"], j["path"], j["query"]), ("POST", "/echo/path", "x=1"))
        self.assertEqual(j["body"].encode("latin-1"), body)
        self.assertEqual(j["host"], "localhost", "the :authority is the request's host")
        self.assertIn(j["version"], ("HTTP/2.0", "HTTP/2"))
        self.assertIn(["x-test", "yes"], [[k.lower(), v] for k, v in j["headers"]])

    def test_alpn_h2_in_request_transport(self):
        if TRANSPORT == "plain":
            self.skipTest("ALPN is a TLS matter")
        s = self.h2_server()
        c = self.h2conn(s)
        r = c.response(c.request("GET", "/echo/tls"), 5)
        t = json.loads(bytes(r.body))["transport"]
        self.assertEqual((t["name"], t["alpn"]), ("tls", "h2"), t)

    def test_static_range_conditionals(self):
        s = self.h2_server()
        c = self.h2conn(s)
        full = c.response(c.request("GET", "/big.bin"), 10)
        data = (s.www / "big.bin").read_bytes()
        self.assertEqual((full.status, bytes(full.body)), (200, data))
        etag = full.header("etag")
        self.assertTrue(etag, full)
        r = c.response(c.request("GET", "/big.bin", [("range", "bytes=10-19")]), 5)
        self.assertEqual((r.status, bytes(r.body)), (206, data[10:20]), r)
        self.assertEqual(r.header("content-range"), f"bytes 10-19/{BIG_SIZE}")
        self.assertH2Headers(r, length=10)
        r = c.response(c.request("GET", "/big.bin", [("if-none-match", etag)]), 5)
        self.assertEqual((r.status, bytes(r.body)), (304, b""), r)
        r = c.response(c.request("GET", "/big.bin", [("if-match", '"nope"')]), 5)
        self.assertEqual(r.status, 412, r)

    def test_many_streams_at_once_one_connection(self):
        s = self.h2_server()
        c = self.h2conn(s)
        sids = [c.request("GET", "/hello" if i % 2 else "/notes.txt") for i in range(50)]
        for i, sid in enumerate(sids):
            r = c.response(sid, 10)
            self.assertEqual(r.status, 200, r)
        self.assertIsNone(c.goaway)

    def test_async_blocking_streamed_and_uploads_multiplexed(self):
        s = self.h2_server(handlers=True)
        c = self.h2conn(s)
        slow = c.request("GET", "/h/async?ms=600")
        blocking = c.request("GET", "/hello-blocking")
        unknown = c.request("GET", "/h/stream?bytes=300000&chunk=10000")
        known = c.request("GET", "/h/stream-length?bytes=300000")
        upload_body = os.urandom(3 * 1024 * 1024 + 17)
        up = c.request("POST", "/up/upload", body=upload_body)
        r = c.response(blocking, 5)
        self.assertEqual((r.status, bytes(r.body)), (200, HELLO), r)
        self.assertFalse(c.streams[slow].done, "the blocking answer waited for the async one")
        r = c.response(unknown, 10)
        self.assertEqual((r.status, len(r.body)), (200, 300000), r)
        self.assertEqual(bytes(r.body), pattern(300000))
        self.assertEqual(r.header_all("content-length"), [], "unknown length: no content-length")
        self.assertH2Headers(r)
        r = c.response(known, 10)
        self.assertEqual(bytes(r.body), pattern(300000))
        self.assertH2Headers(r, length=300000)
        r = c.response(up, 20)
        self.assertEqual(r.status, 200, r)
        j = json.loads(bytes(r.body))
        self.assertEqual((j["bytes"], j["crc32"]), (len(upload_body), f"{zlib.crc32(upload_body):08x}"))
        self.assertEqual(j["early"], 0)
        r = c.response(slow, 5)
        self.assertEqual((r.status, bytes(r.body)), (200, b"async 600"), r)

    def test_delay_streams_chunks(self):
        s = self.h2_server(delay=True)
        c = self.h2conn(s)
        sid = c.request("GET", "/delay?chunks=3&ms=100")
        r = c.response(sid, 10)
        self.assertEqual((r.status, bytes(r.body)), (200, b"chunk 1\nchunk 2\nchunk 3\n"), r)
        self.assertEqual(r.header_all("transfer-encoding"), [])

    def test_nghttp_multiplexes(self):
        s = self.h2_server()
        base = s.url("") if s.transports[0] != "plain" else f"http://{LOOPBACK}:{s.port}"
        if base.startswith("https://localhost"):
            base = f"https://{LOOPBACK}:{s.port}"
        p = subprocess.run(["nghttp", "-nv", "-t", "10", f"{base}/hello", f"{base}/notes.txt",
                            f"{base}/nothing-here.html"],
                           capture_output=True, timeout=30)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out + p.stderr.decode(errors="replace"))
        statuses = re.findall(r"recv \(stream_id=\d+\) :status: (\d+)", out)
        self.assertEqual(sorted(statuses), ["200", "200", "404"], out)
        self.assertNotRegex(out, r"recv GOAWAY.*error_code=(?!NO_ERROR)")

    def test_curl_post_body_and_headers(self):
        s = self.h2_server()
        flag = "--http2-prior-knowledge" if s.transports[0] == "plain" else "--http2"
        body = os.urandom(200000)
        r = s.curl("/echo/up", flag, "--data-binary", "@-", "-H", "Content-Type: x/y", input=body)
        self.assertEqual((r.returncode, r.status), (0, 200), r)
        self.assertTrue(r.all_heads[-1].startswith(b"HTTP/2 200"), r.all_heads)
        self.assertEqual(json.loads(r.body)["body"].encode("latin-1"), body)
        for name in CONNECTION_SPECIFIC:
            self.assertEqual(r.header_all(name), [], r)


# ============================================================================================
# Logs and metrics (trellis)
# ============================================================================================

@trellis_only
class Observability(H2Case):
    def test_access_log_says_http_2_0(self):
        log = self.tmp / "access.log"
        s = self.h2_server(access_log={"path": str(log), "format": "combined"})
        c = self.h2conn(s)
        self.assertEqual(c.response(c.request("GET", "/hello?h2=1"), 5).status, 200)
        line = wait_for(lambda: next((ln for ln in (log.read_text() if log.exists() else "")
                                      .splitlines() if "/hello?h2=1" in ln), None), 5)
        self.assertIsNotNone(line, "no access log line")
        self.assertIn('"GET /hello?h2=1 HTTP/2.0" 200 13', line)

    def test_metrics_count_h2(self):
        cfg = h2_config()
        cfg["plugins"].append({"name": "status", "path": "status"})
        cfg["routes"][0:0] = [{"prefix": "/status", "plugin": "status"},
                              {"prefix": "/metrics", "plugin": "status"}]
        s = self.h2_server(cfg)
        c = self.h2conn(s)
        for _ in range(3):
            self.assertEqual(c.response(c.request("GET", "/hello"), 5).status, 200)
        text = s.get("/metrics").body.decode()
        self.assertRegex(text, r'(?m)^\w+\{[^}]*protocol="h2"[^}]*\} [0-9.e+]+$',
                         "no metric line with protocol=\"h2\"")
        found = []

        def walk(node, path):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, path + [str(k)])
                if any(str(v).lower() in ("h2", "http/2", "http2") for v in node.values()):
                    found.append(path)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, path + [str(i)])
            elif isinstance(node, (int, float)) and node > 0 and \
                    any(re.search(r"h2|http2|http_2", p, re.I) for p in path):
                found.append(path)
        walk(s.get("/status").json(), [])
        self.assertTrue(found, "the status JSON counts nothing under an h2/http2 name")


# ============================================================================================
# Protocol rules (raw frames; also against H2_TEST_EXTERNAL)
# ============================================================================================

def malformed_cases(scheme: str, path: str = "/hello"):
    base = [(":method", "GET"), (":scheme", scheme), (":authority", "localhost"), (":path", path)]
    m, sc, a, p = base
    return [
        ("uppercase_name", base + [("X-Upper", "1")]),
        ("connection_keep_alive", base + [("connection", "keep-alive")]),
        ("keep_alive", base + [("keep-alive", "timeout=5")]),
        ("proxy_connection", base + [("proxy-connection", "keep-alive")]),
        ("transfer_encoding", base + [("transfer-encoding", "chunked")]),
        ("upgrade", base + [("upgrade", "websocket")]),
        ("te_gzip", base + [("te", "gzip")]),
        ("pseudo_after_regular", [m, sc, a, ("user-agent", "t"), p]),
        ("duplicate_path", base + [(":path", "/other")]),
        ("duplicate_method", [m, m, sc, a, p]),
        ("missing_method", [sc, a, p]),
        ("missing_scheme", [m, a, p]),
        ("missing_path", [m, sc, a]),
        ("empty_path", [m, sc, a, (":path", "")]),
        ("unknown_pseudo", base + [(":foo", "bar")]),
        ("response_pseudo", base + [(":status", "200")]),
        ("value_with_lf", base + [("x-a", "a\nb")]),
        ("value_with_cr", base + [("x-a", "a\rb")]),
        ("value_with_nul", base + [("x-a", "a\0b")]),
        ("name_with_space", base + [("x a", "1")]),
        ("name_with_colon_inside", base + [("x:a", "1")]),
    ]


class ProtocolRules(H2Case):
    def test_malformed_requests_get_rst_stream_protocol_error(self):
        """RFC 9113 §8.1.1, §8.2, §8.3.1: stream error PROTOCOL_ERROR (a 400 before it is
        allowed); the connection goes on serving."""
        peer = self.peer()
        outcomes = {}
        c = None
        for name, headers in malformed_cases("https" if peer.tls else "http"):
            with self.subTest(name):
                if c is None or c.goaway is not None or c.eof:
                    c = self.h2conn(peer)
                sid = c.new_stream_id()
                c.send_headers(sid, headers, end_stream=True)
                outcomes[name] = self.assertStreamRefused(c, sid, what=name)
                self.assertIsNone(c.goaway, f"{name}: a connection error for a stream error; "
                                            f"{c.summary()}")
                ok = c.response(c.request("GET", "/hello"), 5)
                self.assertEqual(ok.status, 200, f"after {name}: {ok!r}; {c.summary()}")
        if harness.VERBOSE:
            print(outcomes, file=sys.stderr)

    def test_te_trailers_is_allowed(self):
        peer = self.peer()
        c = self.h2conn(peer)
        r = c.response(c.request("GET", "/hello", [("te", "trailers")]), 5)
        self.assertEqual(r.status, 200, r)

    def test_data_on_idle_stream_is_a_connection_error(self):
        """§5.1 idle: anything but HEADERS/PRIORITY is a connection error PROTOCOL_ERROR."""
        c = self.h2conn(self.peer())
        c.send_data_frame(5, b"hello", end_stream=True)
        self.assertConnectionError(c, (h2.PROTOCOL_ERROR,), "DATA on idle stream 5")

    def test_headers_on_even_stream_is_a_connection_error(self):
        """§5.1.1: a client-initiated stream must use an odd identifier."""
        c = self.h2conn(self.peer())
        c.send_headers(2, c.request_headers("GET", "/hello"), end_stream=True)
        self.assertConnectionError(c, (h2.PROTOCOL_ERROR,), "HEADERS on stream 2")

    def test_data_on_half_closed_remote_stream(self):
        """§5.1 half-closed (remote) / §6.1: STREAM_CLOSED, as a stream or connection error. The
        stream is held open on the server's side by a zero window (no response DATA can go)."""
        peer = self.peer()
        c = self.h2conn(peer, settings={h2.INITIAL_WINDOW_SIZE: 0}, auto_window_update=False)
        sid = c.request("GET", "/big.bin")
        self.assertTrue(c.read_until(lambda: c.streams[sid].status is not None, 5), c.summary())
        c.send_data_frame(sid, b"late body", end_stream=True)
        c.read_until(lambda: c.streams[sid].reset_code is not None or c.goaway or c.eof, 5)
        if c.goaway is not None:
            self.assertIn(c.goaway.error_code, (h2.STREAM_CLOSED, h2.PROTOCOL_ERROR), c.summary())
        else:
            self.assertEqual(c.rst_code(sid), h2.STREAM_CLOSED, c.summary())

    def test_data_on_closed_stream(self):
        """§5.1 closed: DATA after both sides ended the stream. The RFC lets the server treat it
        as a connection error STREAM_CLOSED (§5.1 'MAY'), a stream error STREAM_CLOSED (§6.1), or
        (having closed the stream itself) ignore it. Whatever it does, nothing else breaks."""
        peer = self.peer()
        c = self.h2conn(peer)
        sid = c.request("GET", "/hello")
        self.assertEqual(c.response(sid, 5).status, 200)
        c.send_data_frame(sid, b"after the end", end_stream=True)
        nxt = c.request("GET", "/hello")
        r = c.response(nxt, 5)
        if c.goaway is not None:
            self.assertIn(c.goaway.error_code, (h2.STREAM_CLOSED, h2.PROTOCOL_ERROR), c.summary())
        else:
            self.assertIn(c.rst_code(sid), (None, h2.STREAM_CLOSED), c.summary())
            self.assertEqual(r.status, 200, f"{r!r} {c.summary()}")
        self.assertServes(peer)

    def test_oversized_headers_frame_is_frame_size_error(self):
        """§4.2: a frame over SETTINGS_MAX_FRAME_SIZE carrying a field block is a connection error
        FRAME_SIZE_ERROR."""
        peer = self.peer()
        c = self.h2conn(peer)
        limit = c.server_settings.get(h2.MAX_FRAME_SIZE, 16384)
        block = h2.padded_block(c.request_headers("GET", "/hello"), limit + 1)
        c.send_headers(c.new_stream_id(), None, end_stream=True, block=block)
        self.assertConnectionError(c, (h2.FRAME_SIZE_ERROR,), f"a {limit + 1}-byte HEADERS frame")

    def test_oversized_data_frame_is_frame_size_error(self):
        """§4.2: FRAME_SIZE_ERROR (the contract: a GOAWAY; the RFC also allows a stream error
        for DATA)."""
        peer = self.peer()
        c = self.h2conn(peer)
        limit = c.server_settings.get(h2.MAX_FRAME_SIZE, 16384)
        sid = c.request("POST", "/echo/x" if peer.trellis else "/hello", end_stream=False)
        c.send_data_frame(sid, b"a" * (limit + 1), end_stream=True)
        c.read_until(lambda: c.goaway or c.eof or c.streams[sid].done, 5)
        if peer.trellis or c.goaway is not None:
            self.assertConnectionError(c, (h2.FRAME_SIZE_ERROR,), f"a {limit + 1}-byte DATA frame")
        else:
            self.assertEqual(c.rst_code(sid), h2.FRAME_SIZE_ERROR, c.summary())

    def test_bad_client_settings(self):
        """§6.5.2: INITIAL_WINDOW_SIZE above 2^31-1 → FLOW_CONTROL_ERROR; MAX_FRAME_SIZE below
        16384 → PROTOCOL_ERROR; ENABLE_PUSH 2 → PROTOCOL_ERROR; a SETTINGS frame of a length not
        a multiple of 6 → FRAME_SIZE_ERROR."""
        peer = self.peer()
        cases = [({h2.INITIAL_WINDOW_SIZE: 2 ** 31}, h2.FLOW_CONTROL_ERROR),
                 ({h2.MAX_FRAME_SIZE: 100}, h2.PROTOCOL_ERROR),
                 ({h2.ENABLE_PUSH: 2}, h2.PROTOCOL_ERROR)]
        for settings, code in cases:
            with self.subTest(settings):
                c = self.h2conn(peer)
                c.send_settings(settings)
                self.assertConnectionError(c, (code,), f"SETTINGS {settings}")
        c = self.h2conn(peer)
        c.send(h2.frame(h2.SETTINGS, 0, 0, b"\0\0\0"))
        self.assertConnectionError(c, (h2.FRAME_SIZE_ERROR,), "a 3-byte SETTINGS frame")

    def test_server_respects_the_stream_window(self):
        """§5.2/§6.9: never more DATA than the window the client gave; more after WINDOW_UPDATE;
        all of it once the window is opened."""
        peer = self.peer()
        c = self.h2conn(peer, settings={h2.INITIAL_WINDOW_SIZE: 1000}, auto_window_update=False)
        sid = c.request("GET", "/big.bin")
        st = c.streams[sid]
        c.read_until(lambda: len(st.body) >= 1000 or st.done, 5)
        c.is_quiet_for(0.5)  # anything more would be a violation: give it the time to come
        self.assertEqual(st.status, 200, st)
        self.assertLessEqual(len(st.body), 1000, "DATA beyond the stream window")
        self.assertGreater(len(st.body), 0, "nothing sent within a 1000-byte window")
        c.send_window_update(sid, 5000)
        c.read_until(lambda: len(st.body) >= 6000 or st.done, 5)
        c.is_quiet_for(0.3)
        self.assertLessEqual(len(st.body), 6000, "DATA beyond the window after WINDOW_UPDATE 5000")
        self.assertGreater(len(st.body), 1000, "WINDOW_UPDATE brought nothing")
        # Open both windows fully: the rest arrives.
        c.auto_window_update = True
        c.send_window_update(0, h2.MAX_WINDOW - 65535)
        c.send_window_update(sid, h2.MAX_WINDOW - 6000)
        r = c.response(sid, 20)
        self.assertTrue(r.ended, c.summary())
        if peer.trellis:
            self.assertEqual(bytes(r.body), (peer.server.www / "big.bin").read_bytes())
        else:
            self.assertGreaterEqual(len(r.body), BIG_SIZE)

    def test_server_respects_the_connection_window(self):
        """The connection window (65535, only WINDOW_UPDATE on stream 0 opens it) bounds the sum
        over streams whatever their own windows."""
        peer = self.peer()
        c = self.h2conn(peer, settings={h2.INITIAL_WINDOW_SIZE: 4 * 1024 * 1024},
                    auto_window_update=False)
        a, b = c.request("GET", "/big.bin"), c.request("GET", "/big.bin")
        c.read_until(lambda: c.data_bytes_received >= 65535, 5)
        c.is_quiet_for(0.5)
        self.assertLessEqual(c.data_bytes_received, 65535, "DATA beyond the connection window")
        self.assertGreater(c.data_bytes_received, 0)
        c.auto_window_update = True
        c.send_window_update(0, 2 * BIG_SIZE + 65535)
        for sid in (a, b):
            r = c.response(sid, 20)
            self.assertTrue(r.ended, c.summary())
            self.assertGreaterEqual(len(r.body), BIG_SIZE if not peer.trellis else 0)
            if peer.trellis:
                self.assertEqual(len(r.body), BIG_SIZE)

    def test_server_opens_its_window_for_a_large_upload(self):
        """The client sends only within the server's windows: the server must keep opening
        them (WINDOW_UPDATE) for a 2 MiB body to get through."""
        peer = self.peer()
        c = self.h2conn(peer)
        body = os.urandom(2 * 1024 * 1024)
        sid = c.request("POST", "/echo/up" if peer.trellis else "/hello", body=body)
        r = c.response(sid, 20)
        self.assertTrue(r.ended and r.status is not None, c.summary())
        self.assertTrue(c.frames_of(h2.WINDOW_UPDATE), "no WINDOW_UPDATE from the server")
        if peer.trellis:
            self.assertEqual(json.loads(bytes(r.body))["body"].encode("latin-1"), body)

    def test_client_overrunning_the_stream_window(self):
        """§6.9.1: a sender must not exceed the window; a receiver MUST treat it as a (stream or
        connection) FLOW_CONTROL_ERROR. Deterministic only when one DATA frame is larger than
        the server's initial stream window (trellis: initial_window_size 1000)."""
        peer = self.peer(http2={"initial_window_size": 1000})
        c = self.h2conn(peer)
        window = c.server_settings.get(h2.INITIAL_WINDOW_SIZE, 65535)
        limit = c.server_settings.get(h2.MAX_FRAME_SIZE, 16384)
        if window >= limit:
            self.skipTest(f"the server's stream window ({window}) is not below its frame size")
        self.assertTrue(c.read_until(lambda: c.settings_acks >= 1, 5))
        sid = c.request("POST", "/echo/x" if peer.trellis else "/hello", end_stream=False)
        c.send_data_frame(sid, b"a" * (window + 1), end_stream=True)
        c.read_until(lambda: c.goaway or c.eof or c.streams[sid].done, 5)
        if c.goaway is not None:
            self.assertEqual(c.goaway.error_code, h2.FLOW_CONTROL_ERROR, c.summary())
        else:
            self.assertEqual(c.rst_code(sid), h2.FLOW_CONTROL_ERROR, c.summary())

    def test_content_length_mismatch_is_protocol_error(self):
        """§8.1.1: content-length not equal to the DATA length makes the request malformed."""
        peer = self.peer()
        path = "/echo/cl" if peer.trellis else "/hello"
        for declared, sent in ((10, 5), (3, 5)):
            with self.subTest(declared=declared, sent=sent):
                c = self.h2conn(peer)
                sid = c.new_stream_id()
                c.send_headers(sid, c.request_headers("POST", path, [("content-length", str(declared))]))
                c.send_data_frame(sid, b"x" * sent, end_stream=True)
                self.assertStreamRefused(c, sid, what=f"content-length {declared}, {sent} sent",
                                         allow_goaway=True)

    @trellis_only
    def test_body_over_max_body_bytes(self):
        peer = self.peer(lim={"max_body_bytes": 1000})
        c = self.h2conn(peer)
        for declare in (True, False):
            with self.subTest(content_length=declare):
                sid = c.new_stream_id()
                hs = [("content-length", "5000")] if declare else []
                c.send_headers(sid, c.request_headers("POST", "/echo/big", hs))
                try:
                    c.send_body(sid, b"y" * 5000, timeout=5)
                except h2.ConnectionGone:
                    pass
                r = c.response(sid, 5)
                self.assertTrue(r.status == 413 or r.reset_code is not None, f"{r!r} {c.summary()}")
                self.assertIsNone(c.goaway, c.summary())
        self.assertEqual(c.response(c.request("GET", "/hello"), 5).status, 200, c.summary())

    def test_stream_limit_refuses_extra_streams_and_serves_the_others(self):
        """§5.1.2: HEADERS past SETTINGS_MAX_CONCURRENT_STREAMS → RST_STREAM PROTOCOL_ERROR or
        REFUSED_STREAM; the streams already open complete. Streams are held open by requests
        whose bodies are not finished (trellis: max_concurrent_streams 4). The RFC lets a server
        make it a connection error instead (§5.4.1; libnghttp2 1.52 does, GOAWAY
        PROTOCOL_ERROR, once its SETTINGS are acknowledged): accepted from an external peer only,
        the contract wants the stream-level refusal."""
        peer = self.peer(http2={"max_concurrent_streams": 4})
        c = self.h2conn(peer)
        limit = c.server_settings.get(h2.MAX_CONCURRENT_STREAMS)
        self.assertIsNotNone(limit, "the server advertises no stream limit")
        if peer.trellis:
            self.assertEqual(limit, 4)
        self.assertLessEqual(limit, 1000, "too many streams to hold open for this test")
        self.assertTrue(c.read_until(lambda: c.settings_acks >= 1, 5))
        path = "/echo/held" if peer.trellis else "/hello"
        held = [c.request("POST", path, end_stream=False) for _ in range(limit)]
        extra = [c.request("GET", "/hello") for _ in range(3) if c.try_send(b"")]
        if not peer.trellis:
            c.read_until(lambda: c.goaway or c.streams[extra[0]].done, 5)
            if c.goaway is not None:
                self.assertEqual(c.goaway.error_code, h2.PROTOCOL_ERROR, c.summary())
                self.skipTest(f"the peer made it a connection error: {c.goaway}")
        for sid in extra:
            self.assertStreamRefused(c, sid, codes=(h2.REFUSED_STREAM, h2.PROTOCOL_ERROR),
                                     statuses=(), what=f"stream {sid} over the limit of {limit}")
        self.assertIsNone(c.goaway, c.summary())
        for sid in held:
            c.send_data_frame(sid, b"done", end_stream=True)
        for sid in held:
            r = c.response(sid, 10)
            self.assertTrue(r.ended and r.status is not None, f"held stream {sid}: {r!r}")
            if peer.trellis:
                self.assertEqual(r.status, 200)
        # and new streams are accepted again
        self.assertEqual(c.response(c.request("GET", "/hello"), 5).status, 200, c.summary())


# ============================================================================================
# Attacks (raw frames; also against H2_TEST_EXTERNAL)
# ============================================================================================

FLOOD_LIMITS = {"send_timeout_ms": 1500, "max_header_bytes": 16384}


class Attacks(H2Case):
    def flood_peer(self, **kw):
        return self.peer(lim=dict(FLOOD_LIMITS, **kw.pop("lim", {})), **kw)

    def assertCalmedDown(self, c: H2Conn, what: str, timeout: float = 8.0,
                         codes=(h2.ENHANCE_YOUR_CALM,)):
        """GOAWAY ENHANCE_YOUR_CALM (or one of codes), or the connection closed (RST or FIN)."""
        c.wait_goaway_or_close(timeout)
        if c.goaway is not None:
            self.assertIn(c.goaway.error_code, codes,
                          f"{what}: GOAWAY {h2.error_name(c.goaway.error_code)}; {c.summary()}")
        else:
            self.assertTrue(c.eof, f"{what}: the connection is still open and calm; {c.summary()}")

    def test_rapid_reset(self):
        """CVE-2023-44487: HEADERS + RST_STREAM, 2000 times → GOAWAY with an error or close;
        another client is served afterwards. 2000, not 1000: libnghttp2's own limiter (Debian's
        1.52 backport, as upstream 1.57) allows a burst of 1000 and then sends GOAWAY
        INTERNAL_ERROR, which is accepted next to ENHANCE_YOUR_CALM."""
        peer = self.flood_peer()
        c = self.h2conn(peer, max_recorded_frames=5000)
        unit_hs = c.request_headers("GET", "/hello")
        sent = 0
        for batch in range(20):
            out = bytearray()
            for _ in range(100):
                sid = c.new_stream_id()
                out += h2.frame(h2.HEADERS, h2.END_STREAM | h2.END_HEADERS, sid,
                                h2.encode_headers(unit_hs))
                out += h2.frame(h2.RST_STREAM, 0, sid, (h2.CANCEL).to_bytes(4, "big"))
            if not c.try_send(bytes(out)):
                break
            sent += 100
            c._poll_nonblocking()
            if c.goaway is not None or c.eof:
                break
        self.assertCalmedDown(c, f"rapid reset ({sent} streams opened and reset)",
                              codes=(h2.ENHANCE_YOUR_CALM, h2.INTERNAL_ERROR))
        self.assertServes(peer)

    def continuation_flood(self, frame_size: int, max_frames: int):
        peer = self.flood_peer()
        c = self.h2conn(peer)
        limit = c.server_settings.get(h2.MAX_HEADER_LIST_SIZE) or 16384
        sid = c.new_stream_id()
        c.send_headers(sid, c.request_headers("GET", "/hello"), end_headers=False)
        filler = b""
        i = 0
        while len(filler) < frame_size:
            filler += h2.literal(f"x-{i}", "v" * 40)
            i += 1
        frames = 0
        while frames < max_frames:
            # whole header fields only, so that a decoder never sees a cut field
            payload = filler if frame_size else b""
            if not c.try_send(h2.frame(h2.CONTINUATION, 0, sid, payload)):
                break
            frames += 1
            if frames % (1 if frame_size else 500) == 0:
                c.read_until(lambda: c.goaway or c.eof, 0.02 if frame_size else 0.001)
                if c.goaway is not None or c.eof:
                    break
        c.wait_goaway_or_close(5)
        return c, frames, limit

    def test_continuation_flood_large_frames(self):
        """CVE-2024-27316 style: HEADERS without END_HEADERS, then CONTINUATIONs full of header
        fields: GOAWAY (any code) or close, well before the block is a few times the limit."""
        c, frames, limit = self.continuation_flood(4096, 2048)
        self.assertTrue(c.goaway is not None or c.eof, f"{frames} CONTINUATION frames of 4 KiB "
                                                       f"and the connection is still open")
        sent_kb = frames * 4
        self.assertLessEqual(frames * 4096, max(limit, 16384) * 8,
                             f"the server ended it only after {sent_kb} KiB of header block "
                             f"(limit {limit})")

    def test_continuation_flood_empty_frames(self):
        """CVE-2024-28182 style: empty CONTINUATION frames cost the server work but no bytes of
        header list: they must end the connection too."""
        c, frames, _ = self.continuation_flood(0, 100000)
        self.assertTrue(c.goaway is not None or c.eof,
                        f"{frames} empty CONTINUATION frames and the connection is still open")

    def test_hpack_bomb(self):
        """A 4000-byte header put into the dynamic table once, then referenced 4000 times per
        request (4 KB on the wire, 16 MB decoded): refused (431, RST_STREAM or GOAWAY), never
        served, and the server stays up."""
        peer = self.flood_peer()
        c = self.h2conn(peer)
        table = c.server_settings.get(h2.HEADER_TABLE_SIZE, 4096)
        value = "b" * (min(table, 4096) - 32 - len("x-bomb") - 64)
        sid = c.new_stream_id()
        block = h2.encode_headers(c.request_headers("GET", "/hello")) + h2.literal("x-bomb", value, indexing=True)
        c.send_headers(sid, None, end_stream=True, block=block)
        first = c.response(sid, 5)  # a 4 KB header: fine
        self.assertEqual(first.status, 200, f"{first!r} {c.summary()}")
        refused = 0
        for _ in range(20):
            if c.goaway is not None or c.eof:
                break
            sid = c.new_stream_id()
            block = h2.encode_headers(c.request_headers("GET", "/hello")) + b"\xbe" * 4000
            if not c.try_send(h2.frame(h2.HEADERS, h2.END_STREAM | h2.END_HEADERS, sid, block)):
                break
            r = c.response(sid, 5)
            self.assertFalse(r.status is not None and r.status < 400,
                             f"an HPACK bomb of {len(value) * 4000 >> 20} MB was served: {r!r}")
            if r.status is not None or r.reset_code is not None:
                refused += 1
        self.assertTrue(refused or c.goaway is not None or c.eof, c.summary())
        self.assertServes(peer)
        if peer.trellis:
            self.assertTrue(peer.server.running())

    def control_flood(self, unit: bytes, count: int, what: str):
        peer = self.flood_peer()
        c = self.h2conn(peer, rcvbuf=4096, max_recorded_frames=2000)
        sent, why = h2.flood(c, unit, count, max_seconds=15)
        self.assertCalmedDown(c, f"{what}: {sent} sent ({why})", timeout=10)
        self.assertServes(peer)

    def test_settings_flood(self):
        """CVE-2019-9515: SETTINGS frames without reading the ACKs."""
        self.control_flood(h2.frame(h2.SETTINGS, 0, 0), 1_000_000, "SETTINGS flood")

    def test_ping_flood(self):
        """CVE-2019-9512: PINGs without reading the ACKs."""
        self.control_flood(h2.frame(h2.PING, 0, 0, b"12345678"), 600_000, "PING flood")

    def test_empty_data_flood(self):
        """CVE-2019-9518: empty DATA frames (no END_STREAM) on an open stream."""
        peer = self.flood_peer()
        c = self.h2conn(peer)
        sid = c.request("POST", "/echo/x" if peer.trellis else "/hello", end_stream=False)
        sent, why = h2.flood(c, h2.frame(h2.DATA, 0, sid), 200_000, max_seconds=15)
        self.assertCalmedDown(c, f"empty DATA flood: {sent} sent ({why})")
        self.assertServes(peer)

    def test_reset_flood_by_the_server_is_bounded(self):
        """CVE-2019-9514: streams the server must reset (malformed HEADERS), many and fast:
        GOAWAY ENHANCE_YOUR_CALM or close (or every one answered, without the server falling
        over). The server must stay up."""
        peer = self.flood_peer()
        c = self.h2conn(peer, max_recorded_frames=5000)
        bad = h2.encode_headers([(":method", "GET"), (":path", "/hello")])  # no :scheme
        out = bytearray()
        for _ in range(5000):
            out += h2.frame(h2.HEADERS, h2.END_STREAM | h2.END_HEADERS, c.new_stream_id(), bad)
        sent, why = h2.flood(c, bytes(out), 1, max_seconds=10)
        c.wait_goaway_or_close(3)
        self.assertServes(peer)

    @trellis_only
    def test_zero_window_held_forever(self):
        """SETTINGS_INITIAL_WINDOW_SIZE 0 and a big file: after send_timeout_ms the stream or
        the connection is cut (not before), and others are served meanwhile."""
        peer = self.peer(lim={"send_timeout_ms": 1500})
        c = self.h2conn(peer, settings={h2.INITIAL_WINDOW_SIZE: 0}, auto_window_update=False)
        sid = c.request("GET", "/big.bin")
        c.read_until(lambda: c.streams[sid].status is not None, 5)
        t0 = time.monotonic()
        self.assertServes(peer)
        c.read_until(lambda: c.streams[sid].reset_code is not None or c.goaway or c.eof, 8)
        elapsed = time.monotonic() - t0
        self.assertTrue(c.streams[sid].reset_code is not None or c.goaway or c.eof,
                        f"a zero window held for 8 s was not cut; {c.summary()}")
        self.assertGreater(elapsed, 1.0, "cut well before send_timeout_ms (1500)")
        self.assertEqual(len(c.streams[sid].body), 0)

    @trellis_only
    def test_zero_connection_window_held_forever(self):
        """The connection window used up and never given back: cut after send_timeout_ms."""
        peer = self.peer(lim={"send_timeout_ms": 1500})
        c = self.h2conn(peer, settings={h2.INITIAL_WINDOW_SIZE: 4 * 1024 * 1024},
                    auto_window_update=False)
        sid = c.request("GET", "/big.bin")
        c.read_until(lambda: c.data_bytes_received >= 65535, 5)
        self.assertEqual(c.data_bytes_received, 65535)
        t0 = time.monotonic()
        c.read_until(lambda: c.streams[sid].reset_code is not None or c.goaway or c.eof, 8)
        self.assertTrue(c.streams[sid].reset_code is not None or c.goaway or c.eof, c.summary())
        self.assertGreater(time.monotonic() - t0, 1.0)

    @trellis_only
    def test_peer_that_never_reads(self):
        """Windows wide open, a 64 MiB file, and the client reads nothing: the server drops it
        after send_timeout_ms, does not buffer the file meanwhile, and serves others."""
        peer = self.peer(lim={"send_timeout_ms": 1500})
        s = peer.server
        base_sockets = socket_count(s.pid)
        c = self.h2conn(peer, rcvbuf=65536, settings={h2.INITIAL_WINDOW_SIZE: h2.MAX_WINDOW},
                    auto_window_update=False)
        c.send_window_update(0, h2.MAX_WINDOW - 65535)
        sid = c.request("GET", "/huge.bin")
        c.read_until(lambda: c.streams[sid].status is not None, 5)
        self.assertEqual(c.streams[sid].status, 200)
        t0 = time.monotonic()  # from here on the client reads nothing
        self.assertServes(peer)
        dropped = wait_for(lambda: socket_count(s.pid) <= base_sockets, 8, interval=0.05)
        elapsed = time.monotonic() - t0
        self.assertTrue(dropped, f"the server kept a non-reading client for 8 s "
                                 f"({socket_count(s.pid)} sockets, {base_sockets} before)")
        self.assertGreater(elapsed, 1.0, "dropped well before send_timeout_ms (1500)")
        c.read_until_closed(10)
        self.assertTrue(c.eof)
        self.assertLess(len(c.streams[sid].body), HUGE_SIZE // 2)
        self.assertServes(peer)


# ============================================================================================
# Per-stream limits and idle connections (trellis)
# ============================================================================================

@trellis_only
class Limits(H2Case):
    def test_headers_over_max_header_bytes(self):
        s = self.h2_server(lim={"max_header_bytes": 4096})
        c = self.h2conn(s)
        sid = c.request("GET", "/hello", [("x-big", "a" * 8000)])
        r = c.response(sid, 5)
        self.assertTrue(r.status == 431 or r.reset_code is not None, f"{r!r} {c.summary()}")
        self.assertIsNone(c.goaway, c.summary())
        self.assertEqual(c.response(c.request("GET", "/hello", [("x-ok", "a" * 1000)]), 5).status, 200)

    def test_idle_connection_lives_past_header_timeout_until_keepalive(self):
        s = self.h2_server(lim={"header_timeout_ms": 300, "header_read_timeout_ms": 300,
                                "keepalive_timeout_ms": 2000})
        c = self.h2conn(s)
        self.assertFalse(c.read_until(lambda: c.goaway or c.eof, 1.0),
                         f"an idle h2 connection was closed before keepalive_timeout_ms: {c.summary()}")
        self.assertEqual(c.response(c.request("GET", "/hello"), 5).status, 200)
        t0 = time.monotonic()
        self.assertFalse(c.read_until(lambda: c.goaway or c.eof, 1.0), c.summary())
        self.assertTrue(c.read_until(lambda: c.eof, 4), f"not closed after keepalive: {c.summary()}")
        self.assertGreater(time.monotonic() - t0, 1.5)
        if c.goaway is not None:
            self.assertEqual(c.goaway.error_code, h2.NO_ERROR, c.summary())


# ============================================================================================
# Graceful shutdown and reload (trellis)
# ============================================================================================

@trellis_only
class Graceful(H2Case):
    def held_request(self, s, ms=1500):
        c = self.h2conn(s)
        sid = c.request("GET", f"/delay?ms={ms}")
        self.assertTrue(wait_for(lambda: s.get("/delay/stats").json()["pending"] >= 1, 5),
                        "the delay plugin never held the request")
        return c, sid

    def test_sigterm_sends_goaway_and_finishes_open_streams(self):
        s = self.h2_server(delay=True, lim={"shutdown_timeout_ms": 10000})
        c, sid = self.held_request(s)
        s.send_signal(signal.SIGTERM)
        self.assertTrue(c.read_until(lambda: c.goaway is not None, 5), c.summary())
        self.assertEqual(c.goaway.error_code, h2.NO_ERROR)
        self.assertGreaterEqual(c.goaway.last_stream_id, sid)
        r = c.response(sid, 5)
        self.assertEqual((r.status, bytes(r.body)), (200, b"waited 1500 ms\n"), c.summary())
        self.assertTrue(c.read_until_closed(5), "the connection stayed open after GOAWAY and the "
                                                "last stream")
        self.assertEqual(s.wait_exit(10), 0)

    def test_sighup_sends_goaway_and_finishes_open_streams(self):
        s = self.h2_server(delay=True)
        c, sid = self.held_request(s)
        ok, line, _ = s.reload()
        self.assertTrue(ok, line)
        self.assertTrue(c.read_until(lambda: c.goaway is not None, 5), c.summary())
        self.assertEqual(c.goaway.error_code, h2.NO_ERROR)
        self.assertGreaterEqual(c.goaway.last_stream_id, sid)
        r = c.response(sid, 5)
        self.assertEqual((r.status, bytes(r.body)), (200, b"waited 1500 ms\n"), c.summary())
        self.assertServes(s)


if __name__ == "__main__":
    harness.main()
