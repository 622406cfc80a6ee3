"""causalflow: experiments and careful observational causal inference.

One grammar::

    import causalflow as cf
    effects = (cf.ExperimentData(df, intent_to_treat="assigned", cluster_by="store")
                 .add_metric(y=["sales", "visits"], exogenous_covariates=["pre_sales"])
                 .fit(cf.LinearModel)
                 .infer_effect(condition_on=["pre_sales > 10"]))
"""

from . import oci
from .data import Design, ExperimentData
from .effects import Effects
from .errors import DesignWarning, ValidationError
from .models.linear import LinearModel, LinearModelResults
from .platform.checks import simulate_aa
from .platform.monitor import Monitoring, monitor
from .platform.planning import PowerAnalysis, mde, planning_inputs, power, sample_size

__version__ = "0.1.0"

__all__ = [
    "Design",
    "DesignWarning",
    "Effects",
    "ExperimentData",
    "LinearModel",
    "LinearModelResults",
    "Monitoring",
    "PowerAnalysis",
    "ValidationError",
    "__version__",
    "mde",
    "monitor",
    "oci",
    "planning_inputs",
    "power",
    "sample_size",
    "simulate_aa",
]
