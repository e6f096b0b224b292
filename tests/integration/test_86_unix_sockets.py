"""Tier 86: Unix-domain socket listeners (issue #13): "address": "unix:PATH" next to a TCP listener,
for a balancer on the same machine. Served by curl --unix-socket and raw clients (TLS over the
socket on the tls and auto passes), mode/owner/group applied after bind, "unix:" as the peer, the
file removed at exit; the PROXY protocol and X-Forwarded-For from a trusted "unix" peer.

Bad input: the path is a regular file (start fails, the file untouched), its directory cannot be
written, a live socket of another process (start fails "Address already in use", the other keeps
its socket), a stale socket file (replaced), Unix-only keys on a TCP listener (config error).

Runs once per transport (TRELLIS_TEST_TRANSPORT): the Unix listener speaks what base_config()'s
TCP listener speaks.
"""

import grp
import json
import os
import pwd
import re
import socket
import stat
import struct
import sys
import threading

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (TRANSPORT, TrellisTestCase, base_config, build_request,  # noqa: E402
                     client_context, curl, parse_responses, recv_until_closed, run_trellis, wait_for)

# The ways a client may speak to the Unix listener on this pass: (scheme, TLS?).
SCHEMES = {"plain": [("http", False)], "tls": [("https", True)],
           "auto": [("http", False), ("https", True)]}[TRANSPORT]


def unix_config(path, transport: str = TRANSPORT, unix_first: bool = False, **listener) -> dict:
    """base_config() plus a Unix listener at path (listen[1], or listen[0] with unix_first), of the
    same transport as the TCP one, with the extra listener keys given."""
    cfg = base_config()
    entry = {"address": f"unix:{path}", "transport": transport, **listener}
    if unix_first:
        cfg["listen"].insert(0, entry)
    else:
        cfg["listen"].append(entry)
    return cfg


def unix_connect(path, timeout: float = 5.0) -> socket.socket:
    so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    so.settimeout(timeout)
    try:
        so.connect(str(path))
    except BaseException:
        so.close()
        raise
    return so


def unix_exchange(path, raw: bytes, tls: bool, prefix: bytes = b"", timeout: float = 5.0):
    """Connects to the Unix socket, sends prefix in clear (a PROXY header), then raw over TLS
    (tls) or in clear; returns (bytes until close, closed)."""
    so = unix_connect(path, timeout)
    try:
        if prefix:
            so.sendall(prefix)
        if tls:
            so = client_context().wrap_socket(so, server_hostname="localhost")
            so.settimeout(timeout)
        so.sendall(raw)
        return recv_until_closed(so, timeout)
    finally:
        so.close()


def socket_alive(path) -> bool:
    try:
        unix_connect(path, 2).close()
        return True
    except OSError:
        return False


