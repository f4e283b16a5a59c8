// The ensemble's configuration, its flat tensor layout (store and safetensors)
// and its lean forward: the meta-router MLP, top-k domain selection and the
// weighted mix of the chosen domains' students, batched per domain.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "ldaproj/ensemble.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/safetensors.hpp"

namespace ldaproj {

namespace {

constexpr const char* kFormatName = "ldaproj-ensemble";
const std::string kStudentPrefix = "students.";

std::int64_t as_dim(std::size_t v) { return static_cast<std::int64_t>(v); }

// Names and shapes only: a lying config must not make the reader allocate what it claims.
std::vector<TensorShape> router_shapes(const EnsembleConfig& c) {
  return {{"router.0.weight", {as_dim(c.router_hidden), as_dim(c.dim)}},
          {"router.0.bias", {as_dim(c.router_hidden)}},
          {"router.2.weight", {as_dim(c.domains), as_dim(c.router_hidden)}},
          {"router.2.bias", {as_dim(c.domains)}}};
}

float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

// rows x out = rows x in times (out x in)^T, plus bias.
Matrix linear(const Matrix& x, const StudentTensor& weight, const StudentTensor& bias) {
  const std::size_t out = static_cast<std::size_t>(weight.shape[0]);
  Matrix y(x.rows, out);
  for (std::size_t r = 0; r < x.rows; ++r) std::copy(bias.values.begin(), bias.values.end(), y.row(r));
  if (x.rows == 0) return y;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(x.rows), static_cast<int>(out),
              static_cast<int>(x.cols), 1.0f, x.data.data(), static_cast<int>(x.cols), weight.values.data(),
              static_cast<int>(x.cols), 1.0f, y.data.data(), static_cast<int>(out));
  return y;
}

}  // namespace

// ---------------------------------------------------------------- config
void EnsembleConfig::validate() const {
  auto bad = [](const std::string& what) { throw InputError("ensemble config: " + what); };
  if (dim == 0 || dim > 65536) bad("dim must be in 1..65536, got " + std::to_string(dim));
  if (domains == 0 || domains > 65536) bad("domains must be in 1..65536, got " + std::to_string(domains));
  if (top_domains == 0) bad("top_domains must be at least 1");
  if (router_hidden == 0 || router_hidden > 65536) bad("router_hidden must be in 1..65536, got " + std::to_string(router_hidden));
  if (student.dim != dim) bad("the students' dim " + std::to_string(student.dim) + " differs from " + std::to_string(dim));
  student.validate();
}

std::string EnsembleConfig::to_json() const {
  return nlohmann::json{{"dim", dim},
                        {"domains", domains},
                        {"top_domains", top_domains},
                        {"router_hidden", router_hidden},
                        {"student", nlohmann::json::parse(student.to_json())}}
      .dump();
}

EnsembleConfig EnsembleConfig::from_json(std::string_view text, const std::string& where) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) throw InputError(where + ": the ensemble config is not a JSON object");
  EnsembleConfig c;
  auto count = [&](const char* field, std::size_t& out) {
    if (!j.contains(field) || !j[field].is_number_unsigned()) {
      throw InputError(where + ": ensemble config field \"" + std::string(field) + "\" is missing or not a count");
    }
    out = j[field].get<std::size_t>();
  };
  count("dim", c.dim);
  count("domains", c.domains);
  count("top_domains", c.top_domains);
  count("router_hidden", c.router_hidden);
  if (!j.contains("student") || !j["student"].is_object()) {
    throw InputError(where + ": ensemble config field \"student\" is missing or not an object");
  }
  c.student = StudentConfig::from_json(j["student"].dump(), where);
  try {
    c.validate();
  } catch (const InputError& e) {
    throw InputError(where + ": " + e.what());
  }
  return c;
}

