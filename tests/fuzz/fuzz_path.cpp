// libFuzzer harness: request-target path normalisation (server/http/path.hpp), the last gate
// before a path reaches a plugin that maps it to files.
//
// The input is the raw path (the part of the target before '?'). Invariants checked on success:
//   - the output starts with '/', holds no NUL and no backslash;
//   - it has no empty, "." or ".." segment ("//", "/./", "/../", nor a trailing "/." or "/..");
//   - it is no longer than the input;
//   - the input was acceptable: every '%' starts a valid escape, and neither the raw nor the decoded
//     bytes hold NUL or a backslash, nor a decoded '/';
//   - normalising the output again gives the output (when it holds no '%', which would decode).
// And on failure: the output is never used, but the error has a text.
#include "http/path.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace {

[[noreturn]] void fail(const char *what, std::string_view raw, std::string_view out) {
    fprintf(stderr, "fuzz_path: invariant broken: %s\n  input:  \"%.*s\"\n  output: \"%.*s\"\n", what,
            static_cast<int>(raw.size()), raw.data(), static_cast<int>(out.size()), out.data());
    abort();
}

int hex(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// True when a normaliser may accept `raw` at all (ignoring ".." above the root).
bool acceptable(std::string_view raw) {
    if (raw.empty() || raw[0] != '/')
        return false;
    for (size_t i = 0; i < raw.size(); ++i) {
        char c = raw[i];
        if (c == '%') {
            if (i + 2 >= raw.size())
                return false;
            int high = hex(raw[i + 1]), low = hex(raw[i + 2]);
            if (high < 0 || low < 0)
                return false;
            c = static_cast<char>(high * 16 + low);
            i += 2;
            if (c == '/')
                return false;
        }
        if (c == '\0' || c == '\\')
            return false;
    }
    return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view raw(reinterpret_cast<const char *>(data), size);
    std::string out;
    trellis::PathError error = trellis::normalize_path(raw, out);
    const char *text = trellis::path_error_text(error);
    if (text == nullptr || *text == '\0')
        fail("path_error_text gave no text", raw, out);
    if (error != trellis::PathError::None)
        return 0;

    if (out.empty() || out[0] != '/')
        fail("output does not start with '/'", raw, out);
    if (out.size() > raw.size())
        fail("output longer than input", raw, out);
    if (out.find('\0') != std::string::npos)
        fail("NUL in output", raw, out);
    if (out.find('\\') != std::string::npos)
        fail("backslash in output", raw, out);
    if (out.find("//") != std::string::npos)
        fail("\"//\" in output", raw, out);
    // Every segment between two '/' (and the last one, after the final '/') is a real name.
    for (size_t start = 1; start <= out.size();) {
        size_t slash = out.find('/', start);
        size_t end = slash == std::string::npos ? out.size() : slash;
        std::string_view segment(out.data() + start, end - start);
        if (segment == "." || segment == "..")
            fail("\".\" or \"..\" segment in output", raw, out);
        if (segment.empty() && slash != std::string::npos)
            fail("empty segment in output", raw, out);
        start = end + 1;
    }
    if (!acceptable(raw))
        fail("accepted an input with a bad escape, NUL, backslash or encoded '/'", raw, out);

    if (out.find('%') == std::string::npos) {
        std::string again;
        if (trellis::normalize_path(out, again) != trellis::PathError::None || again != out)
            fail("normalising the output again changes it", raw, again);
    }
    return 0;
}
