#include "mailbox.hpp"

#include <algorithm>

namespace trellis {

Mailbox::Mailbox(uv_loop_t *loop, DeliverFn deliver) : deliver_(deliver) {
    uv_async_init(loop, &async_, on_async);
    async_.data = this;
    // Mail alone does not keep a loop running: a worker's loop lives for its listeners and
    // connections, which are what held requests belong to.
    uv_unref(reinterpret_cast<uv_handle_t *>(&async_));
}

bool Mailbox::post(MailSlot *slot, unsigned bits) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_)
        return false;
    slot->bits |= bits;
    if (!slot->queued) {
        slot->queued = true;
        queue_.push_back(slot);
        uv_async_send(&async_);
    }
    return true;
}

void Mailbox::on_async(uv_async_t *async) noexcept {
    static_cast<Mailbox *>(async->data)->deliver_all();
}

void Mailbox::deliver_all() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        taking_.swap(queue_);
    }
    delivering_ = true;
    for (size_t i = 0; i < taking_.size(); ++i) {
        MailSlot *slot = taking_[i];
        if (!slot)
            continue; // forgotten while delivering
        unsigned bits;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            bits = slot->bits;
            slot->bits = 0;
            slot->queued = false;
        }
        deliver_(slot, bits);
    }
    delivering_ = false;
    taking_.clear();
}

void Mailbox::forget(MailSlot *slot) {
    if (!slot->queued.load(std::memory_order_acquire) && !delivering_)
        return;
    std::lock_guard<std::mutex> lock(mutex_);
    std::erase(queue_, slot);
    for (MailSlot *&pending : taking_)
        if (pending == slot)
            pending = nullptr;
    slot->bits = 0;
    slot->queued = false;
}

void Mailbox::close() {
    // May be called from inside a delivery (the last connection closing ends the worker's drain):
    // the delivery under way then takes what is queued.
    if (!delivering_)
        deliver_all();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
    }
    if (!delivering_)
        deliver_all(); // what arrived between the two
    if (!uv_is_closing(reinterpret_cast<uv_handle_t *>(&async_)))
        uv_close(reinterpret_cast<uv_handle_t *>(&async_), nullptr);
}

} // namespace trellis
