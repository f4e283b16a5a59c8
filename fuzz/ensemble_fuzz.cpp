// libFuzzer target: the ensemble reader behind `ldaproj import x.safetensors`
// when the file's metadata says "ldaproj-ensemble": the safetensors header,
// the config and domain names in __metadata__, the flat tensor names
// (router.*, students.<d>.*, domain_of_head), their shapes and values. A file
// the reader accepts must also survive what import and serve do next: the
// store's flat form and back, and a model that answers a query.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "fuzz_support.hpp"
#include "ldaproj/ensemble.hpp"
#include "ldaproj/matrix.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ldaproj;
  static const auto path = fuzzing::scratch_file(".safetensors");
  fuzzing::write_bytes(path, data, size);

  bool says_ensemble = false;
  try {
    says_ensemble = is_ensemble_safetensors(path);
  } catch (const InputError&) {
  } catch (const std::exception& e) {
    fuzzing::unexpected(e);
  }

  EnsembleWeights weights;
  try {
    std::map<std::string, std::string> metadata;
    weights = read_ensemble_safetensors(path, &metadata);
  } catch (const InputError&) {
    return 0;
  } catch (const std::exception& e) {
    fuzzing::unexpected(e);
  }
  // The CLI picks the ensemble reader by is_ensemble_safetensors: both must agree.
  if (!says_ensemble) std::abort();

  // Accepted means usable: any error from here on is a finding.
  try {
    const EnsembleWeights back = from_stored_ensemble(to_stored_ensemble(weights, "fuzz"), "fuzz");
    if (back.config.to_json() != weights.config.to_json() || back.domain_names != weights.domain_names ||
        back.domain_of_head != weights.domain_of_head || back.parameter_count() != weights.parameter_count()) {
      std::abort();
    }
    const EnsembleModel model(weights);
    Matrix query(2, weights.config.dim);
    query(0, 0) = 1.0f;
    query(1, weights.config.dim - 1) = -1.0f;
    const Matrix mixed = model.forward(query);
    if (mixed.rows != 2 || mixed.cols != weights.config.dim) std::abort();
  } catch (const std::exception& e) {
    fuzzing::unexpected(e);
  }
  return 0;
}
