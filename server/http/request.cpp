#include "http/request.hpp"

namespace trellis {

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size())
        return false;
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = static_cast<char>(y - 'A' + 'a');
        if (x != y)
            return false;
    }
    return true;
}

} // namespace trellis

bool trellis_request::header(std::string_view name, std::string_view &value) const {
    for (size_t i = 0; i < header_count; ++i) {
        if (trellis::iequals(str(headers[i].name), name)) {
            value = str(headers[i].value);
            return true;
        }
    }
    return false;
}

void trellis_request::reset() {
    method = target = query = {};
    llhttp_method = 0;
    version = 11;
    header_count = 0;
    host.clear();
    path.clear();
    // A large upload must not pin its memory in the pool for ever.
    if (body.capacity() > 65536)
        std::string().swap(body);
    body.clear();
    is_head = false;
    route = nullptr;
    path_below = {};
    response_headers.clear();
    answered = false;
    inline_call = false;
    if (scratch.capacity() > 65536)
        std::string().swap(scratch);
    scratch.clear();
}
