// Progress reporting for long CLI jobs: a redrawn bar on a terminal, plain
// periodic lines otherwise (logs, CI).
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <string>
#include <unistd.h>

namespace ldaproj::cli {

class Progress {
 public:
  Progress(std::string label, std::size_t total, bool quiet = false)
      : label_(std::move(label)), total_(total), quiet_(quiet),
        tty_(isatty(fileno(stderr)) != 0), start_(Clock::now()), last_(start_) {}

  // Text shown after the counts, e.g. the running loss.
  void set_note(std::string note) { note_ = std::move(note); }

  void advance(std::size_t n) {
    done_ += n;
    if (quiet_) return;
    const auto now = Clock::now();
    const bool finished = done_ >= total_;
    if (tty_) {
      if (finished || now - last_ > std::chrono::milliseconds(100)) draw(now, finished);
    } else if (finished || now - last_ > std::chrono::seconds(5)) {
      line(now);
    }
  }

 private:
  using Clock = std::chrono::steady_clock;

  double rate(Clock::time_point now) const {
    const double secs = std::chrono::duration<double>(now - start_).count();
    return secs > 0 ? static_cast<double>(done_) / secs : 0.0;
  }

  void draw(Clock::time_point now, bool finished) {
    last_ = now;
    constexpr int kWidth = 30;
    const double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar;
    for (int i = 0; i < kWidth; ++i) bar += i < filled ? "█" : "░";
    const double r = rate(now);
    const double eta = r > 0 ? static_cast<double>(total_ - done_) / r : 0.0;
    std::fprintf(stderr, "\r%s %s %zu/%zu  %.1f/s  ETA %.0fs  %s  ", label_.c_str(), bar.c_str(), done_,
                 total_, r, eta, note_.c_str());
    if (finished) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

  void line(Clock::time_point now) {
    last_ = now;
    std::fprintf(stderr, "%s: %zu/%zu (%.1f/s)%s%s\n", label_.c_str(), done_, total_, rate(now),
                 note_.empty() ? "" : "  ", note_.c_str());
  }

  std::string label_;
  std::string note_;
  std::size_t total_;
  std::size_t done_ = 0;
  bool quiet_;
  bool tty_;
  Clock::time_point start_, last_;
};

}  // namespace ldaproj::cli
