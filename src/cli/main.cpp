// The ldaproj command line: import, embed, train, query, validate, stats,
// encode. Exit codes: 0 ok, 1 failure, 2 usage.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/progress.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/eval.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/train.hpp"
#include "text/utf8.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ldaproj::cli {
namespace {

// Options shared by every command that turns text into embeddings.
struct EncoderFlags {
  std::string model_dir;
  int threads = 0;
  std::size_t max_tokens = 256;
  std::size_t batch_size = 32;

  void add_to(CLI::App& cmd) {
    cmd.add_option("--model", model_dir,
                   "Model directory with config.json, tokenizer.json and a .safetensors file "
                   "(default: $LDAPROJ_MODEL, else the bundled all-MiniLM-L6-v2)");
    cmd.add_option("--threads", threads, "Threads for encoding and routing (default: all cores)")
        ->check(CLI::NonNegativeNumber);
    cmd.add_option("--max-tokens", max_tokens,
                   "Truncate texts to this many tokens including [CLS]/[SEP]")
        ->capture_default_str()
        ->check(CLI::Range(2, 512));
  }

  Encoder load() const {
    EncoderOptions options;
    options.threads = threads;
    options.max_tokens = max_tokens;
    options.batch_size = batch_size;
    return Encoder::load(resolve_model_dir(model_dir), options);
  }
};

// How commands that route queries keep the teacher's heads.
struct TeacherFlags {
  std::string precision = "fp32";

  void add_to(CLI::App& cmd) {
    cmd.add_option("--precision", precision,
                   "Storage of centroids and answers for routing: fp32, bf16 (half the memory "
                   "traffic) or int8 (a quarter); see docs/BENCHMARKS.md for the accuracy cost")
        ->capture_default_str();
  }

  TeacherOptions options(const EncoderFlags& enc) const { return {parse_precision(precision), enc.threads}; }
};

void require_existing_db(const std::string& db) {
  if (!fs::exists(db)) {
    throw InputError("database " + db + " does not exist; create it with `ldaproj import --db " +
                     db + " FILE...`");
  }
}

// The embedding model a store was embedded with: the only one, or the one
// the user names when there are several.
std::string pick_embedding_model(const Store& store, const std::string& requested) {
  StoreStats stats = store.stats();
  if (!requested.empty()) return requested;
  // A model registered by an embed run that stored nothing does not count.
  std::erase_if(stats.embeddings_per_model, [](const auto& model) { return model.second == 0; });
  if (stats.embeddings_per_model.empty()) {
    throw InputError("no embeddings in " + store.path().string() + "; run `ldaproj embed --db " +
                     store.path().string() + "` first");
  }
  if (stats.embeddings_per_model.size() > 1) {
    std::string names;
    for (const auto& [name, count] : stats.embeddings_per_model) names += " " + name;
    throw InputError("the store holds embeddings of several models (" + names.substr(1) +
                     "); choose one with --embedding-model");
  }
  return stats.embeddings_per_model.front().first;
}

std::string percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%5.1f%%", 100.0 * v);
  return buf;
}

std::string method_key(Method m) {
  std::string key(to_string(m));
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

json metrics_json(const RetrievalMetrics& m) {
  return {{"recall_at_1", m.recall_at_1}, {"recall_at_5", m.recall_at_5}, {"mrr_at_10", m.mrr_at_10}};
}

std::vector<float> parse_float_list(const std::string& text, const char* flag) {
  std::vector<float> values;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      std::size_t used = 0;
      const float v = std::stof(item, &used);
      if (used != item.size() || !(v > 0.0f) || !std::isfinite(v)) throw std::invalid_argument(item);
      values.push_back(v);
    } catch (const std::exception&) {
      throw InputError(std::string(flag) + ": \"" + item + "\" is not a positive number");
    }
  }
  if (values.empty()) throw InputError(std::string(flag) + ": give a comma-separated list, e.g. 0.05,0.1,0.5");
  return values;
}

// Runs `action`; a failure that is not the user's input (I/O, a full disk)
// gets `doing` in front so the message says which step failed.
template <typename Action>
auto while_doing(const std::string& doing, Action&& action) {
  try {
    return action();
  } catch (const InputError&) {
    throw;
  } catch (const Error& e) {
    throw Error(doing + ": " + e.what());
  }
}

