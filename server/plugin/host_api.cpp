// The trellis_host table: how plugins read requests and answer them. Every function checks its
// arguments, since a plugin bug must become an error code and a log line, not a crashed worker.
#include "connection.hpp"
#include "http/request.hpp"
#include "log/log.hpp"
#include "plugin/loader.hpp"
#include "router.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

namespace trellis {
namespace {

trellis_str to_str(std::string_view view) {
    return {view.data(), view.size()};
}

trellis_str request_method(const trellis_request *r) {
    return to_str(r->str(r->method));
}
trellis_str request_target(const trellis_request *r) {
    return to_str(r->str(r->target));
}
trellis_str request_path(const trellis_request *r) {
    return to_str(r->path);
}
trellis_str request_query(const trellis_request *r) {
    return to_str(r->str(r->query));
}
trellis_str request_host(const trellis_request *r) {
    return to_str(r->host);
}
int request_version(const trellis_request *r) {
    return r->version;
}

int request_header(const trellis_request *r, const char *name, size_t name_len, trellis_str *value) {
    std::string_view found;
    if (!name || !r->header(std::string_view(name, name_len), found))
        return 0;
    if (value)
        *value = to_str(found);
    return 1;
}

size_t request_header_count(const trellis_request *r) {
    return r->header_count;
}

int request_header_at(const trellis_request *r, size_t index, trellis_str *name, trellis_str *value) {
    if (index >= r->header_count)
        return 0;
    if (name)
        *name = to_str(r->str(r->headers[index].name));
    if (value)
        *value = to_str(r->str(r->headers[index].value));
    return 1;
}

trellis_str request_body(const trellis_request *r) {
    return to_str(r->body);
}

size_t request_peer(const trellis_request *r, char *buf, size_t buf_len) {
    return buf && buf_len ? r->connection->peer_text(buf, buf_len) : 0;
}

trellis_str request_route_prefix(const trellis_request *r) {
    return r->route ? to_str(r->route->prefix) : trellis_str{"", 0};
}
trellis_str request_path_below(const trellis_request *r) {
    return to_str(r->path_below);
}

bool header_text_ok(const char *text, size_t len) {
    for (size_t i = 0; i < len; ++i)
        if (text[i] == '\r' || text[i] == '\n' || text[i] == '\0')
            return false;
    return true;
}

int response_header(trellis_request *r, const char *name, size_t name_len, const char *value,
                    size_t value_len) {
    if (r->answered || !name || name_len == 0 || (!value && value_len) || !header_text_ok(name, name_len) ||
        !header_text_ok(value, value_len))
        return -1;
    std::string_view n(name, name_len);
    for (std::string_view reserved : {"content-length", "transfer-encoding", "connection", "date", "server"})
        if (iequals(n, reserved))
            return -1;
    for (char c : n)
        if (c == ' ' || c == '\t' || c == ':')
            return -1;
    r->response_headers.append(name, name_len)
        .append(": ")
        .append(value ? value : "", value_len)
        .append("\r\n");
    return 0;
}

int respond(trellis_request *r, int status, const char *body, size_t body_len) {
    if (r->answered || status < 200 || status > 999 || (!body && body_len)) {
        if (r->answered)
            TRELLIS_LOG_WARN("a plugin answered a request twice; the second answer is ignored");
        return -1;
    }
    r->connection->respond(status, std::string_view(body ? body : "", body_len));
    return 0;
}

int respond_file_with(trellis_request *r, const trellis_file_options *options) {
    if (!options)
        return -1;
    // Fields past the plugin's struct_size read as zero.
    // A struct too short to say which descriptor is a plugin bug: touch no descriptor at all.
    if (options->struct_size < offsetof(trellis_file_options, fd) + sizeof options->fd) {
        TRELLIS_LOG_ERROR("respond_file_with: options.struct_size (%u) does not reach fd",
                          static_cast<unsigned>(options->struct_size));
        if (!r->answered)
            r->connection->respond_error(500);
        return -1;
    }
    trellis_file_options o = {};
    memcpy(&o, options, std::min<size_t>(options->struct_size, sizeof o));
    // 204 and 304 have no body to send a file in.
    if (r->answered || o.status < 200 || o.status > 999 || o.status == 204 || o.status == 304) {
        if (o.fd >= 0 && !o.borrow_fd)
            close(o.fd);
        if (r->answered)
            TRELLIS_LOG_WARN("a plugin answered a request twice; the second answer is ignored");
        return -1;
    }
    if (o.fd < 0) {
        r->connection->respond_error(500);
        return -1;
    }
    FileResponse file;
    file.status = o.status;
    file.fd = o.fd;
    file.borrowed = o.borrow_fd != 0;
    file.max_ranges = o.max_ranges;
    struct stat st = {};
    if (o.has_stat) {
        st.st_mode = S_IFREG;
        st.st_size = static_cast<off_t>(o.size);
        st.st_mtim.tv_sec = o.mtime_sec;
        st.st_mtim.tv_nsec = o.mtime_nsec;
        st.st_ino = o.inode;
        file.stat = &st;
    }
    return r->connection->respond_file(file) ? 0 : -1;
}

int respond_file(trellis_request *r, int status, int fd) {
    trellis_file_options options = {};
    options.struct_size = sizeof options;
    options.status = status;
    options.fd = fd;
    return respond_file_with(r, &options);
}

unsigned request_worker(const trellis_request *r) {
    return r->connection->worker_index();
}

void log(trellis_plugin_ctx *ctx, trellis_log_level level, const char *message) {
    int value = static_cast<int>(level);
    LogLevel our = value <= 0 ? LogLevel::Debug : value >= 3 ? LogLevel::Error : static_cast<LogLevel>(value);
    TRELLIS_LOG(our, "%s: %s", ctx ? ctx->name.c_str() : "plugin", message ? message : "");
}

trellis_str config_dir(trellis_plugin_ctx *ctx) {
    return ctx ? to_str(ctx->config_dir) : trellis_str{".", 1};
}

int request_transport(const trellis_request *r, trellis_transport_info *info) {
    const TlsFacts *facts = r->connection->tls_facts();
    if (!info)
        return facts ? 1 : 0;
    trellis_transport_info full = {};
    full.struct_size = info->struct_size;
    full.name = facts ? trellis_str{"tls", 3} : trellis_str{"plain", 5};
    full.secure = facts ? 1 : 0;
    if (facts) {
        full.version = to_str(facts->version);
        full.cipher = to_str(facts->cipher);
        full.server_name = to_str(facts->server_name);
        full.alpn = to_str(facts->alpn);
        full.peer_certificate = facts->client_certificate ? 1 : 0;
        full.peer_subject = to_str(facts->client_subject);
        full.peer_san = to_str(facts->client_san);
        full.peer_fingerprint = to_str(facts->client_fingerprint);
        full.peer_verify = to_str(facts->client_verify);
    }
    // A plugin built against an older header has a smaller struct: fill only what it has.
    size_t size = info->struct_size < sizeof full ? info->struct_size : sizeof full;
    memcpy(info, &full, size);
    return full.secure;
}

const trellis_host kHost = {
    TRELLIS_ABI_VERSION,
    sizeof(trellis_host),
    request_method,
    request_target,
    request_path,
    request_query,
    request_host,
    request_version,
    request_header,
    request_header_count,
    request_header_at,
    request_body,
    request_peer,
    request_route_prefix,
    request_path_below,
    response_header,
    respond,
    respond_file,
    log,
    config_dir,
    request_transport,
    respond_file_with,
    request_worker,
};

} // namespace

const trellis_host *host_table() {
    return &kHost;
}

} // namespace trellis
