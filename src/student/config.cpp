// The student's configuration, its parameter layout (names and shapes that
// follow the PyTorch module) and its safetensors files.
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "ldaproj/error.hpp"
#include "ldaproj/safetensors.hpp"
#include "ldaproj/student.hpp"

namespace ldaproj {

namespace {

constexpr const char* kFormatName = "ldaproj-student";

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::int64_t as_dim(std::size_t v) { return static_cast<std::int64_t>(v); }

}  // namespace

std::string_view to_string(StudentVariant variant) {
  switch (variant) {
    case StudentVariant::Attention: return "attention";
    case StudentVariant::MlpAttention: return "mlp-attention";
    case StudentVariant::Block: return "block";
  }
  return "?";
}

StudentVariant parse_student_variant(std::string_view name) {
  std::string n(name);
  for (char& c : n)
    if (c == '_') c = '-';
  if (n == "attention") return StudentVariant::Attention;
  if (n == "mlp-attention") return StudentVariant::MlpAttention;
  if (n == "block") return StudentVariant::Block;
  throw InputError("unknown student variant \"" + std::string(name) +
                   "\"; expected attention, mlp-attention or block");
}

void StudentConfig::validate() const {
  auto bad = [](const std::string& what) { throw InputError("student config: " + what); };
  if (dim == 0 || dim > 65536) bad("dim must be in 1..65536, got " + std::to_string(dim));
  if (num_heads == 0 || num_heads > dim) bad("num_heads must be in 1..dim, got " + std::to_string(num_heads));
  if (dim % num_heads != 0)
    bad("dim " + std::to_string(dim) + " is not a multiple of num_heads " + std::to_string(num_heads) +
        "; pick --heads dividing it (e.g. 4, 6, 8 or 12 for 384)");
  if (keys_per_head == 0 || num_keys() > 1'000'000)
    bad("keys_per_head must be positive and heads x keys_per_head at most 1e6, got " +
        std::to_string(keys_per_head));
  if (ff_dim > 1'000'000) bad("ff_dim " + std::to_string(ff_dim) + " is too large");
  if (layers == 0 || layers > 64) bad("layers must be in 1..64, got " + std::to_string(layers));
  if (!(layer_norm_eps > 0.0f) || !std::isfinite(layer_norm_eps))
    bad("layer_norm_eps must be a positive number");
}

std::string StudentConfig::to_json() const {
  return nlohmann::json{{"dim", dim},
                        {"num_heads", num_heads},
                        {"keys_per_head", keys_per_head},
                        {"ff_dim", hidden_dim()},
                        {"layers", layers},
                        {"variant", std::string(to_string(variant))},
                        {"layer_norm_eps", layer_norm_eps}}
      .dump();
}

StudentConfig StudentConfig::from_json(std::string_view text, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + ": student config is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw InputError(where + ": student config must be a JSON object");
  StudentConfig c;
  auto count = [&](const char* field, std::size_t& out, bool required) {
    if (!j.contains(field)) {
      if (required) throw InputError(where + ": student config has no \"" + field + "\"");
      return;
    }
    const auto& v = j[field];
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0)
      throw InputError(where + ": student config field \"" + field + "\" must be a non-negative integer, got " +
                       v.dump());
    out = v.get<std::size_t>();
  };
  count("dim", c.dim, true);
  count("num_heads", c.num_heads, true);
  count("keys_per_head", c.keys_per_head, true);
  count("ff_dim", c.ff_dim, false);
  count("layers", c.layers, false);
  if (j.contains("variant")) {
    if (!j["variant"].is_string())
      throw InputError(where + ": student config field \"variant\" must be a string");
    try {
      c.variant = parse_student_variant(j["variant"].get<std::string>());
    } catch (const InputError& e) {
      throw InputError(where + ": " + e.what());
    }
  }
  if (j.contains("layer_norm_eps")) {
    if (!j["layer_norm_eps"].is_number())
      throw InputError(where + ": student config field \"layer_norm_eps\" must be a number");
    c.layer_norm_eps = j["layer_norm_eps"].get<float>();
  }
  try {
    c.validate();
  } catch (const InputError& e) {
    throw InputError(where + ": " + e.what());
  }
  return c;
}

std::size_t TensorShape::count() const {
  std::size_t n = 1;
  for (auto s : shape) n *= static_cast<std::size_t>(s);
  return n;
}

std::vector<TensorShape> student_shapes(const StudentConfig& c) {
  c.validate();
  const std::int64_t d = as_dim(c.dim), m = as_dim(c.num_keys()), ff = as_dim(c.hidden_dim());
  std::vector<TensorShape> layout;
  auto add = [&layout](std::string name, std::vector<std::int64_t> shape) {
    layout.push_back({std::move(name), std::move(shape)});
  };
  auto add_mlp = [&](const std::string& prefix) {
    add(prefix + ".0.weight", {ff, d});
    add(prefix + ".0.bias", {ff});
    add(prefix + ".2.weight", {d, ff});
    add(prefix + ".2.bias", {d});
  };
  add("input_proj.weight", {d, d});
  add("input_proj.bias", {d});
  if (c.variant == StudentVariant::MlpAttention) add_mlp("mlp");
  for (std::size_t b = 0; b < c.layers; ++b) {
    const std::string p = b == 0 ? "" : "blocks." + std::to_string(b) + ".";
    add(p + "keys", {m, d});
    add(p + "values", {m, d});
    add(p + "attention.in_proj_weight", {3 * d, d});
    add(p + "attention.in_proj_bias", {3 * d});
    add(p + "attention.out_proj.weight", {d, d});
    add(p + "attention.out_proj.bias", {d});
    add(p + "norm1.weight", {d});
    add(p + "norm1.bias", {d});
    if (c.variant == StudentVariant::Block) {
      add_mlp(p + "ffn");
      add(p + "norm2.weight", {d});
      add(p + "norm2.bias", {d});
    }
  }
  return layout;
}

