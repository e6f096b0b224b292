// delay: answers after a delay, from a thread of its own. The template for an ASYNC plugin in C++:
// on_request parks the request in a deadline-ordered queue and returns Result::Async, so the
// worker goes straight back to its event loop; one timer thread per instance answers each request
// when it is due, then releases it.
//
//   GET /delay?ms=250            200 "waited 250 ms\n" after 250 ms (ms: 0..60000, default 100)
//   GET /delay?chunks=5&ms=200   200, chunked: "chunk 1\n" ... "chunk 5\n", one every 200 ms
//   GET /delay/stats             {"pending":P,"answered":A,"aborted":B}, at once
//
//   config: {"max_pending": 10000}   past it, new requests get 503 at once
//
// Lifetimes and threads, the part worth copying:
//   - Each held request is one Job in jobs_, and the Job's trellis::AsyncRequest releases it when
//     the Job is destroyed: released exactly once, whether answered, finished or aborted.
//   - Once on_request has handed a request over, only the timer thread calls the host for it and
//     only the timer thread destroys its Job, so the host sees one thread at a time per request.
//   - The host is never called with mutex_ held: on_abort and on_writable run on worker threads
//     and take mutex_, and the host may be running one of them while a call of ours is waiting.
//   - So the timer thread calls the host with mutex_ released; a Job is then `in_flight`, and an
//     on_abort or on_writable arriving meanwhile leaves a note in it, read once the call returns.
#include <trellis/plugin.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

namespace {

using Clock = std::chrono::steady_clock;

// The key of a Job waiting for on_writable: never due.
constexpr Clock::time_point kParked = Clock::time_point::max();

// A whole decimal number from min to max; nullopt for anything else ("", "12x", "-1", "1e3").
std::optional<long> parse_number(std::string_view text, long min, long max) {
    long value = 0;
    const char *end = text.data() + text.size();
    auto [stop, error] = std::from_chars(text.data(), end, value);
    if (text.empty() || error != std::errc() || stop != end || value < min || value > max)
        return std::nullopt;
    return value;
}

// {"max_pending": N}, parsed by hand so the plugin needs no JSON library. Throws the message
// create() reports.
size_t parse_config(std::string_view json) {
    size_t max_pending = 10000;
    bool seen = false;
    size_t at = 0;
    auto skip_space = [&] {
        while (at < json.size() &&
               (json[at] == ' ' || json[at] == '\t' || json[at] == '\n' || json[at] == '\r'))
            ++at;
    };
    auto take = [&](char c) {
        skip_space();
        if (at < json.size() && json[at] == c) {
            ++at;
            return true;
        }
        return false;
    };
    auto syntax_error = [&](const char *what) {
        return std::invalid_argument("invalid config at byte " + std::to_string(at) + ": " + what +
                                     " (expected {\"max_pending\": N})");
    };
    if (!take('{'))
        throw syntax_error("expected an object");
    if (!take('}')) {
        do {
            if (!take('"'))
                throw syntax_error("expected a key");
            size_t key_end = json.find('"', at);
            if (key_end == std::string_view::npos)
                throw syntax_error("unterminated key");
            std::string_view key = json.substr(at, key_end - at);
            at = key_end + 1;
            if (!take(':'))
                throw syntax_error("expected ':'");
            if (key != "max_pending")
                throw std::invalid_argument("unknown key \"" + std::string(key) +
                                            "\" (delay takes only \"max_pending\")");
            if (seen)
                throw std::invalid_argument("\"max_pending\" given twice");
            seen = true;
            skip_space();
            size_t value_end = std::min(json.find_first_of(",} \t\r\n", at), json.size());
            auto value = parse_number(json.substr(at, value_end - at), 1, 1000000);
            if (!value)
                throw std::invalid_argument("\"max_pending\" must be an integer from 1 to 1000000");
            max_pending = static_cast<size_t>(*value);
            at = value_end;
        } while (take(','));
        if (!take('}'))
            throw syntax_error("expected ',' or '}'");
    }
    skip_space();
    if (at != json.size())
        throw syntax_error("unexpected text after the object");
    return max_pending;
}

trellis::Result answer(trellis::Request &req, int status, std::string_view body,
                       std::string_view type = "text/plain") {
    req.add_response_header("Content-Type", type);
    return req.respond(status, body) ? trellis::Result::Ok : trellis::Result::Error;
}

class Delay {
  public:
    // The one method it answers; also the Allow of the server's own 405 for TRACE here.
    static constexpr const char *allow = "GET";

