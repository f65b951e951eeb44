"""tujie driving: highway-env scenarios, stable-baselines3 control, Q-learning, trajectory prediction and
uncertainty-aware safety, on tujie_core's run layer.

>>> from tujie_driving import create_agent, evaluate, comparison_table
>>> idm = create_agent("idm", "highway-fast")
>>> print(comparison_table({"idm": evaluate(idm, episodes=10)}))  # doctest: +SKIP

Names are imported on first use (PEP 562), so ``tujie`` commands of other packages do not pay for
stable-baselines3 and highway-env.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AGENTS": "tujie_driving.agents",
    "Agent": "tujie_driving.agents",
    "create_agent": "tujie_driving.agents",
    "Episode": "tujie_driving.evaluation",
    "Evaluation": "tujie_driving.evaluation",
    "comparison_table": "tujie_driving.evaluation",
    "evaluate": "tujie_driving.evaluation",
    "render_episode": "tujie_driving.evaluation",
    "save_gif": "tujie_driving.evaluation",
    "SCENARIOS": "tujie_driving.scenarios",
    "Scenario": "tujie_driving.scenarios",
    "make_env": "tujie_driving.scenarios",
    "make_vec_env": "tujie_driving.scenarios",
}
__all__ = ["bundled_config", *sorted(_EXPORTS)]


def bundled_config(name: str = "dqn_highway_fast") -> Path:
    """A run config shipped inside tujie_driving (``configs/<name>.yaml``)."""
    return Path(str(resources.files("tujie_driving") / "configs" / f"{name}.yaml"))


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tujie_driving' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
