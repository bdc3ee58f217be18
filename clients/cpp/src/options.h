// The command line of seed-rl-cpp-actor: the flags of `seed-rl actors` that one C++ actor
// process needs, with the same names, defaults and SEED_RL_* environment variables
// (precedence: default < SEED_RL_<FIELD> < flag).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace seed_rl {

struct Options {
  std::string learner = "127.0.0.1:50051";  // --learner, SEED_RL_LEARNER
  std::string env = "CartPole-v1";          // --env, SEED_RL_ENV (only CartPole-v1 here)
  int64_t envs_per_actor = 32;              // --envs-per-actor, SEED_RL_ENVS_PER_ACTOR
  std::string actor_id;                     // --actor-id; default PREFIX-INDEX
  std::string actor_id_prefix;              // --actor-id-prefix; default the host name
  int64_t actor_index = 0;                  // --actor-index
  uint64_t seed = 0;                        // --seed, SEED_RL_SEED
  double reconnect_max_backoff = 2.0;       // --reconnect-max-backoff, seconds
  double status_every = 10.0;               // --status-every, seconds (0: never)
  std::string auth_token;                   // --auth-token, SEED_RL_AUTH_TOKEN
  std::string tls_ca, tls_cert, tls_key;    // --tls-ca, --tls-cert, --tls-key
  int64_t dump_cartpole = 0;                // --dump-cartpole STEPS: print a trajectory, exit
};

// A command line the actor cannot run; what() says what was wrong and what to do.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Defaults, then SEED_RL_* variables of the environment, then the flags. Throws
// UsageError. Sets *help when --help was given (the caller prints Usage()).
Options ParseOptions(int argc, char** argv, bool* help);
std::string Usage();

}  // namespace seed_rl
