// static: serves the files under `root`. The plugin maps a path to an open file; the host does
// the HTTP of files (ETag, Last-Modified, conditional requests, ranges, HEAD, sendfile or TLS
// streaming) through respond_file_with, so any plugin can serve files the same way.
//
// Safety: the host hands over a normalised path (no "..", no NUL, no encoded '/'), and every open
// is resolved beneath the root directory's descriptor with openat2: RESOLVE_BENEATH keeps "..",
// symlinks and a path swapped for a symlink mid-request from reaching outside root
// ("symlinks": "within_root", the default); "never" adds RESOLVE_NO_SYMLINKS. Dotfiles are
// refused unless allowed (/.well-known/ always is).
#include "file_cache.hpp"
#include "listing.hpp"
#include "mime.hpp"

#include <trellis/plugin.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fnmatch.h>
#include <linux/openat2.h>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

namespace {

// The methods a file answers; every 405 of the static route names them.
constexpr const char *kAllow = "GET, HEAD";

enum class Symlinks { Follow, WithinRoot, Never };

struct CacheRule {
    std::string match; // "/prefix/" or a file-name pattern ("*.js")
    std::string value;
};

struct StaticFiles {
    const trellis_host *host = nullptr;
    trellis_plugin_ctx *ctx = nullptr;
    std::string root;
    std::string root_real; // root with every symlink resolved
    int root_fd = -1;
    std::vector<std::string> index = {"index.html"};
    std::vector<std::string> try_files;
    std::map<int, std::string> error_pages;
    uint32_t max_ranges = 16;
    std::map<std::string, std::string> mime_types; // lower-case extension -> type
    std::vector<CacheRule> cache_control;
    bool precompressed = false;
    bool directory_listing = false;
    bool dotfiles_allowed = false;
    Symlinks symlinks = Symlinks::WithinRoot;
    size_t cache_entries = 1024;
    uint32_t cache_ttl_ms = 1000;
    // One cache per worker thread (workers <= 1024, see the server's config validation).
    std::array<std::unique_ptr<static_files::FileCache>, 1024> caches;
};

// ---------------------------------------------------------------------------------------------
// Opening files beneath the root

int open_beneath(const StaticFiles &self, const char *path) {
    struct open_how how = {};
    how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK; // O_NONBLOCK: a FIFO in root must not block
    how.resolve = RESOLVE_NO_MAGICLINKS;
    if (self.symlinks != Symlinks::Follow)
        how.resolve |= RESOLVE_BENEATH;
    if (self.symlinks == Symlinks::Never)
        how.resolve |= RESOLVE_NO_SYMLINKS;
    for (;;) {
        long fd = syscall(SYS_openat2, self.root_fd, path, &how, sizeof how);
        if (fd >= 0 || errno != EINTR)
            return static_cast<int>(fd);
    }
}

// RESOLVE_BENEATH refuses every absolute symlink, even one pointing inside root. For those,
// resolve the path by name and, when it lands inside root, open what it names beneath the root
// descriptor with no symlink allowed at all: the open itself can still not leave root.
int open_absolute_link_within_root(const StaticFiles &self, const std::string &path) {
    char resolved[PATH_MAX];
    std::string full = self.root_real + "/" + path;
    if (!realpath(full.c_str(), resolved))
        return -1;
    std::string_view target(resolved);
    if (!target.starts_with(self.root_real) ||
        (target.size() > self.root_real.size() && target[self.root_real.size()] != '/')) {
        errno = EXDEV;
        return -1;
    }
    std::string inside(target.substr(std::min(target.size(), self.root_real.size() + 1)));
    struct open_how how = {};
    how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return static_cast<int>(
        syscall(SYS_openat2, self.root_fd, inside.empty() ? "." : inside.c_str(), &how, sizeof how));
}

static_files::OpenFile open_file(const void *context, const std::string &path) {
    const auto &self = *static_cast<const StaticFiles *>(context);
    static_files::OpenFile file;
    file.fd = open_beneath(self, path.c_str());
    if (file.fd < 0 && errno == EXDEV && self.symlinks == Symlinks::WithinRoot)
        file.fd = open_absolute_link_within_root(self, path);
    if (file.fd < 0) {
        file.errno_value = errno;
        return file;
    }
    if (fstat(file.fd, &file.st) != 0 || !(S_ISREG(file.st.st_mode) || S_ISDIR(file.st.st_mode))) {
        close(file.fd);
        file.fd = -1;
        file.errno_value = ENOENT; // devices, FIFOs, sockets: as if absent
    }
    return file;
}

// A file for this request: from the worker's cache (borrowed) or opened for it (owned).
struct Found {
    static_files::OpenFile file;
    bool borrowed = false;
    Found() = default;
    Found(const Found &) = delete;
    Found &operator=(const Found &) = delete;
    Found(Found &&other) noexcept : file(other.file), borrowed(other.borrowed) { other.file.fd = -1; }
    Found &operator=(Found &&other) noexcept {
        release();
        file = other.file;
        borrowed = other.borrowed;
        other.file.fd = -1;
        return *this;
    }
    ~Found() { release(); }
    void release() {
        if (!borrowed && file.fd >= 0)
            close(file.fd);
        file.fd = -1;
    }
    bool regular() const { return file.fd >= 0 && S_ISREG(file.st.st_mode); }
    bool directory() const { return file.fd >= 0 && S_ISDIR(file.st.st_mode); }
};

Found lookup(StaticFiles &self, trellis_request *req, const std::string &path) {
    Found found;
    unsigned worker = TRELLIS_HOST_HAS(self.host, request_worker) ? self.host->request_worker(req) : 0;
    if (worker < self.caches.size() && self.caches[worker]) {
        found.file = self.caches[worker]->get(path, open_file, &self);
        found.borrowed = true;
    } else {
        found.file = open_file(&self, path);
    }
    return found;
}

// ---------------------------------------------------------------------------------------------
// Answering

void add_header(const StaticFiles &self, trellis_request *req, std::string_view name,
                std::string_view value) {
    self.host->response_header(req, name.data(), name.size(), value.data(), value.size());
}

std::string_view content_type(const StaticFiles &self, std::string_view name) {
    size_t dot = name.rfind('.');
    size_t slash = name.rfind('/');
    if (!self.mime_types.empty() && dot != std::string_view::npos &&
        (slash == std::string_view::npos || dot > slash)) {
        std::string extension(name.substr(dot + 1));
        for (char &c : extension)
            c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        auto it = self.mime_types.find(extension);
        if (it != self.mime_types.end())
            return it->second;
    }
    return static_files::mime_type(name);
}

// The client's preferred precompressed sidecar among br, zstd, gzip (RFC 9110 section 12.5.3).
std::vector<std::pair<std::string, std::string>> accepted_encodings(std::string_view header) {
    double q_br = -1, q_zstd = -1, q_gzip = -1, q_any = -1;
    while (!header.empty()) {
        size_t comma = header.find(',');
        std::string_view item = header.substr(0, comma);
        header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
        // Codings and parameter names are case-insensitive (RFC 9110 sections 8.4.1, 12.4.2).
        std::string lowered(item);
        for (char &c : lowered)
            c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        std::string_view lower_item = lowered;
        size_t semi = lower_item.find(';');
        std::string_view coding = lower_item.substr(0, semi);
        while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t'))
            coding.remove_prefix(1);
        while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t'))
            coding.remove_suffix(1);
        double q = 1;
        for (std::string_view params = semi == std::string_view::npos ? "" : lower_item.substr(semi + 1);
             !params.empty();) {
            size_t next = params.find(';');
            std::string_view param = params.substr(0, next);
            params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
            while (!param.empty() && (param.front() == ' ' || param.front() == '\t'))
                param.remove_prefix(1);
            if (param.starts_with("q=")) {
                // qvalue = 0[.ddd] / 1[.000]; anything else counts as 0 (refused).
                std::string text(param.substr(2));
                char *end = nullptr;
                double parsed = strtod(text.c_str(), &end);
                q = (end && *end == '\0' && parsed >= 0 && parsed <= 1) ? parsed : 0;
            }
        }
        if (coding == "br")
            q_br = q;
        else if (coding == "zstd")
            q_zstd = q;
        else if (coding == "gzip" || coding == "x-gzip")
            q_gzip = q;
        else if (coding == "*")
            q_any = q;
    }
    std::vector<std::tuple<double, int, std::string, std::string>> ranked;
    auto add = [&](double q, int order, const char *coding, const char *suffix) {
        if (q < 0)
            q = q_any;
        if (q > 0)
            ranked.emplace_back(q, order, coding, suffix);
    };
    add(q_br, 0, "br", ".br");
    add(q_zstd, 1, "zstd", ".zst");
    add(q_gzip, 2, "gzip", ".gz");
    std::sort(ranked.begin(), ranked.end(), [](const auto &a, const auto &b) {
        return std::get<0>(a) != std::get<0>(b) ? std::get<0>(a) > std::get<0>(b)
                                                : std::get<1>(a) < std::get<1>(b);
    });
    std::vector<std::pair<std::string, std::string>> out;
    for (auto &r : ranked)
        out.emplace_back(std::get<2>(r), std::get<3>(r));
    return out;
}

int send_found(StaticFiles &self, trellis_request *req, Found &found, int status) {
    trellis_file_options options = {};
    options.struct_size = sizeof options;
    options.status = status;
    options.fd = found.file.fd;
    options.borrow_fd = found.borrowed ? 1 : 0;
    options.max_ranges = self.max_ranges;
    options.has_stat = 1;
    options.size = static_cast<uint64_t>(found.file.st.st_size);
    options.mtime_sec = found.file.st.st_mtim.tv_sec;
    options.mtime_nsec = found.file.st.st_mtim.tv_nsec;
    options.inode = found.file.st.st_ino;
    if (!found.borrowed)
        found.file.fd = -1; // the host takes it
    self.host->respond_file_with(req, &options);
    return TRELLIS_OK;
}

// Serves regular file `path` (relative to root) with `status`, with its headers. `requested`:
// the file the URL named (not a try_files fallback or an error page, which must not inherit the
// URL's caching rules: a year-long immutable rule for /assets/ must not pin index.html there).
int serve(StaticFiles &self, trellis_request *req, const std::string &path, Found &found, int status,
          bool requested = true) {
    add_header(self, req, "Content-Type", content_type(self, path));
    add_header(self, req, "X-Content-Type-Options", "nosniff");
    std::string_view name = path;
    if (size_t slash = name.rfind('/'); slash != std::string_view::npos)
        name.remove_prefix(slash + 1);
    trellis_str below = self.host->request_path_below(req);
    std::string_view url_path(below.data, below.len);
    for (const CacheRule &rule : requested ? self.cache_control : std::vector<CacheRule>()) {
        bool hit = rule.match[0] == '/' ? url_path.starts_with(rule.match)
                                        : fnmatch(rule.match.c_str(), std::string(name).c_str(), 0) == 0;
        if (hit) {
            add_header(self, req, "Cache-Control", rule.value);
            break;
        }
    }
    if (self.precompressed && status == 200) {
        add_header(self, req, "Vary", "Accept-Encoding");
        trellis_str accept;
        if (self.host->request_header(req, "Accept-Encoding", 15, &accept)) {
            for (auto &[coding, suffix] : accepted_encodings(std::string_view(accept.data, accept.len))) {
                Found sidecar = lookup(self, req, path + suffix);
                if (sidecar.regular()) {
                    add_header(self, req, "Content-Encoding", coding);
                    return send_found(self, req, sidecar, status);
                }
            }
        }
    }
    return send_found(self, req, found, status);
}

int respond_text(StaticFiles &self, trellis_request *req, int status) {
    const char *body = status == 404   ? "404 Not Found\n"
                       : status == 403 ? "403 Forbidden\n"
                                       : "405 Method Not Allowed\n";
    add_header(self, req, "Content-Type", "text/plain; charset=utf-8");
    if (status == 405)
        add_header(self, req, "Allow", kAllow);
    self.host->respond(req, status, body, strlen(body));
    return TRELLIS_OK;
}

std::string relative(std::string_view url_path) {
    // "/a/b/" -> "a/b"; "/" -> "."
    while (!url_path.empty() && url_path.front() == '/')
        url_path.remove_prefix(1);
    while (!url_path.empty() && url_path.back() == '/')
        url_path.remove_suffix(1);
    return url_path.empty() ? std::string(".") : std::string(url_path);
}

// 404 or 403: try_files (for 404), then the configured error page, then plain text.
int refuse(StaticFiles &self, trellis_request *req, int status) {
    if (status == 404) {
        for (const std::string &fallback : self.try_files) {
            std::string path = relative(fallback);
            Found found = lookup(self, req, path);
            if (found.regular())
                return serve(self, req, path, found, 200, false);
        }
    }
    auto page = self.error_pages.find(status);
    if (page != self.error_pages.end()) {
        std::string path = relative(page->second);
        Found found = lookup(self, req, path);
        if (found.regular())
            return serve(self, req, path, found, status, false);
    }
    return respond_text(self, req, status);
}

bool hidden(std::string_view path) {
    if (path.starts_with("/.well-known/") || path == "/.well-known")
        path.remove_prefix(12);
    for (size_t i = 0; i + 1 < path.size(); ++i)
        if (path[i] == '/' && path[i + 1] == '.')
            return true;
    return false;
}

int serve_directory(StaticFiles &self, trellis_request *req, const std::string &dir, Found &found,
                    std::string_view url_path) {
    const trellis_host *h = self.host;
    trellis_str path = h->request_path(req);
    if (path.len == 0 || path.data[path.len - 1] != '/') {
        // "/docs" -> "/docs/", so relative links in the index page resolve inside the directory.
        // The path is decoded: encode it again for the header ("a?b" must stay a name).
        std::string location;
        static_files::url_escape(location, std::string_view(path.data, path.len), true);
        location += '/';
        trellis_str query = h->request_query(req);
        if (query.len)
            location.append("?").append(query.data, query.len);
        add_header(self, req, "Location", location);
        add_header(self, req, "Content-Type", "text/plain; charset=utf-8");
        static const char kBody[] = "301 Moved Permanently\n";
        h->respond(req, 301, kBody, sizeof kBody - 1);
        return TRELLIS_OK;
    }
    // The index lookups below may push the directory out of the open-file cache: keep a
    // descriptor of our own for the listing.
    int dir_fd = fcntl(found.file.fd, F_DUPFD_CLOEXEC, 0);
    found.release();
    if (dir_fd < 0)
        return refuse(self, req, 403);
    struct DirCloser {
        int fd;
        ~DirCloser() { close(fd); }
    } closer{dir_fd};
    for (const std::string &index : self.index) {
        std::string candidate_path = dir == "." ? index : dir + "/" + index;
        Found candidate = lookup(self, req, candidate_path);
        if (candidate.regular())
            return serve(self, req, candidate_path, candidate, 200);
    }
    if (!self.directory_listing)
        return refuse(self, req, 404);
    trellis_str accept;
    bool json = h->request_header(req, "Accept", 6, &accept) &&
                std::string_view(accept.data, accept.len).find("application/json") != std::string_view::npos;
    std::string body;
    if (!static_files::list_directory(dir_fd, !self.dotfiles_allowed, json, url_path, body))
        return refuse(self, req, 403);
    add_header(self, req, "Content-Type", json ? "application/json" : "text/html; charset=utf-8");
    add_header(self, req, "X-Content-Type-Options", "nosniff");
    h->respond(req, 200, body.data(), body.size());
    return TRELLIS_OK;
}

int on_request(void *instance, trellis_request *req) {
    auto &self = *static_cast<StaticFiles *>(instance);
    trellis_str method = self.host->request_method(req);
    std::string_view m(method.data, method.len);
    if (m != "GET" && m != "HEAD")
        return respond_text(self, req, 405);
    trellis_str below = self.host->request_path_below(req);
    std::string_view url_path(below.data, below.len);
    if (!self.dotfiles_allowed && hidden(url_path))
        return refuse(self, req, 404);
    std::string path = relative(url_path);
    Found found = lookup(self, req, path);
    if (found.file.fd < 0)
        return refuse(self, req, found.file.errno_value == EACCES ? 403 : 404);
    if (found.directory())
        return serve_directory(self, req, path, found, url_path);
    if (url_path.back() == '/')
        return refuse(self, req, 404); // "/file.txt/" names a directory that is not there
    return serve(self, req, path, found, 200);
}

// ---------------------------------------------------------------------------------------------
// Configuration

int fail(char *err, size_t err_len, const std::string &message) {
    snprintf(err, err_len, "config: %s", message.c_str());
    return TRELLIS_ERROR;
}

const char *const kKeys[] = {
    "root",          "index",         "try_files",         "error_pages", "max_ranges", "mime_types",
    "cache_control", "precompressed", "directory_listing", "dotfiles",    "symlinks",   "open_file_cache"};

std::string read_config(StaticFiles &self, const nlohmann::json &config) {
    using nlohmann::json;
    for (auto &item : config.items()) {
        bool known = false;
        for (const char *key : kKeys)
            known = known || item.key() == key;
        if (!known)
            return "unknown key \"" + item.key() +
                   "\" (expected root, index, try_files, error_pages, max_ranges, "
                   "mime_types, cache_control, precompressed, directory_listing, dotfiles, symlinks, "
                   "open_file_cache)";
    }
    auto string_list = [&](const char *key, std::vector<std::string> &out) -> std::string {
        if (!config.contains(key))
            return "";
        if (!config[key].is_array())
            return std::string("\"") + key + "\" must be a list of strings";
        out.clear();
        for (auto &v : config[key]) {
            if (!v.is_string() || v.get<std::string>().empty())
                return std::string("\"") + key + "\" must be a list of strings";
            out.push_back(v.get<std::string>());
        }
        return "";
    };
    auto boolean = [&](const char *key, bool &out) -> std::string {
        if (!config.contains(key))
            return "";
        if (!config[key].is_boolean())
            return std::string("\"") + key + "\" must be true or false";
        out = config[key].get<bool>();
        return "";
    };
    if (!config.contains("root") || !config["root"].is_string())
        return "\"root\" must be a string (the directory to serve)";
    self.root = config["root"].get<std::string>();
    for (std::string problem :
         {string_list("index", self.index), string_list("try_files", self.try_files),
          boolean("precompressed", self.precompressed), boolean("directory_listing", self.directory_listing)})
        if (!problem.empty())
            return problem;
    for (const std::string &name : self.index)
        if (name.find('/') != std::string::npos)
            return "\"index\" entries must be file names, got \"" + name + "\"";
    if (config.contains("error_pages")) {
        if (!config["error_pages"].is_object())
            return "\"error_pages\" must be an object like {\"404\": \"/404.html\"}";
        for (auto &item : config["error_pages"].items()) {
            int status = atoi(item.key().c_str());
            if (status < 400 || status > 599 || !item.value().is_string())
                return "\"error_pages\" maps a status 400-599 to a path, got \"" + item.key() + "\"";
            self.error_pages[status] = item.value().get<std::string>();
        }
    }
    if (config.contains("max_ranges")) {
        if (!config["max_ranges"].is_number_unsigned() || config["max_ranges"].get<uint64_t>() < 1 ||
            config["max_ranges"].get<uint64_t>() > 1000)
            return "\"max_ranges\" must be an integer from 1 to 1000";
        self.max_ranges = config["max_ranges"].get<uint32_t>();
    }
    if (config.contains("mime_types")) {
        if (!config["mime_types"].is_object())
            return "\"mime_types\" must be an object mapping extensions to types";
        for (auto &item : config["mime_types"].items()) {
            if (!item.value().is_string())
                return "\"mime_types\" values must be strings (\"" + item.key() + "\")";
            std::string extension = item.key();
            if (!extension.empty() && extension[0] == '.')
                extension.erase(0, 1);
            for (char &c : extension)
                c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            self.mime_types[extension] = item.value().get<std::string>();
        }
    }
    if (config.contains("cache_control")) {
        if (!config["cache_control"].is_array())
            return "\"cache_control\" must be a list of {\"match\", \"value\"}";
        for (auto &rule : config["cache_control"]) {
            if (!rule.is_object() || !rule.contains("match") || !rule.contains("value") ||
                !rule["match"].is_string() || !rule["value"].is_string() ||
                rule["match"].get<std::string>().empty() || rule.size() != 2)
                return "\"cache_control\" entries must be {\"match\": \"*.js\" or \"/assets/\", \"value\": "
                       "\"...\"}";
            self.cache_control.push_back(
                {rule["match"].get<std::string>(), rule["value"].get<std::string>()});
        }
    }
    if (config.contains("dotfiles")) {
        std::string v = config["dotfiles"].is_string() ? config["dotfiles"].get<std::string>() : "";
        if (v != "deny" && v != "allow")
            return "\"dotfiles\" must be \"deny\" or \"allow\"";
        self.dotfiles_allowed = v == "allow";
    }
    if (config.contains("symlinks")) {
        std::string v = config["symlinks"].is_string() ? config["symlinks"].get<std::string>() : "";
        if (v == "follow")
            self.symlinks = Symlinks::Follow;
        else if (v == "within_root")
            self.symlinks = Symlinks::WithinRoot;
        else if (v == "never")
            self.symlinks = Symlinks::Never;
        else
            return "\"symlinks\" must be \"follow\", \"within_root\" or \"never\"";
    }
    if (config.contains("open_file_cache")) {
        const json &cache = config["open_file_cache"];
        if (!cache.is_object())
            return "\"open_file_cache\" must be {\"entries\": N, \"ttl_ms\": N}";
        for (auto &item : cache.items()) {
            if ((item.key() != "entries" && item.key() != "ttl_ms") || !item.value().is_number_unsigned())
                return "\"open_file_cache\" takes \"entries\" and \"ttl_ms\" (non-negative integers)";
        }
        if (cache.contains("entries"))
            self.cache_entries = cache["entries"].get<size_t>();
        // One request may hold a file, its directory and a sidecar at once: a cache smaller than
        // that could close a descriptor still in use.
        if (self.cache_entries > 0 && self.cache_entries < 16)
            self.cache_entries = 16;
        if (cache.contains("ttl_ms"))
            self.cache_ttl_ms = cache["ttl_ms"].get<uint32_t>();
    }
    return "";
}

int create(const trellis_host *host, trellis_plugin_ctx *ctx, const char *config_json, size_t config_len,
           void **instance, char *err, size_t err_len) {
    if (!TRELLIS_HOST_HAS(host, respond_file_with))
        return fail(err, err_len, "this server is too old for this plugin (no respond_file_with)");
    auto self = std::make_unique<StaticFiles>();
    self->host = host;
    self->ctx = ctx;
    try {
        std::string problem =
            read_config(*self, nlohmann::json::parse(std::string_view(config_json, config_len)));
        if (!problem.empty())
            return fail(err, err_len, problem);
    } catch (const std::exception &e) {
        return fail(err, err_len, e.what());
    }
    if (!self->root.empty() && self->root[0] != '/') {
        trellis_str dir = host->config_dir(ctx);
        self->root = std::string(dir.data, dir.len) + "/" + self->root;
    }
    self->root_fd = open(self->root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->root_fd < 0)
        return fail(err, err_len, "root " + self->root + ": " + strerror(errno));
    char real[PATH_MAX];
    self->root_real = realpath(self->root.c_str(), real) ? real : self->root;
    // openat2 arrived in Linux 5.6; without it there is no race-free way to stay beneath root.
    int probe = open_beneath(*self, ".");
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

int on_worker_start(void *instance, unsigned worker) {
    auto &self = *static_cast<StaticFiles *>(instance);
    if (self.cache_entries > 0 && worker < self.caches.size())
        self.caches[worker] =
            std::make_unique<static_files::FileCache>(self.cache_entries, self.cache_ttl_ms);
    return TRELLIS_OK;
}

void on_worker_stop(void *instance, unsigned worker) {
    auto &self = *static_cast<StaticFiles *>(instance);
    if (worker < self.caches.size())
        self.caches[worker].reset();
}

const trellis_plugin kStatic = [] {
    trellis_plugin d = {};
    d.abi_version = TRELLIS_ABI_VERSION;
    d.struct_size = sizeof(trellis_plugin);
    d.name = "static";
    d.version = "1.1";
    d.create = create;
    d.destroy = destroy;
    d.on_worker_start = on_worker_start;
    d.on_worker_stop = on_worker_stop;
    d.on_request = on_request;
    d.allow = kAllow; // the core's 405 for TRACE here says the same
    return d;
}();

} // namespace

extern "C" TRELLIS_EXPORT const trellis_plugin *trellis_plugin_entry(void) {
    return &kStatic;
}
