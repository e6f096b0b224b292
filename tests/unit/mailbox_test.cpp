// Mailbox on a real libuv loop: posts from other threads reach the loop thread, bits OR-ed, one
// delivery per session per wake; close() delivers what is queued and then refuses.
#include "mailbox.hpp"

#include "mailbox.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

using trellis::Mailbox;
using trellis::MailSlot;

namespace {

struct Delivery {
    MailSlot *session;
    unsigned bits;
    std::thread::id thread;
    uint64_t iteration; // loop iteration it came in (counted by a prepare handle)
};

// What the DeliverFn (a plain function pointer) records; loop thread only.
struct Log {
    std::vector<Delivery> deliveries;
    uint64_t iteration = 0;
    Mailbox *mailbox = nullptr;
    int repost_left = 0; // deliveries that post their session again (kMailResumeBody)
};
Log g_log;

void record(MailSlot *session, unsigned bits) {
    g_log.deliveries.push_back({session, bits, std::this_thread::get_id(), g_log.iteration});
    if (g_log.repost_left > 0) {
        --g_log.repost_left;
        CHECK(g_log.mailbox->post(session, trellis::kMailResumeBody));
    }
}

size_t deliveries_to(const MailSlot *session) {
    size_t n = 0;
    for (const Delivery &d : g_log.deliveries)
        n += d.session == session;
    return n;
}

// A loop with a Mailbox delivering to record(). The mailbox's async handle does not keep the loop
// alive (uv_unref), so run_until() holds it open with a timer of its own.
struct Fixture {
    uv_loop_t loop;
    uv_prepare_t prepare;
    std::unique_ptr<Mailbox> mailbox;
    bool closed = false;

    Fixture() {
        g_log = Log{};
        REQUIRE(uv_loop_init(&loop) == 0);
        uv_prepare_init(&loop, &prepare);
        uv_prepare_start(&prepare, [](uv_prepare_t *) { ++g_log.iteration; });
        uv_unref(reinterpret_cast<uv_handle_t *>(&prepare));
        mailbox = std::make_unique<Mailbox>(&loop, record);
        g_log.mailbox = mailbox.get();
    }
    Fixture(const Fixture &) = delete;
    ~Fixture() {
        if (!closed)
            mailbox->close();
        uv_close(reinterpret_cast<uv_handle_t *>(&prepare), nullptr);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(uv_loop_close(&loop) == 0);
        g_log.mailbox = nullptr;
    }

    // Runs the loop until `done` holds (checked every millisecond) or 5 s have passed.
    template <class Pred> bool run_until(Pred done) {
        struct Wait {
            Pred *done;
            uint64_t deadline;
            bool met = false;
        } wait{&done, uv_now(&loop) + 5000};
        uv_timer_t timer;
        uv_timer_init(&loop, &timer);
        timer.data = &wait;
        uv_timer_start(
            &timer,
            [](uv_timer_t *t) {
                auto *w = static_cast<Wait *>(t->data);
                w->met = (*w->done)();
                if (w->met || uv_now(t->loop) >= w->deadline)
                    uv_stop(t->loop);
            },
            1, 1);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_close(reinterpret_cast<uv_handle_t *>(&timer), nullptr);
        uv_run(&loop, UV_RUN_NOWAIT); // the timer's close
        return wait.met;
    }
    void run_for(uint64_t ms) {
        uint64_t until = uv_now(&loop) + ms;
        run_until([&] { return uv_now(&loop) >= until; });
    }
};

MailSlot *make_session(std::vector<std::unique_ptr<MailSlot>> &owner) {
    owner.push_back(std::make_unique<MailSlot>(nullptr));
    return owner.back().get();
}

} // namespace

