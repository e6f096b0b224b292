// The threads that run blocking handlers (TRELLIS_BLOCKING plugins and "blocking": true routes).
// Apart from libuv's own pool on purpose: file system work shares that one, and a slow database
// call must not delay a sendfile open. The queue is bounded: when it is full the caller answers 503
// at once instead of letting waiting requests pile up without limit.
#pragma once

#include "metrics/metrics.hpp"

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

namespace trellis {

class ThreadPool {
  public:
    // A job is a function and its argument: queueing one never allocates.
    struct Job {
        void (*run)(void *arg);
        void *arg;
    };

    ThreadPool(unsigned threads, size_t queue_capacity);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    // Any thread. False when the queue is full (or the pool stopped): the job was not taken.
    bool try_submit(Job job);
    // Stops taking jobs, lets the queued and running ones finish, and joins the threads. Waits at
    // most `timeout_ms` for handlers that never return; returns false (and leaves those threads
    // detached) when some were still running.
    bool stop(unsigned timeout_ms);

    // True on a thread of some ThreadPool (trellis_host.thread_kind).
    static bool on_pool_thread();

    PoolStats stats() const {
        return {static_cast<unsigned>(threads_.size()), capacity_, &queued_, &busy_, &rejected_};
    }

  private:
    void run();

    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable idle_;
    std::vector<Job> ring_; // capacity_ slots
    size_t capacity_;
    size_t head_ = 0, count_ = 0;
    size_t running_threads_ = 0;
    bool stopping_ = false;
    Counter queued_, busy_, rejected_; // written under mutex_
    std::vector<std::thread> threads_;
};

} // namespace trellis
