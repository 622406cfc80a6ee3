"""Where moments are computed: in memory now (:mod:`causalflow.backends.memory`); warehouse
engines next. A backend returns the small matrices the solver needs (cross-products and
per-cluster sums), never the rows."""
