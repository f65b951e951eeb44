"""Drivers behind one interface, in the style of stable-baselines3's shared ``BaseAlgorithm``: every agent acts on
an observation, learns from its scenario, saves to a folder and loads from one.

>>> agent = create_agent("dqn", Scenario("highway-fast"), seed=0, learning_rate=5e-4)  # doctest: +SKIP
>>> agent.learn(20_000)  # doctest: +SKIP
>>> agent.save("runs/dqn/agent"); Agent.load("runs/dqn/agent").act(obs, env)  # doctest: +SKIP

Registered agents (:data:`AGENTS`, entry-point group ``tujie.agents``): ``dqn`` and ``ppo`` (stable-baselines3,
MLP on kinematics, optionally an ego-attention or a CNN-on-grayscale policy), ``qlearning`` (a Q-table over a
discretised observation, book ch. 16.3), ``idm`` (the rule-based IDM/MOBIL driver) and ``random``. ``dqn-ensemble``
lives in :mod:`tujie_driving.safety`.

Saved agents are ``agent.json`` (name, scenario, options, steps) beside ``model.safetensors`` or ``qtable.npz``:
no pickle anywhere. stable-baselines3's own ``.zip`` files hold cloudpickled objects; this package never reads
them.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import stable_baselines3
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv

from tujie_core import ConfigError, Registry
from tujie_core.checkpoint import rng_state, set_rng_state
from tujie_driving.scenarios import Scenario, default_envs, make_env, make_vec_env

AGENTS: Registry = Registry("agents")
COUNTERS = ("num_timesteps", "_n_updates", "_n_calls", "_episode_num")  # SB3 state a resume restores
OnRound = Callable[[], bool]  # called every ``every`` steps while learning; False stops learning


class Agent:
    """A driver. Subclasses set ``name`` and implement :meth:`act`; learners also :meth:`learn`,
    :meth:`state_dict` / :meth:`load_state_dict` (everything a resume needs) and the weights files."""

    name: ClassVar[str]
    learns: ClassVar[bool] = False
    reads_simulator: ClassVar[bool] = False  # acts on the simulator's state, not only on the observation

    def __init__(self, scenario: Scenario, seed: int = 0, **options: Any) -> None:
        self.scenario, self.seed, self.options = scenario, seed, options
        self.steps = 0

    def act(self, observation: Any, env: Any) -> int:
        """The action for ``observation``; ``env`` is the running environment (rule-based agents read it)."""
        raise NotImplementedError

    def reset(self, env: Any) -> None:
        """Called at the start of every episode."""

    def learn(self, steps: int, every: int = 0, on_round: OnRound | None = None, progress: bool = False) -> None:
        """Train until ``steps`` environment steps in all (counting those already done), calling ``on_round``
        every ``every`` steps. Agents that do not learn return at once."""

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])

    def save(self, folder: str | Path) -> Path:
        """Write ``agent.json`` and the weights into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "agent": self.name,
            "scenario": asdict(self.scenario),
            "seed": self.seed,
            "options": self.options,
            "steps": self.steps,
        }
        (folder / "agent.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        self.save_weights(folder)
        return folder

    def save_weights(self, folder: Path) -> None: ...

    def load_weights(self, folder: Path) -> None: ...

    @staticmethod
    def load(folder: str | Path) -> Agent:
        """An agent saved by :meth:`save` (a folder with ``agent.json``, or a run folder with ``agent/``)."""
        folder = Path(folder)
        if not (folder / "agent.json").is_file() and (folder / "agent" / "agent.json").is_file():
            folder = folder / "agent"
        if not (folder / "agent.json").is_file():
            raise ConfigError(f"{folder}: not a saved agent (no agent.json)")
        meta = json.loads((folder / "agent.json").read_text(encoding="utf-8"))
        agent = create_agent(meta["agent"], Scenario(**meta["scenario"]), meta["seed"], **meta["options"])
        agent.load_weights(folder)
        agent.steps = int(meta["steps"])
        return agent


def create_agent(name: str, scenario: Scenario | str = "highway-fast", seed: int = 0, **options: Any) -> Agent:
    """Build a registered agent; unknown names and options raise ConfigError naming them."""
    scenario = Scenario(scenario) if isinstance(scenario, str) else scenario
    return AGENTS.create(name, where="agent", scenario=scenario, seed=seed, **options)


@AGENTS.register("random")
class RandomAgent(Agent):
    """Uniformly random actions (seeded): the floor every agent must beat."""

    name = "random"

    def __init__(self, scenario: Scenario, seed: int = 0) -> None:
        super().__init__(scenario, seed)
        self.rng = np.random.default_rng(seed)

    def act(self, observation: Any, env: Any) -> int:
        return int(self.rng.integers(env.action_space.n))


@AGENTS.register("idm")
class IDMAgent(Agent):
    """The rule-based baseline: IDM picks the speed (towards the highest target speed, keeping a safe time gap to
    the car ahead) and MOBIL the lane (change when it gains ``min_gain`` m/s² and makes no follower brake harder
    than ``max_braking``). Reads the simulator's state, as a planner with perfect perception would."""

    name = "idm"
    reads_simulator = True

    def __init__(self, scenario: Scenario, seed: int = 0, min_gain: float = 0.2, max_braking: float = 2.0) -> None:
        super().__init__(scenario, seed, min_gain=min_gain, max_braking=max_braking)

    def act(self, observation: Any, env: Any) -> int:
        from highway_env.vehicle.behavior import IDMVehicle

        road, ego = env.unwrapped.road, env.unwrapped.vehicle
        actions = env.unwrapped.action_type.actions_indexes
        driver = IDMVehicle.create_from(ego)
        driver.LANE_CHANGE_MIN_ACC_GAIN = self.options["min_gain"]
        driver.LANE_CHANGE_MAX_BRAKING_IMPOSED = self.options["max_braking"]
        speeds = getattr(ego, "target_speeds", np.array([ego.target_speed]))
        driver.target_speed = float(np.max(speeds))
        if ego.lane_index == ego.target_lane_index and abs(ego.speed) > 1:
            index = road.vehicles.index(ego)
            road.vehicles[index] = driver  # MOBIL looks for neighbours of the driver, not of the ego beside it
            try:
                for lane in road.network.side_lanes(ego.lane_index):
                    if not road.network.get_lane(lane).is_reachable_from(ego.position):
                        continue
                    move = "LANE_LEFT" if lane[2] < ego.lane_index[2] else "LANE_RIGHT"
                    if move in actions and driver.mobil(lane):
                        return actions[move]
            finally:
                road.vehicles[index] = ego
        front, rear = road.neighbour_vehicles(ego, ego.lane_index)
        acceleration = driver.acceleration(ego_vehicle=driver, front_vehicle=front, rear_vehicle=rear)
        if not hasattr(ego, "speed_to_index"):
            return actions.get("IDLE", 0)
        period = 1 / env.unwrapped.config["policy_frequency"]
        wanted = ego.speed_to_index(ego.speed + acceleration * period)
        now = ego.speed_index
        if (wanted > now or acceleration > 0.5) and "FASTER" in actions and now < len(speeds) - 1:
            return actions["FASTER"]
        if (wanted < now or acceleration < -1.0) and "SLOWER" in actions:
            return actions["SLOWER"]
        return actions.get("IDLE", 0)


class Discretiser:
    """Kinematics observation → a small discrete state: the ego's lane, its speed band, the gap to the car ahead in
    its lane and whether each neighbouring lane is blocked near the ego (book ch. 16.3: a Q-table needs few states).
    Reads highway-env's normalised relative features (``presence, x, y, vx, vy``: x over ±200 m, y over ±4 m per
    lane, vx over ±80 m/s). Discrete observation spaces pass through."""

    X_SCALE, VX_SCALE = 200.0, 80.0  # metres and m/s that highway-env's normalisation maps to 1

    def __init__(
        self,
        lanes: int = 3,
        speeds: tuple[float, ...] = (22.5, 27.5),
        gaps: tuple[float, ...] = (10.0, 20.0, 40.0),
        near: float = 15.0,
    ) -> None:
        self.lanes, self.speeds, self.gaps, self.near = lanes, speeds, gaps, near

    @property
    def states(self) -> int:
        return self.lanes * (len(self.speeds) + 1) * (len(self.gaps) + 1) * 4

    def __call__(self, observation: Any) -> int:
        obs = np.asarray(observation, dtype=np.float64)
        if obs.ndim == 0:
            return int(obs)
        ego, others = obs[0], obs[1:][obs[1:, 0] > 0.5]  # presence is the first column
        step = 1 / self.lanes  # one lane in normalised y
        lane = int(np.clip(round(ego[2] / step), 0, self.lanes - 1))
        speed = int(np.searchsorted(self.speeds, ego[3] * self.VX_SCALE))
        x, dy = others[:, 1] * self.X_SCALE, others[:, 2]
        ahead = x[(np.abs(dy) < step / 2) & (x > 0)]
        gap = int(np.searchsorted(self.gaps, ahead.min() if len(ahead) else np.inf))
        near = np.abs(x) < self.near
        left = bool(np.any(near & (dy < -step / 2) & (dy > -1.5 * step)))
        right = bool(np.any(near & (dy > step / 2) & (dy < 1.5 * step)))
        return ((lane * (len(self.speeds) + 1) + speed) * (len(self.gaps) + 1) + gap) * 4 + 2 * left + right


@AGENTS.register("qlearning")
class QLearningAgent(Agent):
    """Tabular Q-learning (book ch. 16.3): ε-greedy exploration decaying linearly from ``epsilon_start`` to
    ``epsilon_end`` over ``exploration_fraction`` of ``total_steps`` (default: the steps ``learn`` is asked for),
    update ``Q ← Q + α (r + γ max Q' − Q)``."""

    name = "qlearning"
    learns = True

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        alpha: float = 0.2,
        gamma: float = 0.8,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        exploration_fraction: float = 0.5,
        total_steps: int | None = None,
        lanes: int = 3,
    ) -> None:
        super().__init__(
            scenario,
            seed,
            alpha=alpha,
            gamma=gamma,
            epsilon_start=epsilon_start,
            epsilon_end=epsilon_end,
            exploration_fraction=exploration_fraction,
            total_steps=total_steps,
            lanes=lanes,
        )
        self.env = make_env(scenario, seed=seed)
        space = self.env.observation_space
        self.discretise = Discretiser(lanes=lanes)
        states = int(space.n) if hasattr(space, "n") else self.discretise.states
        self.q = np.zeros((states, int(self.env.action_space.n)))
        self.rng = np.random.default_rng(seed)
        self.horizon = total_steps or 10_000  # steps over which exploration decays (default: the learn() target)
        self._obs: Any = None

    def act(self, observation: Any, env: Any) -> int:
        values = self.q[self.discretise(observation)]
        return int(self.rng.choice(np.flatnonzero(values == values.max())))  # ties broken at random

    def epsilon(self) -> float:
        o = self.options
        progress = min(self.steps / max(o["exploration_fraction"] * self.horizon, 1), 1.0)
        return o["epsilon_start"] + progress * (o["epsilon_end"] - o["epsilon_start"])

    def learn(self, steps: int, every: int = 0, on_round: OnRound | None = None, progress: bool = False) -> None:
        o = self.options
        self.horizon = o["total_steps"] or steps
        if self._obs is None:  # a fresh seed per (re)start: the episode in progress at a kill is not restored
            self._obs, _ = self.env.reset(seed=self.seed + self.steps)
        while self.steps < steps:
            state = self.discretise(self._obs)
            if self.rng.random() < self.epsilon():
                action = int(self.rng.integers(self.q.shape[1]))
            else:
                action = self.act(self._obs, self.env)
            obs, reward, terminated, truncated, _ = self.env.step(action)
            target = reward + (0.0 if terminated else o["gamma"] * self.q[self.discretise(obs)].max())
            self.q[state, action] += o["alpha"] * (target - self.q[state, action])
            self.steps += 1
            self._obs = obs
            if terminated or truncated:
                self._obs, _ = self.env.reset(seed=self.seed + self.steps)
            if every and on_round is not None and self.steps % every == 0 and not on_round():
                return

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "q": torch.from_numpy(self.q.copy()), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.q = int(state["steps"]), state["q"].numpy().copy()
        self.rng.bit_generator.state = state["rng"]
        self._obs = None

    def save_weights(self, folder: Path) -> None:
        np.savez(folder / "qtable.npz", q=self.q)

    def load_weights(self, folder: Path) -> None:
        with np.load(folder / "qtable.npz", allow_pickle=False) as saved:
            if saved["q"].shape != self.q.shape:
                raise ConfigError(f"{folder / 'qtable.npz'}: Q-table {saved['q'].shape}, expected {self.q.shape}")
            self.q = saved["q"].copy()


