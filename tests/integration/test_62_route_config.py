"""Tier 62: ABI 1.2 through the real server: per-route plugin settings (routes[].config, handed to
the plugin with each request as JSON text: request_route_config) and the kind of thread a handler
runs on (thread_kind). The fixture is tests/fixtures/plugins/cpp_plugin.cpp, whose /whoami answers
"instance=<n>\\nthread=<kind>\\nconfig=<route config>\\n" through the C++ helper (route_config,
thread_kind, request_header, add_response_header)."""

import copy
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import FIXTURE_PLUGIN_DIR, TrellisTestCase, base_config  # noqa: E402

CPP_PLUGIN = FIXTURE_PLUGIN_DIR / "cpp_plugin.so"


def whoami(r) -> dict:
    """The fixture's answer as {"instance", "thread", "config"}."""
    out = {}
    for line in r.body.decode().splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


def config_with_routes(routes: list) -> dict:
    cfg = base_config(workers=2)
    cfg["plugins"].append({"name": "cpp", "path": str(CPP_PLUGIN)})
    cfg["routes"] = routes + cfg["routes"]
    return cfg


class RouteConfig(TrellisTestCase):
    ROUTES = [
        {"prefix": "/en", "plugin": "cpp", "config": {"lang": "en", "greeting": "hello"}},
        {"prefix": "/fr", "plugin": "cpp", "config": ["bonjour", 2, None, "\u00e9"]},
        {"prefix": "/plain", "plugin": "cpp"},
        {"prefix": "/null", "plugin": "cpp", "config": None},
        {"prefix": "/pool", "plugin": "cpp", "blocking": True, "config": "on the pool"},
    ]

    def setUp(self):
        super().setUp()
        self.assertTrue(CPP_PLUGIN.is_file(), CPP_PLUGIN)
        self.cfg = config_with_routes(copy.deepcopy(self.ROUTES))
        self.s = self.start_server(self.cfg)

    def ask(self, prefix: str, headers=None) -> dict:
        r = self.s.get(prefix + "/whoami", headers)
        self.assertEqual(r.status, 200, r)
        return whoami(r)

    def test_two_routes_to_one_instance_each_see_their_own_config(self):
        en, fr = self.ask("/en"), self.ask("/fr")
        self.assertEqual(en["config"], '{"greeting":"hello","lang":"en"}')
        self.assertEqual(fr["config"], '["bonjour",2,null,"\u00e9"]')
        self.assertEqual(en["instance"], fr["instance"])  # one plugin instance behind both
        # Many requests, interleaved on one keep-alive connection and on two workers, never mix.
        with self.s.conn() as c:
            for i in range(20):
                prefix = ("/en", "/fr")[i % 2]
                c.request("GET", prefix + "/whoami")
                r = c.read_response()
                self.assertEqual(whoami(r)["config"], (en, fr)[i % 2]["config"], (i, r))

    def test_a_route_without_config_sees_an_empty_text(self):
        plain = self.ask("/plain")
        self.assertEqual(plain["config"], "")
        # An explicit null is a value, and differs from no config at all.
        self.assertEqual(self.ask("/null")["config"], "null")

    def test_blocking_route_runs_on_the_pool_and_inline_route_on_a_worker(self):
        self.assertEqual(self.ask("/en")["thread"], "worker")
        pool = self.ask("/pool")
        self.assertEqual(pool["thread"], "pool")
        self.assertEqual(pool["config"], '"on the pool"')
        self.assertEqual(pool["instance"], self.ask("/en")["instance"])

    def test_request_header_and_add_response_header(self):
        r = self.s.get("/en/whoami", [("X-Who", "tester")])
        self.assertEqual((r.status, r.header("X-Asked-By"), r.header("Content-Type")),
                         (200, "tester", "text/plain"), r)
        self.assertEqual(self.s.get("/en/whoami").header("X-Asked-By"), "nobody")
        # The deprecated Request::header overloads still read and write the same headers.
        r = self.s.get("/en/greet")
        self.assertEqual((r.status, r.body, r.header("X-Plugin")), (200, b"C++ says hi to /greet\n", "cpp"), r)

    def test_reload_hands_new_requests_the_new_route_config_and_keeps_the_instance(self):
        before = self.ask("/en")
        cfg = copy.deepcopy(self.cfg)
        cfg["routes"][0]["config"] = {"lang": "de"}
        del cfg["routes"][1]["config"]
        ok, line, _ = self.s.reload(cfg)
        self.assertTrue(ok, line)
        after = self.ask("/en")
        self.assertEqual(after["config"], '{"lang":"de"}')
        self.assertEqual(self.ask("/fr")["config"], "")
        # Only routes changed: the plugin instance (its entry and .so unchanged) was kept.
        self.assertEqual(after["instance"], before["instance"])


if __name__ == "__main__":
    harness.main()
