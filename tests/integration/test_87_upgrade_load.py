"""Tier 87: binary upgrade without downtime (issue #13): SIGUSR2 starts the binary at the path the
server was started from, with the listening sockets inherited; once the new process is ready the old
one drains and exits 0; a new binary that fails leaves the old one serving.

The test starts the server from a copy of the binary in its temp dir, so that it can replace that
file (copy to a temp name in the same directory, then rename over it) as a deploy does. The load
test: wrk for 20 s over a plain and a TLS listener at once while the binary is replaced and
upgraded twice: 0 socket errors, 0 non-2xx. Then the failures: a new binary that exits 1, a second
SIGUSR2 while an upgrade is in progress; a Unix socket handed over (not removed); the service
manager told the new main pid.

The new processes are started by the server, not by the test: the test parses their pids from the
log and kills them in its cleanup. It makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so a
new process whose parent exited becomes its child and its exit status can be read.

This file makes its own plain and TLS listeners, so ctest runs it once (the "_load" suffix, see
tests/CMakeLists.txt); it takes about 40 s.
"""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (LOOPBACK, TRELLIS_BIN, TrellisTestCase, base_config, curl,  # noqa: E402
                     tls_settings, wait_for)

HELLO = b"Hello, World!"
DURATION = 20  # seconds of wrk

STARTING_RE = r"SIGUSR2: starting (\S+) \(pid (\d+)\) with the listening sockets"
BUSY_RE = r"SIGUSR2: an upgrade is already in progress"


def ready_re(new: int, old: int) -> str:
    return rf"upgrade: process {new} is ready; draining this one \(pid {old}\)"


def failed_re(new: int) -> str:
    return rf"upgrade: process {new} exited with status (\d+) before it was ready; still serving"


def setUpModule():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort: without it, /proc tells whether a pid lives
        pass


def install(src: Path, dest: Path, text: str | None = None) -> Path:
    """Puts src's bytes (or the script text) at dest as a deploy does: a temp name in the same
    directory, then a rename over dest (a running binary is never written in place)."""
    tmp = dest.with_name(f".{dest.name}.new")
    if text is not None:
        tmp.write_text(text)
    else:
        shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    return dest


def wrk_report(out: str) -> tuple[int, int, list[int]]:
    """(requests, non-2xx/3xx responses, [connect, read, write, timeout] socket errors) as wrk
    prints them (the last two lines only when not zero)."""
    done = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return (int(done.group(1)) if done else -1, int(non2xx.group(1)) if non2xx else 0,
            [int(x) for x in errors.groups()] if errors else [0, 0, 0, 0])


