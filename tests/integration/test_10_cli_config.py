"""Tier 10: command line, configuration validation, plugin loading errors."""

import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (FIXTURE_PLUGIN_DIR, PLUGIN_DIR, TrellisTestCase, base_config,  # noqa: E402
                     run_trellis)


class CommandLine(TrellisTestCase):
    def test_version(self):
        r = run_trellis("--version")
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout.strip(), r"^trellis \d+\.\d+\.\d+$", r)

    def test_help(self):
        r = run_trellis("--help")
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("usage", r.stdout.lower(), r)
        self.assertIn("--config", r.stdout, r)
        self.assertIn("--check", r.stdout, r)
        self.assertNotIn("listening on", r.output, r)


class Check(TrellisTestCase):
    def write_config(self, cfg, name="server.json", raw=None):
        d = self.tmp / "conf"
        d.mkdir(exist_ok=True)
        (d / "www").mkdir(exist_ok=True)
        (d / "www" / "index.html").write_text("hi\n")
        p = d / name
        p.write_text(raw if raw is not None else json.dumps(cfg, indent=2))
        return p

    def test_check_good_config(self):
        p = self.write_config(base_config())
        r = run_trellis("--check", "--config", str(p))
        self.assertFalse(r.timed_out, f"--check must not serve: {r}")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration OK", r.stdout, r)
        self.assertNotIn("listening on", r.output, r)

    def test_check_full_example_config(self):
        """The documented example, with every key, validates."""
        cfg = {
            "workers": "auto",
            "plugin_dir": str(PLUGIN_DIR),
            "listen": [{"address": "127.0.0.1", "port": 8080, "transport": "plain"}],
            "limits": {"max_connections": 10000, "max_header_bytes": 16384,
                       "max_body_bytes": 10485760, "header_timeout_ms": 10000,
                       "body_timeout_ms": 30000, "keepalive_timeout_ms": 60000,
                       "send_timeout_ms": 30000, "shutdown_timeout_ms": 10000},
            "plugins": [{"name": "site", "path": "static", "config": {"root": "www"}},
                        {"name": "hello", "path": "hello"}],
            "routes": [{"prefix": "/hello", "plugin": "hello"},
                       {"host": "*", "prefix": "/", "plugin": "site"}],
            "access_log": "-",
            "log_level": "info",
        }
        p = self.write_config(cfg)
        r = run_trellis("--check", "--config", str(p))
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration OK", r.stdout, r)

    def test_check_default_config_path(self):
        """Without --config, ./server.json is used."""
        p = self.write_config(base_config())
        r = run_trellis("--check", cwd=p.parent)
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration OK", r.stdout, r)

    def test_check_missing_config_file(self):
        missing = self.tmp / "nowhere" / "server.json"
        r = run_trellis("--check", "--config", str(missing))
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(str(missing), r.output, r)
        self.assertNotIn("configuration OK", r.stdout, r)

    def test_start_missing_config_file(self):
        missing = self.tmp / "nowhere" / "server.json"
        r = run_trellis("--config", str(missing))
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(str(missing), r.stderr, r)


class Messages(TrellisTestCase):
    """Issue 10, item 9: what the command line says when it cannot go on."""

    def test_missing_config_file_says_why(self):
        missing = self.tmp / "nowhere" / "server.json"
        for args in (("--check", "--config", str(missing)), ("--config", str(missing))):
            r = run_trellis(*args)
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(f"{missing}: cannot read the configuration file: No such file or directory",
                          r.stderr, r)

    def test_config_without_a_value(self):
        for args in (("--config",), ("--check", "--config"), ("--config=",)):
            r = run_trellis(*args)
            self.assertEqual(r.returncode, 1, r)
            self.assertIn("--config needs a file name", r.stderr, r)
            self.assertNotIn("unknown argument", r.stderr, r)


