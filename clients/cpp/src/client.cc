#include "client.h"

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "wire.h"

namespace seed_rl {
namespace {

using Clock = std::chrono::steady_clock;

constexpr double kHandshakeTimeoutS = 30.0;
constexpr double kBackoffBaseS = 0.1;

double Now() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

// A failed RPC: its status says why.
struct RpcError {
  grpc::Status status;
};

std::string ReadPem(const std::string& path, const std::string& what) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw PermanentError("cannot read " + what + " '" + path + "': " + std::strerror(errno));
  }
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

bool IsLoopback(const std::string& address) {
  const std::string host = address.substr(0, address.rfind(':'));
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host == "[::1]";
}

// Where a redirect sends the actor: its "host:port", or the dialled host with its ":port".
std::string RedirectTarget(const std::string& redirect, const std::string& dialled) {
  if (!redirect.empty() && redirect[0] == ':') {
    return dialled.substr(0, dialled.rfind(':')) + redirect;
  }
  return redirect;
}

std::string Fixed(double value, int digits) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", digits, value);
  return text;
}

}  // namespace

bool IsPermanent(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNIMPLEMENTED:
      return true;
    default:
      return false;
  }
}

double BackoffDelay(int failures, double cap, std::mt19937_64& rng) {
  const double ceiling = std::min(cap, kBackoffBaseS * std::pow(2.0, std::min(failures, 30)));
  return ceiling * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
}

ActorClient::ActorClient(Options options)
    : options_(std::move(options)),
      envs_(options_.envs_per_actor, options_.seed, options_.actor_id),
      rng_(std::random_device{}()) {
  char hex[33];
  std::uniform_int_distribution<int> nibble(0, 15);
  for (int i = 0; i < 32; ++i) hex[i] = "0123456789abcdef"[nibble(rng_)];
  hex[32] = '\0';
  run_id_ = hex;  // new for each incarnation of this process
}

void ActorClient::Log(const std::string& message) const {
  std::fprintf(stderr, "seed-rl-cpp-actor: actor %s: %s\n", options_.actor_id.c_str(),
               message.c_str());
}

int ActorClient::Run() {
  int code;
  try {
    code = RunSessions();
  } catch (const PermanentError& error) {
    std::fprintf(stderr, "seed-rl-cpp-actor: error: actor %s: %s\n", options_.actor_id.c_str(),
                 error.what());
    code = kExitPermanent;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  finished_ = true;
  woken_.notify_all();
  return code;
}

void ActorClient::RequestStop(double cancel_after_s) {
  std::unique_lock<std::mutex> lock(mutex_);
  stop_ = true;
  woken_.notify_all();
  if (woken_.wait_for(lock, std::chrono::duration<double>(cancel_after_s),
                      [this] { return finished_; })) {
    return;
  }
  cancel_all_ = true;  // the call in flight did not finish in time: cancel it
  if (call_ != nullptr) call_->TryCancel();
}

void ActorClient::SetCall(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mutex_);
  call_ = context;
  if (context != nullptr && cancel_all_) context->TryCancel();
}

void ActorClient::Wait(double seconds) {
  std::unique_lock<std::mutex> lock(mutex_);
  woken_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return stop_.load(); });
}

void ActorClient::AddAuth(grpc::ClientContext* context) const {
  if (!options_.auth_token.empty()) {
    context->AddMetadata(kAuthMetadataKey, "Bearer " + options_.auth_token);
  }
}

std::shared_ptr<grpc::Channel> ActorClient::OpenChannel(const std::string& target) const {
  grpc::ChannelArguments args;
  const int limit = static_cast<int>(std::min<int64_t>(max_message_bytes_, INT_MAX));
  args.SetMaxReceiveMessageSize(limit);
  args.SetMaxSendMessageSize(limit);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // A fresh connection per attempt: our backoff paces reconnects, not a subchannel's
  // backoff shared with the channels of earlier attempts.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, credentials_, args);
}

