// The gRPC client of one C++ actor (docs/protocol.md): the channel (TLS or plaintext,
// keepalive, message limits), the auth token on every RPC, the handshake (and a replica's
// redirect), the Step stream with one request in flight, reconnects with capped, jittered
// exponential backoff, and what each status code means: a permanent one ends the actor
// with exit code 2 and the learner's message, every other is retried.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "env_loop.h"
#include "options.h"
#include "seed_rl/v1/seed_rl.grpc.pb.h"

namespace seed_rl {

constexpr int kExitOk = 0;
constexpr int kExitCrash = 1;      // an unexpected error (a bug)
constexpr int kExitPermanent = 2;  // refused for good, or a setup that cannot work

// Retrying cannot help; what() says what to change.
class PermanentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Whether a retry cannot fix a call that failed with `code` (docs/protocol.md, "Status
// codes": INVALID_ARGUMENT, FAILED_PRECONDITION, UNAUTHENTICATED, PERMISSION_DENIED,
// UNIMPLEMENTED). Every other code is retried with backoff.
bool IsPermanent(grpc::StatusCode code);

// Seconds before reconnect attempt failures + 1: min(cap, 0.1 * 2^failures) * U(0.5, 1).
double BackoffDelay(int failures, double cap, std::mt19937_64& rng);

class ActorClient {
 public:
  explicit ActorClient(Options options);

  // Until training is over (kExitOk), a stop (kExitOk), or a permanent error
  // (kExitPermanent, after printing it).
  int Run();
  // From another thread (a signal): end after the current step; `cancel_after_s` later,
  // cancel the call in flight if it has not finished.
  void RequestStop(double cancel_after_s);

 private:
  enum class Outcome { kTrainingOver, kStopped, kEnded };

  int RunSessions();
  std::shared_ptr<grpc::Channel> OpenChannel(const std::string& target) const;
  v1::HandshakeResponse Handshake(v1::Learner::Stub& stub, bool redirected);
  Outcome Stream(v1::Learner::Stub& stub, const v1::HandshakeResponse& handshake);
  void AddAuth(grpc::ClientContext* context) const;
  void SetCall(grpc::ClientContext* context);
  void Wait(double seconds);
  void Status(bool connected);
  void Log(const std::string& message) const;

  Options options_;
  std::string run_id_;
  EnvLoop envs_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  int64_t max_message_bytes_ = int64_t{1} << 30;  // until a handshake tells the learner's
  std::mt19937_64 rng_;
  bool progressed_ = false;  // the current session got at least one answer

  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable woken_;
  grpc::ClientContext* call_ = nullptr;  // the call in flight, for RequestStop
  bool cancel_all_ = false;
  bool finished_ = false;  // Run() returned

  // status line
  double last_status_ = 0;
  uint64_t status_steps_ = 0, status_episodes_ = 0;
  double status_return_sum_ = 0;
  std::vector<double> round_trips_ms_;
};

}  // namespace seed_rl
