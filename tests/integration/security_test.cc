// Tokens, permissions and client publishing against the real fanoutd: every
// row of the security matrix gets its documented answer, while a
// well-behaved client on the same node receives everything published.
#include <signal.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/client_context.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/fixture.h"
#include "tests/testing/raw_ws.h"
#include "tests/testing/tokens.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace fanout {
namespace {

using ::fanout::testing::GenerateEcKey;
using ::fanout::testing::GenerateRsaKey;
using ::fanout::testing::HmacTokenClaimingAlg;
using ::fanout::testing::KeyPair;
using ::fanout::testing::RawWs;
using ::fanout::testing::SignToken;
using ::fanout::testing::UnixNow;
using ::fanout::testing::UnsignedToken;
using ::fanout::testing::WriteTempFile;
using ::testing::HasSubstr;

constexpr char kSecret[] = "a-test-secret-that-is-long-enough";
constexpr char kJwksSecret[] = "the-jwks-hmac-secret-rotated-by-kid";
constexpr char kIssuer[] = "https://issuer.test";
constexpr char kAudience[] = "fanout-tests";

std::string Claims(const std::string& sub, long exp_delta = 3600, const std::string& extra = "") {
  return absl::StrCat(R"({"sub":")", sub, R"(","iss":")", kIssuer, R"(","aud":")", kAudience,
                      R"(","exp":)", UnixNow(exp_delta),
                      R"(,"subscribe":["user.{sub}.>","room.*","witness"],"publish":["room.*"])",
                      extra, "}");
}

class SecurityTest : public FanoutdTest {
 protected:
  static void SetUpTestSuite() {
    rsa_ = new KeyPair(GenerateRsaKey());
    ec_ = new KeyPair(GenerateEcKey("P-256"));
    ec384_ = new KeyPair(GenerateEcKey("P-384"));
    jwks_rsa_ = new KeyPair(GenerateRsaKey());
  }
  void SetUp() override {
    secret_file_ = WriteTempFile("secret", std::string(kSecret) + "\n");  // newline stripped
    pem_file_ = WriteTempFile("key.pem", rsa_->public_pem);
    std::string jwks = absl::StrCat(R"({"keys":[)", jwks_rsa_->jwk.substr(0, jwks_rsa_->jwk.size() - 1),
                                    R"(,"kid":"rsa-1","use":"sig"},)", ec_->jwk.substr(0, ec_->jwk.size() - 1),
                                    R"(,"kid":"ec-1"},)", ec384_->jwk.substr(0, ec384_->jwk.size() - 1),
                                    R"(,"kid":"ec384-1"},{"kty":"oct","kid":"hs-1","k":")",
                                    absl::WebSafeBase64Escape(kJwksSecret), R"("}]})");
    jwks_file_ = WriteTempFile("jwks.json", jwks);
  }
  std::vector<std::string> KeyFlags() {
    return {absl::StrCat("--jwt_secret_file=", secret_file_),
            absl::StrCat("--jwt_public_key_file=", pem_file_),
            absl::StrCat("--jwt_jwks_file=", jwks_file_), absl::StrCat("--jwt_issuer=", kIssuer),
            absl::StrCat("--jwt_audience=", kAudience)};
  }
  void StartWithKeys(std::vector<std::string> more = {}) {
    auto flags = KeyFlags();
    flags.insert(flags.end(), more.begin(), more.end());
    Start(flags);
    witness_token_ = SignToken("HS256", kSecret, Claims("witness"));
    witness_ = Connect(absl::StrCat("/ws?topics=witness&token=", witness_token_));
    ASSERT_TRUE(witness_);
  }
  // Publishes to the witness and checks it got it: the node keeps serving.
  void CheckWitness() {
    ++published_;
    MustPublish("witness", absl::StrCat("n", published_));
    auto f = witness_->Read();
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_THAT(f->data, HasSubstr(absl::StrCat("\"text\":\"n", published_, "\"")));
  }
  // The HTTP status and body of a refused upgrade, or 101.
  std::pair<int, std::string> Upgrade(const std::string& target,
                                      std::vector<std::string> headers = {}) {
    RawWs::Options o;
    o.headers = std::move(headers);
    auto c = RawWs::Connect(node_->ws_address(), target, o);
    if (c.ok()) return {101, ""};
    std::string m(c.status().message());
    int status = 0;
    if (m.rfind("HTTP/1.1 ", 0) == 0) status = std::stoi(m.substr(9, 3));
    return {status, m.substr(m.find('\n') + 1)};
  }
  std::unique_ptr<RawWs> Raw(const std::string& target) {
    auto c = RawWs::Connect(node_->ws_address(), target);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  // A control message's reply (skipping deliveries and pings).
  std::string Ask(RawWs* c, const std::string& request) {
    EXPECT_TRUE(c->SendText(request).ok());
    while (true) {
      auto f = c->ReadFrame();
      if (!f.ok()) return absl::StrCat("<", f.status().message(), ">");
      if (f->opcode == 8) return absl::StrCat("<close ", f->close_code(), ">");
      if (f->opcode == 1 && f->payload.find("\"id\"") != std::string::npos) return f->payload;
    }
  }

  static KeyPair* rsa_;
  static KeyPair* ec_;
  static KeyPair* ec384_;
  static KeyPair* jwks_rsa_;
  std::string secret_file_, pem_file_, jwks_file_;
  std::string witness_token_;
  std::unique_ptr<WsClient> witness_;
  int published_ = 0;
};
KeyPair* SecurityTest::rsa_;
KeyPair* SecurityTest::ec_;
KeyPair* SecurityTest::ec384_;
KeyPair* SecurityTest::jwks_rsa_;

