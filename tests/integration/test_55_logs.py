"""Tier 55: the logs. The access log in its object form ({"path", "format"}) as combined lines or
JSON lines (every line valid JSON whatever the client sent), on stdout or in a file; config errors
naming the pointer; SIGUSR1 reopening the access log and the "error_log" file after logrotate
renamed them; the error log's rate limit per call site ("(N similar messages suppressed)").
"""

import calendar
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (FIXTURE_PLUGIN_DIR, LOG_LINE_RE, TrellisTestCase, base_config,  # noqa: E402
                     build_request, parse_responses, run_trellis, wait_for)

COMBINED_RE = re.compile(
    r'^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "(?P<request>[^"]*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$')
ISO_MS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
JSON_KEYS = ["time", "remote_addr", "method", "target", "protocol", "status", "body_bytes", "referer",
             "user_agent"]
# What a client can put in a header: a quote, a tab (a control byte), a byte that is not UTF-8,
# and valid UTF-8. (llhttp refuses CR, LF and the other control bytes in a header value.)
NASTY_AGENT = b'evil "agent"\tx\xff\xfe caf\xc3\xa9'
NASTY_AGENT_DECODED = 'evil "agent"\tx\u00ff\u00fe caf\u00e9'


def file_lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    return [ln for ln in path.read_bytes().split(b"\n") if ln.strip()]


class LogsTestCase(TrellisTestCase):
    def wait_lines(self, path: Path, count: int, timeout: float = 5.0) -> list[bytes]:
        lines = wait_for(lambda: (lambda ls: ls if len(ls) >= count else None)(file_lines(path)), timeout)
        self.assertIsNotNone(lines, f"{path} did not get {count} line(s): {file_lines(path)!r}")
        return lines

    def raw_request(self, s, raw: bytes):
        with self.conn(s) as c:
            c.send(raw)
            data, _ = c.read_until_closed()
        resps, _ = parse_responses(data)
        self.assertEqual(len(resps), 1, data[:300])
        return resps[0]


