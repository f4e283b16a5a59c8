// Writes the generated part of the committed seed corpus: small students in
// every variant and one with a lying config
// (fuzz/corpus/safetensors/student_*.safetensors), and small
// ensembles, whole and with lying configs, names, values or lengths
// (fuzz/corpus/ensemble/). Built by fuzz/CMakeLists.txt as make_fuzz_seeds;
// run from the repository root:
//   build-fuzz/make_fuzz_seeds fuzz/corpus
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ldaproj/ensemble.hpp"
#include "ldaproj/safetensors.hpp"
#include "ldaproj/student.hpp"

namespace {

using namespace ldaproj;
namespace fs = std::filesystem;

// Deterministic small values of alternating sign, so no seed is all zeros.
void fill(std::vector<float>& values, float& next) {
  for (float& v : values) v = (next = -next * 0.9f + (next < 0 ? 0.01f : -0.01f));
}

EnsembleWeights small_ensemble(std::size_t domains, std::size_t top, StudentVariant variant, std::size_t layers,
                               std::size_t heads) {
  EnsembleWeights w;
  w.config.dim = 4;
  w.config.domains = domains;
  w.config.top_domains = top;
  w.config.router_hidden = 3;
  StudentConfig& s = w.config.student;
  s.dim = 4;
  s.num_heads = 2;
  s.keys_per_head = 1;
  s.ff_dim = 4;
  s.layers = layers;
  s.variant = variant;
  float next = 0.5f;
  const auto d = static_cast<std::int64_t>(w.config.dim), h = static_cast<std::int64_t>(w.config.router_hidden),
             n = static_cast<std::int64_t>(domains);
  w.router = {{"router.0.weight", {h, d}, std::vector<float>(static_cast<std::size_t>(h * d))},
              {"router.0.bias", {h}, std::vector<float>(static_cast<std::size_t>(h))},
              {"router.2.weight", {n, h}, std::vector<float>(static_cast<std::size_t>(n * h))},
              {"router.2.bias", {n}, std::vector<float>(static_cast<std::size_t>(n))}};
  for (StudentTensor& t : w.router) fill(t.values, next);
  for (std::size_t i = 0; i < domains; ++i) {
    w.students.push_back(StudentWeights::zeros(s));
    for (StudentTensor& t : w.students.back().tensors) fill(t.values, next);
    w.domain_names.push_back("domain " + std::to_string(i));
  }
  for (std::size_t i = 0; i < heads; ++i) w.domain_of_head.push_back(i % domains);
  return w;
}

// The tensors and metadata write_ensemble_safetensors would write, for
// rewriting before they go out through the plain writer.
struct RawFile {
  std::vector<StudentTensor> tensors;
  std::map<std::string, std::string> metadata;

