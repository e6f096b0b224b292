"""Tier 66: the status plugin (plugins/status -> status.so) and the server's counters behind it
(trellis_host.server_metrics): JSON at /status, the Prometheus text format at /metrics and
/status/metrics. Counters are summed over workers, so the server runs with two workers and the
traffic comes over many connections; every count is checked as a difference between two readings.
"""

import json
import math
import os
import re
import sys
import threading

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (FIXTURE_PLUGIN_DIR, Conn, TrellisTestCase, base_config,  # noqa: E402
                     build_request, wait_for)

HELLO = b"Hello, World!"
QUOTE_PREFIX = '/q"uote'  # a route whose label value needs escaping in both formats
THREADS, QUEUE = 3, 7


def status_config(**overrides) -> dict:
    cfg = base_config(workers=2, **overrides)
    cfg["plugins"].append({"name": "status", "path": "status"})
    cfg["routes"][0:0] = [
        {"prefix": "/status", "plugin": "status"},
        {"prefix": "/metrics", "plugin": "status"},
        {"prefix": QUOTE_PREFIX, "plugin": "hello"},
    ]
    cfg["thread_pool"] = {"threads": THREADS, "queue": QUEUE}
    return cfg


# --------------------------------------------------------------------------------------------
# The Prometheus text exposition format 0.0.4, checked line by line
# --------------------------------------------------------------------------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'  # escapes: \\ \" \n only
LABEL = rf"{LABEL_NAME}={LABEL_VALUE}"
VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)"
SAMPLE_RE = re.compile(
    rf"^(?P<name>{METRIC_NAME})(?:\{{(?P<labels>(?:{LABEL}(?:,{LABEL})*,?)?)\}})? "
    rf"(?P<value>{VALUE})(?: (?P<ts>-?\d+))?$")
HELP_RE = re.compile(rf"^# HELP (?P<name>{METRIC_NAME})(?: (?P<text>(?:[^\\\n]|\\[\\n])*))?$")
TYPE_RE = re.compile(rf"^# TYPE (?P<name>{METRIC_NAME}) (?P<type>counter|gauge|histogram|summary|untyped)$")
LABEL_RE = re.compile(rf"({LABEL_NAME})=({LABEL_VALUE})")


def unescape_label(quoted: str) -> str:
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), quoted[1:-1])