// ---------------------------------------------------------------- import
int run_import(const std::string& db, const std::vector<std::string>& files) {
  Store store = Store::open(db);
  for (const auto& file : files) {
    const ImportReport r = while_doing("importing " + file + " into " + db, [&] { return import_file(store, file); });
    const char* what = r.outcome == ImportOutcome::Unchanged ? "unchanged, skipped"
                       : r.outcome == ImportOutcome::Updated ? "updated"
                                                             : "imported";
    std::printf("%s: %s (%lld clusters, %lld questions, %lld answers)\n", file.c_str(), what,
                static_cast<long long>(r.clusters), static_cast<long long>(r.questions),
                static_cast<long long>(r.answers));
  }
  return 0;
}

// ---------------------------------------------------------------- embed
int run_embed(const std::string& db, const EncoderFlags& flags, std::size_t batch, bool quiet) {
  require_existing_db(db);
  Store store = Store::open(db);
  const Encoder encoder = flags.load();
  // A broken model (NaN weights) fails here, before the store registers it.
  (void)encoder.encode({"model check"});
  const std::int64_t model_id = store.ensure_model(encoder.model_name(), encoder.dim());
  std::size_t total_done = 0;
  for (EntityKind kind : {EntityKind::Question, EntityKind::Answer}) {
    const char* label = kind == EntityKind::Question ? "questions" : "answers";
    const std::vector<PendingText> pending = store.missing_embeddings(model_id, kind);
    if (pending.empty()) continue;
    Progress progress(std::string("embedding ") + label, pending.size(), quiet);
    // Each batch is committed on its own, so an interrupted run keeps every
    // finished batch and a rerun picks up where it stopped.
    for (std::size_t begin = 0; begin < pending.size(); begin += batch) {
      const std::size_t end = std::min(pending.size(), begin + batch);
      std::vector<std::string> texts;
      std::vector<std::int64_t> ids;
      for (std::size_t i = begin; i < end; ++i) {
        texts.push_back(pending[i].text);
        ids.push_back(pending[i].id);
      }
      const Matrix vectors = encoder.encode(texts);
      while_doing("storing embeddings in " + db, [&] { store.put_embeddings(model_id, kind, ids, vectors); });
      progress.advance(end - begin);
    }
    total_done += pending.size();
  }
  std::printf("%s: %zu new embeddings with %s (%zu-d)\n", db.c_str(), total_done,
              encoder.model_name().c_str(), encoder.dim());
  return 0;
}

// ---------------------------------------------------------------- train
int run_train(const std::string& db, const std::string& embedding_model, float temperature,
              const std::string& name, const std::string& centroid) {
  require_existing_db(db);
  Store store = Store::open(db);
  TeacherTrainOptions options;
  options.temperature = temperature;
  options.name = name;
  options.centroid_method = parse_centroid_method(centroid);
  const std::string model = pick_embedding_model(store, embedding_model);
  const TeacherTrainReport r =
      while_doing("training on " + db, [&] { return train_teacher(store, model, options); });
  for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::printf("trained projection \"%s\": %zu heads from %zu questions, %s centroids, "
              "temperature %g, model %s (now active)\n",
              r.name.c_str(), r.heads, r.questions, centroid.c_str(), temperature, model.c_str());
  return 0;
}

// ---------------------------------------------------------------- query
struct QueryFlags {
  std::string method = "multi-head";
  std::size_t top_k = 5;
  bool show_routing = false;
  bool as_json = false;
  std::optional<float> temperature;
  std::string projection;
  std::size_t routing_top = 8;
};

std::string bar(float fraction, int width) {
  const int filled = static_cast<int>(std::lround(std::clamp(fraction, 0.0f, 1.0f) * width));
  std::string s;
  for (int i = 0; i < width; ++i) s += i < filled ? "█" : "·";
  return s;
}

// Refuses a text the encoder must not see: invalid UTF-8 or over the length
// limit (and blank, unless `allow_blank`). `what` names it, e.g. "query #2".
void check_text(const std::string& text, const std::string& what, bool allow_blank) {
  if (const std::string bad = text::describe_invalid_utf8(text); !bad.empty()) {
    throw InputError(what + ": " + bad + "; give the text in UTF-8");
  }
  if (text.size() > kMaxTextBytes) {
    throw InputError(what + " is " + std::to_string(text.size()) + " bytes long, over the limit of " +
                     std::to_string(kMaxTextBytes) + "; shorten it");
  }
  if (!allow_blank && text.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw InputError(what + " is empty; give the question as text");
  }
}

