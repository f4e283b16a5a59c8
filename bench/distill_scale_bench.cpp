// Distillation at scale on synthetic data calibrated to the demo: for each
// number of clusters n and student size, trains the student and reports its
// size against the teacher's 2*n*d floats, training time, agreement with the
// teacher on held-out novel queries, and batch-1 latency of student vs dense
// teacher measured in the same run. Prints a Markdown table.
// Usage: distill_scale_bench [--clusters 1000,10000,100000] [--students 8x8,8x32]
//          [--questions-per-cluster 3] [--epochs 30] [--samples 8192] [--queries 500] [--threads 1]
//          [--temperature 0.1]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "ldaproj/distill.hpp"
#include "ldaproj/index.hpp"
#include "ldaproj/student.hpp"
#include "ldaproj/synthetic.hpp"
#include "ldaproj/teacher.hpp"

using namespace ldaproj;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::size_t> parse_list(const std::string& text) {
  std::vector<std::size_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoull(item));
  return out;
}

Matrix rows_of(const Matrix& m, const std::vector<std::size_t>& rows) {
  Matrix out(rows.size(), m.cols);
  for (std::size_t i = 0; i < rows.size(); ++i) std::copy(m.row(rows[i]), m.row(rows[i]) + m.cols, out.row(i));
  return out;
}

// Median wall time of `fn` over `reps` runs, in microseconds.
template <typename Fn>
double median_us(int reps, Fn fn) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto start = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The synthetic clusters held in memory: questions and held-out queries with
// their cluster, one answer per cluster.
struct SyntheticSet {
  Matrix questions, answers, novel;
  std::vector<std::size_t> cluster_of_question, cluster_of_novel;
};

