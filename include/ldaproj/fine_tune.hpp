// Fine-tuning the sentence encoder: the last transformer layers are trained
// together with one key per cluster (cross-entropy of the routing softmax over
// the clusters) and the result is written as a new model directory, so every
// embedding made with it is stored under its own model name.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace ldaproj {

struct EncoderFineTuneOptions {
  std::size_t layers = 2;        // how many of the last transformer layers are trained (2: CLINC150 val's choice)
  std::size_t epochs = 8;
  std::size_t batch_size = 64;
  double layer_lr = 2e-4;        // peak AdamW rate of the layers (warm-up half an epoch, linear decay)
  double key_lr = 1e-3;          // AdamW rate of the keys (one per cluster, unit length)
  double temperature = 0.05;     // of the routing softmax in the loss
  double weight_decay = 0.01;    // on the layers' weights
  double dropout = 0.1;          // inside the trained layers, as in BERT training
  std::uint64_t seed = 1;
  int threads = 0;               // 0: all cores
};

// Texts with their cluster: labels[i] < classes.
struct LabeledTexts {
  std::vector<std::string> texts;
  std::vector<std::size_t> labels;
  std::size_t classes = 0;
};

struct EncoderFineTuneEpoch {
  std::size_t epoch = 0;
  double train_loss = 0;
  double validation_accuracy = -1;  // share of validation texts whose nearest key is their cluster's; -1: none
  double seconds = 0;
};

struct EncoderFineTuneReport {
  std::string base_model;               // the model name of the starting encoder
  std::string model_name;               // the name embeddings made with the result are stored under
  std::filesystem::path model_dir;
  std::vector<EncoderFineTuneEpoch> epochs;
  std::size_t chosen_epoch = 0;         // best validation accuracy (earliest on ties), else the last
  double base_validation_accuracy = -1;  // the starting encoder with its centroids as keys
  double seconds = 0;
};

// Trains on `train` (validation may be empty: then the last epoch is kept)
// and writes the model directory `out_dir` (config.json, tokenizer.json,
// model.safetensors in float32, fine_tune.json with options and report). The
// directory appears whole or not at all; InputError when it exists already, its
// name is the base model's, or the labels are inconsistent.
EncoderFineTuneReport fine_tune_encoder(const std::filesystem::path& base_model_dir, const LabeledTexts& train,
                                        const LabeledTexts& validation, const std::filesystem::path& out_dir,
                                        const EncoderFineTuneOptions& options = {},
                                        const std::function<void(const EncoderFineTuneEpoch&)>& on_epoch = {});

}  // namespace ldaproj
