// Per-worker timeouts without a timer per connection. Every timeout of one kind has the same
// duration, so a FIFO list kept in arrival order is also sorted by deadline: (re)starting a
// timeout is an O(1) move to the tail, and one uv_timer per worker wakes up for the earliest head.
// 10,000 idle connections cost 32 bytes each here and no wake-ups until one is due.
#pragma once

#include <cstdint>
#include <uv.h>

namespace trellis {

class TimeoutList;

// Embedded in whatever can time out (a Connection inherits it).
struct TimeoutNode {
    TimeoutNode *prev = nullptr;
    TimeoutNode *next = nullptr;
    TimeoutList *list = nullptr;
    uint64_t deadline = 0;
};

class TimeoutList {
  public:
    explicit TimeoutList(uint64_t duration_ms = 0) : duration_ms_(duration_ms) {}
    uint64_t duration_ms() const { return duration_ms_; }
    // A reload may change it while nodes wait: they keep their deadlines, and push_back still
    // keeps the list in deadline order.
    void set_duration(uint64_t duration_ms) { duration_ms_ = duration_ms; }
    TimeoutNode *front() const { return head_; }
    bool empty() const { return head_ == nullptr; }

    void push_back(TimeoutNode &node, uint64_t now);
    // Inserts with a deadline of the caller's choosing, kept in order by walking back from the tail
    // (cheap when, as usual, the deadline is among the latest).
    void insert(TimeoutNode &node, uint64_t deadline);
    static void remove(TimeoutNode &node);

  private:
    uint64_t duration_ms_;
    TimeoutNode *head_ = nullptr;
    TimeoutNode *tail_ = nullptr;
};

class Timeouts {
  public:
    using ExpireFn = void (*)(TimeoutNode *node, int list_index, void *context);
    static constexpr int kLists = 6;

    // `on_expire` is called for each node whose deadline passed, after it was removed from list
    // number `list_index`.
    Timeouts(uv_loop_t *loop, ExpireFn on_expire, void *context);
    Timeouts(const Timeouts &) = delete;
    Timeouts &operator=(const Timeouts &) = delete;

    TimeoutList &list(int index) { return lists_[index]; }
    // A new duration for list `index` (a reload). A shorter one also applies to what waits on the
    // list: no deadline is later than now plus the new duration, which keeps the list in order
    // (so restarts stay O(1)) and the timer armed early enough.
    void set_duration(int index, uint64_t duration_ms);
    // Starts (or restarts) `node` on `list`.
    void start(TimeoutNode &node, TimeoutList &list);
    // Starts `node` on `list` with an explicit deadline (uv_now-based milliseconds).
    void start_at(TimeoutNode &node, TimeoutList &list, uint64_t deadline);
    uint64_t now() const { return uv_now(loop_); }
    void stop(TimeoutNode &node) { TimeoutList::remove(node); }
    // Closes the timer; the owner must call this before the loop closes.
    void close();

  private:
    void arm(uint64_t deadline);
    void on_timer();
    static void uv_on_timer(uv_timer_t *timer) noexcept;

    uv_loop_t *loop_;
    uv_timer_t timer_;
    ExpireFn on_expire_;
    void *context_;
    uint64_t armed_for_ = 0; // 0 = not armed
    TimeoutList lists_[kLists];
};

} // namespace trellis