class AccessLogFormats(LogsTestCase):
    def test_object_form_combined(self):
        log = self.tmp / "access.log"
        s = self.start_server(base_config(access_log={"path": str(log), "format": "combined"}))
        self.assertEqual(s.get("/hello", headers={"User-Agent": "itest/1"}).status, 200)
        lines = self.wait_lines(log, 1)
        self.assertEqual(len(lines), 1, lines)
        m = COMBINED_RE.match(lines[0].decode())
        self.assertIsNotNone(m, lines[0])
        self.assertEqual((m["request"], m["status"], m["bytes"], m["agent"]),
                         ("GET /hello HTTP/1.1", "200", "13", "itest/1"))

    def test_object_form_format_defaults_to_combined(self):
        log = self.tmp / "access.log"
        s = self.start_server(base_config(access_log={"path": str(log)}))
        s.get("/hello")
        self.assertRegex(self.wait_lines(log, 1)[0].decode(), COMBINED_RE)

    def test_json_lines(self):
        log = self.tmp / "access.json"
        s = self.start_server(base_config(access_log={"path": str(log), "format": "json"}))
        before = time.time()
        r = self.raw_request(s, b"GET /hello?x=%22y HTTP/1.1\r\nHost: a\r\nUser-Agent: " + NASTY_AGENT +
                             b"\r\nReferer: http://ref.test/p?q=\"1\"\r\nConnection: close\r\n\r\n")
        self.assertEqual(r.status, 200)
        self.assertEqual(s.get("/missing.html").status, 404)
        self.assertEqual(s.get("/echo/post", method="POST", body=b"abc").status, 200)
        r = self.raw_request(s, b"GET /hello HTTP/1.0\r\n\r\n")
        self.assertEqual(r.status, 200)
        lines = self.wait_lines(log, 4)
        self.assertEqual(len(lines), 4, lines)
        entries = []
        for raw in lines:
            text = raw.decode("utf-8")  # strict: every line is valid UTF-8
            entry = json.loads(text)
            self.assertIsInstance(entry, dict, text)
            for key in JSON_KEYS:
                self.assertIn(key, entry, text)
            self.assertRegex(entry["time"], ISO_MS_RE)
            stamp = calendar.timegm(time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S"))
            self.assertLess(abs(stamp - before), 30, entry["time"])
            self.assertEqual(entry["remote_addr"], "127.0.0.1")
            self.assertIsInstance(entry["status"], int)
            self.assertIsInstance(entry["body_bytes"], int)
            self.assertIsInstance(entry["request_time_ms"], (int, float))
            self.assertGreaterEqual(entry["request_time_ms"], 0)
            self.assertLess(entry["request_time_ms"], 10000)
            entries.append(entry)
        first = entries[0]
        self.assertEqual((first["method"], first["target"], first["protocol"], first["status"],
                          first["body_bytes"]), ("GET", "/hello?x=%22y", "HTTP/1.1", 200, 13))
        self.assertEqual(first["user_agent"], NASTY_AGENT_DECODED)
        self.assertEqual(first["referer"], 'http://ref.test/p?q="1"')
        # The escapes themselves: control bytes and non-UTF-8 bytes as \u00XX, UTF-8 kept.
        self.assertIn(rb'"user_agent":"evil \"agent\"\u0009x\u00ff\u00fe caf' + b"\xc3\xa9" + b'"', lines[0])
        self.assertEqual((entries[1]["target"], entries[1]["status"], entries[1]["referer"]),
                         ("/missing.html", 404, ""))
        self.assertEqual((entries[2]["method"], entries[2]["target"], entries[2]["status"]),
                         ("POST", "/echo/post", 200))
        self.assertEqual((entries[3]["protocol"], entries[3]["user_agent"]), ("HTTP/1.0", ""))

    def test_json_line_for_a_malformed_request_is_valid_json(self):
        log = self.tmp / "access.json"
        s = self.start_server(base_config(access_log={"path": str(log), "format": "json"}))
        r = self.raw_request(s, b"GET /a\xffb HTTP/1.1\r\nHost: a\r\nUser-Agent: x\x01y\r\n\r\n")
        self.assertEqual(r.status, 400)
        entry = json.loads(self.wait_lines(log, 1)[0].decode("utf-8"))
        self.assertEqual(entry["status"], 400)

    def test_json_to_stdout(self):
        s = self.start_server(base_config(access_log={"path": "-", "format": "json"}))
        s.get("/hello")

        def got():
            return [ln for ln in s.stdout_text().splitlines() if '"/hello"' in ln]
        lines = wait_for(got, 5)
        self.assertTrue(lines, f"no JSON access log line on stdout: {s.stdout_text()!r}")
        entry = json.loads(lines[0])
        self.assertEqual((entry["method"], entry["target"], entry["status"]), ("GET", "/hello", 200))
        self.assertNotIn('"/hello"', s.stderr_text())

    def test_string_form_still_works(self):
        log = self.tmp / "access.log"
        s = self.start_server(base_config(access_log=str(log)))
        s.get("/hello")
        self.assertRegex(self.wait_lines(log, 1)[0].decode(), COMBINED_RE)


class LogConfigErrors(LogsTestCase):
    CASES = [
        ({"path": "a.log", "format": "xml"}, None, "/access_log/format", ["combined", "json", "xml"]),
        ({"path": "a.log", "format": 3}, None, "/access_log/format", ["string"]),
        ({"path": "a.log", "colour": "red"}, None, "/access_log/colour", ["unknown key", "path", "format"]),
        ({"path": ""}, None, "/access_log/path", ["non-empty"]),
        ({"path": 5}, None, "/access_log/path", ["string"]),
        ([], None, "/access_log", ["string", "path", "format"]),
        ("off", 7, "/error_log", ["string"]),
        ("off", "", "/error_log", ["non-empty"]),
    ]

    def test_errors_name_the_pointer(self):
        for access_log, error_log, pointer, words in self.CASES:
            with self.subTest(pointer=pointer, access_log=access_log, error_log=error_log):
                cfg = base_config(access_log=access_log)
                if error_log is not None:
                    cfg["error_log"] = error_log
                d = self.tmp / "cfg"
                d.mkdir(exist_ok=True)
                p = d / "server.json"
                p.write_text(json.dumps(cfg))
                for args in (["--check"], []):
                    r = run_trellis(*args, "--config", str(p), timeout=5)
                    self.assertEqual(r.returncode, 1, r)
                    lines = r.stderr_lines
                    self.assertEqual(len(lines), 1, r)
                    self.assertIn(f"{p}: {pointer}: ", lines[0])
                    for w in words:
                        self.assertIn(w, lines[0])

    def test_an_error_log_that_cannot_be_opened_stops_the_start_on_stderr(self):
        missing = self.tmp / "no" / "such" / "dir" / "error.log"
        s = self.make_server(base_config(error_log=str(missing)))
        s.start(wait=False)
        code = s.wait_exit(10)
        self.assertEqual(code, 1, s.stderr_text())
        self.assertIn(f"error_log {missing}: cannot open", s.stderr_text())
        self.assertNotIn("listening on", s.stderr_text())


class Reopen(LogsTestCase):
    def test_sigusr1_reopens_the_access_log_after_a_rename(self):
        log = self.tmp / "access.log"
        rotated = self.tmp / "access.log.1"
        s = self.start_server(base_config(access_log={"path": str(log), "format": "json"}))
        s.get("/echo/before")
        self.wait_lines(log, 1)
        os.rename(log, rotated)
        mark = s.log_mark()
        s.send_signal(signal.SIGUSR1)
        self.assertIsNotNone(
            s.wait_stderr_since(mark, r"\[info\] SIGUSR1: reopened access log " + re.escape(str(log)) + "$"),
            s.stderr_since(mark))
        s.get("/echo/after")
        s.get("/echo/after2")
        new = self.wait_lines(log, 2)
        self.assertEqual([json.loads(ln)["target"] for ln in new], ["/echo/after", "/echo/after2"])
        self.assertEqual([json.loads(ln)["target"] for ln in file_lines(rotated)], ["/echo/before"])
        self.assertTrue(s.running())
        self.assertEqual(s.stop(), 0)
        # Nothing written late to the wrong file either.
        self.assertEqual(len(file_lines(rotated)), 1)
        self.assertEqual(len(file_lines(log)), 2)

    def test_sigusr1_with_the_logs_on_stdout_and_stderr(self):
        s = self.start_server(base_config(access_log="-"))
        mark = s.log_mark()
        s.send_signal(signal.SIGUSR1)
        self.assertIsNotNone(s.wait_stderr_since(mark, r"SIGUSR1: no log file to reopen"), s.stderr_since(mark))
        self.assertEqual(s.get("/hello").status, 200)
        self.assertEqual(s.stop(), 0)

    def test_error_log_file_and_sigusr1(self):
        error_log = self.tmp / "logs" / "error.log"
        error_log.parent.mkdir()
        rotated = self.tmp / "logs" / "error.log.1"
        access_log = self.tmp / "logs" / "access.log"
        s = self.make_server(base_config(error_log=str(error_log), access_log=str(access_log)))
        s.start(wait=False)
        # The error log is the file now: read the listening line there.
        s.stderr_path = error_log
        s.wait_listening()
        self.assertEqual(s.get("/hello").status, 200)
        old = error_log.read_text()
        self.assertRegex(old, harness.LISTENING_LINE_RE.replace("$", ""))
        for line in old.splitlines():
            self.assertRegex(line, LOG_LINE_RE)
        self.assertEqual((s.dir / "stderr.log").read_text(), "", "error lines still on stderr")
        self.wait_lines(access_log, 1)

        os.rename(error_log, rotated)
        os.rename(access_log, self.tmp / "logs" / "access.log.1")
        s.send_signal(signal.SIGUSR1)
        reopened = wait_for(lambda: error_log.exists() and "SIGUSR1: reopened error log" in error_log.read_text()
                            and "SIGUSR1: reopened access log" in error_log.read_text(), 5)
        self.assertTrue(reopened, f"new error log: {error_log.read_text() if error_log.exists() else None!r}; "
                                  f"old: {rotated.read_text()!r}")
        self.assertIn(f"SIGUSR1: reopened error log {error_log}", error_log.read_text())
        self.assertEqual(rotated.read_text(), old, "lines after the rename went to the old file")
        self.assertNotIn("listening on", error_log.read_text())
        s.get("/hello")
        self.wait_lines(access_log, 1)
        self.assertEqual(s.stop(), 0)
        self.assertIn("[info] stopped", error_log.read_text())
        self.assertNotIn("stopped", rotated.read_text())
        self.assertEqual((s.dir / "stderr.log").read_text(), "")


class RateLimit(LogsTestCase):
    FAILED_RE = re.compile(r'plugin "handlers" failed on GET /h/error(?: \((\d+) similar messages suppressed\))?$',
                           re.M)

    def config(self):
        cfg = base_config()
        cfg["plugins"].append({"name": "handlers", "path": str(FIXTURE_PLUGIN_DIR / "handlers_fixture.so")})
        cfg["routes"].insert(0, {"prefix": "/h", "plugin": "handlers"})
        return cfg

    def failed_lines(self, s):
        return self.FAILED_RE.findall(s.stderr_text())

    def test_a_client_cannot_flood_the_error_log(self):
        s = self.start_server(self.config())
        total = 300
        t0 = time.monotonic()
        with self.conn(s, timeout=20) as c:
            # Pipelined: the server answers all of them within far less than a second or two.
            c.send(b"".join(build_request("GET", "/h/error") for _ in range(total)))
            for _ in range(total):
                self.assertEqual(c.read_response().status, 500)
        elapsed = time.monotonic() - t0
        wait_for(lambda: self.failed_lines(s), 5)
        burst = self.failed_lines(s)
        # At most 10 a second (and a second may begin mid-burst).
        self.assertLessEqual(len(burst), 10 * (int(elapsed) + 2), burst)
        self.assertLess(len(burst), total // 5)
        self.assertGreaterEqual(len(burst), 1)
        # The next second: the next line from that call site says how many were left out.
        time.sleep(1.1)
        self.assertEqual(s.get("/h/error").status, 500)
        self.assertTrue(wait_for(lambda: len(self.failed_lines(s)) > len(burst), 5), s.stderr_text())
        counts = self.failed_lines(s)  # per line: "" or the number it says were suppressed
        self.assertTrue(counts[-1], f"no suppressed count on the last line: {s.stderr_text()}")
        # Every request is accounted for: logged, or counted in a later line.
        self.assertEqual(len(counts) + sum(int(n) for n in counts if n), total + 1, s.stderr_text())

if __name__ == "__main__":
    harness.main()
