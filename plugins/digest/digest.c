/*
 * digest: the SHA-256 of a file under `root`, in sha256sum's format. The template for a BLOCKING
 * plugin: hashing reads the whole file with read(), seconds of work on a large file or a slow
 * disk, so the descriptor sets TRELLIS_BLOCKING and the host runs on_request on its thread pool,
 * never on an event loop.
 *
 *   config: {"root": "DIR"}              (relative to the configuration file's directory)
 *   GET /digest/docs/a.txt               200 "<64 hex digits>  docs/a.txt\n"
 *   GET /digest/docs/a.txt?algo=sha256   the same; any other algo is 400
 *
 * on_request runs on several pool threads at once: the instance is read-only after create and
 * each request keeps its state on its own stack and heap, so nothing needs a lock.
 *
 * Files are opened beneath root's descriptor with openat2(RESOLVE_BENEATH): neither ".." nor a
 * symlink, even one swapped in mid-request, can reach outside root.
 */
#define _GNU_SOURCE /* syscall(), O_CLOEXEC, O_DIRECTORY and GNU strerror_r under -std=c11 */

#include <trellis/plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------
 * SHA-256 (FIPS 180-4)
 */

typedef struct sha256 {
    uint32_t state[8];
    uint64_t length; /* bytes hashed so far */
    unsigned char block[64];
    size_t used; /* bytes of block waiting for the rest of it */
} sha256;

static const uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n) {
    return (x >> n) | (x << (32 - n));
}

static void sha256_init(sha256 *s) {
    static const uint32_t kInitial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->state, kInitial, sizeof kInitial);
    s->length = 0;
    s->used = 0;
}

