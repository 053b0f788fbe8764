#include "core/message.h"

#include <openssl/evp.h>

#include <algorithm>
#include <string_view>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string_view.hpp>

#include "absl/strings/str_cat.h"
#include "core/utf8.h"

namespace fanout {
namespace {

namespace json = boost::json;

// A Boost.JSON SAX handler that accepts everything: parsing with it validates
// a payload without building a DOM or allocating per value.
struct ValidateOnlyHandler {
  using ec = boost::system::error_code;
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);
  bool on_document_begin(ec&) { return true; }
  bool on_document_end(ec&) { return true; }
  bool on_array_begin(ec&) { return true; }
  bool on_array_end(std::size_t, ec&) { return true; }
  bool on_object_begin(ec&) { return true; }
  bool on_object_end(std::size_t, ec&) { return true; }
  bool on_string_part(json::string_view, std::size_t, ec&) { return true; }
  bool on_string(json::string_view, std::size_t, ec&) { return true; }
  bool on_key_part(json::string_view, std::size_t, ec&) { return true; }
  bool on_key(json::string_view, std::size_t, ec&) { return true; }
  bool on_number_part(json::string_view, ec&) { return true; }
  bool on_int64(int64_t, json::string_view, ec&) { return true; }
  bool on_uint64(uint64_t, json::string_view, ec&) { return true; }
  bool on_double(double, json::string_view, ec&) { return true; }
  bool on_bool(bool, ec&) { return true; }
  bool on_null(ec&) { return true; }
  bool on_comment_part(json::string_view, ec&) { return true; }
  bool on_comment(json::string_view, ec&) { return true; }
};

bool IsJson(absl::string_view payload) {
  json::parse_options opt;
  opt.max_depth = 256;
  json::basic_parser<ValidateOnlyHandler> parser(opt);
  boost::system::error_code ec;
  size_t n = parser.write_some(false, payload.data(), payload.size(), ec);
  return !ec && parser.done() && n == payload.size();
}

size_t FrameHeaderSize(size_t len) { return len < 126 ? 2 : (len <= 0xFFFF ? 4 : 10); }

// Writes the header for an unmasked final frame; returns the bytes written.
size_t WriteFrameHeader(char* out, WsOpcode opcode, size_t len) {
  out[0] = static_cast<char>(0x80 | static_cast<uint8_t>(opcode));
  if (len < 126) {
    out[1] = static_cast<char>(len);
    return 2;
  }
  if (len <= 0xFFFF) {
    out[1] = 126;
    out[2] = static_cast<char>(len >> 8);
    out[3] = static_cast<char>(len & 0xFF);
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<char>((uint64_t{len} >> (56 - 8 * i)) & 0xFF);
  return 10;
}

// Builds a frame whose payload is produced by `fill(char* dst)` writing exactly
// `len` bytes, so the envelope is written straight into the frame buffer.
template <typename Fill>
std::string BuildFrameWith(WsOpcode opcode, size_t len, Fill fill) {
  std::string frame;
  frame.resize(FrameHeaderSize(len) + len);
  size_t h = WriteFrameHeader(frame.data(), opcode, len);
  fill(frame.data() + h);
  return frame;
}

std::string Base64(absl::string_view in) {
  std::string out;
  out.resize(4 * ((in.size() + 2) / 3));
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string EnvelopeBody(absl::string_view topic, bool broadcast, uint64_t seq,
                         absl::string_view epoch, absl::string_view payload, PayloadKind kind) {
  std::string head;
  if (broadcast) {
    head = absl::StrCat(R"({"broadcast":true,"seq":)", seq);
  } else {
    // Topics and epochs are limited to an alphabet that needs no escaping.
    head = absl::StrCat(R"({"topic":")", topic, "\"");
    if (seq != 0) absl::StrAppend(&head, R"(,"seq":)", seq);
    if (seq != 0 && !epoch.empty()) absl::StrAppend(&head, R"(,"epoch":")", epoch, "\"");
  }
  switch (kind) {
    case PayloadKind::kJson:
      return absl::StrCat(head, R"(,"data":)", payload, "}");
    case PayloadKind::kText:
      return absl::StrCat(head, R"(,"text":)",
                          json::serialize(json::string_view(payload.data(), payload.size())), "}");
    case PayloadKind::kBinary:
      return absl::StrCat(head, R"(,"b64":")", Base64(payload), "\"}");
  }
  return {};
}

}  // namespace

