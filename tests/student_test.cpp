// The student: parameter layout, the lean forward against the libtorch
// module, gradients against finite differences, teacher-aligned init,
// distillation data and safetensors round trips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "ldaproj/distill.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/safetensors.hpp"
#include "ldaproj/student.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

Matrix random_unit_rows(std::size_t rows, std::size_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Matrix m(rows, cols);
  for (float& v : m.data) v = dist(rng);
  normalize_rows(m, "row");
  return m;
}

// A teacher with clustered structure: questions scatter around centroids.
struct ToyTeacher {
  MultiHeadProjection teacher;
  Matrix questions;
  std::vector<std::size_t> head_of_question;
};

ToyTeacher toy_teacher(std::size_t heads, std::size_t dim, std::size_t per_head, unsigned seed) {
  ToyTeacher t;
  const Matrix centres = random_unit_rows(heads, dim, seed);
  const Matrix answers = random_unit_rows(heads, dim, seed + 1);
  const Matrix noise = random_unit_rows(heads * per_head, dim, seed + 2);
  t.questions = Matrix(heads * per_head, dim);
  for (std::size_t i = 0; i < t.questions.rows; ++i) {
    const std::size_t h = i / per_head;
    for (std::size_t j = 0; j < dim; ++j) t.questions(i, j) = centres(h, j) + 0.8f * noise(i, j);
    t.head_of_question.push_back(h);
  }
  normalize_rows(t.questions, "question");
  t.teacher = MultiHeadProjection(centres, answers, 0.1f);
  return t;
}

double cosine(const float* a, const float* b, std::size_t n) {
  double dot = 0, na = 0, nb = 0;
  for (std::size_t i = 0; i < n; ++i) dot += double(a[i]) * b[i], na += double(a[i]) * a[i], nb += double(b[i]) * b[i];
  return dot / std::sqrt(na * nb);
}

StudentConfig small_config(StudentVariant variant, std::size_t layers) {
  StudentConfig c;
  c.dim = 24;
  c.num_heads = 4;
  c.keys_per_head = 3;
  c.ff_dim = 40;
  c.layers = layers;
  c.variant = variant;
  return c;
}

constexpr StudentVariant kVariants[] = {StudentVariant::Attention, StudentVariant::MlpAttention,
                                        StudentVariant::Block};

TEST(StudentLayout, NamesAndShapesFollowThePyTorchModule) {
  StudentConfig c;  // defaults: 384-d, 8 heads x 8 keys, block, 1 layer
  const auto layout = student_layout(c);
  std::map<std::string, std::vector<std::int64_t>> shapes;
  for (const auto& t : layout) shapes[t.name] = t.shape;
  const std::map<std::string, std::vector<std::int64_t>> expected{
      {"input_proj.weight", {384, 384}}, {"input_proj.bias", {384}},
      {"keys", {64, 384}}, {"values", {64, 384}},
      {"attention.in_proj_weight", {1152, 384}}, {"attention.in_proj_bias", {1152}},
      {"attention.out_proj.weight", {384, 384}}, {"attention.out_proj.bias", {384}},
      {"norm1.weight", {384}}, {"norm1.bias", {384}},
      {"ffn.0.weight", {768, 384}}, {"ffn.0.bias", {768}},
      {"ffn.2.weight", {384, 768}}, {"ffn.2.bias", {384}},
      {"norm2.weight", {384}}, {"norm2.bias", {384}}};
  EXPECT_EQ(shapes, expected);

  c.variant = StudentVariant::MlpAttention;
  c.layers = 2;
  std::set<std::string> names;
  for (const auto& t : student_layout(c)) names.insert(t.name);
  EXPECT_TRUE(names.count("mlp.0.weight") && names.count("mlp.2.bias"));
  EXPECT_TRUE(names.count("blocks.1.keys") && names.count("blocks.1.attention.out_proj.weight"));
  EXPECT_FALSE(names.count("ffn.0.weight"));
  EXPECT_FALSE(names.count("norm2.weight"));
}

