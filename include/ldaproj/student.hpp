// The student: a projection transformer whose query cross-attends to a few
// learned keys and values, distilled from the multi-head teacher. This header
// holds its configuration, its named weights (PyTorch module names) and the
// lean forward used for inference; training lives in ldaproj/distill.hpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ldaproj/matrix.hpp"

namespace ldaproj {

// attention:     input_proj -> L x [cross-attention, residual, norm1]
// mlp-attention: input_proj -> residual GELU MLP -> L x [cross-attention, residual, norm1]
// block:         input_proj -> L x [cross-attention, residual, norm1, GELU FFN, residual, norm2]
enum class StudentVariant { Attention, MlpAttention, Block };
std::string_view to_string(StudentVariant variant);
StudentVariant parse_student_variant(std::string_view name);  // InputError on unknown

struct StudentConfig {
  std::size_t dim = 384;
  std::size_t num_heads = 8;
  std::size_t keys_per_head = 8;  // learned keys = num_heads x keys_per_head
  std::size_t ff_dim = 0;         // hidden width of the FFN/MLP; 0 means 2 x dim
  std::size_t layers = 1;
  StudentVariant variant = StudentVariant::Block;
  float layer_norm_eps = 1e-5f;

  std::size_t num_keys() const { return num_heads * keys_per_head; }
  std::size_t head_dim() const { return num_heads ? dim / num_heads : 0; }
  std::size_t hidden_dim() const { return ff_dim ? ff_dim : 2 * dim; }

  // InputError naming the field when a value is out of range (e.g. dim not a
  // multiple of num_heads).
  void validate() const;
  // {"dim","num_heads","keys_per_head","ff_dim","layers","variant","layer_norm_eps"}
  std::string to_json() const;
  // `where` names the source (file, database row) in error messages.
  static StudentConfig from_json(std::string_view json, const std::string& where);
};

// One named parameter tensor, row-major float32.
struct StudentTensor {
  std::string name;  // e.g. "attention.in_proj_weight"
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

// A parameter's name and shape, without its values.
struct TensorShape {
  std::string name;
  std::vector<std::int64_t> shape;
  std::size_t count() const;  // product of the shape
};

// Every parameter the module has, in a fixed order. Block 0 uses the
// top-level names (keys, values, attention.*, norm1.*, ffn.*, norm2.*); block
// b >= 1 the same names under "blocks.<b>.". Readers check a file against
// these shapes before loading anything: a config may claim far more than the
// file holds.
std::vector<TensorShape> student_shapes(const StudentConfig& config);
// The same layout with zero values.
std::vector<StudentTensor> student_layout(const StudentConfig& config);

struct StudentWeights {
  StudentConfig config;
  std::vector<StudentTensor> tensors;  // in student_layout order

  // Zero weights for config (validated).
  static StudentWeights zeros(const StudentConfig& config);
  // InputError naming `where`: a tensor missing, extra, of the wrong shape or not finite.
  void validate(const std::string& where) const;
  const StudentTensor& at(std::string_view name) const;
  StudentTensor& at(std::string_view name);
  std::size_t parameter_count() const;
};

// The lean forward: no training stack, key/value projections computed once at
// construction, batch-first BLAS products. Equals the libtorch module's output
// within 1e-5.
class StudentModel {
 public:
  StudentModel();
  explicit StudentModel(const StudentWeights& weights);  // validates them

  // Raw module output, one row per query row (queries x dim). When
  // `attention` is given it receives the first block's attention over the
  // learned keys averaged over heads (queries x num_keys, rows sum to one).
  Matrix forward(const Matrix& queries, Matrix* attention = nullptr) const;
  // forward() with every row scaled to unit length: the student's projected query.
  Matrix project(const Matrix& queries) const;

  const StudentConfig& config() const;
  std::size_t parameter_count() const;
  bool empty() const;

  StudentModel(const StudentModel&);
  StudentModel& operator=(const StudentModel&);
  StudentModel(StudentModel&&) noexcept;
  StudentModel& operator=(StudentModel&&) noexcept;
  ~StudentModel();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Safetensors with the config in the header's __metadata__ ("format":
// "ldaproj-student", "config": StudentConfig::to_json()) plus `metadata`.
void write_student_safetensors(const std::filesystem::path& path, const StudentWeights& weights,
                               const std::map<std::string, std::string>& metadata = {});
// Reads a file written by write_student_safetensors or by PyTorch (F32, F16,
// BF16 or F64 tensors). The config comes from the metadata; InputError names
// the file and what is missing or inconsistent.
StudentWeights read_student_safetensors(const std::filesystem::path& path,
                                        std::map<std::string, std::string>* metadata = nullptr);

}  // namespace ldaproj
