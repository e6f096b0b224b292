"""A small Chrome DevTools Protocol client for the browser tests (Python 3.11 stdlib only).

Debian 12's python3-websockets is 10.4, which has no synchronous client (that came in 11.0), so
this file speaks the little of RFC 6455 that the DevTools endpoint needs: the opening handshake
(the Sec-WebSocket-Accept answer checked), masked text frames out, text/binary frames (and
fragments) in, ping answered with pong, close. Everything is single-threaded and bounded: every
read has a deadline, and the bytes of a frame that arrived only in part stay buffered until the
rest comes, so a timeout never corrupts the stream.

CDP on top: send(method, params, session) returns the command's result (raising CDPError on an
error answer); every event that arrives meanwhile is kept in `events` as (method, params,
sessionId), in order, for the test to look at (events_since, wait_event). Pages are driven through
the browser endpoint with flattened sessions (Target.attachToTarget flatten=true).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Callable
from urllib.parse import urlsplit

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketError(Exception):
    pass


class CDPError(Exception):
    pass


def _mask(key: bytes, data: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return data
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


class WebSocket:
    """A client connection (ws:// only: the DevTools endpoint listens on loopback)."""

    def __init__(self, url: str, timeout: float = 10.0):
        u = urlsplit(url)
        if u.scheme != "ws":
            raise WebSocketError(f"only ws:// URLs: {url}")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False
        self._fragments: list[bytes] = []
        key = base64.b64encode(os.urandom(16)).decode()
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        # No Origin header: Chromium refuses DevTools WebSocket clients that send one unless
        # --remote-allow-origins names it; a non-browser client sends none.
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise WebSocketError(f"no handshake answer from {url}: {self.buf[:300]!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
            raise WebSocketError(f"handshake refused by {url}: {head[:300]!r}")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise WebSocketError(f"bad Sec-WebSocket-Accept from {url}: {headers!r}")

    def _fill(self, deadline: float) -> bool:
        """Reads what is there into buf, waiting until deadline for something to come; False on
        timeout. A deadline that has passed still takes in what the kernel already holds (a
        non-blocking read), so a zero timeout means "what has arrived", not "nothing". Raises on
        EOF."""
        remaining = deadline - time.monotonic()
        self.sock.settimeout(remaining if remaining > 0 else 0.0)  # 0.0: non-blocking
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, TimeoutError, BlockingIOError, InterruptedError):
            return False
        if not data:
            self.closed = True
            raise WebSocketError("connection closed by the peer")
        self.buf += data
        return True

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        key = os.urandom(4)
        self.sock.settimeout(10.0)
        self.sock.sendall(head + key + _mask(key, payload))

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def _parse_frame(self):
        """(fin, opcode, payload) when a whole frame is buffered, else None."""
        b = self.buf
        if len(b) < 2:
            return None
        fin, opcode = b[0] & 0x80, b[0] & 0x0F
        masked, n = b[1] & 0x80, b[1] & 0x7F
        pos = 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack("!Q", b[2:10])[0], 10
        key = b""
        if masked:  # servers do not mask, but tolerate it
            if len(b) < pos + 4:
                return None
            key, pos = b[pos:pos + 4], pos + 4
        if len(b) < pos + n:
            return None
        payload = b[pos:pos + n]
        self.buf = b[pos + n:]
        return bool(fin), opcode, (_mask(key, payload) if masked else payload)

    def recv(self, deadline: float) -> str | None:
        """The next whole text message, or None if none came before deadline (a deadline that has
        passed: None unless a whole message is buffered or already readable)."""
        while True:
            frame = self._parse_frame()
            if frame is None:
                if not self._fill(deadline):
                    return None
                continue
            fin, opcode, payload = frame
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
            elif opcode == 0xA:  # pong
                pass
            elif opcode == 0x8:  # close
                self.closed = True
                raise WebSocketError(f"closed by the peer: {payload!r}")
            elif opcode in (0x0, 0x1, 0x2):
                self._fragments.append(payload)
                if fin:
                    message = b"".join(self._fragments)
                    self._fragments = []
                    return message.decode("utf-8")
            else:
                raise WebSocketError(f"unexpected opcode {opcode}")

    def close(self) -> None:
        if not self.closed:
            try:
                self._send_frame(0x8, struct.pack("!H", 1000))
            except OSError:
                pass
            self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class CDP:
    """The browser endpoint (ws://127.0.0.1:PORT/devtools/browser/ID)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.ws = WebSocket(url, timeout)
        self.next_id = 1
        self.events: list[tuple[str, dict, str | None]] = []
        self._results: dict[int, dict] = {}

    def _dispatch(self, text: str) -> None:
        msg = json.loads(text)
        if "id" in msg:
            self._results[msg["id"]] = msg
        elif "method" in msg:
            self.events.append((msg["method"], msg.get("params", {}), msg.get("sessionId")))

    def pump(self, timeout: float) -> bool:
        """Takes in one message, waiting up to timeout seconds for it (0: only one that has
        already arrived); True if one came."""
        text = self.ws.recv(time.monotonic() + timeout)
        if text is None:
            return False
        self._dispatch(text)
        return True

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        mid = self.next_id
        self.next_id += 1
        msg = {"id": mid, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        self.ws.send_text(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while mid not in self._results:
            text = self.ws.recv(deadline)
            if text is None:
                raise CDPError(f"{method}: no answer within {timeout}s")
            self._dispatch(text)
        answer = self._results.pop(mid)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def events_since(self, index: int, session: str | None = None, method: str | None = None):
        return [(m, p) for m, p, s in self.events[index:]
                if (session is None or s == session) and (method is None or m == method)]

    def wait_event(self, method: str, session: str | None = None, since: int = 0,
                   predicate: Callable[[dict], bool] | None = None,
                   timeout: float = 30.0) -> dict | None:
        """The params of the first event `method` (after index since) that satisfies predicate,
        reading until one comes or timeout; None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for m, p in self.events_since(since, session, method):
                if predicate is None or predicate(p):
                    return p
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.pump(remaining)

    def close(self) -> None:
        self.ws.close()


class Page:
    """One tab, attached with a flattened session; its commands go through the browser's CDP."""

    def __init__(self, cdp: CDP, url: str = "about:blank"):
        self.cdp = cdp
        self.target_id = cdp.send("Target.createTarget", {"url": url})["targetId"]
        self.session = cdp.send("Target.attachToTarget",
                                {"targetId": self.target_id, "flatten": True})["sessionId"]

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        return self.cdp.send(method, params, self.session, timeout)

    def mark(self) -> int:
        """An index into the event list: events_since(mark) are those that came after now."""
        return len(self.cdp.events)

    def events_since(self, index: int, method: str | None = None):
        return self.cdp.events_since(index, self.session, method)

    def wait_event(self, method: str, since: int = 0, predicate=None, timeout: float = 30.0):
        return self.cdp.wait_event(method, self.session, since, predicate, timeout)

    def evaluate(self, expression: str, timeout: float = 10.0):
        """The JSON value of expression (awaited if it is a promise); raises on an exception."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, timeout)
        if "exceptionDetails" in r:
            raise CDPError(f"evaluate {expression!r}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def pump(self, timeout: float = 0.05) -> None:
        """Takes in, without sending anything, every message that has already arrived and those
        that arrive within timeout seconds; pump(0) drains what is queued and returns at once.
        Bounded: after the deadline it stops at the first moment nothing is readable, or after
        10000 more messages."""
        deadline = time.monotonic() + timeout
        late = 0
        while self.cdp.pump(max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                late += 1
                if late >= 10000:
                    break
