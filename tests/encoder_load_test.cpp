// Loading a model directory: missing or inconsistent files are clear errors.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

namespace fs = std::filesystem;
const fs::path kModel = LDAPROJ_DEFAULT_MODEL_DIR;

class EncoderLoad : public testing_support::TempDirTest {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel / "config.json")) GTEST_SKIP() << "no bundled model; run scripts/setup.sh";
    TempDirTest::SetUp();
  }
  // A copy of the bundled model directory (weights linked, not copied).
  fs::path model_copy() {
    const fs::path d = file("model");
    fs::create_directories(d);
    fs::copy_file(kModel / "config.json", d / "config.json");
    fs::copy_file(kModel / "tokenizer.json", d / "tokenizer.json");
    fs::create_symlink(kModel / "model.fp16.safetensors", d / "model.fp16.safetensors");
    return d;
  }
  std::string load_error(const fs::path& dir, EncoderOptions options = {}) {
    try {
      (void)Encoder::load(dir, options);
    } catch (const InputError& e) {
      return e.what();
    }
    ADD_FAILURE() << "loaded " << dir;
    return {};
  }
};

TEST_F(EncoderLoad, NamesTheModelAndChecksDimensions) {
  const Encoder bundled = Encoder::load(resolve_model_dir());
  EXPECT_EQ(bundled.model_name(), "all-MiniLM-L6-v2");
  EXPECT_EQ(bundled.dim(), 384u);
  const Encoder copy = Encoder::load(model_copy());
  EXPECT_EQ(copy.model_name(), "model");  // a user's directory is named after itself
  const Matrix a = bundled.encode({"same text"}), b = copy.encode({"same text"});
  EXPECT_EQ(a.data, b.data);
}

TEST_F(EncoderLoad, MissingFilesAreNamed) {
  const fs::path d = model_copy();
  fs::remove(d / "tokenizer.json");
  EXPECT_NE(load_error(d).find("tokenizer.json"), std::string::npos);
  const fs::path e = file("empty");
  fs::create_directories(e);
  EXPECT_NE(load_error(e).find("config.json"), std::string::npos);
  EXPECT_THROW(resolve_model_dir(file("nope")), InputError);
}

TEST_F(EncoderLoad, InconsistentConfigIsRejected) {
  auto with_config = [&](const char* key, nlohmann::json value) {
    const fs::path d = model_copy();
    std::ifstream in(d / "config.json");
    nlohmann::json cfg = nlohmann::json::parse(in);
    cfg[key] = value;
    std::ofstream(d / "config.json", std::ios::trunc) << cfg.dump();
    const std::string m = load_error(d);
    fs::remove_all(d);
    return m;
  };
  EXPECT_NE(with_config("hidden_size", 240).find("shape"), std::string::npos);
  EXPECT_NE(with_config("num_attention_heads", 7).find("divisible"), std::string::npos);
  EXPECT_NE(with_config("hidden_act", "relu").find("hidden_act"), std::string::npos);
  EXPECT_NE(with_config("num_hidden_layers", "six").find("num_hidden_layers"), std::string::npos);
  EXPECT_NE(with_config("num_hidden_layers", 7).find("encoder.layer.6"), std::string::npos);
}

TEST_F(EncoderLoad, MaxTokensIsBoundedByThePositionTable) {
  EncoderOptions options;
  options.max_tokens = 513;
  EXPECT_NE(load_error(resolve_model_dir(), options).find("512"), std::string::npos);
  options.max_tokens = 512;
  EXPECT_NO_THROW((void)Encoder::load(resolve_model_dir(), options));
}

}  // namespace
}  // namespace ldaproj