int ActorClient::RunSessions() {
  if (!options_.tls_ca.empty() || !options_.tls_cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!options_.tls_ca.empty()) ssl.pem_root_certs = ReadPem(options_.tls_ca, "--tls-ca");
    if (!options_.tls_cert.empty()) {
      ssl.pem_cert_chain = ReadPem(options_.tls_cert, "--tls-cert");
      ssl.pem_private_key = ReadPem(options_.tls_key, "--tls-key");
    }
    credentials_ = grpc::SslCredentials(ssl);
  } else {
    credentials_ = grpc::InsecureChannelCredentials();
    if (!options_.auth_token.empty() && !IsLoopback(options_.learner)) {
      Log("warning: --auth-token is sent without TLS (no --tls-ca); anyone on the network "
          "path can read it");
    }
  }
  Log("made " + std::to_string(envs_.num_envs()) +
      " x CartPole-v1 (C++), observations (4,) float32, actions Discrete(2)");
  int failures = 0;
  last_status_ = Now();
  while (!stop_) {
    progressed_ = false;
    std::string reason;
    try {
      auto channel = OpenChannel(options_.learner);
      auto stub = v1::Learner::NewStub(channel);
      v1::HandshakeResponse handshake = Handshake(*stub, false);
      if (!handshake.redirect_address().empty() && handshake.session_id().empty()) {
        const std::string target = RedirectTarget(handshake.redirect_address(), options_.learner);
        Log("the learner at " + options_.learner + " sends this actor to " + target);
        channel = OpenChannel(target);
        stub = v1::Learner::NewStub(channel);
        handshake = Handshake(*stub, true);
      }
      switch (Stream(*stub, handshake)) {
        case Outcome::kTrainingOver:
          Log("the learner says training is over; exiting");
          return kExitOk;
        case Outcome::kStopped:
          Log("stopped");
          return kExitOk;
        case Outcome::kEnded:
          reason = "the learner ended the stream";
          break;
      }
    } catch (const RpcError& error) {
      if (stop_) break;
      const std::string code = StatusCodeName(error.status.error_code());
      if (IsPermanent(error.status.error_code())) {
        throw PermanentError("the learner at " + options_.learner + " refused this actor: " +
                             code + ": " + error.status.error_message() + " (not retrying)");
      }
      reason = code + ": " + error.status.error_message();
    }
    if (progressed_) failures = 0;
    const double delay = BackoffDelay(failures, options_.reconnect_max_backoff, rng_);
    ++failures;
    Log(std::string(progressed_ ? "lost the learner" : "cannot reach the learner") + " at " +
        options_.learner + " (" + reason + "); reconnecting in " + Fixed(delay, 2) +
        " s (attempt " + std::to_string(failures) + ")");
    Wait(delay);
  }
  Log("stopped");
  return kExitOk;
}

v1::HandshakeResponse ActorClient::Handshake(v1::Learner::Stub& stub, bool redirected) {
  v1::HandshakeRequest request;
  request.set_protocol_version(kProtocolVersion);
  request.set_actor_id(options_.actor_id);
  request.set_run_id(run_id_);
  request.set_num_envs(static_cast<uint32_t>(envs_.num_envs()));
  request.set_env_id("CartPole-v1");
  request.set_env_kwargs_json("{}");
  *request.mutable_observation_space() = CartPoleObservationSpace();
  *request.mutable_action_space() = CartPoleActionSpace();
  request.set_redirected(redirected);

  grpc::ClientContext context;
  AddAuth(&context);
  context.set_deadline(std::chrono::system_clock::now() +  // gRPC takes system_clock
                       std::chrono::milliseconds(static_cast<int64_t>(kHandshakeTimeoutS * 1000)));
  v1::HandshakeResponse response;
  SetCall(&context);
  const grpc::Status status = stub.Handshake(&context, request, &response);
  SetCall(nullptr);
  if (!status.ok()) throw RpcError{status};
  if (response.max_message_bytes() > 0) {
    max_message_bytes_ = static_cast<int64_t>(
        std::min<uint64_t>(response.max_message_bytes(), uint64_t{1} << 62));
    if (envs_.WorstRequestBytes() > max_message_bytes_) {
      throw PermanentError("a step of " + std::to_string(envs_.num_envs()) +
                           " environments can take " + std::to_string(envs_.WorstRequestBytes()) +
                           " bytes, more than the learner accepts (" +
                           std::to_string(max_message_bytes_) +
                           "); lower --envs-per-actor or raise the learner's --max-message-bytes");
    }
  }
  if (!response.redirect_address().empty() && response.session_id().empty()) return response;
  Log("connected to the learner at " + options_.learner + " (session " + response.session_id() +
      ", CartPole-v1 x " + std::to_string(envs_.num_envs()) + " envs, policy version " +
      std::to_string(response.policy_version()) + ", learner " + response.learner_version() +
      ")");
  return response;
}

