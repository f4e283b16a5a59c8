// Lookup over the generated table of web assets.
#include "serve/web_assets.hpp"

#include <iterator>

// Defines `kWebAssets`, a constexpr array of WebAsset (generated at build time).
#include "ldaproj_web_assets.inc"

namespace ldaproj::serve {

const WebAsset* find_web_asset(std::string_view path) {
  if (path == "/") path = "/index.html";
  for (const WebAsset& asset : kWebAssets) {
    if (asset.path == path) return &asset;
  }
  return nullptr;
}

WebAssetList web_assets() { return {std::begin(kWebAssets), std::end(kWebAssets)}; }

}  // namespace ldaproj::serve