    Delay(const trellis::Host &host, std::string_view config) : max_pending_(parse_config(config)) {
        // A server before ABI 1.1 loads this plugin but would not know what Result::Async means.
        if (!TRELLIS_HOST_HAS(host.raw(), request_query_param))
            throw std::runtime_error("needs a Trellis server with plugin ABI 1.1 or later (async handlers)");
        timer_ = std::thread([this] { run_timer(); }); // last: nothing can throw after it starts
    }

    // Runs once the host has let go of every request (see trellis_plugin.destroy), so jobs_ is
    // normally empty here; a Job left would be released unanswered, and the host answer it 500.
    ~Delay() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_one();
        timer_.join();
    }

    // The timer thread holds `this`: the instance must never move.
    Delay(const Delay &) = delete;
    Delay &operator=(const Delay &) = delete;

    // A worker thread, several at once.
    trellis::Result on_request(trellis::Request &req) {
        if (req.method() != "GET") {
            req.add_response_header("Allow", allow);
            return answer(req, 405, "method not allowed\n");
        }
        if (req.path_below() == "/stats")
            return stats(req);
        if (req.path_below() != "/")
            return trellis::Result::Declined; // not ours: the next matching route may have it

        long ms = 100, chunks = 0;
        if (auto value = req.query_param("ms")) {
            auto n = parse_number(*value, 0, 60000);
            if (!n)
                return answer(req, 400, "ms must be an integer from 0 to 60000\n");
            ms = *n;
        }
        if (auto value = req.query_param("chunks")) {
            auto n = parse_number(*value, 1, 1000);
            if (!n)
                return answer(req, 400, "chunks must be an integer from 1 to 1000\n");
            chunks = *n;
        }

        // Take a place first, parked and unreachable by the timer thread: what can throw
        // (allocation) happens before the request is held, so an exception (a 500 from plugin.hpp)
        // never leaves a held request behind.
        Job *job = nullptr;
        {
            std::lock_guard lock(mutex_);
            if (jobs_.size() < max_pending_) {
                job = &jobs_[req.raw()];
                try {
                    job->slot = queue_.emplace(kParked, job);
                } catch (...) {
                    jobs_.erase(req.raw());
                    throw;
                }
                job->ms = ms;
                job->chunks = chunks;
            }
        }
        if (!job) {
            req.add_response_header("Retry-After", "1");
            return answer(req, 503, "too many pending requests\n");
        }

        // Everything on this thread before the hand-over: afterwards the timer thread may answer
        // at once (ms=0), even before on_request has returned.
        req.add_response_header("Content-Type", "text/plain");
        if (chunks > 0)
            req.start(200, -1); // headers now, body chunked; if the client is gone, write() says so
        std::lock_guard lock(mutex_);
        job->request = trellis::AsyncRequest(req);
        reschedule(*job, Clock::now() + std::chrono::milliseconds(ms));
        wake_.notify_one();
        return trellis::Result::Async;
    }

    // A worker thread: the client went away (or the request timed out) while we held it. The
    // timer thread drops the Job without answering; the timer thread alone releases requests.
    void on_abort(trellis::Request &req) {
        aborted_.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard lock(mutex_);
        auto it = jobs_.find(req.raw());
        if (it == jobs_.end())
            return;
        Job &job = it->second;
        job.cancelled = true;
        if (!job.in_flight) // in flight: the timer thread reads `cancelled` when its call returns
            reschedule(job, Clock::time_point::min());
        wake_.notify_one();
    }

    // A worker thread: the client caught up after a write returned WriteStatus::Again.
    void on_writable(trellis::Request &req) {
        std::lock_guard lock(mutex_);
        auto it = jobs_.find(req.raw());
        if (it == jobs_.end())
            return;
        Job &job = it->second;
        job.blocked = false;
        job.writable = true; // for a write still in flight
        if (!job.in_flight && job.slot->first == kParked)
            reschedule(job, Clock::now());
        wake_.notify_one();
    }

  private:
    struct Job;
    using Queue = std::multimap<Clock::time_point, Job *>;

