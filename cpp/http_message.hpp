// http_message.hpp — the HTTP front's translation layer: which route a
// request names, what goes into the servlet tree for it, and what response
// a result becomes.  Pure functions and a small table; no sockets, no
// threads (http_front.hpp does the I/O), so the fuzz target and the Catch2
// tests drive exactly the code the front runs.
//
// Into the tree
//   * A body-only route (the default) sends the request body as a raw
//     message (kFlagRaw): the worker gets it as `bytes`.
//   * A route that asked for whole requests sends a request record
//     (kFlagRequest), laid out as below; Python decodes it into an
//     mpserver.HttpRequest in the worker (python/mpserver/_http_wire.py).
//
//       "MPRQ" | u32 method | u32 path | u32 query | u32 headers | u64 body
//       method bytes | path bytes | query bytes
//       headers x (u32 name | u32 value | name bytes | value bytes)
//       body bytes
//
//     All integers little-endian; every length is checked on decode.
//
// Out of the tree (answer_for)
//   * kFlagHttp: the worker encoded the response (HttpHead + body, wire.hpp).
//   * kFlagError | kFlagCrash: the worker holding the item died: 502, with the
//     guardian's crash report as the message (a skipped item, kind
//     "dropped", is 503: its caller had given up).
//   * any other error: 500 (an upstream error that no worker encoded).
//   * a raw result (kFlagRaw without kFlagHttp): 200, the bytes as they are.
//   * anything else cannot be shown over HTTP: 500 saying so.
//   Error bodies are JSON objects {"error": type name, "message": text}.
//
// Invariants
//   * decode_request accepts exactly what encode_request produces and
//     rejects anything else without reading out of bounds.
//   * answer_for never throws on any (flags, payload): a malformed worker
//     response is a 500, not a crash of the front.
//   * A route path is matched exactly (no prefix match, no normalisation);
//     the query string is not part of the match.
// No memory-ordering concerns: nothing here is shared between threads while
// it changes (the route table is built before the front starts).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mps {

inline constexpr char kRequestMagic[4] = {'M', 'P', 'R', 'Q'};
// Fixed part of a request record: magic, four u32 lengths, the u64 body length.
inline constexpr size_t kRequestFixedBytes = 4 + 4 * 4 + 8;
static_assert(kRequestFixedBytes == 28, "the request record's fixed part is part of the wire format");

// A parsed request, as views into the parser's buffers.
struct HttpRequestView {
  std::string_view method;
  std::string_view path;   // the target before '?'
  std::string_view query;  // after '?', without it ("" if none)
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::string_view body;
};

// Splits a request target into path and query.
std::pair<std::string_view, std::string_view> split_target(std::string_view target);

// Appends the request record of `r` to *out (kFlagRequest payload).
void encode_request(const HttpRequestView& r, std::string* out);
// Parses a request record; nullopt if it is not one.  Views point into `rec`.
std::optional<HttpRequestView> decode_request(std::string_view rec);

// What the front answers.
struct HttpAnswer {
  unsigned status = 200;
  std::string_view content_type = "application/octet-stream";
  std::string body;
  unsigned retry_after = 0;  // seconds; 0: no Retry-After header
};

inline constexpr std::string_view kTypeOctets = "application/octet-stream";
inline constexpr std::string_view kTypeText = "text/plain; charset=utf-8";
inline constexpr std::string_view kTypeJson = "application/json";

// {"error": type, "message": message} with `status`.
HttpAnswer error_answer(unsigned status, std::string_view type, std::string_view message);
// The response for a result that came out of the tree (see the file comment).
// Moves the payload out when it can.
HttpAnswer answer_for(uint32_t flags, std::string&& payload);
// The message of a guardian crash report (the fields of guardian.hpp's
// crash_payload), as a user should read it.
std::string describe_crash(std::string_view payload);
// A JSON string literal (quotes included) of possibly invalid UTF-8 text:
// invalid bytes become U+FFFD.
std::string json_string(std::string_view text);

// Where requests for a path go.
struct HttpRoute {
  std::string path;
  uint32_t entry = 0;          // index of the entry ring the front was given
  bool whole_request = false;  // send request records instead of bodies
};

// The table of routes: exact paths.  Reserved paths (/healthz, /readyz,
// /metrics) are answered by the front itself and cannot be routes.
class HttpRoutes {
 public:
  // Throws std::invalid_argument for a path that does not start with '/',
  // contains '?' or '#', is reserved, or is already routed.
  void add(HttpRoute r);
  const HttpRoute* find(std::string_view path) const;
  size_t size() const { return routes_.size(); }
  std::vector<const HttpRoute*> all() const {
    std::vector<const HttpRoute*> v;
    for (const HttpRoute& r : routes_) v.push_back(&r);
    return v;
  }
  static bool reserved(std::string_view path);

 private:
  std::vector<HttpRoute> routes_;  // few: a linear scan beats hashing
};

}  // namespace mps
