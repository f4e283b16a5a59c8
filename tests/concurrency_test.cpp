// Readers keep working while a writer imports, embeds and trains, and never
// see a state that was not committed whole (a torn read).
//
// ConcurrentReaders.* run in one process with threads and are what the
// ThreadSanitizer build runs (`make test-tsan`); ConcurrentProcesses.* use the
// real CLI.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli_runner.hpp"
#include "demo_store.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/teacher.hpp"
#include "ldaproj/train.hpp"
#include "store/store_impl.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

namespace fs = std::filesystem;
using testing_support::random_unit_rows;

constexpr int kBaseClusters = 4;

class ConcurrentReaders : public testing_support::TempDirTest {
 protected:
  // Base clusters that never change, plus one "rotating" cluster per version
  // in a file of its own: re-importing that file removes the previous
  // version's cluster (and, by cascade, its head of the active projection).
  void write_rotating(int version) const {
    const std::string id = "rotating_" + std::to_string(version);
    write_file(file("rotating.jsonl"), "{\"cluster\":\"" + id + "\",\"question\":\"question of " + id +
                                           "\"}\n{\"cluster\":\"" + id + "\",\"answer\":\"answer of " + id +
                                           "\"}\n");
  }

  fs::path make_store() const {
    const fs::path db = file("concurrent.db");
    std::string base;
    for (int c = 0; c < kBaseClusters; ++c) {
      const std::string id = "base_" + std::to_string(c);
      base += "{\"cluster\":\"" + id + "\",\"question\":\"question of " + id + "\"}\n";
      base += "{\"cluster\":\"" + id + "\",\"answer\":\"answer of " + id + "\"}\n";
    }
    write_file(file("base.jsonl"), base);
    write_rotating(0);
    Store store = Store::open(db);
    import_file(store, file("base.jsonl"));
    import_file(store, file("rotating.jsonl"));
    testing_support::embed_randomly(store);
    train_teacher(store, testing_support::kBundledModelName, {});
    return db;
  }
};

// The writer does what `import`, `embed` and `train` do, each step its own
// transaction; two readers load a Searcher and answer over and over. Every
// Searcher must be usable and whole: every result names a cluster it knows,
// covers every answer and (multi-head) every head. The interleavings are
// left to the scheduler here; SearcherLoadIsOneSnapshot forces the one that matters.
TEST_F(ConcurrentReaders, ReadersAndAWriterRunTogether) {
  const fs::path db = make_store();
  constexpr int kVersions = 25;
  std::atomic<bool> writer_done{false};
  std::atomic<int> reads{0};
  std::string writer_error;

  std::thread writer([&] {
    try {
      Store store = Store::open(db);
      for (int version = 1; version <= kVersions; ++version) {
        write_rotating(version);
        import_file(store, file("rotating.jsonl"));
        testing_support::embed_randomly(store, static_cast<std::uint32_t>(version * 10));
        train_teacher(store, testing_support::kBundledModelName, {});
      }
    } catch (const std::exception& e) {
      writer_error = e.what();
    }
    writer_done = true;
  });

  std::mutex errors_mutex;
  std::vector<std::string> reader_errors;
  auto read_until_done = [&](std::uint32_t seed) {
    const Store store = Store::open_read_only(db);
    std::mt19937 rng(seed);
    const Matrix queries = random_unit_rows(3, testing_support::kBundledModelDim, seed);
    // At least a few reads after the writer has finished, too.
    for (int after = 0; after < 3; after += writer_done ? 1 : 0) {
      try {
        const Searcher searcher = Searcher::load(store);
        SearchOptions options;
        options.top_k = 100;
        options.routing_top = 100;
        // Direct, global-w, multi-head and sparse-teacher (no student or ensemble here).
        options.method = kAllMethods[rng() % 4];
        for (const QueryResult& r : searcher.search(queries, options)) {
          // One answer per cluster that has an embedded answer in that state.
          if (r.answers.size() != searcher.num_answers()) throw Error("answers missing from a result");
          for (const auto& a : r.answers) {
            if (a.cluster.empty()) throw Error("an answer without its cluster");
          }
          if (options.method == Method::MultiHead && r.routing.size() != searcher.num_heads()) {
            throw Error("routing does not cover every head");
          }
        }
        ++reads;
      } catch (const std::exception& e) {
        const std::lock_guard lock(errors_mutex);
        reader_errors.push_back(e.what());
        return;
      }
    }
  };
  std::thread reader_a(read_until_done, 1), reader_b(read_until_done, 2);
  writer.join();
  reader_a.join();
  reader_b.join();
  EXPECT_EQ(writer_error, "");
  EXPECT_TRUE(reader_errors.empty()) << reader_errors.front();
  EXPECT_GE(reads.load(), 6);
}

