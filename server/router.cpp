#include "router.hpp"

#include <algorithm>

namespace trellis {

Router::Router(std::vector<Route> routes) : routes_(std::move(routes)) {
    std::stable_sort(routes_.begin(), routes_.end(), [](const Route &a, const Route &b) {
        if (a.prefix.size() != b.prefix.size())
            return a.prefix.size() > b.prefix.size();
        return a.host != "*" && b.host == "*";
    });
}

bool Router::prefix_matches(std::string_view prefix, std::string_view path) {
    if (!path.starts_with(prefix))
        return false;
    return path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/';
}

int Router::next_match(std::string_view host, std::string_view path, int from) const {
    for (size_t i = static_cast<size_t>(from < 0 ? 0 : from); i < routes_.size(); ++i) {
        const Route &route = routes_[i];
        if (route.host != "*" && route.host != host)
            continue;
        if (prefix_matches(route.prefix, path))
            return static_cast<int>(i);
    }
    return -1;
}

} // namespace trellis