int run_query(const std::string& db, const EncoderFlags& enc, const TeacherFlags& teacher, const QueryFlags& f,
              const std::vector<std::string>& texts) {
  for (std::size_t i = 0; i < texts.size(); ++i) check_text(texts[i], "query #" + std::to_string(i + 1), false);
  require_existing_db(db);
  Store store = Store::open_for_reading(db);
  const Searcher searcher = Searcher::load(store, f.projection, teacher.options(enc));
  const Encoder encoder = enc.load();
  if (encoder.model_name() != searcher.model_name()) {
    throw InputError("the projection was trained on " + searcher.model_name() +
                     " embeddings but the encoder is " + encoder.model_name() +
                     "; pass --model with the matching model directory");
  }
  SearchOptions options;
  options.method = parse_method(f.method);
  options.top_k = f.top_k;
  options.temperature = f.temperature;
  options.routing_top = (f.show_routing || f.as_json) ? f.routing_top : 0;
  const auto results = searcher.search(encoder.encode(texts), options);

  for (std::size_t i = 0; i < texts.size(); ++i) {
    const QueryResult& r = results[i];
    if (f.as_json) {
      json out{{"query", texts[i]}, {"method", to_string(options.method)}, {"answers", json::array()}};
      for (const auto& a : r.answers) {
        out["answers"].push_back({{"cluster", a.cluster}, {"answer_id", a.answer_id},
                                  {"score", a.score}, {"text", a.text}});
      }
      if (!r.routing.empty()) {
        out["temperature"] = options.temperature.value_or(searcher.temperature());
        out["routing"] = json::array();
        for (const auto& h : r.routing) {
          out["routing"].push_back({{"cluster", h.cluster}, {"weight", h.weight}, {"similarity", h.similarity}});
        }
      }
      std::cout << out.dump() << "\n";
      continue;
    }
    std::printf("query: %s\n", texts[i].c_str());
    for (std::size_t k = 0; k < r.answers.size(); ++k) {
      const auto& a = r.answers[k];
      std::printf("  %zu. [%.3f] %s\n     %s\n", k + 1, a.score, a.cluster.c_str(), a.text.c_str());
    }
    if (f.show_routing && !r.routing.empty()) {
      std::printf("  routing (temperature %g, top %zu of %zu heads):\n",
                  options.temperature.value_or(searcher.temperature()), r.routing.size(),
                  searcher.num_heads());
      std::size_t width = 0;
      for (const auto& h : r.routing) width = std::max(width, h.cluster.size());
      for (const auto& h : r.routing) {
        std::printf("    %-*s %s %.3f  (cos %.3f)\n", static_cast<int>(width), h.cluster.c_str(),
                    bar(h.weight, 30).c_str(), h.weight, h.similarity);
      }
    } else if (f.show_routing) {
      std::printf("  (routing is shown for --method multi-head only)\n");
    }
    std::printf("\n");
  }
  return 0;
}