class CheckAgreesWithStart(TrellisTestCase):
    """Issue 10, item 5: every configuration --check calls OK starts, and every one it refuses
    fails to start with the same line."""

    def write(self, cfg):
        d = self.tmp / f"c{len(list(self.tmp.iterdir()))}"
        d.mkdir()
        (d / "www").mkdir()
        p = d / "server.json"
        p.write_text(json.dumps(cfg))
        return p

    def both(self, cfg):
        p = self.write(cfg)
        checked = run_trellis("--check", "--config", str(p))
        started = run_trellis("--config", str(p), timeout=5)
        return checked, started

    def assert_refused(self, cfg, *expected):
        checked, started = self.both(cfg)
        self.assertEqual(checked.returncode, 1, checked)
        self.assertNotIn("configuration OK", checked.stdout, checked)
        self.assertFalse(started.timed_out, f"a start that --check refuses must fail: {started}")
        self.assertEqual(started.returncode, 1, started)
        self.assertNotIn("listening on", started.output, started)
        for text in expected:
            self.assertIn(text, checked.stderr, checked)
            self.assertIn(text, started.stderr, started)

    def test_host_name_address(self):
        self.assert_refused(base_config(listen=[{"address": "localhost", "port": 0}]),
                            "/listen/0/address: expected an IPv4 or IPv6 address",
                            'got "localhost"')

    def test_unix_address_with_a_port(self):
        self.assert_refused(base_config(listen=[{"address": "unix:/run/x.sock", "port": 0}]),
                            '/listen/0/port: a "unix:PATH" listener has no port')

    def test_unix_settings_on_a_tcp_address(self):
        for key, value in (("mode", "0660"), ("owner", "root"), ("group", "root")):
            with self.subTest(key=key):
                self.assert_refused(base_config(listen=[{"address": "127.0.0.1", "port": 0, key: value}]),
                                    f'/listen/0/{key}: only for a "unix:PATH" address')

    def test_log_in_missing_directory(self):
        for key in ("access_log", "error_log"):
            with self.subTest(key=key):
                path = self.tmp / "no-such-dir" / "x.log"
                self.assert_refused(base_config(**{key: str(path)}),
                                    f"/{key}: {key} {path}: cannot open: No such file or directory")
                self.assertFalse((self.tmp / "no-such-dir").exists())

    def test_log_under_a_file_or_at_a_directory(self):
        afile = self.tmp / "plain-file"
        afile.write_text("x")
        self.assert_refused(base_config(access_log=str(afile / "x.log")),
                            f"/access_log: access_log {afile / 'x.log'}: cannot open: Not a directory")
        self.assert_refused(base_config(error_log=str(self.tmp)),
                            f"/error_log: error_log {self.tmp}: cannot open: Is a directory")
        self.assertEqual(afile.read_text(), "x")

    def test_check_writes_no_log_file(self):
        log = self.tmp / "logs" / "access.log"
        log.parent.mkdir()
        p = self.write(base_config(access_log=str(log), error_log=str(log.parent / "error.log")))
        r = run_trellis("--check", "--config", str(p))
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(list(log.parent.iterdir()), [], "--check must not create log files")

    def test_ip_literals_check_and_start(self):
        for address in ("127.0.0.1", "::1"):
            with self.subTest(address=address):
                cfg = base_config(listen=[{"address": address, "port": 0, "transport": "plain"}])
                p = self.write(cfg)
                r = run_trellis("--check", "--config", str(p))
                self.assertEqual(r.returncode, 0, r)


