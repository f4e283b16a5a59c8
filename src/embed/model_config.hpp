// A model directory's config.json, shared by the native encoder and the
// libtorch forward used for fine-tuning.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

namespace ldaproj::detail {

// The parsed config.json of `model_dir`; InputError naming the file when it is
// not valid JSON or not an object.
nlohmann::json read_model_config(const std::filesystem::path& model_dir);

}  // namespace ldaproj::detail
