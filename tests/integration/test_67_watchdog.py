"""Tier 67: what the operator is told about requests that went wrong without an error status.

- A plugin call that holds a worker's event loop past limits.loop_stall_warn_ms (a handler doing
  slow work on a route without "blocking": true) is logged, at most once a minute per route,
  naming the route, the plugin and the time, and counted per route in the status metrics.
- A request whose client went away while a plugin held it is logged (status 499, as nginx does,
  with the body bytes sent) and counted per route.
"""

import json
import os
import re
import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import FIXTURE_PLUGIN_DIR, TrellisTestCase, base_config, wait_for  # noqa: E402

STALL_RE = re.compile(
    r'\[warn\] route "/stall" \(plugin "stall"\) ran (\d+) ms on the event loop of worker 0, '
    r'holding up its other connections; mark the route "blocking": true')


def watchdog_config(**overrides) -> dict:
    cfg = base_config(workers=1, **overrides)
    cfg["plugins"] += [
        {"name": "stall", "path": str(FIXTURE_PLUGIN_DIR / "loop_stall_fixture.so")},
        {"name": "status", "path": "status"},
        {"name": "handlers", "path": str(FIXTURE_PLUGIN_DIR / "handlers_fixture.so")},
    ]
    cfg["routes"][0:0] = [
        {"prefix": "/stall", "plugin": "stall"},
        {"prefix": "/pooled-stall", "plugin": "stall", "blocking": True},
        {"prefix": "/status", "plugin": "status"},
        {"prefix": "/metrics", "plugin": "status"},
        {"prefix": "/h", "plugin": "handlers"},
    ]
    return cfg


class WatchdogTestCase(TrellisTestCase):
    def route_stats(self, s, prefix: str) -> dict:
        r = s.get("/status")
        self.assertEqual(r.status, 200, r)
        for route in r.json()["routes"]:
            if route["prefix"] == prefix:
                return route
        self.fail(f"no route {prefix} in /status")

    def prometheus_stalls(self, s, prefix: str) -> int:
        text = s.get("/metrics").body.decode()
        m = re.search(r'^trellis_loop_stalls_total\{host="\*",route="' + re.escape(prefix) +
                      r'",plugin="[^"]*"\} (\d+)$', text, re.M)
        self.assertIsNotNone(m, text)
        return int(m.group(1))


class LoopStall(WatchdogTestCase):
    def test_a_stall_is_logged_once_a_minute_and_counted(self):
        s = self.start_server(watchdog_config(limits={"loop_stall_warn_ms": 100}))
        mark = s.log_mark()
        r = s.get("/stall?ms=250")
        self.assertEqual((r.status, r.body), (200, b"slept 250"), r)
        line = s.wait_stderr_since(mark, STALL_RE.pattern)
        self.assertIsNotNone(line, s.stderr_since(mark))
        took = int(STALL_RE.search(s.stderr_since(mark)).group(1))
        self.assertGreaterEqual(took, 250)
        self.assertLess(took, 5000)
        # A second stall within the minute is counted, not logged again.
        self.assertEqual(s.get("/stall?ms=150").status, 200)
        self.assertEqual(self.route_stats(s, "/stall")["loop_stalls"], 2)
        self.assertEqual(len(STALL_RE.findall(s.stderr_since(mark))), 1, s.stderr_since(mark))
        self.assertEqual(self.prometheus_stalls(s, "/stall"), 2)

    def test_fast_calls_and_pooled_routes_are_not_stalls(self):
        s = self.start_server(watchdog_config(limits={"loop_stall_warn_ms": 100}))
        mark = s.log_mark()
        for _ in range(20):
            self.assertEqual(s.get("/hello").status, 200)
        self.assertEqual(s.get("/stall?ms=10").status, 200)
        # The same plugin on a "blocking": true route sleeps on the pool, not on the loop.
        self.assertEqual(s.get("/pooled-stall?ms=250").status, 200)
        self.assertEqual(self.route_stats(s, "/hello")["loop_stalls"], 0)
        self.assertEqual(self.route_stats(s, "/stall")["loop_stalls"], 0)
        self.assertEqual(self.route_stats(s, "/pooled-stall")["loop_stalls"], 0)
        self.assertNotIn("on the event loop", s.stderr_since(mark))

    def test_zero_turns_the_watchdog_off(self):
        s = self.start_server(watchdog_config(limits={"loop_stall_warn_ms": 0}))
        mark = s.log_mark()
        self.assertEqual(s.get("/stall?ms=150").status, 200)
        self.assertEqual(self.route_stats(s, "/stall")["loop_stalls"], 0)
        self.assertNotIn("on the event loop", s.stderr_since(mark))

    def test_threshold_follows_a_reload(self):
        cfg = watchdog_config(limits={"loop_stall_warn_ms": 1000})
        s = self.start_server(cfg)
        self.assertEqual(s.get("/stall?ms=200").status, 200)
        self.assertEqual(self.route_stats(s, "/stall")["loop_stalls"], 0)
        cfg["limits"] = {"loop_stall_warn_ms": 100}
        ok, line, _ = s.reload(cfg)
        self.assertTrue(ok, line)
        self.assertEqual(s.get("/stall?ms=200").status, 200)
        self.assertEqual(self.route_stats(s, "/stall")["loop_stalls"], 1)


