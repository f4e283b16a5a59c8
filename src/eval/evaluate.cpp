// Held-out test files and retrieval metrics (Recall@1, Recall@5, MRR@10).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "ldaproj/error.hpp"
#include "ldaproj/eval.hpp"
#include "text/utf8.hpp"

namespace ldaproj {

namespace {

std::string kind_of(const nlohmann::json& j) {
  return j.is_string() ? "string" : j.is_number() ? "number" : j.is_object() ? "object"
         : j.is_array() ? "array" : j.is_boolean() ? "boolean" : "null";
}

const std::string& require_string(const nlohmann::json& record, const char* field,
                                  const std::string& where) {
  auto it = record.find(field);
  if (it == record.end()) throw InputError(where + ": missing field \"" + field + "\"");
  if (!it->is_string()) {
    throw InputError(where + ": field \"" + field + "\": expected a string, got " + kind_of(*it));
  }
  if (it->get_ref<const std::string&>().empty()) {
    throw InputError(where + ": field \"" + field + "\" is empty");
  }
  return it->get_ref<const std::string&>();
}

std::vector<LabeledQuery> from_cluster_file(const nlohmann::json& doc, const std::string& file) {
  std::vector<LabeledQuery> out;
  const auto& clusters = doc.at("clusters");
  if (!clusters.is_array()) throw InputError(file + ": field \"clusters\": expected an array");
  for (std::size_t i = 0; i < clusters.size(); ++i) {
    const auto& c = clusters[i];
    const std::string where = file + ": cluster #" + std::to_string(i + 1);
    if (!c.is_object()) throw InputError(where + ": expected an object, got " + kind_of(c));
    const std::string& id = require_string(c, "id", where);
    auto queries = c.find("queries");
    if (queries == c.end() || !queries->is_object()) {
      throw InputError(where + " (\"" + id + "\"): field \"queries\": expected an object");
    }
    auto novel = queries->find("novel");
    if (novel == queries->end()) continue;
    if (!novel->is_array()) {
      throw InputError(where + " (\"" + id + "\"): field \"queries.novel\": expected an array");
    }
    for (std::size_t k = 0; k < novel->size(); ++k) {
      const auto& q = (*novel)[k];
      if (!q.is_string() || q.get_ref<const std::string&>().empty()) {
        throw InputError(where + " (\"" + id + "\"): field \"queries.novel[" + std::to_string(k) +
                         "]\": expected a non-empty string");
      }
      out.push_back({q.get<std::string>(), id});
    }
  }
  return out;
}

}  // namespace

std::vector<LabeledQuery> read_test_queries(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(file + ": cannot open test file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  if (const std::string bad = text::describe_invalid_utf8(text); !bad.empty()) {
    throw InputError(file + ": " + bad + "; save the file as UTF-8");
  }

  // A whole-document JSON object with "clusters" is the original format;
  // anything else is read as JSON Lines.
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') {
    try {
      const nlohmann::json doc = nlohmann::json::parse(text);
      if (doc.is_object() && doc.contains("clusters")) {
        auto out = from_cluster_file(doc, file);
        if (out.empty()) throw InputError(file + ": no \"novel\" queries found");
        return out;
      }
    } catch (const nlohmann::json::parse_error& e) {
      // Not one document: JSON Lines, unless its first line is no record
      // either, when the document's own error is the useful one.
      const auto line_end = text.find('\n', first);
      if (!nlohmann::json::accept(text.substr(first, line_end == std::string::npos ? line_end : line_end - first))) {
        throw InputError(file + ": not valid JSON (" + e.what() +
                         "); expected a {\"clusters\": [...]} document or one {\"query\", \"cluster\"} "
                         "object per line");
      }
    }
  }
  std::vector<LabeledQuery> out;
  std::istringstream lines(text);
  std::string line;
  for (std::size_t number = 1; std::getline(lines, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = file + ":" + std::to_string(number);
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw InputError(where + ": not valid JSON (" + e.what() +
                       "); expected {\"query\": ..., \"cluster\": ...} per line or a "
                       "{\"clusters\": [...]} document");
    }
    if (!record.is_object()) throw InputError(where + ": expected a JSON object");
    out.push_back({require_string(record, "query", where), require_string(record, "cluster", where)});
  }
  if (out.empty()) throw InputError(file + ": no test queries found");
  return out;
}

RetrievalMetrics score_results(const std::vector<QueryResult>& results,
                               const std::vector<std::string>& expected) {
  if (results.size() != expected.size()) {
    throw Error("score_results: " + std::to_string(results.size()) + " results for " +
                std::to_string(expected.size()) + " expected clusters");
  }
  RetrievalMetrics m;
  m.queries = results.size();
  if (m.queries == 0) return m;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& answers = results[i].answers;
    for (std::size_t rank = 0; rank < answers.size() && rank < 10; ++rank) {
      if (answers[rank].cluster != expected[i]) continue;
      if (rank < 1) m.recall_at_1 += 1;
      if (rank < 5) m.recall_at_5 += 1;
      m.mrr_at_10 += 1.0 / static_cast<double>(rank + 1);
      break;
    }
  }
  const auto n = static_cast<double>(m.queries);
  m.recall_at_1 /= n;
  m.recall_at_5 /= n;
  m.mrr_at_10 /= n;
  return m;
}

Agreement agreement(const Matrix& student, const Matrix& teacher, const std::vector<QueryResult>& student_results,
                    const std::vector<QueryResult>& teacher_results) {
  if (student.rows != teacher.rows || student.cols != teacher.cols || student_results.size() != student.rows ||
      teacher_results.size() != student.rows) {
    throw Error("agreement: the student's and the teacher's outputs do not cover the same queries");
  }
  Agreement a;
  a.queries = student.rows;
  if (a.queries == 0) return a;
  a.min_cosine = 1.0;
  for (std::size_t q = 0; q < student.rows; ++q) {
    double dot = 0, ns = 0, nt = 0;
    for (std::size_t j = 0; j < student.cols; ++j) {
      dot += double(student(q, j)) * teacher(q, j);
      ns += double(student(q, j)) * student(q, j);
      nt += double(teacher(q, j)) * teacher(q, j);
    }
    const double cosine = ns > 0 && nt > 0 ? dot / std::sqrt(ns * nt) : 0.0;
    a.mean_cosine += cosine;
    a.min_cosine = std::min(a.min_cosine, cosine);

    std::set<std::int64_t> top;
    const auto& t = teacher_results[q].answers;
    const std::size_t k = std::min<std::size_t>(10, t.size());
    for (std::size_t i = 0; i < k; ++i) top.insert(t[i].answer_id);
    std::size_t shared = 0;
    const auto& s = student_results[q].answers;
    for (std::size_t i = 0; i < std::min<std::size_t>(10, s.size()); ++i) shared += top.count(s[i].answer_id);
    a.top10_overlap += k ? static_cast<double>(shared) / static_cast<double>(k) : 1.0;
  }
  a.mean_cosine /= static_cast<double>(a.queries);
  a.top10_overlap /= static_cast<double>(a.queries);
  return a;
}

}  // namespace ldaproj
