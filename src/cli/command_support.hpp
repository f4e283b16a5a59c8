// What several CLI commands share: checks on the database argument, the
// choice of embedding model, and naming the step that failed.
#pragma once
#include <string>

#include "ldaproj/error.hpp"
#include "ldaproj/store.hpp"

namespace ldaproj::cli {

// InputError naming `ldaproj import` when the database file does not exist.
void require_existing_db(const std::string& db);

// The embedding model a store was embedded with: the only one, or the one
// the user names when there are several.
std::string pick_embedding_model(const Store& store, const std::string& requested);

// Runs `action`; a failure that is not the user's input (I/O, a full disk)
// gets `doing` in front so the message says which step failed.
template <typename Action>
auto while_doing(const std::string& doing, Action&& action) {
  try {
    return action();
  } catch (const InputError&) {
    throw;
  } catch (const Error& e) {
    throw Error(doing + ": " + e.what());
  }
}

}  // namespace ldaproj::cli