TEST_CASE("mailbox: posts from another thread are delivered on the loop thread, bits OR-ed") {
    Fixture f;
    std::vector<std::unique_ptr<MailSlot>> sessions;
    MailSlot *a = make_session(sessions);
    MailSlot *b = make_session(sessions);

    bool posted[4] = {};
    std::thread poster([&] {
        posted[0] = f.mailbox->post(a, trellis::kMailStaged);
        posted[1] = f.mailbox->post(b, trellis::kMailPoolDone);
        posted[2] = f.mailbox->post(a, trellis::kMailReleased);
        posted[3] = f.mailbox->post(a, trellis::kMailStaged);
    });
    poster.join();
    for (bool ok : posted)
        CHECK(ok);
    // Queued once each, the marks collected on the session.
    CHECK(a->queued.load());
    CHECK(a->bits == (trellis::kMailStaged | trellis::kMailReleased));
    CHECK(b->bits == trellis::kMailPoolDone);
    CHECK(g_log.deliveries.empty()); // nothing happens off the loop

    REQUIRE(f.run_until([] { return g_log.deliveries.size() >= 2; }));
    f.run_for(20); // nothing more comes
    REQUIRE(g_log.deliveries.size() == 2);
    CHECK(g_log.deliveries[0].session == a); // in posting order
    CHECK(g_log.deliveries[0].bits == (trellis::kMailStaged | trellis::kMailReleased));
    CHECK(g_log.deliveries[1].session == b);
    CHECK(g_log.deliveries[1].bits == trellis::kMailPoolDone);
    for (const Delivery &d : g_log.deliveries)
        CHECK(d.thread == std::this_thread::get_id());
    CHECK(g_log.deliveries[0].iteration == g_log.deliveries[1].iteration); // one wake
    // Delivered sessions are clean for the next post.
    CHECK_FALSE(a->queued.load());
    CHECK(a->bits == 0u);
    CHECK_FALSE(b->queued.load());
    CHECK(b->bits == 0u);

    SUBCASE("a later post is a new delivery") {
        std::thread([&] { CHECK(f.mailbox->post(b, trellis::kMailResumeBody)); }).join();
        REQUIRE(f.run_until([] { return g_log.deliveries.size() >= 3; }));
        CHECK(g_log.deliveries[2].session == b);
        CHECK(g_log.deliveries[2].bits == trellis::kMailResumeBody);
        CHECK(g_log.deliveries[2].iteration > g_log.deliveries[1].iteration);
    }
}

TEST_CASE("mailbox: posts racing the loop give one delivery per session per wake") {
    Fixture f;
    std::vector<std::unique_ptr<MailSlot>> sessions;
    MailSlot *a = make_session(sessions);
    MailSlot *b = make_session(sessions);
    constexpr int kPosts = 2000;
    const unsigned kBits[] = {trellis::kMailStaged, trellis::kMailReleased, trellis::kMailPoolDone,
                              trellis::kMailResumeBody};

    std::atomic<bool> done{false};
    int refused = 0; // read after join
    std::thread poster([&] {
        for (int i = 0; i < kPosts; ++i) {
            refused += !f.mailbox->post(a, kBits[i % 4]);
            if (i % 7 == 0)
                refused += !f.mailbox->post(b, trellis::kMailStaged);
            if (i % 64 == 0)
                std::this_thread::yield();
        }
        done = true;
    });
    // Until the poster is done and every mark has come through.
    bool all = f.run_until([&] { return done.load() && !a->queued.load() && !b->queued.load(); });
    poster.join();
    CHECK(all);
    CHECK(refused == 0);

    unsigned a_bits = 0;
    size_t a_count = 0;
    for (size_t i = 0; i < g_log.deliveries.size(); ++i) {
        const Delivery &d = g_log.deliveries[i];
        CHECK(d.thread == std::this_thread::get_id());
        CHECK(d.bits != 0u);
        if (d.session == a) {
            a_bits |= d.bits;
            ++a_count;
        } else {
            CHECK(d.session == b);
            CHECK(d.bits == trellis::kMailStaged);
        }
        // A session comes at most once per wake.
        for (size_t j = 0; j < i; ++j)
            if (g_log.deliveries[j].iteration == d.iteration)
                CHECK(g_log.deliveries[j].session != d.session);
    }
    CHECK(a_bits == 15u);
    CHECK(a_count >= 1u);
    CHECK(a_count <= static_cast<size_t>(kPosts));
    CHECK(deliveries_to(b) >= 1u);
    CHECK(a->bits == 0u);
}

