// The logs: JSON escaping of request fields, the access log's JSON lines and writer thread (whole
// buffers, drops when the disk is slow, reopen after a rename), the error log's per-call-site rate
// limit and its reopen.
#include "log/access_log.hpp"
#include "log/log.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using trellis::AccessLog;
using trellis::AccessLogBuffer;
using trellis::AccessLogEntry;
using trellis::AccessLogFormat;
using trellis::append_json_string;
using trellis::LogRateLimiter;

namespace {

std::string json_string(std::string_view text) {
    std::string out;
    append_json_string(out, text);
    return out;
}

// What a JSON parser reads back from append_json_string's output (throws if it is not JSON).
std::string decoded(std::string_view text) {
    return nlohmann::json::parse(json_string(text)).get<std::string>();
}

// A directory removed at the end of the test.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        char pattern[] = "/tmp/trellis-log-test-XXXXXX";
        REQUIRE(mkdtemp(pattern) != nullptr);
        path = pattern;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string file(const char *name) const { return (path / name).string(); }
};

std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

std::vector<std::string> lines_of(const std::string &text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        lines.push_back(line);
    return lines;
}

// Waits (bounded) until the file at `path` is not empty.
void wait_for_content(const std::string &path) {
    for (int i = 0; i < 500 && read_file(path).empty(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// Appends `entries` through a worker's buffer on a real loop, which then closes cleanly.
void log_through_buffer(AccessLog &sink, const std::vector<AccessLogEntry> &entries) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    {
        AccessLogBuffer buffer(&loop, &sink);
        for (const AccessLogEntry &entry : entries)
            buffer.append(entry);
        buffer.close();
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    CHECK(uv_loop_close(&loop) == 0);
}

} // namespace

TEST_CASE("access log: JSON strings") {
    SUBCASE("plain text unchanged, quotes and backslashes escaped") {
        CHECK(json_string("") == "\"\"");
        CHECK(json_string("curl/8.5.0") == "\"curl/8.5.0\"");
        CHECK(json_string("a\"b\\c") == "\"a\\\"b\\\\c\"");
    }
    SUBCASE("control bytes and DEL as \\u00XX") {
        CHECK(json_string(std::string_view("\n\r\t\x01\x1f\x7f", 6)) ==
              "\"\\u000a\\u000d\\u0009\\u0001\\u001f\\u007f\"");
        CHECK(json_string(std::string_view("a\0b", 3)) == "\"a\\u0000b\"");
    }
    SUBCASE("valid UTF-8 kept as is") {
        for (const char *text : {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xed\x9f\xbf",
                                 "\xf4\x8f\xbf\xbf", "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80"}) {
            INFO("text: " << text);
            CHECK(json_string(text) == "\"" + std::string(text) + "\"");
        }
    }
    SUBCASE("every byte outside valid UTF-8 as \\u00XX") {
        CHECK(json_string("\xff") == "\"\\u00ff\"");
        CHECK(json_string("a\x80z") == "\"a\\u0080z\"");
        CHECK(json_string("\xc0\xaf") == "\"\\u00c0\\u00af\"");                       // overlong '/'
        CHECK(json_string("\xe0\x80\xaf") == "\"\\u00e0\\u0080\\u00af\"");            // overlong, 3 bytes
        CHECK(json_string("\xed\xa0\x80") == "\"\\u00ed\\u00a0\\u0080\"");            // a surrogate
        CHECK(json_string("\xf4\x90\x80\x80") == "\"\\u00f4\\u0090\\u0080\\u0080\""); // past U+10FFFF
        CHECK(json_string("\xf5\x80\x80\x80") == "\"\\u00f5\\u0080\\u0080\\u0080\"");
        CHECK(json_string("\xc3") == "\"\\u00c3\"");              // cut short at the end
        CHECK(json_string("\xe2\x82z") == "\"\\u00e2\\u0082z\""); // cut short before ASCII
        CHECK(json_string("\xc3\xc3\xa9") == "\"\\u00c3\xc3\xa9\"");
    }
    SUBCASE("a JSON parser reads back any byte string") {
        CHECK(decoded("a\"b\nc\xff") == "a\"b\nc\xc3\xbf"); // 0xff reads as U+00FF
        std::string all;
        for (int c = 0; c < 256; ++c)
            all += static_cast<char>(c);
        for (int c = 255; c >= 0; --c)
            all += static_cast<char>(c);
        srand(7);
        for (int i = 0; i < 4096; ++i)
            all += static_cast<char>(rand() & 0xff);
        CHECK_NOTHROW(decoded(all));
    }
}

TEST_CASE("access log: JSON lines through a worker's buffer") {
    TempDir dir;
    std::string path = dir.file("access.json");
    {
        AccessLog sink(path, AccessLogFormat::Json);
        AccessLogEntry get;
        get.peer_ip = "127.0.0.1";
        get.method = "GET";
        get.target = "/a?b=\"c\"";
        get.status = 200;
        get.body_bytes = 13;
        get.user_agent = "ua \"quoted\"\n\xff\xc3\xa9";
        get.request_time_ns = 1234567;
        AccessLogEntry old;
        old.peer_ip = "::1";
        old.method = "HEAD";
        old.target = "/";
        old.version = 10;
        old.status = 400;
        old.referer = "http://ref.test/";
        log_through_buffer(sink, {get, old});
    }
    std::vector<std::string> lines = lines_of(read_file(path));
    REQUIRE(lines.size() == 2);
    nlohmann::json first = nlohmann::json::parse(lines[0]);
    CHECK(first["remote_addr"] == "127.0.0.1");
    CHECK(first["method"] == "GET");
    CHECK(first["target"] == "/a?b=\"c\"");
    CHECK(first["protocol"] == "HTTP/1.1");
    CHECK(first["status"] == 200);
    CHECK(first["body_bytes"] == 13);
    CHECK(first["referer"] == "");
    CHECK(first["user_agent"] == "ua \"quoted\"\n\xc3\xbf\xc3\xa9");
    CHECK(first["request_time_ms"].get<double>() == doctest::Approx(1.234));
    std::string time = first["time"];
    INFO("time: " << time);
    CHECK(time.size() == 24); // 2026-11-25T17:26:45.123Z
    CHECK(time[10] == 'T');
    CHECK(time[19] == '.');
    CHECK(time.back() == 'Z');
    nlohmann::json second = nlohmann::json::parse(lines[1]);
    CHECK(second["protocol"] == "HTTP/1.0");
    CHECK(second["status"] == 400);
    CHECK(second["referer"] == "http://ref.test/");
    CHECK_FALSE(second.contains("request_time_ms")); // unknown: left out
}

TEST_CASE("access log: the combined format") {
    TempDir dir;
    std::string path = dir.file("access.log");
    {
        AccessLog sink(path, AccessLogFormat::Combined);
        AccessLogEntry entry;
        entry.peer_ip = "10.0.0.1";
        entry.method = "GET";
        entry.target = "/x";
        entry.status = 404;
        entry.body_bytes = 7;
        entry.user_agent = "a\"b";
        log_through_buffer(sink, {entry});
    }
    std::string line = read_file(path);
    CHECK(line.rfind("10.0.0.1 - - [", 0) == 0);
    CHECK(line.find("] \"GET /x HTTP/1.1\" 404 7 \"-\" \"a\\x22b\"\n") != std::string::npos);
}

TEST_CASE("access log: whole buffers from many threads never interleave, all written at the end") {
    TempDir dir;
    std::string path = dir.file("access.log");
    constexpr int kThreads = 4, kBuffers = 200, kLines = 50;
    {
        AccessLog sink(path, AccessLogFormat::Combined, 1ull << 30);
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t)
            threads.emplace_back([&sink, t] {
                std::string buffer;
                for (int b = 0; b < kBuffers; ++b) {
                    for (int l = 0; l < kLines; ++l)
                        buffer += "thread " + std::to_string(t) + " buffer " + std::to_string(b) + " line " +
                                  std::to_string(l) + "\n";
                    sink.submit(buffer);
                    if (!buffer.empty())
                        FAIL_CHECK("submit left the buffer non-empty");
                }
            });
        for (auto &thread : threads)
            thread.join();
        CHECK(sink.dropped_lines() == 0);
    } // the destructor writes what is still queued
    std::vector<std::string> lines = lines_of(read_file(path));
    REQUIRE(lines.size() == static_cast<size_t>(kThreads * kBuffers * kLines));
    for (size_t i = 0; i < lines.size(); i += kLines) {
        // Each run of kLines lines is one buffer: one thread, one buffer number, lines 0..49.
        std::string prefix = lines[i].substr(0, lines[i].find(" line "));
        for (int l = 0; l < kLines; ++l)
            REQUIRE(lines[i + static_cast<size_t>(l)] == prefix + " line " + std::to_string(l));
    }
}

TEST_CASE("access log: a stalled disk drops buffers, counted, and never blocks the submitter") {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    std::string chunk(100 * 1024, 'x');
    for (size_t i = 99; i < chunk.size(); i += 100)
        chunk[i] = '\n'; // 1024 lines
    size_t read_total = 0;
    std::thread reader;
    {
        // The writer blocks in write(2): nobody reads the pipe yet, and it holds 64 KiB.
        AccessLog sink(fds[1], AccessLogFormat::Combined, 250 * 1024);
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < 10; ++i) {
            std::string buffer = chunk;
            sink.submit(buffer);
            CHECK(buffer.empty());
        }
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
        CHECK(sink.dropped_lines() == 8 * 1024); // two fit under 250 KiB
        // Now the disk catches up: what was accepted is written whole, nothing more.
        reader = std::thread([&] {
            char block[65536];
            for (ssize_t n; (n = read(fds[0], block, sizeof block)) > 0;)
                read_total += static_cast<size_t>(n);
        });
    } // the destructor writes what is queued
    close(fds[1]);
    reader.join();
    close(fds[0]);
    CHECK(read_total == 2 * chunk.size());
}

