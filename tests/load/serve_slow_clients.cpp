// Slow and hostile clients against the real `ldaproj serve` on loopback: the
// checks of docs/RELIABILITY.md section 5, with the figures it quotes.
//
//   1. a second server on the same port fails with a clear error;
//   2. a bad Content-Length (too large, negative, repeated) is answered at
//      header time, well before the request deadline;
//   3. for --seconds (default 20): --slow connections (default 200) drip one
//      byte a second (half in the headers, half in a declared body) and are
//      reopened when the server drops them, --keep-alive clients (default 16)
//      hold keep-alive connections open with a request now and then, while a
//      health prober and --searchers closed-loop search clients (default 4,
//      the server's default worker count, so every worker stays busy) run. Health p99 must stay within
//      --health-p99-ms (default 100), no search may fail, and every slow
//      connection must be closed at its deadline (the server's --timeout,
//      default 10 s, give or take the drip interval).
//
// A separate program rather than a unit test: it runs for tens of seconds
// and its limits are timings, which have no place among the unit tests. The
// release build registers it with CTest (`serve_slow_clients_test`); under the
// sanitizers its timings would mean nothing. Exit 0 when every check holds.
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli_support.hpp"
#include "loopback_socket.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Args {
  fs::path work = fs::temp_directory_path() / "ldaproj-slow-clients";
  double seconds = 20;
  int slow = 200;
  int keep_alive = 16;
  int searchers = 4;  // closed-loop search clients: as many as the server's default worker threads
  int timeout = 10;  // the server's --timeout
  double health_p99_ms = 100;
};

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

int failures = 0;
void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

// A child `ldaproj serve`, its output read until it says where it listens.
struct ServeProcess {
  pid_t pid = -1;
  int out = -1;
  int port = 0;
  std::string text;  // what it printed

