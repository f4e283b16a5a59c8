// Importers for Q-A cluster files: the original project's JSON format and JSONL.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "ldaproj/store.hpp"

namespace ldaproj {

// The longest text accepted for a question, answer, query, cluster id, name
// or description. The encoder reads only the first few hundred tokens, so
// longer texts are almost certainly a mistake (a whole document in one field).
inline constexpr std::size_t kMaxTextBytes = std::size_t{1} << 20;

// AlreadyImported: another path's batch holds the same bytes (same_as).
enum class ImportOutcome { Imported, Unchanged, Updated, AlreadyImported };

struct ImportReport {
  std::string file;
  std::string sha256;
  ImportOutcome outcome = ImportOutcome::Imported;
  std::string same_as;         // AlreadyImported: the path imported with this content
  std::int64_t clusters = 0;   // clusters mentioned by the file
  std::int64_t questions = 0;  // distinct questions per cluster in the file
  std::int64_t answers = 0;    // answers in the file
  std::int64_t held_out = 0;   // "novel" questions: held-out test data, not imported
  // Not stored again: a question repeated within its cluster in the file, or
  // one (an identical answer) that another file already gave the cluster.
  std::int64_t duplicate_questions = 0;
  std::int64_t duplicate_answers = 0;
  std::int64_t rows_added = 0, rows_removed = 0;  // questions + answers written / deleted
};

// The lengths a question may have ("" = not given, JSON Lines only); "novel"
// questions are held out in both formats and any other value is refused.
bool is_known_question_length(std::string_view length);

// Imports one file in one transaction. Format by content: a JSON object with
// "clusters" (original project format) or JSON Lines records
//   {"cluster":..., "question":..., ["length":...]}
//   {"cluster":..., "answer":..., ["variant":...]}
// Batches are kept per file path, and content is counted once: a file whose
// bytes another path already imported is a no-op (AlreadyImported); a
// question already in its cluster is not stored twice; an answer variant that
// another file gave the cluster with other text is refused (InputError naming
// both files). An unchanged file (same path and SHA-256) is a no-op, except
// that rows of it another file had brought first and has since dropped are
// stored again; a changed file replaces what its previous batch contributed.
// Throws InputError naming file, record (line or cluster index/id) and field;
// nothing from the file is written then.
ImportReport import_file(Store& store, const std::filesystem::path& file);

}  // namespace ldaproj
