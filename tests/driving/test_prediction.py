"""Trajectory prediction: simulator logging, files, frames, models, training through core, ADE/FDE vs constant
velocity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tujie_core import ConfigError, DataError, DataSplits, RegressionTask, Trainer, create_model
from tujie_driving.prediction import (
    Curves,
    Simulation,
    Trajectories,
    TrajectoryPredictor,
    ade_fde,
    constant_velocity,
    evaluate_predictor,
    log_trajectories,
    make_windows,
    predict_file,
    split_episodes,
    train_predictor,
    trajectories,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and far faster than two on a busy two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_models_build_and_start_at_constant_velocity() -> None:
    history = torch.randn(3, 11, 4)
    baseline = constant_velocity(history.numpy(), 15, 0.2).reshape(3, -1)
    for arch in ("lstm", "gru", "transformer"):
        model = create_model(f"trajectory/{arch}", input_shape=(11, 4), num_outputs=30, dt=0.2, hidden=16)
        assert model(history).shape == (3, 30)
        np.testing.assert_allclose(model(history).detach().numpy(), baseline, atol=1e-5)
    with pytest.raises(ConfigError, match="did you mean 'lstm'"):
        create_model("trajectory/lstn", input_shape=(11, 4), num_outputs=30, dt=0.2)
    with pytest.raises(ConfigError, match="multiple of heads"):
        create_model("trajectory/transformer", input_shape=(11, 4), num_outputs=30, dt=0.2, hidden=30, heads=4)
    with pytest.raises(ConfigError, match="dt"):
        create_model("trajectory/gru", input_shape=(11, 4), num_outputs=30)


def test_ade_fde_and_world_frame_prediction() -> None:
    true = np.zeros((2, 10, 2))
    scores = ade_fde(true + np.array([3.0, 4.0]), true, 0.5)
    assert scores == {"ade_1s": 5.0, "fde_1s": 5.0, "ade_2s": 5.0, "fde_2s": 5.0, "ade_3s": 5.0, "fde_3s": 5.0,
                      "ade_4s": 5.0, "fde_4s": 5.0, "ade_5s": 5.0, "fde_5s": 5.0}  # fmt: skip
    with pytest.raises(ConfigError, match="horizons"):
        ade_fde(true, true, 0.5, horizons=[6.0])
    # an untrained model is constant velocity in any world frame: checks the agent-frame round trip
    model = create_model("trajectory/gru", input_shape=(5, 4), num_outputs=6, dt=0.1, hidden=8)
    predictor = TrajectoryPredictor(model, dt=0.1, history_steps=5, future_steps=3)
    t = np.arange(5)[:, None] * 0.1
    velocity = np.array([[3.0, -4.0]])
    history = np.concatenate([[10.0, 20.0] + velocity * t, np.repeat(velocity, 5, 0)], axis=1)
    np.testing.assert_allclose(
        predictor.predict(history), history[-1, :2] + velocity * [[0.1], [0.2], [0.3]], atol=1e-4
    )
    with pytest.raises(DataError, match=r"\(N, 5, 4\)"):
        predictor.predict(history[:4])


def test_simulator_logs_plausible_reproducible_tracks() -> None:
    sim = Simulation(episodes=2, duration=3, seed=7)
    traffic = log_trajectories(sim)
    assert traffic.dt == pytest.approx(0.2)
    assert list(traffic.episodes) == [0, 1] and np.isfinite(traffic.state).all()
    assert len(np.unique(traffic.vehicle[traffic.episode == 0])) >= 5
    speed = np.hypot(traffic.state[:, 2], traffic.state[:, 3])
    assert 10 < speed.mean() < 40 and speed.max() < 45  # highway speeds, m/s
    for track in (t.state for t in traffic.tracks()):
        assert len(track) == 16  # 3 s at 5 Hz, both ends
        # highway-env moves a vehicle by its speed × dt (Euler; in the direction of heading + slip angle)
        moved = np.linalg.norm(np.diff(track[:, :2], axis=0), axis=1)
        np.testing.assert_allclose(moved, np.hypot(track[:-1, 2], track[:-1, 3]) * traffic.dt, atol=1e-3)
    again = log_trajectories(sim)
    np.testing.assert_array_equal(again.state, traffic.state)


def test_files_round_trip_and_bad_rows_are_named(tmp_path: Path) -> None:
    traffic = log_trajectories(Simulation(episodes=1, duration=2))
    traffic.labels = {"vehicle": [f"car{i}" for i in range(traffic.vehicle.max() + 1)]}
    for name in ("traffic.npz", "traffic.csv"):
        loaded = Trajectories.load(traffic.save(tmp_path / name))
        assert loaded.dt == pytest.approx(traffic.dt)
        assert loaded.label("vehicle", 3) == "car3" and loaded.label("episode", 0) == "0"
        np.testing.assert_allclose(loaded.state, traffic.state, atol=1e-6)
    header = "episode,vehicle,t,x,y,vx,vy\n"
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "a,car1,0.0,1,2,3,0\na,car1,0.1,abc,2,3,0\n")
    with pytest.raises(DataError, match=r"bad.csv: row 3, column 'x': 'abc' is not a number"):
        Trajectories.load(bad)
    bad.write_text(header + "a,car1,0.0,1,2,3,0\na,car1,0.0,1,2,3,0\n")
    with pytest.raises(DataError, match="row 3: a second state"):
        Trajectories.load(bad)
    bad.write_text("episode,vehicle,t,x,y,vx\n1,1,0,0,0,0\n")
    with pytest.raises(DataError, match=r"no column\(s\) vy"):
        Trajectories.load(bad)
    with pytest.raises(ConfigError, match="give one of"):
        trajectories(path=bad, curves=Curves(tracks=3))


def test_splits_are_by_episode() -> None:
    train, val, test = split_episodes(np.arange(10), 0.2, 0.2, seed=0)
    assert (len(train), len(val), len(test)) == (6, 2, 2)
    assert sorted(np.concatenate([train, val, test])) == list(range(10))
    with pytest.raises(DataError, match="log more episodes"):
        split_episodes(np.arange(2), 0.2, 0.2, seed=0)
    windows = make_windows(_straight(), history=1.0, future=1.0, stride=3)
    assert windows.history.shape == (4, 6, 4) and windows.future.shape == (4, 5, 2)  # 11 windows, every third
    np.testing.assert_allclose(windows.history[0, -1], [0, 0, 10, 0], atol=1e-5)  # heading along +x
    np.testing.assert_allclose(windows.future[0], [[2 * k, 0] for k in range(1, 6)], atol=1e-5)


def _straight() -> Trajectories:
    """One vehicle at 10 m/s along y for 4 s, 5 Hz."""
    t = np.arange(21) * 0.2
    state = np.stack([np.zeros_like(t), 10 * t, np.zeros_like(t), np.full_like(t, 10.0)], axis=1)
    return Trajectories(np.zeros(21, int), np.zeros(21, int), t, state, 0.2)


@pytest.fixture(scope="module")
def curves() -> DataSplits:
    return trajectories(curves=Curves(tracks=150, duration=6), history=1.0, future=2.0, stride=2)


@pytest.mark.parametrize("arch", ["lstm", "gru", "transformer"])
def test_predictor_beats_constant_velocity_on_curves(curves: DataSplits, arch: str) -> None:
    torch.manual_seed(0)
    info = curves.info
    model = create_model(
        f"trajectory/{arch}", input_shape=info.input_shape, num_outputs=info.num_outputs, hidden=32, **info.model_args
    )
    task = RegressionTask(model, optimizer={"name": "adamw", "lr": 0.01})
    trainer = Trainer(max_epochs=12, progress="none", accelerator="cpu")
    trainer.fit(task, DataLoader(curves.train, batch_size=64, shuffle=True), DataLoader(curves.val, batch_size=512))
    meta = info.metadata["trajectory"]
    predictor = TrajectoryPredictor(model, meta["dt"], meta["history_steps"], meta["future_steps"])
    scores = evaluate_predictor(predictor, curves.test)
    ours, baseline = scores["model"], scores["constant_velocity"]
    assert baseline["fde_2s"] > 5.0  # constant velocity cannot turn
    assert ours["ade_2s"] < 0.25 * baseline["ade_2s"] and ours["fde_2s"] < 0.25 * baseline["fde_2s"]


def test_bundled_config_trains_and_loads(tmp_path: Path) -> None:
    result = train_predictor(
        [
            f"output_dir={tmp_path}",
            "data.simulation.episodes=3",
            "data.simulation.duration=6",
            "model.hidden=16",
            "trainer.max_epochs=1",
            "trainer.progress=none",
        ]
    )
    assert np.isfinite(result.metrics["test/rmse"])
    predictor = TrajectoryPredictor.load(result.run_dir)
    assert (predictor.dt, predictor.history_steps, predictor.future_steps) == (0.2, 11, 15)
    traffic = log_trajectories(Simulation(episodes=1, duration=6, seed=100))
    windows = make_windows(traffic)
    scores = evaluate_predictor(result.run_dir, windows)
    assert set(scores["model"]) == {f"{m}_{h}s" for m in ("ade", "fde") for h in (1, 2, 3)}
    assert scores["model"]["fde_3s"] < 10 * scores["constant_velocity"]["fde_3s"] + 1.0  # sane after one epoch
    first = traffic.tracks()[0]
    assert predictor.predict(first.state[:11]).shape == (15, 2)
    # a user's CSV with named episodes and vehicles, one track too short to predict from
    traffic.labels = {"episode": ["drive-a"], "vehicle": [f"car{i}" for i in range(traffic.vehicle.max() + 1)]}
    short = Trajectories(np.zeros(3, int), np.zeros(3, int), np.arange(3) * 0.2, np.ones((3, 4)), 0.2)
    short.labels = {"episode": ["drive-b"], "vehicle": ["bike"]}
    data = tmp_path / "tracks.csv"
    data.write_text(traffic.save(tmp_path / "a.csv").read_text() + short.save(tmp_path / "b.csv").read_text()[28:])
    done = predict_file(result.run_dir, data, tmp_path / "predictions.csv")
    assert done.warnings == ["1 of 21 tracks are shorter than 11 states: no prediction"]
    same_windows = {f"{k}/{m}": v for k in scores for m, v in scores[k].items()}
    assert done.metrics == pytest.approx(same_windows, rel=1e-5)
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(lines) == 1 + done.rows == 1 + 20 * 21 * 15  # 20 tracks × 21 points with 2 s behind × 15 horizons
    label = traffic.label("vehicle", first.vehicle)
    x, y = predictor.predict(first.state[:11])[14]
    assert lines[15].split(",")[:4] == ["drive-a", label, "2", "3"]
    np.testing.assert_allclose([float(v) for v in lines[15].split(",")[4:]], [x, y], rtol=1e-6)
    with pytest.raises(ConfigError, match=r"data\.simulation\.episdes: unknown key"):
        train_predictor([f"output_dir={tmp_path}", "data.simulation.episdes=3"])
