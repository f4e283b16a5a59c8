// Writes the generated part of the committed seed corpus: small students in
// every variant (fuzz/corpus/safetensors/student_*.safetensors). Built by
// fuzz/CMakeLists.txt as make_fuzz_seeds; run from the repository root:
//   build-fuzz/make_fuzz_seeds fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <string>

#include "ldaproj/student.hpp"

int main(int argc, char** argv) {
  using namespace ldaproj;
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds <corpus dir>\n");
    return 2;
  }
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
  return 0;
}
