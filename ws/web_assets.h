#ifndef FANOUT_WS_WEB_ASSETS_H_
#define FANOUT_WS_WEB_ASSETS_H_

#include <optional>
#include <string_view>

namespace fanout {

// A file the front end serves from the binary itself. The build embeds them
// (cmake/EmbedWebAssets.cmake): clients/js/fanout.js at /client/fanout.js and
// clients/js/demo.html at /demo.
struct WebAsset {
  // The Content-Type header value.
  const char* content_type;
  // The file's bytes; static storage.
  std::string_view body;
  // Pages of any origin may read it (Access-Control-Allow-Origin: *): true for
  // the library, which other sites import.
  bool cross_origin;
};

// The asset served at `path` (an exact match of the request path, such as
// "/demo"), or nullopt.
// Thread: safe from any thread.
std::optional<WebAsset> FindWebAsset(std::string_view path);

}  // namespace fanout

#endif  // FANOUT_WS_WEB_ASSETS_H_
