"""Tier 88: a rolling restart behind a real HAProxy (issue #13): three Trellis instances, each with
a PROXY-protocol listener trusting only HAProxy and the health endpoint, HAProxy in front
(tests/haproxy/rolling.cfg.in: send-proxy-v2, `option httpchk GET /healthz`, retries on another
server), and wrk through HAProxy for 30 s while each instance in turn is drained with SIGTERM,
waited for (exit 0), restarted on the same port and re-added by HAProxy's health checks (seen on
its stats socket). wrk must see 0 socket errors and 0 non-2xx; each restarted instance must have
served requests again; and what plugins see (the echo plugin's "peer") and the access log show
the client's address from the PROXY header (127.0.0.1 and its port) rather than the socket's
(127.0.0.2, HAProxy's source address). An instance refuses a connection without the header.

Needs haproxy and wrk (Debian packages, ./dev.sh installs them). The "_load" suffix: ctest runs it
once, in the plain pass, label "load" (tests/CMakeLists.txt). About 35 s.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import LOOPBACK, TrellisTestCase, base_config  # noqa: E402

SOURCE_DIR = Path(os.environ.get("TRELLIS_SOURCE_DIR") or Path(__file__).resolve().parents[2])
TEMPLATE = SOURCE_DIR / "tests/haproxy/rolling.cfg.in"
HAPROXY_SOURCE = "127.0.0.2"  # the address HAProxy connects to Trellis from (rolling.cfg.in)
HELLO = b"Hello, World!"
INSTANCES = 3
DURATION = 30          # seconds of wrk
FIRST_DRAIN = 3        # s after wrk starts; then one every DRAIN_EVERY s
DRAIN_EVERY = 7
# Through HAProxy in 30 s; about 800,000 here (2 shared cores), so a run that stalls for most of
# its time fails this even with no error.
MIN_REQUESTS = 50000
MIN_AFTER_READD = 200  # /hello requests each restarted instance must have served


def free_port() -> int:
    """A port free on the loopback now, for HAProxy's frontend (HAProxy cannot report a port 0)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class HAProxy:
    """haproxy -db -f CFG as a child of the test (foreground, dies with it), and its stats socket."""

    def __init__(self, dir: Path, ports: list[int]):
        self.dir = dir
        self.socket_path = dir / "haproxy.sock"
        self.port = free_port()
        text = TEMPLATE.read_text()
        fields = {"STATS_SOCKET": str(self.socket_path), "FRONTEND_PORT": str(self.port)}
        fields.update({f"PORT{i}": str(p) for i, p in enumerate(ports)})
        for name, value in fields.items():
            text = text.replace(f"@{name}@", value)
        leftover = re.findall(r"@[A-Z0-9_]+@", text)
        if leftover:
            raise AssertionError(f"{TEMPLATE}: unfilled fields {leftover}")
        self.cfg = dir / "haproxy.cfg"
        self.cfg.write_text(text)
        self.log_path = dir / "haproxy.log"
        self.proc = None

    def start(self):
        check = subprocess.run(["haproxy", "-c", "-f", str(self.cfg)], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            raise AssertionError(f"haproxy -c: {check.stdout}{check.stderr}")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.cfg)], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=harness._die_with_parent)

    def log_text(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace") if self.log_path.exists() else ""

    def command(self, line: str) -> str:
        """One command on the stats socket (non-interactive: HAProxy answers and closes)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def servers(self) -> dict:
        """{server name: row of `show stat` as a dict} for backend "trellis"; {} when the socket
        is not there yet."""
        try:
            text = self.command("show stat")
        except OSError:
            return {}
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines or not lines[0].startswith("# "):
            return {}
        names = lines[0][2:].split(",")
        rows = [dict(zip(names, line.split(","))) for line in lines[1:]]
        return {r["svname"]: r for r in rows
                if r.get("pxname") == "trellis" and r.get("svname") not in ("BACKEND", "FRONTEND")}

    def status(self, server: str) -> str:
        """"UP", "DOWN", or a transition such as "UP 1/2" / "DOWN 1/2"."""
        return self.servers().get(server, {}).get("status", "")

    def wait_status(self, server: str, want, timeout: float) -> str | None:
        """Polls the stats socket until the server's status satisfies want(status)."""
        return harness.wait_for(lambda: (lambda st: st if want(st) else None)(self.status(server)),
                                timeout, interval=0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_log", None) is not None:
            self._log.close()


def instance_config(port: int) -> dict:
    cfg = base_config(workers=1, limits={"shutdown_timeout_ms": 5000})
    cfg.pop("tls", None)
    cfg["listen"] = [{"address": LOOPBACK, "port": port, "transport": "plain",
                      "proxy_protocol": True, "trusted_proxies": [HAPROXY_SOURCE]}]
    cfg["health"] = {"path": "/healthz"}
    cfg["access_log"] = {"path": "access.log", "format": "combined"}
    return cfg


def hello_clients(server: harness.Server) -> list[str]:
    """The client address (first field) of every /hello line of the instance's access log."""
    path = server.dir / "access.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line.split(" ", 1)[0] for line in text.splitlines() if '"GET /hello HTTP/1.1"' in line]


class RollingRestartBehindHAProxy(TrellisTestCase):
    def setUp(self):
        super().setUp()
        for tool in ("haproxy", "wrk"):
            if shutil.which(tool) is None:
                raise AssertionError(f"{tool} is not installed: Debian package {tool} (./dev.sh installs it)")
        self.haproxy = None
        self.addCleanup(self._stop_haproxy)

    def _stop_haproxy(self):
        if self.haproxy is not None:
            if self._trellis_test_failed() or harness.VERBOSE:
                sys.stderr.write(f"\n----- haproxy output -----\n{self.haproxy.log_text()}\n")
            self.haproxy.stop()

    def start_instance(self, port: int) -> harness.Server:
        s = self.start_server(instance_config(port))
        self.assertEqual(len(s.listeners), 1)
        return s

    def test_rolling_restart_of_3_instances_during_30_s_of_wrk(self):
        # Port 0 at first; each restart binds the port its instance had.
        instances = [self.start_instance(0) for _ in range(INSTANCES)]
        ports = [s.port for s in instances]
        # Without a PROXY header an instance says nothing and closes: the listener really
        # demands it (HAProxy's own checks below prove it accepts a good one).
        with instances[0].conn(timeout=3) as c:
            c.try_send(harness.build_request("GET", "/hello"))
            data, closed = c.read_until_closed(timeout=5)
        self.assertEqual((data, closed), (b"", True))

        self.haproxy = HAProxy(self.tmp, ports)
        self.haproxy.start()
        names = [f"t{i}" for i in range(INSTANCES)]
        for name in names:
            self.assertEqual(self.haproxy.wait_status(name, lambda st: st == "UP", 10.0), "UP",
                             f"{name}: {self.haproxy.servers().get(name)}\n{self.haproxy.log_text()}")
        front = f"http://{LOOPBACK}:{self.haproxy.port}/hello"
        r = harness.curl(front)
        self.assertEqual((r.status, r.body), (200, HELLO), r)
        # What a plugin sees as the peer is the client's own address and port, from the PROXY
        # header (the echo plugin shows request_peer), not HAProxy's 127.0.0.2.
        with harness.Conn(self.haproxy.port, transport="plain") as c:
            c.request("GET", "/echo/peer", [("Connection", "close")])
            r = c.read_response()
            self.assertEqual((r.status, r.json()["peer"]), (200, f"{LOOPBACK}:{c.local_port}"), r)

        wrk = subprocess.Popen(["timeout", str(DURATION + 30), "wrk", "-t2", "-c32", f"-d{DURATION}s",
                                "--timeout", "10s", front],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=harness._die_with_parent)
        timeline, under_load, restarted = [], 0, []
        try:
            t0 = time.monotonic()
            for i, name in enumerate(names):
                # Pacing of the drains across the run (not a synchronisation: every step below
                # waits for what it needs).
                time.sleep(max(0.0, t0 + FIRST_DRAIN + i * DRAIN_EVERY - time.monotonic()))
                under_load += wrk.poll() is None
                old = instances[i]
                start = time.monotonic()
                old.send_signal(signal.SIGTERM)
                down = self.haproxy.wait_status(name, lambda st: st.startswith("DOWN"), 5.0)
                self.assertIsNotNone(down, f"HAProxy did not take {name} out within 5 s after SIGTERM: "
                                           f"{self.haproxy.servers().get(name)}")
                t_down = time.monotonic() - start
                self.assertEqual(old.wait_exit(10.0), 0, f"{name}: drained instance did not exit 0")
                t_exit = time.monotonic() - start
                new = self.start_instance(ports[i])
                self.assertEqual(new.port, ports[i])
                up = self.haproxy.wait_status(name, lambda st: st == "UP", 10.0)
                self.assertEqual(up, "UP", f"HAProxy did not re-add {name} within 10 s: "
                                           f"{self.haproxy.servers().get(name)}")
                t_up = time.monotonic() - start
                instances[i] = new
                restarted.append(new)
                timeline.append(f"{name}: down after {t_down:.2f} s, exited after {t_exit:.2f} s, "
                                f"up again after {t_up:.2f} s")
            under_load += wrk.poll() is None
            out, err = wrk.communicate(timeout=DURATION + 40)
        finally:
            if wrk.poll() is None:
                wrk.kill()
                wrk.communicate()
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        report = f"wrk exit {wrk.returncode}\n{out}{err}\n" + "\n".join(timeline)
        self.assertEqual(under_load, INSTANCES + 1, f"the rolling restart outlasted wrk\n{report}")
        self.assertEqual(wrk.returncode, 0, report)
        done = re.search(r"(\d+) requests in", out)
        self.assertIsNotNone(done, report)
        self.assertGreater(int(done.group(1)), MIN_REQUESTS, report)
        # wrk prints these lines only when the numbers are not zero.
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        self.assertEqual(int(non2xx.group(1)) if non2xx else 0, 0, report)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        self.assertEqual([int(x) for x in errors.groups()] if errors else [0, 0, 0, 0], [0, 0, 0, 0],
                         report)
        # Every server is in the pool at the end.
        self.assertEqual({n: self.haproxy.status(n) for n in names}, {n: "UP" for n in names})

        # Stop the instances (their access logs are complete after exit) and read the logs.
        for s in instances:
            self.assertEqual(s.stop(timeout=10.0), 0)
        for s in restarted:
            self.assertGreaterEqual(len(hello_clients(s)), MIN_AFTER_READD,
                                    f"{s.dir.name} served too little after it was re-added\n{report}")
        clients = [c for s in self.servers for c in hello_clients(s)]
        self.assertTrue(clients)
        # The client's address came from the PROXY header: the socket peer was HAProxy's source.
        self.assertEqual(sorted(set(clients)), [LOOPBACK], report)
        rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
        sys.stderr.write(f"\nrolling restart behind HAProxy: {done.group(0)} {DURATION}s, "
                         f"{rate.group(1) if rate else '?'} requests/s, 0 errors, 0 non-2xx\n"
                         + "\n".join(timeline) + "\n")


if __name__ == "__main__":
    harness.main()
