"""causalflow: experiments and careful observational causal inference.

One grammar::

    import causalflow as cf
    effects = (cf.ExperimentData(df, intent_to_treat="assigned", cluster_by="store")
                 .add_metric(y=["sales", "visits"], exogenous_covariates=["pre_sales"])
                 .fit(cf.LinearModel)
                 .infer_effect(condition_on=["pre_sales > 10"]))
"""

from .errors import DesignWarning, ValidationError

__version__ = "0.1.0"

__all__ = ["DesignWarning", "ValidationError", "__version__"]
