/*
 * hello: the smallest useful plugin, and the template for a new one.
 *
 * Copy this file, rename the descriptor's name, and fill in on_request. A plugin includes only
 * <trellis/plugin.h>; everything it needs from the server comes through the host table it is
 * given in create().
 */
#include <trellis/plugin.h>

#include <stdlib.h>

/* Per-instance state: here just the host table, kept for on_request. */
typedef struct hello {
    const trellis_host *host;
} hello;

static int hello_create(const trellis_host *host, trellis_plugin_ctx *ctx, const char *config_json,
                        size_t config_len, void **instance, char *err, size_t err_len) {
    (void)ctx;
    (void)config_json; /* hello takes no configuration */
    (void)config_len;
    (void)err;
    (void)err_len;
    hello *self = malloc(sizeof *self);
    if (!self)
        return TRELLIS_ERROR;
    self->host = host;
    *instance = self;
    return TRELLIS_OK;
}

static void hello_destroy(void *instance) {
    free(instance);
}

/* Runs on a worker thread for each request routed here; answers at once. */
static int hello_on_request(void *instance, trellis_request *req) {
    const trellis_host *host = ((hello *)instance)->host;
    static const char kName[] = "Content-Type";
    static const char kType[] = "text/plain";
    static const char kBody[] = "Hello, World!";
    host->response_header(req, kName, sizeof kName - 1, kType, sizeof kType - 1);
    return host->respond(req, 200, kBody, sizeof kBody - 1) == 0 ? TRELLIS_OK : TRELLIS_ERROR;
}

static const trellis_plugin kHello = {
    .abi_version = TRELLIS_ABI_VERSION,
    .struct_size = sizeof(trellis_plugin),
    .name = "hello",
    .version = "1.0",
    .flags = 0,
    .create = hello_create,
    .destroy = hello_destroy,
    .on_worker_start = NULL,
    .on_worker_stop = NULL,
    .on_request = hello_on_request,
};

TRELLIS_EXPORT const trellis_plugin *trellis_plugin_entry(void) {
    return &kHello;
}