class Exposition:
    """A parsed and validated exposition. Raises AssertionError naming the line on any
    violation of the grammar or of the format's rules (one TYPE per family, before its samples;
    a family's lines together; no repeated series; histogram buckets cumulative up to le="+Inf",
    which equals _count)."""

    def __init__(self, text: str):
        self.text = text
        self.samples: list[tuple[str, dict, float, str]] = []
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}
        if text and not text.endswith("\n"):
            raise AssertionError("the exposition does not end with a line feed")
        seen_series = set()
        finished_families = set()
        current_family = None
        for number, line in enumerate(text.split("\n")[:-1], 1):
            where = f"line {number}: {line!r}"
            if line == "":
                continue
            if line.startswith("#"):
                m = TYPE_RE.match(line)
                if line.startswith("# TYPE"):
                    if not m:
                        raise AssertionError(f"bad TYPE {where}")
                    name = m.group("name")
                    if name in self.types:
                        raise AssertionError(f"second TYPE for {name}: {where}")
                    if any(self.family(s[0]) == name for s in self.samples):
                        raise AssertionError(f"TYPE after samples of {name}: {where}")
                    self.types[name] = m.group("type")
                elif line.startswith("# HELP"):
                    m = HELP_RE.match(line)
                    if not m:
                        raise AssertionError(f"bad HELP {where}")
                    if m.group("name") in self.helps:
                        raise AssertionError(f"second HELP for {m.group('name')}: {where}")
                    self.helps[m.group("name")] = m.group("text") or ""
                continue  # any other comment
            m = SAMPLE_RE.match(line)
            if not m:
                raise AssertionError(f"not a valid sample {where}")
            labels = {}
            for lm in LABEL_RE.finditer(m.group("labels") or ""):
                if lm.group(1) in labels:
                    raise AssertionError(f"label {lm.group(1)} twice: {where}")
                labels[lm.group(1)] = unescape_label(lm.group(2))
            name = m.group("name")
            family = self.family(name)
            if family != current_family:
                if family in finished_families:
                    raise AssertionError(f"lines of {family} are not together: {where}")
                if current_family is not None:
                    finished_families.add(current_family)
                current_family = family
            key = (name, tuple(sorted(labels.items())))
            if key in seen_series:
                raise AssertionError(f"repeated series: {where}")
            seen_series.add(key)
            self.samples.append((name, labels, float(m.group("value")), line))
        self._check_histograms()

    def family(self, name: str) -> str:
        if name in self.types:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and self.types.get(base) in ("histogram", "summary"):
                return base
        return name

    def _check_histograms(self):
        for base, kind in self.types.items():
            if kind != "histogram":
                continue
            series = {}
            for name, labels, value, line in self.samples:
                if name == base + "_bucket":
                    if "le" not in labels:
                        raise AssertionError(f"bucket without le: {line!r}")
                    rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                    series.setdefault(rest, []).append((float(labels["le"]), value, line))
            if not series:
                raise AssertionError(f"histogram {base} has no buckets")
            for rest, buckets in series.items():
                les = [le for le, _, _ in buckets]
                if les != sorted(les):
                    raise AssertionError(f"{base}{dict(rest)}: buckets not in increasing le order")
                if les[-1] != math.inf:
                    raise AssertionError(f"{base}{dict(rest)}: no le=\"+Inf\" bucket")
                counts = [v for _, v, _ in buckets]
                if any(b < a for a, b in zip(counts, counts[1:])):
                    raise AssertionError(f"{base}{dict(rest)}: buckets not cumulative: {counts}")
                count = self.value(base + "_count", dict(rest))
                if count is None or self.value(base + "_sum", dict(rest)) is None:
                    raise AssertionError(f"{base}{dict(rest)}: _count or _sum missing")
                if count != counts[-1]:
                    raise AssertionError(f"{base}{dict(rest)}: +Inf bucket {counts[-1]} != _count {count}")

    def find(self, name: str, labels: dict | None = None, exact: bool = True):
        """Samples named `name` whose labels equal `labels` (exact) or include them."""
        labels = labels or {}
        out = []
        for n, ls, value, line in self.samples:
            if n != name:
                continue
            if exact and ls != labels:
                continue
            if not exact and any(ls.get(k) != v for k, v in labels.items()):
                continue
            out.append((ls, value, line))
        return out

    def value(self, name: str, labels: dict | None = None):
        found = self.find(name, labels)
        return found[0][1] if found else None


HELLO_SERIES = {"host": "*", "route": "/hello", "plugin": "hello"}


class StatusTestCase(TrellisTestCase):
    def status(self, s) -> dict:
        r = s.get("/status")
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), r)
        return r.json()

    def metrics(self, s, path="/metrics") -> Exposition:
        r = s.get(path)
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"), r)
        try:
            return Exposition(r.body.decode("utf-8"))
        except AssertionError as e:
            self.fail(f"{path}: {e}\n{r.body.decode('utf-8', 'replace')}")

    def hammer(self, s, connections=24, per_connection=5):
        """GET /hello per_connection times on each of `connections` keep-alive connections at
        once. Returns (requests, request bytes sent, response bytes received)."""
        raw = build_request("GET", "/hello")
        errors, received = [], []

        def client():
            try:
                with Conn(s.port, timeout=10) as c:
                    got = 0
                    for _ in range(per_connection):
                        c.send(raw)
                        r = c.read_response()
                        if (r.status, r.body) != (200, HELLO):
                            errors.append(r)
                        got += len(r.raw_head) + len(r.body)
                    received.append(got)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=client) for _ in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(received), connections)
        n = connections * per_connection
        return n, n * len(raw), sum(received)

    @staticmethod
    def route(status: dict, prefix: str, host: str = "*") -> dict | None:
        for r in status["routes"]:
            if r["prefix"] == prefix and r["host"] == host:
                return r
        return None

    def assertCount(self, value, name):
        self.assertIsInstance(value, int, f"{name} = {value!r}")
        self.assertNotIsInstance(value, bool, name)
        self.assertGreaterEqual(value, 0, name)


