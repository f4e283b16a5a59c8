// Number checks for command-line options. CLI11's PositiveNumber,
// NonNegativeNumber and Range print their bounds with std::to_string (the
// largest double as 309 digits: "0.000000 to 1797693...") and let "nan"
// through (every comparison with NaN is false); these refuse non-finite
// values and say what is allowed in a few words.
#pragma once
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <string>

namespace ldaproj::cli {

namespace validators_detail {

inline std::string shown(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

// `allowed` completes "give ...", e.g. "a positive number".
template <typename Accept>
CLI::Validator finite_number_check(const std::string& description, const std::string& name, const std::string& allowed,
                                   Accept accept) {
  return CLI::Validator(
      [allowed, accept](std::string& input) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(input, value)) return "\"" + input + "\" is not a number; give " + allowed;
        if (!std::isfinite(value)) return "\"" + input + "\" is not a finite number; give " + allowed;
        if (!accept(value)) return input + " is out of range; give " + allowed;
        return {};
      },
      description, name);
}

}  // namespace validators_detail

// A finite number > 0.
inline CLI::Validator positive_number() {
  return validators_detail::finite_number_check("", "POSITIVE", "a positive number", [](double v) { return v > 0; });
}

// A finite number >= 0.
inline CLI::Validator non_negative_number() {
  return validators_detail::finite_number_check("", "NONNEGATIVE", "a number >= 0", [](double v) { return v >= 0; });
}

// A finite number in [low, high].
inline CLI::Validator number_in(double low, double high) {
  using validators_detail::shown;
  return validators_detail::finite_number_check(
      "NUMBER in [" + shown(low) + " - " + shown(high) + "]", "RANGE", "a number from " + shown(low) + " to " + shown(high),
      [low, high](double v) { return v >= low && v <= high; });
}

// Any finite number.
inline CLI::Validator finite_number() {
  return validators_detail::finite_number_check("", "FINITE", "a finite number", [](double) { return true; });
}

}  // namespace ldaproj::cli