TEST_F(SecurityTest, ValidTokensOfEveryKeyKindAreAcceptedAndNameTheUser) {
  StartWithKeys();
  struct Case {
    const char* alg;
    std::string key;
    std::string kid;
  } cases[] = {
      {"HS256", kSecret, ""},
      {"HS384", kSecret, ""},
      {"HS512", kSecret, ""},
      {"RS256", rsa_->private_pem, ""},
      {"RS384", rsa_->private_pem, ""},
      {"RS512", rsa_->private_pem, ""},
      {"RS256", jwks_rsa_->private_pem, "rsa-1"},
      {"ES256", ec_->private_pem, "ec-1"},
      {"ES384", ec384_->private_pem, "ec384-1"},
      {"HS256", kJwksSecret, "hs-1"},  // an HMAC secret rotated by kid (JWKS "oct")
  };
  int n = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.alg, " ", c.kid));
    std::string sub = absl::StrCat("u", ++n);
    std::string token = SignToken(c.alg, c.key, Claims(sub), c.kid);
    auto ws = Connect(absl::StrCat("/ws?topics=user.", sub, ".inbox&token=", token));
    ASSERT_TRUE(ws);
    auto ids = ListSubscriberIds(absl::StrCat("user.", sub, ".inbox"), 10);
    ASSERT_EQ(ids.size(), 1u);
    grpc::ClientContext ctx;
    v1::GetConnectionRequest req;
    req.set_connection_id(ids[0]);
    v1::Connection conn;
    ASSERT_TRUE(stub_->GetConnection(&ctx, req, &conn).ok());
    EXPECT_EQ(conn.user(), sub);
  }
  // The same token in an Authorization header.
  EXPECT_EQ(Upgrade("/ws?topics=user.h.inbox",
                    {absl::StrCat("Authorization: Bearer ", SignToken("HS256", kSecret, Claims("h")))})
                .first,
            101);
  CheckWitness();
}

