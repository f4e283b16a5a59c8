// The web page's static files (web/), compiled into the library by
// cmake/embed_web_assets.cmake so the server needs no files at run time.
#pragma once
#include <string_view>

namespace ldaproj::serve {

struct WebAsset {
  std::string_view path;          // "/index.html", "/app.js", ...
  std::string_view content_type;
  std::string_view body;
};

// The asset served at `path` ("/" is "/index.html"), or nullptr.
const WebAsset* find_web_asset(std::string_view path);

// Every asset, for registering routes.
struct WebAssetList {
  const WebAsset* begin;
  const WebAsset* end;
};
WebAssetList web_assets();

}  // namespace ldaproj::serve
