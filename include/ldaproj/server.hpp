// The HTTP service: a JSON API over a trained store (search, project, embed,
// clusters, health, Prometheus metrics, reload) and the built-in web page.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ldaproj/precision.hpp"

namespace ldaproj {

struct ServerOptions {
  std::filesystem::path db;             // a store with a trained projection
  std::string projection;               // empty: the active one
  std::filesystem::path model_dir;      // empty: resolve_model_dir()'s default
  std::size_t max_tokens = 256;         // encoder truncation
  Precision encoder_precision = Precision::F32;  // encoder weights (EncoderOptions::precision)
  std::string host = "127.0.0.1";
  int port = 8080;                      // 0: any free port (see Server::port())
  int threads = 0;                      // request worker threads; 0: cores, at least 4
  std::string api_key;                  // non-empty: /v1/* and /metrics need "Bearer KEY"
  std::size_t max_body_bytes = 1 << 20;  // larger bodies get 413
  std::size_t max_batch = 64;           // texts or embeddings per request
  std::size_t max_text_bytes = 4096;    // per text, UTF-8 bytes
  std::size_t max_top_k = 100;
  // Seconds from a request's first byte to its last (headers and body
  // together), and to write a response; a slower client gets 408 and is
  // disconnected, whatever its byte rate.
  int timeout_seconds = 10;
  int keep_alive_seconds = 5;           // idle wait for a connection's next request
  std::size_t max_connections = 1024;   // open at once; beyond that 503 and close
  std::size_t max_requests_per_connection = 1000;
  // Host header names answered besides loopback ones and --host (DNS
  // rebinding protection): exact names, ".example.com" for a domain and its
  // subdomains, "*" for any.
  std::vector<std::string> allowed_hosts;
  // Web origins (e.g. "https://app.example.com") whose pages may POST here;
  // the server's own page always may. "*" for any.
  std::vector<std::string> allowed_origins;
  // Default out-of-scope threshold for /v1/search requests that send no
  // reject_below; nullopt: none.
  std::optional<float> reject_below;
  // multi-head's blends (SearchOptions::blend_questions / blend_direct) for
  // requests that do not give blend_questions / blend_direct; each in [0, 1).
  float blend_questions = 0.0f;
  float blend_direct = 0.0f;
  // Called with one line per request (method, path, status, milliseconds)
  // when set; may run on any worker thread, one call at a time.
  std::function<void(const std::string&)> access_log;
};

// What is being served; changes on reload.
struct ServedModel {
  std::string projection;
  std::string model;  // embedding model name
  float temperature = 0.0f;
  std::size_t heads = 0;
  std::size_t answers = 0;
  std::size_t dim = 0;
  std::vector<std::string> methods;  // the search methods this store can answer by
  std::uint64_t generation = 0;      // 1 for the first load, +1 per successful reload
  // What the store has that this model does not serve yet (texts without
  // embeddings, clusters without heads or changed since training), one
  // sentence each naming the command that fixes it; empty when up to date.
  std::vector<std::string> warnings;
};

class Server {
 public:
  // Loads the encoder and the store's projection, and checks every method.
  // InputError when the store cannot be served (missing, untrained, embedded
  // with another model than the encoder's).
  explicit Server(ServerOptions options);

  // Binds and serves on background threads; returns the bound port once the
  // server accepts connections. InputError when the address cannot be bound.
  int start();
  // Stops accepting, lets in-flight requests finish, then returns. Idempotent.
  void stop();
  // Blocks until stop() (from another thread) has finished.
  void wait();

  // Loads the store's (now active, or the configured) projection into a new
  // model and swaps it in atomically: requests already running finish on the
  // old one. On failure the old model keeps serving and the error is thrown.
  ServedModel reload();

  ServedModel served() const;
  int port() const;  // 0 before start()

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();  // stops

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ldaproj
