// seed-rl-cpp-actor: one actor process of K CartPole-v1 environments for a seed-rl learner
// (docs/protocol.md; clients/cpp/README.md). Exit codes: 0 training over or stopped by
// SIGINT / SIGTERM, 1 an unexpected error, 2 a permanent error or a bad command line.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <exception>
#include <random>
#include <string>
#include <thread>

#include "cartpole.h"
#include "client.h"
#include "options.h"

namespace {

constexpr double kStopGraceS = 2.0;  // after a stop, how long the call in flight may take

void PrintState(const char* key, const seed_rl::CartPole::State& state) {
  std::printf("\"%s\": [%.17g, %.17g, %.17g, %.17g]", key, state[0], state[1], state[2],
              state[3]);
}

void PrintObservation(const seed_rl::CartPole::Observation& observation) {
  std::printf("\"observation\": [%.9g, %.9g, %.9g, %.9g]", observation[0], observation[1],
              observation[2], observation[3]);
}

// --dump-cartpole STEPS: one CartPole seeded with --seed, stepped STEPS times, one JSON line
// per reset and per step (float64 states with 17 digits, float32 observations with 9: both
// exact), for comparing with gymnasium step by step. Even episodes follow a balancing
// controller (mostly reaching the 500-step time limit), odd ones random actions (the pole
// falls): both ends of an episode occur.
int DumpCartPole(const seed_rl::Options& options) {
  seed_rl::CartPole env(options.seed);
  std::mt19937_64 rng(options.seed + 1);
  std::bernoulli_distribution coin(0.5);
  int episode = 0;
  auto reset = [&] {
    const auto observation = env.Reset();
    std::printf("{\"reset\": true, ");
    PrintState("state", env.state());
    std::printf(", ");
    PrintObservation(observation);
    std::printf("}\n");
  };
  reset();
  for (int64_t t = 0; t < options.dump_cartpole; ++t) {
    const auto state = env.state();
    const bool balance = episode % 2 == 0;
    const int action = balance ? (state[2] + 0.5 * state[3] + 0.01 * state[0] + 0.1 * state[1] > 0)
                               : coin(rng);
    const auto step = env.Apply(action);
    std::printf("{\"action\": %d, ", action);
    PrintState("state", state);
    std::printf(", ");
    PrintState("next_state", env.state());
    std::printf(", ");
    PrintObservation(step.observation);
    std::printf(", \"reward\": %.17g, \"terminated\": %s, \"truncated\": %s}\n", step.reward,
                step.terminated ? "true" : "false", step.truncated ? "true" : "false");
    if (step.terminated || step.truncated) {
      ++episode;
      reset();
    }
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  seed_rl::Options options;
  try {
    bool help = false;
    options = seed_rl::ParseOptions(argc, argv, &help);
    if (help) {
      std::fputs(seed_rl::Usage().c_str(), stdout);
      return 0;
    }
  } catch (const seed_rl::UsageError& error) {
    std::fprintf(stderr, "seed-rl-cpp-actor: error: %s\n", error.what());
    return seed_rl::kExitPermanent;
  }
  if (options.dump_cartpole > 0) return DumpCartPole(options);

  // SIGINT / SIGTERM go to one thread, which asks the client to stop (no async-signal code).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  try {
    // Never destroyed: the signal thread may still be returning from RequestStop while
    // main returns.
    auto* client = new seed_rl::ActorClient(options);
    std::thread([client, signals] {
      int signal_number = 0;
      if (sigwait(&signals, &signal_number) != 0) return;
      std::fprintf(stderr, "seed-rl-cpp-actor: received %s; stopping\n",
                   signal_number == SIGINT ? "SIGINT" : "SIGTERM");
      client->RequestStop(kStopGraceS);
    }).detach();
    return client->Run();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "seed-rl-cpp-actor: error: unexpected: %s\n", error.what());
    return seed_rl::kExitCrash;
  }
}
