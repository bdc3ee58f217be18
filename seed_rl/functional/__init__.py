"""Pure tensor functions of the learner: V-trace targets and the IMPALA losses.

``seed_rl.functional.vtrace`` computes V-trace (Espeholt et al. 2018); ``seed_rl.functional.loss``
holds the policy-gradient, baseline and entropy losses. Both need torch (the ``learner`` extra);
actors never import this package.
"""

from seed_rl.functional import loss, vtrace

__all__ = ["loss", "vtrace"]
