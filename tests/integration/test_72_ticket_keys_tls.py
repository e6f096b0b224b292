"""Tier 72: TLS session ticket keys shared by instances (issue #13): "tls.ticket_key_file", 80 random
bytes as nginx's ssl_session_ticket_key (`openssl rand 80 > ticket.key`; 48 accepted too). A TLS 1.2
session from instance A resumes on instance B with the same file, not on one with another key.
Rotation: the file replaced and SIGHUP: new tickets use the new key, tickets of the previous key
still resume. A missing, short or unreadable file is a start error naming /tls/ticket_key_file; at
a reload the old keys stay ("reload failed: ...").

Runs once (the "_tls" in the name): openssl s_client -sess_out / -sess_in says "New" or "Reused".
"""

import os
import signal
import socket
import ssl
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (LOOPBACK, TrellisTestCase, base_config, build_request,  # noqa: E402
                     openssl, parse_responses, recv_until_closed, run_trellis, tls_settings,
                     wait_for)

HELLO = b"Hello, World!"


def s_client(port: int, *args: str, timeout: float = 10.0) -> tuple[int, str]:
    """openssl s_client -tls1_2 to 127.0.0.1:port, SNI localhost (bounded); stdin is empty, which
    ends the session once the handshake is done. Returns (exit code, stdout + stderr)."""
    p = subprocess.run([harness.OPENSSL, "s_client", "-connect", f"{LOOPBACK}:{port}",
                        "-servername", "localhost", "-tls1_2", *args],
                       input=b"", capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def new_key(path, size: int = 80):
    """`openssl rand SIZE > path`, written to a temp name and renamed (how a deploy replaces it)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(openssl("rand", str(size)).stdout)
    assert tmp.stat().st_size == size
    os.replace(tmp, path)
    return path


class TicketKeys(TrellisTestCase):
    def server(self, key_file, workers: int = 2, start: bool = True, **tls):
        """A TLS server whose top-level tls has ticket_key_file = key_file (None: none)."""
        cfg = base_config(workers=workers)
        cfg["listen"] = [{"address": LOOPBACK, "port": 0, "transport": "tls"}]
        extra = dict(tls)
        if key_file is not None:
            extra["ticket_key_file"] = str(key_file)
        cfg["tls"] = tls_settings(**extra)
        if not start:
            return self.make_server(cfg)
        return self.start_server(cfg)

    def new_session(self, s, name: str):
        """A full TLS 1.2 handshake with s that gets a ticket; returns the session file."""
        sess = self.tmp / f"{name}.pem"
        rc, out = s_client(s.port, "-sess_out", str(sess))
        self.assertEqual(rc, 0, out)
        self.assertIn("New, TLSv1.2", out)
        self.assertIn("TLS session ticket:", out, "no session ticket issued")
        self.assertTrue(sess.exists() and sess.stat().st_size > 0, out)
        return sess

    def resumes(self, s, sess) -> bool:
        """Whether a handshake with s offering the session in sess resumes it."""
        rc, out = s_client(s.port, "-sess_in", str(sess))
        self.assertEqual(rc, 0, out)
        reused, new = "Reused, TLSv1.2" in out, "New, TLSv1.2" in out
        self.assertTrue(reused != new, f"neither or both of New/Reused: {out[-800:]}")
        return reused

    # -- two instances, one key file
    def test_a_session_from_a_resumes_on_b(self):
        key = new_key(self.tmp / "ticket.key")
        a, b = self.server(key), self.server(key)
        sess = self.new_session(a, "a")
        self.assertTrue(self.resumes(a, sess), "not even resumed on A")
        for attempt in range(3):  # two workers in B: meet both, likely
            self.assertTrue(self.resumes(b, sess), f"A's session did not resume on B ({attempt})")
        # And the other way round.
        sess_b = self.new_session(b, "b")
        self.assertTrue(self.resumes(a, sess_b), "B's session did not resume on A")

    def test_without_the_shared_key_a_session_does_not_resume(self):
        a = self.server(new_key(self.tmp / "a.key"))
        b = self.server(new_key(self.tmp / "b.key"))
        c = self.server(None)  # each process its own random keys
        sess = self.new_session(a, "a")
        self.assertTrue(self.resumes(a, sess))
        self.assertFalse(self.resumes(b, sess), "resumed with another key")
        self.assertFalse(self.resumes(c, sess), "resumed on an instance with no key file")

    def test_a_48_byte_file_is_shared_too(self):
        key = new_key(self.tmp / "ticket48.key", 48)
        a, b = self.server(key), self.server(key)
        self.assertTrue(self.resumes(b, self.new_session(a, "a48")))

    def test_python_client_resumes_on_b_and_is_served(self):
        key = new_key(self.tmp / "ticket.key")
        a, b = self.server(key), self.server(key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cafile=str(harness.suite_pki().ca.cert))

        def get(s, session=None):
            raw = socket.create_connection((LOOPBACK, s.port), timeout=5)
            c = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
            try:
                c.sendall(build_request("GET", "/hello", [("Connection", "close")]))
                data, _ = recv_until_closed(c, 5)
                return c.session, c.session_reused, parse_responses(data)[0]
            finally:
                c.close()
        session, reused, resps = get(a)
        self.assertFalse(reused)
        self.assertTrue(session.has_ticket)
        _, reused, resps = get(b, session)
        self.assertTrue(reused, "A's session did not resume on B")
        self.assertEqual([r.body for r in resps], [HELLO])

    def test_relative_path_is_under_the_config_directory(self):
        s = self.server("ticket.key", start=False)
        new_key(s.dir / "ticket.key")
        s.cwd = str(self.tmp)  # not the config's directory
        s.start()
        b = self.server(s.dir / "ticket.key")
        self.assertTrue(self.resumes(b, self.new_session(s, "rel")))

    # -- rotation
    def test_rotation_keeps_the_previous_key_for_decryption(self):
        key = new_key(self.tmp / "ticket.key")
        key1 = key.read_bytes()
        a = self.server(key)
        old = self.new_session(a, "old")
        self.assertTrue(self.resumes(a, old))
        new_key(key)
        self.assertNotEqual(key.read_bytes(), key1)
        ok, line, _ = a.reload()
        self.assertTrue(ok, line)
        # An instance that only knows the new key.
        c = self.server(key)
        # The workers take up the new key through their mailboxes: ask until a fresh session is
        # one C resumes (a ticket made with the new key), then every fresh one must be.
        got = wait_for(lambda: self.resumes(c, self.new_session(a, "probe")), 5, interval=0.1)
        self.assertTrue(got, "no session from A after the rotation resumed on C (new key only)")
        for i in range(4):
            self.assertTrue(self.resumes(c, self.new_session(a, f"new{i}")),
                            f"a session made after the rotation did not resume on C ({i})")
        # Tickets of the previous key still resume on A, never on C.
        for attempt in range(3):
            self.assertTrue(self.resumes(a, old), f"the old session no longer resumes on A ({attempt})")
        self.assertFalse(self.resumes(c, old), "C resumed a ticket of a key it never had")

    # -- bad files
    def test_bad_file_at_start_names_the_pointer_and_the_file(self):
        short = self.tmp / "short.key"
        short.write_bytes(os.urandom(12))
        odd = self.tmp / "odd.key"
        odd.write_bytes(os.urandom(81))
        directory = self.tmp / "adir.key"
        directory.mkdir()
        cases = [("missing", self.tmp / "missing.key"), ("12 bytes", short), ("81 bytes", odd),
                 ("a directory", directory)]
        for name, path in cases:
            with self.subTest(name):
                s = self.server(path, start=False)
                s.start(wait=False)
                code = s.wait_exit(10)
                err = s.stderr_text()
                self.assertEqual(code, 1, err)
                self.assertIn("/tls/ticket_key_file", err)
                self.assertIn(str(path), err)
                self.assertNotIn("listening on", err)
                r = run_trellis("--check", "--config", str(s.config_path))
                self.assertEqual(r.returncode, 1, r)
                self.assertIn("/tls/ticket_key_file", r.stderr, r)
                self.assertNotIn("configuration OK", r.output, r)

    def test_bad_file_in_a_listener_tls_names_its_pointer(self):
        cfg = base_config()
        cfg["listen"] = [{"address": LOOPBACK, "port": 0, "transport": "tls",
                          "tls": {"ticket_key_file": str(self.tmp / "missing.key")}}]
        cfg["tls"] = tls_settings()
        s = self.make_server(cfg)
        s.start(wait=False)
        self.assertEqual(s.wait_exit(10), 1, s.stderr_text())
        self.assertIn("/listen/0/tls/ticket_key_file", s.stderr_text())

    def test_bad_file_at_reload_keeps_the_old_keys(self):
        key = new_key(self.tmp / "ticket.key")
        a = self.server(key)
        sess = self.new_session(a, "before")
        self.assertTrue(self.resumes(a, sess))
        b = self.server(key)  # the same key as A had
        for name, spoil in (("5 bytes", lambda: key.write_bytes(os.urandom(5))),
                            ("missing", lambda: key.unlink())):
            with self.subTest(name):
                spoil()
                mark = a.log_mark()
                a.send_signal(signal.SIGHUP)
                m = a.wait_stderr_since(mark, r"^.*reload failed:.*$", timeout=10)
                self.assertIsNotNone(m, f"no 'reload failed' line: {a.stderr_since(mark)}")
                self.assertIn("ticket_key_file", m.group(0))
                # Refused as a whole: no new generation either.
                self.assertNotRegex(a.stderr_since(mark), r"reload: generation \d+ active")
                self.assertTrue(a.running())
                for attempt in range(3):
                    self.assertTrue(self.resumes(a, sess), f"the old session no longer resumes ({attempt})")
                # New tickets are still made with the kept key: B (same key) resumes them.
                self.assertTrue(self.resumes(b, self.new_session(a, f"after-{name.split()[0]}")))


if __name__ == "__main__":
    harness.main()
