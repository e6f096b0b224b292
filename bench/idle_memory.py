#!/usr/bin/env python3
"""Memory per idle keep-alive connection, trellis, nginx and lighttpd (h2o for HTTP/2) side by side.

Opens N connections to each server, sends one request on each (so every connection has been
through a full request/response cycle, as a real keep-alive client has), then measures how much
the server's resident memory grew, divided by N. Usage:

    bench/idle_memory.py [N] [--tls | --h2 | --h2c]  (default 10000; needs build/trellis; nginx
                                       and lighttpd (h2o for --h2/--h2c) are measured when installed)

With --tls the servers listen with TLS (the same ECDSA P-256 certificate; lighttpd through
mod_mbedtls, the same mbedTLS as trellis, skipped if lighttpd-mod-mbedtls is missing) and every
client completes a handshake and one request before going quiet. Every server runs one worker
process (lighttpd: server.max-worker 0, a single process).

With --h2 (implies TLS) every client negotiates ALPN "h2", sends the HTTP/2 preface, SETTINGS and
one GET /hello (HEADERS with END_STREAM), reads until the response's END_STREAM (ACKing the
server's SETTINGS on the way) and goes quiet with the socket open: the memory of an idle HTTP/2
connection after one stream. --h2c does the same in cleartext (prior knowledge). The servers are
trellis, nginx (listen ... ssl http2 / listen ... http2) and h2o (num-threads 1, /hello a
13-byte file served by file.dir); lighttpd is not run in these modes. The h2 client side uses
the `h2` package (Debian's python3-h2 is borrowed from /usr/lib/python3/dist-packages when the
interpreter lacks it).

TRELLIS_BIN and TRELLIS_PLUGIN_DIR override ROOT/build/trellis and ROOT/build/plugins (e.g. to
run from a git worktree without a build of its own).
"""
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRELLIS_BIN = os.environ.get("TRELLIS_BIN") or os.path.join(ROOT, "build/trellis")
PLUGIN_DIR = os.environ.get("TRELLIS_PLUGIN_DIR") or os.path.join(ROOT, "build/plugins")
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(ARGS[0]) if ARGS else 10000
H2C = "--h2c" in sys.argv
H2 = "--h2" in sys.argv or H2C       # HTTP/2: over TLS (ALPN h2), or cleartext with --h2c
TLS = "--tls" in sys.argv or (H2 and not H2C)
TIMEOUT = 10.0                        # bound on every connect, handshake and read (seconds)

