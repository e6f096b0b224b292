// From a complete request to a plugin's answer, protocol-neutral: the listener's own rules
// (redirect to https, 421 for a certificate that does not cover the host), the walk over the
// routes, the plugin call (inline or on the thread pool) and what its result means.
#pragma once

#include "exchange.hpp"

#include <cstdint>

namespace trellis {

// Offers the request to the routes from `first_route` on (0: a new request, listener rules first);
// a request no route takes is answered 404.
void dispatch(Exchange &ex, int first_route = 0);
// Redirect to https or 421: true when the listener itself answered.
bool answered_by_listener_rules(Exchange &ex);
// Calls the handler of route `index`; true when the route took the request (answered, holds it,
// or failed), false when it declined. `began_ns`: when the loop began on this request for the
// plugin (loop_clock()).
bool call_handler(Exchange &ex, int index, uint64_t began_ns);
// A head is complete: takes the worker's routes for the request, and says whether its first route's
// plugin streams bodies (TRELLIS_STREAM_BODY), which then gets the request now, before the body.
bool route_to_body_streamer(Exchange &ex);
// Hands the head to that plugin (or the listener answers first). Sets ex.body_streamed: true when
// the body goes to the plugin (or is read and dropped after an answer given now), false when the
// plugin declined and the body is buffered for the routes after it.
void dispatch_head(Exchange &ex);
// on_request returned on the pool (the kMailPoolDone mail): its result, as inline.
void on_pool_done(Exchange &ex);

// The loop watch: when a plugin call on the loop begins (0 when the watch is off) ...
uint64_t loop_clock(const WorkerContext &worker);
// ... the same from a clock reading taken just before ...
uint64_t loop_clock_from(const WorkerContext &worker, uint64_t now_ns);
// ... and after the call: counts and logs (at most once a minute per route) a call that ran past
// limits.loop_stall_warn_ms.
void check_loop_stall(const WorkerContext &worker, uint64_t began_ns, const PluginInstance &plugin,
                      RouteStats *route);

} // namespace trellis
