// The HTTP transport: an event-driven listener (Boost.Beast on one Asio I/O
// thread) that reads every request under a whole-request deadline and hands
// complete requests to a bounded pool of worker threads.
//
// Why not a thread per connection: a thread that waits for a slow client's
// next byte is a thread no other client gets, so a handful of connections
// dripping one byte a second stalled every endpoint. Here waiting costs a
// socket and a timer, never a worker; workers run only complete requests,
// and requests the application marks quick (health, metrics) are answered on
// the I/O thread even when every worker is busy. Limits follow nginx's
// defaults in spirit: a total deadline for headers and body, a cap on open
// connections and on requests per connection, a 511-entry listen backlog,
// header-time refusal of bad or oversized bodies, and an exclusive bind.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "serve/http_message.hpp"

namespace ldaproj::serve {

struct HttpListenerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port
  int backlog = 511;
  std::size_t max_connections = 1024;            // open at once; more get 503 and are closed
  std::size_t max_requests_per_connection = 1000;  // then the connection is closed after the reply
  std::chrono::milliseconds request_timeout{10000};  // first byte to last byte of a request
  std::chrono::milliseconds keep_alive_timeout{5000};  // idle wait for the next request
  std::chrono::milliseconds write_timeout{10000};
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1 << 20;
  int worker_threads = 4;
  std::size_t max_queued = 256;  // requests waiting for or on a worker; more get 503
};

// What the listener asks of the application. admit() and quick handle()
// calls run on the I/O thread and must not block; handle() for worker
// requests runs on a worker thread. None may throw.
class HttpHandler {
 public:
  enum class Where { IoThread, Worker };
  struct Admission {
    std::optional<HttpResponse> refusal;  // answer now, without reading the body
    Where where = Where::Worker;
  };
  virtual ~HttpHandler() = default;
  // The request's line and headers (body not read yet).
  virtual Admission admit(const HttpRequest& head) = 0;
  virtual HttpResponse handle(HttpRequest& request) = 0;
  // A reply the transport made itself (timeout, malformed or oversized
  // request, server busy); `head` is null when no header was complete.
  virtual void on_transport_reply(const HttpRequest* head, const HttpResponse& reply) = 0;
};

struct HttpListenerStats {
  std::uint64_t connections_open = 0;
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;  // over max_connections
  std::uint64_t request_timeouts = 0;     // requests not received in full by their deadline
  std::uint64_t busy_refusals = 0;        // complete requests refused because the queue was full
};

class HttpListener {
 public:
  HttpListener(HttpListenerOptions options, HttpHandler& handler);
  ~HttpListener();  // stops

  // Binds (exclusively: a port another socket listens on is an InputError)
  // and serves on background threads; returns the bound port.
  int start();
  // Stops accepting, closes idle connections, lets requests being handled
  // finish and be written (up to `grace`), then closes the rest. Idempotent.
  void stop(std::chrono::milliseconds grace);
  HttpListenerStats stats() const;

  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  struct Impl;  // defined in the .cpp; public only so its sessions can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ldaproj::serve
