// A file cache of held-out query embeddings, so repeated `validate` runs on
// the same split (one per method or setting in a benchmark) encode it once.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>

#include "ldaproj/error.hpp"
#include "ldaproj/eval.hpp"

namespace ldaproj {

namespace {

constexpr char kMagic[8] = {'L', 'D', 'P', 'Q', 'C', 'A', '1', '\n'};

template <typename T>
bool read_pod(std::istream& in, T& value) {
  return static_cast<bool>(in.read(reinterpret_cast<char*>(&value), sizeof value));
}

template <typename T>
void write_pod(std::ostream& out, const T& value) {
  out.write(reinterpret_cast<const char*>(&value), sizeof value);
}

bool read_string(std::istream& in, std::string& s) {
  std::uint32_t size = 0;
  if (!read_pod(in, size) || size > (1u << 24)) return false;
  s.resize(size);
  return static_cast<bool>(in.read(s.data(), size));
}

void write_string(std::ostream& out, const std::string& s) {
  write_pod(out, static_cast<std::uint32_t>(s.size()));
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

}  // namespace

std::optional<Matrix> read_query_embedding_cache(const std::filesystem::path& file, const std::string& model_name,
                                                 const std::vector<std::string>& texts) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  char magic[sizeof kMagic];
  if (!in.read(magic, sizeof magic) || !std::equal(magic, magic + sizeof magic, kMagic)) return std::nullopt;
  std::string model;
  std::uint64_t rows = 0, cols = 0;
  if (!read_string(in, model) || model != model_name || !read_pod(in, rows) || !read_pod(in, cols)) return std::nullopt;
  if (rows != texts.size() || cols == 0 || cols > 65536) return std::nullopt;
  std::string text;
  for (const std::string& expected : texts) {
    if (!read_string(in, text) || text != expected) return std::nullopt;
  }
  Matrix m(rows, cols);
  if (!in.read(reinterpret_cast<char*>(m.data.data()), static_cast<std::streamsize>(m.data.size() * sizeof(float)))) {
    return std::nullopt;
  }
  return m;
}

void write_query_embedding_cache(const std::filesystem::path& file, const std::string& model_name,
                                 const std::vector<std::string>& texts, const Matrix& embeddings) {
  if (embeddings.rows != texts.size()) throw Error("query embedding cache: one embedding per text");
  // Written next to its final name and renamed, so a reader never sees half a file.
  const std::filesystem::path partial = file.string() + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    if (!out) throw InputError(partial.string() + ": cannot write the query embedding cache");
    out.write(kMagic, sizeof kMagic);
    write_string(out, model_name);
    write_pod(out, static_cast<std::uint64_t>(embeddings.rows));
    write_pod(out, static_cast<std::uint64_t>(embeddings.cols));
    for (const std::string& t : texts) write_string(out, t);
    out.write(reinterpret_cast<const char*>(embeddings.data.data()),
              static_cast<std::streamsize>(embeddings.data.size() * sizeof(float)));
    if (!out) throw InputError(partial.string() + ": writing the query embedding cache failed");
  }
  std::filesystem::rename(partial, file);
}

}  // namespace ldaproj
