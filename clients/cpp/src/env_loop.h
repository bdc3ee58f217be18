// K CartPole-v1 environments stepped in lockstep, and the buffers of the next StepRequest
// (docs/protocol.md, "The step stream"; the same loop as actors/env_loop.py).
//
// Slot convention: the request at stream step t carries x_t of every environment with the
// reward and terminated / truncated flags of the transition that LED to x_t; the response
// carries a_t. An environment whose episode ended is reset at once, so x_t is then its next
// episode's first observation; a truncated (and not terminated) one sends the true last
// observation of the old episode in final_observations. Each session's first message
// carries x_0 alone: rewards 0, no flags, no final observations, no episodes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cartpole.h"
#include "seed_rl/v1/seed_rl.pb.h"

namespace seed_rl {

class EnvLoop {
 public:
  // num_envs environments, env i seeded from (seed, actor_id, i) and reset once, here.
  EnvLoop(int64_t num_envs, uint64_t seed, const std::string& actor_id);

  int64_t num_envs() const { return static_cast<int64_t>(envs_.size()); }
  // An upper bound on one request's size: every env may be truncated at once (two
  // observations each), plus per-env scalars and framing.
  int64_t WorstRequestBytes() const;

  // The next request is a session's first: what an old session never answered is dropped,
  // the environments keep their state.
  void StartSession();
  // The StepRequest of stream step t: observations [K, 4] float32, rewards [K] float32,
  // terminated / truncated [K] bool, final observations [F, 4] of the F environments
  // truncated into x_t (absent when F = 0), the episodes that ended.
  void BuildRequest(v1::StepRequest* request) const;
  // Apply a_t (actions[i] for env i, 0 or 1) and fill the buffers of request t+1.
  void Step(const std::vector<int>& actions);

  // Totals since the start, for the status line.
  uint64_t env_steps() const { return env_steps_; }
  uint64_t episodes() const { return episodes_; }
  double return_sum() const { return return_sum_; }

 private:
  struct Episode {
    uint32_t env_index;
    double episode_return;
    uint64_t episode_length;
  };

  std::vector<CartPole> envs_;
  std::vector<float> observations_;  // x_t, [K, 4]
  std::vector<float> rewards_;       // [K]
  std::vector<uint8_t> terminated_, truncated_;
  std::vector<uint32_t> final_envs_;        // ascending
  std::vector<float> final_observations_;  // [len(final_envs_), 4]
  std::vector<Episode> finished_;
  std::vector<double> returns_;       // the running episode of each env
  std::vector<uint64_t> lengths_;
  uint64_t env_steps_ = 0, episodes_ = 0;
  double return_sum_ = 0;
};

}  // namespace seed_rl