class StatusJson(StatusTestCase):
    def test_one_allow_for_every_405_of_the_status_route(self):
        """The server refuses TRACE itself, yet names the status plugin's methods, as the plugin
        does for POST and DELETE (issue 10, item 10)."""
        s = self.start_server(status_config())
        for method in ("TRACE", "POST", "DELETE"):
            r = s.get("/status", method=method)
            self.assertEqual(r.status, 405, (method, r))
            self.assertEqual(r.header_all("Allow"), ["GET, HEAD"], (method, r))

    def test_shape_and_counts(self):
        s = self.start_server(status_config())
        before = self.status(s)
        n, sent, received = self.hammer(s)
        for _ in range(3):
            self.assertEqual(s.get("/nope").status, 404)  # the static catch-all "/" route

        def settled():
            j = self.status(s)
            return j if self.route(j, "/hello")["requests"] - self.route(before, "/hello")["requests"] >= n \
                else None
        after = wait_for(settled, 5)
        self.assertIsNotNone(after, "the /hello route never counted the requests made")

        for j in (before, after):
            self.assertIsInstance(j["uptime_seconds"], (int, float))
            self.assertNotIsInstance(j["uptime_seconds"], bool)
            self.assertGreaterEqual(j["uptime_seconds"], 0)
            self.assertCount(j["generation"], "generation")
            self.assertEqual(j["reloads"], 0)
            self.assertLessEqual({"open", "idle", "active", "plain", "tls", "accepted", "rejected"},
                                 set(j["connections"]), j)
            for k in ("open", "idle", "active", "plain", "tls", "accepted", "rejected"):
                self.assertCount(j["connections"][k], f"connections.{k}")
            self.assertLessEqual({"total", "1xx", "2xx", "3xx", "4xx", "5xx"}, set(j["requests"]), j)
            for k in ("total", "1xx", "2xx", "3xx", "4xx", "5xx"):
                self.assertCount(j["requests"][k], f"requests.{k}")
            # At most the request being answered (the /status one) is counted without its class.
            classes = sum(j["requests"][k] for k in ("1xx", "2xx", "3xx", "4xx", "5xx"))
            self.assertIn(j["requests"]["total"] - classes, (0, 1), j["requests"])
            self.assertLessEqual({"in", "out"}, set(j["bytes"]), j)
            self.assertCount(j["bytes"]["in"], "bytes.in")
            self.assertCount(j["bytes"]["out"], "bytes.out")
            pool = {"threads": THREADS, "queue": QUEUE, "queued": 0, "busy": 0, "rejected": 0}
            self.assertEqual({k: j["thread_pool"].get(k) for k in pool}, pool, j["thread_pool"])
            workers = j["workers"]
            self.assertEqual(len(workers), 2, workers)
            self.assertEqual(sorted(w["index"] for w in workers), [0, 1])
            for w in workers:
                self.assertLessEqual({"index", "connections", "requests", "bytes_in", "bytes_out"}, set(w), w)
                for k in ("connections", "requests", "bytes_in", "bytes_out"):
                    self.assertCount(w[k], f"workers[{w['index']}].{k}")
            # The totals are the workers' counters summed.
            self.assertEqual(sum(w["requests"] for w in workers), j["requests"]["total"], j)
            self.assertEqual(sum(w["bytes_in"] for w in workers), j["bytes"]["in"], j)
            self.assertEqual(sum(w["bytes_out"] for w in workers), j["bytes"]["out"], j)
            configured = {(r.get("host", "*"), r["prefix"], r["plugin"]) for r in s.config["routes"]}
            listed = {(r["host"], r["prefix"], r["plugin"]) for r in j["routes"]}
            self.assertEqual(listed, configured)

        self.assertGreaterEqual(after["uptime_seconds"], before["uptime_seconds"])
        self.assertEqual(after["generation"], before["generation"])
        d = lambda *path: _dig(after, path) - _dig(before, path)  # noqa: E731
        # 24 hammer connections, 3 for the 404s, the first /status one; none refused.
        self.assertGreaterEqual(d("connections", "accepted"), 24 + 3 + 1)
        self.assertEqual(after["connections"]["rejected"], 0)
        self.assertGreaterEqual(d("requests", "total"), n + 3 + 1)
        self.assertGreaterEqual(d("requests", "2xx"), n + 1)
        self.assertEqual(d("requests", "4xx"), 3)
        self.assertEqual(d("requests", "5xx"), 0)
        self.assertGreaterEqual(d("bytes", "in"), sent)
        self.assertGreaterEqual(d("bytes", "out"), received)

        hello_before, hello = self.route(before, "/hello"), self.route(after, "/hello")
        self.assertEqual(hello["plugin"], "hello")
        self.assertEqual(hello["requests"] - hello_before["requests"], n)
        self.assertEqual(hello["codes"].get("200", 0) - hello_before["codes"].get("200", 0), n, hello)
        self.assertEqual(set(hello["codes"]) - {"200"}, set(), hello)
        lat, lat_before = hello["latency"], hello_before["latency"]
        self.assertLessEqual({"buckets", "counts", "sum_seconds", "count"}, set(lat), lat)
        self.assertEqual(lat["count"] - lat_before["count"], n)
        self.assertGreater(lat["sum_seconds"], lat_before["sum_seconds"] - 1e-9)
        buckets, counts = lat["buckets"], lat["counts"]
        self.assertTrue(buckets and all(isinstance(b, (int, float)) and b > 0 for b in buckets), lat)
        self.assertEqual(buckets, sorted(set(buckets)), "bucket bounds not strictly increasing")
        self.assertIn(len(counts), (len(buckets), len(buckets) + 1), lat)
        self.assertTrue(all(b >= a for a, b in zip(counts, counts[1:])), f"not cumulative: {counts}")
        self.assertLessEqual(counts[-1], lat["count"])
        if len(counts) == len(buckets) + 1:  # the last one is +Inf
            self.assertEqual(counts[-1], lat["count"])

        site, site_before = self.route(after, "/"), self.route(before, "/")
        self.assertEqual(site["plugin"], "site")
        self.assertEqual(site["codes"].get("404", 0) - site_before["codes"].get("404", 0), 3, site)

    def test_connection_gauges(self):
        s = self.start_server(status_config())
        idle = [self.conn(s) for _ in range(3)]
        for c in idle:
            c.request("GET", "/hello")
            self.assertEqual(c.read_response().body, HELLO)
        mine = "plain" if harness.TRANSPORT == "plain" else "tls"
        other = "tls" if mine == "plain" else "plain"
        last = {}

        def gauges(want_open, want_idle):
            j = last["j"] = self.status(s)["connections"]
            # This /status request's own connection is the one active connection.
            return j["open"] == want_open and j["idle"] == want_idle and j["active"] == 1
        self.assertTrue(wait_for(lambda: gauges(4, 3), 5), last)
        self.assertEqual((last["j"][mine], last["j"][other]), (4, 0), last)

        def prometheus_open(want):
            e = self.metrics(s)
            last["p"] = [line for _, _, line in e.find("trellis_connections_open", exact=False)]
            return e.value("trellis_connections_open", {"transport": mine}) == want
        self.assertTrue(wait_for(lambda: prometheus_open(4), 5), last)
        for c in idle:
            c.close()
        self.assertTrue(wait_for(lambda: gauges(1, 0), 5), last)

    def test_thread_pool_counters(self):
        cfg = status_config()
        cfg["thread_pool"] = {"threads": 1, "queue": 1}
        cfg["plugins"].append({"name": "handlers", "path": str(FIXTURE_PLUGIN_DIR / "handlers_fixture.so")})
        cfg["routes"][0:0] = [{"prefix": "/h", "plugin": "handlers"},
                              {"prefix": "/hb", "plugin": "handlers", "blocking": True}]
        s = self.start_server(cfg)
        running = self.conn(s, timeout=20)
        running.request("GET", "/hb/hold")
        self.assertTrue(wait_for(lambda: s.get("/h/state").json()["holding"] == 1, 5))
        queued = self.conn(s, timeout=20)
        queued.request("GET", "/hb/hold")
        last = {}

        def pool(want):
            last["j"] = self.status(s)["thread_pool"]
            return all(last["j"][k] == v for k, v in want.items())
        self.assertTrue(wait_for(lambda: pool({"busy": 1, "queued": 1, "rejected": 0}), 5), last)
        self.assertEqual(s.get("/hb/hold").status, 503)
        self.assertTrue(wait_for(lambda: pool({"busy": 1, "queued": 1, "rejected": 1}), 5), last)
        self.assertEqual(s.get("/h/open-gate").status, 200)
        self.assertEqual(running.read_response(timeout=10).status, 200)
        self.assertEqual(queued.read_response(timeout=10).status, 200)
        self.assertTrue(wait_for(lambda: pool({"busy": 0, "queued": 0, "rejected": 1,
                                               "threads": 1, "queue": 1}), 5), last)

    def test_reload_counts(self):
        s = self.start_server(status_config())
        before = self.status(s)
        cfg = status_config()
        cfg["routes"].insert(0, {"prefix": "/extra", "plugin": "hello"})
        ok, line, generation = s.reload(cfg)
        self.assertTrue(ok, line)
        after = self.status(s)
        self.assertEqual(after["reloads"], 1)
        self.assertEqual(after["generation"], before["generation"] + 1)
        self.assertEqual(after["generation"], generation)
        self.assertIsNotNone(self.route(after, "/extra"))
        self.assertEqual(self.metrics(s).value("trellis_reloads_total"), 1)


