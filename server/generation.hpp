// A generation: the plugins and routes of one reading of server.json. SIGHUP builds a new one while
// the old one keeps serving; new requests take the new one, requests in flight finish on theirs, and
// an instance (or library) is destroyed only when the last generation holding it is gone.
#pragma once

#include "config/config.hpp"
#include "plugin/loader.hpp"
#include "router.hpp"

#include <cstdint>
#include <memory>

namespace trellis {

struct Generation {
    uint64_t number = 1;
    // limits.* of this reading; a worker applies them when it adopts the generation: every check
    // it makes from then on (a body byte read, a timeout started, a connection accepted) uses
    // them, for requests already in progress too, and shorter timeouts cut what waits.
    Limits limits;
    std::string health_path; // "health.path" of this reading (empty: none)
    PluginSet plugins;
    std::unique_ptr<Router> router;
};

// One worker's use of a generation: how many requests held by plugins (on the pool or async) still
// run on it. Inline requests need no count: they finish before the worker can switch.
struct WorkerGeneration {
    std::shared_ptr<const Generation> generation;
    size_t held = 0;
};

} // namespace trellis
