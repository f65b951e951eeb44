"""DP-SGD (tujie-privacy's dp plugin) on a driving model: a GRU trajectory predictor trains privately, spends no
more than its ε, and loads again as the DPGRU it trained as."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tujie_core import load_config, train_from_config
from tujie_driving import bundled_config
from tujie_driving.prediction import BUNDLED_CONFIG, TrajectoryPredictor


def test_a_trajectory_predictor_trains_with_dp_and_loads_again(tmp_path: Path) -> None:
    overrides = [f"output_dir={tmp_path}", "model.name=trajectory/gru", "trainer.max_epochs=1"]
    overrides += ["trainer.progress=none", "data.simulation.episodes=3", "data.simulation.duration=8"]
    config = load_config(bundled_config(BUNDLED_CONFIG), overrides, plugins={"dp": "epsilon=3"})
    result = train_from_config(config)
    facts = json.loads((result.run_dir / "dp.json").read_text())
    assert 0 < facts["epsilon"] <= 3.0
    predictor = TrajectoryPredictor.load(result.run_dir)
    assert type(predictor.model.encoder.rnn).__name__ == "DPGRU"
    history = np.zeros((2, predictor.history_steps, 4))
    history[..., 2] = 20.0  # 20 m/s along x
    history[..., 0] = np.arange(predictor.history_steps) * 20.0 * predictor.dt
    assert predictor.predict(history).shape == (2, predictor.future_steps, 2)
