// Request counters and latency histograms for the server, rendered in the
// Prometheus text exposition format.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace ldaproj::serve {

class Metrics {
 public:
  // Upper bounds (seconds) of the latency buckets; +Inf is implied.
  static constexpr std::array<double, 14> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,    0.25,  0.5,    1.0,   2.5,  5.0,  10.0};

  // A finished request. `endpoint` must come from a fixed set (never a raw
  // path) to keep the number of series bounded; `method` is the search method
  // or "none". Negative seconds: count it without a latency sample.
  void observe(const std::string& endpoint, const std::string& method, int status, double seconds,
               std::size_t queries = 0);
  void reload_finished(bool ok);

  // The whole exposition; `model_section` is appended verbatim (model info
  // gauges owned by the server).
  std::string render(const std::string& model_section) const;

  static std::string escape_label(const std::string& value);

 private:
  struct Histogram {
    std::array<std::uint64_t, kBuckets.size()> buckets{};  // non-cumulative
    std::uint64_t count = 0;
    double sum = 0.0;
  };
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;
  std::map<std::pair<std::string, std::string>, Histogram> latency_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> queries_;
  std::uint64_t reloads_ok_ = 0, reloads_failed_ = 0;
};

}  // namespace ldaproj::serve
