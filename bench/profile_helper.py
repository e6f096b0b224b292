#!/usr/bin/env python3
"""Helpers for bench/profile.sh.

  profile_helper.py conns HOST PORT PATH N
      N requests, one new TCP connection each: connect, send
      "GET PATH HTTP/1.1 / Host: x / Connection: close", read to EOF, close.
      Fails unless every response is a 200. Prints "N requests, B bytes".

  profile_helper.py top OUT_N1 OUT_N2 N1 N2 K
      Self cost per function (callgrind_annotate, Ir) of two callgrind runs
      that differ only in the number of requests; prints the K functions with
      the largest (cost(N2) - cost(N1)) / (N2 - N1) as Markdown table rows:
      | function | object | Ir/request | share |
"""
import os
import re
import socket
import subprocess
import sys


def conns(host, port, path, n):
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    total = 0
    for i in range(n):
        with socket.create_connection((host, port), timeout=60) as s:
            s.sendall(request)
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        data = b"".join(chunks)
        if not data.startswith(b"HTTP/1.1 200 "):
            sys.exit(f"request {i + 1}: not a 200: {data[:80]!r}")
        total += len(data)
    print(f"{n} requests, {total} bytes")


LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([\d.]+%\)\s+)?(\S.*?)\s*$")


def self_costs(out_file):
    """function -> (self Ir, object) from callgrind_annotate (every function)."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", out_file],
        check=True, capture_output=True, text=True).stdout
    costs = {}
    started = False
    for line in text.splitlines():
        if "file:function" in line:
            started = True
            continue
        if not started:
            continue
        m = LINE.match(line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        name = m.group(2)
        obj = ""
        om = re.match(r"^(.*?)\s+\[(.*)\]$", name)
        if om:
            name, obj = om.group(1), os.path.basename(om.group(2))
        if ":" in name:
            name = name.split(":", 1)[1]   # drop the source file ("???:memcpy" -> "memcpy")
        prev = costs.get(name, (0, obj))
        costs[name] = (prev[0] + ir, obj or prev[1])
    if not costs:
        sys.exit(f"callgrind_annotate printed no functions for {out_file}")
    return costs


def top(out1, out2, n1, n2, k):
    c1, c2 = self_costs(out1), self_costs(out2)
    per = {}
    for name, (ir2, obj) in c2.items():
        per[name] = ((ir2 - c1.get(name, (0, ""))[0]) / (n2 - n1), obj)
    total = sum(v for v, _ in per.values())
    for name, (v, obj) in sorted(per.items(), key=lambda kv: -kv[1][0])[:k]:
        share = 100.0 * v / total if total > 0 else 0.0
        name = name.replace("|", "\\|")
        if len(name) > 90:
            name = name[:87] + "..."
        print(f"| `{name}` | {obj} | {v:,.0f} | {share:.1f} % |")


def main(argv):
    if len(argv) == 6 and argv[1] == "conns":
        conns(argv[2], int(argv[3]), argv[4], int(argv[5]))
    elif len(argv) == 7 and argv[1] == "top":
        top(argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
