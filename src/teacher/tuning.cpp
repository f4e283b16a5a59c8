// The teacher's self-tuning: held-out folds of the training questions, the
// held-out retrieval score, and the search over temperatures and key-learning
// epochs (centroid keys first, coarse-to-fine over the temperature grid, then
// learned keys scored at checkpoints of one run per temperature).
#include "ldaproj/tuning.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "index/top_k.hpp"
#include "ldaproj/error.hpp"

namespace ldaproj {

namespace {

// splitmix64: a small generator whose output is the same on every platform,
// so a seed gives the same folds everywhere.
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(next() % n); }
};

template <typename T>
void shuffle(std::vector<T>& v, SplitMix& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

// Gains in R@1 + MRR@10 below this are treated as noise when deciding to
// go on (a fifth of a point; held-out slices have a few thousand questions).
constexpr double kMinGain = 0.002;
// A single-fold run stops at once when a checkpoint falls this far below its best.
constexpr double kClearDecline = 0.01;
// Longest key learning the tuning tries on a large (single-fold) store.
constexpr std::size_t kLargeStoreMaxEpochs = 100;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string format(const char* fmt, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, a);
  return buf;
}

std::string percent(double v) { return format("%.1f%%", 100.0 * v); }
std::string temperature_text(float t) { return format("%g", t); }

Matrix rows_of(const Matrix& m, const std::vector<std::size_t>& rows) {
  Matrix out(rows.size(), m.cols);
  for (std::size_t i = 0; i < rows.size(); ++i) std::copy(m.row(rows[i]), m.row(rows[i]) + m.cols, out.row(i));
  return out;
}

// One fold: the questions the keys are fitted on and the held-out ones.
struct Fold {
  Matrix own_train;                   // the fold's unit training rows, unless...
  const Matrix* shared = nullptr;     // ...it trains on every question (a validation file)
  const Matrix& train() const { return shared ? *shared : own_train; }
  std::vector<std::size_t> train_head;
  Matrix queries;                     // unit rows
  std::vector<std::size_t> targets;
  Matrix keys;                        // the start keys (centroids or k-means sub-keys) from `train`
  std::vector<std::size_t> head_of_key;
};

void fit_start_keys(Fold& fold, std::size_t heads, CentroidMethod method, std::size_t keys_per_head) {
  std::vector<std::vector<std::size_t>> rows(heads);
  for (std::size_t r = 0; r < fold.train_head.size(); ++r) rows[fold.train_head[r]].push_back(r);
  const std::size_t d = fold.train().cols;
  fold.keys = Matrix(0, d);
  fold.head_of_key.clear();
  for (std::size_t h = 0; h < heads; ++h) {
    if (rows[h].empty()) throw Error("tuning: head " + std::to_string(h) + " kept no training question");
    const Matrix mine = rows_of(fold.train(), rows[h]);
    if (keys_per_head > 1) {
      const Matrix sub = kmeans_sub_keys(mine, keys_per_head);
      fold.keys.data.insert(fold.keys.data.end(), sub.data.begin(), sub.data.end());
      fold.keys.rows += sub.rows;
      fold.head_of_key.insert(fold.head_of_key.end(), sub.rows, h);
    } else {
      const std::vector<float> c = compute_centroid(mine, method);
      fold.keys.data.insert(fold.keys.data.end(), c.begin(), c.end());
      ++fold.keys.rows;
      fold.head_of_key.push_back(h);
    }
  }
}

Matrix answers_per_key(const Matrix& head_answers, const std::vector<std::size_t>& head_of_key) {
  Matrix out(head_of_key.size(), head_answers.cols);
  for (std::size_t k = 0; k < head_of_key.size(); ++k) {
    std::copy(head_answers.row(head_of_key[k]), head_answers.row(head_of_key[k]) + head_answers.cols, out.row(k));
  }
  return out;
}

HeldOutScore score_projection(const MultiHeadProjection& teacher, float temperature, const Matrix& queries,
                              const std::vector<std::size_t>& targets, const Matrix& head_answers, int threads) {
  const Matrix projected = teacher.project(queries, temperature);
  const detail::TopK top = detail::top_k_inner_product(projected.data.data(), projected.rows, head_answers.data.data(),
                                                       head_answers.rows, head_answers.cols, 10, threads);
  HeldOutScore s;
  if (queries.rows == 0) return s;
  for (std::size_t q = 0; q < queries.rows; ++q) {
    for (std::size_t i = 0; i < top.k; ++i) {
      if (top.index[q * top.k + i] != targets[q]) continue;
      if (i == 0) s.recall_at_1 += 1;
      s.mrr_at_10 += 1.0 / double(i + 1);
      break;
    }
  }
  s.recall_at_1 /= double(queries.rows);
  s.mrr_at_10 /= double(queries.rows);
  return s;
}

}  // namespace

