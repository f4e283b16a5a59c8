// Importers for Q-A cluster files: the original project's JSON format and JSONL.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include "ldaproj/store.hpp"

namespace ldaproj {

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
