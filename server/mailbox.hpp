// How other threads reach a request a plugin holds: they mark the request's MailSlot with what
// happened (an answer staged, the handle released, the pool done, body wanted again) and wake the
// worker's loop, which handles every marked slot in one pass. Posting never allocates: a slot is
// queued at most once, however many marks it collects.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <uv.h>
#include <vector>

namespace trellis {

enum MailBits : uint8_t {
    kMailStaged = 1,     // the plugin staged (more of) an answer
    kMailReleased = 2,   // the plugin released its hold
    kMailPoolDone = 4,   // on_request returned on the thread pool
    kMailResumeBody = 8, // request_resume_body
};

// What a mailbox keeps per receiver; embedded in it, so posting needs no allocation.
struct MailSlot {
    explicit MailSlot(void *what_for) : receiver(what_for) {}
    void *const receiver;            // what the delivery is for
    unsigned bits = 0;               // under the mailbox's mutex
    std::atomic<bool> queued{false}; // also read without the lock (Mailbox::forget)
};

class Mailbox {
  public:
    using DeliverFn = void (*)(MailSlot *slot, unsigned bits);

    // Loop thread. `deliver` is called on the loop thread for each marked session.
    Mailbox(uv_loop_t *loop, DeliverFn deliver);
    Mailbox(const Mailbox &) = delete;
    Mailbox &operator=(const Mailbox &) = delete;

    // Any thread. False once the mailbox is closed (the worker has exited): the caller then owns
    // what it would have handed over.
    bool post(MailSlot *slot, unsigned bits);
    // Loop thread, when the worker exits: delivers what is queued, then refuses further posts.
    void close();
    // Loop thread: drops what is queued for `slot`, which is about to be reused or freed (a
    // plugin that releases a request it did not hold leaves such mail behind).
    void forget(MailSlot *slot);

  private:
    static void on_async(uv_async_t *async) noexcept;
    void deliver_all();

    uv_async_t async_;
    DeliverFn deliver_;
    std::mutex mutex_;
    std::vector<MailSlot *> queue_; // under mutex_
    std::vector<MailSlot *> taking_;
    bool closed_ = false; // under mutex_
    bool delivering_ = false;
};

} // namespace trellis
