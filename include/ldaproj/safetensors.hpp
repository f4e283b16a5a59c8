// Reader and float32 writer for the safetensors format (JSON header + raw
// little-endian tensors).
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ldaproj {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool };

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::size_t byte_begin = 0;  // offsets into the data section, validated
  std::size_t byte_end = 0;
};

class SafeTensorsFile {
 public:
  // Validates the whole header up front: header length within the file, JSON
  // well-formed, every dtype known, every offset range inside the data section
  // and matching dtype size x shape. Throws InputError naming file and tensor.
  static SafeTensorsFile open(const std::filesystem::path& path);

  const std::vector<TensorInfo>& tensors() const;
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // InputError if absent

  // The tensor converted to float32 (from f32, f16 or bf16). When
  // expected_shape is non-empty it must match exactly (InputError otherwise).
  std::vector<float> load_f32(const std::string& name,
                              const std::vector<std::int64_t>& expected_shape = {}) const;

  const std::filesystem::path& path() const;
  // The header's "__metadata__" string map (empty when absent). open() rejects
  // a __metadata__ that is not an object of strings.
  const std::map<std::string, std::string>& metadata() const;

  SafeTensorsFile(SafeTensorsFile&&) noexcept;
  SafeTensorsFile& operator=(SafeTensorsFile&&) noexcept;
  ~SafeTensorsFile();

 private:
  struct Impl;
  explicit SafeTensorsFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct TensorToWrite {
  std::string name;
  std::vector<std::int64_t> shape;
  std::span<const float> values;  // row-major, product(shape) values
};

// Writes F32 tensors (in the given order) and `metadata` as "__metadata__".
// The file appears atomically (written beside it, then renamed). InputError on
// duplicate or empty names, a shape that does not match the value count, or a
// path that cannot be written.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace ldaproj
