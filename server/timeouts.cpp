#include "timeouts.hpp"

#include <algorithm>

namespace trellis {

void TimeoutList::push_back(TimeoutNode &node, uint64_t now) {
    remove(node);
    if (tail_ && tail_->deadline > now + duration_ms_) {
        // The duration was shortened by a reload: nodes started before it are due later.
        insert(node, now + duration_ms_);
        return;
    }
    node.deadline = now + duration_ms_;
    node.list = this;
    node.prev = tail_;
    node.next = nullptr;
    if (tail_)
        tail_->next = &node;
    else
        head_ = &node;
    tail_ = &node;
}

void TimeoutList::insert(TimeoutNode &node, uint64_t deadline) {
    remove(node);
    node.deadline = deadline;
    node.list = this;
    TimeoutNode *after = tail_;
    while (after && after->deadline > deadline)
        after = after->prev;
    node.prev = after;
    node.next = after ? after->next : head_;
    if (node.next)
        node.next->prev = &node;
    else
        tail_ = &node;
    if (after)
        after->next = &node;
    else
        head_ = &node;
}

void TimeoutList::remove(TimeoutNode &node) {
    TimeoutList *list = node.list;
    if (!list)
        return;
    if (node.prev)
        node.prev->next = node.next;
    else
        list->head_ = node.next;
    if (node.next)
        node.next->prev = node.prev;
    else
        list->tail_ = node.prev;
    node.prev = node.next = nullptr;
    node.list = nullptr;
}

Timeouts::Timeouts(uv_loop_t *loop, ExpireFn on_expire, void *context)
    : loop_(loop), on_expire_(on_expire), context_(context) {
    uv_timer_init(loop, &timer_);
    timer_.data = this;
    // The timer must not keep the loop alive on its own: shutdown ends when connections do.
    uv_unref(reinterpret_cast<uv_handle_t *>(&timer_));
}

void Timeouts::start(TimeoutNode &node, TimeoutList &list) {
    list.push_back(node, uv_now(loop_));
    // Deadlines only move later, so the armed timer is early at worst (and re-arms itself);
    // it needs moving only when this deadline is sooner than the one armed.
    if (armed_for_ == 0 || node.deadline < armed_for_)
        arm(node.deadline);
}

void Timeouts::start_at(TimeoutNode &node, TimeoutList &list, uint64_t deadline) {
    list.insert(node, deadline);
    if (armed_for_ == 0 || node.deadline < armed_for_)
        arm(node.deadline);
}

void Timeouts::set_duration(int index, uint64_t duration_ms) {
    TimeoutList &list = lists_[index];
    bool shorter = duration_ms < list.duration_ms();
    list.set_duration(duration_ms);
    if (!shorter || list.empty())
        return;
    uint64_t latest = uv_now(loop_) + duration_ms;
    for (TimeoutNode *node = list.front(); node; node = node->next)
        node->deadline = std::min(node->deadline, latest);
    if (armed_for_ == 0 || list.front()->deadline < armed_for_)
        arm(list.front()->deadline);
}

void Timeouts::arm(uint64_t deadline) {
    uint64_t now = uv_now(loop_);
    armed_for_ = deadline;
    uv_timer_start(&timer_, uv_on_timer, deadline > now ? deadline - now : 0, 0);
}

void Timeouts::close() {
    uv_close(reinterpret_cast<uv_handle_t *>(&timer_), nullptr);
}

void Timeouts::uv_on_timer(uv_timer_t *timer) noexcept {
    static_cast<Timeouts *>(timer->data)->on_timer();
}

void Timeouts::on_timer() {
    armed_for_ = 0;
    uint64_t now = uv_now(loop_);
    for (int index = 0; index < kLists; ++index) {
        while (TimeoutNode *node = lists_[index].front()) {
            if (node->deadline > now)
                break;
            TimeoutList::remove(*node);
            on_expire_(node, index, context_);
        }
    }
    uint64_t next = 0;
    for (TimeoutList &list : lists_) {
        if (TimeoutNode *node = list.front())
            next = (next == 0 || node->deadline < next) ? node->deadline : next;
    }
    if (next != 0)
        arm(next);
}

} // namespace trellis
