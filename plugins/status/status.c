/*
 * status: the server's own counters (connections, bytes, responses by route and status, request
 * durations, the thread pool), summed over the workers by the host's server_metrics.
 *
 *   GET /status            JSON
 *   GET /status/metrics    Prometheus text format 0.0.4 (any path whose last segment is "metrics",
 *   GET /metrics           so a route with prefix /metrics works for a scraper as it is)
 *
 * No configuration. server_metrics runs on the worker thread, so the route must not be marked
 * "blocking". TRELLIS_PRIVATE: what it shows (routes, load) is for the operator, so the server
 * answers only loopback clients unless the route lists others in "allow".
 */
#include <trellis/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct status {
    const trellis_host *host;
} status;

/* Anything but an empty object is a mistake worth stopping the start for. */
static int is_empty_object(const char *json, size_t len) {
    size_t i = 0, braces = 0;
    for (; i < len; ++i) {
        char c = json[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        if (c != (braces == 0 ? '{' : '}') || braces == 2)
            return 0;
        ++braces;
    }
    return braces == 2;
}

static int status_create(const trellis_host *host, trellis_plugin_ctx *ctx, const char *config_json,
                         size_t config_len, void **instance, char *err, size_t err_len) {
    (void)ctx;
    if (!TRELLIS_HOST_HAS(host, server_metrics)) {
        snprintf(err, err_len, "needs a Trellis server with plugin ABI 1.1 or later (server_metrics)");
        return TRELLIS_ERROR;
    }
    if (!is_empty_object(config_json, config_len)) {
        snprintf(err, err_len, "status takes no configuration (expected {})");
        return TRELLIS_ERROR;
    }
    status *self = malloc(sizeof *self);
    if (!self) {
        snprintf(err, err_len, "out of memory");
        return TRELLIS_ERROR;
    }
    self->host = host;
    *instance = self;
    return TRELLIS_OK;
}

static void status_destroy(void *instance) {
    free(instance);
}

static int str_is(trellis_str s, const char *text) {
    return s.len == strlen(text) && memcmp(s.data, text, s.len) == 0;
}

static void add_header(const trellis_host *host, trellis_request *req, const char *name, const char *value) {
    host->response_header(req, name, strlen(name), value, strlen(value));
}

/* "metrics" in "/status/metrics" or "/metrics"; "" for "/status/". */
static trellis_str last_segment(trellis_str path) {
    size_t start = path.len;
    while (start > 0 && path.data[start - 1] != '/')
        --start;
    return (trellis_str){path.data + start, path.len - start};
}

/* A worker thread, several at once; the instance is read-only. */
static const char kAllow[] = "GET, HEAD";

static int status_on_request(void *instance, trellis_request *req) {
    const trellis_host *host = ((status *)instance)->host;
    trellis_str method = host->request_method(req);
    if (!str_is(method, "GET") && !str_is(method, "HEAD")) {
        static const char kBody[] = "method not allowed\n";
        add_header(host, req, "Allow", kAllow);
        add_header(host, req, "Content-Type", "text/plain");
        return host->respond(req, 405, kBody, sizeof kBody - 1) == 0 ? TRELLIS_OK : TRELLIS_ERROR;
    }
    int prometheus = str_is(last_segment(host->request_path(req)), "metrics");
    trellis_str text;
    if (host->server_metrics(req, prometheus ? TRELLIS_METRICS_PROMETHEUS : TRELLIS_METRICS_JSON, &text) != 0)
        return TRELLIS_ERROR;
    add_header(host, req, "Content-Type",
               prometheus ? "text/plain; version=0.0.4; charset=utf-8" : "application/json");
    add_header(host, req, "Cache-Control", "no-store"); /* counters: every read must be fresh */
    return host->respond(req, 200, text.data, text.len) == 0 ? TRELLIS_OK : TRELLIS_ERROR;
}

static const trellis_plugin kStatus = {
    .abi_version = TRELLIS_ABI_VERSION,
    .struct_size = sizeof(trellis_plugin),
    .name = "status",
    .version = "1.0",
    .flags = TRELLIS_PRIVATE, /* loopback only unless the route says "allow" */
    .create = status_create,
    .destroy = status_destroy,
    .on_worker_start = NULL,
    .on_worker_stop = NULL,
    .on_request = status_on_request,
    .allow = kAllow, /* the server's 405 for TRACE on this route says the same */
};

TRELLIS_EXPORT const trellis_plugin *trellis_plugin_entry(void) {
    return &kStatus;
}
