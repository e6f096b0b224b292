"""Tier 95: the default site and the live dashboard in a real browser (issue 14).

Debian's `chromium`, headless, driven over the Chrome DevTools Protocol (tests/integration/cdp.py:
a minimal RFC 6455 client, since Debian 12's python3-websockets 10.4 has no synchronous one),
against the real binary in the default configuration (the repository's server.json: its plugins,
with their relative roots made absolute so the site is the repository's www/, its routes, /status
and /dashboard among them) behind the test's own listener: TLS with the suite's localhost
certificate, HTTP/2 on (the default).

- the front page: the whole page is scrolled through (lazy images load); every request answers
  200 with the Content-Type of its kind, nothing comes from another origin, everything comes
  over h2, the connection is "secure" (the test CA trusted, nothing ignored), hashed asset names
  get a year of Cache-Control, every <img> loaded, and there is no console error (console.error,
  an uncaught exception, or a browser log entry of level error); screenshot
  BUILD_DIR/screenshots/front-page.png (1280x900);
- the 404 page: status 404, text/html, the site's stylesheet, no other error;
- the dashboard (the DOM contract of issue 14): it polls (document.body.dataset.polls grows, no
  dataset.error), has every data-metric element and svg chart, and draws the open connections by
  transport and protocol (svg#chart-conn-kinds: plain, tls, h1, h2 series); then wrk drives 3 s of
  traffic to /hello and the numbers follow: [data-metric="requests-total"] and the /hello row's
  request count in #routes grow by at least what wrk sent, [data-metric="rps"] shows a rate of at
  least a tenth of wrk's, svg#chart-rps's scale (data-max) rises above the idle one and its
  highest point (data-peak) reaches a tenth of wrk's rate, the /hello row has a p50 and a drawn
  percentile bar (svg.lat); then SIGHUP reloads the server and the page shows it:
  [data-metric="reloads"] 1, generation 2, a reload marker (g.marker.reload) on svg#chart-rps;
  screenshot BUILD_DIR/screenshots/dashboard.png; and it polls over HTTP/1.1 too (chromium
  --disable-http2);
- the access restriction, with curl: /status (the status plugin is private) and /dashboard (its
  route's "allow") answer 403 ("403 Forbidden", the server's own error body) to a client that is not loopback (a trusted proxy's
  X-Forwarded-For naming 203.0.113.7), HEAD included, the front page does not; an X-Forwarded-For
  that cannot be read ("unknown") on a restricted route is refused (fail closed), not taken as
  the loopback peer; a route's "allow" opens it to the addresses listed, and only to them.

Chromium trusts the suite's test CA the way a user would: the CA is added with `certutil` (Debian
libnss3-tools) to the NSS database in $HOME/.pki/nssdb, HOME being a temp dir of the test, which
Chromium on Linux reads for locally trusted roots. No --ignore-certificate-errors of any kind: a
certificate the browser did not trust would fail the navigation.

The "_tls" in the name: ctest runs this file once, in the tls pass (it makes its own TLS
listeners). The browser tests are skipped, with a message, only where no `chromium` is installed
(./dev.sh installs it); the access tests need only curl and always run. About 15 s.
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import unittest
from pathlib import Path
from urllib.parse import urlsplit

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (BUILD_DIR, LOOPBACK, PLUGIN_DIR, SOURCE_DIR, TrellisTestCase,  # noqa: E402
                     curl, suite_pki, tls_settings, wait_for)
from cdp import CDP, Page  # noqa: E402

CHROMIUM = shutil.which("chromium")
CERTUTIL = shutil.which("certutil")
WRK = shutil.which("wrk")
needs_chromium = unittest.skipIf(
    CHROMIUM is None,
    "Debian's chromium is not installed (apt-get install chromium libnss3-tools, or ./dev.sh): "
    "the browser checks of the site and the dashboard cannot run")

WWW = SOURCE_DIR / "www"
SCREENSHOTS = BUILD_DIR / "screenshots"
VIEWPORT = (1280, 900)
OUTSIDER = "203.0.113.7"  # TEST-NET-3: a client that is not loopback, named by a trusted proxy
# The flags, plus --disable-dev-shm-usage: containers often give /dev/shm 64 MB, too
# little for Chromium's shared memory, which then crashes renderers; /tmp is used instead.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-dev-shm-usage"]

# What each kind of file must be served as (media type, before any parameter).
JS_TYPES = ("application/javascript", "text/javascript")
TYPES_BY_EXTENSION = {
    ".html": ("text/html",), ".htm": ("text/html",), ".css": ("text/css",),
    ".js": JS_TYPES, ".mjs": JS_TYPES, ".svg": ("image/svg+xml",), ".png": ("image/png",),
    ".jpg": ("image/jpeg",), ".jpeg": ("image/jpeg",), ".gif": ("image/gif",),
    ".webp": ("image/webp",), ".avif": ("image/avif",),
    ".ico": ("image/x-icon", "image/vnd.microsoft.icon"), ".woff2": ("font/woff2",),
    ".woff": ("font/woff",), ".ttf": ("font/ttf",), ".otf": ("font/otf",),
    ".json": ("application/json",), ".webmanifest": ("application/manifest+json",),
    ".txt": ("text/plain",), ".xml": ("application/xml", "text/xml"),
    ".wasm": ("application/wasm",),
}
TYPES_BY_RESOURCE = {"Document": ("text/html",), "Stylesheet": ("text/css",), "Script": JS_TYPES,
                     "Manifest": ("application/manifest+json", "application/json")}
# A file name carrying a content hash (style.3f9c2a1b.css, app-5d41402abc4b2a76.js): served with a
# long-lived Cache-Control (a year, as the default configuration's /assets/ rule).
HASHED_NAME_RE = re.compile(r"[.\-_][0-9a-f]{8,}\.[a-z0-9]+$")
YEAR = 31536000

# The dashboard's DOM contract (the elements the page must have; the test reads some of them).
DASHBOARD_METRICS = ["requests-total", "rps", "connections-open", "connections-idle",
                     "connections-plain", "connections-tls", "connections-h2", "responses-1xx",
                     "responses-2xx", "responses-3xx", "responses-4xx", "responses-5xx",
                     "pool-queued", "pool-busy", "reloads", "generation", "uptime"]
DASHBOARD_CHARTS = ["chart-rps", "chart-connections", "chart-conn-kinds", "chart-workers",
                    "chart-status", "chart-pool"]
# The series of svg#chart-conn-kinds: open connections by transport and by protocol.
CONNECTION_KINDS = ["plain", "tls", "h1", "h2"]


def default_config(listen: dict | None = None, allow: dict | None = None,
                   workers: int = 2) -> dict:
    """The repository's server.json (the default configuration: its plugins, with relative
    roots made absolute under the repository, so the site is the repository's www/; its routes;
    its health endpoint) with the test's own listener: TLS on 127.0.0.1, an ephemeral port, the
    suite's localhost certificate, HTTP/2 on (the default). listen: more keys for the listener;
    allow: {route prefix: its "allow" list} replacing or adding the routes' allow-lists."""
    default = json.loads((SOURCE_DIR / "server.json").read_text())
    plugins = []
    for p in default.get("plugins", []):
        p = json.loads(json.dumps(p))
        root = (p.get("config") or {}).get("root")
        if isinstance(root, str) and not os.path.isabs(root):
            p["config"]["root"] = str(SOURCE_DIR / root)
        plugins.append(p)
    routes = json.loads(json.dumps(default.get("routes", [])))
    prefixes = [r.get("prefix") for r in routes]
    for needed in ("/status", "/dashboard"):
        if needed not in prefixes:
            raise AssertionError(f"server.json routes nothing to {needed}: {routes}")
    for prefix, addresses in (allow or {}).items():
        for r in routes:
            if r.get("prefix") == prefix:
                r["allow"] = list(addresses)
    cfg = {k: v for k, v in default.items() if k not in ("listen", "tls", "plugin_dir", "workers",
                                                         "access_log", "log_level")}
    cfg.update({
        "workers": workers,
        "plugin_dir": str(PLUGIN_DIR),
        "listen": [dict({"address": LOOPBACK, "port": 0, "transport": "tls"}, **(listen or {}))],
        "tls": tls_settings(),
        "plugins": plugins,
        "routes": routes,
        "access_log": "off",
        "log_level": "info",
    })
    return cfg


