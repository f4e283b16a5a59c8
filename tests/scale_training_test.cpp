// Training at scale: the bounded-memory kernels (blocked top-k, coarse
// lists), learn_keys in its exact and candidate modes against the full-batch
// reference, the held-out slices and the self-tuning of train_teacher.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "index/coarse_lists.hpp"
#include "index/top_k.hpp"
#include "key_learning_reference.hpp"
#include "ldaproj/synthetic.hpp"
#include "ldaproj/teacher.hpp"
#include "ldaproj/tuning.hpp"

namespace ldaproj {
namespace {

Matrix random_unit_rows(std::size_t rows, std::size_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Matrix m(rows, cols);
  for (float& v : m.data) v = normal(rng);
  normalize_rows(m, "test rows");
  return m;
}

double inner(const float* a, const float* b, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

// Clustered questions from the synthetic generator: `clusters` heads with
// `per_cluster` questions each, and the answers.
struct Clustered {
  Matrix questions{0, 0}, answers{0, 0};
  std::vector<std::size_t> head_of_question;
};
Clustered clustered(std::size_t clusters, std::size_t per_cluster, std::size_t dim, std::uint64_t seed) {
  SyntheticSpec spec;
  spec.clusters = clusters;
  spec.questions_per_cluster = per_cluster;
  spec.dim = dim;
  spec.seed = seed;
  Clustered out;
  out.questions = Matrix(0, dim);
  out.answers = Matrix(0, dim);
  generate_synthetic(spec, [&](const SyntheticCluster& c) {
    out.questions.data.insert(out.questions.data.end(), c.questions.data.begin(), c.questions.data.end());
    out.questions.rows += c.questions.rows;
    for (std::size_t i = 0; i < c.questions.rows; ++i) out.head_of_question.push_back(c.index);
    out.answers.data.insert(out.answers.data.end(), c.answer.begin(), c.answer.end());
    ++out.answers.rows;
  });
  return out;
}

Matrix centroids_of(const Clustered& c) {
  Matrix keys(c.answers.rows, c.questions.cols);
  std::fill(keys.data.begin(), keys.data.end(), 0.0f);
  for (std::size_t r = 0; r < c.questions.rows; ++r) {
    for (std::size_t j = 0; j < keys.cols; ++j) keys(c.head_of_question[r], j) += c.questions(r, j);
  }
  normalize_rows(keys, "centroid");
  return keys;
}

TEST(TopKInnerProduct, MatchesABruteForceScanWithTiesToTheLowerRow) {
  const std::size_t dim = 24;
  // Enough base rows for several base blocks and a query count that splits
  // the base across threads; duplicated rows make exact ties.
  Matrix base = random_unit_rows(5000, dim, 3);
  std::copy(base.row(10), base.row(11), base.row(4000));
  const Matrix queries = random_unit_rows(37, dim, 5);
  for (int threads : {1, 2}) {
    const detail::TopK got = detail::top_k_inner_product(queries.data.data(), queries.rows, base.data.data(),
                                                         base.rows, dim, 9, threads);
    ASSERT_EQ(got.k, 9u);
    for (std::size_t q = 0; q < queries.rows; ++q) {
      std::vector<std::size_t> order(base.rows);
      std::iota(order.begin(), order.end(), 0);
      std::vector<float> s(base.rows);
      for (std::size_t b = 0; b < base.rows; ++b) {
        float acc = 0;
        for (std::size_t j = 0; j < dim; ++j) acc += queries(q, j) * base(b, j);
        s[b] = acc;
      }
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return s[a] > s[b]; });
      for (std::size_t i = 0; i < got.k; ++i) {
        EXPECT_NEAR(got.score[q * got.k + i], s[order[i]], 1e-5) << "query " << q << " rank " << i;
        // Where two scores differ by rounding only, the order may too; the score must not.
        if (i + 1 < got.k && std::abs(s[order[i]] - s[order[i + 1]]) > 1e-5f && i > 0 &&
            std::abs(s[order[i - 1]] - s[order[i]]) > 1e-5f) {
          EXPECT_EQ(got.index[q * got.k + i], order[i]) << "query " << q << " rank " << i;
        }
      }
    }
  }
  // A query equal to the duplicated row finds both copies, the lower first.
  Matrix one(1, dim);
  std::copy(base.row(10), base.row(11), one.row(0));
  const detail::TopK tie = detail::top_k_inner_product(one.data.data(), 1, base.data.data(), base.rows, dim, 2, 2);
  EXPECT_EQ(tie.index[0], 10u);
  EXPECT_EQ(tie.index[1], 4000u);
  // k beyond the base returns the whole base.
  const detail::TopK all = detail::top_k_inner_product(one.data.data(), 1, base.data.data(), 3, dim, 10, 1);
  EXPECT_EQ(all.k, 3u);
}

TEST(CoarseLists, ProbingEveryListIsExactAndFewListsStillFindTheNearest) {
  const Clustered c = clustered(600, 4, 32, 11);
  const Matrix keys = centroids_of(c);
  const std::size_t lists = detail::coarse_list_count(keys.rows, 8);
  EXPECT_GE(lists, 1u);
  EXPECT_LE(lists, keys.rows);
  detail::CoarseLists coarse = detail::build_coarse_lists(keys, lists, 10, 2);
  ASSERT_EQ(coarse.lists(), lists);
  std::size_t members = 0;
  for (std::size_t l = 0; l < lists; ++l) {
    members += coarse.members[l].size();
    for (std::uint32_t v : coarse.members[l]) EXPECT_EQ(coarse.list_of[v], l);
  }
  EXPECT_EQ(members, keys.rows);

  const Matrix queries = c.questions;
  const detail::TopK exact =
      detail::top_k_inner_product(queries.data.data(), queries.rows, keys.data.data(), keys.rows, keys.cols, 5, 2);
  const detail::TopK everything = detail::probe_top_k(coarse, keys, queries, 5, lists, 2);
  ASSERT_EQ(everything.k, 5u);
  for (std::size_t i = 0; i < exact.score.size(); ++i) EXPECT_NEAR(everything.score[i], exact.score[i], 1e-5);

  const detail::TopK probed = detail::probe_top_k(coarse, keys, queries, 5, 8, 2);
  std::size_t found = 0;
  for (std::size_t q = 0; q < queries.rows; ++q) found += probed.index[q * 5] == exact.index[q * 5];
  EXPECT_GT(double(found) / double(queries.rows), 0.9);
  // After the keys move, reassignment keeps every key in exactly one list.
  Matrix moved = keys;
  for (std::size_t r = 0; r < moved.rows; ++r) moved(r, 0) += 0.05f;
  normalize_rows(moved, "moved keys");
  detail::reassign_coarse_lists(coarse, moved, 2);
  members = 0;
  for (const auto& list : coarse.members) members += list.size();
  EXPECT_EQ(members, moved.rows);
}

// The exact mode streams questions in blocks; it is the full-batch reference
// at every point of the loss curve.
TEST(BoundedKeyLearning, ExactModeFollowsTheFullBatchLossCurve) {
  const Clustered c = clustered(40, 6, 32, 21);
  const Matrix start = centroids_of(c);
  std::vector<std::size_t> head_of_key(start.rows);
  std::iota(head_of_key.begin(), head_of_key.end(), 0);
  for (std::size_t epochs : {1, 3, 10, 40}) {
    KeyLearningOptions o;
    o.epochs = epochs;
    o.lr = 0.01f;
    Matrix bounded = start, reference = start;
    const KeyLearningReport got = learn_keys(bounded, head_of_key, nullptr, c.questions, c.head_of_question, 0.05f, o);
    const KeyLearningReport want = testing_support::reference_learn_keys(reference, head_of_key, nullptr, c.questions,
                                                                         c.head_of_question, 0.05f, o);
    EXPECT_TRUE(got.exact);
    EXPECT_NEAR(got.initial_loss, want.initial_loss, 1e-4) << epochs << " epochs";
    EXPECT_NEAR(got.final_loss, want.final_loss, 2e-3 * std::max(1.0, want.final_loss)) << epochs << " epochs";
    EXPECT_NEAR(got.final_accuracy, want.final_accuracy, 0.02) << epochs << " epochs";
    double worst = 0;
    for (std::size_t i = 0; i < bounded.data.size(); ++i) {
      worst = std::max(worst, double(std::abs(bounded.data[i] - reference.data[i])));
    }
    EXPECT_LT(worst, 5e-3) << epochs << " epochs";
  }
}

// With every other key as a candidate, the candidate mode is the exact
// softmax; with few, it still learns nearly as well as the exact run.
TEST(BoundedKeyLearning, CandidateModeWithEveryKeyIsExactAndWithFewIsClose) {
  const Clustered c = clustered(60, 5, 32, 31);
  const Matrix start = centroids_of(c);
  KeyLearningOptions exact;
  exact.epochs = 30;
  exact.lr = 0.01f;
  KeyLearningOptions all = exact;
  all.exact_up_to = 0;
  all.candidates = start.rows - 1;
  Matrix a = start, b = start;
  const KeyLearningReport ra = learn_keys(a, c.questions, c.head_of_question, 0.05f, exact);
  const KeyLearningReport rb = learn_keys(b, c.questions, c.head_of_question, 0.05f, all);
  EXPECT_TRUE(ra.exact);
  EXPECT_FALSE(rb.exact);
  EXPECT_NEAR(rb.initial_loss, ra.initial_loss, 1e-4);
  EXPECT_NEAR(rb.final_loss, ra.final_loss, 1e-3);
  EXPECT_NEAR(rb.candidate_mass, 1.0, 1e-4);
  double worst = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) worst = std::max(worst, double(std::abs(a.data[i] - b.data[i])));
  EXPECT_LT(worst, 1e-3);