std::vector<StudentTensor> student_layout(const StudentConfig& c) {
  std::vector<StudentTensor> layout;
  for (TensorShape& t : student_shapes(c)) {
    const std::size_t count = t.count();
    layout.push_back({std::move(t.name), std::move(t.shape), std::vector<float>(count, 0.0f)});
  }
  return layout;
}

StudentWeights StudentWeights::zeros(const StudentConfig& config) {
  return StudentWeights{config, student_layout(config)};
}

void StudentWeights::validate(const std::string& where) const {
  try {
    config.validate();
  } catch (const InputError& e) {
    throw InputError(where + ": " + e.what());
  }
  const std::vector<TensorShape> layout = student_shapes(config);
  std::set<std::string> expected;
  for (const auto& t : layout) expected.insert(t.name);
  for (const auto& t : tensors) {
    if (!expected.count(t.name))
      throw InputError(where + ": tensor '" + t.name + "' is not part of a " + std::string(to_string(config.variant)) +
                       " student with " + std::to_string(config.layers) + " layer(s)");
  }
  for (const auto& want : layout) {
    const StudentTensor* have = nullptr;
    for (const auto& t : tensors)
      if (t.name == want.name) have = &t;
    if (!have) throw InputError(where + ": tensor '" + want.name + "' is missing");
    if (have->shape != want.shape)
      throw InputError(where + ": tensor '" + want.name + "' has shape " + shape_text(have->shape) +
                       ", the config needs " + shape_text(want.shape));
    if (have->values.size() != want.count())
      throw InputError(where + ": tensor '" + want.name + "' holds " + std::to_string(have->values.size()) +
                       " values for shape " + shape_text(want.shape));
    for (std::size_t i = 0; i < have->values.size(); ++i) {
      if (!std::isfinite(have->values[i]))
        throw InputError(where + ": tensor '" + want.name + "' has a non-finite value at element " +
                         std::to_string(i));
    }
  }
}

const StudentTensor& StudentWeights::at(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return t;
  throw Error("student weights have no tensor '" + std::string(name) + "'");
}

StudentTensor& StudentWeights::at(std::string_view name) {
  return const_cast<StudentTensor&>(static_cast<const StudentWeights&>(*this).at(name));
}

std::size_t StudentWeights::parameter_count() const {
  std::size_t n = 0;
  for (const auto& t : tensors) n += t.values.size();
  return n;
}

void write_student_safetensors(const std::filesystem::path& path, const StudentWeights& weights,
                               const std::map<std::string, std::string>& metadata) {
  weights.validate("student weights for " + path.string());
  std::vector<TensorToWrite> tensors;
  for (const auto& t : weights.tensors) tensors.push_back({t.name, t.shape, t.values});
  std::map<std::string, std::string> header = metadata;
  header["format"] = kFormatName;
  header["config"] = weights.config.to_json();
  write_safetensors(path, tensors, header);
}

StudentWeights read_student_safetensors(const std::filesystem::path& path,
                                        std::map<std::string, std::string>* metadata) {
  const SafeTensorsFile file = SafeTensorsFile::open(path);
  const auto& meta = file.metadata();
  const std::string where = "student file " + path.string();
  const auto config_it = meta.find("config");
  if (config_it == meta.end())
    throw InputError(where + ": the header's __metadata__ has no \"config\"; write it with "
                     "`ldaproj export` or add {\"config\": \"{\\\"dim\\\":384,\\\"num_heads\\\":8,...}\"}");
  if (auto format = meta.find("format"); format != meta.end() && format->second != kFormatName)
    throw InputError(where + ": __metadata__ format is \"" + format->second + "\", expected \"" + kFormatName +
                     "\"");
  StudentWeights weights;
  weights.config = StudentConfig::from_json(config_it->second, where);
  std::set<std::string> known;
  for (TensorShape& t : student_shapes(weights.config)) {
    known.insert(t.name);
    if (!file.contains(t.name)) throw InputError(where + ": tensor '" + t.name + "' is missing");
    std::vector<float> values = file.load_f32(t.name, t.shape);
    weights.tensors.push_back({std::move(t.name), std::move(t.shape), std::move(values)});
  }
  for (const auto& info : file.tensors()) {
    if (!known.count(info.name))
      throw InputError(where + ": unexpected tensor '" + info.name + "' for a " +
                       std::string(to_string(weights.config.variant)) + " student with " +
                       std::to_string(weights.config.layers) + " layer(s); check the config metadata");
  }
  weights.validate(where);
  if (metadata) *metadata = meta;
  return weights;
}

}  // namespace ldaproj
