"""Tier 60: plugin behaviour through the real loader: the C++ helper header, failures that must
stay inside one request, declining to the next route, and one .so backing several instances."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import FIXTURE_PLUGIN_DIR, TrellisTestCase, base_config, main, run_trellis  # noqa: E402


def cpp_config(**overrides):
    cfg = base_config(**overrides)
    cfg["plugins"].append({"name": "cpp", "path": str(FIXTURE_PLUGIN_DIR / "cpp_plugin.so")})
    # The C++ plugin first on /cpp; echo behind it on the same prefix, for declined requests.
    cfg["routes"].insert(0, {"prefix": "/cpp", "plugin": "cpp"})
    cfg["routes"].insert(1, {"prefix": "/cpp", "plugin": "echo"})
    return cfg


class CppHelper(TrellisTestCase):
    def setUp(self):
        super().setUp()
        self.s = self.start_server(cpp_config())

    def test_answers_through_the_helper(self):
        r = self.s.get("/cpp/greet")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"C++ says hi to /greet\n")
        self.assertEqual(r.header("X-Plugin"), "cpp")
        # The plugin tried to set Content-Length itself: the host refused, framing stays right.
        self.assertEqual(r.header_all("Content-Length"), [str(len(r.body))])

    def test_exception_becomes_500_and_a_log_line(self):
        r = self.s.get("/cpp/throw")
        self.assertEqual(r.status, 500, r)
        self.s.wait_stderr(r"\[error\] cpp: on_request threw: boom")
        # The worker is unharmed.
        self.assertEqual(self.s.get("/hello").status, 200)

    def test_error_result_becomes_500(self):
        r = self.s.get("/cpp/error")
        self.assertEqual(r.status, 500, r)
        self.s.wait_stderr(r'plugin "cpp" failed on GET /cpp/error')

    def test_ok_without_answer_becomes_500(self):
        r = self.s.get("/cpp/noanswer")
        self.assertEqual(r.status, 500, r)
        self.s.wait_stderr(r'plugin "cpp" returned 0 without answering')

    def test_second_answer_is_ignored(self):
        with self.conn(self.s) as c:
            c.request("GET", "/cpp/twice", [("Host", "t")])
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"first\n"))
            # The connection is still in step: the next answer is the next request's.
            c.request("GET", "/hello", [("Host", "t")])
            self.assertEqual(c.read_response().body, b"Hello, World!")
        self.s.wait_stderr(r"answered a request twice")

    def test_decline_falls_through_to_next_route(self):
        r = self.s.get("/cpp/decline?x=1")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["path"], "/cpp/decline")
        self.assertEqual(body["route_prefix"], "/cpp")
        self.assertEqual(body["path_below"], "/decline")

    def test_constructor_exception_fails_the_start(self):
        cfg = cpp_config()
        cfg["plugins"][-1]["config"] = {"fail": True}
        s = self.make_server(cfg)
        r = run_trellis("--check", "--config", str(s.config_path))
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("create failed: cpp_plugin: constructor refused the config", r.stderr, r)

    def test_on_worker_start_failing_on_every_worker_stops_the_start(self):
        # Each worker stops on its own; the others are then told to stop too, and a worker whose
        # loop is already closed must not be woken (that aborted the process once).
        cfg = cpp_config(workers=3)
        cfg["plugins"][-1]["config"] = {"fail_worker_start": True}
        s = self.make_server(cfg)
        r = run_trellis("--config", str(s.config_path))
        self.assertFalse(r.timed_out, r)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.stderr.count('plugin "cpp": on_worker_start failed'), 3, r)
        self.assertIn("stopped", r.stderr, r)


class Instances(TrellisTestCase):
    def test_one_library_backs_two_instances_with_their_own_config(self):
        cfg = base_config()
        cfg["plugins"].append({"name": "docs", "path": "static", "config": {"root": "www/docs"}})
        cfg["routes"].insert(0, {"prefix": "/d", "plugin": "docs"})
        s = self.start_server(cfg)
        self.assertEqual(s.get("/d/page.html").body, b"<p>docs page</p>\n")
        self.assertEqual(s.get("/docs/page.html").body, b"<p>docs page</p>\n")
        self.assertEqual(s.get("/notes.txt").body, b"plain notes\n")
        self.assertEqual(s.get("/d/notes.txt").status, 404)

    def test_no_route_is_404(self):
        cfg = base_config()
        cfg["routes"] = [{"prefix": "/hello", "plugin": "hello"}]
        s = self.start_server(cfg)
        self.assertEqual(s.get("/other").status, 404)
        self.assertEqual(s.get("/hello").status, 200)


if __name__ == "__main__":
    main()
