// The HTTP semantics of answering with a file, apart from any I/O: validators, conditional
// requests (RFC 9110 section 13) and byte ranges (section 14). Pure functions, so they are unit
// tested on their own; Connection::respond_file puts them to work for every plugin.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

namespace trellis {

// A strong entity tag from what identifies a file's contents: "ino-size-mtime". Held inline, so a
// file response allocates nothing for it.
struct FileEtag {
    char text[64];
    size_t length;
    std::string_view view() const { return {text, length}; }
};
FileEtag file_etag(uint64_t inode, uint64_t size, int64_t mtime_sec, int64_t mtime_nsec);

struct RequestConditions {
    bool has_if_match = false, has_if_unmodified_since = false, has_if_none_match = false,
         has_if_modified_since = false;
    std::string_view if_match, if_unmodified_since, if_none_match, if_modified_since;
    bool get_or_head = true;
};

enum class Precondition { Proceed, NotModified, Failed };

// RFC 9110 section 13.2.2, in its order: If-Match, If-Unmodified-Since (412), If-None-Match,
// If-Modified-Since (304 for GET/HEAD).
Precondition evaluate_preconditions(const RequestConditions &c, std::string_view etag, time_t mtime);

// True when an If-Range value (an entity tag or an HTTP-date) still names this representation.
bool if_range_matches(std::string_view if_range, std::string_view etag, time_t mtime);

struct ByteRange {
    uint64_t first;
    uint64_t last; // inclusive
    uint64_t length() const { return last - first + 1; }
};

enum class RangeOutcome { Full, Partial, Unsatisfiable };

// Parses a Range header for a representation of `size` bytes. Full: answer the whole file (no
// or unparsable header, another unit, more than max_ranges ranges, or overlapping ranges, which
// would let a client amplify the answer). Partial: `out` holds the satisfiable ranges, in request
// order, clipped to the file. Unsatisfiable: 416.
RangeOutcome parse_ranges(std::string_view header, uint64_t size, uint32_t max_ranges,
                          std::vector<ByteRange> &out);

} // namespace trellis
