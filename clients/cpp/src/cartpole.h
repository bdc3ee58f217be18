// CartPole-v1 as gymnasium 1.x makes it: gymnasium.make("CartPole-v1") is
// CartPoleEnv (Euler integration, force 10 N, tau 0.02 s, terminated beyond 12 degrees or
// 2.4 m) inside a TimeLimit of 500 steps. The state is float64 and every step computes
// what gymnasium's step() computes, in the same order of operations; the observation is
// the state cast to float32, as gymnasium returns it.
#pragma once

#include <array>
#include <cstdint>
#include <random>

namespace seed_rl {

class CartPole {
 public:
  static constexpr int kObservationSize = 4;  // x, x_dot, theta, theta_dot
  static constexpr int kNumActions = 2;       // 0: push left, 1: push right
  static constexpr int kMaxEpisodeSteps = 500;

  using State = std::array<double, kObservationSize>;
  using Observation = std::array<float, kObservationSize>;

  struct Step {
    Observation observation;
    double reward;
    bool terminated;  // the pole fell or the cart left the track
    bool truncated;   // the 500-step time limit
  };

  // The Box bounds of the observation space, float32 as gymnasium's:
  // high = [4.8, inf, 0.41887903 (24 degrees), inf], low = -high.
  static std::array<float, kObservationSize> ObservationHigh();

  explicit CartPole(uint64_t seed);

  // A new episode: each state variable uniform in [-0.05, 0.05) from this env's RNG.
  Observation Reset();
  // One step with action 0 or 1 (anything else is the caller's bug).
  Step Apply(int action);

  const State& state() const { return state_; }
  void set_state(const State& state) { state_ = state; }
  int elapsed_steps() const { return elapsed_steps_; }

  static Observation ToObservation(const State& state);

 private:
  std::mt19937_64 rng_;
  State state_{};
  int elapsed_steps_ = 0;
};

}  // namespace seed_rl
