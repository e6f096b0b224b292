"""Tier 92: SIGHUP under load (issue #6): "20 SIGHUPs during a 60 s wrk run, plain and TLS:
0 socket errors, 0 non-2xx". Two valid configurations alternate: the second adds a route wrk
never hits and changes the configuration of the plugin wrk does hit (so its instance is created
anew on every reload while requests run on the old one).

This file makes its own plain and TLS listeners, so ctest runs it once (the "_load" suffix, see
tests/CMakeLists.txt); it takes about two minutes.
"""

import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import LOOPBACK, TrellisTestCase, base_config, tls_settings  # noqa: E402

HELLO = b"Hello, World!"
DURATION = 60   # seconds of wrk
RELOADS = 20


def config(transport: str, variant: str) -> dict:
    cfg = base_config(workers=2)
    cfg["listen"] = [{"address": LOOPBACK, "port": 0, "transport": transport}]
    if transport == "plain":
        cfg.pop("tls", None)
    else:
        cfg["tls"] = tls_settings()
    if variant == "b":
        # A route wrk does not hit, and a changed config for the plugin it does hit.
        cfg["plugins"].append({"name": "echo2", "path": "echo"})
        cfg["routes"].insert(0, {"prefix": "/extra", "plugin": "echo2"})
        cfg["plugins"] = [dict(p, config={"variant": "b"}) if p["name"] == "hello" else p
                          for p in cfg["plugins"]]
    return cfg


class ReloadUnderLoad(TrellisTestCase):
    def run_load(self, transport: str):
        wrk = shutil.which("wrk")
        if wrk is None:
            self.skipTest("wrk is not installed (./dev.sh installs it)")
        a, b = config(transport, "a"), config(transport, "b")
        s = self.start_server(a)
        self.assertEqual(s.transports, [transport])
        self.assertEqual(s.get("/hello").body, HELLO)
        self.assertEqual(s.get("/extra/x").status, 404)  # only in b
        url = s.url("/hello")
        self.assertTrue(url.startswith("https://" if transport == "tls" else "http://"), url)
        proc = subprocess.Popen(["timeout", str(DURATION + 60), wrk, "-t2", "-c64", f"-d{DURATION}s", url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=harness._die_with_parent)
        generations, outcomes, under_load = [], [], 0
        try:
            t0 = time.monotonic()
            spacing = (DURATION - 4) / RELOADS  # from 2 s in to 2 s before the end
            for i in range(RELOADS):
                time.sleep(max(0.0, t0 + 2 + i * spacing - time.monotonic()))  # pacing of the reloads
                under_load += proc.poll() is None
                ok, line, generation = s.reload(b if i % 2 == 0 else a)
                outcomes.append((ok, line))
                generations.append(generation)
            out, err = proc.communicate(timeout=DURATION + 70)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        report = f"wrk exit {proc.returncode}\n{out}{err}"
        self.assertEqual([line for ok, line in outcomes if not ok], [], "reloads refused")
        self.assertEqual(generations, list(range(generations[0], generations[0] + RELOADS)))
        self.assertEqual(under_load, RELOADS, f"only {under_load} of {RELOADS} reloads came while wrk ran")
        self.assertEqual(proc.returncode, 0, report)
        done = re.search(r"(\d+) requests in", out)
        self.assertIsNotNone(done, report)
        self.assertGreater(int(done.group(1)), 1000, report)
        # wrk prints these lines only when the numbers are not zero.
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        self.assertEqual(int(non2xx.group(1)) if non2xx else 0, 0, report)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        self.assertEqual([int(x) for x in errors.groups()] if errors else [0, 0, 0, 0], [0, 0, 0, 0],
                         report)
        # The last reload (i = 19) went back to a: /extra is gone again, /hello answers.
        self.assertEqual(s.get("/hello").body, HELLO)
        self.assertEqual(s.get("/extra/x").status, 404)
        self.assertTrue(s.running())
        if harness.VERBOSE:
            sys.stderr.write(f"\n{transport}: {out}")

    def test_20_reloads_during_60_s_of_wrk_plain(self):
        self.run_load("plain")

    def test_20_reloads_during_60_s_of_wrk_tls(self):
        self.run_load("tls")


if __name__ == "__main__":
    harness.main()