    struct Job {
        trellis::AsyncRequest request; // released when the Job is destroyed
        long ms = 0;
        long chunks = 0; // 0: one answer after ms; otherwise that many chunks, one every ms
        long sent = 0;
        Queue::iterator slot;   // its entry in queue_, valid while !in_flight
        bool in_flight = false; // out of queue_: the timer thread is calling the host for it
        bool cancelled = false; // on_abort came: drop it unanswered
        bool blocked = false;   // the last write returned Again: no more until on_writable
        bool writable = false;  // on_writable came while in flight
    };

    enum class Step { Done, Next, Blocked };

    trellis::Result stats(trellis::Request &req) {
        size_t pending;
        {
            std::lock_guard lock(mutex_);
            pending = jobs_.size();
        }
        std::string body = "{\"pending\":" + std::to_string(pending) +
                           ",\"answered\":" + std::to_string(answered_.load(std::memory_order_relaxed)) +
                           ",\"aborted\":" + std::to_string(aborted_.load(std::memory_order_relaxed)) + "}\n";
        req.add_response_header("Cache-Control", "no-store");
        return answer(req, 200, body, "application/json");
    }

    // Moves a Job to a new deadline. Reuses its queue node: no allocation, so nothing throws.
    void reschedule(Job &job, Clock::time_point due) {
        auto node = queue_.extract(job.slot);
        node.key() = due;
        job.slot = queue_.insert(std::move(node));
    }

    // The timer thread, without mutex_: one step of a Job.
    Step serve(Job &job) {
        trellis::Request &req = *job.request;
        char text[32];
        if (job.chunks == 0) {
            int n = std::snprintf(text, sizeof text, "waited %ld ms\n", job.ms);
            if (req.respond(200, std::string_view(text, static_cast<size_t>(n))))
                answered_.fetch_add(1, std::memory_order_relaxed);
            return Step::Done;
        }
        int n = std::snprintf(text, sizeof text, "chunk %ld\n", ++job.sent);
        trellis::WriteStatus status = req.write(std::string_view(text, static_cast<size_t>(n)));
        if (status == trellis::WriteStatus::Closed)
            return Step::Done;
        if (job.sent == job.chunks) {
            if (req.end())
                answered_.fetch_add(1, std::memory_order_relaxed);
            return Step::Done;
        }
        return status == trellis::WriteStatus::Again ? Step::Blocked : Step::Next;
    }

    // The timer thread, with mutex_ held (released around the host calls): a Job that fell due.
    // Returns when it falls due next (kParked: when on_writable says), or nullopt when it is done.
    std::optional<Clock::time_point> advance(Job &job, std::unique_lock<std::mutex> &lock) {
        if (job.cancelled)
            return std::nullopt; // dropped unanswered
        if (job.blocked)
            return kParked; // the client has not caught up since the last write
        job.in_flight = true;
        job.writable = false;
        lock.unlock();
        Step step = serve(job);
        lock.lock();
        job.in_flight = false;
        if (step == Step::Done || job.cancelled)
            return std::nullopt;
        // After Again the next chunk still falls due as usual, and is parked then if no
        // on_writable has come by that time.
        job.blocked = step == Step::Blocked && !job.writable;
        return Clock::now() + std::chrono::milliseconds(job.ms);
    }

    void run_timer() {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            if (queue_.empty() || queue_.begin()->first == kParked) {
                wake_.wait(lock);
                continue;
            }
            Clock::time_point due = queue_.begin()->first;
            if (due > Clock::now()) {
                wake_.wait_until(lock, due);
                continue;
            }
            auto node = queue_.extract(queue_.begin());
            Job &job = *node.mapped();
            if (std::optional<Clock::time_point> next = advance(job, lock)) {
                node.key() = *next;
                job.slot = queue_.insert(std::move(node));
                continue;
            }
            auto owned = jobs_.extract(job.request->raw());
            lock.unlock();
            owned = {}; // destroys the Job: AsyncRequest releases the request, without mutex_
            lock.lock();
        }
    }

    const size_t max_pending_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::unordered_map<trellis_request *, Job> jobs_; // every held request (nodes never move)
    Queue queue_;                                     // jobs_ by deadline, but those in flight
    bool stopping_ = false;
    std::atomic<uint64_t> answered_{0};
    std::atomic<uint64_t> aborted_{0};
    std::thread timer_;
};

} // namespace

TRELLIS_PLUGIN(Delay, "delay", "1.0")
