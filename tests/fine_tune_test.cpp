// Encoder fine-tuning: the libtorch BERT forward against the native encoder
// (its reference), the written model directory, training progress, refusals,
// and the CLI flow finetune-encoder -> embed -> train -> validate.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_support.hpp"
#include "demo_store.hpp"
#include "embed/torch_bert.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/eval.hpp"
#include "ldaproj/fine_tune.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/tokenizer.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

namespace fs = std::filesystem;
using testing_support::TempDirTest;

// Texts and their native embeddings with the torch forward of `layers`.
torch::Tensor torch_encode(const detail::TorchBert& bert, const std::vector<detail::TorchBertLayer>& layers,
                           const fs::path& model_dir, const std::vector<std::string>& texts) {
  const auto tokenizer = Tokenizer::from_file(model_dir / "tokenizer.json");
  std::vector<std::vector<std::int32_t>> ids;
  for (const auto& t : texts) ids.push_back(tokenizer.encode(t, 256));
  const std::size_t frozen = bert.layers.size() - layers.size();
  return detail::encode_all_states(bert, detail::bert_prefix_states(bert, ids, frozen), layers);
}

double min_row_cosine(const torch::Tensor& a, const Matrix& b) {
  const torch::Tensor ref =
      torch::from_blob(const_cast<float*>(b.data.data()), {static_cast<std::int64_t>(b.rows), static_cast<std::int64_t>(b.cols)})
          .clone();
  return (a * ref).sum(1).min().item<double>();
}

const std::vector<std::string> kProbeTexts = {
    "how do I get my password back",
    "a",
    "Refunds are issued to the original payment method within five business days of receiving the item.",
    "¿Dónde está mi pedido? It shipped on Monday",
    "what's the weather like in Zürich tomorrow morning, and should I bring an umbrella?"};

// The demo's questions as labelled texts (one class per cluster) and its
// held-out queries against the same classes.
struct DemoTexts {
  LabeledTexts train, val;
};

DemoTexts demo_texts(const fs::path& db) {
  Store store = Store::open(db);
  import_file(store, fs::path(testing_support::demo_file("clusters.json")));
  import_file(store, fs::path(testing_support::demo_file("extra.jsonl")));
  DemoTexts d;
  std::map<std::int64_t, std::size_t> cls;
  std::map<std::string, std::size_t> by_external;
  std::map<std::int64_t, std::string> external;
  for (const Cluster& c : store.clusters()) external[c.id] = c.external_id;
  for (const Question& q : store.questions()) {
    const auto [it, added] = cls.emplace(q.cluster_id, cls.size());
    if (added) by_external[external[q.cluster_id]] = it->second;
    d.train.texts.push_back(q.text);
    d.train.labels.push_back(it->second);
  }
  d.train.classes = d.val.classes = cls.size();
  for (const LabeledQuery& q : read_test_queries(fs::path(testing_support::demo_file("heldout.json")))) {
    if (q.out_of_scope() || !by_external.count(q.cluster)) continue;
    d.val.texts.push_back(q.text);
    d.val.labels.push_back(by_external.at(q.cluster));
  }
  return d;
}

TEST(TorchBert, ForwardMatchesTheNativeEncoder) {
  const fs::path model = resolve_model_dir();
  const detail::TorchBert bert = detail::load_torch_bert(model);
  EncoderOptions options;
  options.threads = 1;
  const Matrix native = Encoder::load(model, options).encode(kProbeTexts);
  // All layers in torch, and the last two on top of four cached ones: the same result.
  EXPECT_GT(min_row_cosine(torch_encode(bert, bert.layers, model, kProbeTexts), native), 0.99999);
  const std::vector<detail::TorchBertLayer> last_two(bert.layers.end() - 2, bert.layers.end());
  EXPECT_GT(min_row_cosine(torch_encode(bert, last_two, model, kProbeTexts), native), 0.99999);
}

class FineTune : public TempDirTest {};