TEST(StudentLayout, ConfigIsValidatedAndRoundTripsThroughJson) {
  StudentConfig c;
  c.num_heads = 7;  // 384 is not a multiple of 7
  EXPECT_THROW(c.validate(), InputError);
  c = small_config(StudentVariant::MlpAttention, 3);
  const StudentConfig back = StudentConfig::from_json(c.to_json(), "test");
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_THROW(StudentConfig::from_json("{\"dim\": 24}", "test"), InputError);
  EXPECT_THROW(StudentConfig::from_json("{\"dim\":24,\"num_heads\":4,\"keys_per_head\":2,\"variant\":\"x\"}", "t"),
               InputError);
  EXPECT_THROW(parse_student_variant("transformer"), InputError);
}

// The lean forward and the libtorch module agree within 1e-5 for every
// variant, one and two layers, both inits and batch sizes 1 and 17.
TEST(StudentForward, LeanForwardEqualsLibtorch) {
  const ToyTeacher toy = toy_teacher(9, 24, 4, 11);
  for (StudentVariant variant : kVariants) {
    for (std::size_t layers : {1u, 2u}) {
      for (StudentInit init : {StudentInit::Random, StudentInit::Teacher}) {
        const StudentWeights w = init_student(small_config(variant, layers), toy.teacher, init, 5);
        // Perturb every weight so that no parameter sits at a special value
        // (zero FFN output, identity maps) that would hide a mistake.
        StudentWeights noisy = w;
        std::mt19937 rng(3);
        std::normal_distribution<float> n(0.0f, 0.05f);
        for (auto& t : noisy.tensors)
          for (float& v : t.values) v += n(rng);
        const StudentModel model(noisy);
        for (std::size_t batch : {1u, 17u}) {
          const Matrix q = random_unit_rows(batch, 24, 40 + static_cast<unsigned>(batch));
          Matrix lean_att, torch_att;
          const Matrix lean = model.forward(q, &lean_att);
          const Matrix ref = torch_student_forward(noisy, q, &torch_att);
          ASSERT_EQ(lean.rows, batch);
          ASSERT_EQ(lean.cols, 24u);
          ASSERT_EQ(lean_att.cols, noisy.config.num_keys());
          double worst = 0, worst_att = 0;
          for (std::size_t i = 0; i < lean.data.size(); ++i) worst = std::max(worst, double(std::fabs(lean.data[i] - ref.data[i])));
          for (std::size_t i = 0; i < lean_att.data.size(); ++i)
            worst_att = std::max(worst_att, double(std::fabs(lean_att.data[i] - torch_att.data[i])));
          EXPECT_LT(worst, 1e-5) << to_string(variant) << " layers " << layers << " batch " << batch;
          EXPECT_LT(worst_att, 1e-6) << to_string(variant);
        }
      }
    }
  }
}