TEST_CASE("mailbox: a session posted again while it is delivered comes in a later wake") {
    Fixture f;
    std::vector<std::unique_ptr<MailSlot>> sessions;
    MailSlot *a = make_session(sessions);
    g_log.repost_left = 1;
    CHECK(f.mailbox->post(a, trellis::kMailStaged));
    REQUIRE(f.run_until([] { return g_log.deliveries.size() >= 2; }));
    f.run_for(20);
    REQUIRE(g_log.deliveries.size() == 2);
    CHECK(g_log.deliveries[0].bits == trellis::kMailStaged);
    CHECK(g_log.deliveries[1].bits == trellis::kMailResumeBody);
    CHECK(g_log.deliveries[1].iteration > g_log.deliveries[0].iteration);
    CHECK_FALSE(a->queued.load());
}

TEST_CASE("mailbox: forget() drops a session's queued mail") {
    Fixture f;
    std::vector<std::unique_ptr<MailSlot>> sessions;
    MailSlot *a = make_session(sessions);
    MailSlot *b = make_session(sessions);
    std::thread([&] {
        CHECK(f.mailbox->post(a, trellis::kMailReleased));
        CHECK(f.mailbox->post(b, trellis::kMailStaged));
    }).join();
    f.mailbox->forget(a);
    CHECK_FALSE(a->queued.load());
    CHECK(a->bits == 0u);
    REQUIRE(f.run_until([] { return !g_log.deliveries.empty(); }));
    f.run_for(20);
    REQUIRE(g_log.deliveries.size() == 1);
    CHECK(g_log.deliveries[0].session == b);
    CHECK(g_log.deliveries[0].bits == trellis::kMailStaged);
    // The forgotten session can be posted again.
    CHECK(f.mailbox->post(a, trellis::kMailStaged));
    REQUIRE(f.run_until([] { return g_log.deliveries.size() >= 2; }));
    CHECK(g_log.deliveries[1].session == a);
    CHECK(g_log.deliveries[1].bits == trellis::kMailStaged);
}

TEST_CASE("mailbox: close() delivers what is queued, then refuses posts") {
    Fixture f;
    std::vector<std::unique_ptr<MailSlot>> sessions;
    MailSlot *a = make_session(sessions);
    MailSlot *b = make_session(sessions);
    std::thread([&] {
        CHECK(f.mailbox->post(a, trellis::kMailPoolDone));
        CHECK(f.mailbox->post(a, trellis::kMailReleased));
    }).join();
    CHECK(g_log.deliveries.empty());

    f.mailbox->close(); // delivers now, without the loop running
    f.closed = true;
    REQUIRE(g_log.deliveries.size() == 1);
    CHECK(g_log.deliveries[0].session == a);
    CHECK(g_log.deliveries[0].bits == (trellis::kMailPoolDone | trellis::kMailReleased));
    CHECK(g_log.deliveries[0].thread == std::this_thread::get_id());

    // Refused from any thread, and the session is left untouched.
    CHECK_FALSE(f.mailbox->post(b, trellis::kMailStaged));
    bool from_thread = true;
    std::thread([&] { from_thread = f.mailbox->post(a, trellis::kMailStaged); }).join();
    CHECK_FALSE(from_thread);
    CHECK(b->bits == 0u);
    CHECK_FALSE(b->queued.load());
    CHECK(a->bits == 0u);
    CHECK_FALSE(a->queued.load());
    f.run_for(20);
    CHECK(g_log.deliveries.size() == 1);

    SUBCASE("closing twice is harmless") {
        f.mailbox->close();
        CHECK(g_log.deliveries.size() == 1);
    }
}
