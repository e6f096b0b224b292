/*
 * Trellis plugin ABI: the only header a plugin needs.
 *
 * A plugin is a shared object that exports one C function, trellis_plugin_entry(), returning a
 * descriptor (trellis_plugin). The server hands each plugin instance a table of host functions
 * (trellis_host) to read requests and build responses, so a plugin links against no symbol of the
 * server binary and keeps loading across server versions.
 *
 * Compatibility rules:
 *   - Both structs start with abi_version and struct_size.
 *   - Fields are only ever appended. A plugin built against an older header has a smaller
 *     struct_size; the host never reads past it. A plugin reads host fields only when
 *     host->struct_size says they are there (TRELLIS_HOST_HAS).
 *   - The major version changes only when something already published changes meaning; the host
 *     refuses a plugin with another major version and names both versions.
 *
 * Every item states OWNERSHIP (who frees), LIFETIME (how long a pointer stays valid) and THREAD
 * (where it may be called). "Worker thread" means the thread of the event loop that owns the
 * request; plugins are called from several worker threads at once, so instance state shared
 * between requests must be thread-safe (or kept per worker, see on_worker_start).
 */
#ifndef TRELLIS_PLUGIN_H
#define TRELLIS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TRELLIS_ABI_MAJOR 1
#define TRELLIS_ABI_MINOR 2
/* Major in the high 16 bits, minor in the low 16 bits. */
#define TRELLIS_ABI_VERSION ((TRELLIS_ABI_MAJOR << 16) | TRELLIS_ABI_MINOR)

#if defined(__GNUC__)
#define TRELLIS_EXPORT __attribute__((visibility("default")))
#else
#define TRELLIS_EXPORT
#endif

/* Results of plugin hooks. */
typedef enum trellis_result {
    TRELLIS_OK = 0,       /* create/on_worker_start succeeded; on_request answered the request */
    TRELLIS_DECLINED = 1, /* on_request: not mine, the router tries the next matching route */
    TRELLIS_ERROR = -1,   /* failure: the host answers 500 (if nothing was sent) and logs it */
    /* ABI 1.1 */
    TRELLIS_ASYNC = 2, /* on_request: the plugin keeps the request and answers later, from any thread;
                          it must call request_release once it is done with the handle */
    TRELLIS_AGAIN = 3  /* response_write: accepted, but the client is behind: stop writing until
                          on_writable. on_body: stop delivering body bytes until request_resume_body */
} trellis_result;

/* Flags in trellis_plugin.flags; unknown bits are ignored. */
/* ABI 1.1: on_request may block (disk, a database, a hash): the host runs it on its thread pool
 * ("thread_pool" in server.json), never on an event loop. A route can ask the same with
 * "blocking": true. When the pool's queue is full the request is answered 503. */
#define TRELLIS_BLOCKING (1u << 0)
/* ABI 1.1: the plugin takes request bodies as a stream: on_request is called as soon as the head is
 * complete (request_body is then empty) and the body arrives through on_body. Cannot be combined
 * with TRELLIS_BLOCKING. */
#define TRELLIS_STREAM_BODY (1u << 1)
/* The plugin shows the server's own state (routes, load): a route to it without "allow" serves
 * only loopback and Unix-socket clients, others get 403 from the server. Servers before this flag
 * ignore it. */
#define TRELLIS_PRIVATE (1u << 2)

/* Formats of trellis_host.server_metrics. */
#define TRELLIS_METRICS_JSON 0
#define TRELLIS_METRICS_PROMETHEUS 1

/* ABI 1.2: what trellis_host.thread_kind returns. */
#define TRELLIS_THREAD_OTHER 0  /* the main thread (create, destroy) or a thread of the plugin's own */
#define TRELLIS_THREAD_WORKER 1 /* a worker's event loop: never block here */
#define TRELLIS_THREAD_POOL 2   /* the server's thread pool (a blocking handler): blocking is fine */

/* Log levels for trellis_host.log. */
typedef enum trellis_log_level {
    TRELLIS_LOG_DEBUG = 0,
    TRELLIS_LOG_INFO = 1,
    TRELLIS_LOG_WARN = 2,
    TRELLIS_LOG_ERROR = 3
} trellis_log_level;

/* A byte string that is not NUL-terminated. */
typedef struct trellis_str {
    const char *data;
    size_t len;
} trellis_str;

/*
 * What the transport under a request knows about its connection, as text: a plugin works the same
 * over every transport and never sees a transport's library types. The plugin sets struct_size to
 * sizeof(trellis_transport_info) before asking; the host fills only the fields that fit, so the
 * struct can grow. LIFETIME of the strings: the request's. Empty where a fact does not apply
 * (on a plain connection all but `name` are empty).
 */