class PortHeldByAnother(TrellisTestCase):
    """Issue 10, item 3: SO_REUSEPORT must not let a second server share a port by accident."""

    def test_second_instance_on_the_same_port_exits_naming_the_listener(self):
        first = self.start_server(base_config(workers=2))
        port = first.port
        second = self.make_server(base_config(workers=2, listen=[
            {"address": "127.0.0.1", "port": port, "transport": harness.TRANSPORT}]))
        second.start(wait=False)
        code = second.wait_exit(10)
        self.assertEqual(code, 1, second.stderr_text())
        scheme = "https" if harness.TRANSPORT == "tls" else "http"
        self.assertIn(f"listen {scheme}://127.0.0.1:{port}: Address already in use", second.stderr_text())
        self.assertNotIn("listening on", second.stderr_text())
        # The first one still has the port to itself and serves.
        self.assertEqual(first.get("/hello").status, 200)

    def test_a_plain_socket_holding_the_port(self):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        try:
            s = self.make_server(base_config(listen=[{"address": "127.0.0.1", "port": port}]))
            s.start(wait=False)
            self.assertEqual(s.wait_exit(10), 1)
            self.assertIn(f"listen http://127.0.0.1:{port}: Address already in use", s.stderr_text())
        finally:
            holder.close()

    def test_reuseport_holder_of_another_process(self):
        """What a second trellis does to the first, done by a bare SO_REUSEPORT socket."""
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        try:
            s = self.make_server(base_config(workers=2, listen=[{"address": "127.0.0.1", "port": port}]))
            s.start(wait=False)
            self.assertEqual(s.wait_exit(10), 1, s.stderr_text())
            self.assertIn("Address already in use", s.stderr_text())
        finally:
            holder.close()


class RelativePaths(TrellisTestCase):
    def test_relative_paths_resolve_against_config_dir(self):
        """plugin_dir, plugin file paths containing '/', static root and access_log are relative
        to the config file's directory, not to the working directory."""
        def prepare(s):
            (s.dir / "plugins").symlink_to(PLUGIN_DIR, target_is_directory=True)
            (s.dir / "lib").mkdir()
            shutil.copy(PLUGIN_DIR / "hello.so", s.dir / "lib" / "hello.so")
            (s.dir / "logs").mkdir()  # the server need not create directories

        cfg = base_config(
            plugin_dir="plugins",
            plugins=[{"name": "hi", "path": "lib/hello.so"},
                     {"name": "site", "path": "static", "config": {"root": "www"}}],
            routes=[{"prefix": "/hello", "plugin": "hi"}, {"prefix": "/", "plugin": "site"}],
            access_log="logs/access.log",
        )
        elsewhere = self.tmp / "elsewhere"
        elsewhere.mkdir()
        s = self.start_server(cfg, www={"index.html": "relative root\n"}, cwd=elsewhere,
                              prepare=prepare)
        r = s.get("/hello")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"Hello, World!")
        r = s.get("/index.html")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"relative root\n")
        log = s.dir / "logs" / "access.log"
        self.assertTrue(harness.wait_for(lambda: log.exists() and b"/index.html" in log.read_bytes(), 5),
                        f"access log not written at {log}")
        self.assertEqual(list(elsewhere.iterdir()), [], "nothing may be created in the cwd")

    def test_check_relative_plugin_path(self):
        d = self.tmp / "c"
        (d / "lib").mkdir(parents=True)
        shutil.copy(PLUGIN_DIR / "hello.so", d / "lib" / "hello.so")
        cfg = base_config(plugins=[{"name": "hi", "path": "./lib/hello.so"}],
                          routes=[{"prefix": "/", "plugin": "hi"}])
        (d / "server.json").write_text(json.dumps(cfg))
        r = run_trellis("--check", "--config", str(d / "server.json"), cwd="/")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration OK", r.stdout, r)


# (name, mutate(cfg), pointer, [words that must appear], [alternatives: at least one must appear])
def _set(path, value):
    def f(cfg):
        node = cfg
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return f


def _limits(key, value):
    def f(cfg):
        cfg.setdefault("limits", {})[key] = value
    return f


