"""The observational causal inference (OCI) agent: plan -> Actor -> runner -> Critic, repeated.

>>> import causalflow.oci as oci
>>> sorted(oci.ESTIMANDS)
['ATE', 'ATO', 'ATT']

See ``docs/oci.md`` for how the loop works and the diagnostic thresholds. Importing this
package is light; its learners, plots and notebooks need the ``oci`` extra
(``pip install "causalflow[oci]"``) when they run.
"""

from .acic import evaluate as evaluate_acic
from .actor import Actor, ActorStep, RuleActor
from .critic import Critic, Critique, Proposal, RuleCritic, Verdict
from .diagnostics import Thresholds
from .learners import get_learner, learner_names, register_learner
from .llm import AnthropicClient, LLMActor, LLMClient, LLMCritic, OpenAIClient
from .loop import Iteration, OCIRun, run
from .plan import ESTIMANDS, Plan, prepare_data
from .runner import EstimandResult, SpecResult, run_spec
from .spec import Spec, apply_change
from .suite import evaluate_suite

__all__ = [
    "ESTIMANDS", "Actor", "ActorStep", "AnthropicClient", "Critic", "Critique", "EstimandResult",
    "Iteration", "LLMActor", "LLMClient", "LLMCritic", "OCIRun", "OpenAIClient", "Plan", "Proposal",
    "RuleActor", "RuleCritic", "Spec", "SpecResult", "Thresholds", "Verdict", "apply_change",
    "evaluate_acic", "evaluate_suite", "get_learner", "learner_names", "prepare_data", "register_learner",
    "run", "run_spec",
]