def is_socket(path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def other_owner() -> tuple[str, str, int, int]:
    """(user, group, uid, gid) to give the socket: as root, nobody's (so that a chown that did not
    happen shows), else the current user's own."""
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("nobody")
            gr = grp.getgrgid(pw.pw_gid)
            return pw.pw_name, gr.gr_name, pw.pw_uid, gr.gr_gid
        except KeyError:
            pass
    pw = pwd.getpwuid(os.getuid())
    gr = grp.getgrgid(os.getgid())
    return pw.pw_name, gr.gr_name, pw.pw_uid, gr.gr_gid


class UnixCase(TrellisTestCase):
    def setUp(self):
        super().setUp()
        self.path = self.tmp / "t.sock"

    def unix_get(self, target: str, tls: bool, headers=(), path=None, prefix: bytes = b""):
        """One request over the Unix socket (Connection: close); returns the response."""
        data, closed = unix_exchange(path or self.path,
                                     build_request("GET", target, [("Connection", "close"), *headers]),
                                     tls, prefix)
        resps, rest = parse_responses(data)
        self.assertEqual(len(resps), 1, f"expected one response, got {data[:300]!r}")
        self.assertEqual(resps[0].status, 200, resps[0])
        return resps[0]

    def start_fails(self, cfg: dict) -> str:
        """Starts a server that must exit 1 without serving; returns its stderr."""
        s = self.make_server(cfg)
        s.start(wait=False)
        code = s.wait_exit(10)
        self.assertEqual(code, 1, s.stderr_text())
        return s.stderr_text()


class UnixListener(UnixCase):
    def test_serves_curl_and_raw_clients_with_a_unix_peer(self):
        s = self.start_server(unix_config(self.path))
        self.assertEqual(s.unix_listeners, [str(self.path)])
        self.assertTrue(is_socket(self.path))
        line = {"plain": rf"\[info\] listening on unix:{re.escape(str(self.path))}$",
                "tls": rf"\[info\] listening on https\+unix:{re.escape(str(self.path))}$",
                "auto": rf"\[info\] listening on \S*unix:{re.escape(str(self.path))}\b"}[TRANSPORT]
        self.assertRegex(s.stderr_text(), re.compile(line, re.M))
        for scheme, tls in SCHEMES:
            with self.subTest(client="curl", scheme=scheme):
                r = curl(f"{scheme}://localhost/echo/curl-{scheme}", "--unix-socket", str(self.path))
                self.assertEqual(r.status, 200, r)
                j = json.loads(r.body)
                self.assertEqual(j["path"], f"/echo/curl-{scheme}")
                self.assertTrue(j["peer"].startswith("unix:"), j["peer"])
                self.assertEqual(j["transport"]["name"], "tls" if tls else "plain", j["transport"])
            with self.subTest(client="raw keep-alive", scheme=scheme):
                raw = b"".join(build_request("GET", f"/echo/ka{i}") for i in range(2))
                raw += build_request("GET", "/echo/ka2", [("Connection", "close")])
                data, closed = unix_exchange(self.path, raw, tls)
                resps, rest = parse_responses(data)
                self.assertEqual([r.status for r in resps], [200, 200, 200], data[:400])
                for r in resps:
                    self.assertTrue(r.json()["peer"].startswith("unix:"), r.json()["peer"])
                self.assertTrue(closed)
        # The TCP listener next to it is untouched.
        j = s.get("/echo/tcp").json()
        self.assertTrue(j["peer"].startswith("127.0.0.1:"), j["peer"])

    def test_access_log_names_the_unix_peer(self):
        log = self.tmp / "access.log"
        cfg = unix_config(self.path)
        cfg["access_log"] = str(log)
        self.start_server(cfg)
        scheme, tls = SCHEMES[0]
        self.unix_get("/echo/logged", tls)

        def line():
            text = log.read_text(errors="replace") if log.exists() else ""
            return next((ln for ln in text.splitlines() if '"GET /echo/logged HTTP/1.1"' in ln), None)
        ln = wait_for(line, 5)
        self.assertIsNotNone(ln, log.read_text() if log.exists() else "(no access log)")
        self.assertTrue(ln.split(" ", 1)[0].startswith("unix"), ln)

    def test_relative_path_is_under_the_config_directory(self):
        s = self.make_server(unix_config("rel.sock"), cwd=self.tmp)  # cwd: not the config's dir
        s.start()
        self.assertTrue(is_socket(s.dir / "rel.sock"), list(s.dir.iterdir()))
        self.assertFalse((self.tmp / "rel.sock").exists())
        self.unix_get("/hello", SCHEMES[0][1], path=s.dir / "rel.sock")

    def test_mode_owner_and_group(self):
        user, group, uid, gid = other_owner()
        s = self.start_server(unix_config(self.path, mode="0660", owner=user, group=group))
        st = os.lstat(self.path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(oct(st.st_mode & 0o7777), oct(0o660))
        self.assertEqual((st.st_uid, st.st_gid), (uid, gid), f"wanted {user}:{group}")
        self.unix_get("/hello", SCHEMES[0][1])
        # Another mode on another socket: the setting, not a default, made it.
        other = self.tmp / "other.sock"
        self.start_server(unix_config(other, mode="0600"))
        self.assertEqual(oct(os.lstat(other).st_mode & 0o7777), oct(0o600))
        self.assertTrue(s.running())

    def test_workers_share_the_one_socket(self):
        cfg = unix_config(self.path)
        cfg["workers"] = 2
        self.start_server(cfg)
        scheme, tls = SCHEMES[0]
        failures = []

        def client(k):
            for i in range(8):
                try:
                    data, closed = unix_exchange(
                        self.path, build_request("GET", "/hello", [("Connection", "close")]), tls)
                    resps, _ = parse_responses(data)
                    if [r.status for r in resps] != [200]:
                        failures.append((k, i, data[:200]))
                except OSError as e:
                    failures.append((k, i, repr(e)))
        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(failures, [])

    def test_socket_file_removed_at_exit(self):
        s = self.start_server(unix_config(self.path))
        self.assertTrue(is_socket(self.path))
        self.assertEqual(s.stop(), 0)
        self.assertFalse(os.path.lexists(self.path), "the socket file outlived the server")

    def test_a_stale_socket_file_is_replaced(self):
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(self.path))
        stale.close()  # no unlink: what a crashed server leaves
        self.assertTrue(is_socket(self.path))
        self.assertFalse(socket_alive(self.path))
        s = self.start_server(unix_config(self.path))
        self.assertEqual(s.unix_listeners, [str(self.path)])
        self.unix_get("/hello", SCHEMES[0][1])

    def test_only_a_unix_listener(self):
        cfg = unix_config(self.path)
        cfg["listen"] = cfg["listen"][1:]
        s = self.start_server(cfg)
        self.assertEqual(s.listeners, [])
        self.assertEqual(s.unix_listeners, [str(self.path)])
        self.unix_get("/hello", SCHEMES[0][1])


class UnixBadInput(UnixCase):
    def test_a_live_socket_of_another_trellis(self):
        first = self.start_server(unix_config(self.path))
        err = self.start_fails(unix_config(self.path))
        self.assertIn("Address already in use", err)
        self.assertIn(str(self.path), err)
        # The first one keeps its socket: the file is still there, still its, still served.
        self.assertTrue(is_socket(self.path))
        scheme, tls = SCHEMES[0]
        r = curl(f"{scheme}://localhost/hello", "--unix-socket", str(self.path))
        self.assertEqual((r.status, r.body), (200, b"Hello, World!"), r)
        self.assertTrue(first.running())

    def test_a_live_socket_of_another_program(self):
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(str(self.path))
        holder.listen(4)
        err = self.start_fails(unix_config(self.path))
        self.assertIn("Address already in use", err)
        self.assertIn(str(self.path), err)
        so = unix_connect(self.path)  # still the holder's
        self.addCleanup(so.close)
        holder.settimeout(2)
        conn, _ = holder.accept()
        conn.close()

    def test_a_regular_file_at_the_path_is_left_alone(self):
        self.path.write_text("precious\n")
        err = self.start_fails(unix_config(self.path))
        self.assertIn("exists and is not a socket", err)
        self.assertIn(str(self.path), err)
        self.assertEqual(self.path.read_text(), "precious\n", "the server touched a regular file")

    def test_a_directory_that_cannot_be_written(self):
        (self.tmp / "file").write_text("not a directory\n")
        cases = [(self.tmp / "missing" / "t.sock", "No such file or directory"),
                 (self.tmp / "file" / "x.sock", "Not a directory")]
        if os.geteuid() != 0:  # root writes anywhere
            ro = self.tmp / "ro"
            ro.mkdir(mode=0o500)
            self.addCleanup(os.chmod, ro, 0o700)
            cases.append((ro / "t.sock", "Permission denied"))
        for path, strerror in cases:
            with self.subTest(str(path)):
                err = self.start_fails(unix_config(path))
                self.assertIn(str(path), err)
                self.assertIn(strerror, err)
        self.assertFalse((self.tmp / "missing").exists(), "the server made the directory")


class UnixProxies(UnixCase):
    """"trusted_proxies": ["unix"] trusts the peers of a Unix listener (a balancer on the same
    machine): their PROXY header and X-Forwarded-For are believed, nobody else's."""

    V1 = b"PROXY TCP4 192.0.2.10 198.51.100.1 5678 443\r\n"
    V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00]) + struct.pack("!H", 0)

    def test_proxy_protocol_from_a_trusted_unix_peer(self):
        self.start_server(unix_config(self.path, proxy_protocol=True, trusted_proxies=["unix"]))
        for scheme, tls in SCHEMES:
            with self.subTest(scheme=scheme):
                r = self.unix_get("/echo/pp", tls, prefix=self.V1)
                self.assertEqual(r.json()["peer"], "192.0.2.10:5678")
                r = self.unix_get("/echo/pp-local", tls, prefix=self.V2_LOCAL)
                self.assertTrue(r.json()["peer"].startswith("unix:"), r.json()["peer"])

    def test_proxy_protocol_without_unix_in_trusted_proxies_is_a_config_error(self):
        # A Unix peer has no address, so no other entry could ever let its header in.
        cfg = unix_config(self.path, proxy_protocol=True, trusted_proxies=["127.0.0.1"])
        p = self.tmp / "pp.json"
        p.write_text(json.dumps(cfg))
        r = run_trellis("--check", "--config", str(p))
        self.assertEqual(r.returncode, 1, r)
        self.assertRegex(r.stderr, r'/listen/\d+/trusted_proxies: a "unix:PATH" listener with "proxy_protocol" '
                                   r'needs "unix"')

    def test_forwarded_for_believed_from_unix_only_when_trusted(self):
        xff = [("X-Forwarded-For", "198.51.100.9, 203.0.113.7")]
        self.start_server(unix_config(self.path, trusted_proxies=["unix"]))
        scheme, tls = SCHEMES[0]
        peer = self.unix_get("/echo/xff", tls, xff).json()["peer"]
        self.assertTrue(peer == "203.0.113.7" or peer.startswith("203.0.113.7:"), peer)
        # The TCP listener next to it (no trusted_proxies) believes nobody.
        j = self.servers[0].get("/echo/tcp-xff", xff).json()
        self.assertTrue(j["peer"].startswith("127.0.0.1:"), j["peer"])
        other = self.tmp / "other.sock"
        self.start_server(unix_config(other, trusted_proxies=["127.0.0.1"]))
        peer = self.unix_get("/echo/xff", tls, xff, path=other).json()["peer"]
        self.assertTrue(peer.startswith("unix:"), peer)