  explicit RawFile(const fs::path& valid) {
    const SafeTensorsFile file = SafeTensorsFile::open(valid);
    metadata = file.metadata();
    for (const TensorInfo& info : file.tensors()) tensors.push_back({info.name, info.shape, file.load_f32(info.name)});
  }
  StudentTensor& tensor(const std::string& name) {
    for (StudentTensor& t : tensors)
      if (t.name == name) return t;
    throw std::runtime_error("no tensor " + name);
  }
  void set_config(const std::string& field, const nlohmann::json& value) {
    nlohmann::json config = nlohmann::json::parse(metadata.at("config"));
    config[field] = value;
    metadata["config"] = config.dump();
  }
  void write(const fs::path& path) const {
    std::vector<TensorToWrite> out;
    for (const StudentTensor& t : tensors) out.push_back({t.name, t.shape, t.values});
    write_safetensors(path, out, metadata);
  }
};

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void write_ensembles(const fs::path& dir) {
  fs::create_directories(dir);
  const fs::path attention = dir / "ensemble_attention.safetensors";
  write_ensemble_safetensors(attention, small_ensemble(2, 1, StudentVariant::Attention, 1, 3),
                             {{"model", "all-MiniLM-L6-v2"}, {"metrics", "{\"validation_cosine\":0.5}"}});
  write_ensemble_safetensors(dir / "ensemble_block.safetensors", small_ensemble(3, 2, StudentVariant::Block, 2, 5),
                             {{"model", "all-MiniLM-L6-v2"}});

  // Lying configs: sizes far beyond the tensors the file holds.
  const std::pair<const char*, std::size_t> huge_fields[] = {
      {"dim", 65536}, {"router_hidden", 65536}, {"domains", 65536}, {"top_domains", 1000000}};
  for (const auto& [field, value] : huge_fields) {
    RawFile raw(attention);
    raw.set_config(field, value);
    raw.write(dir / (std::string("lying_config_") + field + ".safetensors"));
  }
  {
    RawFile raw(attention);
    nlohmann::json config = nlohmann::json::parse(raw.metadata.at("config"));
    config["dim"] = 65536;
    config["student"]["dim"] = 65536;
    raw.metadata["config"] = config.dump();
    raw.write(dir / "lying_config_dim_and_student_dim.safetensors");
  }
  {
    RawFile raw(attention);
    raw.set_config("domain_names", nlohmann::json::array({"only one"}));
    raw.write(dir / "lying_domain_names.safetensors");
  }
  // domain_of_head values that are not domains.
  const std::pair<const char*, float> bad_heads[] = {{"inf", std::numeric_limits<float>::infinity()},
                                                     {"huge", 1e30f},
                                                     {"fraction", 0.5f},
                                                     {"negative", -1.0f},
                                                     {"past_domains", 7.0f}};
  for (const auto& [name, value] : bad_heads) {
    RawFile raw(attention);
    raw.tensor("domain_of_head").values.back() = value;
    raw.write(dir / (std::string("domain_of_head_") + name + ".safetensors"));
  }
  // Tensor names outside the layout.
  const std::pair<const char*, const char*> renames[] = {{"students.0.keys", "students.7.keys"},
                                                         {"students.1.keys", "students.-1.keys"},
                                                         {"students.0.values", "students.0"},
                                                         {"router.2.bias", "router.9.bias"}};
  for (const auto& [from, to] : renames) {
    RawFile raw(attention);
    raw.tensor(from).name = to;
    std::string name = to;
    for (char& c : name)
      if (c == '.' || c == '-') c = '_';
    raw.write(dir / ("renamed_" + name + ".safetensors"));
  }
  {
    RawFile raw(attention);
    raw.tensors.push_back({"router.0.extra", {1}, {0.0f}});
    raw.write(dir / "extra_router_tensor.safetensors");
  }
  {
    RawFile raw(attention);
    raw.tensor("router.0.bias").values[0] = std::nanf("");
    raw.write(dir / "nan_router.safetensors");
  }
  // Cut short, and a header length past the end of the file.
  const std::string bytes = read_all(attention);
  write_all(dir / "truncated.safetensors", bytes.substr(0, bytes.size() / 2));
  std::string long_header = bytes;
  for (std::size_t i = 0; i < 8; ++i) long_header[i] = static_cast<char>((bytes.size() >> (8 * i)) & 0xff);
  write_all(dir / "header_length_past_end.safetensors", long_header);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ldaproj;
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds <corpus dir>\n");
    return 2;
  }
  write_ensembles(std::filesystem::path(argv[1]) / "ensemble");
  const std::filesystem::path dir = std::filesystem::path(argv[1]) / "safetensors";
  std::filesystem::create_directories(dir);
  const std::pair<StudentVariant, const char*> variants[] = {{StudentVariant::Attention, "attention"},
                                                             {StudentVariant::MlpAttention, "mlp_attention"},
                                                             {StudentVariant::Block, "block"}};
  for (const auto& [variant, name] : variants) {
    StudentConfig config;
    config.dim = 4;
    config.num_heads = 2;
    config.keys_per_head = 2;
    config.ff_dim = 4;
    config.layers = variant == StudentVariant::Block ? 2 : 1;
    config.variant = variant;
    StudentWeights weights = StudentWeights::zeros(config);
    float value = 0.25f;
    for (StudentTensor& tensor : weights.tensors) {
      for (float& v : tensor.values) v = (value = -value * 0.9f);
    }
    write_student_safetensors(dir / (std::string("student_") + name + ".safetensors"), weights,
                              {{"model", "all-MiniLM-L6-v2"}});
  }
  // A student config claiming far more than the file holds.
  RawFile lying(dir / "student_attention.safetensors");
  lying.set_config("dim", 16384);
  lying.set_config("num_heads", 1);
  lying.set_config("keys_per_head", 1000000);
  lying.write(dir / "student_lying_config.safetensors");
  return 0;
}