TEST_CASE("access log: reopen after a rename writes to a new file at the path") {
    TempDir dir;
    std::string path = dir.file("access.log");
    std::string rotated = dir.file("access.log.1");
    AccessLog sink(path, AccessLogFormat::Combined);
    std::string buffer = "before\n";
    sink.submit(buffer);
    wait_for_content(path);
    REQUIRE(read_file(path) == "before\n");
    std::filesystem::rename(path, rotated);
    CHECK(sink.reopen());
    buffer = "after\n";
    sink.submit(buffer);
    wait_for_content(path);
    CHECK(read_file(path) == "after\n");
    CHECK(read_file(rotated) == "before\n");
    CHECK_FALSE(AccessLog(STDOUT_FILENO, AccessLogFormat::Combined).reopen()); // stdout: nothing to reopen
}

TEST_CASE("error log: the rate limiter") {
    LogRateLimiter limiter;
    static const char site_a[] = "a", site_b[] = "b";
    uint64_t suppressed = 99;
    SUBCASE("at most kLinesPerSecond per site and second") {
        for (uint32_t i = 0; i < LogRateLimiter::kLinesPerSecond; ++i) {
            CHECK(limiter.admit(site_a, 100, suppressed));
            CHECK(suppressed == 0);
        }
        for (int i = 0; i < 25; ++i)
            CHECK_FALSE(limiter.admit(site_a, 100, suppressed));
        // Another site has its own budget.
        CHECK(limiter.admit(site_b, 100, suppressed));
        CHECK(suppressed == 0);
        // The next second: the first line carries the count, once.
        CHECK(limiter.admit(site_a, 101, suppressed));
        CHECK(suppressed == 25);
        CHECK(limiter.admit(site_a, 101, suppressed));
        CHECK(suppressed == 0);
    }
    SUBCASE("a count is carried by the first line admitted after it") {
        for (uint64_t second = 5; second < 8; ++second) {
            for (uint32_t i = 0; i < LogRateLimiter::kLinesPerSecond; ++i) {
                CHECK(limiter.admit(site_a, second, suppressed));
                CHECK(suppressed == (second > 5 && i == 0 ? 2u : 0u));
            }
            CHECK_FALSE(limiter.admit(site_a, second, suppressed));
            CHECK_FALSE(limiter.admit(site_a, second, suppressed));
        }
        // Quiet seconds in between change nothing: the count waits for the site's next line.
        CHECK(limiter.admit(site_a, 20, suppressed));
        CHECK(suppressed == 2);
    }
    SUBCASE("far more sites than slots: every site stays limited") {
        static char sites[4 * LogRateLimiter::kSlots];
        size_t admitted = 0;
        for (int round = 0; round < 50; ++round)
            for (char &site : sites)
                admitted += limiter.admit(&site, 1, suppressed) ? 1 : 0;
        // Sites past the table share a slot's budget: never more than the table allows.
        CHECK(admitted <= LogRateLimiter::kSlots * LogRateLimiter::kLinesPerSecond);
        CHECK(admitted >= LogRateLimiter::kSlots * LogRateLimiter::kLinesPerSecond * 9 / 10);
    }
}

