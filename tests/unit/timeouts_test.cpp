#include "timeouts.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using trellis::TimeoutList;
using trellis::TimeoutNode;
using trellis::Timeouts;

namespace {

struct NamedNode : TimeoutNode {
    explicit NamedNode(std::string n) : name(std::move(n)) {}
    std::string name;
};

struct Expiry {
    std::string name;
    int list_index;
    uint64_t now;
    uint64_t deadline;
};

struct Recorder {
    uv_loop_t *loop = nullptr;
    std::vector<Expiry> expired;
    static void on_expire(TimeoutNode *node, int list_index, void *context) {
        auto *self = static_cast<Recorder *>(context);
        auto *named = static_cast<NamedNode *>(node);
        // The node must already be off its list when the callback runs.
        CHECK(node->list == nullptr);
        CHECK(node->prev == nullptr);
        CHECK(node->next == nullptr);
        self->expired.push_back({named->name, list_index, uv_now(self->loop), node->deadline});
    }
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const Expiry &e : expired)
            out.push_back(e.name);
        return out;
    }
};

// A loop with a Timeouts on it. The Timeouts' timer does not keep the loop alive, so run_for()
// holds it open with a timer of its own.
struct Fixture {
    uv_loop_t loop;
    Recorder recorder;
    Timeouts *timeouts;