class Prometheus(StatusTestCase):
    def test_exposition_is_valid_and_counts(self):
        s = self.start_server(status_config())
        base = self.metrics(s)
        n, sent, received = self.hammer(s)
        self.assertEqual(s.get("/q%22uote").body, HELLO)
        counter = dict(HELLO_SERIES, code="200")
        before = base.value("trellis_requests_total", counter) or 0
        last = {}

        def settled():
            last["e"] = self.metrics(s)
            v = last["e"].value("trellis_requests_total", counter)
            return v is not None and v - before >= n
        self.assertTrue(wait_for(settled, 5), "the /hello counter never reached the requests made")
        e = last["e"]
        self.assertEqual(e.value("trellis_requests_total", counter) - before, n)
        self.assertEqual(e.types.get("trellis_requests_total"), "counter")
        self.assertIn("# TYPE trellis_requests_total counter\n", e.text)
        # The line as documented, label order included.
        self.assertRegex(e.text, r'(?m)^trellis_requests_total\{host="\*",route="/hello",plugin="hello",'
                                 r'code="200"\} \d+$')

        self.assertEqual(e.types.get("trellis_request_duration_seconds"), "histogram")
        inf = dict(HELLO_SERIES, le="+Inf")
        self.assertIsNotNone(e.value("trellis_request_duration_seconds_bucket", inf), e.text)
        self.assertEqual(e.value("trellis_request_duration_seconds_bucket", inf)
                         - (base.value("trellis_request_duration_seconds_bucket", inf) or 0), n)
        self.assertEqual(e.value("trellis_request_duration_seconds_count", HELLO_SERIES)
                         - (base.value("trellis_request_duration_seconds_count", HELLO_SERIES) or 0), n)

        self.assertIsNotNone(e.value("trellis_connections_open", {"transport": "plain"}), e.text)
        mine = "plain" if harness.TRANSPORT == "plain" else "tls"
        self.assertGreaterEqual(e.value("trellis_connections_open", {"transport": mine}), 1)
        for name, at_least in (("trellis_bytes_received_total", sent), ("trellis_bytes_sent_total", received)):
            found = e.find(name, exact=False)
            self.assertTrue(found, f"no {name}")
            total = sum(v for _, v, _ in found)
            total_before = sum(v for _, v, _ in base.find(name, exact=False))
            self.assertGreaterEqual(total - total_before, at_least, name)
        uptime = e.find("trellis_uptime_seconds", exact=False)
        self.assertTrue(uptime and uptime[0][1] >= 0, e.text)
        self.assertEqual(e.value("trellis_reloads_total"), 0)

        # A label value with a quote, escaped as \" (the grammar above refuses it raw).
        quoted = e.find("trellis_requests_total", {"route": QUOTE_PREFIX}, exact=False)
        self.assertTrue(quoted, e.text)
        self.assertEqual(quoted[0][1], 1)
        self.assertIn('route="/q\\"uote"', quoted[0][2])
        # ... and the same route in the JSON (json.loads unescapes it).
        self.assertIsNotNone(self.route(self.status(s), QUOTE_PREFIX))

        # /status/metrics is the same format, same families.
        other = self.metrics(s, "/status/metrics")
        self.assertEqual(other.types, e.types)


def _dig(j, path):
    for k in path:
        j = j[k]
    return j


if __name__ == "__main__":
    harness.main()
