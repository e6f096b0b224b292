#!/usr/bin/env python3
"""Memory per idle keep-alive connection, trellis, nginx and lighttpd side by side.

Opens N connections to each server, sends one request on each (so every connection has been
through a full request/response cycle, as a real keep-alive client has), then measures how much
the server's resident memory grew, divided by N. Usage:

    bench/idle_memory.py [N] [--tls]  (default 10000; needs build/trellis; nginx and lighttpd
                                       are measured when installed)

With --tls the servers listen with TLS (the same ECDSA P-256 certificate; lighttpd through
mod_mbedtls, the same mbedTLS as trellis, skipped if lighttpd-mod-mbedtls is missing) and every
client completes a handshake and one request before going quiet. Every server runs one worker
process (lighttpd: server.max-worker 0, a single process).
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
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(ARGS[0]) if ARGS else 10000
TLS = "--tls" in sys.argv


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


def measure(port, pids_fn):
    request = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
    before = rss_kib(pids_fn())
    socks = []
    context = None
    if TLS:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    for _ in range(N):
        s = socket.create_connection(("127.0.0.1", port))
        if context:
            s = context.wrap_socket(s, server_hostname="localhost")
        s.sendall(request)
        socks.append(s)
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
    time.sleep(1.0)  # let the servers settle after the last response (not a synchronisation)
    after = rss_kib(pids_fn())
    for s in socks:
        s.close()
    return (after - before) * 1024 / N


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
    try:
        port = free_port()
        config = os.path.join(tmp, "trellis.json")
        cert, key = os.path.join(tmp, "site.crt"), os.path.join(tmp, "site.key")
        tls = (', "transport": "tls"' if TLS else "")
        tls_settings = ('"tls": {"certificates": [{"cert": "%s", "key": "%s"}], "self_signed_if_missing": true}, '
                        % (cert, key)) if TLS else ""
        with open(config, "w") as f:
            f.write('{"workers": 1, "plugin_dir": "%s/build/plugins", "listen": [{"address": "127.0.0.1", '
                    '"port": %d%s}], %s"limits": {"max_connections": %d}, "plugins": [{"name": "hello", '
                    '"path": "hello"}], "routes": [{"prefix": "/", "plugin": "hello"}], "access_log": "off"}'
                    % (ROOT, port, tls, tls_settings, N + 100))
        server = subprocess.Popen([os.path.join(ROOT, "build/trellis"), "--config", config],
                                  stderr=subprocess.DEVNULL)
        wait_port(port)
        results["trellis"] = measure(port, lambda: [server.pid])
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)

        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if os.path.exists(nginx):
            port = free_port()
            prefix = os.path.join(tmp, "nginx")
            os.makedirs(os.path.join(prefix, "logs"))
            with open(os.path.join(prefix, "nginx.conf"), "w") as f:
                f.write("daemon off; worker_processes 1; error_log %s/logs/error.log; pid %s/nginx.pid;\n"
                        "events { worker_connections %d; }\n"
                        "http { access_log off; keepalive_timeout 300s; keepalive_requests 100000;\n"
                        "  client_body_temp_path %s/tmp; proxy_temp_path %s/tmp; fastcgi_temp_path %s/tmp;\n"
                        "  uwsgi_temp_path %s/tmp; scgi_temp_path %s/tmp;\n"
                        "  server { listen 127.0.0.1:%d%s; %s location / { return 200 'Hello, World!'; } } }\n"
                        % ((prefix, prefix, N + 100) + (prefix,) * 5 + (port, " ssl" if TLS else "",
                           ("ssl_certificate %s; ssl_certificate_key %s;" % (cert, key)) if TLS else "")))
            master = subprocess.Popen([nginx, "-p", prefix, "-c", os.path.join(prefix, "nginx.conf")],
                                      stderr=subprocess.DEVNULL)
            wait_port(port)
            results["nginx"] = measure(port, lambda: children(master.pid))
            master.send_signal(signal.SIGQUIT)
            master.wait(timeout=20)

        lighttpd = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
        mod_mbedtls = "/usr/lib/lighttpd/mod_mbedtls.so"
        if os.path.exists(lighttpd) and (not TLS or os.path.exists(mod_mbedtls)):
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
            wait_port(port)
            results["lighttpd"] = measure(port, lambda: [server.pid])
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"idle keep-alive connections: {N}{' (TLS)' if TLS else ''}")
    for name, per in results.items():
        print(f"{name}: {per:.0f} bytes per idle connection (RSS growth / N)")
    for other in ("nginx", "lighttpd"):
        if other in results and results[other] > 0:
            print(f"ratio trellis/{other}: {results['trellis'] / results[other]:.2f}")


if __name__ == "__main__":
    main()