  KeyLearningOptions few = all;
  few.candidates = 8;
  few.refresh_every = 10;
  std::vector<std::size_t> refreshed_at;
  few.on_epoch = [&](const KeyLearningProgress& p) {
    if (p.refreshed) refreshed_at.push_back(p.epoch);
  };
  Matrix f = start;
  const KeyLearningReport rf = learn_keys(f, c.questions, c.head_of_question, 0.05f, few);
  EXPECT_EQ(rf.candidates, 8u);
  EXPECT_EQ(rf.refreshes, 3u);  // before epochs 1, 11 and 21
  EXPECT_EQ(refreshed_at, (std::vector<std::size_t>{1, 11, 21}));
  EXPECT_GT(rf.candidate_mass, 0.9);
  EXPECT_LT(rf.final_loss, rf.initial_loss);
  EXPECT_NEAR(rf.final_accuracy, ra.final_accuracy, 0.05);
}

TEST(BoundedKeyLearning, CheckpointsSeeUnitKeysAndCanStopEarly) {
  const Clustered c = clustered(30, 4, 16, 41);
  Matrix keys = centroids_of(c);
  KeyLearningOptions o;
  o.epochs = 50;
  o.checkpoints = {5, 10, 20};
  std::vector<std::size_t> seen;
  o.on_checkpoint = [&](std::size_t epoch, const Matrix& k, const Matrix* adapter) {
    EXPECT_EQ(adapter, nullptr);
    for (std::size_t r = 0; r < k.rows; ++r) EXPECT_NEAR(inner(k.row(r), k.row(r), k.cols), 1.0, 1e-4);
    seen.push_back(epoch);
    return epoch < 10;
  };
  const KeyLearningReport r = learn_keys(keys, c.questions, c.head_of_question, 0.05f, o);
  EXPECT_EQ(seen, (std::vector<std::size_t>{5, 10}));
  EXPECT_TRUE(r.stopped_early);
  EXPECT_EQ(r.epochs, 10u);
}