// ---------------------------------------------------------------- validate
int run_validate(const std::string& db, const EncoderFlags& enc, const TeacherFlags& teacher,
                 const std::string& test_file,
                 std::optional<float> temperature, const std::string& sweep, bool as_json,
                 const std::string& projection, const std::string& methods_flag) {
  require_existing_db(db);
  const std::vector<LabeledQuery> tests = read_test_queries(test_file);
  for (std::size_t i = 0; i < tests.size(); ++i) {
    check_text(tests[i].text, test_file + ": query #" + std::to_string(i + 1), false);
  }
  Store store = Store::open_for_reading(db);
  const Searcher searcher = Searcher::load(store, projection, teacher.options(enc));
  const Encoder encoder = enc.load();
  if (encoder.model_name() != searcher.model_name()) {
    throw InputError("the projection was trained on " + searcher.model_name() +
                     " embeddings but the encoder is " + encoder.model_name());
  }
  std::set<std::string> known;
  for (const Cluster& c : store.clusters()) known.insert(c.external_id);
  std::vector<std::string> texts, expected;
  std::size_t unknown = 0;
  std::string unknown_example;
  for (const auto& t : tests) {
    texts.push_back(t.text);
    expected.push_back(t.cluster);
    if (!known.count(t.cluster)) {
      ++unknown;
      if (unknown_example.empty()) unknown_example = t.cluster;
    }
  }
  if (unknown > 0) {
    std::fprintf(stderr, "warning: %s: %zu test queries name clusters that are not in the store "
                 "(e.g. \"%s\"); they count as misses\n", test_file.c_str(), unknown, unknown_example.c_str());
  }
  const Matrix queries = encoder.encode(texts);
  const float tau = temperature.value_or(searcher.temperature());

  std::vector<Method> methods;
  if (methods_flag.empty()) {
    methods.assign(std::begin(kAllMethods), std::end(kAllMethods));
  } else {
    std::stringstream ss(methods_flag);
    std::string m;
    while (std::getline(ss, m, ',')) methods.push_back(parse_method(m));
  }

  json out{{"queries", tests.size()}, {"temperature", tau}, {"projection", searcher.projection_name()},
           {"methods", json::object()}};
  std::vector<std::pair<Method, RetrievalMetrics>> table;
  for (Method m : methods) {
    SearchOptions options;
    options.method = m;
    options.top_k = 10;
    options.temperature = tau;
    const RetrievalMetrics metrics = score_results(searcher.search(queries, options), expected);
    table.emplace_back(m, metrics);
    out["methods"][method_key(m)] = metrics_json(metrics);
  }
  std::vector<std::pair<float, RetrievalMetrics>> sweep_rows;
  if (!sweep.empty()) {
    out["sweep"] = json::array();
    for (float t : parse_float_list(sweep, "--sweep-temperature")) {
      SearchOptions options;
      options.top_k = 10;
      options.temperature = t;
      const RetrievalMetrics metrics = score_results(searcher.search(queries, options), expected);
      sweep_rows.emplace_back(t, metrics);
      json row = metrics_json(metrics);
      row["temperature"] = t;
      out["sweep"].push_back(row);
    }
  }
  if (as_json) {
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::printf("%zu held-out queries, projection \"%s\" (%zu heads), temperature %g\n\n", tests.size(),
              searcher.projection_name().c_str(), searcher.num_heads(), tau);
  std::printf("  %-12s %8s %8s %8s\n", "method", "R@1", "R@5", "MRR@10");
  for (const auto& [m, r] : table) {
    std::printf("  %-12s %8s %8s %8.3f\n", std::string(to_string(m)).c_str(),
                percent(r.recall_at_1).c_str(), percent(r.recall_at_5).c_str(), r.mrr_at_10);
  }
  if (!sweep_rows.empty()) {
    std::printf("\n  multi-head over temperature:\n  %-12s %8s %8s %8s\n", "temperature", "R@1", "R@5", "MRR@10");
    for (const auto& [t, r] : sweep_rows) {
      std::printf("  %-12g %8s %8s %8.3f\n", t, percent(r.recall_at_1).c_str(),
                  percent(r.recall_at_5).c_str(), r.mrr_at_10);
    }
  }
  return 0;
}

// ---------------------------------------------------------------- stats
int run_stats(const std::string& db, bool as_json) {
  require_existing_db(db);
  Store store = Store::open_for_reading(db);
  const StoreStats s = store.stats();
  json out{{"database", db}, {"schema_version", s.schema_version}, {"clusters", s.clusters},
           {"questions", s.questions}, {"answers", s.answers}, {"import_batches", s.batches},
           {"embeddings", json::object()}, {"projections", json::array()}};
  for (const auto& [model, count] : s.embeddings_per_model) out["embeddings"][model] = count;
  for (const auto& p : s.projections) {
    out["projections"].push_back({{"name", p.name}, {"model", p.model}, {"temperature", p.temperature},
                                  {"centroid_method", p.centroid_method}, {"active", p.active},
                                  {"created_at", p.created_at},
                                  {"metrics", json::parse(p.metrics_json.empty() ? "{}" : p.metrics_json)}});
  }
  if (as_json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("%s (schema v%d)\n  clusters   %lld\n  questions  %lld\n  answers    %lld\n  imports    %lld\n",
              db.c_str(), s.schema_version, static_cast<long long>(s.clusters),
              static_cast<long long>(s.questions), static_cast<long long>(s.answers),
              static_cast<long long>(s.batches));
  for (const auto& [model, count] : s.embeddings_per_model) {
    std::printf("  embeddings %lld (%s)\n", static_cast<long long>(count), model.c_str());
  }
  for (const auto& p : s.projections) {
    std::printf("  projection %s%s: model %s, temperature %g, %s centroids, %s, metrics %s\n",
                p.name.c_str(), p.active ? " (active)" : "", p.model.c_str(), p.temperature,
                p.centroid_method.c_str(), p.created_at.c_str(), p.metrics_json.c_str());
  }
  return 0;
}

// ---------------------------------------------------------------- encode
int run_encode(const EncoderFlags& enc, bool as_json, std::vector<std::string> texts) {
  const bool from_stdin = texts.empty();
  if (from_stdin) {
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      texts.push_back(line);
    }
  }
  for (std::size_t i = 0; i < texts.size(); ++i) {
    check_text(texts[i], (from_stdin ? "standard input, line " : "text #") + std::to_string(i + 1), true);
  }
  const Encoder encoder = enc.load();
  // Encode in chunks so a long stdin stream prints as it goes.
  constexpr std::size_t kChunk = 256;
  for (std::size_t begin = 0; begin < texts.size(); begin += kChunk) {
    const std::vector<std::string> chunk(texts.begin() + static_cast<std::ptrdiff_t>(begin),
                                         texts.begin() + static_cast<std::ptrdiff_t>(std::min(texts.size(), begin + kChunk)));
    const Matrix m = encoder.encode(chunk);
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      if (as_json) {
        json out{{"text", chunk[i]}, {"embedding", std::vector<float>(m.row(i), m.row(i) + m.cols)}};
        std::cout << out.dump() << "\n";
      } else {
        std::cout << chunk[i];
        char buf[32];
        for (std::size_t j = 0; j < m.cols; ++j) {
          std::snprintf(buf, sizeof buf, "%c%.9g", j == 0 ? '\t' : ' ', m(i, j));
          std::cout << buf;
        }
        std::cout << "\n";
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace ldaproj::cli

int main(int argc, char** argv) {
  using namespace ldaproj::cli;
  CLI::App app{"ldaproj: question->answer semantic search by multi-head projection.\n"
               "Typical flow: import -> embed -> train -> query/validate."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("ldaproj ") + LDAPROJ_VERSION_STRING);

  std::string db;
  auto add_db = [&db](CLI::App* cmd) {
    cmd->add_option("--db", db, "SQLite database file")->required();
  };

  std::vector<std::string> files;
  auto* import_cmd = app.add_subcommand("import", "Import Q-A clusters from JSON (original format) or JSONL files");
  add_db(import_cmd);
  import_cmd->add_option("files", files, "Files to import; each is one transaction")->required()->check(CLI::ExistingFile);
  import_cmd->footer(
      "Formats: {\"clusters\":[{\"id\", \"answers\":{\"default\":...}, \"queries\":{\"short\":[...],...}}]}\n"
      "or JSON Lines {\"cluster\",\"question\"[,\"length\"]} / {\"cluster\",\"answer\"[,\"variant\"]}.\n"
      "Re-importing an unchanged file is a no-op; a changed file replaces its earlier batch.");

  EncoderFlags enc;
  std::size_t embed_batch = 64;
  bool quiet = false;
  auto* embed_cmd = app.add_subcommand("embed", "Embed every question and answer that has no embedding for the model");
  add_db(embed_cmd);
  enc.add_to(*embed_cmd);
  embed_cmd->add_option("--batch-size", embed_batch, "Texts per committed batch")->capture_default_str()->check(CLI::PositiveNumber);
  embed_cmd->add_flag("--quiet,-q", quiet, "No progress output");
  embed_cmd->footer("Resumable: every finished batch is committed, so an interrupted run loses nothing.");

  float temperature = ldaproj::kDefaultTemperature;
  std::string name, centroid = "mean", embedding_model;
  auto* train_cmd = app.add_subcommand("train", "Train the multi-head projection (one head per cluster)");
  add_db(train_cmd);
  train_cmd->add_option("--temperature", temperature, "Routing softmax temperature")->capture_default_str()->check(CLI::PositiveNumber);
  train_cmd->add_option("--name", name, "Projection name (default: multi_head_<model>)");
  train_cmd->add_option("--centroid", centroid, "Centroid of a head's questions: mean or reweighted")
      ->capture_default_str()->check(CLI::IsMember({"mean", "reweighted"}));
  train_cmd->add_option("--embedding-model", embedding_model, "Embedding model name when the store holds several");

  QueryFlags qf;
  std::vector<std::string> query_texts;
  std::optional<float> query_temperature;
  auto* query_cmd = app.add_subcommand("query", "Answer text queries");
  add_db(query_cmd);
  enc.add_to(*query_cmd);
  TeacherFlags teacher;
  teacher.add_to(*query_cmd);
  query_cmd->add_option("--method", qf.method, "multi-head, direct or global-w")->capture_default_str();
  query_cmd->add_option("--top-k", qf.top_k, "Answers per query")->capture_default_str()->check(CLI::PositiveNumber);
  query_cmd->add_option("--temperature", query_temperature, "Override the projection's temperature")->check(CLI::PositiveNumber);
  query_cmd->add_option("--projection", qf.projection, "Projection name (default: the active one)");
  query_cmd->add_flag("--show-routing", qf.show_routing, "Show the heaviest heads as bars");
  query_cmd->add_option("--routing-top", qf.routing_top, "Heads shown with --show-routing")->capture_default_str();
  query_cmd->add_flag("--json", qf.as_json, "One JSON object per query");
  query_cmd->add_option("text", query_texts, "Query texts")->required();

  std::string test_file, sweep, methods;
  std::optional<float> validate_temperature;
  bool validate_json = false;
  std::string validate_projection;
  auto* validate_cmd = app.add_subcommand("validate", "Recall@1, Recall@5 and MRR@10 on held-out queries for every method");
  add_db(validate_cmd);
  enc.add_to(*validate_cmd);
  teacher.add_to(*validate_cmd);
  validate_cmd->add_option("--test", test_file, "Held-out file: {\"clusters\":[{\"id\",\"queries\":{\"novel\":[...]}}]} or JSONL {\"query\",\"cluster\"}")
      ->required()->check(CLI::ExistingFile);
  validate_cmd->add_option("--temperature", validate_temperature, "Temperature for multi-head (default: the projection's)")->check(CLI::PositiveNumber);
  validate_cmd->add_option("--sweep-temperature", sweep, "Comma-separated temperatures, e.g. 0.01,0.05,0.1,0.5,1");
  validate_cmd->add_option("--methods", methods, "Comma-separated subset of direct,global-w,multi-head");
  validate_cmd->add_option("--projection", validate_projection, "Projection name (default: the active one)");
  validate_cmd->add_flag("--json", validate_json, "Print one JSON object");

  bool stats_json = false;
  auto* stats_cmd = app.add_subcommand("stats", "Summarise the store");
  add_db(stats_cmd);
  stats_cmd->add_flag("--json", stats_json, "Print JSON");

  bool encode_json = false;
  std::vector<std::string> encode_texts;
  auto* encode_cmd = app.add_subcommand("encode", "Embed each TEXT (or each line of standard input)");
  enc.add_to(*encode_cmd);
  encode_cmd->add_flag("--json", encode_json, "One JSON line {\"text\", \"embedding\"} per input (default: text<TAB>values)");
  encode_cmd->add_option("text", encode_texts, "Texts (default: read lines from standard input)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  try {
    if (*import_cmd) return run_import(db, files);
    if (*embed_cmd) return run_embed(db, enc, embed_batch, quiet);
    if (*train_cmd) return run_train(db, embedding_model, temperature, name, centroid);
    if (*query_cmd) {
      qf.temperature = query_temperature;
      return run_query(db, enc, teacher, qf, query_texts);
    }
    if (*validate_cmd) {
      return run_validate(db, enc, teacher, test_file, validate_temperature, sweep, validate_json,
                          validate_projection, methods);
    }
    if (*stats_cmd) return run_stats(db, stats_json);
    if (*encode_cmd) return run_encode(enc, encode_json, encode_texts);
  } catch (const ldaproj::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 2;
}