// Deterministically: a writer commits while Searcher::load is between its
// reads (between the projection's heads and the cluster names). Without one
// snapshot the Searcher would hold a head whose cluster it cannot name.
TEST_F(ConcurrentReaders, SearcherLoadIsOneSnapshot) {
  const fs::path db = make_store();
  const Store reader = Store::open_read_only(db);
  Store writer = Store::open(db);
  struct Interleave {
    std::function<void()> commit;
    bool done = false;
    std::string error;
  } interleave{[&] {
    // Replaces rotating_0 (whose head the reader has just loaded) by rotating_1.
    write_rotating(1);
    import_file(writer, file("rotating.jsonl"));
  }, false, {}};
  const auto on_statement = [](unsigned, void* context, void*, void* sql) -> int {
    auto& state = *static_cast<Interleave*>(context);
    if (state.done || std::string_view(static_cast<const char*>(sql)).find("FROM clusters") == std::string_view::npos) {
      return 0;
    }
    state.done = true;
    try {
      state.commit();
    } catch (const std::exception& e) {
      state.error = e.what();
    }
    return 0;
  };
  sqlite3_trace_v2(reader.impl().db, SQLITE_TRACE_STMT, on_statement, &interleave);
  const Searcher searcher = Searcher::load(reader);
  sqlite3_trace_v2(reader.impl().db, 0, nullptr, nullptr);
  ASSERT_TRUE(interleave.done);
  ASSERT_EQ(interleave.error, "");
  EXPECT_EQ(searcher.num_heads(), static_cast<std::size_t>(kBaseClusters + 1));
  SearchOptions options;
  options.routing_top = 100;
  const auto results = searcher.search(random_unit_rows(1, testing_support::kBundledModelDim, 5), options);
  ASSERT_EQ(results[0].routing.size(), static_cast<std::size_t>(kBaseClusters + 1));
  bool saw_rotating_0 = false;
  for (const auto& head : results[0].routing) saw_rotating_0 |= head.cluster == "rotating_0";
  EXPECT_TRUE(saw_rotating_0);
  // The next load sees the writer's commit: rotating_0's head went with its cluster.
  EXPECT_EQ(Searcher::load(reader).num_heads(), static_cast<std::size_t>(kBaseClusters));
}

// ReadSnapshot: reads through one Store agree however many commits land
// meanwhile; without it each read is its own snapshot.
TEST_F(ConcurrentReaders, ReadSnapshotHoldsOneState) {
  const fs::path db = make_store();
  const Store reader = Store::open_read_only(db);
  Store writer = Store::open(db);
  const Store::ReadSnapshot snapshot = reader.read_snapshot();
  const auto clusters_before = reader.clusters().size();
  write_file(file("more.jsonl"), "{\"cluster\":\"more\",\"question\":\"q\"}\n{\"cluster\":\"more\",\"answer\":\"a\"}\n");
  import_file(writer, file("more.jsonl"));
  EXPECT_EQ(reader.clusters().size(), clusters_before);
  EXPECT_EQ(reader.stats().clusters, static_cast<std::int64_t>(clusters_before));
  EXPECT_EQ(writer.clusters().size(), clusters_before + 1);
  // Writing through a Store that holds a snapshot is refused, not nested.
  const Store::ReadSnapshot writer_snapshot = writer.read_snapshot();
  write_rotating(1);
  EXPECT_THROW(import_file(writer, file("rotating.jsonl")), Error);
}

