#include "mime.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>

namespace static_files {
namespace {

struct MimeEntry {
    std::string_view extension;
    std::string_view type;
};

// Sorted by extension for binary search.
constexpr std::array<MimeEntry, 44> kTypes = {{
    {"7z", "application/x-7z-compressed"},
    {"avif", "image/avif"},
    {"bin", "application/octet-stream"},
    {"bmp", "image/bmp"},
    {"css", "text/css; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"gif", "image/gif"},
    {"gz", "application/gzip"},
    {"htm", "text/html; charset=utf-8"},
    {"html", "text/html; charset=utf-8"},
    {"ico", "image/x-icon"},
    {"jpeg", "image/jpeg"},
    {"jpg", "image/jpeg"},
    {"js", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"jsonld", "application/ld+json"},
    {"map", "application/json"},
    {"md", "text/markdown; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},
    {"oga", "audio/ogg"},
    {"ogg", "audio/ogg"},
    {"ogv", "video/ogg"},
    {"otf", "font/otf"},
    {"pdf", "application/pdf"},
    {"png", "image/png"},
    {"rss", "application/rss+xml"},
    {"svg", "image/svg+xml"},
    {"tar", "application/x-tar"},
    {"ttf", "font/ttf"},
    {"txt", "text/plain; charset=utf-8"},
    {"wasm", "application/wasm"},
    {"wav", "audio/wav"},
    {"weba", "audio/webm"},
    {"webm", "video/webm"},
    {"webmanifest", "application/manifest+json"},
    {"webp", "image/webp"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"xhtml", "application/xhtml+xml"},
    {"xml", "application/xml"},
    {"zip", "application/zip"},
    {"zst", "application/zstd"},
}};

} // namespace

std::string_view mime_type(std::string_view file_name) {
    size_t dot = file_name.rfind('.');
    size_t slash = file_name.rfind('/');
    if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash) ||
        file_name.size() - dot - 1 > 16)
        return "application/octet-stream";
    char lower[17];
    size_t n = file_name.size() - dot - 1;
    for (size_t i = 0; i < n; ++i)
        lower[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(file_name[dot + 1 + i])));
    std::string_view extension(lower, n);
    auto it = std::lower_bound(kTypes.begin(), kTypes.end(), extension,
                               [](const MimeEntry &e, std::string_view ext) { return e.extension < ext; });
    if (it != kTypes.end() && it->extension == extension)
        return it->type;
    return "application/octet-stream";
}

} // namespace static_files
