#include "held_request.hpp"

#include "generation.hpp"
#include "worker_context.hpp"

#include <unistd.h>
#include <vector>

namespace trellis {

void StagedAnswer::reset() {
    released = answered = gone = pool_started = head_taken = ended = want_writable = false;
    kind = Kind::None;
    status = 0;
    length = -1;
    if (body.capacity() > 65536)
        std::string().swap(body);
    body.clear();
    if (file.fd >= 0 && !file.borrowed)
        ::close(file.fd);
    file = FileResponse{};
    unsent = 0;
}

void HeldRequest::begin(Hold kind, PluginInstance *plugin, WorkerGeneration *generation) {
    hold = kind;
    holder = plugin;
    pinned_ = generation;
    if (pinned_)
        ++pinned_->held;
}

void HeldRequest::end(WorkerContext &worker) {
    WorkerGeneration *generation = pinned_;
    hold = Hold::None;
    holder = nullptr;
    pinned_ = nullptr;
    unpin(generation, worker);
}

WorkerGeneration *HeldRequest::pin() {
    if (pinned_)
        ++pinned_->held;
    return pinned_;
}

void HeldRequest::unpin(WorkerGeneration *generation, WorkerContext &worker) {
    if (generation && --generation->held == 0 && worker.on_generation_idle)
        worker.on_generation_idle(generation, worker.on_generation_idle_data);
}

bool HeldRequest::release() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (staged_.released)
        return false;
    staged_.released = true;
    return true;
}

bool HeldRequest::post(unsigned bits) {
    // A closed mailbox means the worker has exited; what the plugin sent has nowhere to go.
    return mailbox_ && mailbox_->post(&mail, bits);
}

void HeldRequest::forget_mail() {
    if (mailbox_)
        mailbox_->forget(&mail);
}

TakenAnswer HeldRequest::take(std::string &bytes) {
    TakenAnswer taken;
    std::lock_guard<std::mutex> lock(mutex_);
    taken.head = staged_.answered && !staged_.head_taken;
    if (taken.head) {
        staged_.head_taken = true;
        taken.kind = staged_.kind;
        taken.status = staged_.status;
        taken.length = staged_.length;
        taken.file = staged_.file;
        taken.file_stat = staged_.file_stat;
        staged_.file = FileResponse{}; // the loop owns the descriptor now
    }
    bytes.clear();
    bytes.swap(staged_.body);
    taken.ended = staged_.ended;
    taken.released = staged_.released;
    return taken;
}

void HeldRequest::mark_gone(bool &released, bool &never_started) {
    std::lock_guard<std::mutex> lock(mutex_);
    staged_.gone = true;
    released = staged_.released;
    // A job still waiting for a pool thread will not run at all: the plugin never saw it.
    never_started = hold == Hold::Pool && !staged_.pool_started;
}

void HeldRequest::mark_gone() {
    std::lock_guard<std::mutex> lock(mutex_);
    staged_.gone = true;
}

void HeldRequest::set_unsent(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    staged_.unsent = bytes;
}

bool HeldRequest::take_want_writable() {
    std::lock_guard<std::mutex> lock(mutex_);
    bool wanted = staged_.want_writable;
    staged_.want_writable = false;
    staged_.unsent = 0;
    return wanted;
}

bool HeldRequest::start_on_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    staged_.pool_started = !staged_.gone;
    return staged_.pool_started;
}

void HeldRequest::reset() {
    hold = Hold::None;
    holder = nullptr;
    pinned_ = nullptr;
    pool_result = 0;
    release_seen = gave_up = orphaned = false;
    staged_.reset(); // no other thread knows the next request yet
}

void keep_after_exit(Exchange *exchange) {
    static std::mutex mutex;
    static auto *kept = new std::vector<Exchange *>; // reachable until exit, on purpose
    std::lock_guard<std::mutex> lock(mutex);
    kept->push_back(exchange);
}

} // namespace trellis
