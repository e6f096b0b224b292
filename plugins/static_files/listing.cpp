#include "listing.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace static_files {
namespace {

constexpr size_t kMaxEntries = 10000;

struct Entry {
    std::string name;
    bool directory;
    unsigned long long size;
    time_t mtime;
};

void html_escape(std::string &out, std::string_view text) {
    for (char c : text) {
        switch (c) {
        case '&':
            out += "&amp;";
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '"':
            out += "&quot;";
            break;
        case '\'':
            out += "&#39;";
            break;
        default:
            out += c;
        }
    }
}

} // namespace

void url_escape(std::string &out, std::string_view text, bool keep_slash) {
    static const char kHex[] = "0123456789ABCDEF";
    for (unsigned char c : text) {
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                     c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        if (plain) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
}

namespace {

void json_escape(std::string &out, std::string_view text) {
    out += '"';
    for (unsigned char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
}

// The look of the default site (www/assets/style.*.css), inline: a listing is generated for any
// root, which need not hold the site's files. System fonts; light and dark follow the reader.
constexpr char kListingHead[] =
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<meta name=\"color-scheme\" content=\"light dark\">\n"
    "<style>\n"
    ":root{--bg:#f6f7f2;--fg:#1d261d;--muted:#566356;--accent:#2c7a30;--card:#fff;--line:#dbe2d3;"
    "color-scheme:light dark}\n"
    "@media (prefers-color-scheme:dark){:root{--bg:#111510;--fg:#e3e9de;--muted:#9aa994;--accent:#7cc47f;"
    "--card:#192018;--line:#2b3428}}\n"
    "body{margin:0;background:var(--bg);color:var(--fg);"
    "font:16px/1.6 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Noto Sans\",sans-serif}\n"
    "main{max-width:60rem;margin:0 auto;padding:1.5rem 1.25rem 2rem}\n"
    "h1{font-size:1.4rem;line-height:1.25;margin:0 0 1rem;overflow-wrap:anywhere}\n"
    "table{width:100%;border-collapse:separate;border-spacing:0;background:var(--card);"
    "border:1px solid var(--line);border-radius:10px}\n"
    "th,td{padding:.4rem .75rem;text-align:left;vertical-align:top}\n"
    "td{border-top:1px solid var(--line)}\n"
    "th{font-size:.85rem;font-weight:600;color:var(--muted)}\n"
    "td:first-child{overflow-wrap:anywhere}\n"
    ".n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\n"
    "td:last-child{color:var(--muted);font-size:.9rem;white-space:nowrap}\n"
    "a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}\n"
    "p{color:var(--muted)}\n"
    "@media (max-width:30rem){main{padding:1rem .75rem}th,td{padding:.35rem .5rem}"
    "td:last-child{white-space:normal;font-size:.8rem}}\n"
    "</style>\n";

std::string http_date(time_t t) {
    char buf[64];
    struct tm tm_utc;
    gmtime_r(&t, &tm_utc);
    strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm_utc);
    return buf;
}

} // namespace

bool list_directory(int dir_fd, bool hide_dotfiles, bool json, std::string_view url_path, std::string &out) {
    int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return false;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        close(fd);
        return false;
    }
    rewinddir(dir);
    std::vector<Entry> entries;
    bool truncated = false;
    while (struct dirent *d = readdir(dir)) {
        // A listing is built on the worker thread: bound its cost and memory.
        if (entries.size() >= kMaxEntries) {
            truncated = true;
            break;
        }
        std::string_view name = d->d_name;
        if (name == "." || name == ".." || (hide_dotfiles && name[0] == '.'))
            continue;
        struct stat st;
        if (fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        entries.push_back({std::string(name), S_ISDIR(st.st_mode),
                           static_cast<unsigned long long>(st.st_size), st.st_mtim.tv_sec});
    }
    closedir(dir);
    std::sort(entries.begin(), entries.end(), [](const Entry &a, const Entry &b) { return a.name < b.name; });
    out.clear();
    if (json) {
        out += '[';
        for (size_t i = 0; i < entries.size(); ++i) {
            const Entry &e = entries[i];
            out += i ? ",{\"name\":" : "{\"name\":";
            json_escape(out, e.name);
            out += e.directory ? ",\"type\":\"directory\"" : ",\"type\":\"file\"";
            out += ",\"size\":" + std::to_string(e.size) + ",\"mtime\":";
            json_escape(out, http_date(e.mtime));
            out += '}';
        }
        out += "]\n";
        return true;
    }
    out += "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
    out += kListingHead;
    out += "<title>Index of ";
    html_escape(out, url_path);
    out += "</title></head>\n<body><main><h1>Index of ";
    html_escape(out, url_path);
    out += "</h1>\n<table>\n<thead><tr><th>Name</th><th class=\"n\">Size</th><th>Last "
           "modified</th></tr></thead>\n"
           "<tbody>\n";
    if (url_path != "/")
        out += "<tr><td><a href=\"../\">../</a></td><td class=\"n\"></td><td></td></tr>\n";
    for (const Entry &e : entries) {
        out += "<tr><td><a href=\"";
        url_escape(out, e.name, false);
        if (e.directory)
            out += '/';
        out += "\">";
        html_escape(out, e.name);
        if (e.directory)
            out += '/';
        out += "</a></td><td class=\"n\">";
        out += e.directory ? "-" : std::to_string(e.size);
        out += "</td><td>" + http_date(e.mtime) + "</td></tr>\n";
    }
    out += "</tbody>\n</table>\n";
    if (truncated)
        out += "<p>Only the first " + std::to_string(kMaxEntries) + " entries are listed.</p>\n";
    out += "</main></body></html>\n";
    return true;
}

} // namespace static_files