CONFIG_ERRORS = [
    ("unknown_top_level_key", _set(["bogus_key"], 1), "/bogus_key", ["bogus_key"], []),
    ("unknown_limits_key", _limits("max_conns", 5), "/limits", ["max_conns"], []),
    ("unknown_listen_key", _set(["listen", 0, "adress"], "127.0.0.1"), "/listen/0", ["adress"], []),
    ("unknown_plugin_key", _set(["plugins", 1, "options"], {}), "/plugins/1", ["options"], []),
    ("unknown_route_key", _set(["routes", 0, "target"], "x"), "/routes/0", ["target"], []),
    ("workers_wrong_string", _set(["workers"], "many"), "/workers", [], ["auto", "integer"]),
    ("workers_zero", _set(["workers"], 0), "/workers", [], ["positive", "integer", "1"]),
    ("workers_float", _set(["workers"], 1.5), "/workers", [], ["integer"]),
    ("port_too_large", _set(["listen", 0, "port"], 70000), "/listen/0/port", ["65535"], []),
    ("port_negative", _set(["listen", 0, "port"], -1), "/listen/0/port", [], ["65535", "0"]),
    ("port_string", _set(["listen", 0, "port"], "8080"), "/listen/0/port", [], ["integer", "number"]),
    ("second_listener_port", lambda c: c["listen"].append({"address": "127.0.0.1", "port": 99999}),
     "/listen/1/port", ["65535"], []),
    ("listen_not_array", _set(["listen"], {"address": "127.0.0.1", "port": 0}), "/listen", [],
     ["array", "list"]),
    ("address_number", _set(["listen", 0, "address"], 127), "/listen/0/address", [], ["string"]),
    ("transport_unknown", _set(["listen", 0, "transport"], "carrier-pigeon"),
     "/listen/0/transport", [], ["plain"]),
    ("limit_string", _limits("max_body_bytes", "big"), "/limits/max_body_bytes", [],
     ["integer", "number"]),
    ("limit_negative", _limits("header_timeout_ms", -5), "/limits/header_timeout_ms", [],
     ["integer", "positive", "0", "1"]),
    ("limits_not_object", _set(["limits"], [1, 2]), "/limits", [], ["object"]),
    ("plugins_not_array", _set(["plugins"], {"name": "x"}), "/plugins", [], ["array", "list"]),
    ("plugin_name_number", _set(["plugins", 0, "name"], 5), "/plugins/0/name", [], ["string"]),
    ("plugin_config_not_object", _set(["plugins", 2, "config"], "root=www"), "/plugins/2/config",
     [], ["object"]),
    ("route_unknown_plugin", _set(["routes", 1, "plugin"], "nosuchplugin"), "/routes/1/plugin",
     ["nosuchplugin"], []),
    ("route_prefix_number", _set(["routes", 0, "prefix"], 7), "/routes/0/prefix", [], ["string"]),
    ("duplicate_plugin_name", _set(["plugins", 1, "name"], "hello"), "/plugins/1", ["hello"],
     ["duplicate", "already", "twice"]),
    ("log_level_unknown", _set(["log_level"], "verbose"), "/log_level", ["verbose"],
     ["debug", "info", "warn", "error"]),
    ("access_log_number", _set(["access_log"], 5), "/access_log", [], ["string"]),
    ("plugin_dir_number", _set(["plugin_dir"], 1), "/plugin_dir", [], ["string"]),
]


