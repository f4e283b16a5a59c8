// Crash safety: the real `ldaproj` is SIGKILLed at seeded random points during
// import, embed, train, distill and ensemble (between two SQLite calls, by the preloaded
// tests/fault/sqlite_kill_preload.cpp). After every kill the database must
// pass `PRAGMA integrity_check`, hold either the state before the command or
// the one after it (never a part of one logical write), and the model must
// still load and answer; rerunning the command then completes the work.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "demo_store.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/store.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

namespace fs = std::filesystem;
using testing_support::CliOptions;
using testing_support::CliResult;
using testing_support::raw_sql;
using testing_support::run_cli;

constexpr int kRandomKillPoints = 2;

// What a reader can see of the store; enough to tell "before" from "after".
struct Seen {
  std::int64_t clusters = 0, questions = 0, answers = 0, embeddings = 0;
  std::string active_projection;
  float temperature = 0;
  bool has_student = false;
  std::size_t ensemble_parameters = 0;  // 0 without an ensemble
};

class CrashSafety : public testing_support::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    db_ = file("crash.db");
    testing_support::make_trained_demo_store(db_);
  }

  static CliOptions preloaded(const std::vector<std::string>& settings) {
    CliOptions options;
    options.environment = settings;
    options.environment.push_back(std::string("LD_PRELOAD=") + LDAPROJ_SQLITE_KILL_PRELOAD);
    // Under ASan the preloaded library comes before libasan, which ASan accepts when told to.
    const char* asan = std::getenv("ASAN_OPTIONS");
    options.environment.push_back(std::string("ASAN_OPTIONS=") + (asan ? std::string(asan) + ":" : "") +
                                  "verify_asan_link_order=0");
    return options;
  }

  static void copy_database(const fs::path& from, const fs::path& to) {
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::error_code ec;
      fs::remove(to.string() + suffix, ec);
      if (fs::exists(from.string() + suffix)) fs::copy_file(from.string() + suffix, to.string() + suffix);
    }
  }

  // Runs the command to completion on a copy of the database: the number of
  // SQLite calls it makes, and the state it leaves.
  std::pair<long, Seen> dry_run(const std::vector<std::string>& args) {
    const fs::path copy = file("dry-run.db");
    copy_database(db_, copy);
    const fs::path count = file("calls.txt");
    const CliResult r =
        run_cli(with_db(args, copy), preloaded({"LDAPROJ_COUNT_SQLITE_CALLS_TO=" + count.string()}));
    EXPECT_EQ(r.code, 0) << r.out;
    const long calls = std::stol(testing_support::read_bytes(count));
    EXPECT_GT(calls, 2);
    return {calls, check_serves(copy)};
  }

  static std::vector<std::string> with_db(std::vector<std::string> args, const fs::path& db) {
    args.insert(args.begin() + 1, {"--db", db.string()});
    return args;
  }

  // Seeded random call numbers, and the last two calls (inside the final
  // transaction or right after it), in the order they are tried.
  static std::vector<long> kill_points(long calls, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<long> pick(1, calls - 2);
    std::vector<long> points;
    for (int i = 0; i < kRandomKillPoints; ++i) points.push_back(pick(rng));
    points.push_back(calls - 1);
    points.push_back(calls);
    return points;
  }

  // Runs the command and SIGKILLs it just before SQLite call `at`.
  void kill_at(const std::vector<std::string>& args, long at) {
    const CliResult r = run_cli(with_db(args, db_), preloaded({"LDAPROJ_KILL_AT_SQLITE_CALL=" + std::to_string(at)}));
    // A rerun after an earlier kill may have less left to do and finish first.
    EXPECT_TRUE(r.signal == SIGKILL || r.code == 0) << "exit " << r.code << ", signal " << r.signal << "\n" << r.out;
    kills_ += r.signal == SIGKILL ? 1 : 0;
  }

  // The database is sound and its active model loads and answers.
  static Seen check_serves(const fs::path& db) {
    Seen seen;
    EXPECT_EQ(raw_sql(db, "PRAGMA integrity_check"), "ok\n");
    EXPECT_EQ(raw_sql(db, "PRAGMA foreign_key_check"), "");
    const Store store = Store::open_read_only(db);
    const StoreStats stats = store.stats();
    seen.clusters = stats.clusters;
    seen.questions = stats.questions;
    seen.answers = stats.answers;
    for (const auto& [model, count] : stats.embeddings_per_model) seen.embeddings += count;
    const Searcher searcher = Searcher::load(store);
    seen.active_projection = searcher.projection_name();
    seen.temperature = searcher.temperature();
    seen.has_student = searcher.has_student();
    seen.ensemble_parameters = searcher.ensemble_parameters();
    const Matrix query = testing_support::random_unit_rows(2, testing_support::kBundledModelDim, 11);
    std::vector<Method> methods{Method::MultiHead};
    if (seen.has_student) methods.push_back(Method::Student);
    if (searcher.has_ensemble()) methods.push_back(Method::Ensemble);
    for (const Method method : methods) {
      SearchOptions options;
      options.method = method;
      for (const QueryResult& result : searcher.search(query, options)) {
        EXPECT_FALSE(result.answers.empty()) << to_string(method);
      }
    }
    return seen;
  }

  // Kills the command at each point, checking after every kill that the
  // store is sound and that `allowed(seen, before, after)` holds, then reruns
  // it to completion and expects `allowed(seen, after, after)`.
  template <typename Allowed>
  void crash_and_recover(const std::vector<std::string>& args, unsigned seed, Allowed allowed) {
    const Seen before = check_serves(db_);
    const auto [calls, after] = dry_run(args);
    for (const long at : kill_points(calls, seed)) {
      SCOPED_TRACE("killed before SQLite call " + std::to_string(at) + " of " + std::to_string(calls));
      kill_at(args, at);
      EXPECT_TRUE(allowed(check_serves(db_), before, after));
    }
    // The kills must have happened: the point before the last call always kills.
    EXPECT_GE(kills_, 1);
    const CliResult rerun = run_cli(with_db(args, db_));
    ASSERT_EQ(rerun.code, 0) << rerun.out;
    EXPECT_TRUE(allowed(check_serves(db_), after, after));
  }

  // For a command that is one logical write: the state before it or after it.
  template <typename Same>
  static auto before_or_after(Same same) {
    return [same](const Seen& seen, const Seen& before, const Seen& after) {
      return same(seen, before) || same(seen, after);
    };
  }

  fs::path db_;
  int kills_ = 0;
};