TEST_F(SecurityTest, InvalidTokensGet401WithAOneLineReason) {
  StartWithKeys();
  std::string good = SignToken("HS256", kSecret, Claims("bad"));
  std::string forged = good.substr(0, good.size() - 4) + (good.substr(good.size() - 4) == "AAAA" ? "BBBB" : "AAAA");
  struct Case {
    const char* name;
    std::string token;
    const char* reason;
  } cases[] = {
      {"forged signature", forged, "bad signature"},
      {"expired", SignToken("HS256", kSecret, Claims("bad", -3600)), "token expired"},
      {"not yet valid", SignToken("HS256", kSecret, Claims("bad", 3600, absl::StrCat(R"(,"nbf":)", UnixNow(3600)))), "not yet valid"},
      {"wrong audience", SignToken("HS256", kSecret, absl::StrCat(R"({"sub":"bad","iss":")", kIssuer, R"(","aud":"other","exp":)", UnixNow(60), "}")), "audience"},
      {"wrong issuer", SignToken("HS256", kSecret, absl::StrCat(R"({"sub":"bad","iss":"https://evil.test","aud":")", kAudience, R"(","exp":)", UnixNow(60), "}")), "issuer"},
      {"alg none", UnsignedToken(Claims("bad")), "algorithm 'none' is not accepted"},
      {"HS256 signed with the RSA public key", HmacTokenClaimingAlg("HS256", rsa_->public_pem, Claims("bad")), "bad signature"},
      {"RS256 header over an HMAC", HmacTokenClaimingAlg("RS256", kSecret, Claims("bad")), "bad signature"},
      {"unknown kid", SignToken("RS256", jwks_rsa_->private_pem, Claims("bad"), "who"), "unknown key id 'who'"},
      {"kid with a line break", SignToken("RS256", jwks_rsa_->private_pem, Claims("bad"), "a\nb"), "unknown key id 'a\\x0ab'"},
      {"kid of another algorithm", SignToken("RS256", jwks_rsa_->private_pem, Claims("bad"), "ec-1"), "is not for RS256"},
      {"the node's secret under the JWKS secret's kid", SignToken("HS256", kSecret, Claims("bad"), "hs-1"), "bad signature"},
      {"an RSA token naming an HMAC kid", SignToken("RS256", jwks_rsa_->private_pem, Claims("bad"), "hs-1"), "is not for RS256"},
      {"malformed", "not.a-token", "malformed"},
      {"no sub", SignToken("HS256", kSecret, absl::StrCat(R"({"iss":")", kIssuer, R"(","aud":")", kAudience, R"("})")), "no 'sub'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto [status, body] = Upgrade(absl::StrCat("/ws?token=", c.token));
    EXPECT_EQ(status, 401);
    EXPECT_THAT(body, HasSubstr(c.reason));
    EXPECT_EQ(body.find(c.token), std::string::npos) << "the reason never contains the token";
    EXPECT_EQ(std::count(body.begin(), body.end(), '\n'), 1) << "one line: " << body;
  }
  EXPECT_EQ(Upgrade("/ws", {absl::StrCat("Authorization: Bearer ", forged)}).first, 401);
  EXPECT_EQ(node_->Stderr().find(good.substr(0, 20)), std::string::npos) << "no token in the log";
  CheckWitness();
}

TEST_F(SecurityTest, TopicsNeedATokenAndItsPermission) {
  StartWithKeys();
  EXPECT_EQ(Upgrade("/ws?topics=room.1").first, 401) << "its topics cannot be checked";
  std::string token = SignToken("HS256", kSecret, Claims("42"));
  EXPECT_EQ(Upgrade(absl::StrCat("/ws?topics=user.42.inbox&token=", token)).first, 101);
  auto [status, body] = Upgrade(absl::StrCat("/ws?topics=user.43.inbox&token=", token));
  EXPECT_EQ(status, 403);
  EXPECT_THAT(body, HasSubstr("not permitted to subscribe to 'user.43.inbox'"));
  auto c = Raw(absl::StrCat("/ws?token=", token));
  ASSERT_TRUE(c);
  EXPECT_THAT(Ask(c.get(), R"({"op":"subscribe","topic":"user.43.inbox","id":1})"),
              HasSubstr(R"("code":"permission_denied")"));
  EXPECT_EQ(Ask(c.get(), R"({"op":"subscribe","topic":"room.7","id":2})"), R"({"id":2,"ok":true})")
      << "the connection stays open";
  CheckWitness();
}

TEST_F(SecurityTest, TheAuthOpIsTheOnlyWayInWithoutATokenAndMustComeInTime) {
  StartWithKeys({"--handshake_timeout=1s"});
  auto c = Raw("/ws");
  ASSERT_TRUE(c);
  EXPECT_THAT(Ask(c.get(), R"({"op":"subscribe","topic":"room.1","id":1})"),
              HasSubstr(R"("code":"unauthenticated")"));
  // Waiting for its auth op, it is counted as such: not open, not closing.
  const double witnesses = Metric("fanout_connections");
  EXPECT_EQ(Metric("fanout_connections_authenticating"), 1);
  EXPECT_EQ(Metric("fanout_connections_closing"), 0);
  EXPECT_EQ(Ask(c.get(), absl::StrCat(R"({"op":"auth","id":2,"token":")",
                                      SignToken("HS256", kSecret, Claims("7")), R"("})")),
            R"({"id":2,"ok":true})");
  EXPECT_EQ(Metric("fanout_connections_authenticating"), 0);
  EXPECT_EQ(Metric("fanout_connections"), witnesses + 1);
  EXPECT_EQ(Ask(c.get(), R"({"op":"subscribe","topic":"user.7.x","id":3})"), R"({"id":3,"ok":true})");
  MustPublish("user.7.x", "for seven");
  auto f = c->ReadFrame();
  ASSERT_TRUE(f.ok());
  EXPECT_THAT(f->payload, HasSubstr("for seven"));

  // A bad token on the auth op: an error reply, then close 4001.
  auto bad = Raw("/ws");
  ASSERT_TRUE(bad);
  EXPECT_THAT(Ask(bad.get(), R"({"op":"auth","id":1,"token":"no.such.token"})"),
              HasSubstr(R"("code":"unauthorized")"));
  auto rest = bad->ReadUntilEnd();
  ASSERT_FALSE(rest.frames.empty());
  EXPECT_EQ(rest.frames.back().close_code(), 4001);

  // No token in time: 4001.
  auto slow = Raw("/ws");
  ASSERT_TRUE(slow);
  auto end = slow->ReadUntilEnd(absl::Seconds(10));
  ASSERT_FALSE(end.frames.empty());
  EXPECT_EQ(end.frames.back().close_code(), 4001);
  EXPECT_EQ(end.frames.back().close_reason(), "no token in time");
  EXPECT_TRUE(WaitFor([&] { return Metric("fanout_connections_authenticating") == 0; }));
  CheckWitness();
}

TEST_F(SecurityTest, AnonymousClientsGetOnlyWhatTheNodeAllows) {
  StartWithKeys({"--allow_anonymous", "--anonymous_subscribe=public.>",
                 "--anonymous_publish=public.chat"});
  EXPECT_EQ(Upgrade("/ws?topics=public.news").first, 101);
  EXPECT_EQ(Upgrade("/ws?topics=room.1").first, 401);
  auto c = Raw("/ws?topics=public.chat");
  ASSERT_TRUE(c);
  EXPECT_THAT(Ask(c.get(), R"({"op":"publish","topic":"public.chat","text":"hi","id":1})"),
              HasSubstr(R"("ok":true,"seq":1)"));
  EXPECT_THAT(Ask(c.get(), R"({"op":"publish","topic":"public.news","text":"hi","id":2})"),
              HasSubstr("permission_denied"));
  CheckWitness();
}

TEST_F(SecurityTest, ANodeWithoutKeysLetsAnyoneSubscribeAndNobodyPublishUnlessTold) {
  Start({"--anonymous_publish=chat.*"});
  EXPECT_THAT(node_->Stderr(), HasSubstr("any client may subscribe to any topic"));
  auto c = Raw("/ws?topics=anything.at.all,chat.1");
  ASSERT_TRUE(c);
  EXPECT_THAT(Ask(c.get(), R"({"op":"publish","topic":"anything.at.all","data":1,"id":1})"),
              HasSubstr("permission_denied"));
  EXPECT_THAT(Ask(c.get(), R"({"op":"publish","topic":"chat.1","data":1,"id":2})"),
              HasSubstr(R"("ok":true)"));
}

TEST_F(SecurityTest, ClientPublishReachesTheRoomTheSenderTooUnlessEchoIsOff) {
  StartWithKeys();
  auto alice = Raw(absl::StrCat("/ws?topics=room.1&token=", SignToken("HS256", kSecret, Claims("alice"))));
  auto bob = Raw(absl::StrCat("/ws?topics=room.1&format=raw&token=", SignToken("HS256", kSecret, Claims("bob"))));
  ASSERT_TRUE(alice && bob);
  EXPECT_EQ(Ask(alice.get(), R"({"op":"publish","topic":"room.1","data":{"m":"hi"},"id":3})"),
            R"({"id":3,"ok":true,"seq":1})");
  auto self = alice->ReadFrame();
  ASSERT_TRUE(self.ok());
  EXPECT_EQ(WithoutEpoch(self->payload), R"({"topic":"room.1","seq":1,"data":{"m":"hi"}})") << "the sender too";
  auto b1 = bob->ReadFrame();
  ASSERT_TRUE(b1.ok());
  EXPECT_EQ(b1->payload, R"({"m":"hi"})");
  // text stays text even when it looks like JSON; b64 stays binary.
  EXPECT_THAT(Ask(alice.get(), R"({"op":"publish","topic":"room.1","text":"42","id":4,"echo":false})"),
              HasSubstr(R"("seq":2)"));
  auto b2 = bob->ReadFrame();
  ASSERT_TRUE(b2.ok());
  EXPECT_EQ(b2->opcode, 1);
  EXPECT_EQ(b2->payload, "42");
  EXPECT_THAT(Ask(alice.get(), R"({"op":"publish","topic":"room.1","b64":"aGk=","id":5})"),
              HasSubstr(R"("seq":3)"));
  auto a3 = alice->ReadFrame();  // seq 2 was not echoed: the next frame is seq 3
  ASSERT_TRUE(a3.ok());
  EXPECT_EQ(WithoutEpoch(a3->payload), R"({"topic":"room.1","seq":3,"b64":"aGk="})");
  auto b3 = bob->ReadFrame();
  ASSERT_TRUE(b3.ok());
  EXPECT_EQ(b3->opcode, 2);
  EXPECT_EQ(b3->payload, "hi");
  // Not permitted, malformed, too large.
  EXPECT_THAT(Ask(alice.get(), R"({"op":"publish","topic":"user.bob.inbox","text":"x","id":6})"),
              HasSubstr("permission_denied"));
  EXPECT_THAT(Ask(alice.get(), R"({"op":"publish","topic":"room.1","id":7})"), HasSubstr("invalid_message"));
  EXPECT_THAT(Ask(alice.get(), R"({"op":"publish","topic":"room.1","b64":"!!","id":8})"),
              HasSubstr("invalid_message"));
  CheckWitness();
}

TEST_F(SecurityTest, RawHubModeEchoesFramesAndKeepsTheirType) {
  StartWithKeys();
  std::string token = SignToken("HS256", kSecret, Claims("hub"));
  auto hub = Raw(absl::StrCat("/ws?topics=room.hub&format=raw&publish=room.hub&token=", token));
  auto json = Raw(absl::StrCat("/ws?topics=room.hub&token=", token));
  ASSERT_TRUE(hub && json);
  ASSERT_TRUE(hub->SendText(R"({"op":"not a control message"})").ok());
  ASSERT_TRUE(hub->SendFrame(2, std::string("\x01\x02\xff", 3)).ok());
  ASSERT_TRUE(hub->SendFrame(2, "utf8 but binary").ok());
  auto t = hub->ReadFrame();
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->opcode, 1);
  EXPECT_EQ(t->payload, R"({"op":"not a control message"})");
  auto b = hub->ReadFrame();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->opcode, 2);
  EXPECT_EQ(b->payload, std::string("\x01\x02\xff", 3));
  auto u = hub->ReadFrame();
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->opcode, 2) << "a binary frame stays binary whatever its bytes";
  auto j1 = json->ReadFrame();
  ASSERT_TRUE(j1.ok());
  EXPECT_EQ(WithoutEpoch(j1->payload), R"({"topic":"room.hub","seq":1,"text":"{\"op\":\"not a control message\"}"})");
  auto j2 = json->ReadFrame();
  ASSERT_TRUE(j2.ok());
  EXPECT_EQ(WithoutEpoch(j2->payload), R"({"topic":"room.hub","seq":2,"b64":"AQL/"})");
  auto [status, body] = Upgrade(absl::StrCat("/ws?format=raw&publish=user.x.inbox&token=", token));
  EXPECT_EQ(status, 403);
  EXPECT_THAT(body, HasSubstr("not permitted to publish to 'user.x.inbox'"));
  EXPECT_EQ(Upgrade(absl::StrCat("/ws?publish=room.hub&token=", token)).first, 400) << "needs format=raw";
  CheckWitness();
}