TEST(KeyLearningMemory, GrowsWithTheCandidatesNotTheKeysSquared) {
  const KeyLearningOptions o;
  EXPECT_TRUE(key_learning_is_exact(1000, o));
  EXPECT_FALSE(key_learning_is_exact(100000, o));
  const std::size_t at_100k = key_learning_memory(102476, 273591, 384, false, o);
  // Full-batch logits alone would be 274k x 102k floats (112 GB).
  EXPECT_LT(at_100k, std::size_t{2} << 30);
  EXPECT_GT(at_100k, std::size_t{273591} * 384 * 4);
}

TEST(HeldOutSlices, AreDeterministicDisjointAndNeverTakeAWholeCluster) {
  // Heads with 1..6 questions.
  std::vector<std::size_t> head_of_question;
  for (std::size_t h = 0; h < 400; ++h) {
    for (std::size_t i = 0; i < 1 + h % 6; ++i) head_of_question.push_back(h);
  }
  SliceOptions o;
  o.folds = 3;
  const ValidationFolds a = hold_out_folds(head_of_question, 400, o);
  const ValidationFolds b = hold_out_folds(head_of_question, 400, o);
  ASSERT_EQ(a.held_out.size(), 3u);
  EXPECT_EQ(a.held_out, b.held_out);
  std::vector<std::size_t> per_head(400, 0), taken(400, 0);
  for (std::size_t h : head_of_question) ++per_head[h];
  std::set<std::size_t> everywhere;
  for (const auto& fold : a.held_out) {
    EXPECT_FALSE(fold.empty());
    EXPECT_TRUE(std::is_sorted(fold.begin(), fold.end()));
    for (std::size_t row : fold) {
      EXPECT_TRUE(everywhere.insert(row).second) << "row " << row << " held out twice";
      ++taken[head_of_question[row]];
    }
  }
  for (std::size_t h = 0; h < 400; ++h) {
    EXPECT_LT(taken[h], per_head[h]) << "head " << h << " lost every question";
  }
  SliceOptions other = o;
  other.seed = 2;
  EXPECT_NE(hold_out_folds(head_of_question, 400, other).held_out, a.held_out);
  // A store where no cluster can spare a question has nothing to hold out.
  const std::vector<std::size_t> singletons{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  EXPECT_TRUE(hold_out_folds(singletons, 12, o).held_out.empty());
}

TEST(TuneTeacher, IsDeterministicForASeedAndKeepsFixedChoices) {
  const Clustered c = clustered(80, 6, 32, 51);
  TuningOptions o;
  o.key_epochs_grid = {10, 25};
  o.slice.folds = 1;
  const TuningReport a = tune_teacher(c.questions, c.head_of_question, c.answers, o);
  const TuningReport b = tune_teacher(c.questions, c.head_of_question, c.answers, o);
  ASSERT_TRUE(a.tuned) << a.note;
  EXPECT_EQ(a.source, "slice");
  ASSERT_EQ(a.trials.size(), b.trials.size());
  for (std::size_t i = 0; i < a.trials.size(); ++i) {
    EXPECT_EQ(a.trials[i].temperature, b.trials[i].temperature);
    EXPECT_EQ(a.trials[i].key_epochs, b.trials[i].key_epochs);
    EXPECT_EQ(a.trials[i].recall_at_1, b.trials[i].recall_at_1);
  }
  EXPECT_EQ(a.chosen.temperature, b.chosen.temperature);
  EXPECT_EQ(a.chosen.key_epochs, b.chosen.key_epochs);
  // The choice is the best trial.
  for (const TuningTrial& t : a.trials) EXPECT_LE(t.score(), a.chosen.score() + 1e-12);

  TuningOptions fixed = o;
  fixed.temperature = 0.1f;
  fixed.key_epochs = 0;
  const TuningReport f = tune_teacher(c.questions, c.head_of_question, c.answers, fixed);
  EXPECT_EQ(f.chosen.temperature, 0.1f);
  EXPECT_EQ(f.chosen.key_epochs, 0u);
  for (const TuningTrial& t : f.trials) {
    EXPECT_EQ(t.temperature, 0.1f);
    EXPECT_EQ(t.key_epochs, 0u);
  }
}

// Tuning on the caller's held-out queries scores exactly those (the slice
// is not drawn), so figures on a separate test set never saw it either.
TEST(TuneTeacher, UsesTheGivenValidationQueriesInsteadOfASlice) {
  const Clustered c = clustered(50, 5, 32, 61);
  HeldOutQueries val;
  val.queries = Matrix(0, c.questions.cols);
  SyntheticSpec spec;
  spec.clusters = 50;
  spec.questions_per_cluster = 5;
  spec.heldout_per_cluster = 1;
  spec.dim = 32;
  spec.seed = 61;
  generate_synthetic(spec, [&](const SyntheticCluster& s) {
    val.queries.data.insert(val.queries.data.end(), s.heldout.data.begin(), s.heldout.data.end());
    val.queries.rows += s.heldout.rows;
    val.heads.push_back(s.index);
  });
  TuningOptions o;
  o.key_epochs = 0;
  o.validation = &val;
  const TuningReport r = tune_teacher(c.questions, c.head_of_question, c.answers, o);
  ASSERT_TRUE(r.tuned) << r.note;
  EXPECT_EQ(r.source, "file");
  EXPECT_EQ(r.validation_queries, 50u);
  EXPECT_EQ(r.folds, 1u);
  // Its figure is score_held_out on those queries with the chosen setting.
  const Matrix keys = centroids_of(c);
  std::vector<std::size_t> head_of_key(keys.rows);
  std::iota(head_of_key.begin(), head_of_key.end(), 0);
  const HeldOutScore s =
      score_held_out(keys, head_of_key, Matrix(0, 0), c.answers, r.chosen.temperature, val.queries, val.heads);
  EXPECT_NEAR(s.recall_at_1, r.chosen.recall_at_1, 1e-9);
}

// Every cluster has a single question: nothing can be held out, and the
// tuning says so and falls back to the defaults for the store's size.
TEST(TuneTeacher, SaysWhenAStoreIsTooSmallToHoldAnythingOut) {
  const Clustered c = clustered(40, 1, 16, 71);
  const TuningReport r = tune_teacher(c.questions, c.head_of_question, c.answers, TuningOptions{});
  EXPECT_FALSE(r.tuned);
  EXPECT_FALSE(r.note.empty());
  EXPECT_EQ(r.chosen.temperature, default_temperature_for(40));
  EXPECT_EQ(r.chosen.key_epochs, 0u);
}

TEST(DefaultTemperature, FallsWithTheNumberOfHeads) {
  EXPECT_GE(default_temperature_for(30), default_temperature_for(5000));
  EXPECT_GE(default_temperature_for(5000), default_temperature_for(100000));
  EXPECT_GT(default_temperature_for(1000000), 0.0f);
}

}  // namespace
}  // namespace ldaproj