// One projection (and one Searcher) may serve many threads at once; enough
// heads here that each query is split over the worker pool as well.
TEST_F(ConcurrentReaders, OneProjectionServesManyThreads) {
  constexpr std::size_t kHeads = 20000, kDim = 16;
  TeacherOptions options;
  options.threads = 2;
  const MultiHeadProjection projection(random_unit_rows(kHeads, kDim, 1), random_unit_rows(kHeads, kDim, 2), 0.1f,
                                       options);
  const Matrix queries = random_unit_rows(4, kDim, 3);
  const Matrix expected = projection.project(queries);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 4; ++i) {
        if (projection.project(queries).data != expected.data) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);

  // A Searcher shared by threads, including the lazily fitted global-w and
  // the lazily built sparse-teacher graph.
  const fs::path db = make_store();
  const Store store = Store::open_read_only(db);
  const Searcher searcher = Searcher::load(store);
  std::atomic<int> failures{0};
  threads.clear();
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      try {
        SearchOptions search;
        search.method = kAllMethods[t];
        search.routing_top = 3;
        for (int i = 0; i < 5; ++i) (void)searcher.search(random_unit_rows(2, testing_support::kBundledModelDim, 7), search);
      } catch (const std::exception&) {
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

class ConcurrentProcesses : public testing_support::TempDirTest {};

// The CLI: `query` and `stats` keep answering while other processes import
// and train.
TEST_F(ConcurrentProcesses, QueriesAnswerWhileTheCliImportsAndTrains) {
  const fs::path db = file("served.db");
  testing_support::make_trained_demo_store(db);
  const std::string data = testing_support::demo_file("clusters.json").string();
  std::atomic<bool> stop{false};
  std::vector<std::string> writer_failures;
  std::atomic<int> writes{0};
  std::thread writer([&] {
    // Alternate two contents of one file (the demo's questions, counted once,
    // with or without one more per cluster): each import adds or removes 31
    // rows, then a training run replaces the active projection.
    const std::string original = testing_support::read_bytes(data);
    std::string edited = original;
    for (std::size_t at = edited.find("\"short\": ["); at != std::string::npos; at = edited.find("\"short\": [", at + 1)) {
      edited.insert(at + 10, "\"one more question\", ");
    }
    for (int round = 0; !stop; ++round) {
      write_file(file("changing.json"), round % 2 ? original : edited);
      for (const auto& args : std::vector<std::vector<std::string>>{
               {"import", "--db", db.string(), file("changing.json").string()}}) {
        const auto r = testing_support::run_cli(args);
        if (r.code != 0) writer_failures.push_back(r.out);
      }
      {
        // Embed the new rows (random vectors: this test is about locking).
        Store store = Store::open(db);
        testing_support::embed_randomly(store, static_cast<std::uint32_t>(round));
      }
      const auto r = testing_support::run_cli({"train", "--db", db.string()});
      if (r.code != 0) writer_failures.push_back(r.out);
      ++writes;
    }
  });
  int queries = 0;
  std::vector<std::string> reader_failures;
  while (queries < 3 || writes < 2) {
    const auto stats = testing_support::run_cli({"stats", "--db", db.string(), "--json"});
    if (stats.code != 0) reader_failures.push_back(stats.out);
    const auto query = testing_support::run_cli({"query", "--db", db.string(), "--json", "why is sync stuck"});
    if (query.code != 0 || query.out.find("\"answers\"") == std::string::npos) reader_failures.push_back(query.out);
    ++queries;
  }
  stop = true;
  writer.join();
  EXPECT_TRUE(writer_failures.empty()) << writer_failures.front();
  EXPECT_TRUE(reader_failures.empty()) << reader_failures.front();
  EXPECT_EQ(testing_support::raw_sql(db, "PRAGMA integrity_check"), "ok\n");
}

}  // namespace
}  // namespace ldaproj
