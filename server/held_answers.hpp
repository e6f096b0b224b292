// The loop's side of a request a plugin holds: applying what other threads staged, the end of a
// hold, and the ways a hold ends early (the client left, the handler timed out, the request
// broke). Protocol-neutral: the protocol under the exchange is reached through its owner.
#pragma once

#include "dispatch.hpp"
#include "exchange.hpp"

namespace trellis {

// Applies answers staged by other threads; true when the plugin has released the request.
bool apply_staged(Exchange &ex);
// The plugin released the request: what it left undone is finished for it (500, or the end of a
// stream that cannot be framed), and its generation is let go.
void end_hold(Exchange &ex);
// The client side failed (timeout, bad framing) while a plugin holds the request: answers from the
// plugin stop, `status` goes out if nothing was answered, and the exchange ends.
void fail_held_request(Exchange &ex, int status);
// The handler did not answer (504) or went quiet on a stream (cut) within limits.handler_timeout_ms.
void on_handler_timeout(Exchange &ex);
// The output drained: a plugin whose response_write said TRELLIS_AGAIN hears on_writable.
void notify_plugin_writable(Exchange &ex);
// Hands body bytes (`last`: the body's end) to the plugin holding a TRELLIS_STREAM_BODY request.
// A failure is logged; the caller ends the exchange (fail_held_request).
enum class BodyTaken { Taken, Paused, Failed };
BodyTaken give_body(Exchange &ex, const char *data, size_t len, bool last);
// The protocol goes away while the plugin holds the request: it is logged (499 when the client
// left), the plugin hears on_abort, and the exchange waits for its release (deliver_mail).
void abandon_held(Exchange &ex, bool client_left);

// The protocol goes away after the whole answer went out, while the plugin has not released the
// request yet: nothing is aborted or logged again; the exchange waits for the release.
void detach_finished(Exchange &ex);

// A mailbox delivery for an exchange whose owner has gone: recycled once the plugin lets go.
// Returns false when the exchange still has an owner (the owner's on_mail takes the mail).
bool deliver_orphan_mail(Exchange &ex, unsigned bits);

// The steps of a mail delivery to an exchange that still has its owner, in order; `alive()` tells
// after each whether the owner still has the exchange (an answer may have ended the connection).
template <class Alive> void handle_mail(Exchange &ex, unsigned bits, Alive alive) {
    // Only the released mail ends a hold: it is the plugin's last touch of the request (the flag
    // under the lock is set a moment before it).
    if (bits & kMailReleased)
        ex.held.release_seen = true;
    bool was_held = ex.held.held(); // then an owner that goes away leaves the exchange orphaned
    apply_staged(ex);
    if (!alive()) {
        if (was_held)
            deliver_orphan_mail(ex, bits); // the pool's return still has to be seen
        return;
    }
    if (bits & kMailPoolDone)
        on_pool_done(ex);
    if (!alive())
        return;
    if (ex.held.release_seen && ex.held.hold == Hold::Async) {
        end_hold(ex);
        return;
    }
    if (bits & kMailResumeBody)
        ex.owner->resume_body(ex);
    if (alive())
        ex.owner->flush(ex);
}

} // namespace trellis
