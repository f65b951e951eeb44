"""The driving part of ``tujie demo``: tabular Q-learning learns highway-fast briefly and is tested against the IDM
and random drivers on the same seeded episodes; a GRU learns to predict the surrounding traffic's next 3 s and is
scored against constant velocity on held-out episodes."""

from __future__ import annotations

from pathlib import Path

from tujie_core.demo import DemoResult


def driving_demo(output_dir: Path, quick: bool = False) -> DemoResult:
    from tujie_core import load_config, train_from_config
    from tujie_driving import bundled_config
    from tujie_driving.prediction import BUNDLED_CONFIG, evaluate_predictor, trajectories

    steps, every, tests = (300, 300, 3) if quick else (3000, 1000, 20)
    control = [f"output_dir={output_dir}", "progress=false", f"steps={steps}", f"evaluation.every={every}"]
    control += ["evaluation.episodes=3", f"evaluation.test_episodes={tests}"]
    driven = train_from_config(load_config(bundled_config("qlearning_highway_fast"), control))
    results = driven.details["evaluations"]
    metrics = {}
    for name, result in results.items():
        summary = result.summary()
        metrics[f"{name} return"] = summary["return"]
        metrics[f"{name} crash rate"] = summary["crash_rate"]
    episodes, duration = (3, 10) if quick else (8, 20)
    predict = [f"output_dir={output_dir}", "name=predict-gru", "model.name=trajectory/gru", "trainer.progress=none"]
    predict += [f"data.simulation.episodes={episodes}", f"data.simulation.duration={duration}"] + (
        ["trainer.max_epochs=1"] if quick else []
    )
    config = load_config(bundled_config(BUNDLED_CONFIG), predict)
    predicted = train_from_config(config)
    scores = evaluate_predictor(predicted.run_dir, trajectories(**config.data.params).test, horizons=[3.0])
    metrics["GRU trajectory ADE 3 s (m)"] = scores["model"]["ade_3s"]
    metrics["constant velocity ADE 3 s (m)"] = scores["constant_velocity"]["ade_3s"]
    notes = [f"control report: {driven.report}", f"prediction report: {predicted.report}"]
    return DemoResult("driving: Q-learning vs IDM/random, GRU trajectories", metrics, driven.run_dir, notes)
