"""partopt: optimal and heuristic partitioning of DNN pipelines on edge clusters.

>>> from partopt import solve, Problem, Chain, Cluster
"""

from partopt.chain import Chain
from partopt.cluster import MB, Cluster
from partopt.plan import Evaluation, InvalidPlan, Plan, Stage, evaluate
from partopt.problem import Problem
from partopt.solve import Result, solve

__all__ = [
    "MB",
    "Chain",
    "Cluster",
    "Evaluation",
    "InvalidPlan",
    "Plan",
    "Problem",
    "Result",
    "Stage",
    "evaluate",
    "solve",
]
__version__ = "0.1.0"
