// Prometheus text rendering of the server's counters and histograms.
#include "serve/metrics.hpp"

#include <cstdio>
#include <sstream>

namespace ldaproj::serve {

namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

std::string Metrics::escape_label(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Metrics::observe(const std::string& endpoint, const std::string& method, int status,
                      double seconds, std::size_t queries) {
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, method, status}];
  if (queries > 0) queries_[{endpoint, method}] += queries;
  if (seconds < 0) return;
  Histogram& h = latency_[{endpoint, method}];
  ++h.count;
  h.sum += seconds;
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++h.buckets[i];
      break;
    }
  }
}

void Metrics::reload_finished(bool ok) {
  std::lock_guard lock(mutex_);
  ++(ok ? reloads_ok_ : reloads_failed_);
}

std::string Metrics::render(const std::string& model_section) const {
  std::ostringstream out;
  std::lock_guard lock(mutex_);
  auto labels = [](const std::string& endpoint, const std::string& method) {
    return "endpoint=\"" + escape_label(endpoint) + "\",method=\"" + escape_label(method) + "\"";
  };

  out << "# HELP ldaproj_http_requests_total HTTP requests by endpoint, search method and status.\n"
         "# TYPE ldaproj_http_requests_total counter\n";
  for (const auto& [key, count] : requests_) {
    const auto& [endpoint, method, status] = key;
    out << "ldaproj_http_requests_total{" << labels(endpoint, method) << ",status=\"" << status
        << "\"} " << count << "\n";
  }

  out << "# HELP ldaproj_http_request_duration_seconds Time from routing a request to its response, "
         "by endpoint and search method.\n"
         "# TYPE ldaproj_http_request_duration_seconds histogram\n";
  for (const auto& [key, h] : latency_) {
    const std::string l = labels(key.first, key.second);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kBuckets.size(); ++i) {
      cumulative += h.buckets[i];
      out << "ldaproj_http_request_duration_seconds_bucket{" << l << ",le=\"" << number(kBuckets[i])
          << "\"} " << cumulative << "\n";
    }
    out << "ldaproj_http_request_duration_seconds_bucket{" << l << ",le=\"+Inf\"} " << h.count << "\n"
        << "ldaproj_http_request_duration_seconds_sum{" << l << "} " << number(h.sum) << "\n"
        << "ldaproj_http_request_duration_seconds_count{" << l << "} " << h.count << "\n";
  }

  out << "# HELP ldaproj_queries_total Queries answered (one per text or embedding of a batch).\n"
         "# TYPE ldaproj_queries_total counter\n";
  for (const auto& [key, count] : queries_) {
    out << "ldaproj_queries_total{" << labels(key.first, key.second) << "} " << count << "\n";
  }

  out << "# HELP ldaproj_model_reloads_total Model reloads by result.\n"
         "# TYPE ldaproj_model_reloads_total counter\n"
      << "ldaproj_model_reloads_total{result=\"ok\"} " << reloads_ok_ << "\n"
      << "ldaproj_model_reloads_total{result=\"error\"} " << reloads_failed_ << "\n";
  out << model_section;
  return out.str();
}

}  // namespace ldaproj::serve
