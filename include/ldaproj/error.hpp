// Error types shared by every part of ldaproj.
#pragma once
#include <stdexcept>
#include <string>

namespace ldaproj {

// Something went wrong that is not the caller's input (I/O, SQLite, internal).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The user's input is wrong: a file, record, field, flag or request. The
// message names where (file, line/record, field) and, where possible, how to
// fix it. Nothing was changed when this is thrown.
class InputError : public Error {
 public:
  using Error::Error;
};

}  // namespace ldaproj