def number(text) -> float | None:
    """A metric's textContent as a number ("1,234" -> 1234.0); None if there is none."""
    if text is None:
        return None
    digits = re.sub(r"[^0-9.]", "", str(text))
    try:
        return float(digits) if digits else None
    except ValueError:
        return None


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise AssertionError(f"not a PNG: {data[:24]!r}")
    return struct.unpack("!II", data[16:24])


# --------------------------------------------------------------------------------------------
# Chromium
# --------------------------------------------------------------------------------------------

class Chromium:
    """Headless chromium with a fresh profile and HOME in dir, the test CA trusted in
    HOME/.pki/nssdb, its DevTools endpoint on an ephemeral loopback port (read from
    DevToolsActivePort in the profile), and the CDP connection to it."""

    START_TIMEOUT = 30.0

    def __init__(self, dir: Path, ca_cert: Path, extra_flags: tuple = ()):
        self.dir = Path(dir)
        self.home = self.dir / "home"
        self.profile = self.dir / "profile"
        self.stderr_path = self.dir / "chromium.stderr"
        self.proc = None
        self.cdp = None
        self.profile.mkdir(parents=True)
        nssdb = self.home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True)
        self._certutil("-N", "-d", f"sql:{nssdb}", "--empty-password")
        # "C,,": a trusted CA for issuing server certificates (TLS), nothing else.
        self._certutil("-A", "-d", f"sql:{nssdb}", "-n", "Trellis Test CA", "-t", "C,,",
                       "-i", str(ca_cert))
        listed = self._certutil("-L", "-d", f"sql:{nssdb}")
        if "Trellis Test CA" not in listed:
            raise AssertionError(f"the test CA is not in the NSS database:\n{listed}")
        env = dict(os.environ, HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"),
                   XDG_CACHE_HOME=str(self.home / ".cache"))
        self._err = open(self.stderr_path, "wb")
        # A session of its own: chromium's helpers (zygote, renderer, GPU and network processes)
        # are in the process group of the pid started here, so cleanup can end exactly them.
        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "--hide-scrollbars",
             # localhost is 127.0.0.1 only: the server listens there, not on ::1.
             "--host-resolver-rules=MAP localhost 127.0.0.1", *extra_flags, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err, env=env,
            start_new_session=True, preexec_fn=harness._die_with_parent)
        try:
            self.cdp = CDP(self._wait_endpoint())
        except BaseException:
            self.close()
            raise

    def _wait_endpoint(self) -> str:
        active = self.profile / "DevToolsActivePort"

        def endpoint():
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode} before its "
                                     f"DevTools endpoint was up:\n{self.stderr_text()}")
            try:
                lines = active.read_text().split("\n")
            except FileNotFoundError:
                return None
            if len(lines) < 2 or not lines[0].strip().isdigit() or not lines[1].startswith("/"):
                return None  # being written
            return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        url = wait_for(endpoint, self.START_TIMEOUT, 0.05)
        if url is None:
            raise AssertionError(f"no DevToolsActivePort from chromium within "
                                 f"{self.START_TIMEOUT}s:\n{self.stderr_text()}")
        return url

    def _certutil(self, *args: str) -> str:
        p = subprocess.run([CERTUTIL, *args], capture_output=True, timeout=30)
        if p.returncode != 0:
            raise AssertionError(f"certutil {' '.join(args)} failed ({p.returncode}):\n"
                                 + (p.stdout + p.stderr).decode(errors="replace"))
        return p.stdout.decode(errors="replace")

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_bytes().decode(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def page(self) -> Page:
        """A new tab with the 1280x900 viewport, Page/Network/Runtime/Log events on."""
        page = Page(self.cdp)
        for domain in ("Page", "Network", "Runtime", "Log"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1,
                   "mobile": False})
        return page

    def close(self) -> None:
        """Browser.close; the pid started here killed if it does not exit within 10 s; then what
        is left of its process group (helpers), killed while the exited leader is still a zombie
        (not reaped, so its pid, the group's id, cannot have been reused); then reaped."""
        asked = False
        if self.cdp is not None:
            try:
                self.cdp.send("Browser.close", timeout=5)
                asked = True
            except Exception:  # noqa: BLE001 - it may be gone already; the kill below decides
                pass
            self.cdp.close()
            self.cdp = None
        if self.proc is not None:
            pid = self.proc.pid
            if self.proc.returncode is None:
                if not asked or wait_for(lambda: self._exited_unreaped(pid), 10.0, 0.05) is None:
                    os.kill(pid, signal.SIGKILL)
                    wait_for(lambda: self._exited_unreaped(pid), 5.0, 0.02)
                try:
                    os.killpg(pid, signal.SIGKILL)  # leftover helpers of this chromium only
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if not self._err.closed:
            self._err.close()

    @staticmethod
    def _exited_unreaped(pid: int) -> bool:
        """True once pid has exited, leaving it a zombie (WNOWAIT: Popen reaps it later)."""
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True


