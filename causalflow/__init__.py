"""causalflow: experiments and careful observational causal inference.

One grammar::

    import causalflow as cf
    effects = (cf.ExperimentData(df, intent_to_treat="assigned", cluster_by="store")
                 .add_metric(y=["sales", "visits"], exogenous_covariates=["pre_sales"])
                 .fit(cf.LinearModel)
                 .infer_effect(condition_on=["pre_sales > 10"]))
"""

from . import oci, tools
from .data import Design, ExperimentData
from .effects import Effects
from .errors import DesignWarning, ValidationError
from .models.bayes import BayesianLinearRegression, BayesianLinearRegressionResults, NormalPrior
from .models.linear import LinearModel, LinearModelResults
from .platform.bandit import simulate_bandit
from .platform.checks import simulate_aa
from .platform.many import analyze_many
from .platform.monitor import Monitoring, monitor
from .platform.planning import PowerAnalysis, mde, planning_inputs, power, sample_size
from .policy import ContextVector, Policy

__version__ = "0.1.0"

__all__ = [
    "BayesianLinearRegression",
    "BayesianLinearRegressionResults",
    "ContextVector",
    "Design",
    "DesignWarning",
    "Effects",
    "ExperimentData",
    "LinearModel",
    "LinearModelResults",
    "Monitoring",
    "NormalPrior",
    "Policy",
    "PowerAnalysis",
    "ValidationError",
    "__version__",
    "analyze_many",
    "mde",
    "monitor",
    "oci",
    "planning_inputs",
    "power",
    "sample_size",
    "simulate_aa",
    "simulate_bandit",
    "tools",
]
