// Importers for Q-A cluster files: the original project's JSON format and JSONL.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "ldaproj/store.hpp"

namespace ldaproj {

// The longest text accepted for a question, answer, query, cluster id, name
// or description. The encoder reads only the first few hundred tokens, so
// longer texts are almost certainly a mistake (a whole document in one field).
inline constexpr std::size_t kMaxTextBytes = std::size_t{1} << 20;

enum class ImportOutcome { Imported, Unchanged, Updated };

struct ImportReport {
  std::string file;
  std::string sha256;
  ImportOutcome outcome = ImportOutcome::Imported;
  std::int64_t clusters = 0;   // clusters mentioned by the file
  std::int64_t questions = 0;  // questions in the file
  std::int64_t answers = 0;    // answers in the file
};

// Imports one file in one transaction. Format by content: a JSON object with
// "clusters" (original project format) or JSON Lines records
//   {"cluster":..., "question":..., ["length":...]}
//   {"cluster":..., "answer":..., ["variant":...]}
// An unchanged file (same path and SHA-256) is a no-op; a changed file replaces
// what its previous batch contributed. Throws InputError naming file, record
// (line or cluster index/id) and field; nothing from the file is written then.
ImportReport import_file(Store& store, const std::filesystem::path& file);

}  // namespace ldaproj
