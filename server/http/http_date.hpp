// IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", RFC 9110 section 5.6.7): formatting, parsing, and
// a per-worker cache of the current date so the Date header costs no formatting per request.
#pragma once

#include <ctime>
#include <string_view>

namespace trellis {

constexpr size_t kHttpDateLength = 29;

// Writes exactly kHttpDateLength characters (no NUL).
void format_http_date(time_t t, char *out);
// Accepts IMF-fixdate, and the obsolete RFC 850 and asctime forms as RFC 9110 asks. -1 if invalid.
time_t parse_http_date(std::string_view text);

class DateCache {
  public:
    std::string_view now() {
        time_t t = time(nullptr);
        if (t != second_) {
            second_ = t;
            format_http_date(t, text_);
        }
        return {text_, kHttpDateLength};
    }

  private:
    time_t second_ = 0;
    char text_[kHttpDateLength + 1] = {};
};

} // namespace trellis
