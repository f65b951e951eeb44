"""Trajectory prediction (book ch. 7 and 17.2.2): where will the surrounding vehicles be in the next 1–3 s?

>>> traffic = log_trajectories(Simulation(episodes=4))  # seeded highway-env traffic, 5 Hz  # doctest: +SKIP
>>> traffic.save("traffic.npz")  # or .csv with columns episode,vehicle,t,x,y,vx,vy  # doctest: +SKIP
>>> result = train_predictor(["data.path=traffic.npz", "model.name=trajectory/gru"])  # doctest: +SKIP
>>> predictor = TrajectoryPredictor.load(result.run_dir)  # doctest: +SKIP
>>> predictor.predict(history)  # world x, y, vx, vy (N, H, 4) → positions (N, F, 2)  # doctest: +SKIP
>>> evaluate_predictor(predictor, splits.test)  # ADE/FDE at 1, 2, 3 s beside constant velocity  # doctest: +SKIP

Logging: every vehicle but the ego is recorded at each policy step of seeded highway-env episodes (episode ``i`` is
reset with seed ``seed + i``). ``Simulation.frequency`` sets highway-env's ``policy_frequency`` (default 5 Hz: 1 s is
5 steps, 3 s is 15); the ego drives by a fixed meta-action (``SLOWER`` by default: at its lowest target speed it
rarely crashes, so episodes run their full duration while the traffic flows around it).

Samples: a window of ``history`` seconds (``history/dt + 1`` observed states, the last one at t₀) and the next
``future`` seconds (``future/dt`` positions), cut from each vehicle's uninterrupted track, in the vehicle's frame at
t₀: origin at its position, x axis along its velocity. Splits are by episode (different seeds; in a file, different
``episode`` values), never by sample, so no test window overlaps a training one.

Models (``trajectory/lstm``, ``trajectory/gru``, ``trajectory/transformer``): an encoder of the history and an MLP
that outputs every future position at once as a correction to the constant-velocity extrapolation (its last layer
starts at zero, so an untrained model is the baseline). They train as core ``regression`` on the flattened future
positions (MSE, m²); :func:`evaluate_predictor` reports ADE/FDE in metres at 1, 2 and 3 s beside constant velocity.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from tujie_core import (
    ConfigError,
    DataError,
    DataInfo,
    DataSplits,
    RunResult,
    load_config,
    load_pretrained,
    train_from_config,
)
from tujie_core.data import parse_float
from tujie_core.models import Standardize
from tujie_core.registry import format_validation_error, suggest
from tujie_driving import bundled_config

COLUMNS = ("episode", "vehicle", "t", "x", "y", "vx", "vy")
FEATURES = ["x", "y", "vx", "vy"]
ARCHITECTURES = ("lstm", "gru", "transformer")
BUNDLED_CONFIG = "predict_lstm"
Options = TypeVar("Options", bound=BaseModel)


# ---- trajectories -----------------------------------------------------------------------------------------------
class Track(NamedTuple):
    """One vehicle's uninterrupted states ``(T, 4)`` at times ``t`` ``(T,)``, ``dt`` apart."""

    episode: int
    vehicle: int
    t: np.ndarray
    state: np.ndarray


