"""tujie driving: highway-env scenarios, stable-baselines3 control, Q-learning, trajectory prediction.

Skeleton: the package's dependencies are declared and installed; its API arrives with its own issue.
"""

__version__ = "0.1.0"
