"""Perception in the loop (book ch. 17.1): the policy's state rebuilt from a detector's boxes on the rendered frame
instead of read from the simulator.

>>> env = PerceivedKinematics(make_env("highway-fast", render=True), "oracle")  # doctest: +SKIP
>>> env = PerceivedKinematics(make_env("highway-fast", render=True), "yolo:runs/vehicles/20261206-…")  # doctest: +SKIP
>>> evaluate(agent, env=env, episodes=100)  # doctest: +SKIP

Any object with tujie_core's :class:`~tujie_core.protocols.Detector` shape (``detect(frame) → detections``) will do;
named ones load through core's ``DETECTORS`` registry (tujie_vision registers ``yolo``), so this package never
imports the one that trained it. ``oracle`` is the simulator's ground truth drawn as boxes, with the camera's
limits: it sees only what the frame shows (about 33 m behind and 76 m ahead at the default zoom), where highway-env's
kinematics observation sees 200 m.

Each step: render the frame, detect, map each box centre to road coordinates through the viewer's own pixel → world
transform, drop the ego's own box, match boxes to the previous step's (nearest within ``gate`` metres of where
they were heading) to estimate velocity, and write the scenario's kinematics rows (presence, x, y, vx, vy relative to
the ego, normalised and ordered by distance as highway-env does). The ego's own row comes from its odometry (the
simulator), as a real car knows its own speed.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from tujie_core import ConfigError
from tujie_core.protocols import DETECTORS, Detection, Detector

SUPPORTED = ("presence", "x", "y", "vx", "vy")
ORACLE = "oracle"


class OracleDetector:
    """Ground truth as a detector: the box of every vehicle in the frame just rendered, from the simulator's state
    (a vehicle less than ``min_visible`` inside the frame is left out)."""

    class_names = ("vehicle",)

    def __init__(self, env: Any, min_visible: float = 0.5) -> None:
        self.env, self.min_visible = env, min_visible

    def detect(self, frame: Any) -> list[Detection]:
        unwrapped = self.env.unwrapped
        surface = unwrapped.viewer.sim_surface
        width, height = surface.get_width(), surface.get_height()
        found = []
        for vehicle in unwrapped.road.vehicles:
            cos, sin = math.cos(vehicle.heading), math.sin(vehicle.heading)
            half_l, half_w = vehicle.LENGTH / 2, vehicle.WIDTH / 2
            corners = np.array(
                [
                    surface.pos2pix(
                        vehicle.position[0] + cos * dx - sin * dy, vehicle.position[1] + sin * dx + cos * dy
                    )
                    for dx in (-half_l, half_l)
                    for dy in (-half_w, half_w)
                ],
                dtype=np.float64,
            )
            box = np.array([*corners.min(axis=0), *corners.max(axis=0)])
            clipped = np.clip(box, 0, [width, height, width, height])
            area = (box[2] - box[0]) * (box[3] - box[1])
            visible = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
            if area > 0 and visible / area >= self.min_visible:
                found.append(Detection(tuple(float(v) for v in clipped), "vehicle", 1.0))  # type: ignore[arg-type]
        return found


def load_detector(spec: str | Detector, env: Any) -> Detector:
    """``oracle``, ``NAME:RUN_DIR`` (a detector registered in core's ``DETECTORS``: ``yolo:runs/vehicles/…``) or a
    detector object."""
    if not isinstance(spec, str):
        if not isinstance(spec, Detector):
            raise ConfigError(f"detector: {type(spec).__name__} has no detect(frame) and class_names")
        return spec
    if spec == ORACLE:
        return OracleDetector(env)
    name, sep, run_dir = spec.partition(":")
    if not sep or not run_dir:
        raise ConfigError(f"detector: '{spec}' is neither 'oracle' nor NAME:RUN_DIR (yolo:runs/vehicles/…)")
    return DETECTORS.create(name, where="detector", run_dir=run_dir)


class PerceivedKinematics(gym.Wrapper):
    """Replace an environment's kinematics observation with one rebuilt from detections (see the module doc).
    ``env`` must render (``make_env(..., render=True)``); ``labels``: detection classes that count as vehicles."""

    def __init__(
        self,
        env: Any,
        detector: str | Detector = ORACLE,
        labels: tuple[str, ...] = ("vehicle", "car", "truck", "bus"),
        min_score: float = 0.25,
        gate: float = 6.0,
    ) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ConfigError("perception needs frames: make the environment with render=True")
        kinematics = env.unwrapped.observation_type
        features = list(getattr(kinematics, "features", []))
        if type(kinematics).__name__ != "KinematicObservation" or not set(features) <= set(SUPPORTED):
            raise ConfigError(f"perception rebuilds kinematics observations with features {', '.join(SUPPORTED)}")
        if getattr(kinematics, "absolute", False):
            raise ConfigError("perception rebuilds relative kinematics observations (observation.absolute: false)")
        self.detector = load_detector(detector, env)
        self.labels, self.min_score, self.gate = set(labels), min_score, gate
        self.features = features
        self.previous: np.ndarray = np.zeros((0, 2))
        self.previous_velocity: np.ndarray = np.zeros((0, 2))
        self.last_detections: list[Detection] = []

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.previous, self.previous_velocity = np.zeros((0, 2)), np.zeros((0, 2))
        return self.perceive(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.perceive(obs), reward, terminated, truncated, info

    def perceive(self, true_obs: np.ndarray) -> np.ndarray:
        """The observation rebuilt from this step's frame; ``true_obs``'s first row (the ego) is kept."""
        unwrapped = self.env.unwrapped
        frame = self.env.render()
        detections = [d for d in self.detector.detect(frame) if d.label in self.labels and d.score >= self.min_score]
        self.last_detections = detections
        surface = unwrapped.viewer.sim_surface
        ego = unwrapped.vehicle
        pixels = np.array([((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2) for d in detections]).reshape(-1, 2)
        centres = pixels / surface.scaling + np.asarray(surface.origin, dtype=np.float64)  # pos2pix inverted
        if len(centres):  # the ego's own box
            distance = np.linalg.norm(centres - ego.position, axis=1)
            if distance.min() < ego.LENGTH:
                centres = np.delete(centres, int(distance.argmin()), axis=0)
        velocities = self._velocities(centres, np.asarray(ego.velocity, dtype=np.float64))
        rows = np.zeros_like(true_obs)
        rows[0] = true_obs[0]
        order = np.argsort(np.linalg.norm(centres - ego.position, axis=1))[: len(rows) - 1]
        ranges = self._ranges()
        for i, index in enumerate(order, start=1):
            values = {
                "presence": 1.0,
                "x": centres[index, 0] - ego.position[0],
                "y": centres[index, 1] - ego.position[1],
                "vx": velocities[index, 0] - ego.velocity[0],
                "vy": velocities[index, 1] - ego.velocity[1],
            }
            for j, feature in enumerate(self.features):
                low, high = ranges.get(feature, (None, None))
                value = values[feature]
                if low is not None:
                    value = float(np.clip(2 * (value - low) / (high - low) - 1, -1, 1))
                rows[i, j] = value
        return rows

    def _velocities(self, centres: np.ndarray, ego_velocity: np.ndarray) -> np.ndarray:
        """Each box's velocity from the nearest box of the previous step (within ``gate`` metres of where it was
        heading); a new box moves with the ego."""
        dt = 1 / self.env.unwrapped.config["policy_frequency"]
        velocities = np.tile(ego_velocity, (len(centres), 1))
        if len(self.previous) and len(centres):
            predicted = self.previous + self.previous_velocity * dt
            distance = np.linalg.norm(centres[:, None] - predicted[None], axis=2)
            for i in range(len(centres)):
                j = int(distance[i].argmin())
                if distance[i, j] < self.gate:
                    velocities[i] = (centres[i] - self.previous[j]) / dt
        self.previous, self.previous_velocity = centres, velocities
        return velocities

    def _ranges(self) -> dict[str, tuple[float, float]]:
        kinematics = self.env.unwrapped.observation_type
        if not getattr(kinematics, "normalize", True):
            return {}
        if kinematics.features_range:
            return {k: (float(v[0]), float(v[1])) for k, v in kinematics.features_range.items()}
        raise ConfigError("perception: the kinematics observation has not been normalised yet (reset the env first)")