TEST_F(SecurityTest, ATokenThatRunsOutClosesWith4002UnlessRefreshedForTheSameSubject) {
  StartWithKeys({"--jwt_leeway=0s"});
  auto c = Raw(absl::StrCat("/ws?topics=room.1&token=", SignToken("HS256", kSecret, Claims("r", 2))));
  ASSERT_TRUE(c);
  // Another subject: refused, and the connection keeps its first token.
  EXPECT_THAT(Ask(c.get(), absl::StrCat(R"({"op":"refresh","id":1,"token":")",
                                        SignToken("HS256", kSecret, Claims("someone-else", 60)), R"("})")),
              HasSubstr("another subject"));
  auto rest = c->ReadUntilEnd(absl::Seconds(10));
  ASSERT_FALSE(rest.frames.empty());
  EXPECT_EQ(rest.frames.back().close_code(), 4002);
  EXPECT_EQ(rest.frames.back().close_reason(), "token expired");

  auto d = Raw(absl::StrCat("/ws?topics=room.1,user.r.inbox&token=", SignToken("HS256", kSecret, Claims("r", 2))));
  ASSERT_TRUE(d);
  // The same subject with fewer permissions: what it no longer permits goes.
  std::string narrower = SignToken(
      "HS256", kSecret,
      absl::StrCat(R"({"sub":"r","iss":")", kIssuer, R"(","aud":")", kAudience, R"(","exp":)",
                   UnixNow(3600), R"(,"subscribe":["room.*"]})"));
  EXPECT_EQ(Ask(d.get(), absl::StrCat(R"({"op":"refresh","id":2,"token":")", narrower, R"("})")),
            R"({"id":2,"ok":true,"unsubscribed":["user.r.inbox"]})");
  // Past the first token's exp, still open and served.
  absl::SleepFor(absl::Seconds(3));  // the behaviour under test is what happens after a time
  MustPublish("room.1", "still");
  auto f = d->ReadFrame();
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(f->payload, HasSubstr("still"));
  CheckWitness();
}