    Fixture() {
        REQUIRE(uv_loop_init(&loop) == 0);
        recorder.loop = &loop;
        timeouts = new Timeouts(&loop, Recorder::on_expire, &recorder);
    }
    ~Fixture() {
        timeouts->close();
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(uv_loop_close(&loop) == 0);
        delete timeouts;
    }
    void run_for(uint64_t ms) {
        uv_timer_t stop;
        uv_timer_init(&loop, &stop);
        uv_timer_start(
            &stop, [](uv_timer_t *) {}, ms, 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_close(reinterpret_cast<uv_handle_t *>(&stop), nullptr);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    void advance_clock(unsigned ms) {
        uv_sleep(ms);
        uv_update_time(&loop);
    }
};

std::vector<std::string> order(const TimeoutList &list) {
    std::vector<std::string> out;
    for (TimeoutNode *n = list.front(); n; n = n->next)
        out.push_back(static_cast<NamedNode *>(n)->name);
    return out;
}

using Names = std::vector<std::string>;

} // namespace

TEST_CASE("timeouts: list bookkeeping") {
    TimeoutList list(100);
    NamedNode a("a"), b("b"), c("c");
    CHECK(list.empty());
    list.push_back(a, 1000);
    list.push_back(b, 1001);
    list.push_back(c, 1002);
    CHECK(order(list) == Names{"a", "b", "c"});
    CHECK(a.deadline == 1100);
    CHECK(c.deadline == 1102);
    CHECK(a.list == &list);

    SUBCASE("restarting moves a node to the tail with a new deadline") {
        list.push_back(a, 1050);
        CHECK(order(list) == Names{"b", "c", "a"});
        CHECK(a.deadline == 1150);
        list.push_back(c, 1060); // the tail moves to the tail: no change in order
        CHECK(order(list) == Names{"b", "a", "c"});
    }
    SUBCASE("removing the head, the middle and the tail") {
        TimeoutList::remove(b);
        CHECK(order(list) == Names{"a", "c"});
        CHECK(b.list == nullptr);
        TimeoutList::remove(b); // twice is harmless
        TimeoutList::remove(a);
        CHECK(order(list) == Names{"c"});
        TimeoutList::remove(c);
        CHECK(list.empty());
        CHECK(list.front() == nullptr);
        list.push_back(b, 0); // usable again after emptying
        CHECK(order(list) == Names{"b"});
    }
    SUBCASE("a shorter duration (a reload) keeps the list in deadline order") {
        list.set_duration(10);
        NamedNode d("d");
        list.push_back(d, 1003); // due at 1013, before a, b and c
        CHECK(d.deadline == 1013);
        CHECK(order(list) == Names{"d", "a", "b", "c"});
        list.set_duration(100);
        list.push_back(d, 1004); // a longer one goes to the tail again
        CHECK(order(list) == Names{"a", "b", "c", "d"});
    }
    SUBCASE("moving a node to another list") {
        TimeoutList other(5);
        other.push_back(b, 2000);
        CHECK(order(list) == Names{"a", "c"});
        CHECK(order(other) == Names{"b"});
        CHECK(b.list == &other);
        CHECK(b.deadline == 2005);
    }
}

TEST_CASE("timeouts: expiry on a real loop") {
    Fixture f;
    Timeouts &t = *f.timeouts;
    for (int i = 0; i < Timeouts::kLists; ++i)
        t.list(i).set_duration(1000); // long unless a subcase says otherwise
    NamedNode a("a"), b("b"), c("c"), d("d");

    SUBCASE("nodes expire in deadline order, across lists, with the right list index") {
        // Lists are scanned in index order when the timer fires, so a (list 2) would come out
        // before b and c (list 4) if the deadlines were not honoured.
        t.list(2).set_duration(60);
        t.list(4).set_duration(10);
        t.start(a, t.list(2)); // due at +60
        t.start(b, t.list(4)); // due at +10
        f.advance_clock(5);
        t.start(c, t.list(4)); // due at +15
        f.run_for(100);
        REQUIRE(f.recorder.expired.size() == 3);
        CHECK(f.recorder.names() == Names{"b", "c", "a"});
        CHECK(f.recorder.expired[0].list_index == 4);
        CHECK(f.recorder.expired[1].list_index == 4);
        CHECK(f.recorder.expired[2].list_index == 2);
        for (const Expiry &e : f.recorder.expired) {
            CAPTURE(e.name);
            CHECK(e.now >= e.deadline); // never early
        }
        CHECK(t.list(2).empty());
        CHECK(t.list(4).empty());
    }
    SUBCASE("a shorter duration (a reload) applies to what already waits, in order") {
        t.start(a, t.list(1)); // due at +1000
        f.advance_clock(5);
        t.start(b, t.list(1)); // due at +1005
        t.set_duration(1, 20);
        CHECK(a.deadline <= b.deadline);
        t.start(c, t.list(1)); // a restart after it is a plain append
        CHECK(order(t.list(1)) == Names{"a", "b", "c"});
        f.run_for(200);
        CHECK(f.recorder.names() == Names{"a", "b", "c"});
        t.set_duration(1, 5000); // longer: what waits keeps its deadline
        t.start(d, t.list(1));
        CHECK(d.deadline >= uv_now(&f.loop) + 5000);
        t.stop(d);
    }
    SUBCASE("nothing expires before its deadline") {
        t.list(0).set_duration(200);
        t.start(a, t.list(0));
        f.run_for(20);
        CHECK(f.recorder.expired.empty());
        CHECK(order(t.list(0)) == Names{"a"});
        t.stop(a);
    }
    SUBCASE("restarting moves a node to the tail and delays it") {
        t.list(1).set_duration(30);
        t.start(a, t.list(1));
        t.start(b, t.list(1));
        f.advance_clock(10);
        t.start(a, t.list(1)); // restart: now after b
        CHECK(order(t.list(1)) == Names{"b", "a"});
        f.run_for(70);
        CHECK(f.recorder.names() == Names{"b", "a"});
        REQUIRE(f.recorder.expired.size() == 2);
        CHECK(f.recorder.expired[1].deadline >= f.recorder.expired[0].deadline + 10);
    }
    SUBCASE("stop() removes a node so it never expires") {
        t.list(3).set_duration(10);
        t.start(a, t.list(3));
        t.start(b, t.list(3));
        t.start(c, t.list(3));
        t.stop(b);
        CHECK(order(t.list(3)) == Names{"a", "c"});
        CHECK(b.list == nullptr);
        f.run_for(40);
        CHECK(f.recorder.names() == Names{"a", "c"});
    }
    SUBCASE("moving a node from a short list to a long one") {
        t.list(0).set_duration(10);
        t.list(5).set_duration(300);
        t.start(a, t.list(0));
        t.start(d, t.list(0));
        t.start(a, t.list(5)); // the armed timer for +10 still fires, but only d is due
        f.run_for(40);
        CHECK(f.recorder.names() == Names{"d"});
        CHECK(order(t.list(5)) == Names{"a"});
        t.stop(a);
    }
    SUBCASE("the timer re-arms for later deadlines on the same list") {
        t.list(0).set_duration(10);
        t.start(a, t.list(0));
        f.advance_clock(15);
        // a is overdue now; b is due 10 ms later. One run must deliver both.
        t.start(b, t.list(0));
        f.run_for(60);
        CHECK(f.recorder.names() == Names{"a", "b"});
    }
}
