#include "http_message.hpp"

#include <cstring>
#include <stdexcept>

#include "exit_text.hpp"
#include "wire.hpp"

namespace mps {

namespace {

void put_u32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = char((v >> (8 * i)) & 0xff);
  out->append(b, 4);
}

void put_u64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = char((v >> (8 * i)) & 0xff);
  out->append(b, 8);
}

// Reads little-endian integers and byte runs off a record, refusing to run past its end.
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool u32(uint32_t* v) {
    if (s_.size() - at_ < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= uint32_t(uint8_t(s_[at_ + i])) << (8 * i);
    at_ += 4;
    return true;
  }
  bool u64(uint64_t* v) {
    if (s_.size() - at_ < 8) return false;
    *v = 0;
    for (int i = 0; i < 8; ++i) *v |= uint64_t(uint8_t(s_[at_ + i])) << (8 * i);
    at_ += 8;
    return true;
  }
  bool bytes(uint64_t n, std::string_view* v) {
    if (s_.size() - at_ < n) return false;
    *v = s_.substr(at_, n);
    at_ += n;
    return true;
  }
  bool done() const { return at_ == s_.size(); }

 private:
  std::string_view s_;
  size_t at_ = 0;
};

uint32_t len32(std::string_view s) {
  if (s.size() > UINT32_MAX) throw std::length_error("request field over 4 GiB");
  return uint32_t(s.size());
}

// The length of the valid UTF-8 sequence at s[i], or 0 if it is not one.
size_t utf8_sequence(std::string_view s, size_t i) {
  const auto c = uint8_t(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || s.size() - i < n) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((uint8_t(s[i + k]) & 0xc0) != 0x80) return 0;
  if (n == 2 && c < 0xc2) return 0;                                                // overlong
  if (n == 3 && c == 0xe0 && uint8_t(s[i + 1]) < 0xa0) return 0;                   // overlong
  if (n == 3 && c == 0xed && uint8_t(s[i + 1]) >= 0xa0) return 0;                  // surrogate
  if (n == 4 && c == 0xf0 && uint8_t(s[i + 1]) < 0x90) return 0;                   // overlong
  if (n == 4 && (c > 0xf4 || (c == 0xf4 && uint8_t(s[i + 1]) >= 0x90))) return 0;  // > U+10FFFF
  return n;
}

}  // namespace

std::pair<std::string_view, std::string_view> split_target(std::string_view target) {
  const size_t q = target.find('?');
  if (q == std::string_view::npos) return {target, {}};
  return {target.substr(0, q), target.substr(q + 1)};
}

void encode_request(const HttpRequestView& r, std::string* out) {
  size_t total = kRequestFixedBytes + r.method.size() + r.path.size() + r.query.size() + r.body.size();
  for (const auto& [name, value] : r.headers) total += 8 + name.size() + value.size();
  out->reserve(out->size() + total);
  out->append(kRequestMagic, 4);
  put_u32(out, len32(r.method));
  put_u32(out, len32(r.path));
  put_u32(out, len32(r.query));
  put_u32(out, uint32_t(r.headers.size()));
  put_u64(out, r.body.size());
  out->append(r.method);
  out->append(r.path);
  out->append(r.query);
  for (const auto& [name, value] : r.headers) {
    put_u32(out, len32(name));
    put_u32(out, len32(value));
    out->append(name);
    out->append(value);
  }
  out->append(r.body);
}

std::optional<HttpRequestView> decode_request(std::string_view rec) {
  Reader rd(rec);
  std::string_view magic;
  uint32_t nm = 0, np = 0, nq = 0, nh = 0;
  uint64_t nb = 0;
  if (!rd.bytes(4, &magic) || std::memcmp(magic.data(), kRequestMagic, 4) != 0) return std::nullopt;
  if (!rd.u32(&nm) || !rd.u32(&np) || !rd.u32(&nq) || !rd.u32(&nh) || !rd.u64(&nb)) return std::nullopt;
  HttpRequestView r;
  if (!rd.bytes(nm, &r.method) || !rd.bytes(np, &r.path) || !rd.bytes(nq, &r.query)) return std::nullopt;
  // Each header takes at least 8 bytes: a count larger than what is left is a lie.
  if (uint64_t(nh) * 8 > rec.size()) return std::nullopt;
  r.headers.reserve(nh);
  for (uint32_t i = 0; i < nh; ++i) {
    uint32_t a = 0, b = 0;
    std::string_view name, value;
    if (!rd.u32(&a) || !rd.u32(&b) || !rd.bytes(a, &name) || !rd.bytes(b, &value)) return std::nullopt;
    r.headers.emplace_back(name, value);
  }
  if (!rd.bytes(nb, &r.body) || !rd.done()) return std::nullopt;
  return r;
}

