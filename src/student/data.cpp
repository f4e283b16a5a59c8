// Distillation inputs: the training questions and inputs generated around
// them (perturbed, mixed within and across clusters, pushed away from the
// centroid), with whole questions held out for validation. Seeded.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>

#include "index/top_k.hpp"
#include "ldaproj/distill.hpp"
#include "ldaproj/error.hpp"

namespace ldaproj {

namespace {

// How many nearest other clusters "across" mixes a question with.
constexpr std::size_t kAcrossNeighbours = 8;
// Perturbed copies of each held-out question in the validation set.
constexpr std::size_t kValidationCopies = 3;

void append_row(Matrix& m, const std::vector<float>& row) {
  m.data.insert(m.data.end(), row.begin(), row.end());
  ++m.rows;
}

std::vector<float> unit(std::vector<float> v) {
  double sq = 0.0;
  for (float x : v) sq += double(x) * x;
  if (sq > 0.0) {
    const float inv = static_cast<float>(1.0 / std::sqrt(sq));
    for (float& x : v) x *= inv;
  }
  return v;
}

std::vector<float> row_of(const Matrix& m, std::size_t i) { return {m.row(i), m.row(i) + m.cols}; }

std::vector<float> perturb(const std::vector<float>& q, float noise, std::mt19937_64& rng) {
  // A noise level drawn per sample covers near and far neighbourhoods alike.
  const float level = std::uniform_real_distribution<float>(0.0f, noise)(rng);
  std::normal_distribution<float> n(0.0f, level / std::sqrt(static_cast<float>(q.size())));
  std::vector<float> out = q;
  for (float& x : out) x += n(rng);
  return unit(std::move(out));
}

std::vector<float> mix(const std::vector<float>& a, const std::vector<float>& b, float t) {
  std::vector<float> out(a.size());
  for (std::size_t j = 0; j < a.size(); ++j) out[j] = (1.0f - t) * a[j] + t * b[j];
  return unit(std::move(out));
}

}  // namespace

std::string_view to_string(DataSource source) {
  switch (source) {
    case DataSource::Questions: return "questions";
    case DataSource::Perturbed: return "perturbed";
    case DataSource::Within: return "within";
    case DataSource::Across: return "across";
    case DataSource::Extrapolated: return "extrapolated";
    case DataSource::Centroids: return "centroids";
  }
  return "?";
}

DataSource parse_data_source(std::string_view name) {
  for (DataSource s : kAllDataSources)
    if (to_string(s) == name) return s;
  throw InputError("unknown data source \"" + std::string(name) +
                   "\"; expected questions, perturbed, within, across, extrapolated or centroids");
}

std::vector<DataSource> parse_data_sources(std::string_view list) {
  if (list == "all") return {std::begin(kAllDataSources), std::end(kAllDataSources)};
  std::vector<DataSource> out;
  std::stringstream ss{std::string(list)};
  std::string item;
  while (std::getline(ss, item, ',')) {
    const DataSource s = parse_data_source(item);
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  if (out.empty()) throw InputError("give at least one data source, e.g. questions,perturbed or all");
  return out;
}

DistillData make_distill_data(const MultiHeadProjection& teacher, const Matrix& questions,
                              const std::vector<std::size_t>& head_of_question, const DistillDataOptions& options) {
  const std::size_t d = teacher.dim(), heads = teacher.num_heads();
  // One unpacked copy: the teacher hands out copies, not references.
  const Matrix centroids = teacher.centroids();
  if (questions.rows == 0) throw InputError("no training questions to distil from");
  if (questions.cols != d) {
    throw InputError("questions have dimension " + std::to_string(questions.cols) + ", the teacher " +
                     std::to_string(d));
  }
  if (head_of_question.size() != questions.rows) throw InputError("one head index per question is needed");
  if (options.sources.empty()) throw InputError("give at least one data source");
  if (!(options.validation_fraction >= 0.0 && options.validation_fraction < 1.0)) {
    throw InputError("validation fraction must be in [0, 1)");
  }
  if (!(options.noise >= 0.0f) || !std::isfinite(options.noise)) throw InputError("noise must be >= 0");

  std::mt19937_64 rng(options.seed ^ 0x64697374696c6cULL);
  std::vector<std::vector<std::size_t>> by_head(heads);
  for (std::size_t i = 0; i < questions.rows; ++i) {
    if (head_of_question[i] >= heads) {
      throw InputError("question " + std::to_string(i) + " names head " + std::to_string(head_of_question[i]) +
                       " of " + std::to_string(heads));
    }
    by_head[head_of_question[i]].push_back(i);
  }

  // Hold out whole questions per cluster, always leaving one to train on.
  // Rounding is stochastic so that clusters with few questions still lose
  // one now and then and the overall share stays the requested one.
  DistillData data;
  data.train_inputs = Matrix(0, d);
  data.validation_inputs = Matrix(0, d);
  std::vector<std::vector<std::size_t>> train_of_head(heads);
  std::vector<std::size_t> train, held_out;
  std::uniform_real_distribution<double> unit_interval(0.0, 1.0);
  for (std::size_t h = 0; h < heads; ++h) {
    auto rows = by_head[h];
    std::shuffle(rows.begin(), rows.end(), rng);
    std::size_t hold =
        static_cast<std::size_t>(std::floor(options.validation_fraction * double(rows.size()) + unit_interval(rng)));
    if (hold >= rows.size()) hold = rows.empty() ? 0 : rows.size() - 1;
    held_out.insert(held_out.end(), rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(hold));
    train_of_head[h].assign(rows.begin() + static_cast<std::ptrdiff_t>(hold), rows.end());
    train.insert(train.end(), train_of_head[h].begin(), train_of_head[h].end());
  }
  if (held_out.size() > options.max_validation_questions) {
    // An even random subset stays held out; the others go back to training.
    std::shuffle(held_out.begin(), held_out.end(), rng);
    for (std::size_t i = options.max_validation_questions; i < held_out.size(); ++i) {
      train.push_back(held_out[i]);
      train_of_head[head_of_question[held_out[i]]].push_back(held_out[i]);
    }
    held_out.resize(options.max_validation_questions);
  }
  std::sort(train.begin(), train.end());
  std::sort(held_out.begin(), held_out.end());

  std::vector<std::size_t> heads_with_questions;
  for (std::size_t h = 0; h < heads; ++h)
    if (!train_of_head[h].empty()) heads_with_questions.push_back(h);
  // Nearest other clusters (by centroid) that have training questions, for
  // the heads "across" will draw from: a blocked top-k search over those
  // heads' centroids, so that many heads need neither a heads x heads
  // similarity matrix nor a scan and sort of every head per wanted head.
  std::vector<std::vector<std::size_t>> neighbours(heads);
  auto find_neighbours = [&](const std::vector<std::size_t>& wanted) {
    if (wanted.empty() || heads_with_questions.empty()) return;
    Matrix base(heads_with_questions.size(), d), queries(wanted.size(), d);
    for (std::size_t i = 0; i < heads_with_questions.size(); ++i) {
      std::copy(centroids.row(heads_with_questions[i]), centroids.row(heads_with_questions[i]) + d, base.row(i));
    }
    for (std::size_t i = 0; i < wanted.size(); ++i) {
      std::copy(centroids.row(wanted[i]), centroids.row(wanted[i]) + d, queries.row(i));
    }
    // One more than needed: a wanted head with questions finds itself first.
    const detail::TopK near = detail::top_k_inner_product(queries.data.data(), queries.rows, base.data.data(),
                                                          base.rows, d, kAcrossNeighbours + 1);
    for (std::size_t i = 0; i < wanted.size(); ++i) {
      std::vector<std::size_t>& out = neighbours[wanted[i]];
      for (std::size_t j = 0; j < near.k && out.size() < kAcrossNeighbours; ++j) {
        const std::size_t o = heads_with_questions[near.index[i * near.k + j]];
        if (o != wanted[i]) out.push_back(o);
      }
    }
  };

  auto pick = [&rng](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  auto add = [&data](DataSource s, const std::vector<float>& row) {
    append_row(data.train_inputs, row);
    data.train_source.push_back(s);
    ++data.per_source[std::string(to_string(s))];
  };

  std::vector<DataSource> generating;
  for (DataSource s : options.sources) {
    if (s == DataSource::Questions) {
      for (std::size_t i : train) add(s, unit(row_of(questions, i)));
    } else {
      generating.push_back(s);
    }
  }
  for (std::size_t k = 0; k < generating.size(); ++k) {
    const DataSource s = generating[k];
    // Split `samples` evenly; the first sources take the remainder.
    const std::size_t count = options.samples / generating.size() + (k < options.samples % generating.size() ? 1 : 0);
    std::vector<std::size_t> picks(count);
    for (auto& qi : picks) qi = train[pick(train.size())];
    if (s == DataSource::Across) {
      std::vector<std::size_t> wanted;
      wanted.reserve(picks.size());
      for (std::size_t qi : picks) wanted.push_back(head_of_question[qi]);
      std::sort(wanted.begin(), wanted.end());
      wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
      find_neighbours(wanted);
    }
    if (s == DataSource::Centroids) {
      for (std::size_t i = 0; i < count; ++i) add(s, perturb(row_of(centroids, pick(heads)), options.noise, rng));
      continue;
    }
    for (const std::size_t qi : picks) {
      const std::size_t h = head_of_question[qi];
      const std::vector<float> q = unit(row_of(questions, qi));
      const float t = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
      switch (s) {
        case DataSource::Perturbed:
          add(s, perturb(q, options.noise, rng));
          break;
        case DataSource::Within: {
          const auto& same = train_of_head[h];
          const std::vector<float> other = same.size() > 1 ? unit(row_of(questions, same[pick(same.size())]))
                                                           : row_of(centroids, h);
          add(s, mix(q, other, t));
          break;
        }
        case DataSource::Across: {
          if (neighbours[h].empty()) {
            add(s, perturb(q, options.noise, rng));
            break;
          }
          const std::size_t o = neighbours[h][pick(neighbours[h].size())];
          const auto& pool = train_of_head[o];
          add(s, mix(q, unit(row_of(questions, pool[pick(pool.size())])), t));
          break;
        }
        case DataSource::Extrapolated: {
          // q + s (q - c): moves away from the centroid along the question's
          // own direction of difference, s in [0, 1.5).
          const float* c = centroids.row(h);
          std::vector<float> out(d);
          const float step = 1.5f * t;
          for (std::size_t j = 0; j < d; ++j) out[j] = q[j] + step * (q[j] - c[j]);
          add(s, unit(std::move(out)));
          break;
        }
        case DataSource::Questions:
        case DataSource::Centroids:
          break;
      }
    }
  }
  if (data.train_inputs.rows == 0) throw InputError("the data options produce no training inputs");

  for (std::size_t i : held_out) append_row(data.validation_inputs, unit(row_of(questions, i)));
  data.validation_questions = held_out.size();
  for (std::size_t i : held_out) {
    for (std::size_t c = 0; c < kValidationCopies; ++c) {
      append_row(data.validation_inputs, perturb(unit(row_of(questions, i)), options.noise, rng));
    }
  }
  return data;
}

}  // namespace ldaproj
