#include "env_loop.h"

#include <algorithm>
#include <random>

#include "wire.h"

namespace seed_rl {
namespace {

constexpr int kObs = CartPole::kObservationSize;

// Distinct, reproducible seeds: one seed sequence per (base seed, actor id, env index).
uint64_t EnvSeed(uint64_t seed, const std::string& actor_id, uint64_t index) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a of the actor id
  for (unsigned char c : actor_id) hash = (hash ^ c) * 1099511628211ull;
  std::seed_seq sequence{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                         static_cast<uint32_t>(hash), static_cast<uint32_t>(hash >> 32),
                         static_cast<uint32_t>(index)};
  uint32_t words[2];
  sequence.generate(words, words + 2);
  return (static_cast<uint64_t>(words[0]) << 32) | words[1];
}

}  // namespace

EnvLoop::EnvLoop(int64_t num_envs, uint64_t seed, const std::string& actor_id)
    : observations_(num_envs * kObs),
      rewards_(num_envs),
      terminated_(num_envs),
      truncated_(num_envs),
      returns_(num_envs),
      lengths_(num_envs) {
  envs_.reserve(num_envs);
  for (int64_t i = 0; i < num_envs; ++i) {
    envs_.emplace_back(EnvSeed(seed, actor_id, i));
    const auto observation = envs_.back().Reset();
    std::copy(observation.begin(), observation.end(), observations_.begin() + i * kObs);
  }
}

int64_t EnvLoop::WorstRequestBytes() const {
  return 2 * num_envs() * kObs * static_cast<int64_t>(sizeof(float)) + 64 * num_envs() + 1024;
}

void EnvLoop::StartSession() {
  std::fill(rewards_.begin(), rewards_.end(), 0.0f);
  std::fill(terminated_.begin(), terminated_.end(), 0);
  std::fill(truncated_.begin(), truncated_.end(), 0);
  final_envs_.clear();
  final_observations_.clear();
  finished_.clear();
}

void EnvLoop::BuildRequest(v1::StepRequest* request) const {
  request->Clear();
  const int64_t k = num_envs();
  EncodeFloat32({k, kObs}, observations_.data(), request->mutable_observations());
  EncodeFloat32({k}, rewards_.data(), request->mutable_rewards());
  EncodeBool({k}, terminated_, request->mutable_terminated());
  EncodeBool({k}, truncated_, request->mutable_truncated());
  if (!final_envs_.empty()) {  // otherwise absent (docs/protocol.md allows both)
    for (uint32_t env : final_envs_) request->add_final_observation_envs(env);
    EncodeFloat32({static_cast<int64_t>(final_envs_.size()), kObs}, final_observations_.data(),
                  request->mutable_final_observations());
  }
  for (const Episode& episode : finished_) {
    v1::EpisodeStats* stats = request->add_episodes();
    stats->set_env_index(episode.env_index);
    stats->set_episode_return(episode.episode_return);
    stats->set_episode_length(episode.episode_length);
  }
}

void EnvLoop::Step(const std::vector<int>& actions) {
  final_envs_.clear();
  final_observations_.clear();
  finished_.clear();
  for (int64_t i = 0; i < num_envs(); ++i) {
    CartPole& env = envs_[i];
    const CartPole::Step step = env.Apply(actions[i]);
    returns_[i] += step.reward;
    lengths_[i] += 1;
    rewards_[i] = static_cast<float>(step.reward);
    terminated_[i] = step.terminated;
    truncated_[i] = step.truncated;
    CartPole::Observation observation = step.observation;
    if (step.terminated || step.truncated) {
      if (step.truncated && !step.terminated) {  // the learner bootstraps from it
        final_envs_.push_back(static_cast<uint32_t>(i));
        final_observations_.insert(final_observations_.end(), observation.begin(),
                                   observation.end());
      }
      finished_.push_back({static_cast<uint32_t>(i), returns_[i], lengths_[i]});
      ++episodes_;
      return_sum_ += returns_[i];
      returns_[i] = 0;
      lengths_[i] = 0;
      observation = env.Reset();  // x_{t+1} is the next episode's first
    }
    std::copy(observation.begin(), observation.end(), observations_.begin() + i * kObs);
  }
  env_steps_ += num_envs();
}

}  // namespace seed_rl
