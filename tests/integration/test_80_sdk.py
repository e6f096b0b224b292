"""Tier 80: the plugin SDK as users get it: `cmake --install` gives headers, a CMake package
(find_package(Trellis) -> Trellis::plugin and trellis_add_plugin) and a pkg-config file; example
plugins (hello, echo, digest, delay, status and a C++ fixture) copied alone into an empty folder
with the four-line CMakeLists.txt a user writes build unchanged against it, as <name>.so exporting
only trellis_plugin_entry, and run in the server as "path": "<name>"; the whole install (server,
bundled plugins, example configuration, site) runs as installed; and plugins built against the
frozen ABI 1.0 and ABI 1.1 headers still load and run, every 1.1 feature exercised. Runs once
(transport-independent)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import FIXTURE_PLUGIN_DIR, TrellisTestCase, base_config, build_request  # noqa: E402

SOURCE_DIR = Path(os.environ.get("TRELLIS_SOURCE_DIR") or Path(__file__).resolve().parents[2])
BUILD_DIR = Path(os.environ.get("TRELLIS_BUILD_DIR") or harness.TRELLIS_BIN.parent)

# Exactly what a user writes (the README's recipe); {lang} is C or CXX. Nothing else: a C++ plugin
# gets C++20 (which plugin.hpp needs) from Trellis::plugin, and a C one needs no C++ compiler.
RECIPE = """cmake_minimum_required(VERSION 3.25)
project(outside {lang})
find_package(Trellis REQUIRED)
trellis_add_plugin({name} {source})
"""
ENTRY = "trellis_plugin_entry"

CXX20_OR_LATER = re.compile(r"(?:^|\s)-std=(?:gnu|c)\+\+(?:2a|20|2b|23|2c|26)(?:\s|$)")
ANY_CXX_STD = re.compile(r"-std=(?:gnu|c)\+\+")


def run(*args, cwd=None, env=None, timeout=240):
    r = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def exported_symbols(so: Path) -> list:
    """The names a shared object defines in its dynamic symbol table (what another library or
    plugin could bind to)."""
    out = run("nm", "-D", "--defined-only", str(so)).stdout
    return sorted(line.split()[-1] for line in out.splitlines() if line.strip())


def parts(n: int) -> bytes:
    return b"".join(f"part {i}\n".encode() for i in range(1, n + 1))


class Sdk(TrellisTestCase):
    @classmethod
    def setUpClass(cls):
        cls._prefix_dir = harness.tempfile.TemporaryDirectory(prefix="trellis-sdk-")
        cls.prefix = Path(cls._prefix_dir.name)
        run("cmake", "--install", str(BUILD_DIR), "--prefix", str(cls.prefix), "--component", "sdk")

    @classmethod
    def tearDownClass(cls):
        cls._prefix_dir.cleanup()

    def test_install_lays_out_the_sdk(self):
        self.assertTrue((self.prefix / "include/trellis/plugin.h").is_file())
        self.assertTrue((self.prefix / "include/trellis/plugin.hpp").is_file())
        self.assertTrue(list(self.prefix.glob("lib*/cmake/Trellis/TrellisConfig.cmake")))
        self.assertTrue(list(self.prefix.glob("lib*/cmake/Trellis/TrellisPlugin.cmake")))
        self.assertTrue(list(self.prefix.glob("lib*/pkgconfig/trellis-plugin.pc")))

    def build_outside(self, source: Path, name: str, lang: str = "C") -> Path:
        """Copies one source alone into an empty folder with the recipe's CMakeLists.txt and
        builds it against the installed SDK only. For C no C++ compiler is reachable (CXX points
        nowhere) and no C++ flag may reach the compile line; for C++ the line must ask for C++20
        or later, which only Trellis::plugin can have put there. The result is <name>.so (what
        "path": "<name>" finds) and exports the entry symbol alone."""
        work = self.tmp / f"outside-{name}"
        work.mkdir()
        shutil.copy(source, work / source.name)
        (work / "CMakeLists.txt").write_text(RECIPE.format(lang=lang, name=name, source=source.name))
        env = dict(os.environ)
        if lang == "C":
            env["CXX"] = str(self.tmp / "no-such-c++")
        run("cmake", "-S", str(work), "-B", str(work / "build"), f"-DCMAKE_PREFIX_PATH={self.prefix}",
            "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", env=env)
        run("cmake", "--build", str(work / "build"), env=env)
        commands = [c["command"] for c in json.loads((work / "build/compile_commands.json").read_text())]
        self.assertEqual(len(commands), 1, commands)
        if lang == "C":
            self.assertNotRegex(commands[0], ANY_CXX_STD)
        else:
            self.assertRegex(commands[0], CXX20_OR_LATER)
        built = work / "build" / f"{name}.so"
        self.assertTrue(built.is_file(), sorted(p.name for p in (work / "build").iterdir()))
        self.assertFalse((work / "build" / f"lib{name}.so").exists())
        # Hidden visibility and the version script: nothing but the entry point is exported (an
        # add_library(MODULE) C++ plugin exports every std:: template it instantiated).
        symbols = exported_symbols(built)
        self.assertIn(ENTRY, symbols)
        self.assertLessEqual(len(symbols), 2, symbols)
        return built

    def pkg_config_env(self) -> dict:
        env = dict(os.environ)
        env["PKG_CONFIG_PATH"] = ":".join(str(p.parent) for p in self.prefix.glob("lib*/pkgconfig/trellis-plugin.pc"))
        return env

    def pkg_config(self, *args) -> list:
        return run("pkg-config", *args, "trellis-plugin", env=self.pkg_config_env()).stdout.split()

    def serve_by_name(self, so: Path, routes: list, config: dict | None = None):
        """Loads `so` the way server.json names bundled plugins: "path": "<name>" in plugin_dir."""
        plugin = {"name": so.stem, "path": so.stem}
        if config is not None:
            plugin["config"] = config
        return self.serve([plugin], routes, plugin_dir=str(so.parent))

    def serve(self, plugins: list, routes: list, **overrides):
        cfg = base_config(**overrides)
        cfg["plugins"] = plugins
        cfg["routes"] = routes
        return self.start_server(cfg)

    def test_hello_builds_out_of_tree_with_find_package_and_runs(self):
        so = self.build_outside(SOURCE_DIR / "plugins/hello/hello.c", "hello")
        s = self.serve_by_name(so, [{"prefix": "/", "plugin": "hello"}])
        r = s.get("/anything")
        self.assertEqual((r.status, r.body), (200, b"Hello, World!"))

    def test_echo_builds_with_pkg_config_and_runs(self):
        cflags = self.pkg_config("--cflags")
        self.assertTrue(any(f.startswith("-I") and str(self.prefix) in f for f in cflags), cflags)
        work = self.tmp / "pkgconfig"
        work.mkdir()
        shutil.copy(SOURCE_DIR / "plugins/echo/echo.c", work / "echo.c")
        run("cc", "-std=c11", "-shared", "-fPIC", *cflags, "echo.c", "-o", "echo.so", cwd=work)
        s = self.serve([{"name": "e", "path": str(work / "echo.so")}], [{"prefix": "/", "plugin": "e"}])
        r = s.get("/x?y=1")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["query"], "y=1")

    def test_cpp_plugin_builds_against_plugin_hpp(self):
        so = self.build_outside(SOURCE_DIR / "tests/fixtures/plugins/cpp_plugin.cpp", "cpp_plugin", "CXX")
        s = self.serve_by_name(so, [{"prefix": "/", "plugin": "cpp_plugin"}])
        r = s.get("/greet")
        self.assertEqual((r.status, r.body), (200, b"C++ says hi to /greet\n"))

    def test_trellis_add_plugin_names_the_file_and_exports_the_entry_only(self):
        # A C++ plugin named unlike its source, with an ABI 1.2 route config, loaded by bare name.
        so = self.build_outside(SOURCE_DIR / "tests/fixtures/plugins/cpp_plugin.cpp", "items", "CXX")
        self.assertEqual(so.name, "items.so")
        self.assertEqual(exported_symbols(so), [ENTRY])
        s = self.serve_by_name(so, [{"prefix": "/items", "plugin": "items", "config": {"shelf": 3}}])
        r = s.get("/items/whoami")
        self.assertEqual(r.status, 200, r)
        self.assertIn(b'\nconfig={"shelf":3}\n', r.body)

    # -- the ABI 1.1 examples, each copied alone

    def test_digest_builds_out_of_tree_and_hashes_on_the_pool(self):
        so = self.build_outside(SOURCE_DIR / "plugins/digest/digest.c", "digest")
        root = self.tmp / "digest-root"
        files = {
            "empty": b"",
            "a.txt": b"hello, digest\n",
            "sub/b 55": bytes(range(55)),  # the padding edges of SHA-256: 55, 56, 64, 65 bytes
            "sub/b 56": bytes(range(56)),
            "sub/b 64": bytes(range(64)),
            "sub/b 65": bytes(range(65)),
            "big.bin": os.urandom(300 * 1024 + 7),  # several 64 KiB reads
        }
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        s = self.serve_by_name(so, [{"prefix": "/digest", "plugin": "digest"}], {"root": str(root)})
        for name, data in files.items():
            r = s.get("/digest/" + name.replace(" ", "%20"))
            want = f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode()
            self.assertEqual((r.status, r.body), (200, want), name)
        self.assertEqual(s.get("/digest/nothing-here").status, 404)

    def test_delay_builds_out_of_tree_as_cxx_without_threads_and_answers_later(self):
        so = self.build_outside(SOURCE_DIR / "plugins/delay/delay.cpp", "delay", "CXX")
        s = self.serve_by_name(so, [{"prefix": "/delay", "plugin": "delay"}])
        started = time.monotonic()
        r = s.get("/delay?ms=50")
        self.assertEqual((r.status, r.body), (200, b"waited 50 ms\n"), r)
        self.assertGreaterEqual(time.monotonic() - started, 0.05)  # answered by its timer, not at once
        with s.conn() as c:
            c.request("GET", "/delay?chunks=3&ms=10")
            r = c.read_response()
            self.assertEqual((r.status, r.header("Transfer-Encoding"), r.header("Content-Length")),
                             (200, "chunked", None), r)
            self.assertEqual(r.body, b"chunk 1\nchunk 2\nchunk 3\n")

        # The timer thread counts an answer and drops its job just after the last byte went out.
        def settled():
            stats = s.get("/delay/stats").json()
            return stats if (stats["pending"], stats["answered"]) == (0, 2) else None
        self.assertIsNotNone(harness.wait_for(settled, 5.0), s.get("/delay/stats").body)

    def test_delay_builds_with_pkg_config_without_threads(self):
        cflags = self.pkg_config("--cflags")
        # Cflags go to C compilers too: a C++ -std there would break (clang) or warn (gcc).
        self.assertFalse([f for f in cflags if f.startswith("-std=")], cflags)
        cxxflags = self.pkg_config("--variable=cxxflags")
        self.assertRegex(" ".join(cxxflags), CXX20_OR_LATER)
        work = self.tmp / "pkgconfig-delay"
        work.mkdir()
        shutil.copy(SOURCE_DIR / "plugins/delay/delay.cpp", work / "delay.cpp")
        run("c++", "-shared", "-fPIC", *cflags, *cxxflags, "delay.cpp", "-o", "delay.so", cwd=work)
        s = self.serve([{"name": "d", "path": str(work / "delay.so")}], [{"prefix": "/delay", "plugin": "d"}])
        r = s.get("/delay?ms=1")
        self.assertEqual((r.status, r.body), (200, b"waited 1 ms\n"), r)

    def test_status_builds_out_of_tree_and_reports_metrics(self):
        so = self.build_outside(SOURCE_DIR / "plugins/status/status.c", "status")
        s = self.serve_by_name(so, [{"prefix": "/status", "plugin": "status"},
                                    {"prefix": "/metrics", "plugin": "status"}])
        r = s.get("/status")
        self.assertEqual((r.status, r.header("Content-Type")), (200, "application/json"), r)
        self.assertIn("requests", r.json())
        r = s.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertIn("# TYPE trellis_requests_total counter\n", r.body.decode())


class Installed(TrellisTestCase):
    """`cmake --install` of everything into an empty prefix gives a server that runs as installed:
    bin/trellis, the bundled plugins in lib*/trellis/plugins, the site in share/trellis/www and
    etc/trellis/server.json, which has no plugin_dir (the binary finds its plugins beside itself)."""

    @classmethod
    def setUpClass(cls):
        cls._prefix_dir = harness.tempfile.TemporaryDirectory(prefix="trellis-install-")
        cls.prefix = Path(cls._prefix_dir.name)
        run("cmake", "--install", str(BUILD_DIR), "--prefix", str(cls.prefix))

    @classmethod
    def tearDownClass(cls):
        cls._prefix_dir.cleanup()

    def installed_config(self) -> dict:
        path = self.prefix / "etc/trellis/server.json"
        self.assertTrue(path.is_file(), sorted(str(p.relative_to(self.prefix)) for p in self.prefix.rglob("*")))
        return json.loads(path.read_text())

    def test_install_lays_out_plugins_config_and_site(self):
        plugin_dirs = list(self.prefix.glob("lib*/trellis/plugins"))
        self.assertEqual(len(plugin_dirs), 1, plugin_dirs)
        for name in ("hello", "echo", "static", "digest", "delay", "status"):
            so = plugin_dirs[0] / f"{name}.so"
            self.assertTrue(so.is_file(), so)
            self.assertEqual(exported_symbols(so), [ENTRY], so)
        self.assertTrue((self.prefix / "share/trellis/www/index.html").is_file())
        cfg = self.installed_config()
        self.assertNotIn("plugin_dir", cfg)
        site = next(p for p in cfg["plugins"] if p["path"] == "static")
        self.assertEqual(Path(site["config"]["root"]), self.prefix / "share/trellis/www")

    def test_installed_binary_checks_the_installed_config_as_is(self):
        r = subprocess.run([str(self.prefix / "bin/trellis"), "--config", str(self.prefix / "etc/trellis/server.json"),
                            "--check"], capture_output=True, text=True, timeout=30, cwd=self.tmp)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("configuration OK", r.stdout + r.stderr)

    def test_installed_binary_serves_bundled_plugins_without_plugin_dir(self):
        # The installed example with only its port changed (8080 may be taken), written beside it.
        cfg = self.installed_config()
        cfg["listen"] = [{"address": harness.LOOPBACK, "port": 0, "transport": "plain"}]
        path = self.prefix / "etc/trellis/test-server.json"
        path.write_text(json.dumps(cfg))
        s = self.make_server(cfg)
        s.config_path = path
        s.cwd = str(self.tmp)  # not the prefix: nothing may depend on the working directory
        with mock.patch.object(harness, "TRELLIS_BIN", self.prefix / "bin/trellis"):
            s.start()
        r = s.get("/hello")
        self.assertEqual((r.status, r.body), (200, b"Hello, World!"), r)
        r = s.get("/")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, (SOURCE_DIR / "www/index.html").read_bytes())
        self.assertEqual(s.get("/status").status, 200)


def assert_host_abi_at_least(test, r, major: int, minor: int):
    m = re.fullmatch(r"(\d+)\.(\d+)", r.header("X-Host-Abi") or "")
    test.assertTrue(m, r)
    test.assertEqual(int(m.group(1)), major, r)
    test.assertGreaterEqual(int(m.group(2)), minor, r)


class FrozenAbi(TrellisTestCase):
    def test_a_plugin_built_against_abi_1_0_still_loads_and_runs(self):
        so = FIXTURE_PLUGIN_DIR / "abi_v1_0_plugin.so"
        self.assertTrue(so.is_file(), so)
        cfg = base_config()
        cfg["plugins"].append({"name": "old", "path": str(so)})
        cfg["routes"].insert(0, {"prefix": "/old", "plugin": "old"})
        s = self.start_server(cfg)
        r = s.get("/old/path")
        self.assertEqual((r.status, r.body), (200, b"abi 1.0 ok /old/path\n"))
        assert_host_abi_at_least(self, r, 1, 0)


class FrozenAbi11(TrellisTestCase):
    """tests/fixtures/plugins/abi_v1_1_plugin.c, built against tests/fixtures/abi_v1_1 (see the
    comment at its top for what each path does), on /v11 of a server with two workers."""

    def setUp(self):
        super().setUp()
        so = FIXTURE_PLUGIN_DIR / "abi_v1_1_plugin.so"
        self.assertTrue(so.is_file(), so)
        cfg = base_config(workers=2)
        cfg["plugins"].append({"name": "v11", "path": str(so)})
        cfg["routes"].insert(0, {"prefix": "/v11", "plugin": "v11"})
        self.s = self.start_server(cfg)

    def test_inline_route_runs_on_the_worker_thread(self):
        r = self.s.get("/v11/inline/some%20path")
        self.assertEqual((r.status, r.body), (200, b"abi 1.1 inline /v11/inline/some path\n"), r)
        self.assertRegex(r.header("X-Thread"), r"^worker [01]$")  # not a pool thread: not blocking
        assert_host_abi_at_least(self, r, 1, 1)
        # Paths the plugin does not know are declined, and the next route answers.
        self.assertEqual(self.s.get("/v11/unknown").status, 404)

    def test_async_answer_from_a_plugin_thread(self):
        r = self.s.get("/v11/async?word=hello%20there+you")
        self.assertEqual((r.status, r.body), (200, b"async hello there you\n"), r)
        self.assertEqual((r.header("X-Thread"), r.header("Content-Type")), ("plugin", "text/plain"), r)
        assert_host_abi_at_least(self, r, 1, 1)

    def test_async_answers_keep_the_connection_and_its_order(self):
        # Pipelined on one connection: each is answered by its own thread and released, in order;
        # a request never released would hold the connection and the next answer would not come.
        words = [f"w{i}" for i in range(5)]
        with self.s.conn() as c:
            c.send(b"".join(build_request("GET", f"/v11/async?word={w}") for w in words))
            for w in words:
                r = c.read_response()
                self.assertEqual((r.status, r.body, r.header("X-Thread")), (200, f"async {w}\n".encode(), "plugin"), r)
            c.request("GET", "/v11/inline")
            self.assertEqual(c.read_response().status, 200)

    def test_async_answers_on_many_connections_at_once(self):
        conns = [self.s.conn() for _ in range(8)]
        self._conns.extend(conns)
        for i, c in enumerate(conns):
            c.request("GET", f"/v11/async?word=c{i}", [("Connection", "close")])
        for i, c in enumerate(conns):
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"async c{i}\n".encode()), r)

    def check_stream(self, query: str, n: int, thread: str, declared: bool):
        with self.s.conn() as c:
            c.request("GET", f"/v11/stream?{query}")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, parts(n)), r)
            self.assertRegex(r.header("X-Thread"), thread)
            if declared:
                self.assertEqual((r.header("Content-Length"), r.header("Transfer-Encoding")),
                                 (str(len(parts(n))), None), r)
            else:
                self.assertEqual((r.header("Transfer-Encoding"), r.header("Content-Length")), ("chunked", None), r)
            # The response ended properly (last chunk, or all promised bytes): the connection goes on.
            c.request("GET", "/v11/inline")
            self.assertEqual(c.read_response().status, 200)

    def test_streamed_response_written_inline(self):
        self.check_stream("", 3, r"^worker [01]$", declared=False)
        self.check_stream("n=100", 100, r"^worker [01]$", declared=False)
        self.check_stream("n=4&length=1", 4, r"^worker [01]$", declared=True)

    def test_streamed_response_written_from_a_plugin_thread(self):
        self.check_stream("from=thread", 3, r"^plugin$", declared=False)
        self.check_stream("n=100&from=thread", 100, r"^plugin$", declared=False)
        self.check_stream("n=4&length=1&from=thread", 4, r"^plugin$", declared=True)

    def test_streamed_response_is_framed_by_the_host(self):
        # The plugin wrote three parts: the host sent them as chunks and ended with the last chunk.
        with self.s.conn() as c:
            c.request("GET", "/v11/stream?n=3", [("Connection", "close")])
            raw, closed = c.read_until_closed()
        self.assertTrue(closed)
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertRegex(head, rb"(?i)\r\ntransfer-encoding: chunked(\r\n|$)")
        self.assertTrue(body.endswith(b"0\r\n\r\n"), body)
        self.assertEqual(harness.parse_response(raw, eof=True)[0].body, parts(3))
        # HTTP/1.0 has no chunks: the body ends with the connection.
        for query in ("n=3", "n=3&from=thread"):
            with self.s.conn() as c:
                c.request("GET", f"/v11/stream?{query}", version="HTTP/1.0")
                raw, closed = c.read_until_closed()
            self.assertTrue(closed, query)
            r = harness.parse_response(raw, eof=True)[0]
            self.assertEqual((r.status, r.header("Transfer-Encoding"), r.body), (200, None, parts(3)), r)
        # HEAD: the head only, and the connection goes on.
        with self.s.conn() as c:
            c.request("HEAD", "/v11/stream?n=3&from=thread")
            self.assertEqual(c.read_response(head=True).status, 200)
            c.request("GET", "/v11/inline")
            self.assertEqual(c.read_response().body, b"abi 1.1 inline /v11/inline\n")
        self.assertEqual(self.s.get("/v11/stream?n=0").status, 400)
        self.assertEqual(self.s.get("/v11/stream?n=101").status, 400)

    def test_request_query_param(self):
        cases = {
            "q=plain": b"len=5 value=plain\n",
            "q=a%20b+c": b"len=5 value=a b c\n",  # percent-decoded, '+' is a space
            "x=1&q=second&q=third": b"len=6 value=second\n",  # of a repeated name the first wins
            "q=": b"len=0 value=\n",
            "q": b"len=0 value=\n",
            "q=0123456789abc": b"len=13 value=01234567\n",  # truncated to the buffer, full length told
            "qq=1&xq=2": b"absent\n",
            "": b"absent\n",
        }
        for query, want in cases.items():
            r = self.s.get(f"/v11/query?{query}")
            self.assertEqual((r.status, r.body), (200, want), query)


if __name__ == "__main__":
    harness.main()