TEST_F(SecurityTest, AdminCallsFindAUsersConnections) {
  StartWithKeys();
  std::string token = SignToken("HS256", kSecret, Claims("carol"));
  auto c1 = Raw(absl::StrCat("/ws?token=", token));
  auto c2 = Raw(absl::StrCat("/ws?token=", token));
  ASSERT_TRUE(c1 && c2);
  grpc::ClientContext ctx;
  v1::DisconnectRequest req;
  req.set_user("carol");
  req.set_code(4100);
  v1::DisconnectResponse resp;
  ASSERT_TRUE(stub_->Disconnect(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.connections(), 2u);
  for (auto* c : {c1.get(), c2.get()}) {
    auto f = c->ReadFrame();
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->close_code(), 4100);
  }
  CheckWitness();
}

TEST_F(SecurityTest, SighupRotatesTheKeys) {
  StartWithKeys();
  const std::string next = "the-next-secret-after-rotation";
  std::string new_token = SignToken("HS256", next, Claims("rot"));
  EXPECT_EQ(Upgrade(absl::StrCat("/ws?token=", new_token)).first, 401);
  std::ofstream(secret_file_) << next << "\n";
  ASSERT_EQ(kill(node_->pid(), SIGHUP), 0);
  EXPECT_TRUE(WaitFor([&] { return Upgrade(absl::StrCat("/ws?token=", new_token)).first == 101; }));
  EXPECT_EQ(Upgrade(absl::StrCat("/ws?token=", SignToken("HS256", kSecret, Claims("old")))).first, 401);
  EXPECT_THAT(node_->Stderr(), HasSubstr("reloaded the token keys, API tokens"));
  CheckWitness() ;
}

