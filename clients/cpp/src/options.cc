#include "options.h"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <vector>

namespace seed_rl {
namespace {

int64_t ParseInt(const std::string& text, const std::string& what, int64_t min) {
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE) {
    throw UsageError(what + ": expected an integer, got '" + text + "'");
  }
  if (value < min) {
    throw UsageError(what + ": must be at least " + std::to_string(min) + ", got " + text);
  }
  return value;
}

double ParseSeconds(const std::string& text, const std::string& what) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(value) || value < 0) {
    throw UsageError(what + ": expected seconds (a number >= 0), got '" + text + "'");
  }
  return value;
}

struct Flag {
  const char* name;  // without "--"
  const char* variable;  // SEED_RL_* or nullptr
  std::function<void(Options&, const std::string&, const std::string&)> set;
};

std::vector<Flag> Flags() {
  return {
      {"learner", "SEED_RL_LEARNER",
       [](Options& o, const std::string& v, const std::string& w) {
         if (v.rfind(':') == std::string::npos || v.back() == ':') {
           throw UsageError(w + ": expected HOST:PORT, got '" + v + "'");
         }
         o.learner = v;
       }},
      {"env", "SEED_RL_ENV",
       [](Options& o, const std::string& v, const std::string& w) {
         if (v != "CartPole-v1") {
           throw UsageError(w + ": this C++ actor runs only CartPole-v1, got '" + v +
                            "' (run `seed-rl actors` for other environments)");
         }
         o.env = v;
       }},
      {"envs-per-actor", "SEED_RL_ENVS_PER_ACTOR",
       [](Options& o, const std::string& v, const std::string& w) {
         o.envs_per_actor = ParseInt(v, w, 1);
       }},
      {"actor-id", nullptr,
       [](Options& o, const std::string& v, const std::string& w) {
         if (v.empty()) throw UsageError(w + ": must not be empty");
         o.actor_id = v;
       }},
      {"actor-id-prefix", "SEED_RL_ACTOR_ID_PREFIX",
       [](Options& o, const std::string& v, const std::string&) { o.actor_id_prefix = v; }},
      {"actor-index", nullptr,
       [](Options& o, const std::string& v, const std::string& w) {
         o.actor_index = ParseInt(v, w, 0);
       }},
      {"seed", "SEED_RL_SEED",
       [](Options& o, const std::string& v, const std::string& w) {
         o.seed = static_cast<uint64_t>(ParseInt(v, w, LLONG_MIN));
       }},
      {"reconnect-max-backoff", "SEED_RL_RECONNECT_MAX_BACKOFF",
       [](Options& o, const std::string& v, const std::string& w) {
         o.reconnect_max_backoff = ParseSeconds(v, w);
       }},
      {"status-every", "SEED_RL_STATUS_EVERY",
       [](Options& o, const std::string& v, const std::string& w) {
         o.status_every = ParseSeconds(v, w);
       }},
      {"auth-token", "SEED_RL_AUTH_TOKEN",
       [](Options& o, const std::string& v, const std::string&) { o.auth_token = v; }},
      {"tls-ca", "SEED_RL_TLS_CA",
       [](Options& o, const std::string& v, const std::string&) { o.tls_ca = v; }},
      {"tls-cert", "SEED_RL_TLS_CERT",
       [](Options& o, const std::string& v, const std::string&) { o.tls_cert = v; }},
      {"tls-key", "SEED_RL_TLS_KEY",
       [](Options& o, const std::string& v, const std::string&) { o.tls_key = v; }},
      {"dump-cartpole", nullptr,
       [](Options& o, const std::string& v, const std::string& w) {
         o.dump_cartpole = ParseInt(v, w, 1);
       }},
  };
}

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

std::string Usage() {
  return R"(usage: seed-rl-cpp-actor [--learner HOST:PORT] [--envs-per-actor K] [flags]

One seed-rl actor process in C++: K CartPole-v1 environments (gymnasium's dynamics) stepped
in lockstep for a seed-rl learner (docs/protocol.md). Exits 0 when the learner says
training is over (or on SIGINT/SIGTERM), 2 when the learner refuses it for good or the
command line is wrong, 1 on an unexpected error.

flags (environment variable in brackets; a flag overrides it):
  --learner HOST:PORT          learner address [SEED_RL_LEARNER] (default 127.0.0.1:50051)
  --envs-per-actor K           environments in this process [SEED_RL_ENVS_PER_ACTOR] (32)
  --env ENV                    only CartPole-v1 [SEED_RL_ENV]
  --actor-id ID                the actor id (default PREFIX-INDEX)
  --actor-id-prefix PREFIX     [SEED_RL_ACTOR_ID_PREFIX] (default: the host name)
  --actor-index N              this process's index, part of the default id (0)
  --seed N                     base seed of the environments [SEED_RL_SEED] (0)
  --reconnect-max-backoff S    cap of the reconnect backoff, seconds (2)
                               [SEED_RL_RECONNECT_MAX_BACKOFF]
  --status-every S             seconds between status lines, 0: never [SEED_RL_STATUS_EVERY] (10)
  --auth-token TOKEN           sent as 'authorization: Bearer TOKEN' [SEED_RL_AUTH_TOKEN]
  --tls-ca PEM                 CA of the learner's certificate: TLS [SEED_RL_TLS_CA]
  --tls-cert PEM, --tls-key PEM  client certificate and key (mutual TLS)
                               [SEED_RL_TLS_CERT, SEED_RL_TLS_KEY]
  --dump-cartpole STEPS        print STEPS steps of one CartPole (JSON lines) and exit
  --help                       this text
)";
}

Options ParseOptions(int argc, char** argv, bool* help) {
  Options options;
  *help = false;
  const std::vector<Flag> flags = Flags();
  for (const Flag& flag : flags) {
    if (flag.variable == nullptr) continue;
    if (const char* value = std::getenv(flag.variable); value != nullptr && *value != '\0') {
      flag.set(options, value, flag.variable);
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      *help = true;
      return options;
    }
    if (arg.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + arg + "'");
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Flag* found = nullptr;
    for (const Flag& flag : flags) {
      if (name == flag.name) found = &flag;
    }
    if (found == nullptr) throw UsageError("unknown flag --" + name + " (see --help)");
    if (!has_value) {
      if (i + 1 >= argc) throw UsageError("--" + name + " needs a value");
      value = argv[++i];
    }
    found->set(options, value, "--" + name);
  }
  if (!options.tls_key.empty() != !options.tls_cert.empty()) {
    throw UsageError("--tls-cert and --tls-key go together (mutual TLS): give both or neither");
  }
  if (options.actor_id.empty()) {
    const std::string prefix = options.actor_id_prefix.empty() ? HostName()
                                                               : options.actor_id_prefix;
    options.actor_id = prefix + "-" + std::to_string(options.actor_index);
  }
  return options;
}

}  // namespace seed_rl
