// Distilling the multi-head teacher into a student (ldaproj/student.hpp):
// distillation data, initialisation from the teacher, and training with
// libtorch. No libtorch type appears here; only src/student/train*.cpp
// include its headers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ldaproj/matrix.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/student.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

// ---------------------------------------------------------------- data
// Where distillation inputs come from (each labelled with the teacher's output):
//  questions:    the training questions themselves
//  perturbed:    a training question plus Gaussian noise, renormalised
//  within:       a random mix of two questions of the same cluster
//  across:       a random mix of questions from two different, nearby clusters
//  extrapolated: a question pushed away from its cluster's centroid (novel
//                phrasings sit further from the centroid than the training ones)
//  centroids:    any head's centroid (drawn uniformly over all heads) plus
//                Gaussian noise: reaches heads that have no training questions
enum class DataSource { Questions, Perturbed, Within, Across, Extrapolated, Centroids };
inline constexpr DataSource kAllDataSources[] = {DataSource::Questions, DataSource::Perturbed, DataSource::Within,
                                                 DataSource::Across,    DataSource::Extrapolated, DataSource::Centroids};
std::string_view to_string(DataSource source);
DataSource parse_data_source(std::string_view name);  // InputError on unknown
// Comma-separated list, e.g. "questions,perturbed"; "all" for every source.
std::vector<DataSource> parse_data_sources(std::string_view list);

// The default: every source but extrapolated, which lowered R@1 on held-out
// novel queries by 8-9 points on 1k synthetic clusters (two seeds) and 3 on
// the demo at about equal agreement with the teacher (docs/DISTILLATION.md).
inline constexpr DataSource kDefaultDataSources[] = {DataSource::Questions, DataSource::Perturbed, DataSource::Within,
                                                     DataSource::Across};

struct DistillDataOptions {
  std::vector<DataSource> sources{std::begin(kDefaultDataSources), std::end(kDefaultDataSources)};
  // Generated training inputs, shared equally by the generating sources (the
  // questions source adds each training question once, on top).
  std::size_t samples = 8192;
  // Share of each cluster's questions held out whole for validation (early
  // stopping); none of their embeddings feeds the training inputs.
  double validation_fraction = 0.15;
  // At most this many held-out questions (the rest of the drawn ones train):
  // each is validated with 3 perturbed copies on every epoch, and at 55k
  // clusters 15% was 98k validation inputs, costing more than the training.
  std::size_t max_validation_questions = 8192;
  // Noise for "perturbed": each sample draws a level in [0, noise] and adds
  // Gaussian noise of that norm (cosine to the original about 1/sqrt(1 + level^2)).
  // 0.75 takes a typical demo question (cosine 0.69 to its centroid) to where
  // novel queries sit (0.55).
  float noise = 0.75f;
  std::uint64_t seed = 0;
};

struct DistillData {
  Matrix train_inputs;  // unit rows
  std::vector<DataSource> train_source;
  Matrix validation_inputs;  // the held-out questions, then perturbed copies of them
  std::size_t validation_questions = 0;
  std::map<std::string, std::size_t> per_source;  // training inputs by source name
};

// questions: unit rows; head_of_question[i] is the teacher head (row of its
// centroids) of question i. Seeded and reproducible. InputError when a head
// index is out of range or there are no questions.
DistillData make_distill_data(const MultiHeadProjection& teacher, const Matrix& questions,
                              const std::vector<std::size_t>& head_of_question,
                              const DistillDataOptions& options);

// ---------------------------------------------------------------- init
// Spherical k-means of the teacher's centroids into `groups` (at most the
// number of heads) groups: each group's key is its normalised mean centroid,
// its value the mean answer of its heads.
struct HeadGroups {
  Matrix keys;    // groups x dim, unit rows
  Matrix values;  // groups x dim
  std::vector<std::size_t> group_of_head;
};
HeadGroups group_teacher_heads(const MultiHeadProjection& teacher, std::size_t groups, std::uint64_t seed);

// Teacher routing weights (queries x heads) summed per group (queries x groups).
Matrix pool_routing(const Matrix& routing, const std::vector<std::size_t>& group_of_head, std::size_t groups);

//  teacher: keys from k-means of the teacher's centroids, values from the
//           matching mean answers (keys beyond the number of heads point away
//           from the mean key, so they start out ignored), and the attention
//           set up so that the student starts out computing the teacher's
//           routing over them.
//  random:  PyTorch's default initialisation, keys/values ~ N(0, 1/dim).
enum class StudentInit { Teacher, Random };
std::string_view to_string(StudentInit init);
StudentInit parse_student_init(std::string_view name);

// Initial weights; for the teacher init `groups_out` receives the key groups
// (also computed for random init, for the KL term). Seeded.
StudentWeights init_student(const StudentConfig& config, const MultiHeadProjection& teacher, StudentInit init,
                            std::uint64_t seed, std::vector<std::size_t>* group_of_head = nullptr);

// The teacher init's scale of the first block's attention output against the
// query term (init_student uses the default: the attention output dominates).
inline constexpr float kDefaultAttentionGain = 200.0f;
// What distill_student tries when DistillOptions::attention_gain is 0.
inline constexpr float kAttentionGains[] = {0.25f, 0.5f, 1.0f, 2.0f, 4.0f, 8.0f, 16.0f, 32.0f, 64.0f, 200.0f};
// Sets that scale in teacher-init weights (the first block's attention output
// projection becomes gain x identity). InputError unless gain > 0.
void set_attention_gain(StudentWeights& weights, float gain);

