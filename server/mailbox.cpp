#include "mailbox.hpp"

#include "connection.hpp"

namespace trellis {

Mailbox::Mailbox(uv_loop_t *loop, DeliverFn deliver) : deliver_(deliver) {
    uv_async_init(loop, &async_, on_async);
    async_.data = this;
    // Mail alone does not keep a loop running: a worker's loop lives for its listeners and
    // connections, which are what held requests belong to.
    uv_unref(reinterpret_cast<uv_handle_t *>(&async_));
}

bool Mailbox::post(ActiveSession *session, unsigned bits) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_)
        return false;
    session->mail_bits |= bits;
    if (!session->mail_queued) {
        session->mail_queued = true;
        queue_.push_back(session);
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
        ActiveSession *session = taking_[i];
        if (!session)
            continue; // forgotten while delivering
        unsigned bits;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            bits = session->mail_bits;
            session->mail_bits = 0;
            session->mail_queued = false;
        }
        deliver_(session, bits);
    }
    delivering_ = false;
    taking_.clear();
}

void Mailbox::forget(ActiveSession *session) {
    if (!session->mail_queued.load(std::memory_order_acquire) && !delivering_)
        return;
    std::lock_guard<std::mutex> lock(mutex_);
    std::erase(queue_, session);
    for (ActiveSession *&pending : taking_)
        if (pending == session)
            pending = nullptr;
    session->mail_bits = 0;
    session->mail_queued = false;
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