@dataclass
class Trajectories:
    """Vehicle states in long form: row ``i`` is vehicle ``vehicle[i]`` of episode ``episode[i]`` at time ``t[i]``
    (seconds) with ``state[i] = (x, y, vx, vy)`` (metres, m/s, world frame), sampled every ``dt`` seconds.
    ``labels`` maps ``"episode"``/``"vehicle"`` to the names a file gave them (id ``k`` is ``labels[...][k]``)."""

    episode: np.ndarray
    vehicle: np.ndarray
    t: np.ndarray
    state: np.ndarray
    dt: float
    source: str = ""
    labels: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.t)

    @property
    def episodes(self) -> np.ndarray:
        return np.unique(self.episode)

    def select(self, episodes: Sequence[int] | np.ndarray) -> Trajectories:
        """The rows of the given episodes."""
        keep = np.isin(self.episode, episodes)
        return Trajectories(
            self.episode[keep], self.vehicle[keep], self.t[keep], self.state[keep], self.dt, self.source, self.labels
        )

    def label(self, column: Literal["episode", "vehicle"], index: int) -> str:
        """The name of episode or vehicle ``index`` (the number itself when the data had no names)."""
        names = self.labels.get(column)
        return names[index] if names else str(index)

    def tracks(self) -> list[Track]:
        """Every uninterrupted track: one vehicle's rows in time order, split where a step of ``dt`` is missing."""
        if not len(self):
            return []
        order = np.lexsort((self.t, self.vehicle, self.episode))
        episode, vehicle, t, state = self.episode[order], self.vehicle[order], self.t[order], self.state[order]
        gap = np.abs(np.diff(t) - self.dt) > 0.01 * self.dt
        breaks = np.flatnonzero((np.diff(episode) != 0) | (np.diff(vehicle) != 0) | gap) + 1
        starts = np.concatenate([[0], breaks])
        return [
            Track(int(episode[i]), int(vehicle[i]), times, states)
            for i, times, states in zip(starts, np.split(t, breaks), np.split(state, breaks), strict=True)
        ]

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` (arrays, no pickle) or ``.csv`` (columns ``episode,vehicle,t,x,y,vx,vy``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            labels = {f"{column}_labels": np.asarray(names, dtype=str) for column, names in self.labels.items()}
            arrays = {"episode": self.episode, "vehicle": self.vehicle, "t": self.t, "state": self.state}
            np.savez_compressed(path, **arrays, dt=np.float64(self.dt), **labels)
        elif path.suffix == ".csv":
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(COLUMNS)
                for e, v, t, s in zip(self.episode, self.vehicle, self.t, self.state, strict=True):
                    row = [self.label("episode", e), self.label("vehicle", v), f"{t:.10g}"]
                    writer.writerow([*row, *(f"{x:.10g}" for x in s)])
        else:
            raise ConfigError(f"{path}: trajectories are saved as .npz or .csv")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Trajectories:
        """Read a file written by :meth:`save` or any CSV with columns ``episode,vehicle,t,x,y,vx,vy`` (more columns
        are ignored; episode and vehicle may be any labels). DataError names the file, row and column at fault."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if path.suffix == ".npz":
            return _read_npz(path)
        if path.suffix == ".csv":
            return _read_csv(path)
        raise DataError(f"{path}: expected a .npz (written by Trajectories.save) or a .csv file")


def _read_npz(path: Path) -> Trajectories:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    missing = [k for k in ("episode", "vehicle", "t", "state", "dt") if k not in arrays]
    if missing:
        raise DataError(f"{path}: no array(s) {', '.join(missing)} (not written by Trajectories.save)")
    n = len(arrays["t"])
    shapes = {"episode": (n,), "vehicle": (n,), "t": (n,), "state": (n, 4), "dt": ()}
    for key, shape in shapes.items():
        if arrays[key].shape != shape or arrays[key].dtype.kind not in "iuf":
            raise DataError(f"{path}: array '{key}' has shape {arrays[key].shape} ({arrays[key].dtype}); need {shape}")
    for key in ("t", "state", "dt"):
        bad = np.argwhere(~np.isfinite(arrays[key]))
        if len(bad):
            raise DataError(f"{path}: array '{key}' has a non-finite value at index {tuple(bad[0].tolist())}")
    dt = float(arrays["dt"])
    if not dt > 0:
        raise DataError(f"{path}: dt must be > 0, got {dt}")
    traj = Trajectories(
        arrays["episode"].astype(np.int64),
        arrays["vehicle"].astype(np.int64),
        arrays["t"].astype(np.float64),
        arrays["state"].astype(np.float64),
        dt,
        str(path),
        {c: arrays[f"{c}_labels"].tolist() for c in ("episode", "vehicle") if f"{c}_labels" in arrays},
    )
    for column, names in traj.labels.items():
        ids = getattr(traj, column)
        if len(ids) and not 0 <= ids.min() <= ids.max() < len(names):
            raise DataError(f"{path}: array '{column}' has ids beyond the {len(names)} names of '{column}_labels'")
    duplicate = _first_duplicate(traj)
    if duplicate is not None:
        raise DataError(f"{path}: row {duplicate}: a second state of the same episode, vehicle and t")
    return traj


def _read_csv(path: Path) -> Trajectories:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    absent = [c for c in COLUMNS if c not in header]
    if absent:
        raise DataError(f"{path}: no column(s) {', '.join(absent)} (need {','.join(COLUMNS)}; got {','.join(header)})")
    if not rows:
        raise DataError(f"{path}: no data rows")
    labels: dict[str, dict[str, int]] = {"episode": {}, "vehicle": {}}
    ids = np.empty((len(rows), 2), dtype=np.int64)
    numbers = np.empty((len(rows), 5), dtype=np.float64)
    for i, row in enumerate(rows):
        line = i + 2  # the header is line 1
        if None in row or any(row[c] is None for c in COLUMNS):
            raise DataError(f"{path}: row {line}: expected {len(header)} fields")
        for j, column in enumerate(("episode", "vehicle")):
            label = row[column].strip()
            if not label:
                raise DataError(f"{path}: row {line}, column '{column}': empty")
            ids[i, j] = labels[column].setdefault(label, len(labels[column]))
        for j, column in enumerate(COLUMNS[2:]):
            numbers[i, j] = parse_float(row[column], path, line, column)
    names = {column: list(found) for column, found in labels.items()}  # in order of first appearance = id
    traj = Trajectories(ids[:, 0], ids[:, 1], numbers[:, 0], numbers[:, 1:], 1.0, str(path), names)
    duplicate = _first_duplicate(traj)
    if duplicate is not None:
        raise DataError(f"{path}: row {duplicate + 2}: a second state of the same episode, vehicle and t")
    traj.dt = _sampling_step(traj, path)
    return traj


def _first_duplicate(traj: Trajectories) -> int | None:
    """The index of the first row that repeats an earlier (episode, vehicle, t), or None."""
    keys = np.rec.fromarrays([traj.episode, traj.vehicle, np.round(traj.t, 6)])
    _, first = np.unique(keys, return_index=True)
    if len(first) == len(keys):
        return None
    return int(np.setdiff1d(np.arange(len(keys)), first)[0])


def _sampling_step(traj: Trajectories, path: Path) -> float:
    """The data's time step: the median step between consecutive states of a vehicle."""
    order = np.lexsort((traj.t, traj.vehicle, traj.episode))
    same = (np.diff(traj.episode[order]) == 0) & (np.diff(traj.vehicle[order]) == 0)
    steps = np.diff(traj.t[order])[same]
    if not len(steps):
        raise DataError(f"{path}: no vehicle has two states; need tracks sampled at a fixed step")
    return float(np.round(np.median(steps), 6))


# ---- logging from the simulator ---------------------------------------------------------------------------------
def _options(model: type[Options], value: Options | Mapping[str, Any] | None, where: str) -> Options:
    """``value`` as ``model`` (its defaults for None); ConfigError naming ``where.key`` for a bad option."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, list(model.model_fields))) from None


class Simulation(BaseModel):
    """Seeded highway-env episodes to log: ``scenario`` (a :data:`~tujie_driving.scenarios.SCENARIOS` name) with
    ``config`` overrides (``vehicles_density``, ``lanes_count``…), ``episodes`` of ``duration`` seconds sampled at
    ``frequency`` Hz (highway-env's ``policy_frequency``), the ego driving by ``policy`` (a fixed meta-action or random
    ones). Episode ``i`` is reset with seed ``seed + i``."""

    model_config = ConfigDict(extra="forbid")

    scenario: str = "highway-fast"
    config: dict[str, Any] = Field(default_factory=dict)
    episodes: int = Field(24, ge=1)
    duration: float = Field(30.0, gt=0)
    frequency: int = Field(5, ge=1)
    policy: Literal["slower", "idle", "faster", "random"] = "slower"
    include_ego: bool = False
    seed: int = 0


def log_trajectories(simulation: Simulation | Mapping[str, Any] | None = None) -> Trajectories:
    """Drive ``simulation``'s episodes and record every (other) vehicle's position and velocity at each step.

    An episode ends at its duration or when the ego crashes (highway-env terminates it); what was recorded is kept."""
    from tujie_driving.scenarios import Scenario, make_env, meta_action_index

    sim = _options(Simulation, simulation, "simulation")
    for key in ("policy_frequency", "duration"):
        if key in sim.config:
            raise ConfigError(f"simulation.config.{key}: set by simulation.frequency and simulation.duration")
    scenario = Scenario(sim.scenario, {**sim.config, "policy_frequency": sim.frequency, "duration": sim.duration})
    columns: list[np.ndarray] = []
    for episode in range(sim.episodes):
        env = make_env(scenario, seed=sim.seed + episode)
        try:
            simulated = env.unwrapped.config["simulation_frequency"]
            if simulated % sim.frequency:
                raise ConfigError(
                    f"simulation.frequency: {sim.frequency} Hz does not divide the scenario's simulation_frequency "
                    f"({simulated} Hz); set simulation.config.simulation_frequency to a multiple of it"
                )
            action = None
            if sim.policy != "random":
                action = meta_action_index(env, sim.policy.upper())
                if action is None:
                    raise ConfigError(f"simulation.policy: {sim.scenario} has no {sim.policy.upper()} meta-action")
            columns += _drive(env, episode, action, sim.include_ego)
        finally:
            env.close()
    rows = np.concatenate(columns)
    return Trajectories(
        rows[:, 0].astype(np.int64),
        rows[:, 1].astype(np.int64),
        rows[:, 2],
        rows[:, 3:],
        1.0 / sim.frequency,
        f"highway-env {scenario.env_id}, {sim.episodes} episodes of {sim.duration:g} s at {sim.frequency} Hz, "
        f"seeds {sim.seed}–{sim.seed + sim.episodes - 1}, ego policy {sim.policy}",
    )


def _drive(env: Any, episode: int, action: int | None, include_ego: bool) -> list[np.ndarray]:
    """One episode's rows ``(episode, vehicle, t, x, y, vx, vy)``, one array per step."""
    unwrapped = env.unwrapped
    seen: dict[int, int] = {}
    alive: list[Any] = []  # the vehicle objects, so that no id() is reused while the episode runs

    def record() -> np.ndarray:
        rows = []
        for vehicle in unwrapped.road.vehicles:
            if vehicle is unwrapped.vehicle and not include_ego:
                continue
            if id(vehicle) not in seen:
                seen[id(vehicle)] = len(seen)
                alive.append(vehicle)
            rows.append([episode, seen[id(vehicle)], unwrapped.time, *vehicle.position, *vehicle.velocity])
        return np.asarray(rows, dtype=np.float64).reshape(-1, 7)

    steps = [record()]
    while True:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample() if action is None else action)
        steps.append(record())
        if terminated or truncated:
            return steps


class Curves(BaseModel):
    """Synthetic vehicles on circular arcs: ``tracks`` of ``duration`` seconds at ``frequency`` Hz, each at a constant
    speed and turn radius drawn uniformly from ``speed`` (m/s) and ``radius`` (m), turning left or right."""

    model_config = ConfigDict(extra="forbid")

    tracks: int = Field(200, ge=1)
    duration: float = Field(8.0, gt=0)
    frequency: int = Field(5, ge=1)
    speed: tuple[PositiveFloat, PositiveFloat] = (5.0, 15.0)
    radius: tuple[PositiveFloat, PositiveFloat] = (15.0, 60.0)
    seed: int = 0


def curved_trajectories(curves: Curves | Mapping[str, Any] | None = None) -> Trajectories:
    """Tracks on circular arcs (one episode each): what constant velocity cannot follow and a sequence model can."""
    spec = _options(Curves, curves, "curves")
    rng = np.random.default_rng(spec.seed)
    n, dt = spec.tracks, 1.0 / spec.frequency
    t = np.arange(round(spec.duration * spec.frequency) + 1) * dt
    speed = rng.uniform(*spec.speed, n)[:, None]
    yaw_rate = speed / rng.uniform(*spec.radius, n)[:, None] * rng.choice([-1.0, 1.0], n)[:, None]
    heading0 = rng.uniform(0, 2 * np.pi, n)[:, None]
    heading = heading0 + yaw_rate * t
    x = rng.uniform(-100, 100, n)[:, None] + speed / yaw_rate * (np.sin(heading) - np.sin(heading0))
    y = rng.uniform(-100, 100, n)[:, None] - speed / yaw_rate * (np.cos(heading) - np.cos(heading0))
    state = np.stack([x, y, speed * np.cos(heading), speed * np.sin(heading)], axis=-1).reshape(-1, 4)
    episode = np.repeat(np.arange(n), len(t))
    source = f"synthetic circular arcs: {n} tracks, speed {spec.speed} m/s, radius {spec.radius} m, seed {spec.seed}"
    return Trajectories(episode, np.zeros_like(episode), np.tile(t, n), state, dt, source)


# ---- samples ----------------------------------------------------------------------------------------------------
@dataclass
class Windows:
    """Prediction samples in each vehicle's frame at t₀: ``history`` ``(N, H, 4)`` (x, y, vx, vy; the last state at
    the origin, heading along +x) and ``future`` ``(N, F, 2)`` positions, ``dt`` seconds apart."""

    history: np.ndarray
    future: np.ndarray
    dt: float

    def __len__(self) -> int:
        return len(self.history)

    def dataset(self) -> TensorDataset:
        """``(history, future flattened to F·2)`` pairs for core's regression task."""
        return TensorDataset(torch.as_tensor(self.history), torch.as_tensor(self.future.reshape(len(self), -1)))


def window_steps(dt: float, history: float, future: float) -> tuple[int, int]:
    """``(H, F)``: observed states in ``history`` seconds (both ends included) and future steps in ``future``."""
    steps = round(history / dt) + 1, round(future / dt)
    if history <= 0 or steps[0] < 2:
        raise ConfigError(f"data.history: {history} s is less than one step of {dt:g} s")
    if future <= 0 or steps[1] < 1:
        raise ConfigError(f"data.future: {future} s is less than one step of {dt:g} s")
    return steps


def make_windows(traj: Trajectories, history: float = 2.0, future: float = 3.0, stride: int = 1) -> Windows:
    """Every ``stride``-th window of ``history`` + ``future`` seconds along each track, in the agent frame."""
    if stride < 1:
        raise ConfigError(f"data.stride: must be ≥ 1, got {stride}")
    h, f = window_steps(traj.dt, history, future)
    chunks = [
        np.lib.stride_tricks.sliding_window_view(track.state, h + f, axis=0).transpose(0, 2, 1)[::stride]
        for track in traj.tracks()
        if len(track.t) >= h + f
    ]
    windows = np.concatenate(chunks) if chunks else np.empty((0, h + f, 4))
    origin, rotation = agent_frames(windows[:, h - 1])
    local = to_local(windows, origin, rotation)
    return Windows(local[:, :h].astype(np.float32), local[:, h:, :2].astype(np.float32), traj.dt)


def agent_frames(last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Origins ``(N, 2)`` and world→agent rotations ``(N, 2, 2)`` from each sample's last state (x, y, vx, vy); a
    vehicle standing still (< 0.1 m/s) keeps the world's axes."""
    vx, vy = last[:, 2], last[:, 3]
    angle = np.where(np.hypot(vx, vy) > 0.1, np.arctan2(vy, vx), 0.0)
    c, s = np.cos(angle), np.sin(angle)
    return last[:, :2], np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)


def to_local(states: np.ndarray, origin: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """World states ``(N, T, 4)`` (or positions ``(N, T, 2)``) → the agent frames."""
    out = np.einsum("nij,ntj->nti", rotation, states[..., :2] - origin[:, None])
    if states.shape[-1] == 2:
        return out
    return np.concatenate([out, np.einsum("nij,ntj->nti", rotation, states[..., 2:4])], axis=-1)


def to_world(positions: np.ndarray, origin: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Agent-frame positions ``(N, T, 2)`` → world positions."""
    return np.einsum("nji,ntj->nti", rotation, positions) + origin[:, None]


def split_episodes(
    episodes: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episode ids for train, val and test, shuffled with ``seed``; a non-zero fraction gets at least one episode."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"data.val_fraction ({val_fraction}) and data.test_fraction ({test_fraction}) must be in [0, 1) and sum "
            "below 1"
        )
    shuffled = np.random.default_rng(seed).permutation(episodes)
    n_test, n_val = (max(1, round(f * len(shuffled))) if f else 0 for f in (test_fraction, val_fraction))
    if len(shuffled) - n_test - n_val < 1:
        raise DataError(
            f"{len(shuffled)} episode(s) cannot make train, val and test splits by episode; log more episodes"
        )
    return shuffled[n_test + n_val :], shuffled[n_test : n_test + n_val], shuffled[:n_test]


def trajectories(
    path: Path | None = None,
    simulation: Simulation | None = None,
    curves: Curves | None = None,
    history: float = 2.0,
    future: float = 3.0,
    stride: int = 2,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataSplits:
    """Trajectory-prediction samples split by episode, from a file (``path``: ``.npz`` or ``.csv``), synthetic
    ``curves`` or (the default) freshly logged highway-env traffic (``simulation``).

    ``history``/``future``: seconds observed and predicted; ``stride``: steps between window starts. The models get
    the training split's input statistics and residual scale and the time step from the data. ``simulation`` and
    ``curves`` may also be given as mappings of their options."""
    if sum(x is not None for x in (path, simulation, curves)) > 1:
        raise ConfigError("data: give one of path, simulation and curves (data.simulation=null drops the simulation)")
    if path is not None:
        traj = Trajectories.load(path)
    elif curves is not None:
        traj = curved_trajectories(curves)
    else:
        traj = log_trajectories(simulation)
    parts = split_episodes(traj.episodes, val_fraction, test_fraction, seed)
    train, val, test = (make_windows(traj.select(p), history, future, stride) if len(p) else None for p in parts)
    assert train is not None
    if not len(train):
        h, f = window_steps(traj.dt, history, future)
        raise DataError(f"{traj.source}: no track of the training episodes spans {h + f} steps of {traj.dt:g} s")
    h, f = train.history.shape[1], train.future.shape[1]
    residual = train.future - constant_velocity(train.history, f, traj.dt)
    flat = train.history.reshape(-1, 4)
    info = DataInfo(
        "regression",
        (h, 4),
        2 * f,
        feature_names=FEATURES,
        source=traj.source,
        model_args={
            "dt": traj.dt,
            "input_mean": flat.mean(0).tolist(),
            "input_std": np.maximum(flat.std(0), 1e-3).tolist(),
            "offset_std": np.maximum(residual.reshape(-1, 2).std(0), 1e-3).tolist(),
        },
        metadata={"trajectory": {"dt": traj.dt, "history_steps": h, "future_steps": f, "features": FEATURES}},
    )
    return DataSplits(*(w.dataset() if w is not None and len(w) else None for w in (train, val, test)), info)


# ---- baseline and metrics ---------------------------------------------------------------------------------------
def constant_velocity(history: np.ndarray, steps: int, dt: float) -> np.ndarray:
    """Positions ``(N, steps, 2)`` extrapolated from each history's last state (x, y, vx, vy) at constant velocity."""
    last = np.asarray(history)[:, -1]
    times = dt * np.arange(1, steps + 1)[None, :, None]
    return last[:, None, :2] + last[:, None, 2:4] * times


def ade_fde(
    predicted: np.ndarray, true: np.ndarray, dt: float, horizons: Sequence[float] | None = None
) -> dict[str, float]:
    """ADE (mean displacement over the steps up to the horizon) and FDE (displacement at it), in metres, for every
    horizon in seconds (default: each whole second of the prediction, or its end if shorter)."""
    error = np.linalg.norm(np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64), axis=-1)
    steps = error.shape[1]
    horizons = horizons or [float(s) for s in range(1, int(steps * dt + 1e-9) + 1)] or [steps * dt]
    scores = {}
    for horizon in horizons:
        k = round(horizon / dt)
        if not 1 <= k <= steps:
            raise ConfigError(f"horizons: {horizon} s is outside the prediction's 1–{steps} steps of {dt:g} s")
        scores[f"ade_{horizon:g}s"] = float(error[:, :k].mean())
        scores[f"fde_{horizon:g}s"] = float(error[:, k - 1].mean())
    return scores


# ---- models -----------------------------------------------------------------------------------------------------
class RecurrentEncoder(nn.Module):
    """An LSTM or GRU over the history; its last output summarises it."""

    def __init__(self, cell: type[nn.LSTM] | type[nn.GRU], hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.rnn = cell(len(FEATURES), hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0][:, -1]


class TransformerEncoder(nn.Module):
    """Linear embedding plus learned positions, a pre-norm Transformer encoder; the last step's output summarises
    the history."""

    def __init__(self, steps: int, hidden: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Linear(len(FEATURES), hidden)
        self.position = nn.Parameter(torch.randn(1, steps, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.encoder(self.embed(x) + self.position))[:, -1]


class TrajectoryNet(nn.Module):
    """History ``(B, H, 4)`` in the agent frame → future positions ``(B, F·2)``: the constant-velocity extrapolation
    plus an MLP's correction (scaled by ``offset_std``; zero at initialisation)."""

    def __init__(
        self,
        encoder: nn.Module,
        width: int,
        future_steps: int,
        dt: float,
        input_mean: Sequence[float],
        input_std: Sequence[float],
        offset_std: Sequence[float],
    ) -> None:
        super().__init__()
        self.scale = Standardize(input_mean, input_std)
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2 * future_steps))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("offset_std", torch.tensor(list(offset_std), dtype=torch.float32))
        self.register_buffer("times", dt * torch.arange(1, future_steps + 1, dtype=torch.float32)[:, None])

    def forward(self, history: Tensor) -> Tensor:
        correction = self.head(self.encoder(self.scale(history))).unflatten(-1, (-1, 2)) * self.offset_std
        last = history[:, -1, None]
        return (last[..., :2] + last[..., 2:4] * self.times + correction).flatten(1)


def trajectory_model(
    arch: str,
    input_shape: tuple[int, ...],
    num_outputs: int,
    dt: float | None = None,
    hidden: int = 64,
    layers: int = 1,
    heads: int = 4,
    dropout: float = 0.0,
    input_mean: list[float] | None = None,
    input_std: list[float] | None = None,
    offset_std: list[float] | None = None,
) -> TrajectoryNet:
    """``trajectory/<arch>`` (lstm, gru, transformer) for histories of shape ``(H, 4)`` and ``num_outputs = 2F``.

    ``dt`` (seconds per step), ``input_mean``/``input_std`` and ``offset_std`` come from the data in a run;
    ``hidden``: encoder width, ``layers``: encoder layers, ``heads``: attention heads (transformer)."""
    where = f"model trajectory/{arch}"
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model: no trajectory model '{arch}'{suggest(arch, list(ARCHITECTURES))} "
                          f"(one of {', '.join(f'trajectory/{a}' for a in ARCHITECTURES)})")  # fmt: skip
    if len(input_shape) != 2 or input_shape[1] != len(FEATURES) or input_shape[0] < 1:
        raise ConfigError(f"{where}: needs (steps, 4) histories of x, y, vx, vy; got input shape {tuple(input_shape)}")
    if num_outputs < 2 or num_outputs % 2:
        raise ConfigError(f"{where}: num_outputs is 2 × future steps (x, y each), got {num_outputs}")
    if dt is None or not dt > 0:
        raise ConfigError(f"{where}: dt (seconds per step, > 0) is required; the trajectories data supplies it")
    if hidden < 1 or layers < 1 or not 0 <= dropout < 1:
        raise ConfigError(f"{where}: need hidden ≥ 1, layers ≥ 1 and 0 ≤ dropout < 1")
    if arch == "transformer":
        if heads < 1 or hidden % heads:
            raise ConfigError(f"{where}: hidden ({hidden}) must be a multiple of heads ({heads})")
        encoder: nn.Module = TransformerEncoder(input_shape[0], hidden, layers, heads, dropout)
    else:
        encoder = RecurrentEncoder(nn.LSTM if arch == "lstm" else nn.GRU, hidden, layers, dropout)
    return TrajectoryNet(
        encoder,
        hidden,
        num_outputs // 2,
        dt,
        input_mean or [0.0] * len(FEATURES),
        input_std or [1.0] * len(FEATURES),
        offset_std or [1.0, 1.0],
    )


trajectory_model.tujie_namespace = True  # type: ignore[attr-defined]  # the entry point serves "trajectory/<arch>"


# ---- trained predictors -----------------------------------------------------------------------------------------
@dataclass
class TrajectoryPredictor:
    """A trained trajectory model with its time step and window sizes."""

    model: nn.Module
    dt: float
    history_steps: int
    future_steps: int

    @classmethod
    def load(cls, path: str | Path) -> TrajectoryPredictor:
        """From a run folder or its ``model/`` folder (safetensors weights; no pickle)."""
        path = Path(path)
        folder = path / "model" if (path / "model").is_dir() else path
        model, config = load_pretrained(folder)
        meta = config.get("trajectory")
        if not isinstance(meta, dict):
            raise DataError(f"{folder}: not a trajectory model (config.json has no 'trajectory' entry)")
        return cls(model, float(meta["dt"]), int(meta["history_steps"]), int(meta["future_steps"]))

    def predict(self, history: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """World-frame histories ``(N, H, 4)`` (or one ``(H, 4)``) of x, y, vx, vy, ``dt`` apart, the last state
        now → world positions ``(N, F, 2)`` (or ``(F, 2)``) at ``dt``, 2·``dt``, …"""
        states = np.asarray(history, dtype=np.float64)
        single = states.ndim == 2
        states = states[None] if single else states
        if states.ndim != 3 or states.shape[1:] != (self.history_steps, len(FEATURES)):
            raise DataError(
                f"history: need shape (N, {self.history_steps}, 4) of x, y, vx, vy; got {tuple(np.shape(history))}"
            )
        if not np.isfinite(states).all():
            raise DataError("history: contains a non-finite value")
        origin, rotation = agent_frames(states[:, -1])
        world = to_world(self.predict_local(to_local(states, origin, rotation)), origin, rotation)
        return world[0] if single else world

    @torch.inference_mode()
    def predict_local(self, history: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Agent-frame histories ``(N, H, 4)`` → agent-frame future positions ``(N, F, 2)``."""
        self.model.eval()
        inputs = torch.as_tensor(np.asarray(history), dtype=torch.float32)
        outputs = [self.model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
        flat = torch.cat(outputs) if outputs else torch.empty(0, 2 * self.future_steps)
        return flat.reshape(len(inputs), self.future_steps, 2).double().numpy()


def evaluate_predictor(
    predictor: TrajectoryPredictor | str | Path, data: Windows | Dataset, horizons: Sequence[float] | None = None
) -> dict[str, dict[str, float]]:
    """ADE/FDE (metres) of ``predictor`` (or a run folder) and of constant velocity on the same samples: ``data`` is
    :class:`Windows` or a split of :func:`trajectories` (``splits.test``)."""
    if not isinstance(predictor, TrajectoryPredictor):
        predictor = TrajectoryPredictor.load(predictor)
    if isinstance(data, Windows):
        history, future = data.history, data.future
    elif isinstance(data, TensorDataset):
        history, future = data.tensors[0].numpy(), data.tensors[1].reshape(len(data), -1, 2).numpy()
    else:
        raise DataError(f"data: expected Windows or a trajectories split (TensorDataset), got {type(data).__name__}")
    if len(history) == 0:
        raise DataError("data: no samples to evaluate")
    if history.shape[1] != predictor.history_steps or future.shape[1] != predictor.future_steps:
        raise DataError(
            f"data: windows of {history.shape[1]} + {future.shape[1]} steps; the model takes "
            f"{predictor.history_steps} and predicts {predictor.future_steps}"
        )
    dt = predictor.dt
    return {
        "model": ade_fde(predictor.predict_local(history), future, dt, horizons),
        "constant_velocity": ade_fde(constant_velocity(history, predictor.future_steps, dt), future, dt, horizons),
    }


@dataclass
class FilePrediction:
    """What :func:`predict_file` did: ADE/FDE of the model and of constant velocity on the windows whose future is
    in the file (``model/ade_3s``, ``constant_velocity/ade_3s``…), the CSV rows written and any warnings."""

    metrics: dict[str, float]
    rows: int
    warnings: list[str] = field(default_factory=list)


def predict_file(run: str | Path, data: str | Path, output: str | Path) -> FilePrediction:
    """Predict from every point of every track in ``data`` (a trajectories ``.npz`` or CSV) that has a full history
    behind it; write ``output`` as CSV ``episode,vehicle,t,horizon,x,y`` (the prediction made at ``t`` for
    ``t + horizon``, world frame) and score the predictions whose future the file holds."""
    predictor = TrajectoryPredictor.load(run)
    traj = Trajectories.load(data)
    if abs(traj.dt - predictor.dt) > 0.01 * predictor.dt:
        raise DataError(f"{data}: states every {traj.dt:g} s; the model was trained on steps of {predictor.dt:g} s")
    h, f = predictor.history_steps, predictor.future_steps
    tracks = traj.tracks()
    usable = [track for track in tracks if len(track.t) >= h]
    warnings = []
    if len(usable) < len(tracks):
        warnings.append(
            f"{len(tracks) - len(usable)} of {len(tracks)} tracks are shorter than {h} states: no prediction"
        )
    if not usable:
        raise DataError(f"{data}: no track has the {h} consecutive states ({(h - 1) * traj.dt:g} s) a prediction needs")
    histories = [np.lib.stride_tricks.sliding_window_view(t.state, h, axis=0).transpose(0, 2, 1) for t in usable]
    predicted = predictor.predict(np.concatenate(histories))
    horizons = [f"{k * traj.dt:.6g}" for k in range(1, f + 1)]
    scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (prediction, truth, history) with a full future
    rows, first = 0, 0
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["episode", "vehicle", "t", "horizon", "x", "y"])
        for track, history in zip(usable, histories, strict=True):
            mine = predicted[first : first + len(history)]
            first += len(history)
            episode, vehicle = traj.label("episode", track.episode), traj.label("vehicle", track.vehicle)
            for now, positions in zip(track.t[h - 1 :], mine, strict=True):
                writer.writerows(
                    [episode, vehicle, f"{now:.10g}", ahead, f"{x:.10g}", f"{y:.10g}"]
                    for ahead, (x, y) in zip(horizons, positions, strict=True)
                )
            rows += len(mine) * f
            complete = len(track.t) - h - f + 1  # windows whose whole future is in the track
            if complete > 0:
                truth = np.lib.stride_tricks.sliding_window_view(track.state[h:, :2], f, axis=0).transpose(0, 2, 1)
                scored.append((mine[:complete], truth[:complete], history[:complete]))
    metrics: dict[str, float] = {}
    if scored:
        pred, truth, history = (np.concatenate(part) for part in zip(*scored, strict=True))
        baseline = constant_velocity(history, f, traj.dt)
        for name, guess in (("model", pred), ("constant_velocity", baseline)):
            metrics |= {f"{name}/{k}": v for k, v in ade_fde(guess, truth, traj.dt).items()}
    else:
        warnings.append(f"no track spans {h + f} states: predictions written, none scored")
    return FilePrediction(metrics, rows, warnings)


# ---- training ---------------------------------------------------------------------------------------------------
def train_predictor(overrides: Sequence[str] = (), config: str | Path | None = None) -> RunResult:
    """Train through core's run layer from ``config`` (default: the bundled LSTM on freshly logged highway-env
    traffic) with ``KEY=VALUE`` overrides (``model.name=trajectory/gru``, ``data.path=traffic.npz``…)."""
    return train_from_config(load_config(config or bundled_config(BUNDLED_CONFIG), list(overrides)))