typedef struct trellis_transport_info {
    uint32_t struct_size;
    trellis_str name;             /* "plain" or "tls" */
    int secure;                   /* 1 when the connection is encrypted and authenticated */
    trellis_str version;          /* protocol version, "TLSv1.2" */
    trellis_str cipher;           /* "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256" */
    trellis_str server_name;      /* the name the client asked for (SNI) */
    trellis_str alpn;             /* negotiated application protocol, "http/1.1" */
    int peer_certificate;         /* 1 when the client presented a certificate */
    trellis_str peer_subject;     /* "CN=alice, O=Example" */
    trellis_str peer_san;         /* "DNS:a.example, DNS:b.example" */
    trellis_str peer_fingerprint; /* SHA-256 of the certificate, "AB:CD:..." */
    trellis_str peer_verify;      /* "ok", "none" (no certificate) or the reasons it failed */
} trellis_transport_info;

/*
 * How to answer with a file (trellis_host.respond_file_with). The plugin sets struct_size to
 * sizeof(trellis_file_options); fields past it are taken as zero, so the struct can grow.
 */
typedef struct trellis_file_options {
    uint32_t struct_size;
    int status;          /* 200: the host adds ETag, Last-Modified and Accept-Ranges and answers
                            conditional (304/412) and range (206/416) requests; other: sent as is */
    int fd;              /* an open regular file */
    int borrow_fd;       /* 0: the host takes fd and closes it. 1: the plugin keeps fd open (an
                            open-file cache); the host duplicates what it must keep past the call */
    uint32_t max_ranges; /* more ranges than this answer the whole file; 0 means 16 */
    int has_stat;        /* 1: the four fields below describe fd and the host skips its fstat */
    uint64_t size;
    int64_t mtime_sec;
    int64_t mtime_nsec;
    uint64_t inode;
} trellis_file_options;

/*
 * One HTTP request in progress. Opaque.
 * OWNERSHIP: the host's.
 * LIFETIME: an inline handler (on_request returns OK, DECLINED or ERROR) may use it until on_request
 *   returns and no longer after it has answered. A handler that returns TRELLIS_ASYNC holds it:
 *   the handle and every trellis_str read from it stay valid until the plugin calls
 *   request_release, even when the client has gone away meanwhile (on_abort). A blocking handler
 *   (TRELLIS_BLOCKING) holds it during on_request on a pool thread, and longer if it returns
 *   TRELLIS_ASYNC.
 * THREAD: the worker thread that called on_request. While the plugin holds the request (on the pool,
 *   or after TRELLIS_ASYNC) any one thread at a time may call the functions marked "held: any".
 *   A handler that will return TRELLIS_ASYNC may hand the request to another thread before it
 *   returns; that thread may answer and even release it at once, so on_request must not touch the
 *   request after handing it over.
 * Handles are pooled: after request_release the same pointer may stand for a later request, so a
 *   plugin that finds requests by pointer must forget one before it releases it (an on_abort that
 *   overlaps the release then finds nothing).
 */
typedef struct trellis_request trellis_request;

/*
 * The host's handle for one plugin instance, used for logging. Opaque.
 * OWNERSHIP: the host's. LIFETIME: from create until destroy returns. THREAD: any.
 */
typedef struct trellis_plugin_ctx trellis_plugin_ctx;

/*
 * Functions the host provides. A plugin keeps the pointer it got in create.
 * OWNERSHIP: the host's. LIFETIME: until destroy returns. THREAD: as stated per function.
 */
