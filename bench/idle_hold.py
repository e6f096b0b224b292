#!/usr/bin/env python3
"""Hold N idle HTTP/1.1 keep-alive connections open to a server (bench/run.sh, idle scaling).

    bench/idle_hold.py HOST PORT N [--max-seconds S]

Opens N connections in batches, sends one `GET /hello` on each and reads its whole response (so
every connection has been through a request/response cycle, as a real keep-alive client's has),
prints "ready N" on stdout and then holds them, doing nothing, until SIGTERM/SIGINT or S
seconds (default 600). On the way out it prints "closed K": how many of the N the server had
closed meanwhile (an idle-timeout or connection cap would make the measurement meaningless), and
closes every socket with SO_LINGER 0 (a reset: no TIME_WAIT left behind to eat the ephemeral
ports of the next runs). Exit status 0 when K == 0, 2 when the server closed some, 1 on error.
Python 3 standard library only.
"""
import argparse
import resource
import signal
import socket
import struct
import sys
import time

BATCH = 256          # connections opened (and answered) at a time: below every listen backlog
TIMEOUT = 10.0       # bound on every connect and read (seconds)


def response_done(data):
    """True once data holds a whole response head and its Content-Length body."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in data[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(data) >= end + 4 + length


def open_batch(host, port, count, request):
    socks = [socket.create_connection((host, port), timeout=TIMEOUT) for _ in range(count)]
    for s in socks:
        s.sendall(request)
    for s in socks:
        data = b""
        while not response_done(data):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit(f"idle_hold: {host}:{port} closed a connection before its response")
            data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            status = data.split(b"\r\n", 1)[0]
            raise SystemExit(f"idle_hold: {host}:{port} answered {status!r}")
    return socks


def closed_by_server(socks):
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(65536) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.n + 64:
        if hard != resource.RLIM_INFINITY and hard < args.n + 64:
            raise SystemExit(f"idle_hold: RLIMIT_NOFILE hard limit {hard} < {args.n + 64}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    request = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
    socks = []
    t0 = time.monotonic()
    while len(socks) < args.n and not stop:
        socks += open_batch(args.host, args.port, min(BATCH, args.n - len(socks)), request)
    print(f"ready {len(socks)} {time.monotonic() - t0:.2f}s", flush=True)

    deadline = time.monotonic() + args.max_seconds
    while not stop and time.monotonic() < deadline:
        time.sleep(0.1)

    closed = closed_by_server(socks)
    print(f"closed {closed}", flush=True)
    linger = struct.pack("ii", 1, 0)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        s.close()
    sys.exit(2 if closed else 0)


if __name__ == "__main__":
    main()