# --------------------------------------------------------------------------------------------
# One page load, as the Network/Runtime/Log events tell it
# --------------------------------------------------------------------------------------------

class Load:
    def __init__(self, page: Page, since: int, url: str):
        self.page = page
        self.since = since
        self.url = url

    def events(self, method: str | None = None):
        return self.page.events_since(self.since, method)

    def requests(self) -> dict:
        """requestId -> {url, type, response, failed, finished} for the http(s) requests."""
        out: dict[str, dict] = {}
        for method, p in self.events():
            rid = p.get("requestId")
            if method == "Network.requestWillBeSent":
                url = p["request"]["url"]
                if urlsplit(url).scheme in ("http", "https"):
                    r = out.setdefault(rid, {"url": url, "type": p.get("type"), "response": None,
                                             "failed": None, "finished": False})
                    r["url"] = url  # a redirect reuses the id: the last URL counts
            elif rid in out:
                if method == "Network.responseReceived":
                    out[rid]["response"] = p["response"]
                    out[rid]["type"] = p.get("type") or out[rid]["type"]
                elif method == "Network.loadingFinished":
                    out[rid]["finished"] = True
                elif method == "Network.loadingFailed":
                    out[rid]["failed"] = p
        return out

    def console_errors(self) -> list[str]:
        errors = []
        for method, p in self.events():
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = [a.get("value", a.get("description", a.get("type"))) for a in p.get("args", [])]
                errors.append(f"console.{p['type']}: {args}")
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                what = d.get("exception", {}).get("description") or d.get("text")
                errors.append(f"uncaught exception: {what} at {d.get('url')}:{d.get('lineNumber')}")
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                errors.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}")
        return errors