  bool start(const std::vector<std::string>& args, double wait_seconds) {
    int fds[2];
    if (pipe(fds) != 0) return false;
    pid = fork();
    if (pid == 0) {
      dup2(fds[1], 1);
      dup2(fds[1], 2);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv{const_cast<char*>(LDAPROJ_CLI_PATH)};
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(LDAPROJ_CLI_PATH, argv.data());
      _exit(127);
    }
    close(fds[1]);
    out = fds[0];
    const auto until = Clock::now() + std::chrono::duration<double>(wait_seconds);
    while (Clock::now() < until) {
      pollfd p{out, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(out, buf, sizeof buf);
      if (n <= 0) return false;  // exited
      text.append(buf, static_cast<std::size_t>(n));
      const std::size_t at = text.find("listening on http://127.0.0.1:");
      if (at != std::string::npos) {
        port = std::atoi(text.c_str() + at + std::strlen("listening on http://127.0.0.1:"));
        return port > 0;
      }
    }
    return false;
  }

  // The exit code, or -1 when it had to be killed.
  int finish(double wait_seconds) {
    if (pid <= 0) return -1;
    const auto until = Clock::now() + std::chrono::duration<double>(wait_seconds);
    int status = 0;
    for (;;) {
      char buf[4096];
      pollfd p{out, POLLIN, 0};
      while (poll(&p, 1, 0) > 0) {
        const ssize_t n = read(out, buf, sizeof buf);
        if (n <= 0) break;
        text.append(buf, static_cast<std::size_t>(n));
      }
      const pid_t r = waitpid(pid, &status, WNOHANG);
      if (r == pid) break;
      if (Clock::now() > until) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        pid = -1;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid = -1;
    close(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  ~ServeProcess() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};


// Sends `request` on a fresh connection; the status of the reply and the
// milliseconds until its first line arrived (status 0: none within 5 s).
std::pair<int, double> raw_exchange(int port, const std::string& request) {
  const int fd = ldaproj::testing_support::connect_loopback(port);
  if (fd < 0) return {0, 0};
  const auto start = Clock::now();
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) < 0) {
    close(fd);
    return {0, 0};
  }
  std::string got;
  while (got.find("\r\n") == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) break;
    char buf[512];
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  const double ms = ms_since(start);
  close(fd);
  if (got.rfind("HTTP/1.1 ", 0) != 0) return {0, ms};
  return {std::atoi(got.c_str() + 9), ms};
}

// One dripping connection: what it has sent, when it opened and closed.
struct Drip {
  int fd = -1;
  std::string script;  // the bytes it sends, one a second
  std::size_t sent = 0;
  Clock::time_point opened;
  bool got_408 = false;
};

struct DripResults {
  std::vector<double> lifetimes_s;  // connections the server closed
  int answered_408 = 0;
  int reopened = 0;
};

DripResults run_drips(int port, int count, double seconds) {
  const std::string head = "POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
  const std::string header_drip = head + "X-Slow: " + std::string(200, 'a') + "\r\n\r\n";
  const std::string body_drip = head + "Content-Length: 400\r\n\r\n{\"text\": \"" + std::string(380, 'b') + "\"}";
  std::vector<Drip> drips(static_cast<std::size_t>(count));
  DripResults results;
  auto open = [&](Drip& d, std::size_t i) {
    d = Drip{};
    d.fd = ldaproj::testing_support::connect_loopback(port);
    d.script = i % 2 == 0 ? header_drip : body_drip;
    d.opened = Clock::now();
    // The body drip sends its headers at once (so its body is what drips);
    // the header drip sends its first line at once.
    const std::size_t first = i % 2 == 0 ? head.find("\r\n") + 2 : body_drip.find("\r\n\r\n") + 4;
    if (d.fd >= 0 && send(d.fd, d.script.data(), first, MSG_NOSIGNAL) > 0) d.sent = first;
  };
  for (std::size_t i = 0; i < drips.size(); ++i) open(drips[i], i);
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  auto next_byte = Clock::now() + std::chrono::seconds(1);
  while (Clock::now() < end) {
    std::vector<pollfd> fds;
    for (const Drip& d : drips) fds.push_back({d.fd, POLLIN, 0});
    const int wait_ms = static_cast<int>(std::max<double>(
        0, std::chrono::duration<double, std::milli>(next_byte - Clock::now()).count()));
    poll(fds.data(), fds.size(), std::min(wait_ms, 50));
    for (std::size_t i = 0; i < drips.size(); ++i) {
      Drip& d = drips[i];
      if (d.fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[2048];
      const ssize_t n = recv(d.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        if (std::string(buf, static_cast<std::size_t>(n)).rfind("HTTP/1.1 408", 0) == 0) d.got_408 = true;
        continue;  // the close follows
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      results.lifetimes_s.push_back(ms_since(d.opened) / 1000.0);
      results.answered_408 += d.got_408 ? 1 : 0;
      close(d.fd);
      ++results.reopened;
      open(d, i);
    }
    if (Clock::now() >= next_byte) {
      next_byte += std::chrono::seconds(1);
      for (Drip& d : drips) {
        if (d.fd >= 0 && d.sent < d.script.size() && send(d.fd, d.script.data() + d.sent, 1, MSG_NOSIGNAL) == 1) {
          ++d.sent;
        }
      }
    }
  }
  for (Drip& d : drips) {
    if (d.fd >= 0) close(d.fd);
  }
  return results;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--work") args.work = value;
    else if (flag == "--seconds") args.seconds = std::atof(value);
    else if (flag == "--slow") args.slow = std::atoi(value);
    else if (flag == "--keep-alive") args.keep_alive = std::atoi(value);
    else if (flag == "--searchers") args.searchers = std::atoi(value);
    else if (flag == "--timeout") args.timeout = std::atoi(value);
    else if (flag == "--health-p99-ms") args.health_p99_ms = std::atof(value);
    else {
      std::fprintf(stderr, "usage: %s [--work DIR] [--seconds S] [--slow N] [--keep-alive N] [--searchers N] [--timeout S] "
                           "[--health-p99-ms MS]\n", argv[0]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  fs::create_directories(args.work);
  const fs::path db = args.work / "demo.db";
  ldaproj::testing_support::copy_trained_demo_db(db);

  ServeProcess server;
  if (!server.start({"serve", "--db", db.string(), "--port", "0", "--timeout", std::to_string(args.timeout)}, 120)) {
    std::fprintf(stderr, "ldaproj serve did not start:\n%s\n", server.text.c_str());
    return 1;
  }
  const int port = server.port;
  std::printf("server on port %d (pid %d), --timeout %d\n", port, static_cast<int>(server.pid), args.timeout);

  // 1. A second server on the same port.
  {
    ServeProcess second;
    const bool started = second.start({"serve", "--db", db.string(), "--port", std::to_string(port)}, 60);
    const int code = second.finish(60);
    check(!started && code == 1 && second.text.find("in use") != std::string::npos,
          "a second server on port " + std::to_string(port) + " fails: exit " + std::to_string(code) + ", says \"" +
              second.text.substr(0, second.text.find('\n')) + "\"");
  }

  // 2. Bad Content-Length at header time.
  const std::string post = "POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
  const struct {
    const char* name;
    std::string request;
    int status;
  } bad_lengths[] = {
      {"oversized Content-Length", post + "Content-Length: 1000000000000\r\n\r\n", 413},
      {"negative Content-Length", post + "Content-Length: -5\r\n\r\n", 400},
      {"two different Content-Lengths", post + "Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}", 400},
      {"two equal Content-Lengths", post + "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400},
  };
  for (const auto& b : bad_lengths) {
    const auto [status, ms] = raw_exchange(port, b.request);
    char line[160];
    std::snprintf(line, sizeof line, "%s: %d in %.1f ms (want %d in < 100 ms)", b.name, status, ms, b.status);
    check(status == b.status && ms < 100, line);
  }

  // 3. The load.
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::vector<double> health_ms, search_ms;
  int health_failed = 0, search_failed = 0, keep_alive_failed = 0, keep_alive_requests = 0;

  std::thread health([&] {
    while (!stop) {
      httplib::Client c("127.0.0.1", port);  // a fresh connection each time, as a load balancer's probe
      c.set_connection_timeout(5, 0);
      c.set_read_timeout(5, 0);
      const auto start = Clock::now();
      const auto r = c.Get("/healthz");
      const double ms = ms_since(start);
      {
        std::lock_guard lock(mutex);
        if (r && r->status == 200) health_ms.push_back(ms);
        else ++health_failed;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::vector<std::thread> searchers;
  for (int s = 0; s < args.searchers; ++s) searchers.emplace_back([&, s] {
    httplib::Client c("127.0.0.1", port);
    c.set_keep_alive(true);
    c.set_read_timeout(30, 0);
    const char* questions[] = {"how do I reset my password", "where is my order", "can I get a refund"};
    for (std::size_t i = static_cast<std::size_t>(s); !stop; ++i) {
      const std::string body = std::string("{\"text\": \"") + questions[i % 3] + "\", \"top_k\": 3}";
      const auto start = Clock::now();
      const auto r = c.Post("/v1/search", body, "application/json");
      const double ms = ms_since(start);
      std::lock_guard lock(mutex);
      if (r && r->status == 200) search_ms.push_back(ms);
      else ++search_failed;
    }
  });
  std::vector<std::thread> keep_alive;
  for (int k = 0; k < args.keep_alive; ++k) {
    keep_alive.emplace_back([&, k] {
      httplib::Client c("127.0.0.1", port);
      c.set_keep_alive(true);
      c.set_read_timeout(30, 0);
      while (!stop) {
        const auto r = c.Get("/v1/info");
        {
          std::lock_guard lock(mutex);
          ++keep_alive_requests;
          if (!r || r->status != 200) ++keep_alive_failed;
        }
        // Idle on the open connection for a while (under the 5 s keep-alive).
        for (int t = 0; t < 20 + k && !stop; ++t) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  const DripResults drips = run_drips(port, args.slow, args.seconds);
  stop = true;
  health.join();
  for (std::thread& t : searchers) t.join();
  for (std::thread& t : keep_alive) t.join();

  char line[400];
  std::snprintf(line, sizeof line,
                "health under load: %zu probes, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d failed (want p99 <= %.0f ms, "
                "0 failed)",
                health_ms.size(), percentile(health_ms, 0.5), percentile(health_ms, 0.99), percentile(health_ms, 1.0),
                health_failed, args.health_p99_ms);
  check(!health_ms.empty() && percentile(health_ms, 0.99) <= args.health_p99_ms && health_failed == 0, line);
  std::snprintf(line, sizeof line,
                "searches under load (%d closed-loop clients, every worker busy): %zu ok, p50 %.1f ms, p99 %.1f ms, "
                "%d failed (want 0 failed)",
                args.searchers, search_ms.size(), percentile(search_ms, 0.5), percentile(search_ms, 0.99), search_failed);
  check(!search_ms.empty() && search_failed == 0, line);
  std::snprintf(line, sizeof line, "keep-alive clients: %d, %d requests, %d failed", args.keep_alive,
                keep_alive_requests, keep_alive_failed);
  check(keep_alive_failed == 0, line);
  const double lo = percentile(drips.lifetimes_s, 0.0), hi = percentile(drips.lifetimes_s, 1.0);
  std::snprintf(line, sizeof line,
                "slow connections: %d dripping, %zu closed by the server after %.2f-%.2f s (p50 %.2f), %d of them "
                "with a 408 (want closed between %d and %d s)",
                args.slow, drips.lifetimes_s.size(), lo, hi, percentile(drips.lifetimes_s, 0.5), drips.answered_408,
                args.timeout, args.timeout + 2);
  const bool expect_closes = args.seconds > args.timeout + 2;
  check(!expect_closes || (drips.lifetimes_s.size() >= static_cast<std::size_t>(args.slow) && lo >= args.timeout - 0.1 &&
                           hi <= args.timeout + 2),
        line);

  // The server is still fine, and stops on SIGTERM.
  {
    httplib::Client c("127.0.0.1", port);
    const auto r = c.Get("/healthz");
    check(r && r->status == 200, "the server still answers after the load");
  }
  kill(server.pid, SIGTERM);
  const int code = server.finish(30);
  check(code == 0, "SIGTERM stops the server (exit " + std::to_string(code) + ")");
  std::printf("%s\n", failures == 0 ? "all checks passed" : "SOME CHECKS FAILED");
  return failures == 0 ? 0 : 1;
}