// ---------------------------------------------------------------- weights
void EnsembleWeights::validate(const std::string& where) const {
  try {
    config.validate();
  } catch (const InputError& e) {
    throw InputError(where + ": " + e.what());
  }
  const auto layout = router_shapes(config);
  if (router.size() != layout.size()) throw InputError(where + ": the meta-router needs " + std::to_string(layout.size()) + " tensors");
  for (std::size_t i = 0; i < layout.size(); ++i) {
    if (router[i].name != layout[i].name || router[i].shape != layout[i].shape ||
        router[i].values.size() != layout[i].count()) {
      throw InputError(where + ": meta-router tensor '" + layout[i].name + "' is missing or has the wrong shape");
    }
    for (float v : router[i].values) {
      if (!std::isfinite(v)) throw InputError(where + ": meta-router tensor '" + layout[i].name + "' is not finite");
    }
  }
  if (students.size() != config.domains) {
    throw InputError(where + ": " + std::to_string(students.size()) + " students for " +
                     std::to_string(config.domains) + " domains");
  }
  for (std::size_t d = 0; d < students.size(); ++d) {
    const std::string what = where + ", student of domain " + std::to_string(d);
    if (students[d].config.to_json() != config.student.to_json()) {
      throw InputError(what + ": its config differs from the ensemble's");
    }
    students[d].validate(what);
  }
  if (domain_names.size() != config.domains) {
    throw InputError(where + ": " + std::to_string(domain_names.size()) + " domain names for " +
                     std::to_string(config.domains) + " domains");
  }
  for (std::size_t h = 0; h < domain_of_head.size(); ++h) {
    if (domain_of_head[h] >= config.domains) {
      throw InputError(where + ": head " + std::to_string(h) + " is assigned to domain " +
                       std::to_string(domain_of_head[h]) + " of " + std::to_string(config.domains));
    }
  }
}

std::size_t EnsembleWeights::parameter_count() const {
  std::size_t n = 0;
  for (const auto& t : router) n += t.values.size();
  for (const auto& s : students) n += s.parameter_count();
  return n;
}

// ---------------------------------------------------------------- model
struct EnsembleModel::Impl {
  EnsembleConfig config;
  std::vector<StudentTensor> router;
  std::vector<StudentModel> students;
  std::size_t parameters = 0;
};

EnsembleModel::EnsembleModel() = default;
EnsembleModel::EnsembleModel(const EnsembleWeights& weights) {
  weights.validate("ensemble weights");
  auto impl = std::make_shared<Impl>();
  impl->config = weights.config;
  impl->router = weights.router;
  for (const auto& s : weights.students) impl->students.emplace_back(s);
  impl->parameters = weights.parameter_count();
  impl_ = std::move(impl);
}
EnsembleModel::EnsembleModel(const EnsembleModel&) = default;
EnsembleModel& EnsembleModel::operator=(const EnsembleModel&) = default;
EnsembleModel::EnsembleModel(EnsembleModel&&) noexcept = default;
EnsembleModel& EnsembleModel::operator=(EnsembleModel&&) noexcept = default;
EnsembleModel::~EnsembleModel() = default;

bool EnsembleModel::empty() const { return !impl_; }
const EnsembleConfig& EnsembleModel::config() const {
  if (!impl_) throw Error("empty ensemble");
  return impl_->config;
}
std::size_t EnsembleModel::parameter_count() const { return impl_ ? impl_->parameters : 0; }
std::size_t EnsembleModel::domains_per_query(std::size_t top_domains) const {
  const EnsembleConfig& c = config();
  return std::min(top_domains ? top_domains : c.top_domains, c.domains);
}

Matrix EnsembleModel::router_weights(const Matrix& queries) const {
  const Impl& s = *impl_;
  if (queries.cols != s.config.dim) {
    throw InputError("query embeddings have dimension " + std::to_string(queries.cols) + ", the ensemble expects " +
                     std::to_string(s.config.dim));
  }
  Matrix hidden = linear(queries, s.router[0], s.router[1]);
  for (float& v : hidden.data) v = gelu(v);
  Matrix logits = linear(hidden, s.router[2], s.router[3]);
  for (std::size_t q = 0; q < logits.rows; ++q) {
    float* row = logits.row(q);
    const float top = *std::max_element(row, row + logits.cols);
    double sum = 0.0;
    for (std::size_t d = 0; d < logits.cols; ++d) sum += row[d] = std::exp(row[d] - top);
    for (std::size_t d = 0; d < logits.cols; ++d) row[d] = static_cast<float>(row[d] / sum);
  }
  return logits;
}