TEST_F(FineTune, WritesAModelDirectoryThatDiffersOnlyInTheTrainedLayer) {
  const DemoTexts d = demo_texts(file("demo.db"));
  ASSERT_GE(d.train.classes, 20u);
  ASSERT_GE(d.val.texts.size(), 40u);
  EncoderFineTuneOptions options;
  options.layers = 1;
  options.epochs = 3;
  options.threads = 2;
  std::vector<std::size_t> seen;
  const fs::path out = file("demo-tuned");
  const fs::path base_dir = resolve_model_dir();
  const EncoderFineTuneReport report =
      fine_tune_encoder(base_dir, d.train, d.val, out, options, [&](const EncoderFineTuneEpoch& e) { seen.push_back(e.epoch); });

  EXPECT_EQ(seen, (std::vector<std::size_t>{1, 2, 3}));
  ASSERT_EQ(report.epochs.size(), 3u);
  EXPECT_EQ(report.base_model, testing_support::kBundledModelName);
  EXPECT_EQ(report.model_name, "demo-tuned");
  EXPECT_LT(report.epochs[2].train_loss, report.epochs[0].train_loss);
  // The chosen epoch has the best validation accuracy (the earliest of ties).
  double best = -1;
  for (const auto& e : report.epochs) best = std::max(best, e.validation_accuracy);
  ASSERT_GE(report.chosen_epoch, 1u);
  EXPECT_EQ(report.epochs[report.chosen_epoch - 1].validation_accuracy, best);
  for (std::size_t i = 0; i + 1 < report.chosen_epoch; ++i) EXPECT_LT(report.epochs[i].validation_accuracy, best);
  EXPECT_GT(report.base_validation_accuracy, 0.5);

  for (const char* f : {"config.json", "tokenizer.json", "model.safetensors", "fine_tune.json"}) {
    EXPECT_TRUE(fs::is_regular_file(out / f)) << f;
  }
  EXPECT_EQ(nlohmann::json::parse(testing_support::read_bytes(out / "fine_tune.json"))["chosen_epoch"],
            report.chosen_epoch);
  for (const auto& entry : fs::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename().string().find(".partial"), std::string::npos) << entry.path();
  }

  // The embeddings and the first five layers are the base model's; the last one moved.
  const detail::TorchBert base = detail::load_torch_bert(base_dir), tuned = detail::load_torch_bert(out);
  EXPECT_TRUE(torch::equal(base.word, tuned.word));
  EXPECT_TRUE(torch::equal(base.position, tuned.position));
  ASSERT_EQ(base.layers.size(), tuned.layers.size());
  for (std::size_t l = 0; l < base.layers.size(); ++l) {
    bool same = true;
    const auto a = base.layers[l].tensors(), b = tuned.layers[l].tensors();
    for (std::size_t t = 0; t < a.size(); ++t) same = same && torch::equal(*a[t], *b[t]);
    EXPECT_EQ(same, l + 1 < base.layers.size()) << "layer " << l;
  }

  // The native encoder loads it under the directory's name, and its output
  // is the torch forward of the written weights.
  EncoderOptions eo;
  eo.threads = 1;
  const Encoder encoder = Encoder::load(out, eo);
  EXPECT_EQ(encoder.model_name(), "demo-tuned");
  const Matrix native = encoder.encode(kProbeTexts);
  EXPECT_GT(min_row_cosine(torch_encode(tuned, tuned.layers, out, kProbeTexts), native), 0.99999);
  // Moved, but the same encoder in spirit.
  const double against_base = min_row_cosine(torch_encode(base, base.layers, base_dir, kProbeTexts), native);
  EXPECT_LT(against_base, 0.99999);
  EXPECT_GT(against_base, 0.5);
}

TEST_F(FineTune, TrainingSeparatesItsClustersBetterThanTheBaseEncoder) {
  DemoTexts d = demo_texts(file("demo.db"));
  // Validation on the training questions: the fine-tuned layer must fit them
  // better than the base encoder with centroid keys does.
  EncoderFineTuneOptions options;
  options.layers = 1;
  options.epochs = 4;
  options.threads = 2;
  const EncoderFineTuneReport report = fine_tune_encoder(resolve_model_dir(), d.train, d.train, file("fit"), options);
  EXPECT_GT(report.epochs.back().validation_accuracy, report.base_validation_accuracy);
}

