// Shared CLI checks (command_support.hpp).
#include "cli/command_support.hpp"

#include <filesystem>

namespace ldaproj::cli {

void require_existing_db(const std::string& db) {
  std::error_code ec;
  if (std::filesystem::is_directory(db, ec)) {
    throw InputError(db + " is a directory, not a database; give --db the database file");
  }
  if (!std::filesystem::exists(db, ec)) {
    throw InputError("database " + db + " does not exist; create it with `ldaproj import --db " + db + " FILE...`");
  }
  if (!std::filesystem::is_regular_file(db, ec)) {
    throw InputError(db + " is not a regular file (a device, pipe or socket), so not a database; give --db the "
                     "database file");
  }
}

std::string pick_embedding_model(const Store& store, const std::string& requested) {
  StoreStats stats = store.stats();
  if (!requested.empty()) return requested;
  // A model registered by an embed run that stored nothing does not count.
  std::erase_if(stats.embeddings_per_model, [](const auto& model) { return model.second == 0; });
  if (stats.embeddings_per_model.empty()) {
    throw InputError("no embeddings in " + store.path().string() + "; run `ldaproj embed --db " +
                     store.path().string() + "` first");
  }
  if (stats.embeddings_per_model.size() > 1) {
    std::string names;
    for (const auto& [name, count] : stats.embeddings_per_model) names += " " + name;
    throw InputError("the store holds embeddings of several models (" + names.substr(1) +
                     "); choose one with --embedding-model");
  }
  return stats.embeddings_per_model.front().first;
}

}  // namespace ldaproj::cli
