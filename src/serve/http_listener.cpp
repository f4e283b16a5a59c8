// The Beast/Asio transport (http_listener.hpp). Every socket operation runs
// on the one I/O thread, so a session's state needs no lock; workers only run
// HttpHandler::handle() and post the reply back to the I/O thread.
#include "serve/http_listener.hpp"

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <exception>
#include <thread>
#include <unordered_set>
#include <utility>

#include "ldaproj/error.hpp"
#include "serve/api.hpp"
#include "serve/request_policy.hpp"

namespace ldaproj::serve {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

HttpResponse transport_error(int status, const std::string& code, const std::string& message) {
  HttpResponse r;
  r.status = status;
  r.body = error_body(code, message);
  r.close = true;
  return r;
}

std::string seconds_text(std::chrono::milliseconds ms) {
  const double s = static_cast<double>(ms.count()) / 1000.0;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

HttpRequest head_of(const http::request<http::string_body>& m, const std::string& remote) {
  HttpRequest r;
  r.method = std::string(m.method_string());
  r.target = std::string(m.target());
  r.path = r.target.substr(0, r.target.find('?'));
  r.version = static_cast<int>(m.version());
  for (const auto& field : m) r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  r.remote = remote;
  return r;
}

}  // namespace

class Session;

struct HttpListener::Impl {
  HttpListenerOptions options;
  HttpHandler& handler;

  // Declared before the I/O context: sessions still owned by its queued
  // handlers are destroyed with it and unregister themselves here.
  std::unordered_set<Session*> sessions;  // I/O thread only
  std::atomic<std::uint64_t> open{0}, accepted{0}, refused{0}, timeouts{0}, busy{0};
  std::atomic<std::size_t> queued{0};
  std::atomic<bool> draining{false};

  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_retry{io};
  std::optional<asio::thread_pool> workers;
  std::thread io_thread;
  bool started = false, stopped = false;

  Impl(HttpListenerOptions o, HttpHandler& h) : options(std::move(o)), handler(h) {}

  void accept();
  void run_io();
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(HttpListener::Impl& owner, tcp::socket socket)
      : owner_(owner), stream_(std::move(socket)), deadline_(stream_.get_executor()) {
    owner_.sessions.insert(this);
    ++owner_.open;
    beast::error_code ec;
    const tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = peer.address().to_string();
  }
  ~Session() {
    owner_.sessions.erase(this);
    --owner_.open;
  }

  void start() { read_header(); }

  // On shutdown: a connection with no request being handled or written goes
  // now; one that is busy finishes its reply first (and then closes).
  void close_if_idle() {
    if (!busy_) close_now();
  }

  void close_now() {
    if (closed_) return;
    closed_ = true;
    deadline_.cancel();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

 private:
  // Keep-alive: the idle wait for the next request has its own (shorter)
  // deadline; the request deadline starts with the request's first byte.
  void wait_for_next() {
    if (owner_.draining || closed_) return close_now();
    if (buffer_.size() > 0) return read_header();  // pipelined: already here
    stream_.expires_after(owner_.options.keep_alive_timeout);
    stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, std::size_t n) {
      self->buffer_.commit(n);
      if (ec || n == 0) return self->close_now();
      self->read_header();
    });
  }