def navigate(page: Page, url: str, timeout: float = 30.0) -> Load:
    """Navigates and waits (bounded) for the load event and then for the network to be idle: no
    request in flight for 0.5 s."""
    since = page.mark()
    r = page.send("Page.navigate", {"url": url}, timeout)
    if r.get("errorText"):
        raise AssertionError(f"navigation to {url} failed: {r['errorText']}")
    if page.wait_event("Page.loadEventFired", since, timeout=timeout) is None:
        raise AssertionError(f"no load event for {url} within {timeout}s")
    load = Load(page, since, url)
    wait_network_idle(load, timeout)
    return load


def wait_network_idle(load: Load, timeout: float = 30.0) -> None:
    """Waits (bounded) until no request of the load is in flight and no event came for 0.5 s."""
    page = load.page
    state = {"events": -1, "quiet_since": time.monotonic()}

    def in_flight():
        return [r["url"] for r in load.requests().values() if not r["finished"] and not r["failed"]]

    def idle():
        page.pump(0.05)
        n = len(load.events())
        if n != state["events"]:
            state["events"], state["quiet_since"] = n, time.monotonic()
        return not in_flight() and time.monotonic() - state["quiet_since"] >= 0.5
    if not wait_for(idle, timeout, 0.0):
        raise AssertionError(f"{load.url}: the network did not go idle within {timeout}s; "
                             f"in flight: {in_flight()}")