typedef struct trellis_host {
    uint32_t abi_version; /* TRELLIS_ABI_VERSION of the running server */
    uint32_t struct_size; /* sizeof(trellis_host) in the running server */

    /* ---- reading the request (THREAD: worker thread; LIFETIME of results: the request's) ---- */

    /* Method as sent ("GET"). */
    trellis_str (*request_method)(const trellis_request *req);
    /* Request target as sent, query included ("/a%20b?x=1"). */
    trellis_str (*request_target)(const trellis_request *req);
    /* Path: percent-decoded once, "." and ".." resolved, repeated '/' merged; always starts with
     * '/' and never holds NUL or a decoded '/' from %2F (such requests get 400 before routing). */
    trellis_str (*request_path)(const trellis_request *req);
    /* Query without the '?', raw (not decoded); empty when absent. */
    trellis_str (*request_query)(const trellis_request *req);
    /* Host the request is for (Host header, or the authority of an absolute-form target), port
     * removed and lower-cased; empty for HTTP/1.0 requests without Host. */
    trellis_str (*request_host)(const trellis_request *req);
    /* HTTP version: 10 for HTTP/1.0, 11 for HTTP/1.1, 20 for a stream of an HTTP/2 connection. */
    int (*request_version)(const trellis_request *req);
    /* First header named `name` (case-insensitive). Returns 1 and sets *value, or 0. */
    int (*request_header)(const trellis_request *req, const char *name, size_t name_len, trellis_str *value);
    /* Number of header lines, and the i-th one in arrival order (returns 0 past the end). */
    size_t (*request_header_count)(const trellis_request *req);
    int (*request_header_at)(const trellis_request *req, size_t index, trellis_str *name, trellis_str *value);
    /* The whole request body, de-chunked (empty when none). Bodies are buffered up to
     * limits.max_body_bytes before on_request is called. */
    trellis_str (*request_body)(const trellis_request *req);
    /* Peer address as text ("127.0.0.1:51234", "[::1]:51234") written into buf with a NUL;
     * returns its length, or 0 if buf is too small (64 bytes always suffice). */
    size_t (*request_peer)(const trellis_request *req, char *buf, size_t buf_len);
    /* Route prefix that matched ("/hello"), and the path below it ("/x" for "/hello/x"; "/" when
     * the path is the prefix itself). */
    trellis_str (*request_route_prefix)(const trellis_request *req);
    trellis_str (*request_path_below)(const trellis_request *req);

    /* ---- answering (THREAD: worker thread) ---- */

    /* Adds a response header. Returns 0, or -1 when the name or value is invalid (CR, LF, NUL,
     * empty name) or owned by the host: Content-Length, Transfer-Encoding, Connection, Date and
     * Server are set by the host. Names and values are copied. */
    int (*response_header)(trellis_request *req, const char *name, size_t name_len, const char *value,
                           size_t value_len);
    /* Answers with a body from memory (copied; the plugin may free it on return). For HEAD the
     * host sends only the headers, with the Content-Length of the body. Returns 0, or -1 if the
     * request was already answered. After it returns the request handle is no longer valid. */
    int (*respond)(trellis_request *req, int status, const char *body, size_t body_len);
    /* Answers with the contents of an open regular file; the host takes ownership of fd (closes
     * it in every case). Same as respond_file_with with only status and fd set: with status 200
     * the host adds Last-Modified, a strong ETag and Accept-Ranges and answers conditional and
     * range requests. Returns 0, or -1 (request answered with 500) if fd is not a readable
     * regular file. */
    int (*respond_file)(trellis_request *req, int status, int fd);

    /* ---- anything else ---- */

    /* Writes one line to the server's error log, prefixed with the instance name.
     * THREAD: any. */
    void (*log)(trellis_plugin_ctx *ctx, trellis_log_level level, const char *message);
    /* Directory of the configuration file, against which relative paths in a plugin's config
     * resolve (as they do in the server's own keys). No trailing '/'.
     * LIFETIME: until destroy. THREAD: any. */
    trellis_str (*config_dir)(trellis_plugin_ctx *ctx);
    /* Facts of the connection the request came on: fills *info up to info->struct_size and
     * returns info->secure. THREAD: worker thread. LIFETIME of the strings: the request's. */
    int (*request_transport)(const trellis_request *req, trellis_transport_info *info);
    /* Answers with a file as described by *options (see trellis_file_options): conditional
     * requests in RFC 9110 order, single and multipart ranges, HEAD, and the body sent without
     * copying where the transport allows. Returns 0, or -1 (request answered with 500) if fd is
     * not a readable regular file. THREAD: worker thread. */
    int (*respond_file_with)(trellis_request *req, const trellis_file_options *options);
    /* Index of the worker thread running the request, 0 to workers - 1 (as in on_worker_start):
     * for per-worker state without locks. On a pool thread it is the worker that received the
     * request, whose per-worker state belongs to that worker's thread: a blocking handler must not
     * use such state without a lock. THREAD: worker thread, or held: any. */
    unsigned (*request_worker)(const trellis_request *req);

    /* ---- ABI 1.1: handlers off the loop, streamed bodies, metrics ----
     * Functions marked "held: any" may be called from any thread for a request the plugin holds
     * (TRELLIS_ASYNC, or on_request of a blocking handler), one thread at a time per request; the
     * host carries the work to the request's event loop. respond, respond_file, respond_file_with,
     * response_header and the request_* readers above are also "held: any". */

    /* Ends the plugin's hold on a request it kept with TRELLIS_ASYNC, answered or not (a request
     * released without an answer is answered 500). The handle is invalid once this returns.
     * Exactly once per TRELLIS_ASYNC. THREAD: held: any. */
    void (*request_release)(trellis_request *req);
    /* Starts a streamed response: status and headers now, the body through response_write.
     * content_length >= 0 promises that many bytes; -1 means unknown: the body is sent with
     * Transfer-Encoding: chunked (HTTP/1.1) or delimited by closing the connection (HTTP/1.0).
     * For HEAD the head is sent and written bytes are dropped. It may be called during on_request,
     * which then returns TRELLIS_ASYNC to go on writing later (from on_writable or another thread).
     * A held request with no answer after limits.handler_timeout_ms is answered 504; a streamed
     * response that sends nothing for that long is cut off (the connection closes).
     * Returns 0, or -1 (already answered, aborted, or a status without a body).
     * THREAD: the worker thread during on_request, or held: any. */
    int (*response_start)(trellis_request *req, int status, int64_t content_length);
    /* Appends body bytes to a started response (copied; the plugin may reuse data on return).
     * Returns 0 to keep writing; TRELLIS_AGAIN when the bytes were taken but the client reads
     * slower than the plugin writes: write no more until on_writable is called (response_end may
     * still follow); -1 when the response is not started or the client has gone.
     * THREAD: as response_start. */
    int (*response_write)(trellis_request *req, const char *data, size_t len);
    /* Ends a started response (the last chunk for chunked). Fewer bytes than a promised
     * content_length end the connection after the body, as the framing is then broken.
     * Returns 0 or -1. THREAD: as response_start. */
    int (*response_end)(trellis_request *req);
    /* Resumes body delivery after on_body returned TRELLIS_AGAIN. THREAD: held: any. */
    void (*request_resume_body)(trellis_request *req);
    /* Value of query parameter `name` ("a" in "?a=1&b=2"), percent-decoded with '+' as space,
     * written into buf (not NUL-terminated; truncated to buf_len like snprintf). Returns its full
     * decoded length, or -1 when the parameter is absent. "?a" and "?a=" give an empty value (0);
     * of a repeated name the first wins. THREAD: as request_query. */
    long (*request_query_param)(const trellis_request *req, const char *name, size_t name_len, char *buf,
                                size_t buf_len);
    /* The server's counters as text: TRELLIS_METRICS_JSON or TRELLIS_METRICS_PROMETHEUS (the text
     * exposition format 0.0.4). Returns 0 and sets *out (LIFETIME: the request's), or -1 for an
     * unknown format. Summed over workers at the time of the call. THREAD: worker thread, or
     * held: any. */
    int (*server_metrics)(trellis_request *req, int format, trellis_str *out);

    /* ---- ABI 1.2: per-route settings, the kind of thread (check TRELLIS_HOST_ABI_AT_LEAST(host,
     * 1, 2) or TRELLIS_HOST_HAS before calling them) ---- */

    /* The "config" of the route this request matched (routes[].config in server.json) as JSON text:
     * any JSON value, as the host re-serialised it ("{\"lang\":\"en\"}", "[1,2]", "\"text\"", "null"
     * for an explicit null). Empty (len 0) when the route has no "config". data is also
     * NUL-terminated. Two routes to the same instance each see their own. After a reload a request
     * sees the config of the routes it was matched with, even while the new ones serve others. The
     * plugin parses it itself (per request, or cached keyed by the text).
     * OWNERSHIP: the host's. LIFETIME: the request's. THREAD: worker thread, or held: any. */
    trellis_str (*request_route_config)(const trellis_request *req);
    /* What kind of thread the caller is on: TRELLIS_THREAD_WORKER (an event loop: must not block),
     * TRELLIS_THREAD_POOL (the server's thread pool, running a blocking handler: may block) or
     * TRELLIS_THREAD_OTHER (the main thread during create and destroy, or a thread the plugin made).
     * THREAD: any. */
    int (*thread_kind)(void);
} trellis_host;