// ---------------------------------------------------------------- training
enum class LrSchedule { Cosine, Step, Constant };
std::string_view to_string(LrSchedule schedule);
LrSchedule parse_lr_schedule(std::string_view name);

struct DistillOptions {
  StudentConfig config;
  StudentInit init = StudentInit::Teacher;
  DistillDataOptions data;
  std::size_t epochs = 30;
  std::size_t batch_size = 128;
  std::size_t patience = 5;  // epochs without validation improvement before stopping
  double lr = 1e-4;
  double weight_decay = 0.01;
  LrSchedule schedule = LrSchedule::Cosine;
  // loss = mse_weight * |y - t|^2 + cosine_weight * (1 - cos(y, t))
  //      + kl_weight * KL(teacher routing pooled onto the key groups || student attention pooled over heads)
  //      + answer_weight * mean over the teacher's top answer_top_k answers a of (a.y/|y| - a.t)^2
  // (the squared distance summed over dimensions; every term averaged over
  // the batch). The answer term weighs only the error that can reorder the
  // answers the teacher ranks first.
  double mse_weight = 1.0;
  double cosine_weight = 0.0;
  double kl_weight = 0.0;
  double answer_weight = 0.0;
  std::size_t answer_top_k = 16;
  // Train the learned keys and values only; every other weight keeps its
  // initial value (the teacher init's projections compute the teacher's
  // routing over the keys, and they cannot overfit a small training set).
  bool keys_only = false;
  // Teacher init: the scale of the first block's attention output against the
  // query term of its residual stream. 0 chooses it: the candidate with the
  // lowest loss on the validation inputs before training (kAttentionGains).
  // A large gain starts the student as the compressed teacher; a small one
  // starts it near the query itself, which agrees better with a sharp teacher
  // over many heads than a few keys can.
  float attention_gain = 0.0f;
  std::uint64_t seed = 0;
  int threads = 0;  // 0: all cores
};

struct DistillProgress {
  std::size_t epoch = 0, epochs = 0;    // 1-based epoch
  std::size_t batch = 0, batches = 0;   // batches done in this epoch
  double train_loss = 0.0;              // running mean over this epoch
};

struct DistillEpoch {
  std::size_t epoch = 0;
  double train_loss = 0.0;
  double validation_loss = 0.0;
  double validation_cosine = 0.0;  // mean cosine(student, teacher) on the validation inputs
  double lr = 0.0;
  double seconds = 0.0;            // since training started
  bool improved = false;
};

struct DistillObserver {
  std::function<void(const DistillProgress&)> on_batch;
  std::function<void(const DistillEpoch&)> on_epoch;
  // One line as each phase before the first epoch ends (inputs, teacher
  // targets, init, attention gain), with its size and seconds: at 100k heads
  // they take minutes.
  std::function<void(const std::string&)> on_phase = {};
};

struct DistillReport {
  StudentWeights weights;  // the best epoch's
  std::vector<DistillEpoch> history;
  std::size_t best_epoch = 0;
  bool stopped_early = false;
  double seconds = 0.0;
  std::size_t train_samples = 0, validation_samples = 0, validation_questions = 0;
  std::map<std::string, std::size_t> per_source;
  double initial_validation_cosine = 0.0;  // before training
  float attention_gain = 0.0f;             // the teacher init's, as chosen or given (0 under random init)
};

// Distils `teacher` (at its own temperature) using data made from `questions`.
// InputError on bad options; the result is deterministic for a seed and a
// thread count.
DistillReport distill_student(const MultiHeadProjection& teacher, const Matrix& questions,
                              const std::vector<std::size_t>& head_of_question, const DistillOptions& options,
                              const DistillObserver& observer = {});

// ---------------------------------------------------------------- the store
// A stored projection (the named one, or the active one when empty) as a
// teacher, with the embedded questions of its heads (unit rows) and each
// question's head. InputError when nothing is trained or no question is
// embedded.
struct ProjectionTeacher {
  Projection projection;  // with its heads
  MultiHeadProjection teacher;
  Matrix questions;
  std::vector<std::size_t> head_of_question;
};
ProjectionTeacher load_projection_teacher(const Store& store, const std::string& projection_name);

// Loads the named (or active) projection and its questions, distils, and
// saves the student tied to that projection (replacing an earlier one), in one
// transaction. InputError when nothing is trained or embeddings are missing.
struct StoreDistillReport {
  std::string projection;
  DistillReport report;
};
StoreDistillReport distill_projection(Store& store, const std::string& projection_name,
                                      const DistillOptions& options, const DistillObserver& observer = {});

// The stored student of a projection as weights; nullopt when none.
std::optional<StudentWeights> load_student_weights(const Store& store, const std::string& projection_name);

// ---------------------------------------------------------------- libtorch reference
// The libtorch module's forward (float32), for checking the lean forward.
Matrix torch_student_forward(const StudentWeights& weights, const Matrix& queries, Matrix* attention = nullptr);

struct StudentLoss {
  double total = 0.0, mse = 0.0, cosine = 0.0, kl = 0.0, answer = 0.0;
};
// The training loss on one batch and, when `gradients` is given, its gradient
// for every tensor (same names and shapes). `pooled_routing` may be empty when
// options.kl_weight is 0, `answers` (the teacher's, heads x dim) when
// options.answer_weight is 0. double_precision runs the module in float64
// (for finite-difference checks).
StudentLoss torch_student_loss(const StudentWeights& weights, const Matrix& inputs, const Matrix& targets,
                               const Matrix& pooled_routing, const DistillOptions& options,
                               std::vector<StudentTensor>* gradients = nullptr, bool double_precision = false,
                               const Matrix& answers = {});

}  // namespace ldaproj
