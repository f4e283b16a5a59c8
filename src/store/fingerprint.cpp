// Model fingerprints (include/ldaproj/fingerprint.hpp): SHA-256 (OpenSSL)
// over a projection's cluster set and weights, and their JSON form.
#include "ldaproj/fingerprint.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "ldaproj/error.hpp"
#include "ldaproj/store.hpp"

namespace ldaproj {

namespace {

// Bumped if what is hashed ever changes: ids of different versions never match.
constexpr int kFingerprintVersion = 1;

class Sha256 {
 public:
  Sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1) fail();
  }
  void add(const void* data, std::size_t size) {
    if (size > 0 && EVP_DigestUpdate(context_.get(), data, size) != 1) fail();
  }
  void add(std::string_view text) {
    add(text.data(), text.size());
    add("\n", 1);  // separates fields so that "ab"+"c" differs from "a"+"bc"
  }
  // float32 little-endian, the store's BLOB encoding, whatever the host order.
  void add_floats(const std::vector<float>& values) {
    std::vector<unsigned char> bytes(values.size() * 4);
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto word = std::bit_cast<std::uint32_t>(values[i]);
      for (std::size_t b = 0; b < 4; ++b) bytes[i * 4 + b] = static_cast<unsigned char>(word >> (8 * b));
    }
    add(bytes.data(), bytes.size());
  }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_DigestFinal_ex(context_.get(), digest, &size) != 1) fail();
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < size; ++i) {
      out.push_back(kHex[digest[i] >> 4]);
      out.push_back(kHex[digest[i] & 0x0f]);
    }
    return out;
  }

 private:
  [[noreturn]] static void fail() { throw Error("computing SHA-256 failed (OpenSSL)"); }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_;
};

// The exact bits of the temperature: a printed decimal could round two
// different floats to one string.
std::string float_bits(float v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", std::bit_cast<std::uint32_t>(v));
  return buf;
}

std::string id_of(const Fingerprint& f) {
  Sha256 h;
  h.add("ldaproj-fingerprint-v" + std::to_string(kFingerprintVersion));
  h.add(f.model);
  h.add(std::to_string(f.dim));
  h.add(std::to_string(f.heads));
  h.add(f.clusters_sha256);
  h.add(f.weights_sha256);
  h.add(float_bits(f.temperature));
  return h.hex();
}

}  // namespace

std::string short_id(const std::string& id) { return id.substr(0, 12); }

std::string_view to_string(TeacherMatch match) {
  switch (match) {
    case TeacherMatch::Matches: return "matches";
    case TeacherMatch::Differs: return "differs";
    case TeacherMatch::Unknown: break;
  }
  return "unknown";
}

Fingerprint fingerprint_of(const Projection& projection, std::size_t dim,
                           const std::unordered_map<std::int64_t, std::string>& external_ids) {
  // External ids, not the store's row ids: a copy of the store, or the same
  // data imported elsewhere, gives the same fingerprint.
  std::vector<std::pair<std::string, const Head*>> heads;
  heads.reserve(projection.heads.size());
  for (const Head& head : projection.heads) {
    const auto it = external_ids.find(head.cluster_id);
    if (it == external_ids.end()) {
      throw Error("projection \"" + projection.name + "\": head of cluster " + std::to_string(head.cluster_id) +
                  " names no cluster of the store");
    }
    heads.emplace_back(it->second, &head);
  }
  std::sort(heads.begin(), heads.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  Sha256 clusters, weights;
  for (const auto& [external, head] : heads) {
    clusters.add(external);
    weights.add(external);
    weights.add_floats(head->centroid);
    weights.add_floats(head->answer);
  }
  for (const StudentTensor& t : projection.tensors) {
    weights.add(t.name);
    weights.add(nlohmann::json(t.shape).dump());
    weights.add_floats(t.values);
  }
  Fingerprint f;
  f.model = projection.model;
  f.dim = dim;
  f.heads = projection.heads.size();
  f.clusters_sha256 = clusters.hex();
  f.weights_sha256 = weights.hex();
  f.temperature = projection.temperature;
  f.projection = projection.name;
  f.id = id_of(f);
  return f;
}

std::string Fingerprint::to_json() const {
  return nlohmann::json{{"version", kFingerprintVersion},
                        {"id", id},
                        {"model", model},
                        {"dim", dim},
                        {"heads", heads},
                        {"clusters_sha256", clusters_sha256},
                        {"weights_sha256", weights_sha256},
                        {"temperature", temperature},
                        {"temperature_bits", float_bits(temperature)},
                        {"projection", projection}}
      .dump();
}

Fingerprint Fingerprint::from_json(std::string_view text, const std::string& what) {
  const auto bad = [&](const std::string& why) {
    return InputError(what + ": the teacher fingerprint " + why +
                      "; export the model again with this ldaproj, or import it with --force");
  };
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) throw bad("is not a JSON object");
  if (!j.contains("version") || !j["version"].is_number_integer()) throw bad("has no version");
  if (j["version"].get<long long>() != kFingerprintVersion) {
    throw bad("has version " + j["version"].dump() + ", this ldaproj knows version " +
              std::to_string(kFingerprintVersion));
  }
  Fingerprint f;
  try {
    f.id = j.at("id").get<std::string>();
    f.model = j.at("model").get<std::string>();
    f.dim = j.at("dim").get<std::size_t>();
    f.heads = j.at("heads").get<std::size_t>();
    f.clusters_sha256 = j.at("clusters_sha256").get<std::string>();
    f.weights_sha256 = j.at("weights_sha256").get<std::string>();
    const std::string bits = j.at("temperature_bits").get<std::string>();
    std::size_t used = 0;
    const unsigned long word = std::stoul(bits, &used, 16);
    if (used != bits.size() || bits.size() != 8) throw std::invalid_argument(bits);
    f.temperature = std::bit_cast<float>(static_cast<std::uint32_t>(word));
    f.projection = j.value("projection", std::string());
  } catch (const std::exception& e) {
    throw bad(std::string("is incomplete or malformed (") + e.what() + ")");
  }
  // The id must be what its fields hash to, or a hand-edited file could
  // claim any teacher.
  if (id_of(f) != f.id) throw bad("does not hash to its id (was it edited?)");
  return f;
}

std::string describe_difference(const Fingerprint& artefact, const Fingerprint& target) {
  if (artefact.id == target.id) return {};
  std::vector<std::string> parts;
  if (artefact.model != target.model) parts.push_back("embedding model " + artefact.model + " vs " + target.model);
  if (artefact.dim != target.dim) {
    parts.push_back("dimension " + std::to_string(artefact.dim) + " vs " + std::to_string(target.dim));
  }
  if (artefact.heads != target.heads) {
    parts.push_back(std::to_string(artefact.heads) + " heads vs " + std::to_string(target.heads));
  }
  if (artefact.clusters_sha256 != target.clusters_sha256) {
    parts.push_back("another cluster set");
  } else if (artefact.weights_sha256 != target.weights_sha256) {
    parts.push_back("the same clusters with other keys or answers (trained or embedded again)");
  }
  if (artefact.temperature != target.temperature) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "temperature %g vs %g", artefact.temperature, target.temperature);
    parts.push_back(buf);
  }
  if (parts.empty()) parts.push_back("fingerprint " + short_id(artefact.id) + " vs " + short_id(target.id));
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

}  // namespace ldaproj
