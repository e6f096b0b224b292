#include "http/file_response.hpp"

#include "http/http_date.hpp"
#include "http/request.hpp"
#include "net/ows.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace trellis {
namespace {

bool weak(std::string_view tag) {
    return tag.starts_with("W/");
}
std::string_view opaque(std::string_view tag) {
    return weak(tag) ? tag.substr(2) : tag;
}

// Calls f(tag) for each entity tag of a list ("a", W/"b"); returns true if f did.
template <class F> bool any_tag(std::string_view list, F f) {
    while (!list.empty()) {
        size_t comma = list.find(',');
        std::string_view tag = trim_ows(list.substr(0, comma));
        if (!tag.empty() && f(tag))
            return true;
        if (comma == std::string_view::npos)
            break;
        list.remove_prefix(comma + 1);
    }
    return false;
}

bool strong_match(std::string_view list, std::string_view etag) {
    if (trim_ows(list) == "*")
        return true;
    return any_tag(list, [&](std::string_view tag) { return !weak(tag) && !weak(etag) && tag == etag; });
}

bool weak_match(std::string_view list, std::string_view etag) {
    if (trim_ows(list) == "*")
        return true;
    return any_tag(list, [&](std::string_view tag) { return opaque(tag) == opaque(etag); });
}

bool parse_number(std::string_view text, uint64_t &out) {
    if (text.empty() || text.size() > 19)
        return false;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && end == text.data() + text.size();
}

} // namespace

FileEtag file_etag(uint64_t inode, uint64_t size, int64_t mtime_sec, int64_t mtime_nsec) {
    // "inode-size-mtime" in hex; to_chars, not snprintf: it is computed for every file answer.
    FileEtag etag;
    char *at = etag.text;
    char *end = etag.text + sizeof etag.text;
    *at++ = '"';
    at = std::to_chars(at, end, inode, 16).ptr;
    *at++ = '-';
    at = std::to_chars(at, end, size, 16).ptr;
    *at++ = '-';
    at = std::to_chars(at, end, static_cast<uint64_t>(mtime_sec * 1000000000LL + mtime_nsec), 16).ptr;
    *at++ = '"';
    etag.length = static_cast<size_t>(at - etag.text);
    return etag;
}

Precondition evaluate_preconditions(const RequestConditions &c, std::string_view etag, time_t mtime) {
    if (c.has_if_match) {
        if (!strong_match(c.if_match, etag))
            return Precondition::Failed;
    } else if (c.has_if_unmodified_since) {
        time_t since = parse_http_date(c.if_unmodified_since);
        if (since != -1 && mtime > since)
            return Precondition::Failed;
    }
    if (c.has_if_none_match) {
        if (weak_match(c.if_none_match, etag))
            return c.get_or_head ? Precondition::NotModified : Precondition::Failed;
    } else if (c.has_if_modified_since && c.get_or_head) {
        time_t since = parse_http_date(c.if_modified_since);
        if (since != -1 && mtime <= since)
            return Precondition::NotModified;
    }
    return Precondition::Proceed;
}

bool if_range_matches(std::string_view if_range, std::string_view etag, time_t mtime) {
    if_range = trim_ows(if_range);
    if (if_range.starts_with("\"") || if_range.starts_with("W/"))
        return !weak(if_range) && if_range == etag; // RFC 9110 13.1.5: strong comparison only
    time_t date = parse_http_date(if_range);
    return date != -1 && date == mtime;
}

RangeOutcome parse_ranges(std::string_view header, uint64_t size, uint32_t max_ranges,
                          std::vector<ByteRange> &out) {
    out.clear();
    // An empty representation has no byte to range over; a 206 cannot describe zero bytes and
    // RFC 9110 14.1.1 counts a suffix range as satisfiable: answer the (empty) whole.
    if (size == 0)
        return RangeOutcome::Full;
    header = trim_ows(header);
    // Range units are case-insensitive (RFC 9110 section 14.1): "BYTES=0-1" is a byte range.
    if (header.size() < 6 || !iequals(header.substr(0, 6), "bytes="))
        return RangeOutcome::Full;
    std::string_view specs = header.substr(6);
    size_t count = 0;
    bool any_spec = false;
    while (true) {
        size_t comma = specs.find(',');
        std::string_view spec = trim_ows(specs.substr(0, comma));
        if (!spec.empty()) {
            any_spec = true;
            if (++count > max_ranges)
                return RangeOutcome::Full;
            size_t dash = spec.find('-');
            if (dash == std::string_view::npos)
                return RangeOutcome::Full;
            std::string_view a = spec.substr(0, dash), b = spec.substr(dash + 1);
            uint64_t first = 0, last = 0;
            if (a.empty()) { // suffix: the last b bytes
                if (!parse_number(b, last))
                    return RangeOutcome::Full;
                if (last > 0 && size > 0)
                    out.push_back({size > last ? size - last : 0, size - 1});
            } else {
                if (!parse_number(a, first) || (!b.empty() && !parse_number(b, last)))
                    return RangeOutcome::Full;
                if (b.empty())
                    last = UINT64_MAX;
                if (last < first)
                    return RangeOutcome::Full; // invalid: the whole header is ignored
                if (first < size)
                    out.push_back({first, std::min(last, size - 1)});
            }
        }
        if (comma == std::string_view::npos)
            break;
        specs.remove_prefix(comma + 1);
    }
    if (!any_spec)
        return RangeOutcome::Full;
    if (out.empty())
        return RangeOutcome::Unsatisfiable;
    std::vector<ByteRange> sorted = out;
    std::sort(sorted.begin(), sorted.end(),
              [](const ByteRange &x, const ByteRange &y) { return x.first < y.first; });
    for (size_t i = 1; i < sorted.size(); ++i)
        if (sorted[i].first <= sorted[i - 1].last) {
            out.clear();
            return RangeOutcome::Full;
        }
    return RangeOutcome::Partial;
}

} // namespace trellis