TEST_F(FineTune, RefusesBadInputAndLeavesNothingBehind) {
  const DemoTexts d = demo_texts(file("demo.db"));
  const fs::path base = resolve_model_dir();
  EncoderFineTuneOptions options;
  options.epochs = 1;
  auto message = [&](const LabeledTexts& train, const LabeledTexts& val, const fs::path& out,
                     const EncoderFineTuneOptions& o) -> std::string {
    try {
      fine_tune_encoder(base, train, val, out, o);
    } catch (const InputError& e) {
      return e.what();
    }
    return "no error";
  };
  fs::create_directories(file("taken"));
  write_file(file("taken") / "keep.txt", "mine");
  EXPECT_NE(message(d.train, d.val, file("taken"), options).find("exists already"), std::string::npos);
  EXPECT_EQ(testing_support::read_bytes(file("taken") / "keep.txt"), "mine");
  EXPECT_NE(message(d.train, d.val, file(testing_support::kBundledModelName), options).find("must not be named"),
            std::string::npos);

  LabeledTexts bad = d.train;
  bad.labels[3] = bad.classes;
  EXPECT_NE(message(bad, d.val, file("a"), options).find("training text 3 has label"), std::string::npos);
  bad = d.val;
  bad.labels.pop_back();
  EXPECT_NE(message(d.train, bad, file("a"), options).find("validation:"), std::string::npos);
  LabeledTexts one;
  one.texts = {"only one", "cluster"};
  one.labels = {0, 0};
  one.classes = 1;
  EXPECT_NE(message(one, {}, file("a"), options).find("at least two clusters"), std::string::npos);
  LabeledTexts empty_class = d.train;
  ++empty_class.classes;
  EXPECT_NE(message(empty_class, {}, file("a"), options).find("has no text"), std::string::npos);
  for (std::size_t layers : {0u, 7u}) {
    EncoderFineTuneOptions o = options;
    o.layers = layers;
    EXPECT_NE(message(d.train, d.val, file("a"), o).find("layers, not " + std::to_string(layers)), std::string::npos);
  }
  EncoderFineTuneOptions o = options;
  o.dropout = 1.0;
  EXPECT_NE(message(d.train, d.val, file("a"), o).find("dropout"), std::string::npos);
  EXPECT_FALSE(fs::exists(file("a")));
  for (const auto& entry : fs::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename().string().find(".partial"), std::string::npos) << entry.path();
  }
}

TEST_F(FineTune, CliFineTunesThenEmbedsTrainsAndValidatesUnderTheNewModelName) {
  const std::string db = file("cli.db").string();
  using testing_support::run_cli;
  ASSERT_EQ(run_cli("import --db " + db + " " + testing_support::demo_file("clusters.json")).code, 0);
  const std::string out = file("demo-ft").string();
  auto r = run_cli("finetune-encoder --db " + db + " --out " + out + " --epochs 1 --threads 2 --val " +
                   testing_support::demo_file("heldout.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("epoch 1/1: train loss"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model \"demo-ft\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("next: ldaproj embed"), std::string::npos) << r.out;

  ASSERT_EQ(run_cli("embed --db " + db + " --model " + out + " --quiet").code, 0);
  r = run_cli("train --db " + db + " --embedding-model demo-ft --name tuned");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("validate --db " + db + " --model " + out + " --projection tuned --methods multi-head --json --test " +
              testing_support::demo_file("heldout.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_GT(nlohmann::json::parse(r.out)["methods"]["multi_head"]["recall_at_1"].template get<double>(), 0.5) << r.out;
  // Queries embedded by the base encoder are refused for the tuned projection.
  r = run_cli("query --db " + db + " --projection tuned \"how do I get my password back\"");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("trained on demo-ft embeddings"), std::string::npos) << r.out;

  // The same name again, or a store without questions: refused, nothing written.
  r = run_cli("finetune-encoder --db " + db + " --out " + file("again").string() + "/../demo-ft --epochs 1");
  EXPECT_EQ(r.code, 1) << r.out;
  fs::remove_all(out);
  r = run_cli("finetune-encoder --db " + db + " --out " + out + " --epochs 1");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("already holds embeddings of a model named \"demo-ft\""), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out));
  const std::string empty_db = file("empty.db").string();
  { Store::open(empty_db); }
  r = run_cli("finetune-encoder --db " + empty_db + " --out " + file("x").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("fine-tuning needs at least two"), std::string::npos) << r.out;
  r = run_cli("finetune-encoder --db " + db + " --out " + file("y").string() + " --val " +
              write_file(file("val.jsonl"), "{\"query\":\"hi\",\"cluster\":\"no_such_cluster\"}\n").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("query 1 names cluster \"no_such_cluster\""), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(file("x")));
  EXPECT_FALSE(fs::exists(file("y")));
}

}  // namespace
}  // namespace ldaproj