class Upgrade(TrellisTestCase):
    def setUp(self):
        super().setUp()
        self.pids: list[int] = []      # processes the servers started (parsed from their logs)
        self.exits: dict[int, int] = {}  # their exit codes, when the test reaped them
        self.addCleanup(self.stop_spawned)  # runs before the harness's cleanup (LIFO)
        self.bin_dir = self.tmp / "bin"
        self.bin_dir.mkdir()
        self.bin = install(TRELLIS_BIN, self.bin_dir / "trellis")

    # -- processes the test did not start
    def track(self, pid: int):
        if pid not in self.pids:
            self.pids.append(pid)

    def alive(self, pid: int) -> bool:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)  # ours once its parent exited (subreaper)
            if got == pid:
                self.exits[pid] = os.waitstatus_to_exitcode(status)
                return False
            return True
        except ChildProcessError:
            pass
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")

    def ours(self, pid: int) -> bool:
        """The pid is still a server of this test (its command line names a config in our tmp)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            return False
        return str(self.tmp) in cmdline

    def wait_gone(self, pid: int, timeout: float) -> bool:
        return bool(wait_for(lambda: not self.alive(pid), timeout, interval=0.05))

    def stop_spawned(self):
        for pid in self.pids:
            if not (self.alive(pid) and self.ours(pid)):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            if not self.wait_gone(pid, 10):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.wait_gone(pid, 5)

    # -- servers
    def config(self, **overrides) -> dict:
        cfg = base_config(workers=2, **overrides)
        cfg["listen"] = [{"address": LOOPBACK, "port": 0, "transport": "plain"},
                         {"address": LOOPBACK, "port": 0, "transport": "tls"}]
        cfg["tls"] = tls_settings()
        cfg["health"] = {"path": "/healthz"}
        cfg["limits"] = {"shutdown_timeout_ms": 5000}
        return cfg

    def start_copy(self, cfg=None, preexec=None):
        s = self.make_server(cfg or self.config())
        s.start(binary=self.bin, preexec=preexec)
        self.assertEqual(s.transports, ["plain", "tls"][:len(s.listeners)])
        return s

    def serves(self, s, listener_count: int = 2):
        for i in range(listener_count):
            r = curl(s.url("/hello", i))
            self.assertEqual((r.status, r.body), (200, HELLO), r)

    def sigusr2(self, s, pid: int) -> tuple[int, int]:
        """Sends SIGUSR2 to pid; returns (the new process's pid, the log mark before the signal)."""
        mark = s.log_mark()
        os.kill(pid, signal.SIGUSR2)
        m = s.wait_stderr_since(mark, STARTING_RE, 10)
        self.assertIsNotNone(m, f"no 'SIGUSR2: starting' line:\n{s.stderr_since(mark)}")
        new = int(m.group(2))
        self.track(new)
        self.assertNotEqual(new, pid)
        self.assertEqual(m.group(1), str(self.bin), m.group(0))
        return new, mark

    def upgrade(self, s, old: int, timeout: float = 30) -> int:
        """SIGUSR2 to old, waits until the new process is ready and old has exited (code 0);
        returns the new pid."""
        new, mark = self.sigusr2(s, old)
        self.assertIsNotNone(s.wait_stderr_since(mark, ready_re(new, old), timeout),
                             f"process {new} never said ready:\n{s.stderr_since(mark)}")
        if old == s.pid:
            self.assertEqual(s.wait_exit(15), 0, "the old process did not drain and exit 0")
        else:
            self.assertTrue(self.wait_gone(old, 15), f"the old process {old} did not exit")
            if old in self.exits:
                self.assertEqual(self.exits[old], 0, f"the old process {old} exited {self.exits[old]}")
        self.assertTrue(self.alive(new), f"the new process {new} is gone:\n{s.stderr_since(mark)}")
        return new

    def same_file(self, pid: int, path: Path) -> bool:
        """Whether pid runs the file now at path (its executable's inode)."""
        st, exe = os.stat(path), os.stat(f"/proc/{pid}/exe")
        return (st.st_dev, st.st_ino) == (exe.st_dev, exe.st_ino)

    # -- the load test
    def test_two_upgrades_during_20_s_of_wrk_plain_and_tls(self):
        wrk = shutil.which("wrk")
        if wrk is None:
            self.skipTest("wrk is not installed (./dev.sh installs it)")
        s = self.start_copy()
        self.serves(s)
        urls = [s.url("/hello", 0), s.url("/hello", 1)]
        self.assertTrue(urls[0].startswith("http://") and urls[1].startswith("https://"), urls)
        procs = [subprocess.Popen(["timeout", str(DURATION + 30), wrk, "-t1", "-c16", f"-d{DURATION}s", url],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  preexec_fn=harness._die_with_parent) for url in urls]
        pids, under_load = [s.pid], []
        try:
            t0 = time.monotonic()
            for at in (4, 11):  # seconds into the run
                time.sleep(max(0.0, t0 + at - time.monotonic()))  # pacing of the upgrades
                install(TRELLIS_BIN, self.bin)  # the "new" build
                under_load.append(all(p.poll() is None for p in procs))
                pids.append(self.upgrade(s, pids[-1]))
                under_load.append(all(p.poll() is None for p in procs))
            outs = []
            for p in procs:
                out, err = p.communicate(timeout=DURATION + 40)
                outs.append((p.returncode, out.decode(errors="replace"), err.decode(errors="replace")))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
        self.assertEqual(under_load, [True] * 4, "an upgrade began or ended after wrk had stopped")
        for url, (code, out, err) in zip(urls, outs):
            report = f"{url}: wrk exit {code}\n{out}{err}"
            self.assertEqual(code, 0, report)
            requests, non2xx, errors = wrk_report(out)
            self.assertGreater(requests, 1000, report)
            self.assertEqual(non2xx, 0, report)
            self.assertEqual(errors, [0, 0, 0, 0], report)
            if harness.VERBOSE:
                sys.stderr.write(f"\n{report}")
        # Three distinct processes; the last one serves both ports and runs the replaced file.
        self.assertEqual(len(set(pids)), 3, pids)
        final = pids[-1]
        self.assertTrue(self.alive(final))
        self.assertFalse(self.alive(pids[1]))
        self.serves(s)
        self.assertTrue(self.same_file(final, self.bin), "the last process does not run the new file")

    # -- failures
    def test_a_new_binary_that_fails_leaves_the_old_one_serving(self):
        s = self.start_copy()
        install(None, self.bin, "#!/bin/sh\nexit 1\n")
        new, mark = self.sigusr2(s, s.pid)
        m = s.wait_stderr_since(mark, failed_re(new), 15)
        self.assertIsNotNone(m, f"no failure line for {new}:\n{s.stderr_since(mark)}")
        self.assertEqual(m.group(1), "1")
        self.assertTrue(s.running(), "the old process stopped")
        self.serves(s)
        for i in range(2):
            self.assertEqual(curl(s.url("/healthz", i)).status, 200, "the old one thinks it drains")
        self.assertIsNone(s.wait_stderr_since(mark, r"draining this one", 0.2))
        # Not stuck "in progress": a good binary afterwards takes over.
        install(TRELLIS_BIN, self.bin)
        new = self.upgrade(s, s.pid)
        self.serves(s)
        self.assertTrue(self.same_file(new, self.bin))

    def test_a_plugin_that_fails_on_a_worker_leaves_the_old_one_serving(self):
        """Readiness comes only once every worker has started every plugin: a new configuration
        whose plugin refuses on_worker_start fails the upgrade, and the old process keeps its
        sockets, the Unix socket's file included."""
        path = self.tmp / "u.sock"
        cfg = self.config()
        cfg["listen"].append({"address": f"unix:{path}", "transport": "plain"})
        cfg["plugins"].append({"name": "cpp", "path": str(harness.FIXTURE_PLUGIN_DIR / "cpp_plugin.so"),
                               "config": {}})
        cfg["routes"].insert(0, {"prefix": "/cpp", "plugin": "cpp"})
        s = self.start_copy(cfg)
        cfg["plugins"][-1]["config"] = {"fail_worker_start": True}
        s.write_config(cfg)
        new, mark = self.sigusr2(s, s.pid)
        m = s.wait_stderr_since(mark, failed_re(new), 15)
        self.assertIsNotNone(m, f"no failure line for {new}:\n{s.stderr_since(mark)}")
        self.assertIsNone(s.wait_stderr_since(mark, r"draining this one", 0.2), s.stderr_since(mark))
        self.assertTrue(s.running(), "the old process stopped")
        self.serves(s)
        self.assertTrue(os.path.exists(path), "the failed new process removed the old one's socket")
        r = curl("http://localhost/hello", "--unix-socket", str(path))
        self.assertEqual((r.status, r.body), (200, HELLO), r)

    def test_a_second_sigusr2_during_an_upgrade_is_ignored(self):
        s = self.start_copy()
        # The new binary takes 3 s to start: the upgrade is in progress meanwhile.
        install(None, self.bin, f"#!/bin/sh\nsleep 3\nexec {TRELLIS_BIN} \"$@\"\n")
        new, mark = self.sigusr2(s, s.pid)
        os.kill(s.pid, signal.SIGUSR2)
        self.assertIsNotNone(s.wait_stderr_since(mark, BUSY_RE, 2.5),
                             f"no '{BUSY_RE}' line:\n{s.stderr_since(mark)}")
        self.assertTrue(s.running())
        self.serves(s)  # the old one serves while the new one starts
        self.assertIsNotNone(s.wait_stderr_since(mark, ready_re(new, s.pid), 20), s.stderr_since(mark))
        self.assertEqual(s.wait_exit(15), 0)
        log = s.stderr_since(mark)
        self.assertEqual(len(re.findall(STARTING_RE, log)), 1, f"the second SIGUSR2 started another:\n{log}")
        self.assertTrue(self.alive(new))
        self.assertTrue(self.same_file(new, TRELLIS_BIN), "the script's exec did not become the server")
        self.serves(s)

    # -- what else is handed over
    def test_a_unix_socket_is_handed_over_not_removed(self):
        path = self.tmp / "u.sock"
        cfg = self.config()
        cfg["listen"].append({"address": f"unix:{path}", "transport": "plain"})
        s = self.start_copy(cfg)
        self.assertEqual(s.unix_listeners, [str(path)])
        ino = os.stat(path).st_ino
        new = self.upgrade(s, s.pid)
        self.assertTrue(os.path.exists(path), "the old process removed the socket it handed over")
        self.assertEqual(os.stat(path).st_ino, ino, "the socket file was made anew")
        r = curl("http://localhost/hello", "--unix-socket", str(path))
        self.assertEqual((r.status, r.body), (200, HELLO), r)
        self.serves(s)
        # The new process owns it now: removed when that one stops.
        os.kill(new, signal.SIGTERM)
        self.assertTrue(self.wait_gone(new, 15))
        if new in self.exits:
            self.assertEqual(self.exits[new], 0)
        self.assertFalse(os.path.lexists(path), "the socket file outlived the new process")

    def test_the_service_manager_hears_the_new_main_pid(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        name = str(self.tmp / "notify.sock")
        sock.bind(name)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the sender's pid on each message

        def set_socket():
            os.environ["NOTIFY_SOCKET"] = name
        s = self.start_copy(preexec=set_socket)
        old = s.pid
        new = self.upgrade(s, old)
        messages = []  # (sender pid, text)
        sock.settimeout(0.5)
        while True:
            try:
                data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                break
            sender = None
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = struct.unpack("iII", blob[:12])[0]
            messages.append((sender, data.decode(errors="replace")))
        from_old = [text for pid, text in messages if pid == old]
        self.assertTrue(any(f"MAINPID={new}" in text.split("\n") for text in from_old), messages)
        self.assertFalse(any("STOPPING=1" in text.split("\n") for text in from_old),
                         f"the old process said STOPPING=1 on an upgrade: {messages}")


if __name__ == "__main__":
    harness.main()
