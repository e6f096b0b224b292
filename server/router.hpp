// Host + longest path prefix -> plugin instance. A plugin may decline; the connection then asks
// for the next match (h2o's on_req returning -1), so matches are enumerated in order of preference.
#pragma once

#include "net/address_set.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace trellis {

struct PluginInstance;
struct RouteStats;

struct Route {
    std::string host;   // "*" or lower-case exact host
    std::string prefix; // starts with '/'
    PluginInstance *plugin = nullptr;
    bool blocking = false;   // on_request runs on the thread pool (route or plugin said so)
    bool restricted = false; // only clients in `allow` are served; others get 403
    AddressSet allow = {};
    RouteStats *stats = nullptr; // counters for the status plugin (may be null in tests)
    // The route's "config" as JSON text, "" when absent: what request_route_config hands the
    // plugin. Lives with the generation's router, which a request in flight pins.
    std::string config_json = {};
};

class Router {
  public:
    // Routes are ordered once: longer prefix first, then exact host before "*", then config order.
    explicit Router(std::vector<Route> routes);

    // The first route at index >= `from` matching `host` (lower-case, no port) and `path`, or -1.
    int next_match(std::string_view host, std::string_view path, int from) const;
    const Route &route(int index) const { return routes_[static_cast<size_t>(index)]; }
    // True when some route's plugin takes bodies as a stream (it must see requests at their head).
    bool has_body_streamers() const { return has_body_streamers_; }
    void set_has_body_streamers(bool value) { has_body_streamers_ = value; }
    size_t size() const { return routes_.size(); }

    // True when `prefix` covers `path` on a segment boundary: "/hello" covers "/hello" and
    // "/hello/x" but not "/helloworld"; "/" and "/api/" cover what starts with them.
    static bool prefix_matches(std::string_view prefix, std::string_view path);

  private:
    std::vector<Route> routes_;
    bool has_body_streamers_ = false;
};

} // namespace trellis
