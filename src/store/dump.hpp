// A logical, deterministic text dump of every table of a store: used by tests
// to prove that a failed write left the database exactly as it was, and handy
// when debugging a database by hand.
#pragma once
#include <string>

#include "ldaproj/store.hpp"

namespace ldaproj::store_detail {

// Schema version, application id, then each table (by name) with its rows
// sorted; BLOBs as hex. Two stores with equal dumps hold the same data.
std::string logical_dump(const Store& store);

}  // namespace ldaproj::store_detail
