// Self-tuning of the teacher: which routing temperature and whether (and how
// long) to learn keys, chosen by retrieval on held-out questions: a slice of
// the training questions (deterministic for a seed; only from clusters that
// can spare one, never all of a cluster's questions) or a validation set the
// caller gives. Works on matrices, so it needs no store.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ldaproj/matrix.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

// The temperatures the tuning tries: a log grid wide enough for 30 to a
// million heads (small stores route best near 0.05-0.1, 100k heads near 0.01-0.02).
inline constexpr float kTuningTemperatures[] = {0.002f, 0.003f, 0.005f, 0.007f, 0.01f, 0.014f, 0.02f,
                                                0.03f,  0.05f,  0.07f,  0.1f,   0.14f,  0.2f};
// Epochs at which learned keys are scored on the held-out questions.
inline constexpr std::size_t kTuningKeyEpochs[] = {10, 25, 50, 100, 200};

// Held-out rows of the training questions, one set per fold.
struct ValidationFolds {
  std::vector<std::vector<std::size_t>> held_out;  // per fold: question rows, ascending
  std::size_t eligible = 0;  // questions that could be held out (a cluster keeps at least one)
};

struct SliceOptions {
  std::uint64_t seed = 1;
  double fraction = 0.1;          // of the training questions, per fold
  std::size_t max_queries = 3000;  // per fold
  // 0: 3 folds below `several_folds_below` questions (cheap enough to
  // average out the noise of one slice), else 1.
  std::size_t folds = 0;
  std::size_t several_folds_below = 50000;
  std::size_t small_store = 3000;
  double small_fraction = 0.2;     // per fold below small_store questions
  std::size_t min_queries = 10;    // fewer: the store is too small to tune on
};

// Deterministic folds for `seed`: questions are drawn from clusters with two
// or more (each cluster keeps one, never all), uniformly over those questions,
// without repeats across folds. Empty when fewer than min_queries can be drawn.
ValidationFolds hold_out_folds(const std::vector<std::size_t>& head_of_question, std::size_t heads,
                               const SliceOptions& options = {});

// Queries the caller holds out (e.g. `train --val FILE`), as unit rows with
// the head each belongs to.
struct HeldOutQueries {
  Matrix queries;
  std::vector<std::size_t> heads;
};

struct TuningOptions {
  SliceOptions slice;
  // Fixed choices (an explicit flag) are not tuned; unset ones are.
  std::optional<float> temperature;
  std::optional<std::size_t> key_epochs;
  std::vector<float> temperatures;      // empty: kTuningTemperatures
  std::vector<std::size_t> key_epochs_grid;  // empty: kTuningKeyEpochs
  CentroidMethod centroid_method = CentroidMethod::Mean;
  std::size_t keys_per_head = 1;
  bool query_adapter = false;
  KeyLearningOptions learning;           // lr, candidates, threads; epochs come from the grid
  const HeldOutQueries* validation = nullptr;  // used instead of slices when given
  int threads = 0;
  // One line per phase and result, for a progress display.
  std::function<void(const std::string&)> on_progress = {};
};

struct TuningTrial {
  float temperature = 0;
  std::size_t key_epochs = 0;  // 0: centroid keys
  double recall_at_1 = 0, mrr_at_10 = 0;  // mean over folds
  double score() const { return recall_at_1 + mrr_at_10; }
};

struct TuningReport {
  bool tuned = false;        // false: nothing was held out (see note), defaults used
  std::string note;          // why not, or what was held out
  std::string source;        // "slice" or "file"
  std::size_t validation_queries = 0;  // per fold
  std::size_t folds = 0;
  std::uint64_t seed = 0;
  std::vector<TuningTrial> trials;
  TuningTrial chosen;
  double seconds = 0;
};

// Fallbacks when nothing can be held out: centroid keys and a temperature
// that suits the number of heads.
float default_temperature_for(std::size_t heads);

// Scores every untuned choice on the held-out questions and returns the
// best (highest R@1 + MRR@10 over folds; the simpler setting on ties:
// centroid keys, fewer epochs, the earlier temperature). `questions` are the
// training questions (rows need not be unit), `head_answers` one unit answer
// embedding per head; every head must have a question.
TuningReport tune_teacher(const Matrix& questions, const std::vector<std::size_t>& head_of_question,
                          const Matrix& head_answers, const TuningOptions& options);

// R@1 and MRR@10 of projecting `queries` through keys (head_of_key: their
// heads) onto `head_answers` at `temperature`, ranked by cosine over every
// head's answer; `targets` are the right heads. The tuning's measure.
struct HeldOutScore {
  double recall_at_1 = 0, mrr_at_10 = 0;
};
HeldOutScore score_held_out(const Matrix& keys, const std::vector<std::size_t>& head_of_key, const Matrix& adapter,
                            const Matrix& head_answers, float temperature, const Matrix& queries,
                            const std::vector<std::size_t>& targets, int threads = 0);

}  // namespace ldaproj
