#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz harnesses: tests/fuzz/corpus/{session,config,path}/.

Run it after changing a seed here (the files are committed; CI copies them to a temporary
directory and never writes into corpus/). Files named regression-* are reproducers of fixed bugs,
added by hand, and are left alone.

Session seeds start with the harness's 4 control bytes (see fuzz_session.cpp): flags, read size,
write budget, seed.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def control(eof=False, small=False, drain=False, log=0, reset=False, timeout=False, redirect=False, read=0, budget=0,
            writable=0, seed=0):
    flags = ((1 if eof else 0) | (2 if small else 0) | (4 if drain else 0) | (log << 3) | (32 if reset else 0)
             | (64 if timeout else 0) | (128 if redirect else 0))
    return bytes([flags, read, budget | (writable << 2), seed])


def req(line, *headers, body=b""):
    head = line + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode("latin-1") + body


def chunked(*pieces, trailers=()):
    out = b""
    for piece in pieces:
        if isinstance(piece, tuple):
            data, ext = piece
            out += b"%x;%s\r\n%s\r\n" % (len(data), ext.encode(), data)
        else:
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
    out += b"0\r\n" + b"".join(t.encode() + b"\r\n" for t in trailers) + b"\r\n"
    return out


H = "Host: example.com"

SESSION = {
    "get-echo": req("GET /echo HTTP/1.1", H),
    "get-echo-query-status": req("GET /echo/x?status=204&a=1 HTTP/1.1", H),
    "get-404": req("GET /nothing/here HTTP/1.1", H),
    "get-decline-chain": req("GET /d/x HTTP/1.1", "Host: Example.COM:8080"),
    "get-exact-host-declines": req("GET /echo/a HTTP/1.1", "Host: example.com", "User-Agent: fuzz", "Referer: /x"),
    "head-echo": req("HEAD /echo HTTP/1.1", H),
    "post-content-length": req("POST /echo HTTP/1.1", H, "Content-Type: text/plain", "Content-Length: 11",
                               body=b"hello world"),
    "post-stream": req("POST /echo/stream HTTP/1.1", H, "Content-Length: 20", body=b"0123456789abcdefghij"),
    "post-fail": req("POST /echo/fail HTTP/1.1", H, "Content-Length: 3", body=b"abc"),
    "get-silent": req("GET /echo/silent HTTP/1.1", H),
    "response-header-injection": req("GET /echo?hn=X-A&hv=ok%0d%0aSet-Cookie:%20x HTTP/1.1", H),
    "response-header-ok": req("GET /echo?hn=X-Test&hv=value+1 HTTP/1.1", H),
    "pipeline-keepalive": req("GET /echo/one?x=1 HTTP/1.1", H, "User-Agent: unit")
    + req("POST /echo/two HTTP/1.1", "Host: Example.com:8080", "Content-Type: text/plain", "Content-Length: 11",
          "X-Long-Header: 0123456789abcdefghijklmnopqrstuvwxyz", body=b"hello world")
    + req("POST /echo/three HTTP/1.1", H, "Transfer-Encoding: chunked", "X-After: yes",
          body=b"5\r\nabcde\r\n3;ext=1\r\nfgh\r\n0\r\n\r\n"),
    "pipeline-then-close": req("GET /echo HTTP/1.1", H) + req("GET /echo HTTP/1.1", H, "Connection: close")
    + req("GET /echo/never HTTP/1.1", H),
    "pipeline-many": b"".join(req("GET /echo/%d HTTP/1.1" % i, H) for i in range(16)),
    "chunked-extensions-trailers": req("POST /echo HTTP/1.1", H, "Transfer-Encoding: chunked",
                                       body=chunked((b"abc", 'name="v"'), b"defg", (b"h", "a;b=c"),
                                                    trailers=("X-Trailer: 1", "Content-Length: 99"))),
    "chunked-bad-size": req("POST /echo HTTP/1.1", H, "Transfer-Encoding: chunked",
                            body=b"zz\r\nabc\r\n0\r\n\r\n"),
    "chunked-overflow-size": req("POST /echo HTTP/1.1", H, "Transfer-Encoding: chunked",
                                 body=b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    "expect-100-continue": req("POST /echo HTTP/1.1", H, "Expect: 100-continue", "Content-Length: 5", body=b"abcde"),
    "expect-unknown": req("POST /echo HTTP/1.1", H, "Expect: something", "Content-Length: 1", body=b"x"),
    "expect-continue-too-large": req("PUT /echo HTTP/1.1", H, "Expect: 100-continue",
                                     "Content-Length: 99999999999"),
    "smuggle-cl-te": req("POST /echo HTTP/1.1", H, "Content-Length: 6", "Transfer-Encoding: chunked",
                         body=b"0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    "smuggle-te-cl": req("POST /echo HTTP/1.1", H, "Transfer-Encoding: chunked", "Content-Length: 4",
                         body=b"5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n"),
    "smuggle-double-cl": req("POST /echo HTTP/1.1", H, "Content-Length: 3", "Content-Length: 5", body=b"abcde"),
    "smuggle-te-not-last": req("POST /echo HTTP/1.1", H, "Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"),
    "smuggle-te-obs-fold": b"POST /echo HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: x\r\n chunked\r\n\r\n"
    b"0\r\n\r\n",
    "http10-keepalive": req("GET /echo HTTP/1.0", "Connection: keep-alive") + req("GET /echo HTTP/1.0"),
    "http10-te": req("POST /echo HTTP/1.0", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "http09": b"GET /\r\n",
    "http2-version": req("GET /echo HTTP/2.0", H),
    "absolute-form": req("GET http://Example.com:80/echo/abs?q=1 HTTP/1.1", "Host: other"),
    "absolute-form-userinfo": req("GET http://user@example.com/echo HTTP/1.1", H),
    "connect": req("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"),
    "unknown-method": req("BREW /echo HTTP/1.1", H),
    "no-host": req("GET /echo HTTP/1.1"),
    "two-hosts": req("GET /echo HTTP/1.1", H, "Host: b.example"),
    "path-traversal": req("GET /echo/%2e%2e/%2e%2e/etc/passwd HTTP/1.1", H)
    + req("GET /echo/a%2fb HTTP/1.1", H),
    "long-header": req("GET /echo HTTP/1.1", H, "X-Long: " + "a" * 1500),
    "many-headers": req("GET /echo HTTP/1.1", H, *["X-H%d: %d" % (i, i) for i in range(130)]),
    "long-target": req("GET /echo/" + "x" * 1200 + " HTTP/1.1", H),
    "upgrade": req("GET /echo HTTP/1.1", H, "Connection: Upgrade", "Upgrade: websocket") + req("GET /echo HTTP/1.1", H),
    "bare-lf": b"GET /echo HTTP/1.1\nHost: example.com\n\n",
    "nul-in-header": b"GET /echo HTTP/1.1\r\nHost: example.com\r\nX-A: a\x00b\r\n\r\n",
    "body-too-large": req("POST /echo HTTP/1.1", H, "Content-Length: 100", body=b"x" * 100),
}

# The same requests under other delivery: byte-by-byte reads, a client that reads slowly, EOF,
# reset, draining, a timeout expiring, a listener that redirects to https, access logs.
SESSION_VARIANTS = {
    "pipeline-keepalive": [control(read=1, budget=1, writable=8, seed=1), control(read=7, budget=3, writable=32,
                                                                                  seed=2, log=1)],
    "chunked-extensions-trailers": [control(read=3, seed=3, log=2)],
    "expect-100-continue": [control(read=60, budget=1, writable=1, seed=4)],
    "pipeline-many": [control(budget=1, writable=2, seed=5, eof=True), control(budget=2, writable=40, drain=True,
                                                                              seed=6)],
    "post-content-length": [control(small=True, read=5, seed=7), control(reset=True, budget=1, seed=8)],
    "pipeline-then-close": [control(eof=True, read=13, budget=2, writable=10, seed=9)],
    "http10-keepalive": [control(log=1, eof=True)],
    "get-echo": [control(timeout=True, read=9, seed=10), control(redirect=True, seed=11),
                 control(redirect=True, seed=12)],
    "absolute-form": [control(redirect=True, seed=13, log=2)],
    "long-header": [control(timeout=True, small=True, read=100, seed=14)],
}

CONFIG_BASE = {
    "workers": "auto",
    "plugin_dir": "build/plugins",
    "listen": [{"address": "0.0.0.0", "port": 8080, "transport": "plain"},
               {"address": "0.0.0.0", "port": 8443, "transport": "tls"}],
    "tls": {"certificates": [{"cert": "certs/site.crt", "key": "certs/site.key"}], "self_signed_if_missing": True},
    "limits": {"max_connections": 10000, "max_header_bytes": 16384, "max_body_bytes": 10485760,
               "header_timeout_ms": 10000, "body_timeout_ms": 30000, "keepalive_timeout_ms": 60000,
               "send_timeout_ms": 30000, "shutdown_timeout_ms": 10000, "handler_timeout_ms": 60000},
    "thread_pool": {"threads": 16, "queue": 1024},
    "plugins": [{"name": "site", "path": "static", "config": {"root": "www"}}, {"name": "hello", "path": "hello"}],
    "routes": [{"prefix": "/hello", "plugin": "hello"}, {"host": "*", "prefix": "/", "plugin": "site"}],
    "access_log": "-",
    "log_level": "info",
}


def with_(**changes):
    config = json.loads(json.dumps(CONFIG_BASE))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return json.dumps(config, indent=1).encode()


CONFIG = {
    "readme-reference": with_(),
    "minimal": b'{"listen": [{"port": 8080}]}',
    "minimal-workers": b'{"workers": 4, "listen": [{"port": 0}], "log_level": "debug"}',
    "all-limits": with_(limits={"max_connections": 1, "max_header_bytes": 1024, "max_body_bytes": 0,
                                "header_timeout_ms": 1, "header_read_timeout_ms": 1, "handshake_timeout_ms": 1,
                                "min_body_rate_bps": 0, "min_body_rate_grace_ms": 0, "body_timeout_ms": 1,
                                "keepalive_timeout_ms": 1, "send_timeout_ms": 1, "shutdown_timeout_ms": 0,
                                "handler_timeout_ms": 86400000}),
    "tls-full": with_(tls={"certificates": [{"cert": "a.crt", "key": "a.key"}, {"cert": "/abs/b.crt",
                                                                               "key": "/abs/b.key"}],
                           "client_auth": "optional", "client_ca": "ca.pem", "session_tickets": False,
                           "session_timeout_s": 604800, "hsts": "max-age=63072000; includeSubDomains"}),
    "listen-auto-redirect": with_(listen=[{"address": "::1", "port": 8443, "transport": "auto",
                                           "redirect_to_https": True},
                                          {"port": 80, "redirect_to_https": "https://example.com:8443",
                                           "tls": {"hsts": "max-age=1"}}]),
    "listen-override-tls": with_(listen=[{"port": 443, "transport": "tls",
                                          "tls": {"certificates": [{"cert": "x.crt", "key": "x.key"}],
                                                  "client_auth": "required", "client_ca": "ca.pem"}}]),
    "access-log-json": with_(access_log={"path": "logs/access.log", "format": "json"}, error_log="logs/error.log"),
    "access-log-off": with_(access_log="off"),
    "routes-blocking-host": with_(routes=[{"host": "Example.COM", "prefix": "/api/", "plugin": "hello",
                                           "blocking": True}, {"prefix": "/", "plugin": "site"}]),
    "plugin-path-file": with_(plugins=[{"name": "p", "path": "./lib/p.so", "config": {"nested": {"a": [1, 2, 3]}}}],
                              routes=[{"prefix": "/", "plugin": "p"}]),
    # Invalid: each should be refused with a ConfigError naming the file.
    "bad-json": b'{"listen": [{"port": 8080},]}',
    "bad-truncated": with_()[:120],
    "bad-empty": b"",
    "bad-not-object": b"[1, 2, 3]",
    "bad-unknown-key": with_(listn=[]),
    "bad-no-listen": with_(listen=None),
    "bad-empty-listen": with_(listen=[]),
    "bad-port-range": with_(listen=[{"port": 65536}]),
    "bad-port-negative": with_(listen=[{"port": -1}]),
    "bad-port-float": with_(listen=[{"port": 80.5}]),
    "bad-duplicate-listener": with_(listen=[{"port": 80}, {"port": 80}]),
    "bad-transport": with_(listen=[{"port": 80, "transport": "quic"}]),
    "bad-tls-without-certs": with_(tls=None),
    "bad-redirect-on-tls": with_(listen=[{"port": 443, "transport": "tls", "redirect_to_https": True}]),
    "bad-redirect-url": with_(listen=[{"port": 80, "redirect_to_https": "https://x/path"}]),
    "bad-client-auth-no-ca": with_(tls={"certificates": [{"cert": "a", "key": "b"}], "client_auth": "required"}),
    "bad-workers": with_(workers=0),
    "bad-workers-string": with_(workers="many"),
    "bad-header-limit": with_(limits={"max_header_bytes": 100}),
    "bad-huge-number": with_(limits={"max_body_bytes": 10 ** 30}),
    "bad-duplicate-plugin": with_(plugins=[{"name": "a", "path": "x"}, {"name": "a", "path": "y"}], routes=[]),
    "bad-route-unknown-plugin": with_(routes=[{"prefix": "/", "plugin": "nope"}]),
    "bad-route-prefix": with_(routes=[{"prefix": "hello", "plugin": "hello"}]),
    "bad-route-host-port": with_(routes=[{"host": "example.com:80", "prefix": "/", "plugin": "hello"}]),
    "bad-log-level": with_(log_level="verbose"),
    "bad-access-log-format": with_(access_log={"format": "xml"}),
    "bad-plugin-config-type": with_(plugins=[{"name": "a", "path": "x", "config": "root=www"}]),
    "bad-invalid-utf8": b'{"listen": [{"port": 80}], "plugin_dir": "\xff\xfe"}',
    "bad-pointer-escape": b'{"listen": [{"port": 80, "a/b~c": 1}]}',
}

PATH = {
    "root": b"/",
    "file": b"/index.html",
    "dir": b"/docs/",
    "deep": b"/a/b/c/d/e.txt",
    "space": b"/a%20b",
    "dot": b"/a/./b",
    "dotdot": b"/a/../b",
    "dotdot-end": b"/a/b/..",
    "dot-end": b"/a/.",
    "slashes": b"//a//b///c/",
    "encoded-dotdot": b"/a/%2e%2e/b",
    "encoded-dotdot-mixed": b"/a/.%2E/%2e./b",
    "above-root": b"/..",
    "above-root-deep": b"/a/../../etc/passwd",
    "above-root-encoded": b"/%2e%2e/%2e%2e/etc/passwd",
    "double-encoded": b"/%252e%252e/x",
    "encoded-slash": b"/a%2fb",
    "encoded-slash-upper": b"/a%2Fb",
    "encoded-nul": b"/a%00b",
    "raw-nul": b"/a\x00b",
    "backslash": b"/a\\..\\b",
    "encoded-backslash": b"/a%5c..%5cb",
    "bad-escape-short": b"/%4",
    "bad-escape-end": b"/abc%",
    "bad-escape-hex": b"/%zz",
    "not-absolute": b"a/b",
    "empty": b"",
    "utf8-encoded": b"/caf%C3%A9/%E2%82%AC/%F0%9F%98%80",
    "utf8-raw": "/café/€".encode(),
    "overlong-dot": b"/%c0%ae%c0%ae/x",
    "percent-literal": b"/100%25/x",
    "query-like": b"/a?b=/../c",
    "many-dots": b"/.../..../a/...",
    "long": b"/" + b"/".join(b"seg%d" % i for i in range(200)),
}


def write(kind, name, data):
    directory = os.path.join(CORPUS, kind)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def main():
    for kind in ("session", "config", "path"):
        directory = os.path.join(CORPUS, kind)
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if not name.startswith("regression-"):
                    os.remove(os.path.join(directory, name))
    for name, data in SESSION.items():
        write("session", name, control() + data)
        for i, variant in enumerate(SESSION_VARIANTS.get(name, [])):
            write("session", "%s.v%d" % (name, i + 1), variant + data)
    for name, data in CONFIG.items():
        write("config", name + ".json", data)
    for name, data in PATH.items():
        write("path", name, data)
    counts = {kind: len(os.listdir(os.path.join(CORPUS, kind))) for kind in ("session", "config", "path")}
    print("make_corpus: " + ", ".join("%s %d" % item for item in counts.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