  void read_header() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(owner_.options.max_header_bytes));
    parser_->body_limit(owner_.options.max_body_bytes);
    head_ = HttpRequest{};
    have_head_ = false;
    // Our own timer rather than the stream's expiry, which would close the
    // socket and leave no way to answer 408.
    stream_.expires_never();
    timed_out_ = false;
    deadline_.expires_after(owner_.options.request_timeout);
    deadline_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec) return;  // cancelled: the request arrived in time
      self->timed_out_ = true;
      beast::error_code ignored;
      self->stream_.socket().cancel(ignored);
    });
    http::async_read_header(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->on_header(ec);
    });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    const auto& message = parser_->get();
    head_ = head_of(message, remote_);
    have_head_ = true;
    keep_alive_ = message.keep_alive();
    version_ = message.version();
    // Beast folds repeated equal lengths into one; behind a proxy that reads
    // the other copy that is request smuggling, so any repeat is refused.
    if (!unambiguous_framing(head_)) {
      return transport_reply(transport_error(400, "bad_content_length",
                                             "the request has more than one Content-Length, or one together with "
                                             "Transfer-Encoding; send exactly one"));
    }
    HttpHandler::Admission admission = owner_.handler.admit(head_);
    if (admission.refusal) {
      // A body we will not read would be taken for the next request.
      if (!parser_->is_done()) admission.refusal->close = true;
      return reply(std::move(*admission.refusal));
    }
    where_ = admission.where;
    if (parser_->is_done()) return dispatch();
    if (equals_ignoring_case(head_.header("Expect"), "100-continue")) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, version_);
      http::async_write(stream_, *cont, [self = shared_from_this(), cont](beast::error_code ec, std::size_t) {
        if (ec) return self->close_now();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  // The deadline set in read_header() still runs: headers and body share it.
  void read_body() {
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->on_read_error(ec);
      self->dispatch();
    });
  }

  void on_read_error(beast::error_code ec) {
    deadline_.cancel();
    if (timed_out_) {
      ++owner_.timeouts;
      if (!parser_ || !parser_->got_some()) return close_now();  // idle: nothing to answer
      return transport_reply(transport_error(
          408, "request_timeout",
          "the request was not received in full within " + seconds_text(owner_.options.request_timeout) +
              " s; send the whole request at once"));
    }
    if (ec == http::error::body_limit) {
      // Refused while finishing the headers: they are all there, so the
      // reply is counted under the request's own endpoint.
      if (!have_head_) {
        head_ = head_of(parser_->get(), remote_);
        have_head_ = true;
      }
      return transport_reply(transport_error(413, "body_too_large",
                                             "the request body is larger than the limit of " +
                                                 std::to_string(owner_.options.max_body_bytes) + " bytes"));
    }
    if (ec == http::error::header_limit) {
      return transport_reply(transport_error(431, "headers_too_large",
                                             "the request line and headers are larger than the limit of " +
                                                 std::to_string(owner_.options.max_header_bytes) + " bytes"));
    }
    if (ec == http::error::bad_content_length) {
      return transport_reply(transport_error(
          400, "bad_content_length", "the Content-Length header is not one non-negative decimal number"));
    }
    if (ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
        ec != http::error::end_of_stream &&
        ec != http::error::partial_message) {
      return transport_reply(transport_error(400, "bad_request", "the HTTP request is malformed: " + ec.message()));
    }
    close_now();  // the peer went away or the network failed: nobody to tell
  }

  void transport_reply(HttpResponse r) {
    owner_.handler.on_transport_reply(have_head_ ? &head_ : nullptr, r);
    reply(std::move(r));
  }

  void dispatch() {
    deadline_.cancel();
    busy_ = true;
    HttpRequest request = std::move(head_);
    have_head_ = false;
    request.body = std::move(parser_->get().body());
    if (where_ == HttpHandler::Where::IoThread) {
      HttpResponse r = safe_handle(owner_.handler, request);
      return reply(std::move(r));
    }
    if (owner_.queued.load() >= owner_.options.max_queued) {
      ++owner_.busy;
      HttpResponse r = transport_error(503, "busy",
                                       "the server has " + std::to_string(owner_.options.max_queued) +
                                           " requests waiting; retry in a moment");
      r.close = false;  // the body was read; the connection is still in step
      r.set_header("Retry-After", "1");
      owner_.handler.on_transport_reply(&request, r);
      return reply(std::move(r));
    }
    ++owner_.queued;
    asio::post(*owner_.workers, [self = shared_from_this(), request = std::move(request)]() mutable {
      HttpResponse r = safe_handle(self->owner_.handler, request);
      --self->owner_.queued;
      asio::post(self->stream_.get_executor(),
                 [self, r = std::move(r)]() mutable { self->reply(std::move(r)); });
    });
  }

  static HttpResponse safe_handle(HttpHandler& handler, HttpRequest& request) {
    try {
      return handler.handle(request);
    } catch (...) {
      return transport_error(500, "internal", "unexpected failure");
    }
  }

  void reply(HttpResponse r) {
    if (closed_) return;
    busy_ = true;
    ++served_;
    const bool keep = keep_alive_ && !r.close && !owner_.draining &&
                      served_ < owner_.options.max_requests_per_connection;
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), version_);
    res->set(http::field::server, "ldaproj");
    if (!r.content_type.empty()) res->set(http::field::content_type, r.content_type);
    for (auto& [name, value] : r.headers) res->insert(name, value);
    res->body() = std::move(r.body);
    res->keep_alive(keep);
    res->prepare_payload();
    stream_.expires_after(owner_.options.write_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
      self->busy_ = false;
      if (ec) return self->close_now();
      if (!keep) return self->linger();
      self->wait_for_next();
    });
  }

  // Closing a socket with unread bytes in it sends a reset, which can destroy
  // the reply before the client reads it; so stop sending, then read and
  // discard for a moment before closing (nginx's lingering close).
  void linger() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close_now();
    stream_.expires_after(std::chrono::seconds(2));
    discard_more();
  }
  void discard_more() {
    stream_.async_read_some(asio::buffer(discard_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close_now();
      self->discard_more();
    });
  }

  HttpListener::Impl& owner_;
  beast::tcp_stream stream_;
  asio::steady_timer deadline_;  // the whole-request deadline
  bool timed_out_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest head_;
  bool have_head_ = false;
  std::string remote_;
  HttpHandler::Where where_ = HttpHandler::Where::Worker;
  bool keep_alive_ = false;
  unsigned version_ = 11;
  std::size_t served_ = 0;
  bool busy_ = false, closed_ = false;
  std::array<char, 4096> discard_{};
};