TEST(StudentForward, AttentionRowsAreDistributionsAndShapesAreChecked) {
  const ToyTeacher toy = toy_teacher(5, 24, 3, 2);
  const StudentModel model(init_student(small_config(StudentVariant::Block, 1), toy.teacher, StudentInit::Random, 1));
  Matrix att;
  const Matrix out = model.forward(random_unit_rows(6, 24, 9), &att);
  EXPECT_EQ(out.rows, 6u);
  for (std::size_t r = 0; r < att.rows; ++r) {
    double sum = 0;
    for (std::size_t j = 0; j < att.cols; ++j) sum += att(r, j);
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  EXPECT_THROW(model.forward(random_unit_rows(2, 23, 1)), InputError);
  EXPECT_EQ(model.forward(Matrix(0, 24)).rows, 0u);
  EXPECT_THROW(StudentModel().forward(random_unit_rows(1, 24, 1)), Error);
}

// Autograd gradients of the full loss (MSE + cosine + KL + answer scores) against central
// differences in double precision, on a sample of every tensor's entries.
TEST(StudentGradients, MatchFiniteDifferences) {
  const ToyTeacher toy = toy_teacher(6, 24, 3, 21);
  for (StudentVariant variant : kVariants) {
    const StudentConfig config = small_config(variant, 2);
    std::vector<std::size_t> groups;
    StudentWeights w = init_student(config, toy.teacher, StudentInit::Random, 8, &groups);
    const Matrix inputs = random_unit_rows(5, 24, 31);
    Matrix routing;
    const Matrix targets = toy.teacher.project(inputs, 0.1f, &routing);
    const Matrix pooled = pool_routing(routing, groups, config.num_keys());
    DistillOptions options;
    options.mse_weight = 1.0;
    options.cosine_weight = 0.5;
    options.kl_weight = 0.3;
    options.answer_weight = 2.0;
    options.answer_top_k = 4;
    const Matrix& answers = toy.teacher.answers();
    std::vector<StudentTensor> grads;
    const StudentLoss base = torch_student_loss(w, inputs, targets, pooled, options, &grads, true, answers);
    EXPECT_GT(base.kl, 0.0);
    EXPECT_GT(base.answer, 0.0);
    ASSERT_EQ(grads.size(), w.tensors.size());
    std::mt19937 rng(4);
    for (std::size_t t = 0; t < w.tensors.size(); ++t) {
      ASSERT_EQ(grads[t].name, w.tensors[t].name);
      ASSERT_EQ(grads[t].shape, w.tensors[t].shape);
      for (int probe = 0; probe < 3; ++probe) {
        const std::size_t i = std::uniform_int_distribution<std::size_t>(0, w.tensors[t].values.size() - 1)(rng);
        const float saved = w.tensors[t].values[i];
        const float h = 1e-3f;
        w.tensors[t].values[i] = saved + h;
        const double up = torch_student_loss(w, inputs, targets, pooled, options, nullptr, true, answers).total;
        w.tensors[t].values[i] = saved - h;
        const double down = torch_student_loss(w, inputs, targets, pooled, options, nullptr, true, answers).total;
        w.tensors[t].values[i] = saved;
        // Weights are stored as float32, so the step is the float-rounded one.
        const double step = double(saved + h) - double(saved - h);
        const double numeric = (up - down) / step;
        const double analytic = grads[t].values[i];
        EXPECT_NEAR(analytic, numeric, 2e-4 + 2e-3 * std::fabs(numeric))
            << to_string(variant) << " " << w.tensors[t].name << "[" << i << "]";
      }
    }
  }
}

// With no more heads than a head's dimension, the teacher init reproduces the
// teacher before any training (up to LayerNorm removing each output's mean,
// which costs about 1/dim of a random vector's energy).
TEST(StudentInitTest, TeacherInitStartsCloseToTheTeacher) {
  const ToyTeacher toy = toy_teacher(10, 192, 6, 7);
  StudentConfig config;
  config.dim = 192;
  config.num_heads = 4;  // head_dim 48 >= 10 heads - 1
  config.keys_per_head = 4;
  const Matrix q = toy.questions;
  const Matrix teacher_out = toy.teacher.project(q);
  for (StudentVariant variant : kVariants) {
    config.variant = variant;
    const StudentModel aligned(init_student(config, toy.teacher, StudentInit::Teacher, 1));
    const StudentModel random(init_student(config, toy.teacher, StudentInit::Random, 1));
    const Matrix a = aligned.project(q), r = random.project(q);
    double mean_aligned = 0, mean_random = 0;
    for (std::size_t i = 0; i < q.rows; ++i) {
      mean_aligned += cosine(a.row(i), teacher_out.row(i), 192) / double(q.rows);
      mean_random += cosine(r.row(i), teacher_out.row(i), 192) / double(q.rows);
    }
    EXPECT_GT(mean_aligned, 0.99) << to_string(variant);
    EXPECT_LT(mean_random, 0.9) << to_string(variant);
  }
}

TEST(StudentInitTest, KMeansGroupsCoverEveryHead) {
  const ToyTeacher toy = toy_teacher(40, 16, 1, 3);
  const HeadGroups g = group_teacher_heads(toy.teacher, 8, 1);
  ASSERT_EQ(g.keys.rows, 8u);
  ASSERT_EQ(g.group_of_head.size(), 40u);
  std::vector<int> sizes(8, 0);
  for (std::size_t h : g.group_of_head) ++sizes.at(h);
  for (int s : sizes) EXPECT_GT(s, 0);
  // Each head is closest to its own group's key.
  for (std::size_t h = 0; h < 40; ++h) {
    const std::size_t own = g.group_of_head[h];
    for (std::size_t k = 0; k < 8; ++k) {
      EXPECT_GE(cosine(toy.teacher.centroids().row(h), g.keys.row(own), 16) + 1e-5,
                cosine(toy.teacher.centroids().row(h), g.keys.row(k), 16));
    }
  }
  // Fewer heads than groups: one group per head.
  const HeadGroups all = group_teacher_heads(toy_teacher(5, 16, 1, 4).teacher, 64, 1);
  EXPECT_EQ(all.keys.rows, 5u);

  const Matrix routing = toy.teacher.routing_weights(toy.questions, 0.1f);
  const Matrix pooled = pool_routing(routing, g.group_of_head, 8);
  for (std::size_t r = 0; r < pooled.rows; ++r) {
    double sum = 0;
    for (std::size_t k = 0; k < 8; ++k) sum += pooled(r, k);
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
}

TEST(DistillKeysOnly, TrainsTheKeysAndValuesAndLeavesEveryOtherWeightAtItsInit) {
  // Fewer keys than heads, so the init (k-means groups) leaves something to learn.
  const ToyTeacher toy = toy_teacher(16, 48, 8, 3);
  DistillOptions o;
  o.config.dim = 48;
  o.config.num_heads = 4;
  o.config.keys_per_head = 1;
  o.epochs = 5;
  o.patience = 0;
  o.lr = 3e-3;
  o.data.samples = 256;
  o.data.validation_fraction = 0.0;  // the best epoch by training loss: one after the init
  o.seed = 5;
  o.threads = 1;
  o.keys_only = true;
  StudentWeights initial = init_student(o.config, toy.teacher, StudentInit::Teacher, o.seed);
  const DistillReport report = distill_student(toy.teacher, toy.questions, toy.head_of_question, o);
  set_attention_gain(initial, report.attention_gain);  // the one part of the init distill chooses
  ASSERT_GT(report.best_epoch, 0u) << "no epoch improved on the init, so nothing shows what was trained";
  std::size_t banks = 0;
  for (const StudentTensor& t : report.weights.tensors) {
    const bool bank = t.name.find("keys") != std::string::npos || t.name.find("values") != std::string::npos;
    if (bank) {
      ++banks;
      EXPECT_NE(t.values, initial.at(t.name).values) << t.name << " did not train";
    } else {
      EXPECT_EQ(t.values, initial.at(t.name).values) << t.name << " changed";
    }
  }
  EXPECT_EQ(banks, 2 * o.config.layers);

  o.init = StudentInit::Random;
  EXPECT_THROW(distill_student(toy.teacher, toy.questions, toy.head_of_question, o), InputError);
}

// The teacher init's attention gain that distill chooses is the candidate
// with the lowest validation loss, recomputed here from the same data.
void expect_gain_is_the_best_candidate(const ToyTeacher& toy, const DistillOptions& o, const DistillReport& report) {
  const DistillData data = make_distill_data(toy.teacher, toy.questions, toy.head_of_question, o.data);
  ASSERT_GT(data.validation_inputs.rows, 0u);
  const Matrix targets = toy.teacher.project(data.validation_inputs);
  double best_loss = 1e300, chosen_loss = -1, chosen_cosine = 0;
  for (const float gain : kAttentionGains) {
    StudentWeights w = init_student(o.config, toy.teacher, StudentInit::Teacher, o.seed);
    set_attention_gain(w, gain);
    const StudentLoss l = torch_student_loss(w, data.validation_inputs, targets, Matrix(), o);
    best_loss = std::min(best_loss, l.total);
    if (gain == report.attention_gain) chosen_loss = l.total, chosen_cosine = 1.0 - l.cosine;
  }
  ASSERT_GE(chosen_loss, 0.0) << "the chosen gain " << report.attention_gain << " is not a candidate";
  EXPECT_NEAR(chosen_loss, best_loss, 1e-6 * best_loss);
  EXPECT_NEAR(report.initial_validation_cosine, chosen_cosine, 1e-5);
}

TEST(DistillAttentionGain, ChoosesTheLowestValidationLossAndKeepsTheQueryWhenItPredictsTheAnswer) {
  DistillOptions o;
  o.config.dim = 48;
  o.config.num_heads = 4;
  o.config.keys_per_head = 1;
  o.epochs = 1;
  o.data.samples = 256;
  o.seed = 3;
  o.threads = 1;
  // Answers unrelated to the centroids and a soft teacher: the query term is
  // noise, and the compressed teacher (the largest gain) is the better start.
  const ToyTeacher unrelated = toy_teacher(16, 48, 8, 3);
  const DistillReport soft = distill_student(unrelated.teacher, unrelated.questions, unrelated.head_of_question, o);
  expect_gain_is_the_best_candidate(unrelated, o, soft);
  EXPECT_GE(soft.attention_gain, 32.0f);  // the query term at most 1/32 of the attention output

  // Each answer next to its centroid, a sharp teacher over 64 heads and 4
  // keys: the query itself says more about the answer than 4 keys can.
  ToyTeacher near = toy_teacher(64, 48, 8, 11);
  Matrix answers = near.teacher.centroids();
  const Matrix jitter = random_unit_rows(64, 48, 99);
  for (std::size_t i = 0; i < answers.data.size(); ++i) answers.data[i] += 0.3f * jitter.data[i];
  normalize_rows(answers, "answer");
  near.teacher = MultiHeadProjection(near.teacher.centroids(), answers, 0.02f);
  const DistillReport sharp = distill_student(near.teacher, near.questions, near.head_of_question, o);
  expect_gain_is_the_best_candidate(near, o, sharp);
  EXPECT_LE(sharp.attention_gain, 4.0f);

  // A given gain is used as it is; only the teacher init has one.
  o.attention_gain = kDefaultAttentionGain;
  EXPECT_EQ(distill_student(near.teacher, near.questions, near.head_of_question, o).attention_gain,
            kDefaultAttentionGain);
  o.init = StudentInit::Random;
  EXPECT_THROW(distill_student(near.teacher, near.questions, near.head_of_question, o), InputError);
  o.attention_gain = 0.0f;
  EXPECT_EQ(distill_student(near.teacher, near.questions, near.head_of_question, o).attention_gain, 0.0f);
  o.init = StudentInit::Teacher;
  o.attention_gain = -1.0f;
  EXPECT_THROW(distill_student(near.teacher, near.questions, near.head_of_question, o), InputError);
}

TEST(DistillAttentionGain, SetsTheFirstBlocksAttentionOutputToGainTimesIdentity) {
  const ToyTeacher toy = toy_teacher(8, 24, 4, 2);
  StudentConfig c;
  c.dim = 24;
  c.num_heads = 4;
  c.keys_per_head = 2;
  StudentWeights w = init_student(c, toy.teacher, StudentInit::Teacher, 1);
  const StudentTensor& out = w.at("attention.out_proj.weight");
  for (std::size_t i = 0; i < 24; ++i)
    for (std::size_t j = 0; j < 24; ++j) ASSERT_EQ(out.values[i * 24 + j], i == j ? kDefaultAttentionGain : 0.0f);
  set_attention_gain(w, 0.5f);
  for (std::size_t i = 0; i < 24; ++i)
    for (std::size_t j = 0; j < 24; ++j) ASSERT_EQ(w.at("attention.out_proj.weight").values[i * 24 + j], i == j ? 0.5f : 0.0f);
  EXPECT_THROW(set_attention_gain(w, 0.0f), InputError);
  EXPECT_THROW(set_attention_gain(w, std::nanf("")), InputError);
}

TEST(DistillDataTest, SeededHeldOutAndLabelledBySource) {
  const ToyTeacher toy = toy_teacher(6, 24, 10, 5);
  DistillDataOptions o;
  o.samples = 400;
  o.seed = 9;
  o.sources = parse_data_sources("all");  // five generating sources share the 400 samples
  const DistillData a = make_distill_data(toy.teacher, toy.questions, toy.head_of_question, o);
  const DistillData b = make_distill_data(toy.teacher, toy.questions, toy.head_of_question, o);
  EXPECT_EQ(a.train_inputs.data, b.train_inputs.data);
  EXPECT_EQ(a.validation_inputs.data, b.validation_inputs.data);
  // 0.15 x 10 = 1.5 questions per cluster, rounded stochastically to 1 or 2.
  EXPECT_GE(a.validation_questions, 6u);
  EXPECT_LE(a.validation_questions, 12u);
  EXPECT_EQ(a.validation_inputs.rows, 4 * a.validation_questions);  // each plus three perturbed copies
  EXPECT_EQ(a.per_source.at("questions"), 60u - a.validation_questions);
  EXPECT_EQ(a.train_inputs.rows, 60u - a.validation_questions + 400u);
  EXPECT_EQ(a.per_source.at("perturbed"), 80u);
  EXPECT_EQ(a.per_source.at("centroids"), 80u);
  EXPECT_EQ(a.train_source.size(), a.train_inputs.rows);
  // No held-out question appears among the training questions.
  for (std::size_t v = 0; v < a.validation_questions; ++v) {
    for (std::size_t t = 0; t < a.train_inputs.rows; ++t) {
      if (a.train_source[t] != DataSource::Questions) continue;
      EXPECT_LT(cosine(a.validation_inputs.row(v), a.train_inputs.row(t), 24), 0.99999);
    }
  }
  for (std::size_t r = 0; r < a.train_inputs.rows; ++r) {
    double sq = 0;
    for (std::size_t j = 0; j < 24; ++j) sq += double(a.train_inputs(r, j)) * a.train_inputs(r, j);
    EXPECT_NEAR(sq, 1.0, 1e-4);
  }
  o.seed = 10;
  EXPECT_NE(make_distill_data(toy.teacher, toy.questions, toy.head_of_question, o).train_inputs.data,
            a.train_inputs.data);
  o.sources = parse_data_sources("questions,across");
  EXPECT_EQ(make_distill_data(toy.teacher, toy.questions, toy.head_of_question, o).per_source.size(), 2u);
  EXPECT_THROW(parse_data_sources("questions,noise"), InputError);
}

TEST(DistillDataTest, CentroidInputsReachHeadsWithoutQuestions) {
  const ToyTeacher toy = toy_teacher(6, 24, 10, 5);
  // Keep the questions of heads 0..2 only.
  Matrix questions(0, 24);
  std::vector<std::size_t> head_of_question;
  for (std::size_t i = 0; i < toy.questions.rows; ++i) {
    if (toy.head_of_question[i] >= 3) continue;
    questions.data.insert(questions.data.end(), toy.questions.row(i), toy.questions.row(i) + 24);
    ++questions.rows;
    head_of_question.push_back(toy.head_of_question[i]);
  }
  DistillDataOptions o;
  o.samples = 300;
  o.seed = 3;
  o.noise = 0.3f;
  o.sources = parse_data_sources("perturbed,within,across");
  const auto unquestioned_heads_reached = [&](const DistillData& data) {
    const Matrix scores = toy.teacher.route_scores(data.train_inputs);
    std::set<std::size_t> reached;
    for (std::size_t r = 0; r < scores.rows; ++r) {
      std::size_t best = 0;
      for (std::size_t h = 1; h < scores.cols; ++h)
        if (scores(r, h) > scores(r, best)) best = h;
      if (best >= 3) reached.insert(best);
    }
    return reached.size();
  };
  EXPECT_EQ(unquestioned_heads_reached(make_distill_data(toy.teacher, questions, head_of_question, o)), 0u);
  o.sources = parse_data_sources("centroids");
  const DistillData data = make_distill_data(toy.teacher, questions, head_of_question, o);
  EXPECT_EQ(data.per_source.at("centroids"), 300u);
  EXPECT_EQ(unquestioned_heads_reached(data), 3u);
}

class StudentFiles : public testing_support::TempDirTest {};

TEST_F(StudentFiles, SafetensorsRoundTripKeepsWeightsAndMetadata) {
  const ToyTeacher toy = toy_teacher(4, 24, 2, 1);
  const StudentWeights w = init_student(small_config(StudentVariant::MlpAttention, 2), toy.teacher,
                                        StudentInit::Random, 3);
  const auto path = file("student.safetensors");
  write_student_safetensors(path, w, {{"projection", "p1"}});
  std::map<std::string, std::string> meta;
  const StudentWeights back = read_student_safetensors(path, &meta);
  EXPECT_EQ(back.config.to_json(), w.config.to_json());
  ASSERT_EQ(back.tensors.size(), w.tensors.size());
  for (std::size_t i = 0; i < w.tensors.size(); ++i) {
    EXPECT_EQ(back.tensors[i].name, w.tensors[i].name);
    EXPECT_EQ(back.tensors[i].values, w.tensors[i].values);
  }
  EXPECT_EQ(meta.at("projection"), "p1");
  EXPECT_EQ(meta.at("format"), "ldaproj-student");
  EXPECT_EQ(SafeTensorsFile::open(path).metadata().at("projection"), "p1");
}

TEST_F(StudentFiles, InconsistentFilesAreRejectedWithTheTensorName) {
  const ToyTeacher toy = toy_teacher(4, 24, 2, 1);
  const StudentWeights w = init_student(small_config(StudentVariant::Block, 1), toy.teacher, StudentInit::Random, 3);
  // Missing config metadata.
  std::vector<TensorToWrite> tensors;
  for (const auto& t : w.tensors) tensors.push_back({t.name, t.shape, t.values});
  write_safetensors(file("noconfig.safetensors"), tensors);
  try {
    read_student_safetensors(file("noconfig.safetensors"));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("config"), std::string::npos) << e.what();
  }
  // A tensor missing.
  tensors.pop_back();
  write_safetensors(file("short.safetensors"), tensors, {{"config", w.config.to_json()}});
  try {
    read_student_safetensors(file("short.safetensors"));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("norm2.bias"), std::string::npos) << e.what();
  }
  // Config says 2 layers, file holds 1.
  StudentConfig two = w.config;
  two.layers = 2;
  write_student_safetensors(file("one.safetensors"), w);
  tensors.clear();
  for (const auto& t : w.tensors) tensors.push_back({t.name, t.shape, t.values});
  write_safetensors(file("layers.safetensors"), tensors, {{"config", two.to_json()}});
  try {
    read_student_safetensors(file("layers.safetensors"));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.1.keys"), std::string::npos) << e.what();
  }
  // Writer refuses mismatched shapes and duplicates.
  std::vector<float> three(3);
  EXPECT_THROW(write_safetensors(file("bad.safetensors"), {{"a", {2, 2}, three}}), InputError);
  EXPECT_THROW(write_safetensors(file("bad.safetensors"), {{"a", {3}, three}, {"a", {3}, three}}), InputError);
}

}  // namespace
}  // namespace ldaproj
