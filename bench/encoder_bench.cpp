// Sentence encoder speed: batch-1 latency for a short query and batch-32
// throughput over bench/data/sentences.txt, with 1 and 2 threads.
#include <benchmark/benchmark.h>

#include <fstream>
#include <string>

#include "ldaproj/encoder.hpp"

namespace {

std::vector<std::string> sentences() {
  std::ifstream in(std::string(LDAPROJ_SOURCE_DIR) + "/bench/data/sentences.txt");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

ldaproj::Encoder& encoder(int threads) {
  static ldaproj::Encoder one = [] {
    ldaproj::EncoderOptions o;
    o.threads = 1;
    return ldaproj::Encoder::load(ldaproj::resolve_model_dir(), o);
  }();
  static ldaproj::Encoder two = [] {
    ldaproj::EncoderOptions o;
    o.threads = 2;
    return ldaproj::Encoder::load(ldaproj::resolve_model_dir(), o);
  }();
  return threads == 1 ? one : two;
}

void BM_EncodeShortQuery(benchmark::State& state) {
  auto& enc = encoder(static_cast<int>(state.range(0)));
  const std::vector<std::string> query = {sentences().at(0)};
  for (auto _ : state) benchmark::DoNotOptimize(enc.encode(query).data.data());
  state.SetItemsProcessed(state.iterations());
}

void BM_EncodeBatch32(benchmark::State& state) {
  auto& enc = encoder(static_cast<int>(state.range(0)));
  auto all = sentences();
  all.resize(32);
  for (auto _ : state) benchmark::DoNotOptimize(enc.encode(all).data.data());
  state.SetItemsProcessed(state.iterations() * 32);
}

BENCHMARK(BM_EncodeShortQuery)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_EncodeBatch32)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