ActorClient::Outcome ActorClient::Stream(v1::Learner::Stub& stub,
                                         const v1::HandshakeResponse& handshake) {
  grpc::ClientContext context;
  AddAuth(&context);
  context.AddMetadata(kSessionMetadataKey, handshake.session_id());
  SetCall(&context);
  struct Clear {
    ActorClient* client;
    ~Clear() { client->SetCall(nullptr); }
  } clear{this};
  auto stream = stub.Step(&context);
  envs_.StartSession();  // the first message: x_0 alone
  v1::StepRequest request;
  v1::StepResponse response;
  std::vector<int> actions;
  while (true) {
    envs_.BuildRequest(&request);
    const auto sent = Clock::now();
    if (!stream->Write(request) || !stream->Read(&response)) break;  // Finish says why
    round_trips_ms_.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
    progressed_ = true;
    if (response.training_over() || stop_) {
      const bool over = response.training_over();
      stream->WritesDone();  // half-close; the learner ends the stream
      while (stream->Read(&response)) {
      }
      stream->Finish();
      return over ? Outcome::kTrainingOver : Outcome::kStopped;
    }
    const std::string error =
        DecodeDiscreteActions(response.actions(), envs_.num_envs(), CartPole::kNumActions, &actions);
    if (!error.empty()) {
      context.TryCancel();
      stream->Finish();
      throw PermanentError(error);
    }
    envs_.Step(actions);
    Status(true);
  }
  const grpc::Status status = stream->Finish();
  if (status.ok()) return Outcome::kEnded;
  throw RpcError{status};
}

void ActorClient::Status(bool connected) {
  if (options_.status_every <= 0) return;
  const double now = Now();
  if (now - last_status_ < options_.status_every) return;
  const double elapsed = now - last_status_;
  const uint64_t steps = envs_.env_steps() - status_steps_;
  const uint64_t episodes = envs_.episodes() - status_episodes_;
  const double returns = envs_.return_sum() - status_return_sum_;
  std::string trip = "";
  if (!round_trips_ms_.empty()) {
    auto& trips = round_trips_ms_;
    std::sort(trips.begin(), trips.end());
    const double p50 = trips[trips.size() / 2];
    const double p99 = trips[std::min(trips.size() - 1, trips.size() * 99 / 100)];
    trip = " | round trip p50 " + Fixed(p50, 2) + " ms, p99 " + Fixed(p99, 2) + " ms";
  }
  Log(std::string("status: ") + (connected ? "connected" : "not connected") + " | " +
      Fixed(steps / elapsed, 0) + " env steps/s | " + std::to_string(envs_.episodes()) +
      " episodes (+" + std::to_string(episodes) + ") | mean return " +
      (episodes ? Fixed(returns / episodes, 1) : std::string("-")) + trip);
  last_status_ = now;
  status_steps_ = envs_.env_steps();
  status_episodes_ = envs_.episodes();
  status_return_sum_ = envs_.return_sum();
  round_trips_ms_.clear();
}

}  // namespace seed_rl