class EgoAttention(BaseFeaturesExtractor):
    """Features for a kinematics observation: every vehicle's row embedded, the ego's embedding attends over all of
    them (Leurent & Mercier 2019, highway-env's attention policy)."""

    def __init__(self, observation_space: Any, features_dim: int = 64, heads: int = 2) -> None:
        super().__init__(observation_space, features_dim)
        columns = observation_space.shape[-1]
        self.embed = torch.nn.Sequential(torch.nn.Linear(columns, features_dim), torch.nn.ReLU())
        self.attention = torch.nn.MultiheadAttention(features_dim, heads, batch_first=True)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(observations)
        absent = observations[..., 0] < 0.5
        absent[:, 0] = False  # the ego is always there
        out, _ = self.attention(tokens[:, :1], tokens, tokens, key_padding_mask=absent)
        return (out + tokens[:, :1]).squeeze(1)


POLICIES: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp": ("MlpPolicy", {}),
    "attention": ("MlpPolicy", {"features_extractor_class": EgoAttention}),
    "cnn": ("CnnPolicy", {}),
}


def init_parameters(cls: type) -> set[str]:
    """Keyword parameters of ``cls``'s constructor, through subclasses that pass ``**kwargs`` up."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass is not object:
            parameters = inspect.signature(klass.__init__).parameters.values()
            names |= {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names - {"self"}


class _Rounds(BaseCallback):
    """Hands control to ``on_round`` every ``every`` environment steps; keeps the agent's step count current."""

    def __init__(self, agent: SB3Agent, every: int, on_round: OnRound | None) -> None:
        super().__init__()
        self.agent, self.every, self.on_round = agent, every, on_round
        self.next_round = (agent.steps // every + 1) * every if every else 0

    def _on_step(self) -> bool:
        self.agent.steps = self.num_timesteps
        if self.every and self.on_round is not None and self.num_timesteps >= self.next_round:
            self.next_round += self.every
            return bool(self.on_round())
        return True


class SB3Agent(Agent):
    """A stable-baselines3 algorithm. ``policy``: ``mlp``, ``attention`` (kinematics) or ``cnn`` (grayscale
    scenarios); ``net_arch``: hidden sizes; ``envs``: parallel training environments (default 1; ``0`` = one per
    core); ``device``: ``auto`` (CUDA when present) or a torch device; the remaining options go to the algorithm."""

    learns = True
    algorithm: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    policy_classes: ClassVar[dict[str, Any]] = {}  # policy option → a policy class replacing SB3's named one

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        policy: str = "mlp",
        net_arch: list[int] | None = None,
        envs: int = 1,
        device: str = "auto",
        **options: Any,
    ) -> None:
        super().__init__(scenario, seed, policy=policy, net_arch=net_arch, envs=envs, device=device, **options)
        if policy not in POLICIES:
            raise ConfigError(f"agent.policy: '{policy}' is not one of {', '.join(POLICIES)}")
        cls = self.algorithm_class()
        known = init_parameters(cls) - {"policy", "env", "seed", "device", "policy_kwargs"}
        for key in options:
            if key not in known:
                raise ConfigError(f"agent.{key}: not an option of stable-baselines3 {cls.__name__}")
        policy_name, policy_kwargs = POLICIES[policy]
        policy_kwargs = {**policy_kwargs, **self.policy_kwargs()}
        if net_arch is not None:
            policy_kwargs["net_arch"] = list(net_arch)
        self.envs = envs or default_envs()
        self.model = cls(
            self.policy_classes.get(policy, policy_name),
            DummyVecEnv([functools.partial(make_env, scenario)] * self.envs),  # learn() runs them in processes
            seed=seed,
            device=device,
            policy_kwargs=policy_kwargs,
            verbose=0,
            **{**self.defaults, **options, **self.algorithm_options()},
        )

    @classmethod
    def algorithm_class(cls) -> Any:
        return getattr(stable_baselines3, cls.algorithm)

    def algorithm_options(self) -> dict[str, Any]:
        """Constructor arguments of the algorithm that the agent sets itself."""
        return {}

    def policy_kwargs(self) -> dict[str, Any]:
        return {}

    def act(self, observation: Any, env: Any) -> int:
        action, _ = self.model.predict(observation, deterministic=True)
        return int(action)

    def action_values(self, observation: Any) -> np.ndarray:
        """The policy's action values (DQN) or action probabilities (PPO) for one observation."""
        policy = self.model.policy
        obs, _ = policy.obs_to_tensor(observation)
        with torch.no_grad():
            if hasattr(policy, "q_net"):
                return policy.q_net(obs)[0].cpu().numpy()
            return policy.get_distribution(obs).distribution.probs[0].cpu().numpy()

    def learn(self, steps: int, every: int = 0, on_round: OnRound | None = None, progress: bool = False) -> None:
        remaining = steps - self.steps
        if remaining <= 0:
            return
        self.model.set_env(make_vec_env(self.scenario, n_envs=self.envs, seed=self.seed + self.steps))
        self.model._last_obs = None  # type: ignore[attr-defined]  # start fresh episodes (after a resume too)
        try:
            self.model.learn(
                remaining,
                callback=_Rounds(self, every, on_round),
                reset_num_timesteps=self.steps == 0,
                progress_bar=progress,
            )
        finally:
            self.model.get_env().close()
        self.steps = self.model.num_timesteps

    def state_dict(self) -> dict[str, Any]:
        model = self.model
        state: dict[str, Any] = {
            "steps": self.steps,
            "policy": model.policy.state_dict(),
            "optimizer": model.policy.optimizer.state_dict(),
            "counters": {k: int(getattr(model, k, 0)) for k in COUNTERS},
            "rng": rng_state(),
            "action_space_rng": model.action_space.np_random.bit_generator.state,
        }
        buffer = getattr(model, "replay_buffer", None)
        if buffer is not None:
            size = buffer.buffer_size if buffer.full else buffer.pos
            arrays = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
            state["replay"] = {
                "pos": buffer.pos,
                "full": buffer.full,
                **{k: torch.from_numpy(getattr(buffer, k)[:size].copy()) for k in arrays if hasattr(buffer, k)},
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        model = self.model
        model.policy.load_state_dict(state["policy"])
        model.policy.optimizer.load_state_dict(state["optimizer"])
        for key, value in state["counters"].items():
            setattr(model, key, value)
        set_rng_state(state["rng"])
        model.action_space.np_random.bit_generator.state = state["action_space_rng"]
        self.steps = int(state["steps"])
        replay = state.get("replay")
        if replay is not None:
            buffer = model.replay_buffer
            for key, value in replay.items():
                if isinstance(value, torch.Tensor):
                    getattr(buffer, key)[: len(value)] = value.numpy()
            buffer.pos, buffer.full = int(replay["pos"]), bool(replay["full"])

    def save_weights(self, folder: Path) -> None:
        from safetensors.torch import save_model

        save_model(self.model.policy, str(folder / "model.safetensors"))

    def load_weights(self, folder: Path) -> None:
        from safetensors.torch import load_model

        load_model(self.model.policy, str(folder / "model.safetensors"), device=str(self.model.device))


@AGENTS.register("dqn")
class DQNAgent(SB3Agent):
    """Deep Q-learning (stable-baselines3 DQN). Defaults: highway-env's published highway-fast settings (MLP
    256×256, lr 5e-4, replay 15 k, batch 32, γ 0.8, target update every 50 steps)."""

    name = "dqn"
    algorithm = "DQN"
    defaults: ClassVar[dict[str, Any]] = {
        "learning_rate": 5e-4,
        "buffer_size": 15_000,
        "learning_starts": 200,
        "batch_size": 32,
        "gamma": 0.8,
        "train_freq": 1,
        "gradient_steps": 1,
        "target_update_interval": 50,
    }

    def __init__(self, scenario: Scenario, seed: int = 0, net_arch: list[int] | None = None, **options: Any) -> None:
        super().__init__(scenario, seed, net_arch=[256, 256] if net_arch is None else net_arch, **options)


@AGENTS.register("ppo")
class PPOAgent(SB3Agent):
    """Proximal policy optimisation (stable-baselines3 PPO). Defaults: highway-env's published PPO settings
    (MLP 256×256, lr 5e-4, n_steps 768 per environment, batch 64, 10 epochs, γ 0.8)."""

    name = "ppo"
    algorithm = "PPO"
    defaults: ClassVar[dict[str, Any]] = {
        "learning_rate": 5e-4,
        "n_steps": 768,
        "batch_size": 64,
        "n_epochs": 10,
        "gamma": 0.8,
    }

    def __init__(self, scenario: Scenario, seed: int = 0, net_arch: list[int] | None = None, **options: Any) -> None:
        arch = [256, 256] if net_arch is None else net_arch
        super().__init__(scenario, seed, net_arch=arch, **options)
