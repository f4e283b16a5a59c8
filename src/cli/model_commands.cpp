// `ldaproj projections list|activate|delete` and `ldaproj backup`
// (model_commands.hpp): each write is one transaction in the Store.
#include "cli/model_commands.hpp"

#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/command_support.hpp"
#include "ldaproj/store.hpp"

namespace ldaproj::cli {

namespace {

using nlohmann::json;

template <typename Stored>
json model_json(const Stored* stored) {
  if (stored == nullptr) return nullptr;
  return {{"created_at", stored->created_at},
          {"teacher", std::string(to_string(stored->provenance.teacher))},
          {"forced", stored->provenance.forced},
          {"detail", stored->provenance.detail}};
}

template <typename Stored>
std::string model_text(const char* what, const Stored* stored) {
  if (stored == nullptr) return {};
  std::string text = std::string(", ") + what;
  if (stored->provenance.teacher == TeacherMatch::Differs) text += " (FOREIGN)";
  if (stored->provenance.teacher == TeacherMatch::Unknown) text += " (teacher unknown)";
  if (stored->provenance.forced) text += " (forced)";
  return text;
}

int run_list(const std::string& db, bool as_json) {
  require_existing_db(db);
  const Store store = Store::open_for_reading(db);
  const Store::ReadSnapshot snapshot = store.read_snapshot();
  const std::vector<Projection> projections = store.projections();
  std::map<std::string, StoredStudent> students;
  for (StoredStudent& s : store.students()) students.emplace(s.projection, std::move(s));
  std::map<std::string, StoredEnsemble> ensembles;
  for (StoredEnsemble& e : store.ensembles()) ensembles.emplace(e.projection, std::move(e));
  const auto find = [](const auto& map, const std::string& name) {
    const auto it = map.find(name);
    return it == map.end() ? nullptr : &it->second;
  };
  if (as_json) {
    json out = json::array();
    for (const Projection& p : projections) {
      out.push_back({{"name", p.name},
                     {"active", p.active},
                     {"model", p.model},
                     {"heads", p.head_count},
                     {"temperature", p.temperature},
                     {"created_at", p.created_at},
                     {"fingerprint", p.fingerprint ? json(p.fingerprint->id) : json(nullptr)},
                     {"student", model_json(find(students, p.name))},
                     {"ensemble", model_json(find(ensembles, p.name))}});
    }
    std::cout << json{{"database", db}, {"projections", out}}.dump(2) << "\n";
    return 0;
  }
  if (projections.empty()) {
    std::printf("%s: no projections; train one with `ldaproj train --db %s`\n", db.c_str(), db.c_str());
    return 0;
  }
  for (const Projection& p : projections) {
    std::printf("%s %s: %s, %zu heads, temperature %g, %s, fingerprint %s%s%s\n", p.active ? "*" : " ",
                p.name.c_str(), p.model.c_str(), p.head_count, p.temperature, p.created_at.c_str(),
                p.fingerprint ? short_id(p.fingerprint->id).c_str() : "(none stored)",
                model_text("student", find(students, p.name)).c_str(),
                model_text("ensemble", find(ensembles, p.name)).c_str());
  }
  std::printf("(* active: what query, validate, distill, export and serve use unless given --projection)\n");
  return 0;
}

std::string holdings(const DeletedProjection& d) {
  if (d.had_student && d.had_ensemble) return " with its student and ensemble";
  if (d.had_student) return " with its student";
  if (d.had_ensemble) return " with its ensemble";
  return "";
}

}  // namespace

void ProjectionsCommand::add_to(CLI::App& app) {
  command = app.add_subcommand("projections", "List, activate or delete the store's trained projections");
  command->require_subcommand(1);
  command->footer(
      "`ldaproj train` keeps every earlier projection (a new one without --name is multi_head_<model>-2,\n"
      "-3, ...) and makes the new one active. The active projection is what every command uses unless\n"
      "given --projection; students and ensembles belong to their projection and go with it.");

  list = command->add_subcommand("list", "List the projections (* marks the active one)");
  list->add_option("--db", db, "SQLite database file")->required();
  list->add_flag("--json", as_json, "Print JSON");

  activate_cmd = command->add_subcommand("activate", "Make a projection the active one");
  activate_cmd->add_option("--db", db, "SQLite database file")->required();
  activate_cmd->add_option("name", name, "Projection name (see `projections list`)")->required();

  remove = command->add_subcommand("delete", "Delete a projection with its student and ensemble");
  remove->add_option("--db", db, "SQLite database file")->required();
  remove->add_option("name", name, "Projection name (see `projections list`)")->required();
  remove->add_option("--activate", activate, "Deleting the active projection: the one to activate instead");
  remove->add_flag("--force", force,
                   "Delete the active projection without --activate: the most recently trained one left "
                   "becomes active");
}

int ProjectionsCommand::run() const {
  if (*list) return run_list(db, as_json);
  require_existing_db(db);
  Store store = Store::open(db);
  if (*activate_cmd) {
    const std::string before = store.activate_projection(name);
    if (before == name) {
      std::printf("projection \"%s\" was already active\n", name.c_str());
    } else {
      std::printf("projection \"%s\" is now active%s\n", name.c_str(),
                  before.empty() ? "" : (" (was \"" + before + "\")").c_str());
    }
    return 0;
  }
  const DeletedProjection d = store.delete_projection(name, activate, force);
  std::printf("deleted projection \"%s\"%s%s\n", d.name.c_str(), holdings(d).c_str(),
              d.activated.empty() ? "" : ("; \"" + d.activated + "\" is now active").c_str());
  return 0;
}

void BackupCommand::add_to(CLI::App& app) {
  command = app.add_subcommand("backup", "Copy a store consistently, even while other processes write to it");
  command->add_option("--db", db, "SQLite database file to copy")->required();
  command->add_option("out", out, "The copy: a new file (never overwritten)")->required();
  command->footer(
      "Copying the database file with cp is unsafe while the store is open: in WAL mode the latest\n"
      "commits (a new projection, say) may still be in the -wal file and are lost. backup reads one\n"
      "consistent snapshot through SQLite (VACUUM INTO), checks the copy and only then gives it its name.");
}

int BackupCommand::run() const {
  require_existing_db(db);
  const Store store = Store::open_read_only(db);
  while_doing("backing up " + db + " to " + out, [&] { store.backup_to(out); });
  const Store copy = Store::open_read_only(out);
  const StoreStats s = copy.stats();
  std::printf("%s: backup of %s (%lld clusters, %zu projection(s), %zu student(s), %zu ensemble(s))\n", out.c_str(),
              db.c_str(), static_cast<long long>(s.clusters), s.projections.size(), s.students.size(),
              s.ensembles.size());
  return 0;
}

}  // namespace ldaproj::cli
