"""tujie driving: highway-env scenarios, stable-baselines3 control, Q-learning, trajectory prediction and
uncertainty-aware safety, on tujie_core's run layer.

>>> from tujie_driving import create_agent, evaluate, comparison_table
>>> idm = create_agent("idm", "highway-fast")
>>> print(comparison_table({"idm": evaluate(idm, episodes=10)}))  # doctest: +SKIP
"""

__version__ = "0.1.0"

from tujie_driving.agents import AGENTS, Agent, create_agent
from tujie_driving.evaluate import Episode, Evaluation, comparison_table, evaluate, render_episode, save_gif
from tujie_driving.scenarios import SCENARIOS, Scenario, make_env, make_vec_env

__all__ = [
    "AGENTS",
    "SCENARIOS",
    "Agent",
    "Episode",
    "Evaluation",
    "Scenario",
    "comparison_table",
    "create_agent",
    "evaluate",
    "make_env",
    "make_vec_env",
    "render_episode",
    "save_gif",
]