TEST_F(SecurityTest, ApiTokensGuardEveryFanoutCallButNotHealthOrReflection) {
  Start({absl::StrCat("--grpc_token_file=", WriteTempFile("api", "admin-token\n")),
         absl::StrCat("--grpc_publish_token_file=", WriteTempFile("pub", "publish-token"))});
  auto call = [&](const std::string& token, auto rpc) {
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    return rpc(&ctx);
  };
  auto publish = [&](grpc::ClientContext* ctx) {
    v1::PublishRequest req;
    req.set_topic("t");
    v1::PublishResponse resp;
    return stub_->Publish(ctx, req, &resp);
  };
  auto stats = [&](grpc::ClientContext* ctx) {
    v1::GetStatsResponse resp;
    return stub_->GetStats(ctx, v1::GetStatsRequest(), &resp);
  };
  EXPECT_EQ(call("", publish).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("wrong", publish).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("admin-token-and-more", publish).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(call("publish-token", publish).ok());
  EXPECT_TRUE(call("admin-token", publish).ok());
  grpc::Status denied = call("publish-token", stats);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.error_message(), HasSubstr("may only publish"));
  EXPECT_TRUE(call("admin-token", stats).ok());
  // Streams too.
  grpc::ClientContext sctx;
  auto stream = stub_->PublishStream(&sctx);
  v1::PublishResult r;
  EXPECT_FALSE(stream->Read(&r));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext wctx;
  wctx.AddMetadata("authorization", "Bearer publish-token");
  auto watch = stub_->Watch(&wctx, v1::WatchRequest());
  v1::WatchEvent e;
  EXPECT_FALSE(watch->Read(&e));
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // Health answered without a token (FanoutdProcess waited on it), and so
  // is reflection.
  auto reflection = grpc::reflection::v1::ServerReflection::NewStub(node_->channel());
  grpc::ClientContext rctx;
  auto info = reflection->ServerReflectionInfo(&rctx);
  grpc::reflection::v1::ServerReflectionRequest list;
  list.set_list_services("");
  ASSERT_TRUE(info->Write(list));
  grpc::reflection::v1::ServerReflectionResponse services;
  ASSERT_TRUE(info->Read(&services));
  EXPECT_GE(services.list_services_response().service_size(), 3);
  info->WritesDone();
  EXPECT_TRUE(info->Finish().ok());
  // Refusals are counted, by the code they got.
  EXPECT_EQ(Metric("fanout_grpc_auth_failures_total{reason=\"unauthenticated\"}"), 4);
  EXPECT_EQ(Metric("fanout_grpc_auth_failures_total{reason=\"permission_denied\"}"), 2);
}

TEST_F(SecurityTest, UnreadableKeyFilesStopTheNodeWithOneLine) {
  auto p = ::fanout::testing::FanoutdProcess::Start({"--jwt_public_key_file=/nonexistent.pem"});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("--jwt_public_key_file=/nonexistent.pem"));
  std::string not_a_key = WriteTempFile("bad.pem", "hello\n");
  auto q = ::fanout::testing::FanoutdProcess::Start({absl::StrCat("--jwt_public_key_file=", not_a_key)});
  ASSERT_FALSE(q.ok());
  EXPECT_THAT(std::string(q.status().message()), HasSubstr("not a PEM public key"));
}

}  // namespace
}  // namespace fanout
