// Held-out test files, retrieval metrics (Recall@1, Recall@5, MRR@10,
// nDCG@10) and out-of-scope rejection metrics.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
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
    const std::string& text = require_string(record, "query", where);
    if (auto oos = record.find("out_of_scope"); oos != record.end()) {
      if (!oos->is_boolean()) {
        throw InputError(where + ": field \"out_of_scope\": expected true or false, got " + kind_of(*oos));
      }
      if (oos->get<bool>()) {
        if (record.contains("cluster")) {
          throw InputError(where + ": an out-of-scope query has no \"cluster\"; drop one of the two fields");
        }
        out.push_back({text, ""});
        continue;
      }
    }
    out.push_back({text, require_string(record, "cluster", where)});
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
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (expected[i].empty()) continue;  // out of scope: no cluster to find
    ++m.queries;
    const auto& answers = results[i].answers;
    for (std::size_t rank = 0; rank < answers.size() && rank < 10; ++rank) {
      if (answers[rank].cluster != expected[i]) continue;
      if (rank < 1) m.recall_at_1 += 1;
      if (rank < 5) m.recall_at_5 += 1;
      m.mrr_at_10 += 1.0 / static_cast<double>(rank + 1);
      m.ndcg_at_10 += 1.0 / std::log2(static_cast<double>(rank + 2));
      break;
    }
  }
  if (m.queries == 0) return m;
  const auto n = static_cast<double>(m.queries);
  m.recall_at_1 /= n;
  m.recall_at_5 /= n;
  m.mrr_at_10 /= n;
  m.ndcg_at_10 /= n;
  return m;
}

RejectionMetrics score_rejection(const std::vector<QueryResult>& results, const std::vector<std::string>& expected,
                                 float threshold) {
  if (results.size() != expected.size()) {
    throw Error("score_rejection: " + std::to_string(results.size()) + " results for " +
                std::to_string(expected.size()) + " expected clusters");
  }
  RejectionMetrics m;
  m.threshold = threshold;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const QueryResult& r = results[i];
    const bool rejected = r.rejected || r.confidence < threshold;
    if (expected[i].empty()) {
      ++m.out_of_scope;
      if (rejected) m.out_of_scope_recall += 1;
    } else {
      ++m.in_scope;
      if (rejected) {
        m.in_scope_rejected += 1;
      } else if (!r.answers.empty() && r.answers.front().cluster == expected[i]) {
        m.in_scope_accuracy += 1;
      }
    }
  }
  if (m.in_scope > 0) {
    m.in_scope_accuracy /= static_cast<double>(m.in_scope);
    m.in_scope_rejected /= static_cast<double>(m.in_scope);
  }
  if (m.out_of_scope > 0) m.out_of_scope_recall /= static_cast<double>(m.out_of_scope);
  return m;
}

RejectionMetrics choose_rejection_threshold(const std::vector<QueryResult>& results,
                                            const std::vector<std::string>& expected) {
  if (results.size() != expected.size()) {
    throw Error("choose_rejection_threshold: " + std::to_string(results.size()) + " results for " +
                std::to_string(expected.size()) + " expected clusters");
  }
  const auto out_of_scope = static_cast<std::size_t>(std::count(expected.begin(), expected.end(), std::string()));
  if (out_of_scope == 0 || out_of_scope == expected.size()) {
    throw InputError("choosing a rejection threshold needs both in-scope and out-of-scope queries "
                     "({\"query\", \"out_of_scope\": true} lines in the held-out file)");
  }
  // Candidates: rejecting nothing, and each confidence (a query is kept when
  // its confidence is >= the threshold, so a candidate keeps that query).
  std::vector<float> candidates{-std::numeric_limits<float>::infinity()};
  for (const QueryResult& r : results) candidates.push_back(r.confidence);
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  // One pass over the sorted confidences instead of rescoring per candidate.
  std::vector<std::size_t> order(results.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return results[a].confidence < results[b].confidence; });
  const double in_scope = static_cast<double>(expected.size() - out_of_scope);
  double correct_kept = 0, oos_rejected = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (results[i].rejected) {
      if (expected[i].empty()) oos_rejected += 1;
    } else if (!expected[i].empty() && !results[i].answers.empty() &&
               results[i].answers.front().cluster == expected[i]) {
      correct_kept += 1;
    }
  }
  double best = -1;
  float best_threshold = candidates.front();
  std::size_t next = 0;  // queries below the current candidate have been moved to "rejected"
  for (float t : candidates) {
    for (; next < order.size() && results[order[next]].confidence < t; ++next) {
      const std::size_t i = order[next];
      if (results[i].rejected) continue;
      if (expected[i].empty()) {
        oos_rejected += 1;
      } else if (!results[i].answers.empty() && results[i].answers.front().cluster == expected[i]) {
        correct_kept -= 1;
      }
    }
    const double objective = correct_kept / in_scope + oos_rejected / static_cast<double>(out_of_scope);
    if (objective > best + 1e-12) {
      best = objective;
      best_threshold = t;
    }
  }
  return score_rejection(results, expected, best_threshold);
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