/* True when the running host speaks at least ABI major.minor (a plugin built against a newer
 * header than the server it runs in checks this in create before using newer features). */
#define TRELLIS_HOST_ABI_AT_LEAST(host, major, minor)                                                        \
    (((host)->abi_version >> 16) == (major) && ((host)->abi_version & 0xffff) >= (minor))

/* True when the running host has the field `field` (for plugins built against a newer header
 * than the server they run in). */
#define TRELLIS_HOST_HAS(host, field)                                                                        \
    ((host)->struct_size >= offsetof(trellis_host, field) + sizeof((host)->field))

/*
 * What a plugin exports. Returned by trellis_plugin_entry().
 * OWNERSHIP: the plugin's (usually a static const). LIFETIME: until the library is unloaded,
 *   which the host does only after destroy of every instance has returned.
 * THREAD: hooks are called as stated per hook. Optional hooks may be NULL.
 */
typedef struct trellis_plugin {
    uint32_t abi_version; /* TRELLIS_ABI_VERSION the plugin was built with */
    uint32_t struct_size; /* sizeof(trellis_plugin) the plugin was built with */
    const char *name;     /* short name for logs ("static") */
    const char *version;  /* the plugin's own version string, for logs */
    uint32_t flags;       /* TRELLIS_BLOCKING, TRELLIS_STREAM_BODY (ABI 1.1) */

    /* Creates one instance from the JSON text of its "config" key ("{}" when absent).
     * On failure writes a message into err (NUL-terminated, at most err_len bytes) and returns
     * TRELLIS_ERROR; the server refuses to start (or, on a reload, keeps its running configuration)
     * and prints it.
     * OWNERSHIP: *instance belongs to the plugin until destroy. config_json is valid only during
     *   the call. THREAD: the main thread, before any worker uses the instance. */
    int (*create)(const trellis_host *host, trellis_plugin_ctx *ctx, const char *config_json,
                  size_t config_len, void **instance, char *err, size_t err_len);
    /* Destroys an instance. THREAD: the main thread, once no worker uses the instance any more
     * (at exit, or after a reload that removed or replaced it, once its last request is released). */
    void (*destroy)(void *instance);

    /* Optional. Called once per worker thread, on that thread, before it serves a request
     * (on_worker_start) and after its last one (on_worker_stop). worker_index runs from 0 to
     * workers - 1, so per-worker state fits in an array. A TRELLIS_ERROR from on_worker_start
     * stops the server (at start) or is logged (for an instance added by a reload). */
    int (*on_worker_start)(void *instance, unsigned worker_index);
    void (*on_worker_stop)(void *instance, unsigned worker_index);

    /* Handles a request. Returns TRELLIS_OK after answering with respond or respond_file,
     * TRELLIS_DECLINED without answering to pass the request to the next matching route, or
     * TRELLIS_ERROR (the host answers 500 unless an answer was already given).
     * Returning TRELLIS_OK without answering is a plugin bug: the host answers 500 and logs it.
     * TRELLIS_ASYNC (ABI 1.1) keeps the request to answer later (see trellis_request).
     * THREAD: a worker thread, several at once; a pool thread for TRELLIS_BLOCKING. */
    int (*on_request)(void *instance, trellis_request *req);

    /* ---- ABI 1.1, all optional ---- */

    /* The client went away (or the request timed out with 504) while the plugin held the request:
     * answering now fails with -1, and the plugin should stop its work and still call
     * request_release. Called at most once, and not once the host has taken the plugin's
     * request_release; it may overlap a release another thread is making (the handle stays valid
     * during the call). For a blocking handler it may come while on_request still runs on the
     * pool, and never comes for one whose on_request did not start. THREAD: worker thread. */
    void (*on_abort)(void *instance, trellis_request *req);
    /* The response bytes written so far have left: response_write may be called again after it
     * returned TRELLIS_AGAIN. THREAD: worker thread. */
    void (*on_writable)(void *instance, trellis_request *req);
    /* TRELLIS_STREAM_BODY: the next `len` body bytes (de-chunked), valid during the call; `last` is
     * 1 on the final call (len may be 0). Return TRELLIS_OK to continue, TRELLIS_AGAIN to pause
     * until request_resume_body (the host stops reading the socket), TRELLIS_ERROR to fail the
     * request (500 unless answered; the connection closes). THREAD: worker thread. */
    int (*on_body)(void *instance, trellis_request *req, const char *data, size_t len, int last);

    /* ABI 1.2. Optional (read only when struct_size covers it, so older plugins count as NULL). The methods
     * on_request answers with anything but 405, as an Allow value ("GET, HEAD"); NULL when it
     * takes every method the host passes on. The host refuses TRACE itself, before any plugin
     * (it would echo credentials back); its 405 on this plugin's route carries this Allow, so
     * that every 405 of one resource names the same methods.
     * OWNERSHIP: the plugin's. LIFETIME: as the descriptor. THREAD: read by worker threads. */
    const char *allow;
} trellis_plugin;

/* The one symbol a plugin exports. */
#define TRELLIS_PLUGIN_ENTRY_SYMBOL "trellis_plugin_entry"
TRELLIS_EXPORT const trellis_plugin *trellis_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* TRELLIS_PLUGIN_H */
