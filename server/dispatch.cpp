#include "dispatch.hpp"

#include "config/config.hpp"
#include "generation.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "net/forwarded.hpp"
#include "plugin/loader.hpp"
#include "responses.hpp"
#include "router.hpp"
#include "thread_pool.hpp"
#include "worker_context.hpp"

#include <llhttp.h>
#include <uv.h>
#include <vector>

namespace trellis {
namespace {

// The health endpoint (top-level "health"): answered here, before any listener rule or plugin, so
// a balancer's probe costs no plugin call and is not redirected. 503 from the moment a drain
// begins, so the balancer stops sending before the instance stops.
bool is_health_check(const Exchange &ex) {
    const WorkerGeneration *generation = ex.worker->generation;
    return generation && !generation->generation->health_path.empty() &&
           ex.request.path == generation->generation->health_path;
}

void answer_health_check(Exchange &ex) {
    trellis_request &r = ex.request;
    if (r.llhttp_method != HTTP_GET && r.llhttp_method != HTTP_HEAD) {
        r.response_headers.assign("Content-Type: text/plain; charset=utf-8\r\nAllow: GET, HEAD\r\n");
        respond(ex, 405, "405 Method Not Allowed\n");
        return;
    }
    bool serving = !ex.worker->draining;
    r.response_headers.assign("Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n");
    respond(ex, serving ? 200 : 503, serving ? "ok\n" : "draining\n");
}

bool redirect_to_https(Exchange &ex) {
    trellis_request &r = ex.request;
    const RedirectToHttps &to = ex.owner->listen()->redirect_to_https;
    std::string location;
    if (to.kind == RedirectToHttps::Kind::SameHost) {
        if (r.host.empty()) {
            respond_error(ex, 400);
            return true;
        }
        location = "https://" + r.host; // the port is dropped: https on 443
    } else {
        location = to.origin;
    }
    // The target as sent (still percent-encoded, so it cannot carry CR or LF into the header);
    // for an absolute-form target, its path and query only.
    std::string_view target = r.str(r.target);
    if (target.empty() || target[0] != '/') {
        size_t authority = target.find("://");
        size_t rest =
            authority == std::string_view::npos ? target.size() : target.find_first_of("/?", authority + 3);
        target = rest == std::string_view::npos ? std::string_view() : target.substr(rest);
        if (target.empty() || target[0] != '/')
            location.append("/");
    }
    location.append(target);
    r.response_headers.assign("Location: ")
        .append(location)
        .append("\r\nContent-Type: text/plain; charset=utf-8\r\n");
    respond(ex, 308, "308 Permanent Redirect\n");
    return true;
}

void run_on_pool(void *arg) noexcept {
    auto *ex = static_cast<Exchange *>(arg);
    PluginInstance *plugin = ex->held.holder;
    // A request whose client left (or that timed out) while it waited for a thread is not run.
    ex->held.pool_result =
        ex->held.start_on_pool() ? plugin->plugin->on_request(plugin->instance, &ex->request) : TRELLIS_ERROR;
    if (!ex->held.post(kMailPoolDone))
        keep_after_exit(ex);
}

bool after_handler(Exchange &ex, int rc, PluginInstance *plugin) {
    trellis_request &r = ex.request;
    if (rc == TRELLIS_ASYNC) {
        if (!ex.held.held())
            ex.held.begin(Hold::Async, plugin, ex.generation);
        else
            ex.held.hold = Hold::Async;
        // What was answered on the loop during on_request counts as answered for other threads.
        if (r.answered)
            ex.held.with_staged([&ex](StagedAnswer &staged) {
                if (!staged.answered) {
                    staged.answered = staged.head_taken = true;
                    staged.kind = ex.stream.active ? StagedAnswer::Kind::Stream : StagedAnswer::Kind::Full;
                }
            });
        ex.owner->exchange_changed(ex);
        return true;
    }
    if (rc == TRELLIS_DECLINED && !r.answered)
        return false;
    if (rc == TRELLIS_ERROR)
        SERVER_LOG_ERROR("plugin \"%s\" failed on %.*s %.*s", plugin->name().c_str(),
                         static_cast<int>(r.method.length), r.str(r.method).data(),
                         static_cast<int>(r.target.length), r.str(r.target).data());
    else if (!r.answered)
        SERVER_LOG_ERROR("plugin \"%s\" returned %d without answering", plugin->name().c_str(), rc);
    if (!r.answered) {
        respond_error(ex, 500);
    } else if (ex.stream.active) {
        // Returned without ending (and without TRELLIS_ASYNC to end it later): the framing cannot
        // be finished, so the exchange ends after what was written.
        SERVER_LOG_ERROR("plugin \"%s\" returned without ending its streamed response",
                         plugin->name().c_str());
        ex.stream.active = false;
        ex.owner->end_after_answer(ex);
    }
    return true;
}

} // namespace

bool answered_by_listener_rules(Exchange &ex) {
    ExchangeOwner &owner = *ex.owner;
    const ListenConfig *listen = owner.listen();
    if (listen && listen->redirect_to_https.kind != RedirectToHttps::Kind::Off && !owner.secure())
        if (redirect_to_https(ex))
            return true;
    if (!owner.covers_host(ex.request.host)) {
        // RFC 9110 section 15.5.20: this connection's certificate (chosen by SNI) is not the one
        // for this host, so the request belongs on another connection.
        respond_error(ex, 421);
        return true;
    }
    return false;
}

namespace {

// X-Forwarded-For (or Forwarded, listen[].real_ip_header) names the client only when the peer is
// a trusted proxy (listen[].trusted_proxies); from anyone else it changes nothing.
void identify_client(Exchange &ex) {
    ex.client_unknown = false;
    const ListenConfig *listen = ex.owner ? ex.owner->listen() : nullptr;
    if (!listen || listen->trusted_proxies.empty() ||
        !listen->trusted_proxies.contains(reinterpret_cast<const sockaddr *>(&ex.peer)))
        return;
    if (listen->real_ip_header == RealIpHeader::None)
        return;
    const char *name = listen->real_ip_header == RealIpHeader::Forwarded ? "forwarded" : "x-forwarded-for";
    const trellis_request &r = ex.request;
    std::vector<std::string_view> lines;
    for (size_t i = 0; i < r.header_count; ++i)
        if (iequals(r.str(r.headers[i].name), name))
            lines.push_back(r.str(r.headers[i].value));
    if (!lines.empty())
        ex.client_unknown =
            !forwarded_client(listen->real_ip_header, lines, listen->trusted_proxies, ex.client);
}

} // namespace

void dispatch(Exchange &ex, int first_route) {
    trellis_request &r = ex.request;
    WorkerContext &worker = *ex.worker;
    if (first_route == 0) {
        identify_client(ex);
        if (is_health_check(ex)) {
            answer_health_check(ex);
            return;
        }
        if (answered_by_listener_rules(ex))
            return;
        ex.router = worker.router;
        ex.generation = worker.generation;
    }
    int index = first_route - 1;
    // The request became complete a moment ago: the first plugin call's loop time starts there,
    // which saves a clock read per request; a later route's call reads the clock itself.
    bool first_call = first_route == 0;
    while (ex.router && (index = ex.router->next_match(r.host, r.path, index + 1)) >= 0) {
        // A body-streaming plugin is offered a request only at its head, as the first match;
        // a body that was buffered is not for it.
        if (ex.router->route(index).plugin->flags() & TRELLIS_STREAM_BODY)
            continue;
        if (call_handler(ex, index, first_call ? loop_clock_from(worker, ex.started_ns) : loop_clock(worker)))
            return;
        first_call = false;
    }
    respond_error(ex, 404);
}

bool call_handler(Exchange &ex, int index, uint64_t began_ns) {
    trellis_request &r = ex.request;
    WorkerContext &worker = *ex.worker;
    const Route &route = ex.router->route(index);
    ex.route_index = index;
    ex.route_stats = route.stats;
    r.route = &route;
    r.path_below = std::string_view(r.path).substr(route.prefix.back() == '/' ? route.prefix.size() - 1
                                                                              : route.prefix.size());
    if (r.path_below.empty())
        r.path_below = "/";
    // A plugin may keep the request past its connection: it reads the TLS facts from a reference
    // of its own (nothing to do on plain connections).
    if (!ex.tls_facts && ex.owner->secure())
        ex.tls_facts = ex.owner->shared_tls_facts();
    // routes[].allow, or loopback for a private plugin; a client no one can name is refused.
    if (route.restricted &&
        (ex.client_unknown || !route.allow.contains(reinterpret_cast<const sockaddr *>(&ex.client)))) {
        respond_error(ex, 403);
        return true;
    }
    PluginInstance *plugin = route.plugin;
    if (route.blocking && worker.thread_pool) {
        ex.held.begin(Hold::Pool, plugin, ex.generation);
        if (!worker.thread_pool->try_submit({run_on_pool, &ex})) {
            ex.held.end(worker);
            SERVER_LOG_WARN("thread pool queue is full: 503 for plugin \"%s\"", plugin->name().c_str());
            respond_error(ex, 503);
            return true;
        }
        ex.owner->exchange_changed(ex);
        return true;
    }
    r.inline_call = true;
    int rc = plugin->plugin->on_request(plugin->instance, &r);
    check_loop_stall(worker, began_ns, *plugin, route.stats);
    r.inline_call = false;
    return after_handler(ex, rc, plugin);
}

bool route_to_body_streamer(Exchange &ex) {
    WorkerContext &worker = *ex.worker;
    if (is_health_check(ex))
        return false; // answered once complete, by dispatch
    ex.router = worker.router;
    ex.generation = worker.generation;
    const Router *router = ex.router;
    const trellis_request &r = ex.request;
    int index = router && router->has_body_streamers() ? router->next_match(r.host, r.path, 0) : -1;
    if (index < 0 || !(router->route(index).plugin->flags() & TRELLIS_STREAM_BODY))
        return false;
    ex.route_index = index;
    return true;
}

void dispatch_head(Exchange &ex) {
    ex.started_ns = uv_hrtime();
    identify_client(ex);
    // Answered now (redirect, 421, or the plugin without TRELLIS_ASYNC): the body is read and
    // dropped (up to limits.max_body_bytes), as nginx does.
    if (answered_by_listener_rules(ex))
        ex.body_streamed = true;
    else
        ex.body_streamed = call_handler(ex, ex.route_index, loop_clock_from(*ex.worker, ex.started_ns));
}

void on_pool_done(Exchange &ex) {
    HeldRequest &held = ex.held;
    if (held.hold != Hold::Pool)
        return;
    PluginInstance *plugin = held.holder;
    if (held.pool_result == TRELLIS_ASYNC) {
        held.hold = Hold::Async;
        return;
    }
    // Declined on the pool: the next routes are tried on the same generation, kept alive meanwhile.
    WorkerContext &worker = *ex.worker;
    WorkerGeneration *pinned = held.pin();
    held.end(worker);
    if (!after_handler(ex, held.pool_result, plugin))
        dispatch(ex, ex.route_index + 1);
    HeldRequest::unpin(pinned, worker);
}

uint64_t loop_clock(const WorkerContext &worker) {
    return worker.limits().loop_stall_warn_ms ? uv_hrtime() : 0;
}

uint64_t loop_clock_from(const WorkerContext &worker, uint64_t now_ns) {
    return worker.limits().loop_stall_warn_ms ? now_ns : 0;
}

void check_loop_stall(const WorkerContext &worker, uint64_t began_ns, const PluginInstance &plugin,
                      RouteStats *route) {
    if (began_ns == 0)
        return; // the watch is off
    uint64_t warn_ms = worker.limits().loop_stall_warn_ms;
    uint64_t took_ns = uv_hrtime() - began_ns;
    if (took_ns < warn_ms * 1000000)
        return;
    // Every other connection of this worker waited as long: say so, once a minute per route.
    uint64_t now_ms = uv_hrtime() / 1000000;
    if (route) {
        route->per_worker[worker.index()].loop_stalls.add();
        uint64_t last = route->last_stall_warning_ms.load(std::memory_order_relaxed);
        if ((last != 0 && now_ms - last < 60000) ||
            !route->last_stall_warning_ms.compare_exchange_strong(last, now_ms, std::memory_order_relaxed))
            return;
    }
    std::string where =
        route ? "route \"" + route->prefix + "\"" + (route->host == "*" ? "" : " of host " + route->host)
              : std::string("a route");
    SERVER_LOG_WARN("%s (plugin \"%s\") ran %llu ms on the event loop of worker %u, holding up its other "
                    "connections; mark the route \"blocking\": true",
                    where.c_str(), plugin.name().c_str(), static_cast<unsigned long long>(took_ns / 1000000),
                    worker.index());
}

} // namespace trellis
