"""Tier 90: SIGHUP reloads server.json inside the running process. The log says
"SIGHUP: reloading configuration", then "reload: generation N active" on success, or
"reload failed: <the problem> ... keeping generation N" when the new configuration is refused and
the running one keeps serving. Routes, plugin instances, plugin configs and changed libraries
take effect; requests in flight and idle keep-alive connections survive; nothing is lost while
reloading under load (wrk).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (FIXTURE_PLUGIN_DIR, PLUGIN_DIR, TrellisTestCase, base_config,  # noqa: E402
                     write_tree)

HELLO = b"Hello, World!"


def with_route(cfg: dict, prefix: str, plugin: str, path: str | None = None, config=None) -> dict:
    """cfg with a route prefix -> plugin in front, and the plugin instance when path is given."""
    if path is not None:
        entry = {"name": plugin, "path": path}
        if config is not None:
            entry["config"] = config
        cfg["plugins"].append(entry)
    cfg["routes"].insert(0, {"prefix": prefix, "plugin": plugin})
    return cfg


def without_route(cfg: dict, prefix: str, drop_plugin: bool = True) -> dict:
    gone = [r["plugin"] for r in cfg["routes"] if r["prefix"] == prefix]
    cfg["routes"] = [r for r in cfg["routes"] if r["prefix"] != prefix]
    if drop_plugin:
        used = {r["plugin"] for r in cfg["routes"]}
        cfg["plugins"] = [p for p in cfg["plugins"] if p["name"] not in gone or p["name"] in used]
    return cfg


class ReloadTestCase(TrellisTestCase):
    def reload_ok(self, s, config=None, raw=None) -> int:
        mark = s.log_mark()
        ok, line, generation = s.reload(config, raw)
        self.assertTrue(ok, f"reload refused: {line}\n{s.stderr_since(mark)}")
        self.assertIn("SIGHUP: reloading configuration", s.stderr_since(mark))
        self.assertTrue(s.running())
        return generation

    def assertHello(self, r):
        self.assertEqual((r.status, r.body), (200, HELLO), r)


class Reload(ReloadTestCase):
    def test_added_route_and_plugin_answer(self):
        s = self.start_server()
        self.assertEqual(s.get("/added/x").status, 404)  # the static catch-all: no such file
        first = self.reload_ok(s, with_route(base_config(), "/added", "echo2", "echo"))
        r = s.get("/added/x")
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual((j["route_prefix"], j["path_below"]), ("/added", "/x"))
        self.assertHello(s.get("/hello"))
        # Every successful reload is the next generation.
        second = self.reload_ok(s, with_route(base_config(), "/added", "echo2", "echo"))
        self.assertEqual(second, first + 1)

    def test_removed_route_is_404(self):
        s = self.start_server()
        self.assertHello(s.get("/hello"))
        self.reload_ok(s, without_route(base_config(), "/hello"))
        self.assertEqual(s.get("/hello").status, 404)
        self.assertEqual(s.get("/echo/x").status, 200)

    def test_changed_plugin_config_takes_effect(self):
        s = self.start_server()
        self.assertEqual(s.get("/notes.txt").body, b"plain notes\n")
        write_tree(s.dir / "www2", {"notes.txt": "other notes\n"})
        cfg = base_config()
        cfg["plugins"] = [dict(p, config={"root": "www2"}) if p["name"] == "site" else p
                          for p in cfg["plugins"]]
        self.reload_ok(s, cfg)
        r = s.get("/notes.txt")
        self.assertEqual((r.status, r.body), (200, b"other notes\n"), r)
        self.assertEqual(s.get("/docs/page.html").status, 404)  # only in the old root

    def test_changed_library_at_the_same_path_is_loaded_again(self):
        lib = self.tmp / "lib"
        lib.mkdir()
        swap = lib / "swap.so"
        shutil.copyfile(PLUGIN_DIR / "hello.so", swap)
        cfg = with_route(base_config(), "/swap", "swap", str(swap))
        s = self.start_server(cfg)
        self.assertHello(s.get("/swap"))

        def replace_with(source):
            new = lib / "swap.so.new"
            shutil.copyfile(source, new)
            os.replace(new, swap)  # what a deployment does: the old file stays intact for readers

        replace_with(PLUGIN_DIR / "echo.so")
        self.reload_ok(s, cfg)  # the same configuration; only the file changed
        r = s.get("/swap/x")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["path"], "/swap/x", r)
        # And back: a third library at that path.
        replace_with(PLUGIN_DIR / "hello.so")
        self.reload_ok(s, cfg)
        self.assertHello(s.get("/swap"))

    def test_invalid_configurations_keep_the_running_generation(self):
        s = self.start_server()
        running = self.reload_ok(s, base_config())
        unknown_key = base_config()
        unknown_key["bogus"] = 1
        missing = with_route(base_config(), "/gone", "gone", str(self.tmp / "nowhere" / "nope.so"))
        refusing = with_route(base_config(), "/refuse", "refuse",
                              str(FIXTURE_PLUGIN_DIR / "create_fails.so"))
        cases = [
            ("invalid JSON", '{"workers": 1,\n  "listen": [', r"invalid JSON"),
            ("unknown key", json.dumps(unknown_key), r"/bogus"),
            ("missing plugin file", json.dumps(missing), r"nope\.so"),
            ("create fails", json.dumps(refusing), r"create_fails: refusing on purpose"),
        ]
        for what, raw, problem in cases:
            with self.subTest(what):
                mark = s.log_mark()
                ok, line, kept = s.reload(raw=raw)
                self.assertFalse(ok, f"accepted: {line}")
                self.assertIn("reload failed:", line)
                self.assertRegex(line, problem)
                self.assertEqual(kept, running, line)
                self.assertIn("SIGHUP: reloading configuration", s.stderr_since(mark))
                # The running generation serves as before.
                self.assertTrue(s.running())
                self.assertHello(s.get("/hello"))
                self.assertEqual(s.get("/echo/x").json()["path"], "/echo/x")
                self.assertEqual(s.get("/notes.txt").body, b"plain notes\n")
        self.assertEqual(s.get("/refuse").status, 404)
        # Refusals use no generation number.
        self.assertEqual(self.reload_ok(s, base_config()), running + 1)

    def test_in_flight_async_request_outlives_its_route(self):
        handlers = str(FIXTURE_PLUGIN_DIR / "handlers_fixture.so")
        s = self.start_server(with_route(base_config(), "/h", "handlers", handlers))
        c = self.conn(s, timeout=15)
        c.request("GET", "/h/async?ms=3000")
        self.assertTrue(harness.wait_for(lambda: s.get("/h/state").json()["async_pending"] == 1, 5),
                        "the async request never reached the fixture")
        # Route and instance gone; the instance must live until the request is released.
        self.reload_ok(s, base_config())
        self.assertEqual(s.get("/h/state").status, 404)
        self.assertTrue(c.is_open_after(0.05), "answered before the reload finished: proves nothing")
        r = c.read_response(timeout=10)
        self.assertEqual((r.status, r.body), (200, b"async 3000"), r)
        c.request("GET", "/hello")
        self.assertHello(c.read_response())

    def test_idle_keepalive_connections_survive(self):
        s = self.start_server()
        conns = [self.conn(s) for _ in range(5)]
        for c in conns:
            c.request("GET", "/hello")
            self.assertHello(c.read_response())
        self.reload_ok(s, with_route(base_config(), "/added", "echo2", "echo"))
        for c in conns:
            c.request("GET", "/hello")  # the same sockets
            self.assertHello(c.read_response())
        self.assertEqual(s.get("/added/y").status, 200)


class ReloadAppliesOrWarns(ReloadTestCase):
    """Issue 10, item 4: every key is applied by a reload or named, when it changed, as needing a
    restart."""

    RESTART_RE = r"reload: (.*) changed and takes? effect at the next restart"

    def restart_warning(self, s, mark):
        m = re.search(self.RESTART_RE, s.stderr_since(mark))
        return m.group(1) if m else None

    def test_max_body_bytes_applies_to_the_next_request(self):
        cfg = base_config()
        s = self.start_server(cfg)
        body = b"x" * 1000
        self.assertEqual(s.get("/echo/a", method="POST", body=body).status, 200)
        cfg["limits"] = {"max_body_bytes": 100}
        mark = s.log_mark()
        self.reload_ok(s, cfg)
        self.assertIsNone(self.restart_warning(s, mark), s.stderr_since(mark))
        self.assertEqual(s.get("/echo/a", method="POST", body=body).status, 413)
        self.assertEqual(s.get("/echo/a", method="POST", body=b"y" * 100).status, 200)

    def test_header_limit_raised_and_lowered(self):
        cfg = base_config(limits={"max_header_bytes": 1024})
        s = self.start_server(cfg)
        big = [("X-Big", "b" * 3000)]
        # An idle keep-alive connection from before the reload, holding no session.
        old = self.conn(s)
        old.request("GET", "/hello")
        self.assertHello(old.read_response())
        self.assertEqual(s.get("/hello", headers=big).status, 431)
        cfg["limits"] = {"max_header_bytes": 8192}
        self.reload_ok(s, cfg)
        self.assertHello(s.get("/hello", headers=big))
        old.request("GET", "/hello", headers=big)
        self.assertHello(old.read_response())
        cfg["limits"] = {"max_header_bytes": 1024}
        self.reload_ok(s, cfg)
        self.assertEqual(s.get("/hello", headers=big).status, 431)

    def test_keepalive_timeout_shortened(self):
        cfg = base_config(limits={"keepalive_timeout_ms": 60000})
        s = self.start_server(cfg)
        cfg["limits"] = {"keepalive_timeout_ms": 300}
        self.reload_ok(s, cfg)
        c = self.conn(s)
        c.request("GET", "/hello")
        self.assertHello(c.read_response())
        data, closed = c.read_until_closed(timeout=5)
        self.assertTrue(closed, "the new keep-alive timeout must close the idle connection")

    def test_warning_names_only_the_changed_restart_keys(self):
        cfg = base_config(workers=1)
        s = self.start_server(cfg)
        cfg["workers"] = 2
        mark = s.log_mark()
        self.reload_ok(s, cfg)
        self.assertEqual(self.restart_warning(s, mark), "workers", s.stderr_since(mark))
        cfg["thread_pool"] = {"threads": 3}
        cfg["access_log"] = str(s.dir / "access.log")
        mark = s.log_mark()
        self.reload_ok(s, cfg)
        # workers is still different from what runs: still named.
        self.assertEqual(self.restart_warning(s, mark), "workers, thread_pool, access_log",
                         s.stderr_since(mark))
        cfg["listen"] = cfg["listen"] + [{"address": "127.0.0.1", "port": 0, "transport": "plain"}]
        cfg["workers"] = 1
        cfg.pop("thread_pool")
        cfg["access_log"] = "off"
        mark = s.log_mark()
        self.reload_ok(s, cfg)
        self.assertEqual(self.restart_warning(s, mark), "listen", s.stderr_since(mark))
        self.assertHello(s.get("/hello"))

    def test_http2_settings_are_named_as_restart_only(self):
        # Advertised once per connection and tied to the listener's ALPN: they wait for a restart.
        cfg = base_config()
        s = self.start_server(cfg)
        cfg["http2"] = {"max_concurrent_streams": 7}
        mark = s.log_mark()
        self.reload_ok(s, cfg)
        self.assertEqual(self.restart_warning(s, mark), "http2", s.stderr_since(mark))
        self.assertHello(s.get("/hello"))

    def test_nothing_restart_only_changed_no_warning(self):
        cfg = base_config()
        s = self.start_server(cfg)
        cfg["log_level"] = "debug"
        cfg["limits"] = {"send_timeout_ms": 1234, "handler_timeout_ms": 5000}
        mark = s.log_mark()
        self.reload_ok(s, cfg)
        self.assertNotIn("next restart", s.stderr_since(mark))


class ReloadUnderLoad(ReloadTestCase):
    RELOADS = 10

    def test_reloads_while_wrk_runs_lose_nothing(self):
        wrk = shutil.which("wrk")
        if wrk is None:
            self.skipTest("wrk is not installed (./dev.sh installs it)")
        # Two valid configurations; in the second /hello is served by another instance of hello.
        a = base_config()
        b = base_config()
        b["plugins"].append({"name": "hello2", "path": "hello"})
        b["routes"] = [dict(r, plugin="hello2") if r["prefix"] == "/hello" else r for r in b["routes"]]
        b = with_route(b, "/extra", "echo2", "echo")
        s = self.start_server(a)
        url = s.url("/hello")
        proc = subprocess.Popen(["timeout", "30", wrk, "-t1", "-c16", "-d6s", url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=harness._die_with_parent)
        try:
            generations = []
            under_load = 0
            time.sleep(0.5)  # pacing: let wrk's 16 connections get going before the first reload
            for i in range(self.RELOADS):
                generations.append(self.reload_ok(s, b if i % 2 == 0 else a))
                under_load += proc.poll() is None
                time.sleep(0.25)  # pacing: spread the reloads over the run
            out, err = proc.communicate(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        report = f"wrk exit {proc.returncode}\n{out}{err}"
        self.assertEqual(proc.returncode, 0, report)
        self.assertEqual(generations, list(range(generations[0], generations[0] + self.RELOADS)))
        self.assertGreaterEqual(under_load, self.RELOADS // 2,
                                "most reloads came after wrk had finished: they were not under load")
        done = re.search(r"(\d+) requests in", out)
        self.assertIsNotNone(done, report)
        self.assertGreater(int(done.group(1)), 0, report)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        self.assertEqual(int(non2xx.group(1)) if non2xx else 0, 0, report)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        self.assertEqual([int(x) for x in errors.groups()] if errors else [0, 0, 0, 0], [0, 0, 0, 0], report)
        self.assertHello(s.get("/hello"))


if __name__ == "__main__":
    harness.main()
