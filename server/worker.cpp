#include "worker.hpp"

#include "generation.hpp"
#include "http1/connection.hpp"
#include "listener.hpp"
#include "log/log.hpp"
#include "mailbox.hpp"
#include "plugin/loader.hpp"
#include "transport/factory.hpp"

#include <algorithm>
#include <cstring>

namespace trellis {
namespace {

// How long a drain leaves an idle keep-alive connection open after its last answer (at most half
// of limits.shutdown_timeout_ms): a client's next request may be on its way.
constexpr uint64_t kDrainIdleGraceMs = 1000;

} // namespace

Worker::Worker(unsigned index, const Config &config, std::shared_ptr<const Generation> generation,
               const WorkerShared &shared)
    : index_(index), shutdown_timeout_ms_(config.limits.shutdown_timeout_ms), shared_(shared) {
    uv_loop_init(&loop_);
    context_ = std::make_unique<WorkerContext>(&loop_, index, config.limits, shared.access_log,
                                               shared.open_connections,
                                               shared.metrics ? &shared.metrics->worker(index) : nullptr);
    context_->metrics = shared.metrics;
    context_->thread_pool = shared.thread_pool;
    context_->on_generation_idle = uv_on_generation_idle;
    context_->on_generation_idle_data = this;
    generations_.push_back(std::make_unique<WorkerGeneration>());
    generations_.back()->generation = std::move(generation);
    context_->generation = generations_.back().get();
    context_->router = generations_.back()->generation->router.get();
    context_->on_drained = [](void *data) { static_cast<Worker *>(data)->on_drained(); };
    context_->on_drain_progress = [](void *data) { static_cast<Worker *>(data)->check_drain(); };
    context_->on_drained_data = this;
    uv_async_init(&loop_, &stop_async_, uv_on_stop);
    stop_async_.data = this;
    uv_async_init(&loop_, &post_async_, uv_on_post);
    post_async_.data = this;
    uv_timer_init(&loop_, &shutdown_timer_);
    shutdown_timer_.data = this;
    uv_timer_init(&loop_, &drain_grace_timer_);
    drain_grace_timer_.data = this;
}

Worker::~Worker() {
    if (started_) {
        if (thread_.joinable())
            thread_.join();
        return; // run() closed the loop
    }
    // Never started (the start failed after this worker was made): close what it opened so the
    // loop closes as cleanly as a worker that ran.
    for (Listener *listener : listeners_)
        listener->close();
    close_loop();
}

int Worker::close_loop() {
    // Every handle is closed through uv_close; the loop must then close cleanly.
    context_->mailbox->close();
    context_->access_log.close();
    context_->timeouts.close();
    context_->poller.close();
    uv_walk(
        &loop_,
        [](uv_handle_t *handle, void *) {
            if (!uv_is_closing(handle))
                uv_close(handle, nullptr);
        },
        nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    return uv_loop_close(&loop_);
}

void Worker::listen(const ListenerSettings &settings, int fd) {
    std::shared_ptr<const WorkerTls> tls;
    if (settings.tls)
        tls = make_worker_tls(settings.tls, index_);
    listeners_.push_back(Listener::watch_socket(*context_, settings, std::move(tls), fd));
}

void Worker::start(void (*on_started)(void *), void (*on_exit)(void *), void *data) {
    on_started_ = on_started;
    on_exit_ = on_exit;
    on_exit_data_ = data;
    started_ = true;
    thread_ = std::thread([this] { run(); });
}

void Worker::stop() {
    // A worker that stopped on its own (a plugin failed to start) has closed its loop: a wake-up
    // sent then would write to a descriptor that is gone, or by now another file's.
    std::lock_guard<std::mutex> lock(stop_mutex_);
    if (stop_open_)
        uv_async_send(&stop_async_);
}

void Worker::post(std::function<void()> task) {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    if (!accepting_posts_)
        return;
    posted_.push_back(std::move(task));
    uv_async_send(&post_async_);
}

void Worker::uv_on_post(uv_async_t *async) noexcept {
    auto *self = static_cast<Worker *>(async->data);
    // uv_async_send coalesces: drain everything queued so far.
    std::vector<std::function<void()>> tasks;
    {
        std::lock_guard<std::mutex> lock(self->posted_mutex_);
        tasks.swap(self->posted_);
    }
    for (auto &task : tasks)
        task();
}

void Worker::replace_tls(const ListenerSettings &settings, std::shared_ptr<const WorkerTls> tls) {
    post([this, &settings, tls = std::move(tls)]() mutable {
        for (Listener *listener : listeners_) // none left once stopping
            if (&listener->settings() == &settings)
                listener->set_tls(tls);
    });
}

void Worker::adopt(std::shared_ptr<const Generation> generation) {
    post([this, generation = std::move(generation)]() mutable { switch_to(std::move(generation)); });
}

void Worker::start_plugins(const Generation &generation, const Generation *previous) {
    for (const auto &instance : generation.plugins.instances()) {
        PluginInstance &p = *instance;
        if (previous && previous->plugins.contains(&p))
            continue; // started with an earlier generation
        if (p.has(offsetof(trellis_plugin, on_worker_start) + sizeof(void *)) && p.plugin->on_worker_start &&
            p.plugin->on_worker_start(p.instance, index_) != TRELLIS_OK) {
            SERVER_LOG_ERROR("plugin \"%s\": on_worker_start failed on worker %u", p.name().c_str(), index_);
            if (!previous)
                started_ok_ = false;
        }
    }
}

void Worker::switch_to(std::shared_ptr<const Generation> generation) {
    const Generation *previous = generations_.back()->generation.get();
    start_plugins(*generation, previous);
    generations_.push_back(std::make_unique<WorkerGeneration>());
    generations_.back()->generation = std::move(generation);
    context_->generation = generations_.back().get();
    context_->router = generations_.back()->generation->router.get();
    context_->apply_limits(generations_.back()->generation->limits);
    shutdown_timeout_ms_ = generations_.back()->generation->limits.shutdown_timeout_ms;
    // Every generation before the new one may go once no held request runs on it.
    for (size_t i = generations_.size() - 1; i-- > 0;)
        retire_if_idle(generations_[i].get());
    // Long-lived HTTP/2 connections are told to reconnect (GOAWAY), their open streams finishing.
    for (ClientConnection *connection : all_connections())
        connection->begin_drain(true);
}

std::vector<ClientConnection *> Worker::all_connections() const {
    // Every connection sits on exactly one timeout list; collected first, since closing unlinks.
    std::vector<ClientConnection *> all;
    for (int i = 0; i < Timeouts::kLists; ++i)
        for (TimeoutNode *node = context_->timeouts.list(i).front(); node; node = node->next)
            all.push_back(static_cast<ClientConnection *>(node));
    return all;
}

void Worker::uv_on_generation_idle(WorkerGeneration *generation, void *data) {
    static_cast<Worker *>(data)->retire_if_idle(generation);
}

void Worker::retire_if_idle(WorkerGeneration *generation) {
    if (generation->held != 0 || generation == generations_.back().get())
        return;
    // Instances this worker no longer uses hear on_worker_stop here, on its thread.
    const Generation &current = *generations_.back()->generation;
    for (const auto &instance : generation->generation->plugins.instances()) {
        PluginInstance &p = *instance;
        bool still_used = current.plugins.contains(&p);
        for (const auto &other : generations_)
            still_used = still_used || (other.get() != generation && other->generation->plugins.contains(&p));
        if (!still_used && p.has(offsetof(trellis_plugin, on_worker_stop) + sizeof(void *)) &&
            p.plugin->on_worker_stop)
            p.plugin->on_worker_stop(p.instance, index_);
    }
    for (auto it = generations_.begin(); it != generations_.end(); ++it)
        if (it->get() == generation) {
            generations_.erase(it);
            break;
        }
    if (shared_.on_generation_released)
        shared_.on_generation_released(shared_.on_generation_released_data);
}

void Worker::join() {
    if (thread_.joinable())
        thread_.join();
}

void Worker::run() {
    context_->bind_thread();
    WorkerContext::mark_loop_thread();
    start_plugins(*generations_.back()->generation, nullptr);
    if (!started_ok_)
        on_stop();
    else if (on_started_)
        on_started_(on_exit_data_);
    // The connections' epoll set drives the loop (transport/poller.hpp).
    if (!context_->poller.run()) {
        SERVER_LOG_ERROR("worker %u: epoll: %s; stopping", index_, strerror(errno));
        on_stop();
        uv_run(&loop_, UV_RUN_DEFAULT);
    }
    // Every instance still in use hears on_worker_stop once, newest generation first.
    std::vector<PluginInstance *> stopped;
    for (size_t g = generations_.size(); g-- > 0;) {
        const auto &instances = generations_[g]->generation->plugins.instances();
        for (size_t i = instances.size(); i-- > 0;) {
            PluginInstance &p = *instances[i];
            if (std::find(stopped.begin(), stopped.end(), &p) != stopped.end())
                continue;
            stopped.push_back(&p);
            if (p.has(offsetof(trellis_plugin, on_worker_stop) + sizeof(void *)) && p.plugin->on_worker_stop)
                p.plugin->on_worker_stop(p.instance, index_);
        }
    }
    int rc = close_loop();
    if (rc != 0)
        SERVER_LOG_ERROR("worker %u: event loop did not close cleanly: %s", index_, uv_err_name(rc));
    if (on_exit_)
        on_exit_(on_exit_data_);
}

void Worker::uv_on_stop(uv_async_t *async) noexcept {
    static_cast<Worker *>(async->data)->on_stop();
}

void Worker::on_stop() {
    if (stopping_)
        return;
    stopping_ = true;
    context_->draining = true;
    for (Listener *listener : listeners_)
        listener->close();
    listeners_.clear();
    {
        std::lock_guard<std::mutex> lock(stop_mutex_);
        stop_open_ = false;
    }
    uv_close(reinterpret_cast<uv_handle_t *>(&stop_async_), nullptr);
    {
        std::lock_guard<std::mutex> lock(posted_mutex_);
        accepting_posts_ = false;
    }
    uv_close(reinterpret_cast<uv_handle_t *>(&post_async_), nullptr);
    close_all_connections(false);
    if (context_->connections == 0) {
        on_drained();
        return;
    }
    check_drain();
    if (context_->connections == 0)
        return; // on_drained ran
    uv_timer_start(&shutdown_timer_, uv_on_shutdown_timeout, shutdown_timeout_ms_, 0);
}

void Worker::close_all_connections(bool force) {
    std::vector<ClientConnection *> all = all_connections();
    // A connection closing calls check_drain, which could close others still in `all`: not now.
    sweeping_connections_ = true;
    for (ClientConnection *connection : all) {
        if (force)
            connection->abort();
        else
            connection->begin_drain();
    }
    sweeping_connections_ = false;
}

void Worker::check_drain() {
    if (sweeping_connections_)
        return;
    // Busy connections sit on the other lists: look there first, the cheap way out.
    for (int i = 0; i < Timeouts::kLists; ++i)
        if (i != kKeepaliveTimeout && i != kLingerTimeout && !context_->timeouts.list(i).empty())
            for (TimeoutNode *node = context_->timeouts.list(i).front(); node; node = node->next)
                if (!static_cast<ClientConnection *>(node)->idle())
                    return; // still answering someone: idle connections stay for requests on their way
    // An idle connection that answered a moment ago may have the client's next request on its
    // way (it was told to keep the connection open): closing it now would meet that request with
    // a reset. It gets a grace after its last answer; a request arriving meanwhile is answered
    // with "Connection: close".
    uint64_t now = context_->timeouts.now();
    uint64_t grace = std::min<uint64_t>(kDrainIdleGraceMs, shutdown_timeout_ms_ / 2);
    uint64_t next_check = 0;
    std::vector<ClientConnection *> idle;
    for (int i = 0; i < Timeouts::kLists; ++i)
        for (TimeoutNode *node = context_->timeouts.list(i).front(); node; node = node->next) {
            auto *connection = static_cast<ClientConnection *>(node);
            if (!connection->idle())
                return;
            // Only a keep-alive connection's deadline says when its last answer went out.
            uint64_t idle_since = node->deadline - std::min(node->deadline, node->list->duration_ms());
            if (i == kKeepaliveTimeout && now < idle_since + grace)
                next_check = next_check ? std::min(next_check, idle_since + grace) : idle_since + grace;
            else
                idle.push_back(connection);
        }
    if (next_check)
        uv_timer_start(
            &drain_grace_timer_, [](uv_timer_t *timer) { static_cast<Worker *>(timer->data)->check_drain(); },
            next_check - now, 0);
    sweeping_connections_ = true;
    for (ClientConnection *connection : idle)
        connection->abort();
    sweeping_connections_ = false;
}

void Worker::on_drained() {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t *>(&shutdown_timer_)))
        uv_close(reinterpret_cast<uv_handle_t *>(&shutdown_timer_), nullptr);
    if (!uv_is_closing(reinterpret_cast<uv_handle_t *>(&drain_grace_timer_)))
        uv_close(reinterpret_cast<uv_handle_t *>(&drain_grace_timer_), nullptr);
    // Nothing can reach a held request on this worker any more; a plugin that releases one later
    // frees it itself (Mailbox::post fails).
    context_->mailbox->close();
}

void Worker::uv_on_shutdown_timeout(uv_timer_t *timer) noexcept {
    auto *self = static_cast<Worker *>(timer->data);
    SERVER_LOG_WARN("worker %u: shutdown timeout; closing %zu connection(s)", self->index_,
                    self->context_->connections);
    self->close_all_connections(true);
}

} // namespace trellis
