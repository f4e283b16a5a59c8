// libFuzzer target: the JSON and JSON Lines importers (format sniffing,
// parsing, validation and the transactional write) on arbitrary bytes, into a
// fresh in-memory store. A bad file must be an InputError and leave the store
// empty; a good one must import what it reports.
#include <cstdint>
#include <cstdlib>

#include "fuzz_support.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/store.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ldaproj;
  static const auto path = fuzzing::scratch_file(".jsonl");
  fuzzing::write_bytes(path, data, size);
  Store store = Store::open(":memory:");
  try {
    const ImportReport report = import_file(store, path);
    if (store.stats().clusters != report.clusters) std::abort();
  } catch (const InputError&) {
    if (store.stats().clusters != 0 || store.stats().batches != 0) std::abort();  // not transactional
  } catch (const std::exception& e) {
    fuzzing::unexpected(e);
  }
  return 0;
}
