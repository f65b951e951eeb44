"""Uncertainty-aware driving (book ch. 17.3.1): an ensemble of Q-networks that knows when it does not know.

``dqn-ensemble`` trains ``members`` Q-networks side by side in one stable-baselines3 DQN (each with its own
initialisation, target network and, with ``mask_probability`` < 1, its own bootstrap sample of every batch, as in
Osband et al.'s bootstrapped DQN); it drives by the members' mean Q. Its uncertainty in a state is the members'
standard deviation of the Q-value of the action it would take. Above ``threshold`` it falls back to the IDM
controller (``fallback: idm``) or to a fixed meta-action (``fallback: SLOWER``); ``fallback: none`` only records.

``threshold: null`` is calibrated after training as the ``threshold_quantile`` of the uncertainty met in
validation episodes of the training scenario: the fallback then takes over in the states least like those.

>>> agent = create_agent("dqn-ensemble", "highway-fast", members=5, fallback="idm")  # doctest: +SKIP
>>> agent.act(obs, env); agent.last_decision  # doctest: +SKIP
{'uncertainty': 0.08, 'threshold': 0.21, 'fallback': 0.0}
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import DQN
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from tujie_core import ConfigError
from tujie_driving.agents import AGENTS, DQNAgent, IDMAgent
from tujie_driving.scenarios import Scenario, make_env


class EnsembleQNetwork(nn.Module):
    """``members`` Q-networks; ``forward`` gives their mean (what SB3's DQN acts on), :meth:`members` each one's."""

    def __init__(self, networks: list[QNetwork]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def members(self, obs: torch.Tensor) -> torch.Tensor:
        """``(members, batch, actions)`` Q-values."""
        return torch.stack([net(obs) for net in self.networks])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.members(obs).mean(dim=0)

    def _predict(self, observation: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self(observation).argmax(dim=1).reshape(-1)

    def set_training_mode(self, mode: bool) -> None:
        self.train(mode)


class EnsembleDQNPolicy(DQNPolicy):
    """SB3's DQN policy with an :class:`EnsembleQNetwork` as its online and target networks."""

    def __init__(self, *args: Any, members: int = 5, **kwargs: Any) -> None:
        self.ensemble_size = members
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> EnsembleQNetwork:  # type: ignore[override]
        networks = []
        for _ in range(self.ensemble_size):  # each member has its own features extractor
            net_args = self._update_features_extractor(self.net_args, features_extractor=None)
            networks.append(QNetwork(**net_args))
        return EnsembleQNetwork(networks).to(self.device)


class EnsembleDQN(DQN):
    """DQN whose loss is the sum of every member's Huber TD loss against its own target network."""

    def __init__(self, *args: Any, mask_probability: float = 1.0, **kwargs: Any) -> None:
        self.mask_probability = mask_probability
        super().__init__(*args, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma
            with torch.no_grad():
                next_q = self.q_net_target.members(data.next_observations).max(dim=2).values  # (K, B)
                target = data.rewards.T + (1 - data.dones.T) * discounts * next_q
            current = self.q_net.members(data.observations)  # (K, B, A)
            index = data.actions.long().T.unsqueeze(-1).expand(current.shape[0], -1, 1)
            current = torch.gather(current, dim=2, index=index).squeeze(-1)
            loss = F.smooth_l1_loss(current, target, reduction="none")
            if self.mask_probability < 1:
                mask = (torch.rand_like(loss) < self.mask_probability).float()
                loss = (loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            else:
                loss = loss.mean(dim=1)
            loss = loss.sum()
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))


FALLBACKS = ("idm", "none", "SLOWER", "IDLE")


@AGENTS.register("dqn-ensemble")
class EnsembleDQNAgent(DQNAgent):
    """A DQN ensemble with an uncertainty-triggered fallback (see the module doc). Options besides DQN's:
    ``members``, ``mask_probability``, ``fallback`` (idm, none, SLOWER, IDLE), ``threshold`` (null: calibrated),
    ``threshold_quantile``."""

    name = "dqn-ensemble"
    policy_classes: ClassVar[dict[str, Any]] = {"mlp": EnsembleDQNPolicy}

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        members: int = 5,
        mask_probability: float = 1.0,
        fallback: str = "idm",
        threshold: float | None = None,
        threshold_quantile: float = 0.95,
        **options: Any,
    ) -> None:
        if members < 2:
            raise ConfigError(f"agent.members: an ensemble needs at least 2 members, got {members}")
        if fallback not in FALLBACKS:
            raise ConfigError(f"agent.fallback: '{fallback}' is not one of {', '.join(FALLBACKS)}")
        if not 0 < mask_probability <= 1 or not 0 < threshold_quantile < 1:
            raise ConfigError("agent.mask_probability must lie in (0, 1], agent.threshold_quantile in (0, 1)")
        self.members, self.mask_probability = members, mask_probability
        super().__init__(scenario, seed, **options)
        self.options |= {
            "members": members,
            "mask_probability": mask_probability,
            "fallback": fallback,
            "threshold": threshold,
            "threshold_quantile": threshold_quantile,
        }
        self.idm = IDMAgent(scenario, seed)
        self.last_decision: dict[str, float] | None = None

    @classmethod
    def algorithm_class(cls) -> Any:
        return EnsembleDQN

    def algorithm_options(self) -> dict[str, Any]:
        return {"mask_probability": self.mask_probability}

    def policy_kwargs(self) -> dict[str, Any]:
        return {"members": self.members}

    def uncertainty(self, observation: Any) -> tuple[int, float]:
        """The mean-Q action and the members' standard deviation of its Q-value."""
        policy = self.model.policy
        obs, _ = policy.obs_to_tensor(observation)
        with torch.no_grad():
            q = policy.q_net.members(obs)[:, 0]  # (K, A)
        action = int(q.mean(dim=0).argmax())
        return action, float(q[:, action].std())

    def act(self, observation: Any, env: Any) -> int:
        action, spread = self.uncertainty(observation)
        threshold, fallback = self.options["threshold"], self.options["fallback"]
        unsure = threshold is not None and spread > threshold and fallback != "none"
        self.last_decision = {
            "uncertainty": spread,
            "threshold": float("nan") if threshold is None else float(threshold),
            "fallback": float(unsure),
        }
        if not unsure:
            return action
        if fallback == "idm":
            return self.idm.act(observation, env)
        return int(env.unwrapped.action_type.actions_indexes.get(fallback, action))

    def calibrate(self, episodes: int = 10, seed: int = 10_000) -> float:
        """Set ``threshold`` to the ``threshold_quantile`` of the uncertainty over ``episodes`` episodes of the
        training scenario (driven by the ensemble alone); returns it."""
        env = make_env(self.scenario)
        spreads = []
        try:
            for episode in range(episodes):
                obs, _ = env.reset(seed=seed + episode)
                done = False
                while not done:
                    action, spread = self.uncertainty(obs)
                    spreads.append(spread)
                    obs, _, terminated, truncated, _ = env.step(action)
                    done = terminated or truncated
        finally:
            env.close()
        self.options["threshold"] = float(np.quantile(spreads, self.options["threshold_quantile"]))
        return self.options["threshold"]

    def with_fallback(self, fallback: str, threshold: float | None = None) -> EnsembleDQNAgent:
        """Switch the fallback (and optionally the threshold) in place; returns the agent."""
        if fallback not in FALLBACKS:
            raise ConfigError(f"fallback: '{fallback}' is not one of {', '.join(FALLBACKS)}")
        self.options["fallback"] = fallback
        if threshold is not None:
            self.options["threshold"] = threshold
        return self
