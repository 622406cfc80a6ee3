"""``causalflow demo``: the online-store example, simulated and analysed in seconds.

Shoppers are grouped in regions that are randomised together (cluster randomisation). A
treated region *encourages* its shoppers to try a new recommendation widget; only some
take it up (non-compliance), so the assignment is an instrument for using the widget.
Each shopper has a pre-period spend (a covariate) and a device segment. Three metrics are
fitted in one pass: sales, sessions and orders.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

__all__ = ["main", "simulate_store"]


def simulate_store(n: int = 40_000, n_regions: int = 400, seed: int = 0) -> pd.DataFrame:
    """Simulate the online store: an encouragement design randomised by region.

    True effects of *using* the widget (the LATE among compliers): +2.0 sales (+3.0 on
    desktop), +0.3 sessions, +0.05 orders. Compliance: 60% of encouraged shoppers use it;
    nobody else can (one-sided non-compliance), so the LATE is the effect on the treated.

    Examples
    --------
    >>> df = simulate_store(n=1000, n_regions=50)
    >>> sorted(df.columns)[:4]
    ['assigned', 'device', 'orders', 'pre_sales']
    """
    rng = np.random.default_rng(seed)
    region = rng.integers(0, n_regions, n)
    region_effect = rng.normal(0, 1.0, n_regions)[region]
    assigned = rng.integers(0, 2, n_regions)[region]
    device = rng.choice(["desktop", "mobile", "tablet"], n, p=[0.45, 0.45, 0.10])
    pre_sales = rng.gamma(2.0, 5.0, n)
    uses = assigned * (rng.random(n) < 0.6)
    lift = np.where(device == "desktop", 3.0, 1.2)
    sales = 5 + 0.8 * pre_sales + region_effect + lift * uses + rng.normal(0, 4, n)
    sessions = 3 + 0.05 * pre_sales + 0.3 * uses + 0.2 * region_effect + rng.normal(0, 1, n)
    orders = 0.5 + 0.02 * pre_sales + 0.05 * uses + rng.normal(0, 0.3, n)
    return pd.DataFrame({"region": region, "assigned": assigned, "uses_widget": uses, "device": device,
                         "pre_sales": pre_sales, "sales": sales, "sessions": sessions, "orders": orders})


def main(argv: list[str] | None = None) -> int:
    """Run the demo: simulate, fit three metrics, print average and per-segment effects."""
    import causalflow as cf

    parser = argparse.ArgumentParser(prog="causalflow demo", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40_000, help="shoppers (default 40,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    df = simulate_store(n=args.n, seed=args.seed)
    data = cf.ExperimentData(df, intent_to_treat="assigned", treated="uses_widget", cluster_by="region")
    print(data.design, end="\n\n")
    model = data.add_metric(y=["sales", "sessions", "orders"],
                            exogenous_covariates=["pre_sales", "device"]).fit(cf.LinearModel)
    print("Average effects (ITT: of being encouraged; LATE: of using the widget, among compliers)")
    print(model.infer_effect().summary(), end="\n\n")
    print("Effects by device segment")
    by_device = model.infer_effect(condition_on=["device == 'desktop'", "device != 'desktop'"])
    print(by_device.summary())
    print(f"\n(simulated truth: LATE on sales +3.0 desktop, +1.2 otherwise; "
          f"done in {time.perf_counter() - start:.2f} s)")
    return 0