TEST_CASE("error log: a file, rate-limited per call site, reopened after a rename") {
    TempDir dir;
    std::string path = dir.file("error.log");
    std::string rotated = dir.file("error.log.1");
    std::string error;
    REQUIRE(trellis::open_error_log(path, error));
    // One call site, far more lines than the limit, on a thread the limit applies to.
    auto burst = [](int n) {
        for (int i = 0; i < n; ++i)
            SERVER_LOG_ERROR("unit test burst line %d", i);
    };
    burst(100);
    std::vector<std::string> lines = lines_of(read_file(path));
    CHECK(lines.size() >= LogRateLimiter::kLinesPerSecond);
    CHECK(lines.size() <= 2 * LogRateLimiter::kLinesPerSecond); // a second may begin mid-burst
    // The next second's first line says how many were left out.
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    burst(1);
    lines = lines_of(read_file(path));
    REQUIRE(!lines.empty());
    INFO("last line: " << lines.back());
    CHECK(lines.back().find("similar messages suppressed)") != std::string::npos);
    // Every line of the bursts is either in the file or counted in a later line.
    size_t accounted = 0;
    for (const std::string &line : lines) {
        if (line.find("unit test burst line") == std::string::npos)
            continue;
        ++accounted;
        if (size_t said = line.find(" ("); said != std::string::npos)
            accounted += std::stoul(line.substr(said + 2));
    }
    CHECK(accounted == 101);

    std::filesystem::rename(path, rotated);
    trellis::log_message(trellis::LogLevel::Error, "to the renamed file");
    REQUIRE(trellis::reopen_error_log(error));
    trellis::log_message(trellis::LogLevel::Error, "to the new file");
    CHECK(read_file(path).find("[error] to the new file\n") != std::string::npos);
    CHECK(read_file(path).find("renamed") == std::string::npos);
    CHECK(read_file(rotated).find("[error] to the renamed file\n") != std::string::npos);
    // Back to stderr (a new descriptor for it), so later tests log where they used to.
    REQUIRE(trellis::open_error_log("/dev/stderr", error));
}