std::string json_string(std::string_view text) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  for (size_t i = 0; i < text.size();) {
    const auto c = uint8_t(text[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(char(c));
      ++i;
    } else if (c < 0x20) {
      out += "\\u00";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xf]);
      ++i;
    } else if (const size_t n = utf8_sequence(text, i); n > 0) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      out += "\xef\xbf\xbd";  // U+FFFD for a byte that starts no valid sequence
      ++i;
    }
  }
  out.push_back('"');
  return out;
}

HttpAnswer error_answer(unsigned status, std::string_view type, std::string_view message) {
  HttpAnswer a;
  a.status = status;
  a.content_type = kTypeJson;
  a.body = "{\"error\": " + json_string(type) + ", \"message\": " + json_string(message) + "}";
  return a;
}

std::string describe_crash(std::string_view payload) {
  // kind, servlet label, worker name, index, pid, wait status, note (guardian.hpp)
  std::vector<std::string_view> f;
  size_t at = 0;
  while (f.size() < 6) {
    const size_t sep = payload.find('\x1f', at);
    if (sep == std::string_view::npos) break;
    f.push_back(payload.substr(at, sep - at));
    at = sep + 1;
  }
  f.push_back(payload.substr(std::min(at, payload.size())));
  if (f.size() != 7) return "a worker crashed while holding this request";
  const std::string_view kind = f[0], label = f[1], name = f[2], pid = f[4], note = f[6];
  if (kind == "dropped") return "this request " + std::string(note);
  if (kind == "servlet")
    return std::string(label) + " " + std::string(note) + "; this request was not processed";
  if (kind == "thread")
    return "worker thread " + std::string(name) + " of " + std::string(label) + " " + std::string(note);
  int status = 0;
  for (char c : f[5]) {
    if (c < '0' || c > '9') {
      status = -1;
      break;
    }
    status = status * 10 + (c - '0');
    if (status > (1 << 24)) break;
  }
  const std::string how = status >= 0 ? describe_exit(status) : "died";
  return "worker process " + std::string(name) + " (pid " + std::string(pid) + ") of " + std::string(label) +
         " " + how + "; it " + std::string(note);
}

HttpAnswer answer_for(uint32_t flags, std::string&& payload) {
  if (flags & kFlagHttp) {
    HttpHead head{};
    if (payload.size() < sizeof head)
      return error_answer(500, "HttpResponseError", "a worker sent a malformed HTTP response");
    std::memcpy(&head, payload.data(), sizeof head);
    HttpAnswer a;
    a.status = head.status;
    switch (HttpBody(head.body)) {
      case HttpBody::octets:
        a.content_type = kTypeOctets;
        break;
      case HttpBody::text:
        a.content_type = kTypeText;
        break;
      case HttpBody::json:
        a.content_type = kTypeJson;
        break;
      default:
        return error_answer(500, "HttpResponseError", "a worker sent a response of unknown content type");
    }
    if (a.status < 200 || a.status > 599)
      return error_answer(500, "HttpResponseError", "a worker sent a response with an invalid status");
    payload.erase(0, sizeof head);
    a.body = std::move(payload);
    return a;
  }
  if ((flags & kFlagError) && (flags & kFlagCrash)) {
    const bool dropped = std::string_view(payload).substr(0, 8) == "dropped\x1f";
    return error_answer(dropped ? 503 : 502, "WorkerCrashedError", describe_crash(payload));
  }
  if (flags & kFlagError)
    return error_answer(500, "Error", "the request failed in a stage that does not encode HTTP responses");
  if ((flags & kFlagRaw) && !(flags & (kFlagObject | kFlagEnsemble | kFlagOob))) {
    HttpAnswer a;
    a.body = std::move(payload);
    return a;
  }
  return error_answer(500, "HttpResponseError",
                      "the result was not encoded for HTTP (the servlet's last stage is not a worker)");
}

bool HttpRoutes::reserved(std::string_view path) {
  return path == "/healthz" || path == "/readyz" || path == "/metrics";
}

void HttpRoutes::add(HttpRoute r) {
  if (r.path.empty() || r.path[0] != '/')
    throw std::invalid_argument("a route path must start with '/': " + r.path);
  if (r.path.find_first_of("?#") != std::string::npos)
    throw std::invalid_argument("a route path cannot contain '?' or '#': " + r.path);
  if (reserved(r.path))
    throw std::invalid_argument("the front answers " + r.path + " itself; it cannot be a route");
  if (find(r.path)) throw std::invalid_argument("route given twice: " + r.path);
  routes_.push_back(std::move(r));
}

const HttpRoute* HttpRoutes::find(std::string_view path) const {
  for (const HttpRoute& r : routes_)
    if (r.path == path) return &r;
  return nullptr;
}

}  // namespace mps