class ConfigErrors(TrellisTestCase):
    def write(self, text: str) -> Path:
        d = self.tmp / "cfg"
        d.mkdir(exist_ok=True)
        p = d / "server.json"
        p.write_text(text)
        return p

    def assertOneLineNaming(self, r, path: Path, pointer, words, alternatives):
        self.assertFalse(r.timed_out, f"the server did not exit on a bad config: {r}")
        self.assertEqual(r.returncode, 1, r)
        lines = r.stderr_lines
        self.assertEqual(len(lines), 1, f"expected exactly one line on stderr: {r}")
        line = lines[0]
        self.assertTrue(str(path) in line or os.path.realpath(path) in line,
                        f"the config path {path} is not named: {line!r}")
        if pointer:
            self.assertIn(pointer, line, f"JSON pointer {pointer} not named")
        for w in words:
            self.assertIn(w.lower(), line.lower(), f"{w!r} not in {line!r}")
        if alternatives:
            self.assertTrue(any(a.lower() in line.lower() for a in alternatives),
                            f"none of {alternatives} (what was expected) in {line!r}")
        self.assertNotIn("listening on", r.output)
        return line

    def test_each_config_error_on_start(self):
        for name, mutate, pointer, words, alternatives in CONFIG_ERRORS:
            with self.subTest(name):
                cfg = base_config()
                mutate(cfg)
                p = self.write(json.dumps(cfg, indent=2))
                r = run_trellis("--config", str(p), timeout=5)
                self.assertOneLineNaming(r, p, pointer, words, alternatives)

    def test_two_listeners_on_one_address_and_port(self):
        cfg = base_config()
        cfg["listen"] = [dict(cfg["listen"][0], port=18099), dict(cfg["listen"][0], port=18099)]
        p = self.write(json.dumps(cfg))
        r = run_trellis("--config", str(p), timeout=5)
        self.assertOneLineNaming(r, p, "/listen/1", ["same address and port"], ["/listen/0"])

    def test_port_in_use_stops_the_start_cleanly(self):
        # A socket bound without SO_REUSEPORT: ours cannot share its port.
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        cfg = base_config()
        cfg["listen"][0]["port"] = port
        p = self.write(json.dumps(cfg))
        (p.parent / "www").mkdir(exist_ok=True)
        r = run_trellis("--config", str(p), timeout=5)
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(f"127.0.0.1:{port}", r.stderr)
        self.assertIn("Address already in use", r.stderr)
        self.assertNotIn("listening on", r.output)

    def test_each_config_error_with_check(self):
        for name, mutate, pointer, words, alternatives in CONFIG_ERRORS:
            with self.subTest(name):
                cfg = base_config()
                mutate(cfg)
                p = self.write(json.dumps(cfg, indent=2))
                r = run_trellis("--check", "--config", str(p), timeout=5)
                self.assertFalse(r.timed_out, r)
                self.assertEqual(r.returncode, 1, r)
                self.assertNotIn("configuration OK", r.output, r)
                self.assertIn(pointer, r.output, r)
                for w in words:
                    self.assertIn(w.lower(), r.output.lower(), r)

    def test_unknown_key_pointer_is_exact(self):
        """The pointer of a nested unknown key ends in that key."""
        cfg = base_config()
        cfg["limits"] = {"max_conns": 5}
        p = self.write(json.dumps(cfg))
        r = run_trellis("--config", str(p))
        line = self.assertOneLineNaming(r, p, "/limits", ["max_conns"], [])
        self.assertTrue("/limits/max_conns" in line or "/limits:" in line or "/limits " in line,
                        line)

    def test_invalid_json_line_and_column(self):
        text = '{\n  "workers": 1,\n    @\n}\n'
        p = self.write(text)
        r = run_trellis("--config", str(p))
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 1, r)
        lines = r.stderr_lines
        self.assertEqual(len(lines), 1, r)
        self.assertTrue(f"{p}:3:5" in lines[0] or f"{os.path.realpath(p)}:3:5" in lines[0],
                        f"expected '{p}:3:5' in {lines[0]!r}")

    def test_invalid_json_line_number_other_position(self):
        # missing comma on line 2 (the exact column depends on the token; the line does not)
        text = '{"workers": 1,\n "log_level": "info" "access_log": "off"}\n'
        p = self.write(text)
        r = run_trellis("--config", str(p))
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(len(r.stderr_lines), 1, r)
        self.assertRegex(r.stderr_lines[0], re.escape(str(p)) + r":2:\d+", r)

    def test_invalid_json_with_check(self):
        text = '{\n  "workers": 1,\n    @\n}\n'
        p = self.write(text)
        r = run_trellis("--check", "--config", str(p))
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("server.json:3:5", r.output, r)
        self.assertNotIn("configuration OK", r.output, r)

    def test_truncated_json(self):
        p = self.write('{"workers": 1,\n "listen": [\n')
        r = run_trellis("--config", str(p))
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(len(r.stderr_lines), 1, r)
        self.assertRegex(r.stderr_lines[0], re.escape(str(p)) + r":\d+:\d+")

    def test_top_level_not_object(self):
        p = self.write("[1, 2, 3]\n")
        r = run_trellis("--config", str(p))
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(len(r.stderr_lines), 1, r)
        self.assertIn(str(p), r.stderr_lines[0])
        self.assertIn("object", r.stderr_lines[0].lower())


