// libFuzzer target: the safetensors reader (header length, JSON header,
// dtypes, shapes, offsets, __metadata__, f16/bf16/f32 conversion) and, on the
// same bytes, the student reader `ldaproj import x.safetensors` uses, which
// checks the tensors against the config in the metadata. (The ensemble reader
// has its own target, ensemble_fuzz.cpp.)
#include <cstdint>
#include <cstdlib>

#include "fuzz_support.hpp"
#include "ldaproj/safetensors.hpp"
#include "ldaproj/student.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ldaproj;
  static const auto path = fuzzing::scratch_file(".safetensors");
  fuzzing::write_bytes(path, data, size);
  try {
    const SafeTensorsFile file = SafeTensorsFile::open(path);
    (void)file.metadata();
    for (const TensorInfo& tensor : file.tensors()) {
      if (tensor.byte_end < tensor.byte_begin || tensor.byte_end > size) std::abort();
      if (tensor.dtype == DType::F32 || tensor.dtype == DType::F16 || tensor.dtype == DType::BF16) {
        (void)file.load_f32(tensor.name, tensor.shape);
      }
    }
  } catch (const InputError&) {
  } catch (const std::exception& e) {
    fuzzing::unexpected(e);
  }
  try {
    (void)read_student_safetensors(path);
  } catch (const InputError&) {
  } catch (const std::exception& e) {
    fuzzing::unexpected(e);
  }
  return 0;
}
