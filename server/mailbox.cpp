#include "mailbox.hpp"

#include "connection.hpp"

namespace trellis {

Mailbox::Mailbox(uv_loop_t *loop, DeliverFn deliver) : deliver_(deliver) {
    uv_async_init(loop, &async_, on_async);
    async_.data = this;
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
    for (ActiveSession *session : taking_) {
        unsigned bits;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            bits = session->mail_bits;
            session->mail_bits = 0;
            session->mail_queued = false;
        }
        deliver_(session, bits);
    }
    taking_.clear();
}

void Mailbox::close() {
    deliver_all();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
    }
    deliver_all(); // what arrived between the two
    if (!uv_is_closing(reinterpret_cast<uv_handle_t *>(&async_)))
        uv_close(reinterpret_cast<uv_handle_t *>(&async_), nullptr);
}

} // namespace trellis
