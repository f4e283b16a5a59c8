// Fingerprints of trained models: what a projection was trained from (its
// embedding model, cluster set, keys and answers, temperature), stored with
// the projection and with every student and ensemble distilled from it, so a
// model from another store or another training run is told apart from its
// own instead of being mixed in by name (docs/RELIABILITY.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace ldaproj {

struct Projection;

struct Fingerprint {
  std::string model;            // embedding model name
  std::size_t dim = 0;
  std::size_t heads = 0;
  std::string clusters_sha256;  // the heads' clusters' external ids, sorted, one per line
  // Every head's key and answer in external-id order, then the projection's
  // extra tensors (sub-keys, adapter): float32 little-endian bytes.
  std::string weights_sha256;
  float temperature = 0.0f;
  std::string id;               // SHA-256 of all of the above: equal ids, same teacher
  // Where it was computed; informational only (not in `id`): the default name
  // is the same in every store, so names say nothing about identity.
  std::string projection;

  std::string to_json() const;  // a JSON object
  // InputError naming `what` (a file, a field) when malformed or from a newer ldaproj.
  static Fingerprint from_json(std::string_view text, const std::string& what);
};

// The fingerprint of a projection loaded with its heads and tensors;
// `external_ids` maps each head's cluster id to its external id. Error when a
// head's cluster is missing from it.
Fingerprint fingerprint_of(const Projection& projection, std::size_t dim,
                           const std::unordered_map<std::int64_t, std::string>& external_ids);

// Empty when both are the same teacher; otherwise what differs, e.g.
// "8 heads vs 33, another cluster set, other keys/answers".
std::string describe_difference(const Fingerprint& artefact, const Fingerprint& target);

// The first 12 hex digits of an id, for messages and listings.
std::string short_id(const std::string& id);

// How a stored student or ensemble relates to the projection it is stored with.
enum class TeacherMatch {
  Matches,  // distilled from exactly this projection
  Differs,  // from another teacher (only possible through `import --force`)
  Unknown,  // no fingerprint (stored before fingerprints, or a forced file without one)
};
std::string_view to_string(TeacherMatch match);  // "matches", "differs", "unknown"

struct Provenance {
  TeacherMatch teacher = TeacherMatch::Unknown;
  bool forced = false;  // imported with `ldaproj import --force`
  std::string detail;   // what differs or why it is unknown; empty when it matches
};

}  // namespace ldaproj
