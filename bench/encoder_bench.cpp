// Sentence encoder speed: batch-1 latency for a short query (line 1) and
// batch-32 throughput over all of bench/data/sentences.txt, for each weight
// precision (fp32, bf16, int8) with 1 and 2 threads. Names: BM_Encode<Case>/<precision>/threads:<n>.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <string>

#include "ldaproj/encoder.hpp"

namespace {

std::vector<std::string> sentences() {
  std::ifstream in(std::string(LDAPROJ_SOURCE_DIR) + "/bench/data/sentences.txt");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// One loaded encoder per (precision, threads), created on first use.
ldaproj::Encoder& encoder(ldaproj::Precision precision, int threads) {
  static std::map<std::pair<ldaproj::Precision, int>, ldaproj::Encoder> loaded;
  auto it = loaded.find({precision, threads});
  if (it == loaded.end()) {
    ldaproj::EncoderOptions o;
    o.threads = threads;
    o.precision = precision;
    it = loaded.emplace(std::make_pair(precision, threads), ldaproj::Encoder::load(ldaproj::resolve_model_dir(), o))
             .first;
  }
  return it->second;
}

void encode_short_query(benchmark::State& state, ldaproj::Precision precision, int threads) {
  auto& enc = encoder(precision, threads);
  const std::vector<std::string> query = {sentences().at(0)};
  for (auto _ : state) benchmark::DoNotOptimize(enc.encode(query).data.data());
  state.SetItemsProcessed(state.iterations());
}

// Every line, handed over 32 at a time in file order, as the PyTorch and
// @lat.md/embed scripts do.
void encode_batch32(benchmark::State& state, ldaproj::Precision precision, int threads) {
  auto& enc = encoder(precision, threads);
  const auto all = sentences();
  std::vector<std::vector<std::string>> batches;
  for (std::size_t i = 0; i < all.size(); i += 32) {
    batches.emplace_back(all.begin() + static_cast<std::ptrdiff_t>(i),
                         all.begin() + static_cast<std::ptrdiff_t>(std::min(all.size(), i + 32)));
  }
  for (auto _ : state) {
    for (const auto& batch : batches) benchmark::DoNotOptimize(enc.encode(batch).data.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(all.size()));
}

}  // namespace

int main(int argc, char** argv) {
  using ldaproj::Precision;
  for (Precision p : {Precision::F32, Precision::BF16, Precision::I8}) {
    for (int threads : {1, 2}) {
      std::string suffix = "/";
      suffix.append(ldaproj::to_string(p)).append("/threads:").append(std::to_string(threads));
      benchmark::RegisterBenchmark(("BM_EncodeShortQuery" + suffix).c_str(), encode_short_query, p, threads)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(("BM_EncodeBatch32" + suffix).c_str(), encode_batch32, p, threads)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
