// static: serves the files under `root`. The plugin maps a path to an open file descriptor; the
// host does the rest (ETag, Last-Modified, 304s, HEAD, sendfile) through respond_file.
//
// Safety: the host hands over a normalised path (no "..", no NUL, no encoded '/'), and every open
// is resolved beneath the root directory's descriptor with openat2(RESOLVE_BENEATH), so neither
// "..", nor a symlink pointing outside, nor a path swapped for a symlink mid-request can reach a
// byte outside root. Dotfiles are not served (except /.well-known/).
#include "mime.hpp"

#include <trellis/plugin.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/openat2.h>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

namespace {

struct StaticFiles {
    const trellis_host *host = nullptr;
    std::string root;
    int root_fd = -1;
    std::vector<std::string> index = {"index.html"};
};

int open_beneath(int dir_fd, const char *path, int flags) {
    struct open_how how = {};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    for (;;) {
        long fd = syscall(SYS_openat2, dir_fd, path, &how, sizeof how);
        if (fd >= 0 || errno != EINTR)
            return static_cast<int>(fd);
    }
}

bool has_dot_segment(std::string_view path) {
    if (path.starts_with("/.well-known/"))
        path.remove_prefix(12);
    for (size_t i = 0; i + 1 < path.size(); ++i)
        if (path[i] == '/' && path[i + 1] == '.')
            return true;
    return false;
}

void add_header(const trellis_host *h, trellis_request *req, std::string_view name, std::string_view value) {
    h->response_header(req, name.data(), name.size(), value.data(), value.size());
}

int respond_status(const trellis_host *h, trellis_request *req, int status) {
    static const char *const kBodies[] = {"404 Not Found\n", "403 Forbidden\n", "405 Method Not Allowed\n"};
    const char *body = status == 404 ? kBodies[0] : status == 403 ? kBodies[1] : kBodies[2];
    add_header(h, req, "Content-Type", "text/plain; charset=utf-8");
    if (status == 405)
        add_header(h, req, "Allow", "GET, HEAD");
    h->respond(req, status, body, strlen(body));
    return TRELLIS_OK;
}

int serve_fd(StaticFiles &self, trellis_request *req, int fd, std::string_view name) {
    add_header(self.host, req, "Content-Type", static_files::mime_type(name));
    self.host->respond_file(req, 200, fd);
    return TRELLIS_OK;
}

int serve_directory(StaticFiles &self, trellis_request *req, int dir_fd) {
    const trellis_host *h = self.host;
    trellis_str path = h->request_path(req);
    if (path.len == 0 || path.data[path.len - 1] != '/') {
        // "/docs" -> "/docs/", so relative links in the index page resolve inside the directory.
        close(dir_fd);
        std::string location(path.data, path.len);
        location += '/';
        trellis_str query = h->request_query(req);
        if (query.len)
            location.append("?").append(query.data, query.len);
        add_header(h, req, "Location", location);
        add_header(h, req, "Content-Type", "text/plain; charset=utf-8");
        static const char kBody[] = "301 Moved Permanently\n";
        h->respond(req, 301, kBody, sizeof kBody - 1);
        return TRELLIS_OK;
    }
    for (const std::string &index : self.index) {
        int fd = open_beneath(dir_fd, index.c_str(), O_RDONLY | O_NONBLOCK);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            close(dir_fd);
            return serve_fd(self, req, fd, index);
        }
        if (fd >= 0)
            close(fd);
    }
    close(dir_fd);
    return respond_status(h, req, 404);
}

int on_request(void *instance, trellis_request *req) {
    auto &self = *static_cast<StaticFiles *>(instance);
    const trellis_host *h = self.host;
    trellis_str method = h->request_method(req);
    std::string_view m(method.data, method.len);
    if (m != "GET" && m != "HEAD")
        return respond_status(h, req, 405);
    trellis_str below = h->request_path_below(req);
    std::string_view path(below.data, below.len);
    if (has_dot_segment(path))
        return respond_status(h, req, 404);
    // Beneath the root: "." for the root itself, else the path without its leading '/'.
    std::string relative(path.size() > 1 ? path.substr(1) : std::string_view("."));
    if (relative.size() > 1 && relative.back() == '/')
        relative.pop_back();
    // O_NONBLOCK: opening a FIFO someone left in root must not block the worker.
    int fd = open_beneath(self.root_fd, relative.c_str(), O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return respond_status(h, req, errno == EACCES ? 403 : 404);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return respond_status(h, req, 404);
    }
    if (S_ISDIR(st.st_mode))
        return serve_directory(self, req, fd);
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return respond_status(h, req, 404);
    }
    if (path.back() == '/') {
        close(fd); // "/file.txt/" names a directory that is not there
        return respond_status(h, req, 404);
    }
    return serve_fd(self, req, fd, relative);
}

int fail(char *err, size_t err_len, const std::string &message) {
    snprintf(err, err_len, "%s", message.c_str());
    return TRELLIS_ERROR;
}

int create(const trellis_host *host, trellis_plugin_ctx *ctx, const char *config_json, size_t config_len,
           void **instance, char *err, size_t err_len) {
    auto self = std::make_unique<StaticFiles>();
    self->host = host;
    try {
        nlohmann::json config = nlohmann::json::parse(std::string_view(config_json, config_len));
        for (auto &item : config.items())
            if (item.key() != "root" && item.key() != "index")
                return fail(err, err_len,
                            "config: unknown key \"" + item.key() + "\" (expected root, index)");
        if (!config.contains("root") || !config["root"].is_string())
            return fail(err, err_len, "config: \"root\" must be a string (the directory to serve)");
        self->root = config["root"].get<std::string>();
        if (config.contains("index")) {
            if (!config["index"].is_array())
                return fail(err, err_len, "config: \"index\" must be a list of file names");
            self->index.clear();
            for (auto &name : config["index"]) {
                if (!name.is_string() || name.get<std::string>().find('/') != std::string::npos)
                    return fail(err, err_len, "config: \"index\" entries must be file names");
                self->index.push_back(name.get<std::string>());
            }
        }
    } catch (const std::exception &e) {
        return fail(err, err_len, std::string("config: ") + e.what());
    }
    if (!self->root.empty() && self->root[0] != '/') {
        trellis_str dir = host->config_dir(ctx);
        self->root = std::string(dir.data, dir.len) + "/" + self->root;
    }
    self->root_fd = open(self->root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->root_fd < 0)
        return fail(err, err_len, "root " + self->root + ": " + strerror(errno));
    // openat2 arrived in Linux 5.6; without it there is no race-free way to stay beneath root.
    int probe = open_beneath(self->root_fd, ".", O_RDONLY);
    if (probe < 0 && errno == ENOSYS) {
        close(self->root_fd);
        return fail(err, err_len, "needs openat2 (Linux 5.6 or later) to resolve paths safely");
    }
    if (probe >= 0)
        close(probe);
    *instance = self.release();
    return TRELLIS_OK;
}

void destroy(void *instance) {
    auto *self = static_cast<StaticFiles *>(instance);
    if (self->root_fd >= 0)
        close(self->root_fd);
    delete self;
}

const trellis_plugin kStatic = {
    TRELLIS_ABI_VERSION, sizeof(trellis_plugin), "static", "1.0", 0, create, destroy, nullptr, nullptr,
    on_request,
};

} // namespace

extern "C" TRELLIS_EXPORT const trellis_plugin *trellis_plugin_entry(void) {
    return &kStatic;
}