if H2:
    try:
        import h2.config
        import h2.connection
        import h2.events
    except ImportError:  # a pyenv/venv interpreter: Debian's python3-h2 is pure Python, borrow it
        _DIST = "/usr/lib/python3/dist-packages"
        if os.path.isdir(_DIST) and _DIST not in sys.path:
            sys.path.append(_DIST)
        import h2.config
        import h2.connection
        import h2.events


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def h2_start(port, context):
    """Connect, (TLS with ALPN h2,) send preface + SETTINGS + GET /hello; returns (sock, conn)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    if context:
        s = context.wrap_socket(s, server_hostname="localhost")
        if s.selected_alpn_protocol() != "h2":
            raise SystemExit(f"port {port}: ALPN gave {s.selected_alpn_protocol()!r}, not h2")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "https" if context else "http"),
                          (":authority", "localhost"), (":path", "/hello")], end_stream=True)
    s.sendall(conn.data_to_send())
    return s, conn


def h2_finish(s, conn):
    """Read until stream 1 ends (h2 queues the ACK of the server's SETTINGS; it is sent here)."""
    deadline = time.time() + TIMEOUT
    status, ended = None, False
    while not ended:
        if time.time() > deadline:
            raise SystemExit("no END_STREAM within %.0f s" % TIMEOUT)
        data = s.recv(65536)
        if not data:
            raise SystemExit("server closed an h2 connection before the response ended")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(":status")
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                ended = True
            elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise SystemExit(f"server ended the h2 exchange: {event}")
        out = conn.data_to_send()
        if out:
            s.sendall(out)
    if status != "200":
        raise SystemExit(f"GET /hello over h2 answered {status}")


def measure_h2(port, pids_fn):
    before = rss_kib(pids_fn())
    context = None
    if TLS:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
    conns = [h2_start(port, context) for _ in range(N)]
    for s, conn in conns:
        h2_finish(s, conn)
    negotiated = conns[0][0].version() if TLS else "cleartext"
    time.sleep(1.0)  # let the servers settle after the last response (not a synchronisation)
    after = rss_kib(pids_fn())
    check_open(port, [s for s, _ in conns])
    for s, _ in conns:
        s.close()
    return (after - before) * 1024 / N, negotiated


def closed_by_server(socks):
    """How many of socks the server has closed (EOF or reset), reading whatever is pending."""
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            while s.recv(65536):
                pass
            closed += 1  # b"": EOF
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except OSError:  # reset, TLS close without close_notify
            closed += 1
    return closed


def check_open(port, socks):
    closed = closed_by_server(socks)
    if closed:
        print(f"warning: port {port}: the server closed {closed} of {N} connections before the "
              "measurement ended; RSS growth / N undercounts", file=sys.stderr)


def measure(port, pids_fn):
    if H2:
        return measure_h2(port, pids_fn)
    request = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
    before = rss_kib(pids_fn())
    socks = []
    context = None
    if TLS:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    for _ in range(N):
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        if context:
            s = context.wrap_socket(s, server_hostname="localhost")
        s.sendall(request)
        socks.append(s)
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("server closed a connection before its response")
            data += chunk
    time.sleep(1.0)  # let the servers settle after the last response (not a synchronisation)
    after = rss_kib(pids_fn())
    check_open(port, socks)
    negotiated = socks[0].version() if TLS else "cleartext"
    for s in socks:
        s.close()
    return (after - before) * 1024 / N, negotiated


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp()
    results = {}
    started = []  # every server process, stopped in `finally` should a measurement fail
    try:
        port = free_port()
        config = os.path.join(tmp, "trellis.json")
        cert, key = os.path.join(tmp, "site.crt"), os.path.join(tmp, "site.key")
        tls = (', "transport": "tls"' if TLS else "")
        tls_settings = ('"tls": {"certificates": [{"cert": "%s", "key": "%s"}], "self_signed_if_missing": true}, '
                        % (cert, key)) if TLS else ""
        # HTTP/2 is on by default; an idle h2 connection is closed after keepalive_timeout_ms.
        h2_limits = ', "keepalive_timeout_ms": 300000' if H2 else ""
        with open(config, "w") as f:
            f.write('{"workers": 1, "plugin_dir": "%s", "listen": [{"address": "127.0.0.1", '
                    '"port": %d%s}], %s"limits": {"max_connections": %d%s}, "plugins": [{"name": "hello", '
                    '"path": "hello"}], "routes": [{"prefix": "/", "plugin": "hello"}], "access_log": "off"}'
                    % (PLUGIN_DIR, port, tls, tls_settings, N + 100, h2_limits))
        server = subprocess.Popen([TRELLIS_BIN, "--config", config],
                                  stderr=subprocess.DEVNULL)
        started.append(server)
        wait_port(port)
        results["trellis"] = measure(port, lambda: [server.pid])
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)

        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if os.path.exists(nginx):
            port = free_port()
            prefix = os.path.join(tmp, "nginx")
            os.makedirs(os.path.join(prefix, "logs"))
            # worker_connections well above N: once fewer than 1/16 of them are free, nginx closes
            # idle keep-alive connections to reuse them (ngx_drain_connections, 32 at a time).
            with open(os.path.join(prefix, "nginx.conf"), "w") as f:
                f.write("daemon off; worker_processes 1; error_log %s/logs/error.log; pid %s/nginx.pid;\n"
                        "events { worker_connections %d; }\n"
                        "http { access_log off; keepalive_timeout 300s; keepalive_requests 100000;\n"
                        "  client_body_temp_path %s/tmp; proxy_temp_path %s/tmp; fastcgi_temp_path %s/tmp;\n"
                        "  uwsgi_temp_path %s/tmp; scgi_temp_path %s/tmp;\n"
                        "  server { listen 127.0.0.1:%d%s; %s location / { return 200 'Hello, World!'; } } }\n"
                        % ((prefix, prefix, 2 * N + 100) + (prefix,) * 5 + (port,
                           (" ssl" if TLS else "") + (" http2" if H2 else ""),
                           ("ssl_certificate %s; ssl_certificate_key %s;" % (cert, key)) if TLS else "")))
            master = subprocess.Popen([nginx, "-p", prefix, "-c", os.path.join(prefix, "nginx.conf")],
                                      stderr=subprocess.DEVNULL)
            started.append(master)
            wait_port(port)
            results["nginx"] = measure(port, lambda: children(master.pid))
            master.send_signal(signal.SIGQUIT)
            master.wait(timeout=20)

        lighttpd = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
        mod_mbedtls = "/usr/lib/lighttpd/mod_mbedtls.so"
        if not H2 and os.path.exists(lighttpd) and (not TLS or os.path.exists(mod_mbedtls)):
            port = free_port()
            prefix = os.path.join(tmp, "lighttpd")
            www = os.path.join(prefix, "www")
            os.makedirs(www)
            with open(os.path.join(www, "hello"), "w") as f:
                f.write("Hello, World!")
            conf = os.path.join(prefix, "lighttpd.conf")
            with open(conf, "w") as f:
                f.write('server.bind = "127.0.0.1"\nserver.port = %d\nserver.document-root = "%s"\n'
                        'server.errorlog = "%s/error.log"\nserver.max-worker = 0\n'
                        'server.max-connections = %d\nserver.max-fds = %d\n'
                        'server.max-keep-alive-idle = 300\nserver.max-keep-alive-requests = 100000\n'
                        % (port, www, prefix, N + 100, 3 * (N + 100)))
                if TLS:
                    f.write('server.modules = ("mod_mbedtls")\nssl.engine = "enable"\n'
                            'ssl.pemfile = "%s"\nssl.privkey = "%s"\n' % (cert, key))
            # Own session: lighttpd signals its whole process group on shutdown.
            server = subprocess.Popen([lighttpd, "-D", "-f", conf], stderr=subprocess.DEVNULL,
                                      start_new_session=True)
            started.append(server)
            wait_port(port)
            results["lighttpd"] = measure(port, lambda: [server.pid])
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)

        h2o = shutil.which("h2o") or "/usr/bin/h2o"
        if H2 and os.path.exists(h2o):
            port = free_port()
            prefix = os.path.join(tmp, "h2o")
            www = os.path.join(prefix, "www")
            os.makedirs(www)
            with open(os.path.join(www, "hello"), "w") as f:
                f.write("Hello, World!")
            # Started as root, h2o serves files as 'nobody': the tree must be world-readable.
            for d in (tmp, prefix, www):
                os.chmod(d, 0o755)
            os.chmod(os.path.join(www, "hello"), 0o644)
            conf = os.path.join(prefix, "h2o.conf")
            with open(conf, "w") as f:
                f.write("num-threads: 1\nerror-log: %s/error.log\nmax-connections: %d\n"
                        "http2-idle-timeout: 300\nhttp1-request-timeout: 300\n"
                        "listen:\n  host: 127.0.0.1\n  port: %d\n" % (prefix, N + 100, port))
                if TLS:
                    f.write("  ssl:\n    certificate-file: %s\n    key-file: %s\n"
                            "    ocsp-update-interval: 0\n" % (cert, key))
                f.write("hosts:\n  default:\n    paths:\n      /:\n        file.dir: %s\n" % www)
            # One process (h2o's default master mode "worker": threads, no fork).
            server = subprocess.Popen([h2o, "-c", conf], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            started.append(server)
            wait_port(port)
            results["h2o"] = measure(port, lambda: [server.pid])
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    mode = " (HTTP/2 over TLS, ALPN h2)" if H2 and TLS else " (HTTP/2 cleartext, prior knowledge)" \
        if H2 else " (TLS)" if TLS else ""
    print(f"idle keep-alive connections: {N}{mode}")
    for name, (per, negotiated) in results.items():
        print(f"{name}: {per:.0f} bytes per idle connection (RSS growth / N)"
              + (f" [{negotiated}]" if H2 and TLS else ""))
    for other in ("nginx", "lighttpd", "h2o"):
        if other in results and results[other][0] > 0:
            print(f"ratio trellis/{other}: {results['trellis'][0] / results[other][0]:.2f}")


if __name__ == "__main__":
    main()