class ClientGoneWhileHeld(WatchdogTestCase):
    def server_logging_json(self):
        """A started server whose access log is JSON lines in its own directory, and that file."""
        cfg = watchdog_config()
        s = self.make_server(cfg)
        log = s.dir / "access.log"
        cfg["access_log"] = {"path": str(log), "format": "json"}
        s.write_config(cfg)
        return s.start(), log

    def access_lines(self, s, path):
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def test_a_held_request_whose_client_left_is_logged_499_and_counted(self):
        s, log = self.server_logging_json()
        before = self.route_stats(s, "/h")["codes"].get("499", 0)
        c = self.conn(s)
        c.request("GET", "/h/abort-watch?ms=10000")
        self.assertIsNotNone(wait_for(lambda: s.get("/h/aborts").json()["watching"] == 1, 5),
                             "the request is held")
        c.abort()
        self.assertIsNotNone(wait_for(lambda: s.get("/h/aborts").json()["released"] == 1, 5),
                             "the plugin let go")
        self.assertEqual(self.route_stats(s, "/h")["codes"].get("499", 0) - before, 1)
        entries = wait_for(lambda: [e for e in self.access_lines(s, log) if e["status"] == 499], 5)
        self.assertIsNotNone(entries, self.access_lines(s, log))
        self.assertEqual(len(entries), 1, entries)
        self.assertEqual(entries[0]["target"], "/h/abort-watch?ms=10000")
        self.assertEqual(entries[0]["body_bytes"], 0)

    def test_a_stream_cut_by_the_client_logs_the_bytes_it_took(self):
        s, log = self.server_logging_json()
        c = self.conn(s, timeout=10, rcvbuf=16 * 1024)
        c.request("GET", "/h/stream?bytes=67108864&chunk=65536")
        self.assertEqual(c.read_head().status, 200)
        self.assertIsNotNone(wait_for(lambda: s.get("/h/stream-stats").json()["again"] >= 1, 10),
                             "the stream was pushed back")
        c.abort()
        self.assertIsNotNone(wait_for(lambda: s.get("/h/stream-stats").json()["aborted"] == 1, 10))
        entries = wait_for(lambda: [e for e in self.access_lines(s, log) if e["status"] == 499], 5)
        self.assertIsNotNone(entries, self.access_lines(s, log))
        self.assertEqual(len(entries), 1, entries)
        self.assertGreater(entries[0]["body_bytes"], 0)
        self.assertLess(entries[0]["body_bytes"], 67108864)
        self.assertEqual(self.route_stats(s, "/h")["codes"].get("499", 0), 1)

    def test_every_request_is_logged(self):
        """22 requests, one of whose clients closed while the plugin held it: 22 log lines and
        22 per-route counts."""
        s, log = self.server_logging_json()
        for _ in range(21):
            self.assertEqual(s.get("/h/async?ms=1").status, 200)
        c = self.conn(s)
        c.request("GET", "/h/abort-watch?ms=10000")
        self.assertIsNotNone(wait_for(lambda: s.get("/h/aborts").json()["watching"] == 1, 5))
        c.close()
        self.assertIsNotNone(wait_for(lambda: s.get("/h/aborts").json()["released"] == 1, 5))
        mine = lambda: [e for e in self.access_lines(s, log)  # noqa: E731
                        if e["target"].startswith(("/h/async", "/h/abort-watch"))]
        self.assertIsNotNone(wait_for(lambda: len(mine()) == 22, 5), mine())
        codes = self.route_stats(s, "/h")["codes"]
        self.assertEqual(codes.get("499"), 1, codes)


if __name__ == "__main__":
    harness.main()