class UnixConfig(UnixCase):
    def test_errors_name_the_json_pointer(self):
        def tcp_with(**keys):
            cfg = base_config()
            cfg["listen"][0].update(keys)
            return cfg
        user, group, _, _ = other_owner()
        cases = [
            (tcp_with(mode="0660"), "/listen/0/mode"),
            (tcp_with(owner=user), "/listen/0/owner"),
            (tcp_with(group=group), "/listen/0/group"),
            (unix_config(self.path, port=8080), "/listen/1/port"),
            (unix_config(self.path, mode="0999"), "/listen/1/mode"),
            (unix_config(self.path, mode="rw-rw----"), "/listen/1/mode"),
            (unix_config(self.path, owner="no-such-user-trellis"), "/listen/1/owner"),
            (unix_config(self.path, group="no-such-group-trellis"), "/listen/1/group"),
        ]
        empty = base_config()
        empty["listen"].append({"address": "unix:", "transport": TRANSPORT})
        cases.append((empty, "/listen/1/address"))
        for cfg, pointer in cases:
            with self.subTest(pointer=pointer, listen=cfg["listen"]):
                r = run_trellis("--check", "--config", str(self.write_config_file(cfg)))
                self.assertFalse(r.timed_out, r)
                self.assertEqual(r.returncode, 1, r)
                self.assertIn(pointer, r.stderr, r)
                self.assertNotIn("configuration OK", r.output, r)
        self.assertFalse(os.path.lexists(self.path))

    def test_good_config_passes_check_without_making_the_socket(self):
        user, group, _, _ = other_owner()
        p = self.write_config_file(unix_config(self.path, mode="0660", owner=user, group=group,
                                   proxy_protocol=True, trusted_proxies=["unix"]))
        r = run_trellis("--check", "--config", str(p))
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration OK", r.stdout, r)
        self.assertFalse(os.path.lexists(self.path), "--check made the socket")


if __name__ == "__main__":
    harness.main()
