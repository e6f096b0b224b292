#include "held_answers.hpp"

#include "dispatch.hpp"
#include "log/log.hpp"
#include "plugin/loader.hpp"
#include "responses.hpp"
#include "worker_context.hpp"

#include <unistd.h>

namespace trellis {
namespace {

const char *holder_name(const Exchange &ex) {
    return ex.held.holder ? ex.held.holder->name().c_str() : "?";
}

void apply_taken_head(Exchange &ex, TakenAnswer &taken) {
    switch (taken.kind) {
    case StagedAnswer::Kind::Full:
        respond(ex, taken.status, ex.staged_bytes);
        ex.staged_bytes.clear();
        break;
    case StagedAnswer::Kind::File:
        if (taken.file.stat)
            taken.file.stat = &taken.file_stat;
        respond_file(ex, taken.file);
        break;
    case StagedAnswer::Kind::Stream:
        start_stream(ex, taken.status, taken.length);
        break;
    case StagedAnswer::Kind::None:
        break;
    }
}

} // namespace

bool apply_staged(Exchange &ex) {
    TakenAnswer taken = ex.held.take(ex.staged_bytes);
    if (taken.head && ex.request.answered) {
        // Answered on the loop during on_request and again from another thread.
        SERVER_LOG_WARN("plugin \"%s\" answered a request twice; the second answer is ignored",
                        holder_name(ex));
        if (taken.file.fd >= 0 && !taken.file.borrowed)
            ::close(taken.file.fd);
        taken.head = false;
        ex.staged_bytes.clear();
    }
    if (taken.head)
        apply_taken_head(ex, taken);
    if (ex.stream.active && !ex.staged_bytes.empty())
        stream_write(ex, ex.staged_bytes);
    if (taken.ended && ex.stream.active)
        end_stream(ex);
    if (ex.owner)
        ex.held.set_unsent(ex.owner->queued_output(ex));
    return taken.released;
}

void end_hold(Exchange &ex) {
    // A body still arriving for a plugin that let go is read and dropped.
    ex.body_paused = false;
    if (!ex.request.answered) {
        SERVER_LOG_ERROR("plugin \"%s\" released a request without answering it", holder_name(ex));
        respond_error(ex, 500);
    } else if (ex.stream.active) {
        SERVER_LOG_ERROR("plugin \"%s\" released a streamed response without ending it", holder_name(ex));
        ex.stream.active = false;
        ex.owner->end_after_answer(ex);
    }
    ex.held.end(*ex.worker); // last: the answers above still belong to the held generation
    ex.owner->flush(ex);
}

void fail_held_request(Exchange &ex, int status) {
    ex.held.mark_gone();
    apply_staged(ex);
    ex.held.gave_up = true; // the protocol no longer waits for the plugin; on_abort comes with the end
    ex.body_streamed = false;
    ex.owner->end_after_answer(ex);
    if (ex.request.answered) {
        ex.owner->end_now(ex);
        return;
    }
    ex.stream.active = false;
    respond_error(ex, status);
    ex.owner->flush(ex);
}

void on_handler_timeout(Exchange &ex) {
    if (!ex.held.held() && !ex.stream.active) {
        ex.owner->exchange_changed(ex);
        return;
    }
    ex.held.mark_gone(); // later answers from the plugin fail
    apply_staged(ex);    // answers accepted before that still count
    const trellis_request &r = ex.request;
    ex.held.gave_up = true;
    unsigned timeout_ms = ex.worker->limits().handler_timeout_ms;
    if (!r.answered) {
        SERVER_LOG_ERROR("plugin \"%s\" did not answer %.*s %.*s within %u ms: 504", holder_name(ex),
                         static_cast<int>(r.method.length), r.str(r.method).data(),
                         static_cast<int>(r.target.length), r.str(r.target).data(), timeout_ms);
        ex.owner->end_after_answer(ex);
        respond_error(ex, 504);
        ex.owner->flush(ex);
        return;
    }
    SERVER_LOG_ERROR("plugin \"%s\" sent nothing for %u ms on a streamed response; closing the connection",
                     holder_name(ex), timeout_ms);
    ex.owner->end_now(ex);
}

void notify_plugin_writable(Exchange &ex) {
    HeldRequest &held = ex.held;
    if (held.hold != Hold::Async || !held.holder)
        return;
    bool wanted = ex.notify_writable;
    ex.notify_writable = false;
    wanted = held.take_want_writable() || wanted;
    if (wanted && held.holder->on_writable()) {
        uint64_t began_ns = loop_clock(*ex.worker);
        held.holder->on_writable()(held.holder->instance, &ex.request);
        check_loop_stall(*ex.worker, began_ns, *held.holder, ex.route_stats);
    }
}

BodyTaken give_body(Exchange &ex, const char *data, size_t len, bool last) {
    PluginInstance &plugin = *ex.held.holder;
    uint64_t began_ns = loop_clock(*ex.worker);
    int rc = plugin.on_body()(plugin.instance, &ex.request, data, len, last ? 1 : 0);
    check_loop_stall(*ex.worker, began_ns, plugin, ex.route_stats);
    // At the end only an error counts (there is nothing left to pause).
    if (last ? rc == TRELLIS_ERROR : rc != TRELLIS_OK && rc != TRELLIS_AGAIN) {
        SERVER_LOG_ERROR("plugin \"%s\" failed in on_body", plugin.name().c_str());
        return BodyTaken::Failed;
    }
    return !last && rc == TRELLIS_AGAIN ? BodyTaken::Paused : BodyTaken::Taken;
}

void abandon_held(Exchange &ex, bool client_left) {
    HeldRequest &held = ex.held;
    bool released, never_started;
    held.mark_gone(released, never_started);
    // The exchange ends here: log and count it, unless its whole answer was already queued (and
    // so recorded), with the body bytes taken so far. A client that left gets nginx's 499; a
    // stream the server cut (its plugin went quiet, the client stopped reading) keeps the status
    // it began with; a request the server closed unanswered (the shutdown deadline) is a 503.
    if (!ex.request.answered || ex.stream.active) {
        int status = client_left ? kClientClosedRequest : ex.stream.active ? ex.stream.status : 503;
        record_response(ex, status, ex.request.is_head ? 0 : ex.stream.sent);
    }
    ex.owner = nullptr;
    held.orphaned = true;
    ex.stream.active = false;
    // The plugin hears of it unless it has let go already; its release (or the pool's return)
    // then reaches deliver_orphan_mail, which recycles the exchange.
    if (!released && !never_started && held.holder && held.holder->on_abort()) {
        uint64_t began_ns = loop_clock(*ex.worker);
        held.holder->on_abort()(held.holder->instance, &ex.request);
        check_loop_stall(*ex.worker, began_ns, *held.holder, ex.route_stats);
    }
}

void detach_finished(Exchange &ex) {
    ex.held.mark_gone();
    ex.owner = nullptr;
    ex.held.orphaned = true;
}

bool deliver_orphan_mail(Exchange &ex, unsigned bits) {
    if (ex.owner)
        return false;
    HeldRequest &held = ex.held;
    if (!held.orphaned)
        return true; // stale mail for an exchange back in its pool
    // The client has gone; the exchange waits only for the plugin to let go.
    if (bits & kMailReleased)
        held.release_seen = true;
    if ((bits & kMailPoolDone) && held.hold == Hold::Pool)
        held.hold = held.pool_result == TRELLIS_ASYNC ? Hold::Async : Hold::None;
    if (held.hold == Hold::None || (held.hold == Hold::Async && held.release_seen)) {
        held.end(*ex.worker);
        ex.recycle(&ex, ex.recycle_context);
    }
    return true;
}

} // namespace trellis