/* One 64-byte block into the state (FIPS 180-4 section 6.2.2). */
static void sha256_block(uint32_t state[8], const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i, p += 4)
        w[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
    for (int i = 16; i < 64; ++i) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; ++i) {
        uint32_t t1 =
            h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kRoundConstants[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

static void sha256_update(sha256 *s, const unsigned char *data, size_t len) {
    s->length += len;
    if (s->used > 0) {
        size_t take = len < 64 - s->used ? len : 64 - s->used;
        memcpy(s->block + s->used, data, take);
        s->used += take;
        data += take;
        len -= take;
        if (s->used < 64)
            return;
        sha256_block(s->state, s->block);
        s->used = 0;
    }
    for (; len >= 64; data += 64, len -= 64)
        sha256_block(s->state, data);
    memcpy(s->block, data, len);
    s->used = len;
}

/* Pads with 0x80, zeros and the length in bits so the message ends on a block boundary. */
static void sha256_final(sha256 *s, unsigned char out[32]) {
    static const unsigned char kPadding[64] = {0x80};
    uint64_t bits = s->length * 8;
    sha256_update(s, kPadding, s->used < 56 ? 56 - s->used : 120 - s->used);
    unsigned char length_be[8];
    for (int i = 0; i < 8; ++i)
        length_be[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, length_be, sizeof length_be);
    for (int i = 0; i < 32; ++i)
        out[i] = (unsigned char)(s->state[i / 4] >> (24 - 8 * (i % 4)));
}

/* Hashes fd from its current offset to its end, 64 KiB per read(). Returns 0, or an errno. */
static int sha256_file(int fd, unsigned char out[32]) {
    enum { kBlockSize = 64 * 1024 };
    unsigned char *buffer = malloc(kBlockSize); /* not on the stack: pool threads' stacks may be small */
    if (!buffer)
        return ENOMEM;
    sha256 s;
    sha256_init(&s);
    for (;;) {
        ssize_t n = read(fd, buffer, kBlockSize);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int error = n < 0 ? errno : 0;
            free(buffer);
            if (error == 0)
                sha256_final(&s, out);
            return error;
        }
        sha256_update(&s, buffer, (size_t)n);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Configuration: one small object, parsed by hand so the plugin needs no JSON library.
 */

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_space(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        ++c->p;
}

/* Skips blanks, then consumes `ch` if it comes next. */
static int take(cursor *c, char ch) {
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        ++c->p;
        return 1;
    }
    return 0;
}

static int hex4(cursor *c, uint32_t *value) {
    *value = 0;
    for (int i = 0; i < 4; ++i, ++c->p) {
        if (c->p >= c->end)
            return 0;
        char ch = *c->p;
        uint32_t digit = ch >= '0' && ch <= '9'   ? (uint32_t)(ch - '0')
                         : ch >= 'a' && ch <= 'f' ? (uint32_t)(ch - 'a' + 10)
                         : ch >= 'A' && ch <= 'F' ? (uint32_t)(ch - 'A' + 10)
                                                  : 16;
        if (digit == 16)
            return 0;
        *value = *value << 4 | digit;
    }
    return 1;
}

/* Appends code point cp as UTF-8; returns 0 when out is full. */
static int put_utf8(char *out, size_t out_size, size_t *len, uint32_t cp) {
    unsigned char bytes[4];
    size_t n;
    if (cp < 0x80) {
        bytes[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        bytes[0] = (unsigned char)(0xc0 | cp >> 6);
        bytes[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        bytes[0] = (unsigned char)(0xe0 | cp >> 12);
        bytes[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        bytes[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        bytes[0] = (unsigned char)(0xf0 | cp >> 18);
        bytes[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
        bytes[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        bytes[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    if (*len + n >= out_size) /* keep room for the NUL */
        return 0;
    memcpy(out + *len, bytes, n);
    *len += n;
    return 1;
}

/* Reads a JSON string into out (NUL-terminated). Returns 0 on success, or a message. A NUL
 * (\u0000) is refused: it would cut a path short. */
static const char *parse_string(cursor *c, char *out, size_t out_size) {
    size_t len = 0;
    if (!take(c, '"'))
        return "expected a string";
    while (c->p < c->end && *c->p != '"') {
        unsigned char ch = (unsigned char)*c->p++;
        uint32_t cp = ch;
        if (ch < 0x20)
            return "control character in a string";
        if (ch == '\\') {
            if (c->p >= c->end)
                return "unterminated string";
            static const char kEscapes[] = "\"\\/bfnrt", kDecoded[] = "\"\\/\b\f\n\r\t";
            char escape = *c->p++;
            const char *plain = escape ? strchr(kEscapes, escape) : NULL;
            if (plain) {
                cp = (unsigned char)kDecoded[plain - kEscapes];
            } else if (escape != 'u') {
                return "invalid escape in a string";
            } else {
                if (!hex4(c, &cp))
                    return "invalid \\u escape";
                if (cp >= 0xd800 && cp < 0xdc00) { /* a high surrogate: its low half must follow */
                    uint32_t low;
                    if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
                        return "unpaired surrogate in a string";
                    c->p += 2;
                    if (!hex4(c, &low) || low < 0xdc00 || low >= 0xe000)
                        return "unpaired surrogate in a string";
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                } else if (cp >= 0xdc00 && cp < 0xe000) {
                    return "unpaired surrogate in a string";
                }
                if (cp == 0)
                    return "NUL in a string";
            }
            if (!put_utf8(out, out_size, &len, cp))
                return "string too long";
        } else {
            if (len + 1 >= out_size)
                return "string too long";
            out[len++] = (char)ch;
        }
    }
    if (c->p >= c->end)
        return "unterminated string";
    ++c->p;
    out[len] = '\0';
    return NULL;
}

/* Fills root from {"root": "DIR"}. Returns 0, or -1 with a message in err. */
static int parse_config(const char *json, size_t len, char *root, size_t root_size, char *err,
                        size_t err_len) {
    cursor c = {json, json + len};
    const char *problem = NULL;
    int have_root = 0;
    if (!take(&c, '{')) {
        problem = "expected an object";
        goto syntax;
    }
    if (!take(&c, '}')) {
        do {
            char key[64];
            if ((problem = parse_string(&c, key, sizeof key)) != NULL)
                goto syntax;
            if (!take(&c, ':')) {
                problem = "expected ':'";
                goto syntax;
            }
            if (strcmp(key, "root") != 0) {
                snprintf(err, err_len, "unknown key \"%s\" (digest takes only \"root\")", key);
                return -1;
            }
            if (have_root) {
                snprintf(err, err_len, "\"root\" given twice");
                return -1;
            }
            skip_space(&c);
            if (c.p < c.end && *c.p != '"') {
                snprintf(err, err_len, "\"root\" must be a string (a directory)");
                return -1;
            }
            if ((problem = parse_string(&c, root, root_size)) != NULL)
                goto syntax;
            have_root = 1;
        } while (take(&c, ','));
        if (!take(&c, '}')) {
            problem = "expected ',' or '}'";
            goto syntax;
        }
    }
    skip_space(&c);
    if (c.p != c.end) {
        problem = "unexpected text after the object";
        goto syntax;
    }
    if (!have_root || root[0] == '\0') {
        snprintf(err, err_len, "\"root\" is required: the directory whose files are hashed");
        return -1;
    }
    return 0;
syntax:
    snprintf(err, err_len, "invalid config at byte %zu: %s (expected {\"root\": \"DIR\"})",
             (size_t)(c.p - json), problem);
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * The plugin
 */

/* Read-only once create returns, so pool threads share it without locks. */
typedef struct digest {
    const trellis_host *host;
    trellis_plugin_ctx *ctx;
    int root_fd;
    int have_openat2; /* 0 on kernels before 5.6 */
} digest;

static int open_beneath(int root_fd, const char *path) {
    struct open_how how = {0};
    how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY; /* O_NONBLOCK: a FIFO must not hang */
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    for (;;) {
        long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof how);
        if (fd >= 0 || errno != EINTR)
            return (int)fd;
    }
}

static int has_dotdot_segment(const char *path) {
    for (const char *segment = path;; ++segment) {
        if (segment[0] == '.' && segment[1] == '.' && (segment[2] == '/' || segment[2] == '\0'))
            return 1;
        if (!(segment = strchr(segment, '/')))
            return 0;
    }
}

/* Without openat2 nothing stops a symlink inside root from pointing out of it; this still keeps
 * ".." (which the host resolves away already) and absolute paths from doing so. */
static int open_fallback(int root_fd, const char *path) {
    if (path[0] == '/' || has_dotdot_segment(path)) {
        errno = EXDEV;
        return -1;
    }
    return openat(root_fd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
}

static int digest_create(const trellis_host *host, trellis_plugin_ctx *ctx, const char *config_json,
                         size_t config_len, void **instance, char *err, size_t err_len) {
    /* A server older than ABI 1.1 ignores TRELLIS_BLOCKING and would hash on its event loop. */
    if (!TRELLIS_HOST_HAS(host, request_query_param)) {
        snprintf(err, err_len, "needs a Trellis server with plugin ABI 1.1 or later (blocking handlers)");
        return TRELLIS_ERROR;
    }
    char root[PATH_MAX];
    if (parse_config(config_json, config_len, root, sizeof root, err, err_len) != 0)
        return TRELLIS_ERROR;
    char path[PATH_MAX];
    trellis_str dir = host->config_dir(ctx);
    int n = root[0] == '/' ? snprintf(path, sizeof path, "%s", root)
                           : snprintf(path, sizeof path, "%.*s/%s", (int)dir.len, dir.data, root);
    if (n < 0 || (size_t)n >= sizeof path) {
        snprintf(err, err_len, "root: path too long");
        return TRELLIS_ERROR;
    }
    int root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        snprintf(err, err_len, "root %s: %s", path, errno == ENOTDIR ? "not a directory" : strerror(errno));
        return TRELLIS_ERROR;
    }
    digest *self = malloc(sizeof *self);
    if (!self) {
        close(root_fd);
        snprintf(err, err_len, "out of memory");
        return TRELLIS_ERROR;
    }
    self->host = host;
    self->ctx = ctx;
    self->root_fd = root_fd;
    /* openat2 arrived in Linux 5.6; some seccomp filters refuse it with EPERM rather than ENOSYS. */
    int probe = open_beneath(root_fd, ".");
    self->have_openat2 = probe >= 0;
    if (probe >= 0) {
        close(probe);
    } else {
        char line[200];
        snprintf(line, sizeof line, "openat2: %s; refusing \"..\", but a symlink in root can lead out of it",
                 strerror(errno));
        host->log(ctx, TRELLIS_LOG_WARN, line);
    }
    *instance = self;
    return TRELLIS_OK;
}

static void digest_destroy(void *instance) {
    digest *self = instance;
    close(self->root_fd);
    free(self);
}

static int str_is(trellis_str s, const char *text) {
    return s.len == strlen(text) && memcmp(s.data, text, s.len) == 0;
}

static void add_header(const digest *self, trellis_request *req, const char *name, const char *value) {
    self->host->response_header(req, name, strlen(name), value, strlen(value));
}

static int answer(const digest *self, trellis_request *req, int status, const char *body, size_t len) {
    add_header(self, req, "Content-Type", "text/plain");
    return self->host->respond(req, status, body, len) == 0 ? TRELLIS_OK : TRELLIS_ERROR;
}

static int answer_text(const digest *self, trellis_request *req, int status, const char *text) {
    return answer(self, req, status, text, strlen(text));
}

static int answer_errno(const digest *self, trellis_request *req, const char *what, int error) {
    switch (error) {
    case ENOENT:
    case ENOTDIR:
    case ENAMETOOLONG:
        return answer_text(self, req, 404, "no such file\n");
    case EACCES:
    case EPERM:
    case EXDEV: /* a symlink or ".." leading out of root */
    case ELOOP:
        return answer_text(self, req, 403, "forbidden\n");
    case ENXIO: /* a socket */
    case ENODEV:
        return answer_text(self, req, 403, "not a regular file\n");
    default: {
        char reason[128], line[192];
        snprintf(line, sizeof line, "%s: %s", what, strerror_r(error, reason, sizeof reason));
        self->host->log(self->ctx, TRELLIS_LOG_ERROR, line);
        return answer_text(self, req, 500, "internal error\n");
    }
    }
}

/* "<hex>  name\n" as sha256sum prints it: a name holding '\' or a newline is escaped and the line
 * starts with '\', so `sha256sum -c` reads it back. Returns the length written. */
static size_t format_line(const unsigned char sum[32], const char *name, char *out) {
    static const char kHex[] = "0123456789abcdef";
    size_t len = 0;
    if (strpbrk(name, "\\\n"))
        out[len++] = '\\';
    for (int i = 0; i < 32; ++i) {
        out[len++] = kHex[sum[i] >> 4];
        out[len++] = kHex[sum[i] & 0xf];
    }
    out[len++] = ' ';
    out[len++] = ' ';
    for (const char *p = name; *p; ++p) {
        if (*p == '\\' || *p == '\n') {
            out[len++] = '\\';
            out[len++] = *p == '\n' ? 'n' : '\\';
        } else {
            out[len++] = *p;
        }
    }
    out[len++] = '\n';
    return len;
}

/* A pool thread, several at once. Blocking here is the point: only this request waits. HEAD does
 * the same work as GET so that its headers (Content-Length, or an error status) match. */
static const char kAllow[] = "GET, HEAD";

static int digest_on_request(void *instance, trellis_request *req) {
    const digest *self = instance;
    const trellis_host *host = self->host;
    trellis_str method = host->request_method(req);
    if (!str_is(method, "GET") && !str_is(method, "HEAD")) {
        add_header(self, req, "Allow", kAllow);
        return answer_text(self, req, 405, "method not allowed\n");
    }
    char algo[16];
    long algo_len = host->request_query_param(req, "algo", 4, algo, sizeof algo);
    if (algo_len >= 0 && !(algo_len == 6 && memcmp(algo, "sha256", 6) == 0))
        return answer_text(self, req, 400, "unsupported algo: only sha256\n");

    /* "/docs/a.txt" below the route names "docs/a.txt" under root; the route itself ("/") names
     * root, a directory, hence 403. */
    trellis_str below = host->request_path_below(req);
    char name[PATH_MAX];
    size_t name_len = below.len > 0 ? below.len - 1 : 0; /* without the leading '/' */
    if (name_len >= sizeof name)
        return answer_errno(self, req, "open", ENAMETOOLONG);
    memcpy(name, below.data + below.len - name_len, name_len);
    name[name_len] = '\0';
    const char *relative = name[0] ? name : ".";
    int fd =
        self->have_openat2 ? open_beneath(self->root_fd, relative) : open_fallback(self->root_fd, relative);
    if (fd < 0)
        return answer_errno(self, req, "open", errno);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return answer_text(self, req, 403, "not a regular file\n");
    }
    unsigned char sum[32];
    int error = sha256_file(fd, sum);
    close(fd);
    if (error)
        return answer_errno(self, req, "read", error);

    /* Escaping at most doubles the name. */
    char *line = malloc(2 * strlen(name) + 68);
    if (!line)
        return TRELLIS_ERROR;
    int rc = answer(self, req, 200, line, format_line(sum, name, line));
    free(line);
    return rc;
}

static const trellis_plugin kDigest = {
    .abi_version = TRELLIS_ABI_VERSION,
    .struct_size = sizeof(trellis_plugin),
    .name = "digest",
    .version = "1.0",
    .flags = TRELLIS_BLOCKING, /* on_request runs on the thread pool */
    .create = digest_create,
    .destroy = digest_destroy,
    .on_worker_start = NULL,
    .on_worker_stop = NULL,
    .on_request = digest_on_request,
    .allow = kAllow, /* the server's 405 for TRACE on this route says the same */
};

TRELLIS_EXPORT const trellis_plugin *trellis_plugin_entry(void) {
    return &kDigest;
}
