#include "http/request_target.hpp"

#include "http/path.hpp"
#include "log/log.hpp"

namespace trellis {

bool normalize_host(std::string_view raw, std::string &out) {
    out.clear();
    if (!valid_host(raw))
        return false;
    std::string_view name = raw;
    if (!raw.empty() && raw[0] == '[') {
        size_t close = raw.find(']');
        if (close == std::string_view::npos)
            return false;
        name = raw.substr(0, close + 1);
        std::string_view rest = raw.substr(close + 1);
        if (!rest.empty() && rest[0] != ':')
            return false;
    } else if (size_t colon = raw.find(':'); colon != std::string_view::npos) {
        name = raw.substr(0, colon);
    }
    std::string_view port = raw.substr(name.size());
    if (!port.empty()) {
        port.remove_prefix(1);
        for (char c : port)
            if (c < '0' || c > '9')
                return false;
    }
    out.reserve(name.size());
    for (char c : name)
        out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    return true;
}

int parse_request_target(trellis_request &r) {
    std::string_view target = r.str(r.target);
    // A fragment is the client's own business and never part of a request target (RFC 9112
    // section 3.2); llhttp passes "#" through in the URL.
    if (target.find('#') != std::string_view::npos)
        return 400;
    std::string_view authority;
    size_t path_start = 0;
    if (target.size() >= 7 && (iequals(target.substr(0, 7), "http://") ||
                               (target.size() >= 8 && iequals(target.substr(0, 8), "https://")))) {
        // absolute-form (RFC 9112 section 3.2.2): the authority in the target wins over Host.
        size_t scheme_end = target.find("://") + 3;
        size_t end = target.find_first_of("/?", scheme_end);
        authority = target.substr(scheme_end, end == std::string_view::npos ? end : end - scheme_end);
        if (authority.empty() || authority.find('@') != std::string_view::npos)
            return 400;
        path_start = end == std::string_view::npos ? target.size() : end;
    } else if (target.empty() || target[0] != '/') {
        return 400;
    }
    std::string_view rest = target.substr(path_start);
    size_t question = rest.find('?');
    std::string_view raw_path = rest.substr(0, question);
    if (question != std::string_view::npos) {
        r.query.offset = static_cast<uint32_t>(r.target.offset + path_start + question + 1);
        r.query.length = static_cast<uint32_t>(rest.size() - question - 1);
    }
    if (raw_path.empty())
        raw_path = "/";
    if (PathError error = normalize_path(raw_path, r.path); error != PathError::None) {
        SERVER_LOG_DEBUG("bad request (400): %s", path_error_text(error));
        return 400;
    }
    std::string_view host_header;
    bool has_host = r.header("host", host_header);
    if (!authority.empty()) {
        if (!normalize_host(authority, r.host))
            return 400;
        if (has_host && !valid_host(host_header))
            return 400;
    } else if (has_host && !normalize_host(host_header, r.host)) {
        return 400;
    }
    return 0;
}

} // namespace trellis
