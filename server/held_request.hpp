// The one home of what a plugin holding a request shares with the loop: the hold itself and the
// generation it pins, the answer staged from another thread (under a mutex), and the mailbox
// bits that wake the loop. Other threads (the pool, a plugin's own) only call the `stage_*`
// functions and release(); the loop takes what they staged with take().
#pragma once

#include "mailbox.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <sys/stat.h>

namespace trellis {

class Exchange;
class WorkerContext;
struct PluginInstance;
struct WorkerGeneration;

// What a plugin hands over to answer with a file.
struct FileResponse {
    int status = 200;
    int fd = -1;
    bool borrowed = false;             // the plugin keeps fd (a cache); otherwise it is closed here
    uint32_t max_ranges = 0;           // 0: 16
    const struct stat *stat = nullptr; // when the caller already has it
};

// Who holds the request being answered, besides its protocol.
enum class Hold : uint8_t {
    None,  // nobody: an inline handler, or no handler yet
    Pool,  // on_request runs on the thread pool
    Async, // the plugin returned TRELLIS_ASYNC and has not released it yet
};

// What a plugin thread hands to the loop for a held request.
struct StagedAnswer {
    enum class Kind : uint8_t { None, Full, File, Stream };
    bool released = false;     // request_release was called
    bool answered = false;     // an answer (full, file, or the head of a stream) was given
    bool gone = false;         // the client left or the request timed out: answers fail now
    bool pool_started = false; // a pool thread has begun on_request (so on_abort is owed)
    bool head_taken = false;
    bool ended = false;         // response_end
    bool want_writable = false; // response_write said TRELLIS_AGAIN
    Kind kind = Kind::None;
    int status = 0;
    int64_t length = -1;
    std::string body; // a full answer's body, or stream bytes the loop has not taken yet
    FileResponse file;
    struct stat file_stat = {};
    size_t unsent = 0; // bytes the loop holds but has not written (for TRELLIS_AGAIN)
    void reset();
};

// What the loop takes from a staged answer in one go (take()).
struct TakenAnswer {
    bool head = false; // an answer's head to apply (kind, status, length, file)
    StagedAnswer::Kind kind = StagedAnswer::Kind::None;
    int status = 0;
    int64_t length = -1;
    FileResponse file;
    struct stat file_stat = {};
    bool ended = false;    // response_end was called
    bool released = false; // request_release was called
};

class HeldRequest {
  public:
    // `exchange`: whose request this is (what the mailbox delivers); `mailbox`: its worker's.
    HeldRequest(Exchange *exchange, std::shared_ptr<Mailbox> mailbox)
        : mail(exchange), mailbox_(std::move(mailbox)) {}
    ~HeldRequest() { staged_.reset(); }

    // ---- the hold (loop thread) ----
    Hold hold = Hold::None;
    PluginInstance *holder = nullptr;
    int pool_result = 0;       // on_request's result on the pool (read after kMailPoolDone)
    bool release_seen = false; // kMailReleased arrived: the plugin will not touch it again
    bool gave_up = false;      // the handler timed out: the protocol no longer waits for it
    bool orphaned = false;     // the protocol went away while the plugin held the request
    bool held() const { return hold != Hold::None; }
    // Starts a hold, pinning `generation` (the routes and plugins the request was dispatched on).
    void begin(Hold kind, PluginInstance *plugin, WorkerGeneration *generation);
    // Ends it; the last request held on a generation lets `worker` retire it.
    void end(WorkerContext &worker);
    // Keeps the pinned generation alive across end() and a new begin() (pool result declined).
    WorkerGeneration *pin();
    static void unpin(WorkerGeneration *generation, WorkerContext &worker);

    // ---- staging (any thread) ----
    // Runs `fill` on the staged answer under the lock, unless the request is gone or answered
    // (then -1; `answered_twice` tells which). Posts kMailStaged.
    template <class Fill> int stage(Fill fill, bool &answered_twice);
    // Under the lock, for answers that need more than stage() (stream bytes, the end, headers).
    template <class Fn> auto with_staged(Fn fn) {
        std::lock_guard<std::mutex> lock(mutex_);
        return fn(staged_);
    }
    // request_release; false when it was released already.
    bool release();
    // Wakes the loop with `bits`; false once the worker has exited.
    bool post(unsigned bits);
    // Loop thread: drops mail still queued (the request is about to be reused or freed).
    void forget_mail();

    // ---- the loop's side ----
    // Takes what other threads staged: the head when there is a new one, and stream bytes into
    // `bytes` (swapped, so both keep their capacity).
    TakenAnswer take(std::string &bytes);
    // Later answers from the plugin fail; returns whether the plugin had released the request
    // and whether a pool job for it never started (the plugin never saw it).
    void mark_gone(bool &released, bool &never_started);
    void mark_gone();
    // Tells how much the loop holds unwritten (the plugin's backpressure).
    void set_unsent(size_t bytes);
    // A response_write said TRELLIS_AGAIN since the last call (clears it and the unsent count).
    bool take_want_writable();
    // Marks that a pool thread began on_request; false when the request is gone already.
    bool start_on_pool();
    // For the next request: nothing staged, nobody holding.
    void reset();

    MailSlot mail; // the mailbox's bookkeeping

  private:
    std::shared_ptr<Mailbox> mailbox_; // outlives the worker
    std::mutex mutex_;
    StagedAnswer staged_; // under mutex_
    WorkerGeneration *pinned_ = nullptr;
};

template <class Fill> int HeldRequest::stage(Fill fill, bool &answered_twice) {
    answered_twice = false;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (staged_.gone)
            return -1;
        if (staged_.answered) {
            answered_twice = true;
            return -1;
        }
        fill(staged_);
        staged_.answered = true;
    }
    post(kMailStaged);
    return 0;
}

// A request a plugin still holds after its worker has exited (a plugin releasing requests in its
// destroy, say): nobody can take it back any more, so it is kept until the process ends.
void keep_after_exit(Exchange *exchange);

} // namespace trellis