Matrix EnsembleModel::forward(const Matrix& queries, std::size_t top_domains, Matrix* weights_out) const {
  const Impl& s = *impl_;
  const std::size_t k = domains_per_query(top_domains);
  const Matrix all = router_weights(queries);
  const std::size_t domains = s.config.domains;
  // Keep each query's k heaviest domains, renormalised (the softmax over the
  // kept logits).
  Matrix used(queries.rows, domains);
  std::vector<std::vector<std::size_t>> rows_of_domain(domains);
  std::vector<std::size_t> order(domains);
  for (std::size_t q = 0; q < queries.rows; ++q) {
    const float* w = all.row(q);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      [w](std::size_t a, std::size_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
    double kept = 0.0;
    for (std::size_t i = 0; i < k; ++i) kept += w[order[i]];
    for (std::size_t i = 0; i < k; ++i) {
      used(q, order[i]) = static_cast<float>(w[order[i]] / kept);
      rows_of_domain[order[i]].push_back(q);
    }
  }
  // One batched forward per domain over the queries that chose it.
  Matrix out(queries.rows, s.config.dim);
  for (std::size_t d = 0; d < domains; ++d) {
    const auto& rows = rows_of_domain[d];
    if (rows.empty()) continue;
    Matrix batch(rows.size(), queries.cols);
    for (std::size_t i = 0; i < rows.size(); ++i) std::copy(queries.row(rows[i]), queries.row(rows[i]) + queries.cols, batch.row(i));
    const Matrix y = s.students[d].forward(batch);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const float w = used(rows[i], d);
      float* o = out.row(rows[i]);
      const float* src = y.row(i);
      for (std::size_t j = 0; j < out.cols; ++j) o[j] += w * src[j];
    }
  }
  if (weights_out) *weights_out = std::move(used);
  return out;
}

Matrix EnsembleModel::project(const Matrix& queries, std::size_t top_domains) const {
  Matrix out = forward(queries, top_domains);
  normalize_rows(out, "ensemble output");
  return out;
}

