"""Pure tensor functions of the learner: V-trace targets and the IMPALA losses.

``seed_rl.functional.vtrace`` computes V-trace (Espeholt et al. 2018); ``seed_rl.functional.loss``
holds the policy-gradient, baseline and entropy losses; ``seed_rl.functional.categorical`` the
softmax policy's log-probabilities and entropies. All need torch (the ``learner`` extra); actors
never import this package.
"""

from seed_rl.functional import categorical, loss, vtrace

__all__ = ["categorical", "loss", "vtrace"]