ValidationFolds hold_out_folds(const std::vector<std::size_t>& head_of_question, std::size_t heads,
                               const SliceOptions& options) {
  ValidationFolds out;
  const std::size_t m = head_of_question.size();
  std::vector<std::vector<std::size_t>> rows(heads);
  for (std::size_t r = 0; r < m; ++r) {
    if (head_of_question[r] >= heads) throw InputError("hold_out_folds: a question names a head that does not exist");
    rows[head_of_question[r]].push_back(r);
  }
  SplitMix rng{options.seed};
  std::vector<std::size_t> pool;
  for (auto& mine : rows) {
    if (mine.size() < 2) continue;
    // The question each cluster keeps is drawn too, so no position is favoured.
    const std::size_t keep = rng.below(mine.size());
    for (std::size_t i = 0; i < mine.size(); ++i)
      if (i != keep) pool.push_back(mine[i]);
  }
  out.eligible = pool.size();
  const bool small = m < options.small_store;
  const std::size_t folds = options.folds > 0 ? options.folds : (m < options.several_folds_below ? 3 : 1);
  const double fraction = small ? options.small_fraction : options.fraction;
  std::size_t size = std::min<std::size_t>(options.max_queries,
                                           static_cast<std::size_t>(std::llround(fraction * double(m))));
  size = std::min(size, pool.size() / folds);
  if (size < std::max<std::size_t>(options.min_queries, 1)) return out;
  shuffle(pool, rng);
  for (std::size_t f = 0; f < folds; ++f) {
    std::vector<std::size_t> fold(pool.begin() + static_cast<std::ptrdiff_t>(f * size),
                                  pool.begin() + static_cast<std::ptrdiff_t>((f + 1) * size));
    std::sort(fold.begin(), fold.end());
    out.held_out.push_back(std::move(fold));
  }
  return out;
}

float default_temperature_for(std::size_t heads) {
  // Measured on held-out data of 33, 150 and 102k clusters (docs/QUALITY.md):
  // more heads need a sharper softmax.
  if (heads <= 1000) return 0.05f;
  if (heads <= 20000) return 0.02f;
  return 0.01f;
}

HeldOutScore score_held_out(const Matrix& keys, const std::vector<std::size_t>& head_of_key, const Matrix& adapter,
                            const Matrix& head_answers, float temperature, const Matrix& queries,
                            const std::vector<std::size_t>& targets, int threads) {
  if (targets.size() != queries.rows) throw InputError("score_held_out: one target per query");
  if (keys.rows != head_of_key.size()) throw InputError("score_held_out: one head per key");
  const MultiHeadProjection teacher(keys, answers_per_key(head_answers, head_of_key), temperature,
                                    {Precision::F32, threads});
  const Matrix routed = adapter.rows == 0 ? queries : adapt_queries(adapter, queries);
  return score_projection(teacher, temperature, routed, targets, head_answers, threads);
}

