#include "thread_pool.hpp"

#include <chrono>
#include <pthread.h>

namespace trellis {
namespace {
thread_local bool tls_pool_thread = false;
} // namespace

bool ThreadPool::on_pool_thread() {
    return tls_pool_thread;
}

ThreadPool::ThreadPool(unsigned threads, size_t queue_capacity)
    : ring_(queue_capacity ? queue_capacity : 1), capacity_(queue_capacity ? queue_capacity : 1) {
    running_threads_ = threads;
    for (unsigned i = 0; i < threads; ++i) {
        threads_.emplace_back([this] { run(); });
        pthread_setname_np(threads_.back().native_handle(), "trellis-pool");
    }
}

ThreadPool::~ThreadPool() {
    stop(10000);
}

bool ThreadPool::try_submit(Job job) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopping_ || count_ == capacity_) {
            rejected_.add();
            return false;
        }
        ring_[(head_ + count_) % capacity_] = job;
        ++count_;
        queued_.add();
    }
    wake_.notify_one();
    return true;
}

void ThreadPool::run() {
    tls_pool_thread = true;
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
        wake_.wait(lock, [this] { return stopping_ || count_ > 0; });
        if (count_ == 0)
            break; // stopping, and nothing left to run
        Job job = ring_[head_];
        head_ = (head_ + 1) % capacity_;
        --count_;
        queued_.sub();
        busy_.add();
        lock.unlock();
        job.run(job.arg);
        lock.lock();
        busy_.sub();
        if (stopping_)
            idle_.notify_all();
    }
    --running_threads_;
    idle_.notify_all();
}

bool ThreadPool::stop(unsigned timeout_ms) {
    std::unique_lock<std::mutex> lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
    // The timeout is for handlers that run (or wait to): idle threads leave at once and are joined.
    bool all_done = idle_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                   [this] { return count_ == 0 && busy_.get() == 0; });
    lock.unlock();
    for (std::thread &thread : threads_) {
        if (!thread.joinable())
            continue;
        if (all_done)
            thread.join();
        else
            thread.detach(); // a handler that never returns must not hang the exit
    }
    threads_.clear();
    return all_done;
}

} // namespace trellis
