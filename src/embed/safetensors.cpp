// Owns the safetensors reader: maps the file read-only, validates the whole
// JSON header against the file before any tensor byte is touched, and converts
// f32/f16/bf16/f64 tensors to float32 on request. Also the float32 writer.
#include "ldaproj/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "ldaproj/error.hpp"

namespace ldaproj {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swapping");

namespace {

// The format's own reference limit; a larger header is a corrupt length field.
constexpr std::uint64_t kMaxHeaderBytes = 100u * 1024u * 1024u;

struct DTypeName {
  const char* name;
  DType dtype;
  std::size_t bytes;
};

constexpr DTypeName kDTypes[] = {
    {"F32", DType::F32, 4}, {"F16", DType::F16, 2}, {"BF16", DType::BF16, 2},
    {"F64", DType::F64, 8}, {"I64", DType::I64, 8}, {"I32", DType::I32, 4},
    {"I16", DType::I16, 2}, {"I8", DType::I8, 1},   {"U8", DType::U8, 1},
    {"BOOL", DType::Bool, 1},
};

std::size_t dtype_bytes(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.bytes;
  return 0;
}

const char* dtype_name(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name;
  return "?";
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0x1f) {  // inf / nan
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal half: renormalise into a normal float
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    bits = sign | (static_cast<std::uint32_t>(113 - shift) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(bits);
}

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw InputError("safetensors file " + path.string() + ": " + what);
}

// Reads a non-negative JSON integer that fits in uint64, or fails naming `field`.
std::uint64_t read_unsigned(const nlohmann::json& value, const std::filesystem::path& path,
                            const std::string& field) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0)
    return static_cast<std::uint64_t>(value.get<std::int64_t>());
  fail(path, field + " must be a non-negative integer, got " + value.dump());
}

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      fail(path, std::string("cannot open (") + std::strerror(errno) +
                     "); check the path or pass another model directory");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(path, "not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* data = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (data == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        fail(path, std::string("cannot map file (") + std::strerror(err) + ")");
      }
      data_ = static_cast<const unsigned char*>(data);
    }
    ::close(fd);
  }
  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { unmap(); }

  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void unmap() {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
    data_ = nullptr;
  }
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace

struct SafeTensorsFile::Impl {
  std::filesystem::path path;
  MappedFile file;
  std::size_t data_begin = 0;  // file offset of the data section
  std::vector<TensorInfo> tensors;
  std::unordered_map<std::string, std::size_t> by_name;
  std::map<std::string, std::string> metadata;
};

namespace {

TensorInfo parse_tensor(const std::string& name, const nlohmann::json& entry,
                        std::size_t data_size, const std::filesystem::path& path) {
  const std::string where = "tensor '" + name + "'";
  if (!entry.is_object()) fail(path, where + " must be a JSON object");
  const auto dtype_it = entry.find("dtype");
  const auto shape_it = entry.find("shape");
  const auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string())
    fail(path, where + " has no string field 'dtype'");
  if (shape_it == entry.end() || !shape_it->is_array())
    fail(path, where + " has no array field 'shape'");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2)
    fail(path, where + " needs 'data_offsets' as [begin, end]");

  TensorInfo info;
  info.name = name;
  const auto dtype_str = dtype_it->get<std::string>();
  const auto known = std::find_if(std::begin(kDTypes), std::end(kDTypes),
                                  [&](const DTypeName& d) { return dtype_str == d.name; });
  if (known == std::end(kDTypes))
    fail(path, where + " has unsupported dtype '" + dtype_str +
                   "' (known: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)");
  info.dtype = known->dtype;

  std::uint64_t elements = 1;
  bool overflow = false;
  for (std::size_t i = 0; i < shape_it->size(); ++i) {
    const std::uint64_t dim = read_unsigned((*shape_it)[i], path, where + " shape[" + std::to_string(i) + "]");
    if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail(path, where + " shape[" + std::to_string(i) + "] is too large");
    info.shape.push_back(static_cast<std::int64_t>(dim));
    if (dim != 0 && elements > std::numeric_limits<std::uint64_t>::max() / dim) overflow = true;
    elements *= dim;
  }
  if (!overflow && elements > std::numeric_limits<std::uint64_t>::max() / known->bytes) overflow = true;
  if (overflow) fail(path, where + " shape " + shape_string(info.shape) + " overflows the byte count");
  const std::uint64_t expected_bytes = elements * known->bytes;

  const std::uint64_t begin = read_unsigned((*offsets_it)[0], path, where + " data_offsets[0]");
  const std::uint64_t end = read_unsigned((*offsets_it)[1], path, where + " data_offsets[1]");
  if (begin > end)
    fail(path, where + " data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                   "] are reversed");
  if (end > data_size)
    fail(path, where + " data_offsets end " + std::to_string(end) + " is past the data section (" +
                   std::to_string(data_size) + " bytes); the file is truncated or the header is wrong");
  if (end - begin != expected_bytes)
    fail(path, where + " occupies " + std::to_string(end - begin) + " bytes but dtype " + dtype_str +
                   " x shape " + shape_string(info.shape) + " needs " + std::to_string(expected_bytes));
  info.byte_begin = static_cast<std::size_t>(begin);
  info.byte_end = static_cast<std::size_t>(end);
  return info;
}

}  // namespace

