// Acceptance of the distilled student on the bundled demo data, with the
// default recipe on one thread: on the held-out novel queries
// (data/demo/heldout.json) its output agrees with the teacher's (mean cosine
// >= 0.99, top-10 answer overlap >= 95%) and its R@1 is within 2 points of
// the teacher's. Takes about half a minute (embedding + distillation).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "ldaproj/distill.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/eval.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/train.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

namespace fs = std::filesystem;

class StudentAcceptance : public testing_support::TempDirTest {};

TEST_F(StudentAcceptance, AgreesWithTheTeacherOnHeldOutNovelQueries) {
  if (!fs::exists(fs::path(LDAPROJ_DEFAULT_MODEL_DIR) / "config.json")) {
    GTEST_SKIP() << "no bundled model; run scripts/setup.sh";
  }
  const fs::path demo = fs::path(LDAPROJ_SOURCE_DIR) / "data" / "demo";
  Store store = Store::open(file("demo.db"));
  import_file(store, demo / "clusters.json");
  import_file(store, demo / "extra.jsonl");
  EncoderOptions encoder_options;
  encoder_options.threads = 1;
  const Encoder encoder = Encoder::load(resolve_model_dir(), encoder_options);
  const std::int64_t model = store.ensure_model(encoder.model_name(), encoder.dim());
  for (EntityKind kind : {EntityKind::Question, EntityKind::Answer}) {
    std::vector<std::string> texts;
    std::vector<std::int64_t> ids;
    for (const auto& p : store.missing_embeddings(model, kind)) {
      texts.push_back(p.text);
      ids.push_back(p.id);
    }
    store.put_embeddings(model, kind, ids, encoder.encode(texts));
  }
  train_teacher(store, encoder.model_name(), {});

  DistillOptions options;  // the defaults `ldaproj distill` uses
  options.threads = 1;
  const StoreDistillReport distilled = distill_projection(store, "", options);
  EXPECT_GT(distilled.report.best_epoch, 0u);

  const Searcher searcher = Searcher::load(store);
  ASSERT_TRUE(searcher.has_student());
  std::vector<std::string> texts, expected;
  for (const auto& q : read_test_queries(demo / "heldout.json")) {
    texts.push_back(q.text);
    expected.push_back(q.cluster);
  }
  const Matrix queries = encoder.encode(texts);
  SearchOptions teacher_options;
  teacher_options.top_k = 10;
  SearchOptions student_options = teacher_options;
  student_options.method = Method::Student;
  const Matrix teacher_projected = searcher.project(queries, teacher_options);
  const Matrix student_projected = searcher.project(queries, student_options);
  const auto teacher_results = searcher.rank(teacher_projected, 10);
  const auto student_results = searcher.rank(student_projected, 10);

  const Agreement a = agreement(student_projected, teacher_projected, student_results, teacher_results);
  const RetrievalMetrics teacher = score_results(teacher_results, expected);
  const RetrievalMetrics student = score_results(student_results, expected);
  RecordProperty("mean_cosine", std::to_string(a.mean_cosine));
  RecordProperty("top10_overlap", std::to_string(a.top10_overlap));
  EXPECT_GE(a.mean_cosine, 0.99);
  EXPECT_GE(a.top10_overlap, 0.95);
  EXPECT_LE(std::fabs(student.recall_at_1 - teacher.recall_at_1), 0.02)
      << "student R@1 " << student.recall_at_1 << ", teacher " << teacher.recall_at_1;
  std::printf("held-out novel queries: cosine mean %.4f min %.4f, top-10 overlap %.1f%%, R@1 student %.1f%% "
              "teacher %.1f%%\n",
              a.mean_cosine, a.min_cosine, 100 * a.top10_overlap, 100 * student.recall_at_1,
              100 * teacher.recall_at_1);
}

}  // namespace
}  // namespace ldaproj