PayloadKind ClassifyPayload(absl::string_view payload) {
  if (!IsValidUtf8(payload)) return PayloadKind::kBinary;
  return IsJson(payload) ? PayloadKind::kJson : PayloadKind::kText;
}

std::string BuildFrame(WsOpcode opcode, absl::string_view payload) {
  return BuildFrameWith(opcode, payload.size(), [&](char* dst) {
    if (!payload.empty()) std::memcpy(dst, payload.data(), payload.size());
  });
}

std::string BuildCloseFrame(uint16_t code, absl::string_view reason) {
  reason = reason.substr(0, 123);
  // A reason cut mid-character would be invalid UTF-8, which clients reject.
  while (!reason.empty() && !IsValidUtf8(reason)) reason.remove_suffix(1);
  std::string body;
  body.push_back(static_cast<char>(code >> 8));
  body.push_back(static_cast<char>(code & 0xFF));
  body.append(reason.data(), reason.size());
  return BuildFrame(WsOpcode::kClose, body);
}

size_t MaxDeliveryFrameBytes(size_t max_topic_length, size_t max_payload_bytes) {
  // {"topic":"T","seq":N,"epoch":"E","b64":"B"} with N at most 20 digits and
  // E at most kMaxEpochLength bytes.
  size_t envelope = std::string_view(R"({"topic":"","seq":,"epoch":"","b64":""})").size() +
                    max_topic_length + 20 + kMaxEpochLength;
  size_t body = envelope + 4 * ((max_payload_bytes + 2) / 3);
  size_t raw = max_payload_bytes;
  return FrameHeaderSize(std::max(body, raw)) + std::max(body, raw);
}

Message::~Message() {
  if (budget_) budget_->Release(memory_bytes_);
}

std::shared_ptr<const Message> EncodeMessage(const MessageSpec& spec) {
  auto msg = std::make_shared<Message>();
  msg->seq_ = spec.seq;
  if (spec.seq != 0) msg->epoch_ = std::string(spec.epoch);
  if (!spec.broadcast) msg->topic_ = std::string(spec.topic);
  msg->payload_size_ = spec.payload.size();
  // Classified once; a raw frame alone needs only text or binary.
  PayloadKind kind = spec.kind     ? *spec.kind
                     : spec.json ? ClassifyPayload(spec.payload)
                     : IsValidUtf8(spec.payload) ? PayloadKind::kText
                                                 : PayloadKind::kBinary;
  if (spec.json) {
    msg->json_frame_ = BuildFrame(
        WsOpcode::kText, EnvelopeBody(spec.topic, spec.broadcast, spec.seq, spec.epoch, spec.payload, kind));
  }
  if (spec.raw) {
    msg->raw_frame_ =
        BuildFrame(kind == PayloadKind::kBinary ? WsOpcode::kBinary : WsOpcode::kText, spec.payload);
  }
  // make_shared's one block: the control block (two counts, a vtable) and the
  // message; each frame above the small-string size is an allocation of its own.
  constexpr int64_t kControlBlock = 16;
  auto heap = [](const std::string& s) {
    return s.capacity() > 15 ? static_cast<int64_t>(s.capacity()) + 1 : 0;
  };
  msg->memory_bytes_ = kControlBlock + static_cast<int64_t>(sizeof(Message)) +
                       heap(msg->json_frame_) + heap(msg->raw_frame_) + heap(msg->topic_);
  if (spec.budget) {
    spec.budget->Charge(msg->memory_bytes_);
    msg->budget_ = spec.budget;
  }
  return msg;
}

std::shared_ptr<const Message> EncodeNotice(absl::string_view json,
                                            std::shared_ptr<DeliveryBudget> budget) {
  auto msg = std::make_shared<Message>();
  msg->json_frame_ = BuildFrame(WsOpcode::kText, json);
  msg->payload_size_ = json.size();
  msg->memory_bytes_ = 16 + static_cast<int64_t>(sizeof(Message) + msg->json_frame_.capacity());
  if (budget) {
    budget->Charge(msg->memory_bytes_);
    msg->budget_ = std::move(budget);
  }
  return msg;
}

}  // namespace fanout
