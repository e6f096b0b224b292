// ThreadPool: jobs run, a full queue refuses, stop() drains what is queued, the stats counters.
//
// Every test stops its pool with a generous timeout before the pool is destroyed: a thread the pool
// detached still uses the pool's members until it leaves run().
#include "thread_pool.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

using trellis::ThreadPool;

namespace {

using namespace std::chrono_literals;

// A gate jobs wait at until the test opens it.
struct Gate {
    std::mutex mutex;
    std::condition_variable cv;
    bool open = false;
    std::atomic<int> waiting{0};

    void wait() {
        std::unique_lock<std::mutex> lock(mutex);
        ++waiting;
        cv.wait(lock, [this] { return open; });
        --waiting;
    }
    void release() {
        {
            std::lock_guard<std::mutex> lock(mutex);
            open = true;
        }
        cv.notify_all();
    }
};

void count_job(void *arg) {
    static_cast<std::atomic<int> *>(arg)->fetch_add(1);
}

void gate_job(void *arg) {
    static_cast<Gate *>(arg)->wait();
}

void noop_job(void *) {}

ThreadPool::Job counting(std::atomic<int> &counter) {
    return {count_job, &counter};
}

ThreadPool::Job gated(Gate &gate) {
    return {gate_job, &gate};
}

// Polls `done` for up to 5 s; true once it holds.
template <class Pred> bool eventually(Pred done) {
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

} // namespace

TEST_CASE("thread pool: jobs run on the pool's threads") {
    ThreadPool pool(3, 64);
    std::atomic<int> ran{0};
    for (int i = 0; i < 50; ++i)
        REQUIRE(pool.try_submit(counting(ran)));
    CHECK(eventually([&] { return ran.load() == 50; }));
    CHECK(pool.stop(5000));
    CHECK(ran.load() == 50);
    CHECK(pool.stats().queued->get() == 0u);
    CHECK(pool.stats().busy->get() == 0u);
    CHECK(pool.stats().rejected->get() == 0u);
}

TEST_CASE("thread pool: a job runs off the submitting thread with its argument") {
    struct Seen {
        std::thread::id thread;
        int value = 0;
    } seen;
    ThreadPool pool(1, 1);
    REQUIRE(pool.try_submit({[](void *arg) {
                                 auto *s = static_cast<Seen *>(arg);
                                 s->thread = std::this_thread::get_id();
                                 s->value = 42;
                             },
                             &seen}));
    CHECK(pool.stop(5000));
    CHECK(seen.value == 42);
    CHECK(seen.thread != std::thread::id());
    CHECK(seen.thread != std::this_thread::get_id());
}

TEST_CASE("thread pool: a full queue refuses jobs and counts them") {
    ThreadPool pool(1, 2);
    Gate gate;
    std::atomic<int> ran{0};
    // The only thread takes the gated job off the queue and waits in it.
    REQUIRE(pool.try_submit(gated(gate)));
    REQUIRE(eventually([&] { return gate.waiting.load() == 1; }));
    trellis::PoolStats stats = pool.stats();
    CHECK(stats.threads == 1u);
    CHECK(stats.queue == 2u);
    CHECK(stats.busy->get() == 1u);
    CHECK(stats.queued->get() == 0u);

    CHECK(pool.try_submit(counting(ran)));
    CHECK(pool.try_submit(counting(ran)));
    CHECK(stats.queued->get() == 2u);
    CHECK(stats.rejected->get() == 0u);
    CHECK_FALSE(pool.try_submit(counting(ran)));
    CHECK_FALSE(pool.try_submit(counting(ran)));
    CHECK_FALSE(pool.try_submit(counting(ran)));
    CHECK(stats.rejected->get() == 3u);
    CHECK(stats.queued->get() == 2u); // the refused ones did not take a slot
    CHECK(ran.load() == 0);

    gate.release();
    CHECK(eventually([&] { return ran.load() == 2; }));
    CHECK(eventually([&] { return stats.busy->get() == 0u; }));
    CHECK(stats.queued->get() == 0u);

    SUBCASE("the freed slots take jobs again") {
        CHECK(pool.try_submit(counting(ran)));
        CHECK(pool.try_submit(counting(ran)));
        CHECK(pool.stop(5000));
        CHECK(ran.load() == 4);
        CHECK(stats.rejected->get() == 3u);
    }
    SUBCASE("a stopped pool refuses and counts the refusal") {
        CHECK(pool.stop(5000));
        CHECK_FALSE(pool.try_submit(counting(ran)));
        CHECK(stats.rejected->get() == 4u);
        CHECK(ran.load() == 2);
    }
}

TEST_CASE("thread pool: the ring wraps around") {
    // Capacity 3 and 1 thread held at a gate: fill, drain, fill again, many times over, so that the
    // ring's head passes its end repeatedly; every job must run exactly once.
    ThreadPool pool(1, 3);
    std::atomic<int> ran{0};
    int submitted = 0;
    for (int round = 0; round < 20; ++round) {
        Gate gate;
        REQUIRE(pool.try_submit(gated(gate)));
        REQUIRE(eventually([&] { return gate.waiting.load() == 1; }));
        for (int i = 0; i < 3; ++i, ++submitted)
            REQUIRE(pool.try_submit(counting(ran)));
        CHECK_FALSE(pool.try_submit(counting(ran)));
        gate.release();
        REQUIRE(eventually([&] { return ran.load() == submitted && pool.stats().busy->get() == 0; }));
    }
    CHECK(pool.stop(5000));
    CHECK(ran.load() == 60);
    CHECK(pool.stats().rejected->get() == 20u);
}

TEST_CASE("thread pool: stop() runs the queued jobs before it joins") {
    ThreadPool pool(1, 100000); // room enough that only stop() makes try_submit refuse below
    Gate gate;
    std::atomic<int> ran{0};
    REQUIRE(pool.try_submit(gated(gate)));
    REQUIRE(eventually([&] { return gate.waiting.load() == 1; }));
    for (int i = 0; i < 5; ++i)
        REQUIRE(pool.try_submit(counting(ran)));
    CHECK(pool.stats().queued->get() == 5u);

    std::atomic<bool> stopped{false};
    bool stop_result = false;
    std::thread stopper([&] {
        stop_result = pool.stop(5000);
        stopped = true;
    });
    // Once stop() has begun the pool refuses jobs; until then a job it takes is one more to run.
    int extra = 0;
    REQUIRE(eventually([&] {
        if (!pool.try_submit(counting(ran)))
            return true;
        ++extra;
        return false;
    }));
    CHECK(ran.load() == 0); // everything still waits behind the gate
    CHECK_FALSE(stopped.load());
    gate.release();
    stopper.join();
    CHECK(stop_result);
    CHECK(ran.load() == 5 + extra);
    CHECK(pool.stats().queued->get() == 0u);
    CHECK(pool.stats().busy->get() == 0u);
}

TEST_CASE("thread pool: stop() gives up on a handler that never returns") {
    ThreadPool pool(2, 4);
    Gate gate;
    REQUIRE(pool.try_submit(gated(gate)));
    REQUIRE(eventually([&] { return gate.waiting.load() == 1; }));
    auto before = std::chrono::steady_clock::now();
    CHECK_FALSE(pool.stop(100));
    auto waited = std::chrono::steady_clock::now() - before;
    CHECK(waited >= 100ms);
    CHECK(waited < 5s);
    CHECK(pool.stats().busy->get() == 1u);
    CHECK_FALSE(pool.try_submit({noop_job, nullptr}));

    // The detached thread still runs in the pool: let it finish before the pool goes. A second stop()
    // has no threads to join but waits for every thread to have left run().
    gate.release();
    CHECK(pool.stop(5000));
    CHECK(pool.stats().busy->get() == 0u);
}

TEST_CASE("thread pool: a queue capacity of 0 is taken as 1") {
    ThreadPool pool(1, 0);
    CHECK(pool.stats().queue == 1u);
    Gate gate;
    std::atomic<int> ran{0};
    REQUIRE(pool.try_submit(gated(gate)));
    REQUIRE(eventually([&] { return gate.waiting.load() == 1; }));
    CHECK(pool.try_submit(counting(ran)));
    CHECK_FALSE(pool.try_submit(counting(ran)));
    gate.release();
    CHECK(pool.stop(5000));
    CHECK(ran.load() == 1);
}

// stop()'s timeout is for handlers, not for idle threads that have yet to wake up and leave: with
// "limits.shutdown_timeout_ms": 0 an idle pool must still be joined, not detached.
TEST_CASE("thread pool: stop(0) of an idle pool joins its threads") {
    int detached = 0;
    for (int i = 0; i < 50; ++i) {
        ThreadPool pool(4, 4);
        std::this_thread::sleep_for(1ms); // the threads are waiting for work
        if (!pool.stop(0)) {
            ++detached;
            CHECK(pool.stop(5000)); // wait until the detached threads are out of the pool
        }
    }
    CHECK(detached == 0);
}