class BrokenPlugins(TrellisTestCase):
    """A plugin that cannot be used stops the server (exit 1) with the file and the reason."""

    def config_with(self, path):
        cfg = base_config()
        cfg["plugins"].append({"name": "broken", "path": path})
        cfg["routes"].insert(0, {"prefix": "/broken", "plugin": "broken"})
        return cfg

    def run_both(self, cfg):
        d = self.tmp / "p"
        d.mkdir(exist_ok=True)
        (d / "www").mkdir(exist_ok=True)
        p = d / "server.json"
        p.write_text(json.dumps(cfg))
        start = run_trellis("--config", str(p))
        check = run_trellis("--check", "--config", str(p))
        for r in (start, check):
            self.assertFalse(r.timed_out, r)
            self.assertEqual(r.returncode, 1, r)
            self.assertNotIn("listening on", r.output, r)
            self.assertNotIn("configuration OK", r.output, r)
        return start, check

    def test_plugin_not_found_bare_word(self):
        start, check = self.run_both(self.config_with("nosuchplugin"))
        for r in (start, check):
            self.assertIn(str(PLUGIN_DIR / "nosuchplugin.so"), r.output, r)
            out = r.output.lower()
            self.assertTrue("not found" in out or "no such file" in out, r)

    def test_plugin_not_found_path(self):
        missing = self.tmp / "nope" / "gone.so"
        start, check = self.run_both(self.config_with(str(missing)))
        for r in (start, check):
            self.assertIn("gone.so", r.output, r)
            out = r.output.lower()
            self.assertTrue("not found" in out or "no such file" in out, r)

    def test_missing_entry_symbol(self):
        so = FIXTURE_PLUGIN_DIR / "missing_symbol.so"
        self.assertTrue(so.is_file(), f"fixture {so} missing")
        start, check = self.run_both(self.config_with(str(so)))
        for r in (start, check):
            self.assertIn("missing_symbol.so", r.output, r)
            self.assertIn("not a Trellis plugin", r.output, r)

    def test_wrong_abi(self):
        so = FIXTURE_PLUGIN_DIR / "wrong_abi.so"
        self.assertTrue(so.is_file(), f"fixture {so} missing")
        start, check = self.run_both(self.config_with(str(so)))
        for r in (start, check):
            self.assertIn("wrong_abi.so", r.output, r)
            self.assertIn("99.0", r.output, r)
            # The server's own version, as its header says.
            header = (harness.SOURCE_DIR / "include" / "trellis" / "plugin.h").read_text()
            major = re.search(r"#define TRELLIS_ABI_MAJOR (\d+)", header).group(1)
            minor = re.search(r"#define TRELLIS_ABI_MINOR (\d+)", header).group(1)
            self.assertIn(f"this server speaks ABI {major}.{minor}", r.output, r)
            self.assertIn("abi", r.output.lower(), r)

    def test_create_fails(self):
        so = FIXTURE_PLUGIN_DIR / "create_fails.so"
        self.assertTrue(so.is_file(), f"fixture {so} missing")
        start, check = self.run_both(self.config_with(str(so)))
        for r in (start, check):
            self.assertIn("create_fails.so", r.output, r)
            self.assertIn("create_fails: refusing on purpose", r.output, r)


if __name__ == "__main__":
    harness.main()