# Scrolls down half a viewport at a time, two animation frames per step, so that lazily loaded
# images (loading="lazy") are all requested. "instant": a page's scroll-behavior: smooth would
# make each scrollTo an animation.
SCROLL_THROUGH_JS = """(async () => {
    const frame = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    for (let y = 0; y < document.documentElement.scrollHeight; y += innerHeight / 2) {
        scrollTo({top: y, behavior: "instant"});
        await frame();
    }
    scrollTo({top: document.documentElement.scrollHeight, behavior: "instant"});
    await frame();
    return document.documentElement.scrollHeight;
})()"""
SCROLL_TOP_JS = """(async () => {
    scrollTo({top: 0, behavior: "instant"});
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    return scrollY;
})()"""
BROKEN_IMAGES_JS = ("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                    ".map(i => i.currentSrc || i.src)")


def scroll_through(load: Load) -> None:
    """Scrolls the whole page (lazy images load), waits for the network, returns to the top."""
    load.page.evaluate(SCROLL_THROUGH_JS, timeout=30)
    wait_network_idle(load)
    if not wait_for(lambda: load.page.evaluate(SCROLL_TOP_JS) == 0, 10.0):
        raise AssertionError(f"{load.url}: could not scroll back to the top")


def screenshot(page: Page, name: str) -> Path:
    data = __import__("base64").b64decode(
        page.send("Page.captureScreenshot", {"format": "png"}, timeout=30)["data"])
    width, height = png_size(data)
    if (width, height) != VIEWPORT:
        raise AssertionError(f"screenshot {name}: {width}x{height}, expected {VIEWPORT}")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    path.write_bytes(data)
    return path


DASHBOARD_STATE_JS = """(() => {
    const q = s => document.querySelector(s);
    const text = n => { const e = q(`[data-metric="${n}"]`); return e ? e.textContent : null; };
    const chart = q('#chart-rps');
    const cell = (tr, col) => { const c = tr.querySelector(`[data-col="${col}"]`); return c ? c.textContent : null; };
    const rows = Array.from(document.querySelectorAll('#routes tbody tr')).map(tr => {
        const bar = tr.querySelector('svg.lat');
        return {route: tr.querySelector('th') ? tr.querySelector('th').textContent : null,
                requests: cell(tr, 'requests'), p50: cell(tr, 'p50'), p90: cell(tr, 'p90'),
                p99: cell(tr, 'p99'),
                bar: bar ? {p50: bar.getAttribute('data-p50'), p90: bar.getAttribute('data-p90'),
                            p99: bar.getAttribute('data-p99'),
                            drawn: bar.querySelectorAll('rect.lat').length} : null};
    });
    const kinds = q('#chart-conn-kinds');
    return {polls: document.body.dataset.polls ?? null,
            error: document.body.dataset.error ?? null,
            total: text('requests-total'), rps: text('rps'),
            reloads: text('reloads'), generation: text('generation'),
            rpsMax: chart ? chart.getAttribute('data-max') : null,
            rpsPeak: chart ? chart.getAttribute('data-peak') : null,
            reloadMarkers: chart ? Array.from(chart.querySelectorAll('g.marker.reload')).map(
                g => ({generation: g.getAttribute('data-generation'),
                       label: g.querySelector('text') ? g.querySelector('text').textContent : null,
                       line: !!g.querySelector('line')})) : null,
            series: kinds ? Array.from(new Set(Array.from(kinds.querySelectorAll('[data-series]'))
                .map(e => e.getAttribute('data-series')))) : null,
            windowNote: q('#window-note') ? q('#window-note').textContent : null,
            rows: rows,
            routes: q('#routes') ? q('#routes').textContent : null};
})()"""


def dashboard_state(page: Page) -> dict:
    """What the dashboard shows now: polls, error, requests-total, rps, reloads and generation
    (text); svg#chart-rps's scale (data-max) and highest rate drawn (data-peak), its reload
    markers; the series drawn in svg#chart-conn-kinds; the #routes rows (route, requests,
    p50/p90/p99 text, the percentile bar's data-p50/p90/p99 and how many of its bars are drawn);
    the text of #routes."""
    return page.evaluate(DASHBOARD_STATE_JS)


def route_row(st: dict, route: str) -> dict | None:
    """The #routes row of route (its first cell's text) in a dashboard_state, or None."""
    for row in st["rows"]:
        if (row["route"] or "").strip() == route:
            return row
    return None


def polls_reached(page: Page, n: float):
    """A wait_for predicate: the dashboard's state once document.body.dataset.polls >= n; raises
    if it reports a failed poll (document.body.dataset.error)."""
    def check():
        page.pump(0.0)
        st = dashboard_state(page)
        if st["error"]:
            raise AssertionError(f"the dashboard reports a failed poll: {st['error']!r}")
        return st if (number(st["polls"]) or 0) >= n else None
    return check


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------

class BrowserCase(TrellisTestCase):
    def setUp(self):
        super().setUp()
        if not WWW.is_dir():
            self.fail(f"no www/ in {SOURCE_DIR}")
        self.browser = None

    def start_browser(self, *extra_flags: str) -> Chromium:
        if CERTUTIL is None:
            self.fail("certutil not found (Debian libnss3-tools): the test CA cannot be trusted")
        self.browser = Chromium(self.tmp / "chromium", suite_pki().ca.cert, extra_flags)
        self.addCleanup(self.browser.close)
        return self.browser

    def start_site(self, **kw):
        # www={}: the server's own dir gets no files; the site's root is the repository's www/.
        return self.start_server(default_config(**kw), www={})

    def check_resources(self, load: Load, origin: str, page_name: str, protocol: str = "h2",
                        document_status: int = 200) -> dict:
        """Every request: same origin, answered 200 (the page itself: document_status) over
        `protocol` with the Content-Type of its kind, hashed names cached for a year. A request
        still in flight (the dashboard's next poll; navigate() waited for the page's own) is
        left out. Returns the requests."""
        requests = load.requests()
        self.assertTrue(requests, f"{page_name}: no request seen")
        problems = []
        for r in requests.values():
            url, resp = r["url"], r["response"]
            if not url.startswith(origin + "/"):
                problems.append(f"{url}: another origin (everything must be served locally)")
                continue
            if resp is None and r["failed"] is None:
                continue
            if r["failed"] is not None:
                f = r["failed"]
                problems.append(f"{url}: failed: {f.get('errorText')} "
                                f"{f.get('blockedReason') or ''} {f.get('corsErrorStatus') or ''}")
                continue
            if resp["status"] != (document_status if url == load.url else 200):
                problems.append(f"{url}: status {resp['status']}")
                continue
            if resp.get("protocol") != protocol:
                problems.append(f"{url}: came over {resp.get('protocol')!r}, not {protocol}")
            headers = {k.lower(): v for k, v in resp.get("headers", {}).items()}
            ctype = headers.get("content-type", "")
            media = ctype.split(";")[0].strip().lower()
            path = urlsplit(url).path
            ext = os.path.splitext(path)[1].lower()
            want = TYPES_BY_EXTENSION.get(ext)
            if want is None and (path.endswith("/") or r["type"] == "Document"):
                want = ("text/html",)
            if want is None and path.rstrip("/").endswith("/status"):
                want = ("application/json",)
            if want is None:
                want = TYPES_BY_RESOURCE.get(r["type"])
            if want is None and r["type"] == "Image":
                want = ("image/",)
            if want is None and r["type"] == "Font":
                want = ("font/",)
            if want is not None:
                if not any(media == w or (w.endswith("/") and media.startswith(w)) for w in want):
                    problems.append(f"{url} ({r['type']}): Content-Type {ctype!r}, expected {want}")
            elif not media or media == "application/octet-stream":
                problems.append(f"{url} ({r['type']}): Content-Type {ctype!r}")
            if HASHED_NAME_RE.search(path):
                cc = headers.get("cache-control", "")
                m = re.search(r"max-age=(\d+)", cc)
                if not m or int(m.group(1)) < YEAR:
                    problems.append(f"{url}: a hashed name with Cache-Control {cc!r} "
                                    f"(expected max-age of a year)")
        if problems:
            self.fail(f"{page_name}: " + "\n  ".join([""] + problems))
        return requests

    def assertNoConsoleErrors(self, load: Load, page_name: str, ignore=()):
        errors = [e for e in load.console_errors() if not any(i in e for i in ignore)]
        self.assertEqual(errors, [], f"{page_name}: console errors:\n" + "\n".join(errors))

    def document_response(self, load: Load, url: str) -> dict:
        for r in load.requests().values():
            if r["type"] == "Document" and r["url"] == url and r["response"] is not None:
                return r["response"]
        self.fail(f"no Document response for {url}")

    @needs_chromium
    def test_front_page_over_h2_every_resource_200_with_its_type_no_console_error(self):
        s = self.start_site()
        origin = f"https://localhost:{s.port}"
        page = self.start_browser().page()
        load = navigate(page, origin + "/")
        doc = self.document_response(load, origin + "/")
        self.assertEqual(doc.get("protocol"), "h2", f"the front page came over {doc.get('protocol')!r}")
        scroll_through(load)
        self.assertEqual(doc.get("securityState"), "secure",
                         f"the connection is not secure: {doc.get('securityDetails')}")
        self.assertEqual(doc.get("securityDetails", {}).get("issuer"), "Trellis Test CA")
        requests = self.check_resources(load, origin, "front page")
        kinds = {r["type"] for r in requests.values()}
        self.assertIn("Stylesheet", kinds, f"the front page loads no stylesheet: {requests}")
        title = page.evaluate("document.title")
        self.assertTrue(title and title.strip(), "the front page has no <title>")
        self.assertNoConsoleErrors(load, "front page")
        self.assertEqual(page.evaluate(BROKEN_IMAGES_JS), [], "images that did not load")
        path = screenshot(page, "front-page.png")
        sys.stderr.write(f"\nscreenshot: {path} ({len(requests)} requests: "
                         f"{sorted(urlsplit(r['url']).path for r in requests.values())})\n")

    @needs_chromium
    def test_dashboard_numbers_follow_wrk_traffic(self):
        if WRK is None:
            self.fail("wrk not found (Debian wrk, ./dev.sh installs it)")
        s = self.start_site()
        origin = f"https://localhost:{s.port}"
        page = self.start_browser().page()
        load = navigate(page, origin + "/dashboard/")
        doc = self.document_response(load, origin + "/dashboard/")
        self.assertEqual(doc.get("protocol"), "h2", f"the dashboard came over {doc.get('protocol')!r}")

        state = lambda: dashboard_state(page)  # noqa: E731
        polls_at_least = lambda n: polls_reached(page, n)  # noqa: E731

        st = wait_for(polls_at_least(2), 15.0, 0.1)
        self.assertIsNotNone(st, f"document.body.dataset.polls did not reach 2 within 15 s: {state()}")
        missing = page.evaluate(
            "(%s).filter(n => !document.querySelector(`[data-metric=\"${n}\"]`))"
            % json.dumps(DASHBOARD_METRICS))
        self.assertEqual(missing, [], "data-metric elements missing from the dashboard")
        missing = page.evaluate("(%s).filter(id => { const e = document.getElementById(id); "
                                "return !e || e.tagName.toLowerCase() !== 'svg'; })"
                                % json.dumps(DASHBOARD_CHARTS))
        self.assertEqual(missing, [], "svg charts missing from the dashboard")
        self.assertIsNotNone(st["routes"], "no #routes element (per-route latency)")
        self.assertEqual(sorted(st["series"] or []), sorted(CONNECTION_KINDS),
                         "svg#chart-conn-kinds does not draw the connections by transport and "
                         "protocol (its [data-series])")
        before = st
        total_before = number(before["total"])
        self.assertIsNotNone(total_before, f"requests-total is not a number: {before['total']!r}")
        idle_scale = number(before["rpsMax"])
        self.assertIsNotNone(idle_scale, f"svg#chart-rps has no data-max: {before['rpsMax']!r}")
        row = route_row(before, "/hello")
        self.assertIsNotNone(row, f"no /hello row in #routes before the load: {before['rows']}")
        hello_before = number(row["requests"])
        self.assertIsNotNone(hello_before, f"/hello's request count: {row!r}")

        # Traffic: wrk for 3 s over TLS (HTTP/1.1), sampling the page meanwhile.
        wrk = subprocess.Popen([WRK, "-t1", "-c4", "-d3s", f"https://{LOOPBACK}:{s.port}/hello"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               preexec_fn=harness._die_with_parent)
        self.addCleanup(lambda: wrk.poll() is None and wrk.kill())
        rps_seen = []
        deadline = time.monotonic() + 20
        while wrk.poll() is None and time.monotonic() < deadline:
            page.pump(0.0)
            rps_seen.append(number(state()["rps"]) or 0.0)
            time.sleep(0.2)  # sampling interval of the page while wrk runs (not a synchronisation)
        try:
            out = wrk.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
            out = out.decode(errors="replace")
        except subprocess.TimeoutExpired:
            wrk.kill()
            self.fail("wrk did not finish within 20 s")
        self.assertEqual(wrk.returncode, 0, f"wrk failed:\n{out}")
        m = re.search(r"(\d+) requests in", out)
        self.assertIsNotNone(m, f"no request count in wrk's output:\n{out}")
        sent = int(m.group(1))
        self.assertNotIn("Non-2xx", out, f"wrk saw errors:\n{out}")
        self.assertGreater(sent, 100, f"wrk sent almost nothing:\n{out}")
        polls_then = number(state()["polls"])

        def sample_after():
            st = polls_at_least(polls_then + 2)()
            if st is not None:
                return st
            rps_seen.append(number(state()["rps"]) or 0.0)
            return None
        after = wait_for(sample_after, 15.0, 0.1)
        self.assertIsNotNone(after, f"the dashboard did not poll twice more within 15 s: {state()}")
        rps_seen.append(number(after["rps"]) or 0.0)
        total_after = number(after["total"])
        margin = 8  # requests wrk counts that may not be in the server's total yet, and vice versa
        self.assertGreaterEqual(total_after - total_before, sent - margin,
                                f"requests-total went {before['total']!r} -> {after['total']!r} while "
                                f"wrk sent {sent}")
        rate = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
        self.assertGreater(max(rps_seen), 0, f"[data-metric=rps] never showed a rate (wrk: {rate}/s)")
        # Polled every second, the rate over an interval inside the 3 s of load is close to wrk's;
        # a tenth of it leaves room for a busy machine (2 cores for wrk, server and browser).
        self.assertGreaterEqual(max(rps_seen), rate / 10,
                                f"[data-metric=rps] peaked at {max(rps_seen)} while wrk did {rate}/s")
        # The chart follows too: its scale leaves the idle one (the page's own poll a second) and
        # its highest point is of the order of wrk's rate.
        scale, peak = number(after["rpsMax"]), number(after["rpsPeak"])
        self.assertIsNotNone(scale, f"svg#chart-rps has no data-max: {after['rpsMax']!r}")
        self.assertGreater(scale, idle_scale, f"svg#chart-rps's scale stayed at {idle_scale} "
                                              f"while wrk did {rate}/s")
        self.assertGreaterEqual(peak or 0, rate / 10,
                                f"svg#chart-rps's highest point is {after['rpsPeak']!r} while wrk did {rate}/s")
        self.assertGreaterEqual(scale, peak or 0, "the scale is below the highest point drawn")
        # The /hello row: wrk's requests counted, percentiles known and drawn.
        row = route_row(after, "/hello")
        self.assertIsNotNone(row, f"no /hello row in the per-route latency (#routes): {after['rows']}")
        hello_after = number(row["requests"])
        self.assertGreaterEqual((hello_after or 0) - hello_before, sent - margin,
                                f"/hello's requests in #routes went {hello_before} -> "
                                f"{row['requests']!r} while wrk sent {sent}")
        for p in ("p50", "p90", "p99"):
            self.assertNotIn((row[p] or "").strip(), ("", "–", "-"),
                             f"/hello's {p} after {sent} requests: {row!r}")
        bar = row["bar"]
        self.assertIsNotNone(bar, f"/hello's row has no percentile drawing (svg.lat): {row!r}")
        self.assertEqual(bar["drawn"], 3, f"/hello's percentile bar draws {bar['drawn']} of 3 bars: {row!r}")
        for p in ("p50", "p90", "p99"):
            self.assertTrue(bar[p] and (bar[p] == "Infinity" or float(bar[p]) > 0),
                            f"/hello's percentile bar has no {p}: {bar!r}")
        self.assertEqual(sorted(after["series"] or []), sorted(CONNECTION_KINDS),
                         f"svg#chart-conn-kinds series: {after['series']}")

        # A reload (SIGHUP, the same configuration): the page counts it and marks it on the chart.
        self.assertEqual(number(after["reloads"]), 0, f"reloads before SIGHUP: {after['reloads']!r}")
        self.assertEqual(after["reloadMarkers"], [], "a reload marker before any reload")
        ok, line, generation = s.reload()
        self.assertTrue(ok, f"the reload failed: {line}")

        def reload_shown():
            st = polls_reached(page, 0)()
            return st if (number(st["reloads"]) == 1 and st["reloadMarkers"]) else None
        shown = wait_for(reload_shown, 15.0, 0.1)
        self.assertIsNotNone(shown, f"the dashboard did not show the reload within 15 s: {state()}")
        self.assertEqual(number(shown["generation"]), generation, repr(shown))
        self.assertEqual(len(shown["reloadMarkers"]), 1, repr(shown["reloadMarkers"]))
        marker = shown["reloadMarkers"][0]
        self.assertEqual(marker["generation"], str(generation), repr(marker))
        self.assertTrue(marker["line"] and str(generation) in (marker["label"] or ""), repr(marker))

        self.assertNoConsoleErrors(load, "dashboard")
        self.check_resources(load, origin, "dashboard")
        path = screenshot(page, "dashboard.png")
        sys.stderr.write(f"\nscreenshot: {path} (wrk {sent} requests, {rate}/s; requests-total "
                         f"{before['total']} -> {after['total']}; /hello {hello_before:.0f} -> "
                         f"{hello_after:.0f}; rps peak {max(rps_seen)}, chart scale {idle_scale:g} -> "
                         f"{scale:g}; reload marker {marker['label']!r})\n")


    @needs_chromium
    def test_404_page_in_the_site_look(self):
        s = self.start_site()
        origin = f"https://localhost:{s.port}"
        page = self.start_browser().page()
        url = origin + "/no-such-page"
        load = navigate(page, url)
        doc = self.document_response(load, url)
        self.assertEqual(doc["status"], 404)
        self.assertEqual(doc.get("mimeType"), "text/html", f"the 404 page: {doc.get('headers')}")
        requests = self.check_resources(load, origin, "404 page", document_status=404)
        self.assertIn("Stylesheet", {r["type"] for r in requests.values()},
                      "the 404 page loads no stylesheet (it should have the site's look)")
        # The browser logs the document's own 404 as a network error; nothing else may be there.
        self.assertNoConsoleErrors(load, "404 page", ignore=(f"status of 404 (Not Found) {url}",
                                                             f"status of 404 () {url}"))

    @needs_chromium
    def test_dashboard_polls_over_http1(self):
        s = self.start_site()
        origin = f"https://localhost:{s.port}"
        page = self.start_browser("--disable-http2").page()
        load = navigate(page, origin + "/dashboard/")
        doc = self.document_response(load, origin + "/dashboard/")
        self.assertEqual(doc.get("protocol"), "http/1.1")
        st = wait_for(polls_reached(page, 2), 15.0, 0.1)
        self.assertIsNotNone(st, f"document.body.dataset.polls did not reach 2 within 15 s over "
                                 f"HTTP/1.1: {dashboard_state(page)}")
        self.assertIsNotNone(number(st["total"]), f"requests-total: {st['total']!r}")
        self.check_resources(load, origin, "dashboard over HTTP/1.1", protocol="http/1.1")
        self.assertNoConsoleErrors(load, "dashboard over HTTP/1.1")


class AccessCase(TrellisTestCase):
    """The status data and the dashboard are loopback-only by default: a client named by a trusted
    proxy (X-Forwarded-For) is not loopback. Only curl."""

    XFF = ("-H", f"X-Forwarded-For: {OUTSIDER}")

    def get(self, s, path, *args):
        return curl(f"https://localhost:{s.port}{path}", *args)

    def assertForbidden(self, r, what):
        self.assertEqual(r.status, 403, f"{what}: {r!r}")
        self.assertEqual(r.body, b"403 Forbidden\n", f"{what}: {r!r}")
        self.assertEqual((r.header("Content-Type") or "").split(";")[0], "text/plain", f"{what}: {r!r}")

    def test_asset_names_are_their_hashes(self):
        """www/assets/ is served as immutable for a year: a name must change with its content."""
        r = subprocess.run([sys.executable, str(harness.SOURCE_DIR / "tools" / "hash-assets.py"), "--check"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_status_and_dashboard_only_for_loopback_by_default(self):
        s = self.start_server(default_config(listen={"trusted_proxies": ["127.0.0.1"]}), www={})
        r = self.get(s, "/status")
        self.assertEqual(r.status, 200, f"loopback client: {r!r}")
        self.assertEqual((r.header("Content-Type") or "").split(";")[0], "application/json", repr(r))
        json.loads(r.body)
        self.assertForbidden(self.get(s, "/status", *self.XFF), f"/status from {OUTSIDER}")
        r = self.get(s, "/status", "--head", *self.XFF)  # curl writes the head where a body would go
        self.assertEqual(r.status, 403, f"HEAD /status from {OUTSIDER}: {r!r}")
        self.assertEqual((r.header("Content-Type") or "").split(";")[0], "text/plain", f"HEAD: {r!r}")
        self.assertForbidden(self.get(s, "/dashboard/", *self.XFF), f"/dashboard/ from {OUTSIDER}")
        # A proxy header that names no address cannot say who the client is: on a restricted route
        # that is a refusal, not the proxy's own (loopback) address.
        self.assertForbidden(self.get(s, "/status", "-H", "X-Forwarded-For: unknown"),
                             "/status with X-Forwarded-For: unknown from a trusted proxy")
        r = self.get(s, "/dashboard/")
        self.assertEqual(r.status, 200, f"/dashboard/ from loopback: {r!r}")
        r = self.get(s, "/", *self.XFF)
        self.assertEqual(r.status, 200, f"the front page is public: {r!r}")

    def test_allow_opens_status_to_the_listed_addresses(self):
        s = self.start_server(default_config(listen={"trusted_proxies": ["127.0.0.1"]},
                                             allow={"/status": ["0.0.0.0/0", "::/0"],
                                                    "/dashboard": ["198.51.100.0/24"]}), www={})
        r = self.get(s, "/status", *self.XFF)
        self.assertEqual(r.status, 200, f"/status with allow 0.0.0.0/0 from {OUTSIDER}: {r!r}")
        json.loads(r.body)
        # An explicit list replaces the loopback default: only 198.51.100.0/24 gets the dashboard.
        r = self.get(s, "/dashboard/", "-H", "X-Forwarded-For: 198.51.100.9")
        self.assertEqual(r.status, 200, f"/dashboard/ from an allowed address: {r!r}")
        self.assertForbidden(self.get(s, "/dashboard/", *self.XFF), f"/dashboard/ from {OUTSIDER}")
        self.assertForbidden(self.get(s, "/dashboard/"), "/dashboard/ from loopback, not in allow")


if __name__ == "__main__":
    harness.main()
