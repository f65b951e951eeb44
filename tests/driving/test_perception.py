"""Perception in the loop: the kinematics observation rebuilt from a detector's boxes on the rendered frame."""

from __future__ import annotations

import numpy as np
import pytest

from tujie_core import ConfigError
from tujie_core.protocols import Detection, Detector
from tujie_driving import Scenario, create_agent, evaluate, make_env
from tujie_driving.perception import OracleDetector, PerceivedKinematics

SHORT = Scenario("highway-fast", {"duration": 6})


def test_the_oracle_rebuilds_the_simulators_observation_within_the_camera_view() -> None:
    env = PerceivedKinematics(make_env(SHORT, render=True), "oracle")
    truth = make_env(SHORT)
    perceived, _ = env.reset(seed=3)
    true, _ = truth.reset(seed=3)
    for _ in range(3):
        perceived, *_ = env.step(1)
        true, *_ = truth.step(1)
    assert isinstance(env.detector, OracleDetector) and isinstance(env.detector, Detector)
    np.testing.assert_array_equal(perceived[0], true[0])  # the ego's own state: odometry
    seen = perceived[1:, 0] > 0
    assert seen.sum() >= 2
    for row in perceived[1:][seen]:  # every perceived vehicle is a true one (a box clipped by the frame edge moves)
        distance = np.hypot((true[1:, 1] - row[1]) * 200, (true[1:, 2] - row[2]) * 12)
        assert distance.min() < 1.5


class Blind:
    class_names = ("vehicle",)

    def detect(self, frame) -> list[Detection]:
        assert frame.ndim == 3 and frame.shape[2] == 3
        return []


def test_a_blind_detector_leaves_only_the_ego_and_the_agent_still_drives() -> None:
    env = PerceivedKinematics(make_env(SHORT, render=True), Blind())
    obs, _ = env.reset(seed=0)
    assert obs[0, 0] == 1 and not obs[1:].any()
    result = evaluate(create_agent("dqn", SHORT), SHORT, episodes=1, env=env)
    assert result.episodes[0].length >= 1


def test_bad_detectors_are_refused() -> None:
    with pytest.raises(ConfigError, match="neither 'oracle' nor NAME:RUN_DIR"):
        PerceivedKinematics(make_env(SHORT, render=True), "yolo")
    with pytest.raises(ConfigError, match="not in the detectors registry"):
        PerceivedKinematics(make_env(SHORT, render=True), "nope:runs/x")
    with pytest.raises(ConfigError, match="needs frames"):
        PerceivedKinematics(make_env(SHORT), "oracle")
    with pytest.raises(ConfigError, match="kinematics"):
        PerceivedKinematics(make_env(Scenario("highway-fast", observation="grayscale"), render=True), "oracle")
