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
    struct tm tm_utc;
    gmtime_r(&t, &tm_utc);
    char buffer[64];
    snprintf(buffer, sizeof buffer, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm_utc.tm_wday % 7],
             tm_utc.tm_mday, kMonths[tm_utc.tm_mon % 12], tm_utc.tm_year + 1900, tm_utc.tm_hour,
             tm_utc.tm_min, tm_utc.tm_sec);
    memcpy(out, buffer, kHttpDateLength);
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
