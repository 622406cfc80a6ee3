import os
import sys

import matplotlib

matplotlib.use("Agg")
# the tests import benchmarks.acic.* by its full name, from any working directory
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