void HttpListener::Impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open() || draining) return;
    if (ec) {
      // Out of descriptors or similar: retry shortly instead of spinning.
      accept_retry.expires_after(std::chrono::milliseconds(50));
      accept_retry.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec) accept();
      });
      return;
    }
    if (open.load() >= options.max_connections) {
      ++refused;
      static const std::string kBusy = [] {
        const std::string body = error_body("too_many_connections", "the server has too many open connections; "
                                                                    "retry in a moment");
        return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
               "Retry-After: 1\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body;
      }();
      beast::error_code ignored;
      socket.non_blocking(true, ignored);
      socket.write_some(asio::buffer(kBusy.data(), kBusy.size()), ignored);
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      socket.close(ignored);
    } else {
      ++accepted;
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<Session>(*this, std::move(socket))->start();
    }
    accept();
  });
}

void HttpListener::Impl::run_io() {
  for (;;) {
    try {
      io.run();
      return;
    } catch (const std::exception&) {
      // A handler threw (it should not): keep serving the other connections.
    }
  }
}

HttpListener::HttpListener(HttpListenerOptions options, HttpHandler& handler)
    : impl_(std::make_unique<Impl>(std::move(options), handler)) {}

HttpListener::~HttpListener() { stop(std::chrono::milliseconds(0)); }

int HttpListener::start() {
  Impl& s = *impl_;
  if (s.started) return s.acceptor.local_endpoint().port();
  const std::string where = s.options.host + ":" + std::to_string(s.options.port);
  beast::error_code ec;
  tcp::resolver resolver(s.io);
  const auto results = resolver.resolve(s.options.host, std::to_string(s.options.port),
                                        tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    throw InputError("cannot listen on " + where + ": the host " + s.options.host +
                     " cannot be resolved (" + ec.message() + "); pass an address such as 127.0.0.1 to --host");
  }
  const tcp::endpoint endpoint = results.begin()->endpoint();
  s.acceptor.open(endpoint.protocol(), ec);
  // SO_REUSEADDR only lets a restart bind past old TIME_WAIT connections; a
  // port another socket listens on still fails (no SO_REUSEPORT, which would
  // let a second server silently take half the connections).
  if (!ec) s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (ec) {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    if (ec == asio::error::address_in_use) {
      throw InputError("cannot listen on " + where + ": the port is in use (another `ldaproj serve`?); " +
                       "stop that process or choose another --port");
    }
    throw InputError("cannot listen on " + where + ": " + ec.message() + "; choose another --port or --host");
  }
  s.acceptor.listen(s.options.backlog, ec);
  if (ec) throw InputError("cannot listen on " + where + ": " + ec.message());
  s.workers.emplace(static_cast<std::size_t>(std::max(1, s.options.worker_threads)));
  s.started = true;
  s.accept();
  s.io_thread = std::thread([&s] { s.run_io(); });
  return s.acceptor.local_endpoint().port();
}

void HttpListener::stop(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  if (!s.started || s.stopped) return;
  s.stopped = true;
  asio::post(s.io, [&s] {
    s.draining = true;
    beast::error_code ignored;
    s.acceptor.close(ignored);
    s.accept_retry.cancel();
    // Copy: closing may destroy a session, which erases itself from the set.
    const std::vector<Session*> now(s.sessions.begin(), s.sessions.end());
    for (Session* session : now) session->close_if_idle();
  });
  const auto until = std::chrono::steady_clock::now() + grace;
  while (s.open.load() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  s.workers->join();  // requests on workers finish; their replies are posted
  s.io.stop();
  if (s.io_thread.joinable()) s.io_thread.join();
}

HttpListenerStats HttpListener::stats() const {
  const Impl& s = *impl_;
  return {s.open.load(), s.accepted.load(), s.refused.load(), s.timeouts.load(), s.busy.load()};
}

}  // namespace ldaproj::serve
