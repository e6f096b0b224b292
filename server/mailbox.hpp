// How other threads reach a request a plugin holds: they mark the request's ActiveSession with what
// happened (an answer staged, the handle released, the pool done, body wanted again) and wake the
// worker's loop, which handles every marked session in one pass. Posting never allocates: a session
// is queued at most once, however many marks it collects.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <uv.h>
#include <vector>

namespace trellis {

struct ActiveSession;

enum MailBits : uint8_t {
    kMailStaged = 1,     // the plugin staged (more of) an answer
    kMailReleased = 2,   // the plugin released its hold
    kMailPoolDone = 4,   // on_request returned on the thread pool
    kMailResumeBody = 8, // request_resume_body
};

class Mailbox {
  public:
    using DeliverFn = void (*)(ActiveSession *session, unsigned bits);

    // Loop thread. `deliver` is called on the loop thread for each marked session.
    Mailbox(uv_loop_t *loop, DeliverFn deliver);
    Mailbox(const Mailbox &) = delete;
    Mailbox &operator=(const Mailbox &) = delete;

    // Any thread. False once the mailbox is closed (the worker has exited): the caller then owns
    // what it would have handed over.
    bool post(ActiveSession *session, unsigned bits);
    // Loop thread, when the worker exits: delivers what is queued, then refuses further posts.
    void close();
    // Loop thread: drops what is queued for `session`, which is about to be reused or freed (a
    // plugin that releases a request it did not hold leaves such mail behind).
    void forget(ActiveSession *session);

  private:
    static void on_async(uv_async_t *async) noexcept;
    void deliver_all();

    uv_async_t async_;
    DeliverFn deliver_;
    std::mutex mutex_;
    std::vector<ActiveSession *> queue_; // under mutex_
    std::vector<ActiveSession *> taking_;
    bool closed_ = false; // under mutex_
    bool delivering_ = false;
};

} // namespace trellis