TuningReport tune_teacher(const Matrix& questions, const std::vector<std::size_t>& head_of_question,
                          const Matrix& head_answers, const TuningOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const std::size_t heads = head_answers.rows, m = questions.rows;
  if (head_of_question.size() != m) throw InputError("tune_teacher: one head per question");
  if (heads == 0 || m == 0) throw InputError("tune_teacher: no heads or no questions");
  if (questions.cols != head_answers.cols) throw InputError("tune_teacher: questions and answers differ in dimension");
  if (options.query_adapter && options.key_epochs && *options.key_epochs == 0) {
    throw InputError("the query adapter is learned with the keys; it needs key epochs > 0");
  }
  auto say = [&](const std::string& line) {
    if (options.on_progress) options.on_progress(line);
  };
  TuningReport report;
  report.seed = options.slice.seed;
  Matrix unit_copy;
  if (!has_unit_rows(questions)) {
    unit_copy = questions;
    normalize_rows(unit_copy, "question");
  }
  const Matrix& unit = unit_copy.rows > 0 ? unit_copy : questions;
  Matrix answers = head_answers;
  normalize_rows(answers, "answer embedding");

  std::vector<Fold> folds;
  if (options.validation) {
    const HeldOutQueries& v = *options.validation;
    if (v.queries.rows != v.heads.size()) throw InputError("tune_teacher: one head per validation query");
    if (v.queries.rows == 0) throw InputError("the validation file has no query of a trained cluster");
    if (v.queries.cols != questions.cols) throw InputError("tune_teacher: validation queries have another dimension");
    Fold f;
    f.shared = &unit;
    f.train_head = head_of_question;
    f.queries = v.queries;
    normalize_rows(f.queries, "validation query");
    f.targets = v.heads;
    for (std::size_t h : f.targets)
      if (h >= heads) throw InputError("tune_teacher: a validation query names a head that does not exist");
    folds.push_back(std::move(f));
    report.source = "file";
    report.validation_queries = v.queries.rows;
    report.note = std::to_string(v.queries.rows) + " validation queries from the file";
  } else {
    const ValidationFolds vf = hold_out_folds(head_of_question, heads, options.slice);
    if (vf.held_out.empty()) {
      report.tuned = false;
      report.note = "too small to hold out a validation slice (" + std::to_string(vf.eligible) +
                    " questions in clusters with two or more; at least " +
                    std::to_string(options.slice.min_queries) + " are needed)";
      report.chosen.temperature = options.temperature.value_or(default_temperature_for(heads));
      report.chosen.key_epochs = options.key_epochs.value_or(0);
      report.seconds = seconds_since(started);
      return report;
    }
    for (const auto& held : vf.held_out) {
      Fold f;
      std::vector<char> out(m, 0);
      for (std::size_t r : held) out[r] = 1;
      std::vector<std::size_t> keep;
      for (std::size_t r = 0; r < m; ++r)
        if (!out[r]) keep.push_back(r);
      f.own_train = rows_of(unit, keep);
      for (std::size_t r : keep) f.train_head.push_back(head_of_question[r]);
      f.queries = rows_of(unit, held);
      for (std::size_t r : held) f.targets.push_back(head_of_question[r]);
      folds.push_back(std::move(f));
    }
    report.source = "slice";
    report.validation_queries = vf.held_out.front().size();
    report.note = std::to_string(report.validation_queries) + " held-out training questions" +
                  (vf.held_out.size() > 1 ? " in each of " + std::to_string(vf.held_out.size()) + " folds" : "") +
                  " (seed " + std::to_string(options.slice.seed) + ")";
  }
  report.folds = folds.size();
  report.tuned = true;
  say("tuning on " + report.note);
  for (Fold& f : folds) fit_start_keys(f, heads, options.centroid_method, options.keys_per_head);

  std::vector<float> grid = options.temperatures.empty()
                                ? std::vector<float>(std::begin(kTuningTemperatures), std::end(kTuningTemperatures))
                                : options.temperatures;
  std::sort(grid.begin(), grid.end());
  if (options.temperature) grid = {*options.temperature};
  for (float t : grid) {
    if (!(t > 0.0f) || !std::isfinite(t)) throw InputError("tuning temperatures must be positive");
  }

  std::vector<TuningTrial> centroid_trials, learned_trials;
  // Centroid keys at one temperature, averaged over the folds.
  std::vector<MultiHeadProjection> start_teachers;
  for (const Fold& f : folds) {
    start_teachers.emplace_back(f.keys, answers_per_key(answers, f.head_of_key), grid.front(),
                                TeacherOptions{Precision::F32, options.threads});
  }
  std::vector<char> scored(grid.size(), 0);
  auto score_centroids = [&](std::size_t i) {
    if (scored[i]) return;
    scored[i] = 1;
    const auto t0 = std::chrono::steady_clock::now();
    TuningTrial trial{grid[i], 0, 0, 0};
    for (std::size_t f = 0; f < folds.size(); ++f) {
      const HeldOutScore s =
          score_projection(start_teachers[f], grid[i], folds[f].queries, folds[f].targets, answers, options.threads);
      trial.recall_at_1 += s.recall_at_1 / double(folds.size());
      trial.mrr_at_10 += s.mrr_at_10 / double(folds.size());
    }
    centroid_trials.push_back(trial);
    say("  centroid keys, temperature " + temperature_text(trial.temperature) + ": R@1 " +
        percent(trial.recall_at_1) + ", MRR@10 " + format("%.3f", trial.mrr_at_10) + " (" +
        format("%.1fs", seconds_since(t0)) + ")");
  };
  // Every other temperature first, then the neighbours of the best of those.
  for (std::size_t i = 0; i < grid.size(); i += 2) score_centroids(i);
  auto best_index = [&] {
    std::size_t best = 0;
    double top = -1;
    for (std::size_t i = 0; i < grid.size(); ++i) {
      if (!scored[i]) continue;
      const auto it = std::find_if(centroid_trials.begin(), centroid_trials.end(),
                                   [&](const TuningTrial& t) { return t.temperature == grid[i]; });
      if (it->score() > top + 1e-12) top = it->score(), best = i;
    }
    return best;
  };
  std::size_t best_centroid = best_index();
  if (best_centroid > 0) score_centroids(best_centroid - 1);
  if (best_centroid + 1 < grid.size()) score_centroids(best_centroid + 1);
  best_centroid = best_index();
  start_teachers.clear();

  const bool learn = !options.key_epochs || *options.key_epochs > 0;
  if (learn) {
    std::vector<std::size_t> epochs_grid = options.key_epochs_grid.empty()
                                               ? std::vector<std::size_t>(std::begin(kTuningKeyEpochs),
                                                                          std::end(kTuningKeyEpochs))
                                               : options.key_epochs_grid;
    if (options.key_epochs) epochs_grid = {*options.key_epochs};
    std::sort(epochs_grid.begin(), epochs_grid.end());
    // One fold means a large store, where an epoch costs seconds: past 100
    // epochs the held-out score had stopped rising on every set measured
    // (WikiAnswers: 0.03 peaks at 50), and 200 would double a run's time.
    if (folds.size() == 1 && !options.key_epochs && options.key_epochs_grid.empty() && epochs_grid.size() > 1) {
      while (epochs_grid.size() > 1 && epochs_grid.back() > kLargeStoreMaxEpochs) epochs_grid.pop_back();
    }
    // One key-learning run per temperature (per fold), scored at the
    // epoch checkpoints; its value is its best checkpoint.
    std::vector<double> run_score(grid.size(), -1.0);
    std::size_t runs = 0;
    auto learn_at = [&](std::size_t gi) {
      if (run_score[gi] >= 0) return run_score[gi];
      ++runs;
      const float t = grid[gi];
      std::vector<double> r1(epochs_grid.size(), 0.0), mrr(epochs_grid.size(), 0.0);
      std::vector<std::size_t> reached(epochs_grid.size(), 0);
      for (std::size_t f = 0; f < folds.size(); ++f) {
        const Fold& fold = folds[f];
        Matrix keys = fold.keys, adapter;
        KeyLearningOptions learning = options.learning;
        learning.epochs = epochs_grid.back();
        learning.threads = options.threads;
        learning.checkpoints = epochs_grid;
        const std::string what = "learned keys, temperature " + temperature_text(t) +
                                 (folds.size() > 1 ? " (fold " + std::to_string(f + 1) + ")" : "");
        double last_line = 0;
        learning.on_epoch = [&](const KeyLearningProgress& p) {
          if (p.seconds - last_line < 10.0) return;
          last_line = p.seconds;
          say("  " + what + ": epoch " + std::to_string(p.epoch) + "/" + std::to_string(p.epochs) + ", loss " +
              format("%.4f", p.loss) + ", " + format("%.0fs", p.seconds));
        };
        double best = -1;
        std::size_t stale = 0;
        learning.on_checkpoint = [&](std::size_t epoch, const Matrix& k, const Matrix* a) {
          const std::size_t i = static_cast<std::size_t>(
              std::find(epochs_grid.begin(), epochs_grid.end(), epoch) - epochs_grid.begin());
          const auto t0 = std::chrono::steady_clock::now();
          const HeldOutScore sc = score_held_out(k, fold.head_of_key, a ? *a : Matrix(), answers, t, fold.queries,
                                                 fold.targets, options.threads);
          r1[i] += sc.recall_at_1;
          mrr[i] += sc.mrr_at_10;
          ++reached[i];
          // Several folds are small stores: one line per temperature below.
          if (folds.size() == 1) {
            say("  " + what + ", " + std::to_string(epoch) + " epochs: R@1 " + percent(sc.recall_at_1) +
                ", MRR@10 " + format("%.3f", sc.mrr_at_10) + " (" + format("%.1fs", seconds_since(t0)) +
                " to score)");
          }
          // With one fold, stop once two checkpoints in a row add less than
          // kMinGain to this run's best (the folds of small stores run whole).
          const double score = sc.recall_at_1 + sc.mrr_at_10;
          if (score > best + kMinGain) {
            stale = 0;
          } else {
            ++stale;
          }
          // ... or at once when it has clearly turned (overfitting at this temperature).
          const bool declining = best >= 0 && score < best - kClearDecline;
          best = std::max(best, score);
          return folds.size() > 1 || (stale < 2 && !declining);
        };
        learn_keys(keys, fold.head_of_key, options.query_adapter ? &adapter : nullptr, fold.train(), fold.train_head, t,
                   learning);
      }
      double top = 0;
      TuningTrial best_trial;
      for (std::size_t i = 0; i < epochs_grid.size(); ++i) {
        if (reached[i] != folds.size()) continue;  // stopped before it
        const TuningTrial trial{t, epochs_grid[i], r1[i] / double(folds.size()), mrr[i] / double(folds.size())};
        learned_trials.push_back(trial);
        if (trial.score() > top) top = trial.score(), best_trial = trial;
      }
      if (folds.size() > 1) {
        say("  learned keys, temperature " + temperature_text(t) + ": best R@1 " + percent(best_trial.recall_at_1) +
            ", MRR@10 " + format("%.3f", best_trial.mrr_at_10) + " at " + std::to_string(best_trial.key_epochs) +
            " epochs (mean of " + std::to_string(folds.size()) + " folds)");
      }
      return run_score[gi] = top;
    };
    // Learned keys route best at a higher temperature than centroids: their
    // logits grow sharper as they learn (demo, CLINC150 and WikiAnswers all
    // peak 1-3 grid steps above the centroid optimum, where centroid R@1 is
    // flat at small temperatures). So the climb starts at the largest
    // temperature whose centroid score is still within kEdgeMargin of the
    // best, goes up while that helps, else down, one grid step (~1.4x) at a
    // time; small stores (several folds) may run more.
    constexpr double kEdgeMargin = 0.01;
    std::size_t start = best_centroid;
    if (!options.temperature) {
      const double top = std::find_if(centroid_trials.begin(), centroid_trials.end(), [&](const TuningTrial& t) {
                           return t.temperature == grid[best_centroid];
                         })->score();
      for (const TuningTrial& t : centroid_trials) {
        const std::size_t i =
            static_cast<std::size_t>(std::find(grid.begin(), grid.end(), t.temperature) - grid.begin());
        if (i < grid.size() && i > start && t.score() >= top - kEdgeMargin) start = i;
      }
    }
    const std::size_t max_runs = folds.size() > 1 ? 8 : 4;
    learn_at(start);
    for (const int direction : {1, -1}) {
      std::size_t at = start;
      bool moved = false;
      for (;;) {
        const long next = long(at) + direction;
        if (next < 0 || next >= long(grid.size()) || runs >= max_runs) break;
        if (learn_at(std::size_t(next)) <= learn_at(at) + kMinGain) break;
        at = std::size_t(next);
        moved = true;
      }
      if (moved) break;  // the other direction starts from a worse point
    }
  }
  const bool centroids_allowed = !options.query_adapter && (!options.key_epochs || *options.key_epochs == 0);
  std::sort(centroid_trials.begin(), centroid_trials.end(),
            [](const TuningTrial& a, const TuningTrial& b) { return a.temperature < b.temperature; });
  std::stable_sort(learned_trials.begin(), learned_trials.end(), [](const TuningTrial& a, const TuningTrial& b) {
    return a.key_epochs < b.key_epochs || (a.key_epochs == b.key_epochs && a.temperature < b.temperature);
  });
  report.trials = centroid_trials;
  report.trials.insert(report.trials.end(), learned_trials.begin(), learned_trials.end());
  bool found = false;
  for (const TuningTrial& trial : report.trials) {
    if (trial.key_epochs == 0 && !centroids_allowed) continue;
    if (!found || trial.score() > report.chosen.score() + 1e-12) report.chosen = trial, found = true;
  }
  if (!found) throw Error("tuning: no setting could be scored");
  report.seconds = seconds_since(started);
  return report;
}

}  // namespace ldaproj
