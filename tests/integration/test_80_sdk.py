"""Tier 80: the plugin SDK as users get it: `cmake --install` gives headers, a CMake package
(find_package(Trellis) -> Trellis::plugin) and a pkg-config file; example plugins copied alone
into an empty folder build unchanged against it and run in the server; and a plugin built
against the frozen ABI 1.0 header still loads and runs. Runs once (transport-independent)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import FIXTURE_PLUGIN_DIR, TrellisTestCase, base_config  # noqa: E402

SOURCE_DIR = Path(os.environ.get("TRELLIS_SOURCE_DIR") or Path(__file__).resolve().parents[2])
BUILD_DIR = Path(os.environ.get("TRELLIS_BUILD_DIR") or harness.TRELLIS_BIN.parent)

FIVE_LINES = """cmake_minimum_required(VERSION 3.25)
project(outside C)
find_package(Trellis REQUIRED)
add_library({name} MODULE {source})
target_link_libraries({name} PRIVATE Trellis::plugin)
"""


def run(*args, cwd=None, env=None, timeout=240):
    r = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


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
        self.assertTrue(list(self.prefix.glob("lib*/pkgconfig/trellis-plugin.pc")))

    def build_outside(self, source: Path, name: str) -> Path:
        """Copies one example alone into an empty folder with the five-line CMakeLists.txt and
        builds it against the installed SDK only."""
        work = self.tmp / f"outside-{name}"
        work.mkdir()
        shutil.copy(source, work / source.name)
        (work / "CMakeLists.txt").write_text(FIVE_LINES.format(name=name, source=source.name))
        run("cmake", "-S", str(work), "-B", str(work / "build"), f"-DCMAKE_PREFIX_PATH={self.prefix}",
            "-DCMAKE_BUILD_TYPE=Release")
        run("cmake", "--build", str(work / "build"))
        built = work / "build" / f"lib{name}.so"
        self.assertTrue(built.is_file(), list((work / "build").iterdir()))
        return built

    def serve(self, plugins: list, routes: list):
        cfg = base_config()
        cfg["plugins"] = plugins
        cfg["routes"] = routes
        return self.start_server(cfg)

    def test_hello_builds_out_of_tree_with_find_package_and_runs(self):
        so = self.build_outside(SOURCE_DIR / "plugins/hello/hello.c", "hello")
        s = self.serve([{"name": "outside", "path": str(so)}], [{"prefix": "/", "plugin": "outside"}])
        r = s.get("/anything")
        self.assertEqual((r.status, r.body), (200, b"Hello, World!"))

    def test_echo_builds_with_pkg_config_and_runs(self):
        env = dict(os.environ)
        env["PKG_CONFIG_PATH"] = ":".join(str(p.parent) for p in self.prefix.glob("lib*/pkgconfig/trellis-plugin.pc"))
        cflags = run("pkg-config", "--cflags", "trellis-plugin", env=env).stdout.split()
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
        so = self.build_cpp_outside()
        s = self.serve([{"name": "cpp", "path": str(so)}], [{"prefix": "/", "plugin": "cpp"}])
        r = s.get("/greet")
        self.assertEqual((r.status, r.body), (200, b"C++ says hi to /greet\n"))

    def build_cpp_outside(self) -> Path:
        work = self.tmp / "outside-cpp"
        work.mkdir()
        shutil.copy(SOURCE_DIR / "tests/fixtures/plugins/cpp_plugin.cpp", work / "cpp_plugin.cpp")
        (work / "CMakeLists.txt").write_text(
            FIVE_LINES.replace("project(outside C)", "project(outside CXX)\nset(CMAKE_CXX_STANDARD 20)")
            .format(name="cpp_plugin", source="cpp_plugin.cpp"))
        run("cmake", "-S", str(work), "-B", str(work / "build"), f"-DCMAKE_PREFIX_PATH={self.prefix}")
        run("cmake", "--build", str(work / "build"))
        return work / "build" / "libcpp_plugin.so"


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
        self.assertRegex(r.header("X-Host-Abi"), r"^1\.\d+$")


if __name__ == "__main__":
    harness.main()
