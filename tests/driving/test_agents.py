"""Agents behind one interface: learning beats chance, save/load keeps every action, evaluation is reproducible,
frames are real, and the ensemble falls back when its members disagree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tujie_core import ConfigError
from tujie_driving import Agent, Scenario, comparison_table, create_agent, evaluate, make_env, render_episode
from tujie_driving.agents import Discretiser
from tujie_driving.scenarios import is_blank, make_vec_env

SHORT = Scenario("highway-fast", {"duration": 10, "vehicles_count": 10})


def observations(scenario: Scenario, count: int, seed: int = 0) -> list[np.ndarray]:
    env = make_env(scenario)
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    while len(seen) < count:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        seen.append(obs)
        if terminated or truncated:
            obs, _ = env.reset(seed=seed + len(seen))
    env.close()
    return seen


def test_q_learning_beats_random_on_a_short_highway() -> None:
    learner = create_agent("qlearning", SHORT, seed=0, alpha=0.5, exploration_fraction=0.3)
    learner.learn(1000)
    assert learner.steps == 1000 and np.count_nonzero(learner.q) > 20  # states were visited and updated
    learned = evaluate(learner, episodes=16, seed=500).summary()
    chance = evaluate(create_agent("random", SHORT, seed=0), episodes=16, seed=500).summary()
    assert learned["return"] > chance["return"] + 1.0, (learned, chance)
    assert learned["crash_rate"] < chance["crash_rate"]


def test_the_discretiser_reads_lane_speed_and_gap() -> None:
    disc = Discretiser(lanes=3)
    ego = [1, 1.0, 2 / 3, 25 / 80, 0]  # lane 2 of 3, 25 m/s
    free = np.array([ego, [0, 0, 0, 0, 0]])
    close = np.array([ego, [1, 8 / 200, 0, 0, 0]])  # a car 8 m ahead in the same lane
    left = np.array([ego, [1, 5 / 200, -1 / 3, 0, 0]])  # a car beside, one lane to the left
    states = {disc(free), disc(close), disc(left)}
    assert len(states) == 3 and max(states) < disc.states


@pytest.mark.parametrize(("name", "options"), [("dqn", {"learning_starts": 50}), ("ppo", {"n_steps": 64})])
def test_sb3_agents_learn_save_and_load_to_identical_actions(name: str, options: dict, tmp_path: Path) -> None:
    agent = create_agent(name, SHORT, seed=1, batch_size=32, **options)
    agent.learn(192)
    assert agent.steps == 192
    agent.save(tmp_path / "agent")
    assert (tmp_path / "agent" / "model.safetensors").is_file()
    loaded = Agent.load(tmp_path / "agent")
    assert type(loaded) is type(agent) and loaded.steps == 192
    env = make_env(SHORT)
    for obs in observations(SHORT, 30):
        assert loaded.act(obs, env) == agent.act(obs, env)
        np.testing.assert_allclose(loaded.action_values(obs), agent.action_values(obs), rtol=1e-6)


@pytest.mark.parametrize(
    ("policy", "scenario"),
    [("attention", SHORT), ("cnn", Scenario("highway-fast", {"duration": 6}, observation="grayscale"))],
)
def test_attention_and_cnn_policies_train(policy: str, scenario: Scenario) -> None:
    agent = create_agent("dqn", scenario, policy=policy, buffer_size=200, learning_starts=20, batch_size=8)
    agent.learn(48)
    obs = observations(scenario, 1)[0]
    assert agent.steps == 48 and agent.act(obs, None) in range(5)
    assert obs.shape == ((5, 5) if policy == "attention" else (4, 128, 64))


def test_evaluation_on_fixed_seeds_is_reproducible() -> None:
    first = evaluate(create_agent("random", SHORT, seed=3), episodes=3, seed=77)
    again = evaluate(create_agent("random", SHORT, seed=3), episodes=3, seed=77)
    assert [(e.ret, e.length, e.crashed) for e in first.episodes] == [
        (e.ret, e.length, e.crashed) for e in again.episodes
    ]
    idm = evaluate(create_agent("idm", SHORT), episodes=3, seed=77)
    assert idm.summary()["crash_rate"] == 0.0 and idm.summary()["return_ci95"] >= 0
    table = comparison_table({"random": first, "idm": idm})
    assert table.count("\n") == 3 and "| idm | 3 |" in table


def test_rendered_frames_are_not_blank() -> None:
    episode = render_episode(create_agent("idm", SHORT), seed=5)
    assert len(episode.frames) == episode.length + 1
    frame = episode.frames[-1]
    assert frame.shape == (150, 600, 3) and frame.dtype == np.uint8
    assert not is_blank(frame) and len(np.unique(frame.reshape(-1, 3), axis=0)) > 5


def test_vectorised_environments_step_together() -> None:
    venv = make_vec_env(SHORT, n_envs=2, seed=0)
    try:
        obs = venv.reset()
        assert obs.shape == (2, 5, 5)
        obs, _, _, infos = venv.step(np.array([1, 1]))
        assert obs.shape == (2, 5, 5) and len(infos) == 2
    finally:
        venv.close()


def ensemble(fallback: str = "idm", threshold: float | None = 0.5) -> Agent:
    return create_agent("dqn-ensemble", SHORT, members=2, fallback=fallback, threshold=threshold)


def test_the_fallback_takes_over_when_members_disagree() -> None:
    agent = ensemble()
    env = make_env(SHORT)
    obs, _ = env.reset(seed=0)
    first, second = agent.model.policy.q_net.networks
    with torch.no_grad():  # members agree: no fallback, the ensemble's own choice
        second.load_state_dict(first.state_dict())
    agent.act(obs, env)
    assert agent.last_decision["uncertainty"] == pytest.approx(0.0, abs=1e-6)
    assert agent.last_decision["fallback"] == 0.0
    with torch.no_grad():  # members disagree by 10 on every action value
        first.q_net[-1].bias += 5.0
        second.q_net[-1].bias -= 5.0
    action = agent.act(obs, env)
    assert agent.last_decision["uncertainty"] > 5 and agent.last_decision["fallback"] == 1.0
    assert action == create_agent("idm", SHORT).act(obs, env)
    agent.with_fallback("SLOWER")
    assert agent.act(obs, env) == env.unwrapped.action_type.actions_indexes["SLOWER"]
    agent.with_fallback("none")
    agent.act(obs, env)
    assert agent.last_decision["fallback"] == 0.0  # recorded, not acted on


def test_the_threshold_is_calibrated_on_validation_states() -> None:
    agent = ensemble(threshold=None)
    threshold = agent.calibrate(episodes=2)
    assert threshold > 0 and agent.options["threshold"] == threshold
    result = evaluate(agent, episodes=2, seed=900)
    assert 0.0 <= result.summary()["fallback_rate"] <= 0.5  # the 95th percentile: rare, not every step


def test_bad_agents_and_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="'dqm' is not in the agents registry"):
        create_agent("dqm", SHORT)
    with pytest.raises(ConfigError, match=r"agent.gama"):
        create_agent("dqn", SHORT, gama=0.9)
    with pytest.raises(ConfigError, match=r"agent.fallback"):
        create_agent("dqn-ensemble", SHORT, fallback="brake")
    with pytest.raises(ConfigError, match=r"scenario.config.vehicle_density"):
        make_env(Scenario("highway-fast", {"vehicle_density": 2}))
    with pytest.raises(ConfigError, match="did you mean 'roundabout'"):
        make_env(Scenario("roundabot"))
    with pytest.raises(ConfigError, match="observes"):
        evaluate(create_agent("dqn", SHORT), Scenario("intersection"), episodes=1)