SyntheticSet materialise(const SyntheticSpec& spec) {
  SyntheticSet set;
  set.questions = Matrix(0, spec.dim);
  set.novel = Matrix(0, spec.dim);
  set.answers = Matrix(spec.clusters, spec.dim);
  generate_synthetic(spec, [&](const SyntheticCluster& c) {
    set.questions.data.insert(set.questions.data.end(), c.questions.data.begin(), c.questions.data.end());
    set.questions.rows += c.questions.rows;
    set.cluster_of_question.insert(set.cluster_of_question.end(), c.questions.rows, c.index);
    set.novel.data.insert(set.novel.data.end(), c.heldout.data.begin(), c.heldout.data.end());
    set.novel.rows += c.heldout.rows;
    set.cluster_of_novel.insert(set.cluster_of_novel.end(), c.heldout.rows, c.index);
    std::copy(c.answer.begin(), c.answer.end(), set.answers.row(c.index));
  });
  return set;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::size_t> cluster_counts{1000, 10000, 100000};
  std::vector<std::pair<std::size_t, std::size_t>> students{{8, 8}, {8, 32}};
  std::size_t per_cluster = 3, epochs = 30, samples = 8192, eval_queries = 500;
  int threads = 1;
  float temperature = kDefaultTemperature;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--clusters") cluster_counts = parse_list(value);
    else if (flag == "--questions-per-cluster") per_cluster = std::stoull(value);
    else if (flag == "--epochs") epochs = std::stoull(value);
    else if (flag == "--samples") samples = std::stoull(value);
    else if (flag == "--queries") eval_queries = std::stoull(value);
    else if (flag == "--threads") threads = std::stoi(value);
    else if (flag == "--temperature") temperature = std::stof(value);
    else if (flag == "--students") {
      students.clear();
      std::stringstream ss(value);
      std::string item;
      while (std::getline(ss, item, ',')) {
        const auto x = item.find('x');
        students.emplace_back(std::stoull(item.substr(0, x)), std::stoull(item.substr(x + 1)));
      }
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }

  std::printf("| n | student (heads x keys) | params | vs teacher 2nd | train time | held-out cos mean | min "
              "| top-10 overlap | R@1 teacher | R@1 student | teacher proj (us) | student proj (us) "
              "| teacher end-to-end (us) | student end-to-end (us) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (std::size_t n : cluster_counts) {
    SyntheticSpec so;
    so.clusters = n;
    so.questions_per_cluster = per_cluster;
    so.heldout_per_cluster = 1;
    so.seed = 1;
    const SyntheticSet data = materialise(so);
    const std::size_t d = so.dim;
    // The teacher: one head per cluster, centroid = normalised mean question.
    Matrix centroids(n, d);
    for (std::size_t i = 0; i < data.questions.rows; ++i) {
      float* c = centroids.row(data.cluster_of_question[i]);
      for (std::size_t j = 0; j < d; ++j) c[j] += data.questions(i, j);
    }
    const MultiHeadProjection teacher(centroids, data.answers, temperature);
    FlatIndex index(d);
    std::vector<std::int64_t> labels(n);
    std::iota(labels.begin(), labels.end(), 0);
    index.add(data.answers, labels);

    std::mt19937_64 rng(7);
    std::vector<std::size_t> pick(data.novel.rows);
    std::iota(pick.begin(), pick.end(), 0);
    std::shuffle(pick.begin(), pick.end(), rng);
    pick.resize(std::min(eval_queries, pick.size()));
    const Matrix novel = rows_of(data.novel, pick);
    openblas_set_num_threads(1);
    const Matrix teacher_out = teacher.project(novel);
    const auto teacher_hits = index.search(teacher_out, 10);

    for (const auto& [heads, keys] : students) {
      DistillOptions o;
      o.config.dim = d;
      o.config.num_heads = heads;
      o.config.keys_per_head = keys;
      o.epochs = epochs;
      o.data.samples = samples;
      o.threads = threads;
      const DistillReport r = distill_student(teacher, data.questions, data.cluster_of_question, o);
      const StudentModel student(r.weights);
      openblas_set_num_threads(1);
      const Matrix student_out = student.project(novel);
      const auto student_hits = index.search(student_out, 10);

      double cos_sum = 0, cos_min = 1, overlap = 0, r1_teacher = 0, r1_student = 0;
      for (std::size_t q = 0; q < novel.rows; ++q) {
        double dot = 0;
        for (std::size_t j = 0; j < d; ++j) dot += double(student_out(q, j)) * teacher_out(q, j);
        cos_sum += dot;
        cos_min = std::min(cos_min, dot);
        std::set<std::int64_t> top;
        for (const Hit& h : teacher_hits[q]) top.insert(h.label);
        for (const Hit& h : student_hits[q]) overlap += top.count(h.label) / 10.0;
        const auto truth = static_cast<std::int64_t>(data.cluster_of_novel[pick[q]]);
        r1_teacher += teacher_hits[q][0].label == truth;
        r1_student += student_hits[q][0].label == truth;
      }
      const double nq = double(novel.rows);

      Matrix one(1, d);
      std::copy(novel.row(0), novel.row(0) + d, one.row(0));
      const int reps = n >= 100000 ? 30 : 200;
      const double t_proj = median_us(reps, [&] { (void)teacher.project(one); });
      const double s_proj = median_us(reps, [&] { (void)student.project(one); });
      const double t_e2e = median_us(reps, [&] { (void)index.search(teacher.project(one), 10); });
      const double s_e2e = median_us(reps, [&] { (void)index.search(student.project(one), 10); });

      const double teacher_floats = 2.0 * double(n) * double(d);
      std::printf("| %zu | %zu x %zu | %zu | %.2fx | %.0f s | %.4f | %.4f | %.1f%% | %.1f%% | %.1f%% | %.0f | %.0f | %.0f | %.0f |\n",
                  n, heads, keys, r.weights.parameter_count(), double(r.weights.parameter_count()) / teacher_floats,
                  r.seconds, cos_sum / nq, cos_min, 100.0 * overlap / nq, 100.0 * r1_teacher / nq,
                  100.0 * r1_student / nq, t_proj, s_proj, t_e2e, s_e2e);
      std::fflush(stdout);
    }
  }
  return 0;
}