SafeTensorsFile SafeTensorsFile::open(const std::filesystem::path& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->file = MappedFile(path);
  const std::size_t file_size = impl->file.size();
  if (file_size < 8)
    fail(path, "only " + std::to_string(file_size) + " bytes; a safetensors file starts with an 8-byte header length");

  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | impl->file.data()[i];
  if (header_len > file_size - 8)
    fail(path, "header length " + std::to_string(header_len) + " is larger than the " +
                   std::to_string(file_size - 8) + " bytes after it; the file is truncated or not safetensors");
  if (header_len > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(header_len) + " exceeds the 100 MiB limit");

  const char* header_begin = reinterpret_cast<const char*>(impl->file.data() + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_begin + header_len);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header must be a JSON object");

  impl->data_begin = 8 + static_cast<std::size_t>(header_len);
  const std::size_t data_size = file_size - impl->data_begin;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "__metadata__ must be an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail(path, "__metadata__ entry '" + key + "' must be a string, got " + value.dump());
        impl->metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    impl->tensors.push_back(parse_tensor(name, entry, data_size, path));
  }

  // Overlapping ranges mean a lying header: two tensors would alias bytes.
  std::vector<const TensorInfo*> ordered;
  for (const auto& t : impl->tensors) ordered.push_back(&t);
  std::sort(ordered.begin(), ordered.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->byte_begin != b->byte_begin ? a->byte_begin < b->byte_begin : a->byte_end < b->byte_end;
  });
  for (std::size_t i = 1; i < ordered.size(); ++i)
    if (ordered[i]->byte_begin < ordered[i - 1]->byte_end)
      fail(path, "tensor '" + ordered[i]->name + "' overlaps tensor '" + ordered[i - 1]->name +
                     "' in the data section");

  for (std::size_t i = 0; i < impl->tensors.size(); ++i) impl->by_name.emplace(impl->tensors[i].name, i);
  return SafeTensorsFile(std::move(impl));
}

SafeTensorsFile::SafeTensorsFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafeTensorsFile::SafeTensorsFile(SafeTensorsFile&&) noexcept = default;
SafeTensorsFile& SafeTensorsFile::operator=(SafeTensorsFile&&) noexcept = default;
SafeTensorsFile::~SafeTensorsFile() = default;

const std::vector<TensorInfo>& SafeTensorsFile::tensors() const { return impl_->tensors; }

bool SafeTensorsFile::contains(const std::string& name) const { return impl_->by_name.count(name) != 0; }

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  const auto it = impl_->by_name.find(name);
  if (it == impl_->by_name.end()) fail(impl_->path, "has no tensor '" + name + "'");
  return impl_->tensors[it->second];
}

std::vector<float> SafeTensorsFile::load_f32(const std::string& name,
                                             const std::vector<std::int64_t>& expected_shape) const {
  const TensorInfo& t = info(name);
  if (!expected_shape.empty() && t.shape != expected_shape)
    fail(impl_->path, "tensor '" + name + "' has shape " + shape_string(t.shape) + ", expected " +
                          shape_string(expected_shape) + "; the weights do not match config.json");
  const std::size_t bytes = t.byte_end - t.byte_begin;
  const std::size_t count = bytes / dtype_bytes(t.dtype);
  const unsigned char* src = impl_->file.data() + impl_->data_begin + t.byte_begin;
  std::vector<float> out(count);
  switch (t.dtype) {
    case DType::F32:
      if (count) std::memcpy(out.data(), src, bytes);
      break;
    case DType::F16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = half_to_float(h);
      }
      break;
    case DType::BF16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
      }
      break;
    case DType::F64:
      for (std::size_t i = 0; i < count; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        if (std::isfinite(d) && std::fabs(d) > static_cast<double>(std::numeric_limits<float>::max()))
          fail(impl_->path, "tensor '" + name + "' element " + std::to_string(i) + " (" + std::to_string(d) +
                                ") does not fit in float32");
        out[i] = static_cast<float>(d);
      }
      break;
    default:
      fail(impl_->path, "tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                            ", which cannot be loaded as float32 (only F32, F16, BF16 and F64 can)");
  }
  return out;
}

const std::filesystem::path& SafeTensorsFile::path() const { return impl_->path; }

const std::map<std::string, std::string>& SafeTensorsFile::metadata() const { return impl_->metadata; }

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  auto reject = [&](const std::string& what) {
    throw InputError("writing safetensors file " + path.string() + ": " + what);
  };
  // nlohmann::ordered_json keeps the tensors in the caller's order, which is
  // also their order in the data section.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) header["__metadata__"][key] = value;
  }
  std::set<std::string> names;
  std::uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") reject("invalid tensor name '" + t.name + "'");
    if (!names.insert(t.name).second) reject("tensor '" + t.name + "' is given twice");
    std::uint64_t elements = 1;
    for (std::int64_t dim : t.shape) {
      if (dim < 0) reject("tensor '" + t.name + "' has a negative dimension");
      elements *= static_cast<std::uint64_t>(dim);
    }
    if (elements != t.values.size())
      reject("tensor '" + t.name + "' has shape " + shape_string(t.shape) + " but " +
             std::to_string(t.values.size()) + " values");
    const std::uint64_t bytes = elements * sizeof(float);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // Padding the header to 8 bytes keeps every tensor aligned for readers that map the file.
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::filesystem::path partial = path.string() + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    if (!out) reject("cannot create the file; check that the directory exists and is writable");
    unsigned char length[8];
    std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i, n >>= 8) length[i] = static_cast<unsigned char>(n & 0xffu);
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const TensorToWrite& t : tensors)
      out.write(reinterpret_cast<const char*>(t.values.data()),
                static_cast<std::streamsize>(t.values.size() * sizeof(float)));
    out.flush();
    if (!out) {
      out.close();
      std::error_code ec;
      std::filesystem::remove(partial, ec);
      reject("write failed (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) {
    const std::string reason = ec.message();
    std::filesystem::remove(partial, ec);
    reject("cannot move the finished file into place: " + reason);
  }
}

}  // namespace ldaproj
