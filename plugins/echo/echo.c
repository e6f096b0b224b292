/*
 * echo: answers with the request itself as JSON. The workhorse of the integration tests, and an
 * example of reading everything the host table offers.
 *
 *   {"method": "POST", "target": "/e?x=1", "path": "/e", "query": "x=1", "version": "HTTP/1.1",
 *    "host": "localhost", "headers": [["Host", "localhost"], ...], "body": "...",
 *    "peer": "127.0.0.1:51234", "route_prefix": "/e", "path_below": "/",
 *    "transport": {"name": "plain", "secure": false, "version": "", ...}}
 *
 * Bytes of 0x80 and above are written as \u0080..\u00ff (read as Latin-1), so any body
 * round-trips: json["body"].encode("latin-1") gives back the bytes sent.
 */
#include <trellis/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buffer {
    char *data;
    size_t len, cap;
    int failed;
} buffer;

static void put(buffer *b, const char *s, size_t n) {
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = 1;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void put_cstr(buffer *b, const char *s) {
    put(b, s, strlen(s));
}

static void put_json_string(buffer *b, trellis_str s) {
    put(b, "\"", 1);
    for (size_t i = 0; i < s.len; ++i) {
        unsigned char c = (unsigned char)s.data[i];
        char escape[8];
        if (c == '"' || c == '\\') {
            escape[0] = '\\';
            escape[1] = (char)c;
            put(b, escape, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            snprintf(escape, sizeof escape, "\\u%04x", c);
            put(b, escape, 6);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    put(b, "\"", 1);
}

static void put_field(buffer *b, const char *name, trellis_str value, int first) {
    if (!first)
        put(b, ",", 1);
    put_json_string(b, (trellis_str){name, strlen(name)});
    put(b, ":", 1);
    put_json_string(b, value);
}

typedef struct echo {
    const trellis_host *host;
} echo;

static int echo_create(const trellis_host *host, trellis_plugin_ctx *ctx, const char *config_json,
                       size_t config_len, void **instance, char *err, size_t err_len) {
    (void)ctx;
    (void)config_json;
    (void)config_len;
    (void)err;
    (void)err_len;
    echo *self = malloc(sizeof *self);
    if (!self)
        return TRELLIS_ERROR;
    self->host = host;
    *instance = self;
    return TRELLIS_OK;
}

static void echo_destroy(void *instance) {
    free(instance);
}

static int echo_on_request(void *instance, trellis_request *req) {
    const trellis_host *h = ((echo *)instance)->host;
    buffer b = {0};
    char peer[64];
    size_t peer_len = h->request_peer(req, peer, sizeof peer);
    int number = h->request_version(req);
    trellis_str version = number == 10   ? (trellis_str){"HTTP/1.0", 8}
                          : number == 20 ? (trellis_str){"HTTP/2.0", 8}
                                         : (trellis_str){"HTTP/1.1", 8};

    put(&b, "{", 1);
    put_field(&b, "method", h->request_method(req), 1);
    put_field(&b, "target", h->request_target(req), 0);
    put_field(&b, "path", h->request_path(req), 0);
    put_field(&b, "query", h->request_query(req), 0);
    put_field(&b, "version", version, 0);
    put_field(&b, "host", h->request_host(req), 0);
    put_cstr(&b, ",\"headers\":[");
    trellis_str name, value;
    for (size_t i = 0; h->request_header_at(req, i, &name, &value); ++i) {
        put_cstr(&b, i ? ",[" : "[");
        put_json_string(&b, name);
        put(&b, ",", 1);
        put_json_string(&b, value);
        put(&b, "]", 1);
    }
    put(&b, "]", 1);
    put_field(&b, "body", h->request_body(req), 0);
    put_field(&b, "peer", (trellis_str){peer, peer_len}, 0);
    put_field(&b, "route_prefix", h->request_route_prefix(req), 0);
    put_field(&b, "path_below", h->request_path_below(req), 0);
    /* "transport": what the connection is ({"name": "plain", "secure": false, ...}). */
    trellis_transport_info t = {.struct_size = sizeof t};
    if (TRELLIS_HOST_HAS(h, request_transport)) {
        h->request_transport(req, &t);
        put_cstr(&b, ",\"transport\":{");
        put_field(&b, "name", t.name, 1);
        put_cstr(&b, t.secure ? ",\"secure\":true" : ",\"secure\":false");
        put_field(&b, "version", t.version, 0);
        put_field(&b, "cipher", t.cipher, 0);
        put_field(&b, "server_name", t.server_name, 0);
        put_field(&b, "alpn", t.alpn, 0);
        put_cstr(&b, t.peer_certificate ? ",\"peer_certificate\":true" : ",\"peer_certificate\":false");
        put_field(&b, "peer_subject", t.peer_subject, 0);
        put_field(&b, "peer_san", t.peer_san, 0);
        put_field(&b, "peer_fingerprint", t.peer_fingerprint, 0);
        put_field(&b, "peer_verify", t.peer_verify, 0);
        put(&b, "}", 1);
    }
    put(&b, "}\n", 2);

    int rc = TRELLIS_ERROR;
    if (!b.failed) {
        static const char kName[] = "Content-Type";
        static const char kType[] = "application/json";
        h->response_header(req, kName, sizeof kName - 1, kType, sizeof kType - 1);
        rc = h->respond(req, 200, b.data, b.len) == 0 ? TRELLIS_OK : TRELLIS_ERROR;
    }
    free(b.data);
    return rc;
}

static const trellis_plugin kEcho = {
    .abi_version = TRELLIS_ABI_VERSION,
    .struct_size = sizeof(trellis_plugin),
    .name = "echo",
    .version = "1.0",
    .flags = 0,
    .create = echo_create,
    .destroy = echo_destroy,
    .on_worker_start = NULL,
    .on_worker_stop = NULL,
    .on_request = echo_on_request,
};

TRELLIS_EXPORT const trellis_plugin *trellis_plugin_entry(void) {
    return &kEcho;
}
