"""Tier 45: hostile and malformed requests (issue #6).

A table of cases, each a raw byte string (or a small scripted exchange) with the statuses the
server may answer, whether the connection must end, and the RFC section or CVE that grounds the
expectation. One test method is generated per case, so a failure names its case. After every case:
a liveness probe (GET /hello on a fresh connection -> 200) and the server's open-descriptor count,
polled until it is back to exactly the baseline measured after start-up.

One server serves the whole table (hello on /hello, echo on /echo, status on /status, static on /
with a www root holding file.txt and a 50 MB sparse big.bin; the static open-file cache is off so
the descriptor count is exact). The echo plugin shows what the server understood (method, target,
host, headers, body); the status plugin's per-route counts prove that a request never ran.

Expectation fields (see Case):
  expect      one entry per final response, in order: a status or a tuple of acceptable statuses.
              SILENT in an entry: the server may instead close without that response (and those
              after it) where the RFC allows it. ANY: the case's check decides alone.
  must_close  True: the connection must end after the listed responses. False: it must stay open
              and in sync (a GET on the same connection is answered after them). None: the RFC
              leaves it to the server; if it stays open it must still be in sync (unless the case
              says probe=False).
Checks made for every case: no 101 ever and no 100 unless the case expects one; Date and Server on
every response; a response saying "Connection: close" is followed by the close (RFC 9112 §9.6), and
a close the server initiates after a response is announced in it (RFC 9112 §9.6, SHOULD); no
response ever comes from a request hidden in another one (a path containing "smuggled").

Known deviations of the server are listed in DEVIATIONS: their case is marked expectedFailure (an
unexpected success means the server was fixed: remove the entry), and a second test,
test_NNN_<name>_survived, runs the same bytes without judging the answers but still demands the
liveness probe and the baseline descriptor count.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Callable

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (SANITIZER_RE, Response, Server, TrellisTestCase, base_config,  # noqa: E402
                     parse_responses, wait_for)

HELLO = b"Hello, World!"
BIG_SIZE = 50 * 1024 * 1024          # big.bin: sparse, for clients that leave mid-response
MAX_HEADER_BYTES = 16384             # the server's defaults, stated here so the cases can size
MAX_BODY_BYTES = 10 * 1024 * 1024    # themselves against them (and set in the config explicitly)
CASE_TIMEOUT = 3.0                   # every answer here is immediate: no case waits for a timer
FD_SETTLE_TIMEOUT = 5.0

SILENT = "close without response"
ANY = "any (the check decides)"

PROBE_PATH = "/echo/keepalive-probe"
PROBE = (f"GET {PROBE_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").encode()
SMUGGLED = b"GET /echo/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
CHUNKED_ABC = b"3\r\nabc\r\n0\r\n\r\n"


def http(line: str, *fields: str, body: bytes = b"", host: bool = True) -> bytes:
    """A request head from a request line and field lines (Host: localhost first unless host is
    False), then body as is. Latin-1, so any byte can be written with \\xNN."""
    lines = [line] + (["Host: localhost"] if host else []) + list(fields)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked_post(*fields: str, body: bytes, path: str = "/echo/f") -> bytes:
    return http(f"POST {path} HTTP/1.1", "Transfer-Encoding: chunked", *fields, body=body)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """What one exchange produced. finals: final responses to the case's own bytes (the probe's
    answer excluded); interims: 1xx responses; probe: the answer to the keep-alive probe sent on
    the same connection, if one was sent and answered."""
    raw: bytes
    finals: list[Response]
    interims: list[Response]
    probe: Response | None
    probe_sent: bool
    closed: bool
    leftover: bytes
    counters_before: dict | None = None
    counters_after: dict | None = None


@dataclasses.dataclass
class Case:
    name: str
    raw: bytes | Callable[[], bytes] | None
    expect: tuple | str          # per final response: int | tuple (may hold SILENT); or ANY
    must_close: bool | None
    ref: str
    check: Callable[["HostileRequests", Outcome], None] | None = None
    # A scripted exchange instead of "send raw, read": run(tc, case) -> Outcome or None (None: the
    # run asserted everything itself; the liveness and descriptor checks still follow).
    run: Callable[["HostileRequests", "Case"], Outcome | None] | None = None
    half_close: bool = False     # send a FIN (SHUT_WR) right after the bytes
    allow_100: bool = False
    probe: bool = True           # must_close None and still open: check sync with a GET
    counters: bool = False       # read /status before and after (Outcome.counters_*)
    timeout: float = CASE_TIMEOUT

    def raw_bytes(self) -> bytes:
        return self.raw() if callable(self.raw) else (self.raw or b"")


# ---- checks used by several cases

def echo_json(tc, r: Response) -> dict:
    tc.assertEqual(r.status, 200, r)
    try:
        return r.json()
    except ValueError:
        tc.fail(f"not an echo answer: {r!r}")


def body_is(expected: str, index: int = 0):
    def check(tc, o: Outcome):
        tc.assertGreater(len(o.finals), index, o.finals)
        j = echo_json(tc, o.finals[index])
        tc.assertEqual(j["body"], expected, f"the body the server read: {j['body'][:200]!r}")
    return check


def if_ok_body_is(expected: str):
    """Either outcome of an RFC choice: an error (which must close: the framing is in doubt) or
    a 200 whose body is `expected`."""
    def check(tc, o: Outcome):
        r = o.finals[0]
        if r.status >= 400:
            tc.assertTrue(o.closed, f"{r.status} for a framing error, but the connection stayed open")
        else:
            body_is(expected)(tc, o)
    return check


def error_closes(tc, o: Outcome):
    if o.finals and o.finals[0].status >= 400:
        tc.assertTrue(o.closed, f"{o.finals[0].status} for a framing error, but the connection "
                                "stayed open")


def field_value_if_ok(name: str, acceptable: tuple[str, ...]):
    """RFC 9110 §5.5 / RFC 9112 §2.2, §5.2: reject (400) or replace the bad octets by SP."""
    def check(tc, o: Outcome):
        r = o.finals[0]
        if r.status != 200:
            return
        j = r.json()
        values = [v for k, v in j["headers"] if k.lower() == name.lower()]
        tc.assertEqual(len(values), 1, j["headers"])
        tc.assertIn(values[0], acceptable, "the field value was passed on unrepaired")
    return check


def hidden_length_not_used(tc, o: Outcome):
    """A Content-Length hidden on a folded line or after a bare CR must not frame the body: the
    request is refused, or read with no body (then the 5 bytes after it are garbage: 400)."""
    for r in o.finals:
        if r.status == 200:
            tc.assertNotIn("hello", r.json()["body"], "a hidden Content-Length framed the body")
    first = o.finals[0]
    if first.status == 400:
        tc.assertEqual(len(o.finals), 1, o.finals)
    else:
        tc.assertEqual(first.json()["body"], "", first)


def first_is_hello(tc, r: Response):
    tc.assertEqual((r.status, r.body), (200, HELLO), r)


def echo_route_requests(counters: dict) -> int:
    for route in counters["routes"]:
        if route["prefix"] == "/echo":
            return route["requests"]
    raise AssertionError(f"no /echo route in the status output: {counters['routes']!r}")


def echo_ran(times: int):
    """The /echo route answered exactly `times` requests during the case (status plugin)."""
    def check(tc, o: Outcome):
        ran = echo_route_requests(o.counters_after) - echo_route_requests(o.counters_before)
        total = o.counters_after["requests"]["total"] - o.counters_before["requests"]["total"] - 1
        tc.assertEqual(ran, times, f"the /echo route ran {ran} request(s), expected {times} "
                                   f"(requests parsed: {total})")
    return check


def all_of(*checks):
    def check(tc, o):
        for c in checks:
            c(tc, o)
    return check


# ---- scripted exchanges

def run_expect_continue(value: str):
    def run(tc, case: Case) -> Outcome:
        body = b"hello"
        c = tc.open_conn(timeout=case.timeout)
        c.send(http("POST /echo/expect HTTP/1.1", f"Expect: {value}", f"Content-Length: {len(body)}"))
        interim = c.read_response(timeout=case.timeout)
        tc.assertEqual(interim.status, 100, f"expected 100 Continue before sending the body: {interim!r}")
        c.send(body)
        o = tc.read_tail(case, c, b"", [], [interim])
        body_is("hello")(tc, o)
        return o
    return run


def run_expect_too_large(tc, case: Case) -> Outcome:
    # The head only: a client that waits for 100 Continue sends nothing more.
    raw = http("POST /echo/huge HTTP/1.1", "Expect: 100-continue",
               f"Content-Length: {MAX_BODY_BYTES * 2}")
    c = tc.open_conn(timeout=case.timeout)
    c.send(raw)
    first = c.read_response(timeout=case.timeout)
    tc.assertNotEqual(first.status, 100, "100 Continue for a body over the limit")
    return tc.read_tail(case, c, raw, [first], [])


def run_disconnect_mid_response(how: str, pipelined: int = 1):
    def run(tc, case: Case):
        c = tc.open_conn(timeout=5, rcvbuf=64 * 1024)
        req = http("GET /big.bin HTTP/1.1")
        c.send(req * pipelined)
        head = c.read_head()
        tc.assertEqual(head.status, 200, head)
        tc.assertEqual(head.header("Content-Length"), str(BIG_SIZE), head)
        got = c.read_exact(256 * 1024)
        tc.assertEqual(len(got), 256 * 1024, "the response stopped early")
        tc.assertEqual(got, bytes(len(got)), "big.bin is zeros")
        if how == "rst":
            c.abort()
        else:
            c.close()
        # The server must survive the broken pipe (no SIGPIPE death) and release everything
        # (checked after every case).
        time.sleep(0.05)
        tc.assertTrue(tc.server.running(), "the server died after the client left mid-response")
        return None
    return run


# ---- the cases

CL_TE_BODY = b"3\r\nabc\r\n0\r\n\r\n"

CASES: list[Case] = [
    # ---------------------------------------------------------------- framing and smuggling
    Case("cl_then_te",
         http("POST /echo/f HTTP/1.1", "Content-Length: 3", "Transfer-Encoding: chunked",
              body=CL_TE_BODY) + SMUGGLED,
         expect=[(400, 200)], must_close=True,
         ref="RFC 9112 §6.1 (CL+TE: reject, or TE alone, and close), §6.3 ¶3; CWE-444",
         check=if_ok_body_is("abc")),
    Case("te_then_cl",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 3",
              body=CL_TE_BODY) + SMUGGLED,
         expect=[(400, 200)], must_close=True,
         ref="RFC 9112 §6.1 (CL+TE: reject, or TE alone, and close), §6.3 ¶3; CWE-444",
         check=if_ok_body_is("abc")),
    Case("cl_zero_then_te_smuggle",
         http("POST /echo/f HTTP/1.1", "Content-Length: 0", "Transfer-Encoding: chunked",
              body=b"2e\r\n" + SMUGGLED[:0x2e] + b"\r\n0\r\n\r\n") + SMUGGLED,
         expect=[(400, 200)], must_close=True,
         ref="RFC 9112 §6.1 (the server MUST close after answering a CL+TE request)",
         check=if_ok_body_is(SMUGGLED[:0x2e].decode())),
    Case("duplicate_cl_identical",
         http("POST /echo/f HTTP/1.1", "Content-Length: 3", "Content-Length: 3", body=b"abc"),
         expect=[(400, 200)], must_close=None,
         ref="RFC 9110 §8.6 (identical duplicates: reject, or use the one value); RFC 9112 §6.3 ¶5",
         check=if_ok_body_is("abc")),
    Case("duplicate_cl_conflicting",
         http("POST /echo/f HTTP/1.1", "Content-Length: 3", "Content-Length: 5",
              body=b"abcde") + SMUGGLED,
         expect=[400], must_close=True,
         ref="RFC 9112 §6.3 ¶5 (invalid Content-Length: 400 and close)"),
    Case("cl_list_identical",
         http("POST /echo/f HTTP/1.1", "Content-Length: 3, 3", body=b"abc"),
         expect=[(400, 200)], must_close=None,
         ref="RFC 9110 §8.6 (a list of identical values: reject, or use the one value)",
         check=if_ok_body_is("abc")),
    Case("cl_list_conflicting",
         http("POST /echo/f HTTP/1.1", "Content-Length: 3, 5", body=b"abcde"),
         expect=[400], must_close=True, ref="RFC 9112 §6.3 ¶5; RFC 9110 §8.6"),
    Case("cl_plus_sign",
         http("POST /echo/f HTTP/1.1", "Content-Length: +3", body=b"abc"),
         expect=[400], must_close=True, ref="RFC 9110 §8.6 (Content-Length = 1*DIGIT); RFC 9112 §6.3 ¶5"),
    Case("cl_negative",
         http("POST /echo/f HTTP/1.1", "Content-Length: -1", body=b"abc"),
         expect=[400], must_close=True, ref="RFC 9110 §8.6; RFC 9112 §6.3 ¶5"),
    Case("cl_hex",
         http("POST /echo/f HTTP/1.1", "Content-Length: 0x3", body=b"abc"),
         expect=[400], must_close=True, ref="RFC 9110 §8.6; RFC 9112 §6.3 ¶5"),
    Case("cl_inner_space",
         http("POST /echo/f HTTP/1.1", "Content-Length: 1 2", body=b"abcdefghijkl"),
         expect=[400], must_close=True, ref="CVE-2018-7159 (\"1 2\" read as 12); RFC 9112 §6.3 ¶5"),
    Case("cl_empty",
         http("POST /echo/f HTTP/1.1", "Content-Length: ", body=b"abc"),
         expect=[400], must_close=True, ref="RFC 9110 §8.6; RFC 9112 §6.3 ¶5"),
    Case("cl_overflow",
         http("POST /echo/f HTTP/1.1", "Content-Length: 18446744073709551617", body=b"abc"),
         expect=[(400, 413)], must_close=True,
         ref="RFC 9110 §8.6 (prevent integer overflow in Content-Length); RFC 9112 §6.3 ¶5"),
    Case("cl_leading_zeros_valid",
         http("POST /echo/f HTTP/1.1", "Content-Length: 0003", body=b"abc"),
         expect=[200], must_close=False, ref="RFC 9110 §8.6 (1*DIGIT: leading zeros are valid)",
         check=body_is("abc")),
    Case("te_unknown_only",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding: foo", body=b"abc"),
         expect=[400], must_close=True,
         ref="RFC 9112 §6.3 ¶4 (chunked not final in a request: 400 and close)"),
    Case("te_unknown_then_chunked",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding: foo, chunked", body=CHUNKED_ABC),
         expect=[501], must_close=None,
         ref="RFC 9112 §6.1 (unknown transfer coding: SHOULD 501)"),
    Case("te_chunked_twice_in_list",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding: chunked, chunked", body=CHUNKED_ABC),
         expect=[400], must_close=True,
         ref="RFC 9112 §7 (chunked MUST NOT be applied twice), §6.3 ¶4"),
    Case("te_chunked_in_two_fields",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked",
              body=CHUNKED_ABC),
         expect=[400], must_close=True, ref="RFC 9112 §7, §6.3 ¶4; RFC 9110 §5.3 (fields combine)"),
    Case("te_chunked_then_identity",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding: chunked", "Transfer-Encoding: identity",
              body=CHUNKED_ABC),
         expect=[400], must_close=True, ref="RFC 9112 §6.3 ¶4 (chunked not final: 400 and close)"),
    Case("te_vertical_tab",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding:\x0bchunked", body=CHUNKED_ABC),
         expect=[400], must_close=True, ref="CVE-2019-18277 (\\x0bchunked); RFC 9112 §6.3 ¶4"),
    Case("te_quoted",
         http("POST /echo/f HTTP/1.1", 'Transfer-Encoding: "chunked"', body=CHUNKED_ABC),
         expect=[400], must_close=True, ref="RFC 9112 §6.3 ¶4 (\"chunked\" is not chunked)"),
    Case("te_case_insensitive",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding: ChUnKeD", body=CHUNKED_ABC),
         expect=[200], must_close=False, ref="RFC 9112 §7 (transfer-coding names are case-insensitive)",
         check=body_is("abc")),
    Case("te_empty_list_elements",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding: , chunked", body=CHUNKED_ABC),
         expect=[200], must_close=False,
         ref="RFC 9110 §5.6.1 (a recipient MUST parse and ignore empty list elements)",
         check=body_is("abc")),
    Case("te_in_http10",
         http("POST /echo/f HTTP/1.0", "Transfer-Encoding: chunked", body=CHUNKED_ABC),
         expect=[400], must_close=True,
         ref="RFC 9112 §6.1 (TE in HTTP/1.0: framing faulty, close after)"),
    Case("te_and_cl_in_http10",
         http("POST /echo/f HTTP/1.0", "Transfer-Encoding: chunked", "Content-Length: 3",
              body=CHUNKED_ABC),
         expect=[400], must_close=True,
         ref="RFC 9112 §6.1 (TE in HTTP/1.0: faulty even with a Content-Length)"),
    Case("obs_fold",
         http("GET /echo/fold HTTP/1.1", "X-Folded: one", " two"),
         expect=[(400, 200)], must_close=None,
         ref="RFC 9112 §5.2 (obs-fold: 400, or replace with SP)",
         check=field_value_if_ok("X-Folded", ("one two", "one  two"))),
    Case("obs_fold_hides_content_length",
         http("POST /echo/f HTTP/1.1", "X-Pad: x", " Content-Length: 5", body=b"hello\r\n\r\n"),
         expect=[(400, 200), (400, SILENT)], must_close=True,
         ref="CVE-2024-27982; RFC 9112 §5.2", check=hidden_length_not_used),
    Case("whitespace_line_before_first_field",
         b"POST /echo/f HTTP/1.1\r\n Content-Length: 5\r\nHost: localhost\r\n\r\nhello\r\n\r\n",
         expect=[(400, 200), (400, SILENT)], must_close=True,
         ref="RFC 9112 §2.2 (whitespace line after the start-line: reject or ignore the line)",
         check=hidden_length_not_used),
    Case("space_before_colon_content_length",
         http("POST /echo/f HTTP/1.1", "Content-Length : 5", body=b"hello"),
         expect=[400], must_close=True, ref="RFC 9112 §5.1 (whitespace before the colon: MUST 400)"),
    Case("tab_before_colon_transfer_encoding",
         http("POST /echo/f HTTP/1.1", "Transfer-Encoding\t: chunked", body=CHUNKED_ABC),
         expect=[400], must_close=True, ref="RFC 9112 §5.1 (whitespace before the colon: MUST 400)"),
    Case("space_before_colon_host",
         http("GET /echo/h HTTP/1.1", "Host : localhost", host=False),
         expect=[400], must_close=None, ref="RFC 9112 §5.1 (whitespace before the colon: MUST 400)"),
    Case("bare_cr_in_field_value",
         http("GET /echo/cr HTTP/1.1", "X-A: a\rb"),
         expect=[(400, 200)], must_close=None,
         ref="RFC 9112 §2.2 (bare CR: invalid, or replaced by SP); RFC 9110 §5.5",
         check=field_value_if_ok("X-A", ("a b",))),
    Case("bare_cr_as_field_terminator",
         http("POST /echo/f HTTP/1.1", "X-A: b\rContent-Length: 5", body=b"hello\r\n\r\n"),
         expect=[(400, 200), (400, SILENT)], must_close=True,
         ref="CVE-2023-30589 (bare CR ends a field line); RFC 9112 §2.2",
         check=hidden_length_not_used),
    Case("bare_cr_ends_head",
         b"GET /echo/f HTTP/1.1\r\nHost: localhost\r\n\rX" + SMUGGLED,
         expect=[400], must_close=True,
         ref="CVE-2025-23167 (\\r\\n\\rX taken as the end of the head); RFC 9112 §2.2"),
    Case("bare_lf_line_endings",
         b"GET /echo/lf HTTP/1.1\nHost: localhost\n\n",
         expect=[(200, 400)], must_close=None,
         ref="RFC 9112 §2.2 (a recipient MAY take a bare LF as the line terminator)"),
    Case("bare_lf_after_chunk_size",
         chunked_post(body=b"3\nabc\r\n0\r\n\r\n") + SMUGGLED,
         expect=[400], must_close=True,
         ref="CVE-2025-22871 (bare LF in chunked framing); RFC 9112 §7.1 (CRLF)"),
    Case("bare_lf_after_chunk_data",
         chunked_post(body=b"3\r\nabc\n0\r\n\r\n") + SMUGGLED,
         expect=[400], must_close=True,
         ref="RFC 9112 §7.1 (chunk-data CRLF); CVE-2025-22871"),
    Case("nul_in_field_value",
         http("GET /echo/nul HTTP/1.1", "X-A: a\x00b"),
         expect=[(400, 200)], must_close=None,
         ref="RFC 9110 §5.5 (NUL in a value: MUST reject or replace with SP)",
         check=field_value_if_ok("X-A", ("a b",))),
    Case("nul_in_field_name",
         http("GET /echo/nul HTTP/1.1", "X-\x00A: b"),
         expect=[400], must_close=None, ref="RFC 9110 §5.1 (field-name = token); RFC 9112 §5"),
    Case("nul_in_target",
         http("GET /echo/a\x00b HTTP/1.1"),
         expect=[400], must_close=None, ref="RFC 9112 §3, §3.2 (invalid request-line: 400)"),
    Case("control_byte_in_field_value",
         http("GET /echo/ctl HTTP/1.1", "X-A: a\x01b"),
         expect=[(400, 200)], must_close=None,
         ref="RFC 9110 §5.5 (other CTLs are invalid; MAY be retained)"),
    Case("control_byte_in_method",
         http("G\x01T /hello HTTP/1.1"),
         expect=[400], must_close=None, ref="RFC 9110 §9.1 (method = token); RFC 9112 §3"),
    Case("del_in_target",
         http("GET /echo/a\x7fb HTTP/1.1"),
         expect=[(400, 301)], must_close=None,
         ref="RFC 9112 §3.2 + RFC 3986 §2 (DEL is not allowed; invalid request-line: 400 or 301)"),
    Case("raw_high_byte_in_target",
         http("GET /echo/\xff HTTP/1.1"),
         expect=[(400, 301)], must_close=None,
         ref="RFC 9112 §3.2 + RFC 3986 §2 (non-ASCII must be percent-encoded; invalid: 400 or 301)"),
    Case("chunk_size_overflow",
         chunked_post(body=b"FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n"),
         expect=[(400, 413)], must_close=True,
         ref="RFC 9112 §7.1 (MUST prevent integer overflow in chunk-size)"),
    Case("chunk_size_over_body_limit",
         chunked_post(body=b"FFFFFFFFFFFFFFFF\r\nabc"),
         expect=[(413, 400)], must_close=True,
         ref="RFC 9112 §7.1 (chunk-size near 2^64); RFC 9110 §15.5.14: a declared size over "
             "max_body_bytes refused at once, as the server does for Content-Length (README)"),
    Case("chunk_size_near_2_64_body_limit_enforced",
         chunked_post(body=b"FFFFFFFFFFFFFFFF\r\n" + b"a" * (MAX_BODY_BYTES + (1 << 20))),
         expect=[413], must_close=True, timeout=10.0,
         ref="RFC 9112 §7.1 (no overflow in chunk-size arithmetic); RFC 9110 §15.5.14 (413)"),
    Case("chunk_size_0x_prefix",
         chunked_post(body=b"0x3\r\nabc\r\n0\r\n\r\n"),
         expect=[400], must_close=True, ref="RFC 9112 §7.1 (chunk-size = 1*HEXDIG)"),
    Case("chunk_size_negative",
         chunked_post(body=b"-3\r\nabc\r\n0\r\n\r\n"),
         expect=[400], must_close=True, ref="RFC 9112 §7.1 (chunk-size = 1*HEXDIG)"),
    Case("chunk_size_leading_space",
         chunked_post(body=b" 3\r\nabc\r\n0\r\n\r\n"),
         expect=[400], must_close=True, ref="RFC 9112 §7.1 (chunk-size = 1*HEXDIG)"),
    Case("chunk_size_trailing_space",
         chunked_post(body=b"3 \r\nabc\r\n0\r\n\r\n"),
         expect=[400], must_close=True,
         ref="RFC 9112 §7.1, §7.1.1 (BWS only before ';' of a chunk-ext)"),
    Case("chunk_size_empty",
         chunked_post(body=b"\r\nabc\r\n0\r\n\r\n"),
         expect=[400], must_close=True, ref="RFC 9112 §7.1 (chunk-size = 1*HEXDIG)"),
    Case("chunk_data_longer_than_size",
         chunked_post(body=b"3\r\nabcdef\r\n0\r\n\r\n") + SMUGGLED,
         expect=[400], must_close=True, ref="RFC 9112 §7.1 (chunk-data is followed by CRLF)"),
    Case("chunk_data_without_crlf",
         chunked_post(body=b"3\r\nabc0\r\n\r\n") + SMUGGLED,
         expect=[400], must_close=True, ref="RFC 9112 §7.1 (chunk-data is followed by CRLF)"),
    Case("chunk_extension_oversized",
         chunked_post(body=b"1;e=" + b"x" * (4 * MAX_HEADER_BYTES) + b"\r\nx\r\n0\r\n\r\n"),
         expect=[413], must_close=True,
         ref="CVE-2024-22019 (unbounded chunk extensions); RFC 9110 §15.5.14"),
    Case("chunk_extensions_many",
         chunked_post(body=b"".join(b"1;e=" + b"x" * 252 + b"\r\nx\r\n" for _ in range(256)) +
                      b"0\r\n\r\n"),
         expect=[413], must_close=True,
         ref="CVE-2024-22019 (64 KiB of extensions on a 256-byte body)"),
    Case("chunk_extension_quoted_semicolon",
         chunked_post(body=b'3;q="a;b"\r\nabc\r\n0\r\n\r\n'),
         expect=[200], must_close=False,
         ref="RFC 9112 §7.1.1 (chunk-ext-val = token / quoted-string; MUST ignore unknown ones)",
         check=body_is("abc")),
    Case("chunk_extensions_multiple",
         chunked_post(body=b"3;a=b;c=d\r\nabc\r\n0\r\n\r\n"),
         expect=[200], must_close=False,
         ref="RFC 9112 §7.1.1 (chunk-ext = *( BWS \";\" ... ): several; MUST ignore unknown ones)",
         check=body_is("abc")),
    Case("chunk_extension_quoted_pair",
         chunked_post(body=b'3;q="a\\"c"\r\nabc\r\n0\r\n\r\n'),
         expect=[200], must_close=False,
         ref="RFC 9112 §7.1.1 + RFC 9110 §5.6.4 (quoted-string may hold a quoted-pair)",
         check=body_is("abc")),
    Case("trailer_sets_host",
         chunked_post(body=b"3\r\nabc\r\n0\r\nHost: evil.test\r\n\r\n"),
         expect=[200], must_close=False,
         ref="RFC 9110 §6.5.1, §6.5.2 (trailers MUST NOT be merged into the header section)",
         check=lambda tc, o: (
             tc.assertEqual(o.finals[0].json()["host"], "localhost"),
             tc.assertEqual([k.lower() for k, _ in o.finals[0].json()["headers"]].count("host"), 1),
             body_is("abc")(tc, o))),
    Case("trailer_sets_content_length",
         chunked_post(body=b"3\r\nabc\r\n0\r\nContent-Length: 99\r\n\r\n"),
         expect=[200], must_close=False,
         ref="RFC 9110 §6.5.1 (framing fields cannot be trailers); §6.5.2",
         check=lambda tc, o: (
             tc.assertNotIn("content-length", [k.lower() for k, _ in o.finals[0].json()["headers"]]),
             body_is("abc")(tc, o))),
    Case("trailer_sets_transfer_encoding",
         chunked_post(body=b"3\r\nabc\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n"),
         expect=[(200, 400)], must_close=None,
         ref="RFC 9110 §6.5.1 (framing fields cannot be trailers); §6.5.2",
         check=if_ok_body_is("abc")),
    Case("get_unread_body_then_pipelined",
         http("GET /hello HTTP/1.1", "Content-Length: 5", body=b"hello") +
         http("GET /echo/second HTTP/1.1"),
         expect=[200, 200], must_close=False,
         ref="RFC 9112 §6.3 ¶6 (Content-Length frames any body); RFC 9110 §9.3.1",
         check=lambda tc, o: (first_is_hello(tc, o.finals[0]),
                              tc.assertEqual(o.finals[1].json()["path"], "/echo/second"))),
    Case("get_chunked_body_on_static_then_pipelined",
         http("GET /file.txt HTTP/1.1", "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n") +
         http("GET /echo/second HTTP/1.1"),
         expect=[200, 200], must_close=False,
         ref="RFC 9112 §6.3 ¶4 (chunked frames any body); RFC 9110 §9.3.1",
         check=lambda tc, o: (tc.assertEqual(o.finals[0].body, b"static file\n"),
                              tc.assertEqual(o.finals[1].json()["path"], "/echo/second"))),

    # ---------------------------------------------------------------- request line and headers
    Case("target_over_limit_414",
         lambda: http("GET /echo?" + "a" * (MAX_HEADER_BYTES + 4096) + " HTTP/1.1"),
         expect=[414], must_close=True, ref="RFC 9110 §15.5.15; RFC 9112 §3"),
    Case("target_8000_octets_served",
         lambda: http("GET /echo?" + "q" * (8000 - len("/echo?")) + " HTTP/1.1"),
         expect=[200], must_close=False,
         ref="RFC 9112 §3 (RECOMMENDED: support request-lines of at least 8000 octets)",
         check=lambda tc, o: tc.assertEqual(len(o.finals[0].json()["target"]), 8000)),
    Case("fragment_in_target",
         http("GET /hello#f HTTP/1.1"),
         expect=[400], must_close=True,
         ref="RFC 9112 §3.2 (origin-form = absolute-path [ \"?\" query]: no fragment); RFC 9110 §4.2.5"),
    Case("fragment_after_query",
         http("GET /echo/f?x=1#frag HTTP/1.1"),
         expect=[400], must_close=True, ref="RFC 9112 §3.2; RFC 3986 §3.5"),
    Case("headers_over_limit_431",
         lambda: http("GET /echo/h HTTP/1.1",
                      *[f"X-Fill-{i:02d}: " + "b" * 500 for i in range(2 * MAX_HEADER_BYTES // 500)]),
         expect=[431], must_close=True, ref="RFC 6585 §5 (431 Request Header Fields Too Large)"),
    Case("single_field_over_limit_431",
         lambda: http("GET /echo/h HTTP/1.1", "X-Huge: " + "h" * (MAX_HEADER_BYTES + 1024)),
         expect=[431], must_close=True, ref="RFC 6585 §5"),
    Case("too_many_fields_431",
         lambda: http("GET /echo/h HTTP/1.1", *[f"X-{i}: v" for i in range(300)]),
         expect=[431], must_close=True, ref="RFC 6585 §5"),
    Case("unknown_method_501",
         http("FOO /hello HTTP/1.1"),
         expect=[501], must_close=None, ref="RFC 9110 §9.1 (unrecognized method: SHOULD 501)"),
    Case("lowercase_method_501",
         http("get /hello HTTP/1.1"),
         expect=[501], must_close=None,
         ref="RFC 9110 §9.1 (methods are case-sensitive: \"get\" is not GET)"),
    Case("trace_405",
         http("TRACE /echo/t HTTP/1.1", "Cookie: session=TRACE-SECRET"),
         expect=[405], must_close=None,
         ref="RFC 9110 §9.3.8, §15.5.6 (405 with Allow); XST (CVE-2003-1567)",
         check=lambda tc, o: (tc.assertTrue(o.finals[0].has_header("Allow"), o.finals[0]),
                              tc.assertNotIn(b"TRACE-SECRET", o.finals[0].body))),
    Case("connect_405_never_a_tunnel",
         b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n",
         expect=[405], must_close=None, probe=False,
         ref="RFC 9110 §9.3.6 (only a 2xx makes a tunnel), §15.5.6 (405 with Allow)",
         check=lambda tc, o: tc.assertTrue(o.finals[0].has_header("Allow"), o.finals[0])),
    Case("connect_origin_form",
         http("CONNECT /hello HTTP/1.1"),
         expect=[(400, 405)], must_close=None,
         ref="RFC 9112 §3.2.3 (CONNECT takes the authority-form only)"),
    Case("http09_request",
         b"GET /hello\r\n",
         expect=[(505, SILENT)], must_close=True,
         ref="RFC 9112 §2.3, RFC 9110 §15.6.6 (HTTP/0.9 is not supported: 505 or close)"),
    Case("http20_request_line",
         http("GET /hello HTTP/2.0"),
         expect=[(505, SILENT)], must_close=True, ref="RFC 9110 §15.6.6; RFC 9112 §2.3"),
    # The HTTP/2 preface (RFC 9113 §3.4) starts an HTTP/2 connection since issue 11, and gets 505
    # only with http2.enabled false: test_75_http2.py, Negotiation.
    Case("http11_higher_minor_version",
         http("GET /echo/v HTTP/1.2"),
         expect=[200], must_close=None,
         ref="RFC 9110 §2.5 (higher minor version: SHOULD process as the highest supported 1.x)",
         check=lambda tc, o: tc.assertEqual(o.finals[0].json()["version"], "HTTP/1.1")),
    Case("version_lowercase",
         http("GET /hello http/1.1"),
         expect=[400], must_close=None, ref="RFC 9112 §2.3 (HTTP-name is case-sensitive); §3"),
    Case("version_two_digit_minor",
         http("GET /hello HTTP/1.10"),
         expect=[(400, 505)], must_close=None,
         ref="RFC 9112 §2.3 (HTTP-version = \"HTTP/\" DIGIT \".\" DIGIT)"),
    Case("host_missing",
         http("GET /echo/h HTTP/1.1", host=False),
         expect=[400], must_close=None, ref="RFC 9112 §3.2 (MUST 400)"),
    Case("host_duplicate_identical",
         http("GET /echo/h HTTP/1.1", "Host: localhost"),
         expect=[400], must_close=None, ref="RFC 9112 §3.2 (more than one Host line: MUST 400)"),
    Case("host_duplicate_different",
         http("GET /echo/h HTTP/1.1", "Host: evil.test"),
         expect=[400], must_close=None, ref="RFC 9112 §3.2 (MUST 400)"),
    Case("host_invalid_slash",
         http("GET /echo/h HTTP/1.1", "Host: evil.test/x", host=False),
         expect=[400], must_close=None, ref="RFC 9112 §3.2 (invalid Host value: MUST 400); RFC 9110 §7.2"),
    Case("host_with_userinfo",
         http("GET /echo/h HTTP/1.1", "Host: user@localhost", host=False),
         expect=[400], must_close=None, ref="RFC 9112 §3.2; RFC 9110 §7.2 (Host = uri-host [\":\" port])"),
    Case("host_bad_port",
         http("GET /echo/h HTTP/1.1", "Host: localhost:80x", host=False),
         expect=[400], must_close=None, ref="RFC 9112 §3.2; RFC 9110 §7.2 (port = *DIGIT)"),
    Case("host_empty_is_valid",
         http("GET /echo/h HTTP/1.1", "Host:", host=False),
         expect=[(200, 421)], must_close=None,
         ref="RFC 9110 §7.2 (an empty Host is sent when the authority is undefined: not invalid)"),
    Case("absolute_form_overrides_host",
         lambda: http(f"GET {'https' if harness.TLS else 'http'}://localhost/echo/abs?q=1 HTTP/1.1",
                      "Host: evil.test", host=False),
         expect=[200], must_close=False,
         ref="RFC 9112 §3.2.2 (absolute-form: MUST ignore the Host header)",
         check=lambda tc, o: tc.assertEqual(
             (o.finals[0].json()["host"], o.finals[0].json()["path"], o.finals[0].json()["query"]),
             ("localhost", "/echo/abs", "q=1"))),
    Case("absolute_form_with_userinfo",
         lambda: http(f"GET {'https' if harness.TLS else 'http'}://user:pw@localhost/echo/u HTTP/1.1"),
         expect=[400], must_close=None,
         ref="RFC 9110 §4.2.4 (userinfo in an http(s) URI: SHOULD be treated as an error)"),
    Case("asterisk_form_with_get",
         http("GET * HTTP/1.1"),
         expect=[400], must_close=None, ref="RFC 9112 §3.2.4 (asterisk-form is for OPTIONS only)"),
    Case("expect_100_continue", None, expect=[200], must_close=False, allow_100=True,
         ref="RFC 9110 §10.1.1 (100 Continue, then the body is read)",
         run=run_expect_continue("100-continue")),
    Case("expect_100_continue_mixed_case", None, expect=[200], must_close=False, allow_100=True,
         ref="RFC 9110 §10.1.1 (the Expect value is case-insensitive)",
         run=run_expect_continue("100-Continue")),
    Case("expect_unknown_417",
         http("POST /echo/x HTTP/1.1", "Expect: 200-ok", "Content-Length: 3", body=b"abc"),
         expect=[417], must_close=None,
         ref="RFC 9110 §10.1.1 (other expectations: 417), §15.5.18"),
    Case("expect_body_too_large_413_without_100", None, expect=[413], must_close=None, probe=False,
         ref="RFC 9110 §10.1.1 (a final status instead of 100), §15.5.14 (413)",
         run=run_expect_too_large),
    Case("expect_in_http10_ignored",
         http("POST /echo/x HTTP/1.0", "Expect: 100-continue", "Content-Length: 3", body=b"abc"),
         expect=[200], must_close=True,
         ref="RFC 9110 §10.1.1 (MUST ignore 100-continue from HTTP/1.0); RFC 9112 §9.3 (1.0 closes)",
         check=body_is("abc")),
    Case("upgrade_websocket_ignored",
         http("GET /echo/ws HTTP/1.1", "Connection: Upgrade", "Upgrade: websocket",
              "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
         expect=[200], must_close=False,
         ref="RFC 9110 §7.8 (a server MAY ignore Upgrade; 101 only for a protocol it switches to)"),
    Case("upgrade_h2c_ignored",
         http("GET /echo/h2c HTTP/1.1", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
              "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
         expect=[200], must_close=False,
         ref="RFC 9110 §7.8; RFC 9113 §3.1 (h2c upgrade is deprecated)"),
    Case("upgrade_with_body_then_pipelined",
         http("POST /echo/up HTTP/1.1", "Connection: Upgrade", "Upgrade: foo/1", "Content-Length: 5",
              body=b"hello") + http("GET /echo/after HTTP/1.1"),
         expect=[200, 200], must_close=False,
         ref="RFC 9110 §7.8 (ignored Upgrade: the body and the next request are still HTTP/1.1)",
         check=lambda tc, o: (body_is("hello")(tc, o),
                              tc.assertEqual(o.finals[1].json()["path"], "/echo/after"))),

    # ---------------------------------------------------------------- connections
    Case("error_mid_pipeline",
         http("GET /echo/one HTTP/1.1") +
         http("POST /echo/two HTTP/1.1", "Content-Length: 1x", body=b"x") +
         http("GET /echo/three HTTP/1.1"),
         expect=[200, 400], must_close=True, counters=True,
         ref="RFC 9112 §6.3 ¶5 (invalid framing: 400, close); §9.3.2 (in order)",
         check=all_of(lambda tc, o: tc.assertEqual(o.finals[0].json()["path"], "/echo/one"),
                      echo_ran(1))),
    Case("connection_close_with_pipelined_request",
         http("GET /echo/a HTTP/1.1", "Connection: close") + http("GET /echo/b HTTP/1.1"),
         expect=[200], must_close=True, counters=True,
         ref="RFC 9112 §9.6 (close after the request with close; SHOULD NOT process more)",
         check=echo_ran(1)),
    Case("connection_close_with_trailing_garbage",
         http("GET /echo/a HTTP/1.1", "Connection: close") + b"\x00\x01\xffgarbage\r\n\r\n",
         expect=[200], must_close=True, ref="RFC 9112 §9.6"),
    Case("half_close_after_request",
         http("GET /echo/hc HTTP/1.1"), half_close=True,
         expect=[200], must_close=True,
         ref="RFC 9112 §9.6 (a half-closed client still gets its response); RFC 9293 §3.6"),
    Case("half_close_after_pipelined_requests",
         http("GET /echo/hc1 HTTP/1.1") + http("GET /echo/hc2 HTTP/1.1"), half_close=True,
         expect=[200, 200], must_close=True, ref="RFC 9112 §9.3.2, §9.6"),
    Case("half_close_mid_head",
         b"GET /echo/x HTTP/1.1\r\nHost: loc", half_close=True,
         expect=[(400, 408, SILENT)], must_close=True,
         ref="RFC 9112 §8 (incomplete message: MAY answer with an error, then close)"),
    Case("half_close_mid_body",
         http("POST /echo/x HTTP/1.1", "Content-Length: 10", body=b"abc"), half_close=True,
         expect=[(400, 408, SILENT)], must_close=True, ref="RFC 9112 §8 (incomplete message)"),
    Case("disconnect_mid_response_rst", None, expect=ANY, must_close=None,
         ref="a client that leaves mid-response (RST): descriptors released, no SIGPIPE death",
         run=run_disconnect_mid_response("rst")),
    Case("disconnect_mid_response_close", None, expect=ANY, must_close=None,
         ref="a client that closes mid-response (unread data: the kernel sends RST)",
         run=run_disconnect_mid_response("close")),
    Case("disconnect_with_pipelined_file_requests", None, expect=ANY, must_close=None,
         ref="three queued 50 MB answers (send_file descriptors) dropped by a leaving client",
         run=run_disconnect_mid_response("rst", pipelined=3)),
]

# Cases where this build of the server disagrees with the grounded expectation. Each is marked
# expectedFailure (the table stays runnable) and reported; remove an entry when the server is
# fixed (an unexpected success fails the run as a reminder). name -> what the server does.
DEVIATIONS: dict[str, str] = {
    # Both from llhttp 8.1.0's strict chunk-extension grammar. Refusing is the safe side (no
    # desync is possible), but RFC 9112 section 7.1.1 says unrecognized extensions MUST be ignored.
    "chunk_extensions_multiple":
        "400 (llhttp 8.1.0: HPE_INVALID_CHUNK_SIZE \"Invalid character in chunk size\" at the "
        "second ';' after an ext value)",
    "chunk_extension_quoted_pair":
        "400 (llhttp 8.1.0: HPE_STRICT \"Invalid character in chunk extensions quoted value\")",
}


# --------------------------------------------------------------------------------------------
# The test class
# --------------------------------------------------------------------------------------------

def hostile_config() -> dict:
    cfg = base_config(limits={"max_header_bytes": MAX_HEADER_BYTES, "max_body_bytes": MAX_BODY_BYTES})
    cfg["log_level"] = "debug"  # "bad request (400): HPE_..." lines name what the parser saw
    cfg["plugins"] = [
        {"name": "hello", "path": "hello"},
        {"name": "echo", "path": "echo"},
        {"name": "status", "path": "status"},
        # The open-file cache off: the descriptor count after each case is then exact.
        {"name": "site", "path": "static", "config": {"root": "www", "open_file_cache": {"entries": 0}}},
    ]
    cfg["routes"] = [
        {"prefix": "/hello", "plugin": "hello"},
        {"prefix": "/echo", "plugin": "echo"},
        {"prefix": "/status", "plugin": "status"},
        {"host": "*", "prefix": "/", "plugin": "site"},
    ]
    return cfg


class HostileRequests(TrellisTestCase):
    server: Server
    baseline_fds: int

    @classmethod
    def setUpClass(cls):
        cls._dir = tempfile.TemporaryDirectory(prefix="trellis-hostile-")
        s = Server(Path(cls._dir.name) / "srv", hostile_config(), www={"file.txt": "static file\n"})
        with open(s.www / "big.bin", "wb") as f:
            f.truncate(BIG_SIZE)  # sparse: 50 MB of zeros that take no disk
        cls.server = s
        try:
            s.start()
            cls._warm_up()
            cls.baseline_fds = cls._settled_fd_count()
        except BaseException:
            s.kill()
            cls._dir.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        s = cls.server
        try:
            code = s.stop()
            err = s.stderr_text()
            if SANITIZER_RE.search(err):
                raise AssertionError("sanitizer report in the server's stderr:\n" + err[-5000:])
            if code != 0:
                raise AssertionError(f"the server exited with {code} after SIGTERM:\n{err[-3000:]}")
        finally:
            s.kill()
            cls._dir.cleanup()

    @classmethod
    def _warm_up(cls):
        """Everything a case may touch once, so lazily made state (thread pool, caches, TLS
        contexts) is in the baseline."""
        s = cls.server
        for target, headers in (("/hello", {}), ("/echo/w", {}), ("/status", {}), ("/file.txt", {}),
                                ("/big.bin", {"Range": "bytes=0-1048575"})):
            r = s.get(target, headers)
            if r.status not in (200, 206):
                raise AssertionError(f"warm-up {target}: {r!r}")

    @classmethod
    def _fd_count(cls) -> int:
        return len(os.listdir(f"/proc/{cls.server.pid}/fd"))

    @classmethod
    def _settled_fd_count(cls) -> int:
        """The count once it has not changed for 0.3 s (connections close asynchronously)."""
        last, since = cls._fd_count(), time.monotonic()
        deadline = since + FD_SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = cls._fd_count()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= 0.3:
                return now
        return last

    def _fd_listing(self) -> str:
        d = f"/proc/{self.server.pid}/fd"
        out = []
        for fd in sorted(os.listdir(d), key=int):
            try:
                out.append(f"{fd} -> {os.readlink(os.path.join(d, fd))}")
            except OSError:
                pass
        return "\n".join(out)

    def setUp(self):
        super().setUp()
        self.assertTrue(self.server.running(), "the server is not running (died in an earlier case)")
        self.mark = self.server.log_mark()
        self._case_conns = []
        self.addCleanup(self._close_case_conns)
        self.addCleanup(self._dump_log_on_failure)

    def _close_case_conns(self):
        for c in self._case_conns:
            c.close()

    def _dump_log_on_failure(self):
        if self._trellis_test_failed() or harness.VERBOSE:
            sys.stderr.write(f"\n----- trellis stderr during {self.id()} -----\n"
                             f"{self.server.stderr_since(self.mark)[-6000:]}"
                             "----- end of trellis stderr -----\n")

    # ---- exchanges

    def open_conn(self, **kw):
        """A connection for the case; closed (if still open) before the descriptor check."""
        c = self.server.conn(**kw)
        self._case_conns.append(c)
        return c

    def status_counters(self) -> dict:
        r = self.server.get("/status")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def exchange(self, case: Case) -> Outcome:
        raw = case.raw_bytes()
        c = self.open_conn(timeout=case.timeout)
        c.try_send(raw)  # the server may answer and close before it has read everything
        if case.half_close:
            try:
                c.half_close()
            except OSError:
                pass
        return self.read_tail(case, c, raw, [], [])

    def read_tail(self, case: Case, c, raw: bytes, finals: list, interims: list) -> Outcome:
        """Reads the rest of the case's answers, then (if the connection may stay open) checks
        that it is open and in sync with a probe request on it."""
        slots = 0 if case.expect == ANY else len(case.expect)
        deadline = time.monotonic() + case.timeout
        closed = False
        while len(finals) < slots:
            try:
                r = c.read_response(timeout=max(0.01, deadline - time.monotonic()))
            except ConnectionError:
                closed = True
                break
            except TimeoutError:
                self.fail(f"[{case.name}] no complete answer (or close) within {case.timeout}s; "
                          f"got {len(finals)} response(s) {finals!r}, pending bytes "
                          f"{bytes(c.buf[:300])!r}")
            (interims if 100 <= r.status < 200 else finals).append(r)
        says_close = any("close" in r.connection_tokens() for r in finals)
        probe, probe_sent, leftover = None, False, b""
        if case.must_close is True or says_close or closed or c.eof or \
                (case.must_close is None and not case.probe):
            wait = max(0.05, deadline - time.monotonic())
            if case.must_close is None and not case.probe and not says_close:
                wait = min(wait, 0.3)  # may stay open: just look for anything extra
            data, closed = c.read_until_closed(wait)
            more, leftover = parse_responses(data)
        else:
            probe_sent = c.try_send(PROBE)
            data, closed = c.read_until_closed(case.timeout)
            more, leftover = parse_responses(data)
            finals_more = [r for r in more if not 100 <= r.status < 200]
            if finals_more and self._is_probe(finals_more[-1]):
                probe = finals_more[-1]
                more = [r for r in more if r is not probe]
        for r in more:
            (interims if 100 <= r.status < 200 else finals).append(r)
        c.close()  # the server's side must go too before the descriptor count is checked
        return Outcome(raw, finals, interims, probe, probe_sent, closed, leftover)

    @staticmethod
    def _is_probe(r: Response) -> bool:
        if r.status != 200:
            return False
        try:
            return r.json().get("path") == PROBE_PATH
        except (ValueError, AttributeError):
            return False

    # ---- the assertions every case gets

    def check_outcome(self, case: Case, o: Outcome):
        where = f"[{case.name}] ({case.ref}) sent {o.raw[:160]!r}{'...' if len(o.raw) > 160 else ''}"
        probe = "answered" if o.probe else "no answer" if o.probe_sent else "not sent"
        got = f"got {[r.status for r in o.finals]}, closed={o.closed}, probe={probe}"
        if harness.VERBOSE:
            sys.stderr.write(f"\n  [{case.name}] {got}, interims {[r.status for r in o.interims]}\n")
        for r in o.interims:
            self.assertNotEqual(r.status, 101, f"{where}: 101 Switching Protocols: {r!r}")
            if not case.allow_100:
                self.fail(f"{where}: unexpected interim {r!r}")
        for r in o.finals + ([o.probe] if o.probe else []):
            self.assertCommonHeaders(r)
            if r.status == 200 and r.header("Content-Type", "").startswith("application/json"):
                self.assertNotIn("smuggled", r.json().get("path", ""),
                                 f"{where}: a smuggled request was answered: {r!r}")
        self.assertEqual(o.leftover, b"", f"{where}: bytes that are not a response: {o.leftover[:300]!r}")
        if case.expect != ANY:
            slots = [s if isinstance(s, tuple) else (s,) for s in case.expect]
            self.assertLessEqual(len(o.finals), len(slots),
                                 f"{where}: more responses than expected: {o.finals!r}")
            for i, r in enumerate(o.finals):
                self.assertIn(r.status, slots[i], f"{where}: response {i + 1}: {got}: {r!r}")
            if len(o.finals) < len(slots):
                self.assertIn(SILENT, slots[len(o.finals)],
                              f"{where}: {got}: response {len(o.finals) + 1} missing")
                self.assertTrue(o.closed, f"{where}: {got}: neither a response nor a close")
        says_close = [r for r in o.finals if "close" in r.connection_tokens()]
        if says_close:
            self.assertTrue(o.closed and o.probe is None,
                            f"{where}: a response said Connection: close but the connection went on "
                            f"(RFC 9112 §9.6): {got}")
        if case.must_close is True:
            self.assertTrue(o.closed, f"{where}: the connection must close: {got}")
        elif case.must_close is False:
            self.assertIsNotNone(o.probe, f"{where}: the connection must stay open and in sync "
                                          f"(a GET after the answers was not answered): {got}")
        elif o.probe_sent and not o.closed:
            self.fail(f"{where}: the connection stayed open but the GET sent on it got no answer: {got}")
        if o.closed and o.probe is None and o.finals and not case.half_close:
            last = o.finals[-1]
            self.assertIn("close", last.connection_tokens(),
                          f"{where}: the server closed after a response that did not say "
                          f"Connection: close (RFC 9112 §9.6 SHOULD): {last!r}")

    def check_alive_and_fds(self, case: Case):
        self.assertTrue(self.server.running(),
                        f"[{case.name}] the server died (exit {self.server.proc.returncode})")
        r = self.server.get("/hello")
        self.assertEqual((r.status, r.body), (200, HELLO), f"[{case.name}] liveness probe: {r!r}")
        count = wait_for(lambda: self._fd_count() == self.baseline_fds, FD_SETTLE_TIMEOUT)
        if not count:
            self.fail(f"[{case.name}] open descriptors: {self._fd_count()}, baseline "
                      f"{self.baseline_fds} (after {FD_SETTLE_TIMEOUT}s):\n{self._fd_listing()}")

    def run_case(self, case: Case, survive_only: bool = False):
        """The case: its exchange, the checks of its answers, then liveness and descriptors.
        survive_only (for the known deviations): the answers are not judged, but the server must
        still be alive and back to its baseline descriptors afterwards."""
        try:
            before = self.status_counters() if case.counters else None
            if case.run is not None:
                o = case.run(self, case)
            else:
                o = self.exchange(case)
            if o is not None and not survive_only:
                if case.counters:
                    o.counters_before, o.counters_after = before, self.status_counters()
                self.check_outcome(case, o)
                if case.check is not None:
                    case.check(self, o)
        except (AssertionError, OSError, harness.ProtocolError, ValueError):
            if not survive_only:
                raise
        finally:
            self._close_case_conns()
        self.check_alive_and_fds(case)


def _make_test(case: Case, survive_only: bool = False):
    def test(self):
        self.run_case(case, survive_only)
    if survive_only:
        test.__doc__ = f"{case.name} (known deviation): the server survives it, descriptors released"
    else:
        test.__doc__ = f"{case.name}: {case.ref}"
        if case.name in DEVIATIONS:
            test = unittest.expectedFailure(test)
    return test


def _install():
    names = set()
    for i, case in enumerate(CASES, 1):
        assert case.name not in names, f"duplicate case name {case.name}"
        names.add(case.name)
        setattr(HostileRequests, f"test_{i:03d}_{case.name}", _make_test(case))
        if case.name in DEVIATIONS:
            setattr(HostileRequests, f"test_{i:03d}_{case.name}_survived",
                    _make_test(case, survive_only=True))
    unknown = set(DEVIATIONS) - names
    assert not unknown, f"DEVIATIONS names no case: {unknown}"


_install()


class Table(unittest.TestCase):
    def test_table_size_and_grounding(self):
        self.assertGreaterEqual(len(CASES), 60)
        for case in CASES:
            self.assertTrue(case.ref.strip(), case.name)


if __name__ == "__main__":
    harness.main()
