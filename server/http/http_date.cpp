#include "http/http_date.hpp"

#include <cstdio>
#include <cstring>

namespace trellis {
namespace {

constexpr const char *kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char *kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

int month_index(const char *name) {
    for (int i = 0; i < 12; ++i)
        if (strncmp(name, kMonths[i], 3) == 0)
            return i;
    return -1;
}

} // namespace

void format_http_date(time_t t, char *out) {
    // "Sun, 06 Nov 1994 08:49:37 GMT" written field by field: every file answer carries one
    // (Last-Modified), and snprintf cost more than the rest of its head.
    struct tm tm_utc;
    gmtime_r(&t, &tm_utc);
    auto digits = [](char *at, int value, int count) {
        for (int i = count - 1; i >= 0; --i, value /= 10)
            at[i] = static_cast<char>('0' + value % 10);
    };
    memcpy(out, kDays[tm_utc.tm_wday % 7], 3);
    memcpy(out + 3, ", ", 2);
    digits(out + 5, tm_utc.tm_mday, 2);
    out[7] = ' ';
    memcpy(out + 8, kMonths[tm_utc.tm_mon % 12], 3);
    out[11] = ' ';
    digits(out + 12, (tm_utc.tm_year + 1900) % 10000, 4);
    out[16] = ' ';
    digits(out + 17, tm_utc.tm_hour, 2);
    out[19] = ':';
    digits(out + 20, tm_utc.tm_min, 2);
    out[22] = ':';
    digits(out + 23, tm_utc.tm_sec, 2);
    memcpy(out + 25, " GMT", 4);
}

time_t parse_http_date(std::string_view text) {
    char input[64];
    if (text.size() >= sizeof input)
        return -1;
    memcpy(input, text.data(), text.size());
    input[text.size()] = '\0';
    struct tm tm_utc = {};
    char weekday[16], month[4];
    int day, year, hour, minute, second;
    // %n after the literal tail is set only when the whole text matched up to its end.
    int end = -1;
    int length = static_cast<int>(text.size());
    if (sscanf(input, "%3s, %2d %3s %4d %2d:%2d:%2d GMT%n", weekday, &day, month, &year, &hour, &minute,
               &second, &end) == 7 &&
        end == length) {
        // IMF-fixdate
    } else if (end = -1; sscanf(input, "%15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d GMT%n", weekday, &day, month,
                                &year, &hour, &minute, &second, &end) == 7 &&
                         end == length) {
        year += year < 70 ? 2000 : 1900; // RFC 850: two-digit years
    } else if (end = -1; sscanf(input, "%3s %3s %2d %2d:%2d:%2d %4d%n", weekday, month, &day, &hour, &minute,
                                &second, &year, &end) == 7 &&
                         end == length) {
        // asctime
    } else {
        return -1;
    }
    int mon = month_index(month);
    if (mon < 0 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60)
        return -1;
    tm_utc.tm_year = year - 1900;
    tm_utc.tm_mon = mon;
    tm_utc.tm_mday = day;
    tm_utc.tm_hour = hour;
    tm_utc.tm_min = minute;
    tm_utc.tm_sec = second;
    return timegm(&tm_utc);
}

} // namespace trellis