// New clusters in a file of their own: an import is all of them or none.
TEST_F(CrashSafety, ImportIsAllOrNothing) {
  std::string jsonl;
  for (int c = 0; c < 40; ++c) {
    const std::string id = "crash_" + std::to_string(c);
    for (int q = 0; q < 4; ++q) {
      jsonl += "{\"cluster\":\"" + id + "\",\"question\":\"question " + std::to_string(q) + " of " + id + "\"}\n";
    }
    jsonl += "{\"cluster\":\"" + id + "\",\"answer\":\"the answer of " + id + "\"}\n";
  }
  write_file(file("new.jsonl"), jsonl);
  crash_and_recover({"import", file("new.jsonl").string()}, 1, before_or_after([](const Seen& a, const Seen& b) {
                      return a.clusters == b.clusters && a.questions == b.questions && a.answers == b.answers;
                    }));
}

// Embedding batches are committed one by one: a kill keeps the finished ones
// (between none and all new embeddings) and the rerun embeds the rest.
TEST_F(CrashSafety, EmbedKeepsFinishedBatchesAndResumes) {
  write_file(file("new.jsonl"),
             "{\"cluster\":\"sync\",\"question\":\"why does sync stop halfway\"}\n"
             "{\"cluster\":\"sync\",\"question\":\"sync never finishes\"}\n"
             "{\"cluster\":\"sync\",\"answer\":\"Restart the sync service and check the log.\"}\n"
             "{\"cluster\":\"login\",\"question\":\"cannot log in after reset\"}\n"
             "{\"cluster\":\"login\",\"question\":\"password reset does not work\"}\n"
             "{\"cluster\":\"login\",\"answer\":\"Clear the cached credentials and sign in again.\"}\n");
  ASSERT_EQ(run_cli({"import", "--db", db_.string(), file("new.jsonl").string()}).code, 0);
  const std::int64_t before = check_serves(db_).embeddings;
  std::int64_t least = before;
  crash_and_recover({"embed", "--batch-size", "1", "-q"}, 2,
                    [&](const Seen& seen, const Seen&, const Seen& after) {
                      // Never fewer than the last kill left, never more than a full run makes.
                      const bool kept = seen.embeddings >= least && seen.embeddings <= after.embeddings;
                      least = seen.embeddings;
                      return kept;
                    });
  EXPECT_EQ(check_serves(db_).embeddings, before + 6);
}

// Training a new projection writes it and makes it active in one transaction:
// the old one serves until then.
TEST_F(CrashSafety, TrainSwitchesTheActiveProjectionWhole) {
  crash_and_recover({"train", "--name", "retrained", "--temperature", "0.05"}, 3,
                    before_or_after([](const Seen& a, const Seen& b) {
                      return a.active_projection == b.active_projection && a.temperature == b.temperature;
                    }));
  EXPECT_EQ(check_serves(db_).active_projection, "retrained");
  EXPECT_TRUE(Store::open_read_only(db_).load_projection("multi_head_all-MiniLM-L6-v2").has_value());
}

// A distilled student is stored whole or not at all, next to the teacher.
TEST_F(CrashSafety, DistillStoresTheStudentWhole) {
  crash_and_recover({"distill", "--heads", "4", "--keys-per-head", "4", "--samples", "200", "--epochs", "1",
                     "--threads", "1", "-q"},
                    4, before_or_after([](const Seen& a, const Seen& b) { return a.has_student == b.has_student; }));
  EXPECT_TRUE(check_serves(db_).has_student);
}

// An ensemble replaces the projection's earlier one in one transaction: the
// old ensemble (two domains) serves until the new one (three) is stored whole.
TEST_F(CrashSafety, EnsembleReplacesTheEarlierOneWhole) {
  const auto ensemble = [](const char* domains) {
    return std::vector<std::string>{"ensemble", "--domains", domains, "--top-domains", "1",
                                    "--heads", "2", "--keys-per-head", "2", "--samples", "100", "--epochs", "1",
                                    "--router-hidden", "8", "--router-epochs", "1", "--router-samples", "100",
                                    "--threads", "1", "--quiet"};
  };
  const CliResult first = run_cli(with_db(ensemble("2"), db_));
  ASSERT_EQ(first.code, 0) << first.out;
  const std::size_t two_domains = check_serves(db_).ensemble_parameters;
  ASSERT_GT(two_domains, 0u);
  crash_and_recover(ensemble("3"), 5, before_or_after([](const Seen& a, const Seen& b) {
                      return a.ensemble_parameters == b.ensemble_parameters && a.has_student == b.has_student &&
                             a.active_projection == b.active_projection;
                    }));
  EXPECT_NE(check_serves(db_).ensemble_parameters, two_domains);
}

}  // namespace
}  // namespace ldaproj
