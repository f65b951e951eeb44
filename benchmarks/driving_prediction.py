"""Trajectory prediction ADE/FDE against constant velocity on held-out highway-env traffic (tujie_driving.prediction).

Traffic: seeded highway-fast episodes (5 Hz, the ego at its lowest target speed), every surrounding vehicle logged;
episodes split 70/15/15 by episode (different seeds), so no test window shares a track with training. Each model
(``trajectory/lstm``, ``trajectory/gru``, ``trajectory/transformer``; the bundled config with its model swapped) sees
2 s of history and predicts 3 s, trained through core's run layer with early stopping on validation MSE; ADE/FDE at
1, 2 and 3 s are measured on every window of the test episodes (stride 1), next to constant-velocity extrapolation of
the last observed state on the very same windows. Most highway windows are steady car following, where constant
velocity is already close; the "manoeuvres" rows repeat the 3 s scores on the test windows where constant velocity
misses by at least 1 m at 3 s (lane changes, braking).

    python benchmarks/driving_prediction.py [--quick] [--json PATH] [--episodes 60] [--duration 30] [--epochs 30]
        [--threads 1]

``--quick``: 16 episodes of 20 s and 8 epochs (≤ 2 min; not for figures). ``--threads``: torch CPU threads (small
recurrent models run fastest on one; more threads only contend on a busy machine).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import Row, parse_args, report

from tujie_driving.prediction import (
    Simulation,
    Windows,
    constant_velocity,
    evaluate_predictor,
    log_trajectories,
    train_predictor,
    trajectories,
)

ARCHS = ("lstm", "gru", "transformer")
SAME = "constant velocity on the same test samples"
HORIZONS = (1, 2, 3)


def main() -> None:
    def options(parser) -> None:
        parser.add_argument("--episodes", type=int, default=60)
        parser.add_argument("--duration", type=float, default=30.0, help="seconds per episode")
        parser.add_argument("--epochs", type=int, default=30)
        parser.add_argument("--threads", type=int, default=1)
        parser.add_argument("--seed", type=int, default=0)

    args = parse_args(__doc__.splitlines()[0], options)
    episodes, duration, epochs = (16, 20.0, 8) if args.quick else (args.episodes, args.duration, args.epochs)
    torch.set_num_threads(args.threads)
    wall = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        traffic = log_trajectories(Simulation(episodes=episodes, duration=duration, seed=args.seed))
        path = traffic.save(Path(tmp) / "traffic.npz")
        print(
            f"logged {len(traffic):,} states of {episodes} episodes in {time.perf_counter() - start:.0f} s", flush=True
        )
        split = trajectories(path=path, stride=1, seed=args.seed)
        assert split.test is not None
        history, future = split.test.tensors[0].numpy(), split.test.tensors[1].reshape(len(split.test), -1, 2).numpy()
        test = Windows(history, future, traffic.dt)
        missed = np.linalg.norm(constant_velocity(history, future.shape[1], test.dt)[:, -1] - future[:, -1], axis=-1)
        hard = Windows(history[missed >= 1.0], future[missed >= 1.0], test.dt)
        print(f"test: {len(test):,} windows, {len(hard):,} manoeuvres (constant velocity off by ≥ 1 m at 3 s)")
        baseline: dict[str, float] = {}
        for arch in ARCHS:
            start = time.perf_counter()
            result = train_predictor(
                [
                    f"output_dir={tmp}",
                    f"name={arch}",
                    f"data.path={path}",
                    "data.simulation=null",
                    f"data.seed={args.seed}",
                    f"model.name=trajectory/{arch}",
                    f"trainer.max_epochs={epochs}",
                    "trainer.early_stopping_patience=5",
                    f"trainer.seed={args.seed}",
                    "trainer.progress=none",
                ]
            )
            seconds = time.perf_counter() - start
            scores = evaluate_predictor(result.run_dir, test)
            baseline = scores["constant_velocity"]
            shown = ", ".join(f"{k} {v:.3f}" for k, v in scores["model"].items())
            print(f"{arch}: {seconds:.0f} s: {shown}", flush=True)
            name = f"highway-fast, trajectory/{arch}"
            rows += [
                Row(name, f"{m.upper()} @ {h} s", scores["model"][f"{m}_{h}s"], baseline[f"{m}_{h}s"], SAME,
                    baseline[f"{m}_{h}s"], False, "m")
                for h in HORIZONS for m in ("ade", "fde")
            ]  # fmt: skip
            if len(hard):
                hard_scores = evaluate_predictor(result.run_dir, hard, horizons=[3.0])
                hard_baseline = hard_scores["constant_velocity"]
                rows += [
                    Row(f"{name}, manoeuvres", f"{m.upper()} @ 3 s", hard_scores["model"][f"{m}_3s"],
                        hard_baseline[f"{m}_3s"], SAME, hard_baseline[f"{m}_3s"], False, "m")
                    for m in ("ade", "fde")
                ]  # fmt: skip
            rows.append(Row(name, "train wall time", seconds, None, "", None, False, "s"))
        rows += [
            Row("highway-fast, constant velocity", f"{m.upper()} @ {h} s", baseline[f"{m}_{h}s"], None, "", None,
                False, "m")
            for h in HORIZONS for m in ("ade", "fde")
        ]  # fmt: skip
    report("driving_prediction", args.quick, rows, args.json)
    print(f"\nwall time: {time.perf_counter() - wall:.0f} s ({episodes} episodes of {duration:g} s, {epochs} epochs)")


if __name__ == "__main__":
    main()