// ---------------------------------------------------------------- flat layout
namespace {

std::vector<StudentTensor> flatten(const EnsembleWeights& w) {
  std::vector<StudentTensor> out = w.router;
  for (std::size_t d = 0; d < w.students.size(); ++d) {
    for (const StudentTensor& t : w.students[d].tensors) {
      out.push_back({kStudentPrefix + std::to_string(d) + "." + t.name, t.shape, t.values});
    }
  }
  StudentTensor heads{"domain_of_head", {as_dim(w.domain_of_head.size())}, {}};
  for (std::size_t d : w.domain_of_head) heads.values.push_back(static_cast<float>(d));
  out.push_back(std::move(heads));
  return out;
}

std::string config_with_names(const EnsembleWeights& w) {
  nlohmann::json j = nlohmann::json::parse(w.config.to_json());
  j["domain_names"] = w.domain_names;
  return j.dump();
}

EnsembleWeights unflatten(const std::string& config_json, std::vector<StudentTensor> tensors, const std::string& where) {
  EnsembleWeights w;
  w.config = EnsembleConfig::from_json(config_json, where);
  const nlohmann::json j = nlohmann::json::parse(config_json);
  if (!j.contains("domain_names") || !j["domain_names"].is_array()) {
    throw InputError(where + ": the ensemble config has no \"domain_names\" list");
  }
  for (const auto& name : j["domain_names"]) {
    if (!name.is_string()) throw InputError(where + ": a domain name is not a string");
    w.domain_names.push_back(name.get<std::string>());
  }
  w.students.resize(w.config.domains);
  for (auto& s : w.students) s.config = w.config.student;
  bool have_heads = false;
  for (StudentTensor& t : tensors) {
    if (t.name.rfind("router.", 0) == 0) {
      w.router.push_back(std::move(t));
    } else if (t.name.rfind(kStudentPrefix, 0) == 0) {
      // "students.<d>." with d written as flatten() writes it: no sign, spaces or leading zeros.
      const std::size_t dot = t.name.find('.', kStudentPrefix.size());
      const std::string index =
          dot == std::string::npos ? std::string() : t.name.substr(kStudentPrefix.size(), dot - kStudentPrefix.size());
      std::size_t d = w.config.domains;
      if (!index.empty() && index.size() <= 5 &&
          std::all_of(index.begin(), index.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        d = std::stoul(index);
      }
      if (d >= w.config.domains || std::to_string(d) != index) {
        throw InputError(where + ": tensor '" + t.name + "' names no domain of the ensemble (students.0 to students." +
                         std::to_string(w.config.domains - 1) + ")");
      }
      t.name = t.name.substr(dot + 1);
      w.students[d].tensors.push_back(std::move(t));
    } else if (t.name == "domain_of_head") {
      have_heads = true;
      // Range-checked as a float first: casting one past size_t is undefined.
      for (float v : t.values) {
        if (!(v >= 0.0f) || v != std::floor(v) || v >= static_cast<float>(w.config.domains)) {
          throw InputError(where + ": domain_of_head holds " + std::to_string(v) + ", which is not a domain in 0.." +
                           std::to_string(w.config.domains - 1));
        }
        w.domain_of_head.push_back(static_cast<std::size_t>(v));
      }
    } else {
      throw InputError(where + ": tensor '" + t.name + "' is not part of an ensemble");
    }
  }
  if (!have_heads) throw InputError(where + ": tensor 'domain_of_head' is missing");
  // Router tensors in their canonical order, whatever order they came in.
  const auto layout = router_shapes(w.config);
  std::vector<StudentTensor> ordered;
  for (const auto& want : layout) {
    auto it = std::find_if(w.router.begin(), w.router.end(), [&](const StudentTensor& t) { return t.name == want.name; });
    if (it == w.router.end()) throw InputError(where + ": tensor '" + want.name + "' is missing");
    ordered.push_back(std::move(*it));
  }
  w.router = std::move(ordered);
  // Each student's tensors in its layout order.
  for (auto& s : w.students) {
    std::vector<StudentTensor> in_order;
    for (const auto& want : student_shapes(s.config)) {
      auto it = std::find_if(s.tensors.begin(), s.tensors.end(), [&](const StudentTensor& t) { return t.name == want.name; });
      if (it != s.tensors.end()) in_order.push_back(std::move(*it));
    }
    if (in_order.size() != s.tensors.size()) {
      throw InputError(where + ": a student holds tensors that are not part of its config");
    }
    s.tensors = std::move(in_order);
  }
  w.validate(where);
  return w;
}

}  // namespace

StoredEnsemble to_stored_ensemble(const EnsembleWeights& weights, const std::string& projection,
                                  const std::string& metrics_json) {
  weights.validate("the ensemble of projection \"" + projection + "\"");
  StoredEnsemble s;
  s.projection = projection;
  s.config_json = config_with_names(weights);
  s.tensors = flatten(weights);
  s.metrics_json = metrics_json.empty() ? "{}" : metrics_json;
  return s;
}

EnsembleWeights from_stored_ensemble(const StoredEnsemble& stored, const std::string& where) {
  return unflatten(stored.config_json, stored.tensors, where);
}

std::optional<EnsembleWeights> load_ensemble_weights(const Store& store, const std::string& projection_name) {
  auto stored = store.load_ensemble(projection_name);
  if (!stored) return std::nullopt;
  try {
    return from_stored_ensemble(*stored, "the ensemble of projection \"" + stored->projection + "\" in " +
                                             store.path().string());
  } catch (const InputError& e) {
    throw Error(std::string(e.what()) + "; the database is inconsistent: train it again with `ldaproj ensemble`");
  }
}

void write_ensemble_safetensors(const std::filesystem::path& path, const EnsembleWeights& weights,
                                const std::map<std::string, std::string>& metadata) {
  weights.validate("the ensemble written to " + path.string());
  const std::vector<StudentTensor> flat = flatten(weights);
  std::vector<TensorToWrite> tensors;
  tensors.reserve(flat.size());
  for (const auto& t : flat) tensors.push_back({t.name, t.shape, t.values});
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = kFormatName;
  meta["config"] = config_with_names(weights);
  write_safetensors(path, tensors, meta);
}

bool is_ensemble_safetensors(const std::filesystem::path& path) {
  const SafeTensorsFile file = SafeTensorsFile::open(path);
  const auto it = file.metadata().find("format");
  return it != file.metadata().end() && it->second == kFormatName;
}

EnsembleWeights read_ensemble_safetensors(const std::filesystem::path& path,
                                          std::map<std::string, std::string>* metadata) {
  const SafeTensorsFile file = SafeTensorsFile::open(path);
  const auto& meta = file.metadata();
  const auto format = meta.find("format");
  if (format == meta.end() || format->second != kFormatName) {
    throw InputError(path.string() + ": not an ldaproj ensemble (its __metadata__ has no \"format\": \"" +
                     std::string(kFormatName) + "\")");
  }
  const auto config = meta.find("config");
  if (config == meta.end()) throw InputError(path.string() + ": __metadata__ has no \"config\"");
  std::vector<StudentTensor> tensors;
  for (const TensorInfo& info : file.tensors()) {
    tensors.push_back({info.name, info.shape, file.load_f32(info.name)});
  }
  if (metadata) *metadata = meta;
  return unflatten(config->second, std::move(tensors), path.string());
}

}  // namespace ldaproj
