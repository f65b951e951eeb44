"""Driving control on highway-fast: DQN with highway-env's published settings against the IDM and random drivers on
the same 100 seeded episodes; a DQN ensemble with and without its uncertainty fallback, in the training traffic and
in denser, unseen traffic; and the DQN driving from a detector's boxes instead of the simulator's state.

Agents train through ``kind: driving`` runs from the bundled configs (``dqn_highway_fast.yaml``,
``ensemble_highway_fast.yaml``: 20 k steps, seed 0), or are taken from finished run folders (``--dqn-run``,
``--ensemble-run``). Every agent is then evaluated here on test seeds 20 000 … 20 099 (never seen in training or
validation); a crash is highway-env's ``info["crashed"]``. Denser traffic: ``vehicles_density`` 2.0 instead of 1.0,
with target speeds 10–30 m/s instead of 20–30 (in denser traffic the car ahead is often slower than 20 m/s).
Perception: the DQN's kinematics rows rebuilt from boxes on the rendered frame, by the ground-truth ``oracle`` and,
with ``--detector yolo:RUN_DIR`` (a tujie_vision detection run), by a trained YOLO.

    python benchmarks/driving_control.py [--quick] [--json PATH] [--dqn-run DIR] [--ensemble-run DIR]
        [--episodes 100] [--perception-episodes 50] [--detector yolo:RUN_DIR]

Anchor: highway-env's maintainers report mean return 19.7 and episode length 25.2 of 30 for their DQN script after
2 × 10⁴ steps, 26 min at 12 steps/s (HighwayEnv issue #460).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _common import Row, parse_args, report

from tujie_core import load_config, train_from_config
from tujie_driving import Agent, Scenario, comparison_table, create_agent, evaluate, make_env
from tujie_driving.perception import PerceivedKinematics
from tujie_driving.prediction import bundled_config

ANCHOR = "HighwayEnv issue #460 (official DQN script, 2e4 steps)"
TEST_SEED = 20_000
# denser traffic than training, with the lower target speeds it needs (at highway-fast's 20–30 m/s even a driver that
# only brakes hits the car ahead in most episodes at density 1.5); the action space stays the same five meta-actions
DENSE = {"vehicles_density": 2.0, "action": {"type": "DiscreteMetaAction", "target_speeds": [10, 15, 20, 25, 30]}}


def trained(config: str, run: Path | None, output: Path, quick: bool) -> tuple[Agent, float | None]:
    """The agent of ``run``, or of a fresh run of the bundled ``config``; its learning wall time when known."""
    if run is None:
        overrides = [f"output_dir={output}", "progress=false", "evaluation.test_episodes=0", "evaluation.render=false"]
        if quick:
            overrides += ["steps=600", "evaluation.every=300", "evaluation.episodes=2", "agent.learning_starts=100"]
        run = train_from_config(load_config(bundled_config(config), overrides)).run_dir
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    print(f"{config}: {run} ({summary['steps']} steps, kept the agent of step {summary.get('kept_steps')})")
    return Agent.load(run), summary.get("learn_seconds")


def main() -> None:
    def options(parser) -> None:
        parser.add_argument("--dqn-run", type=Path)
        parser.add_argument("--ensemble-run", type=Path)
        parser.add_argument("--episodes", type=int, default=100)
        parser.add_argument("--perception-episodes", type=int, default=50)
        parser.add_argument("--detector", help="NAME:RUN_DIR of a trained detector, e.g. yolo:runs/vehicles/…")

    args = parse_args(__doc__.splitlines()[0], options)
    episodes, seen = (5, 3) if args.quick else (args.episodes, args.perception_episodes)
    wall = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        dqn, learn_seconds = trained("dqn_highway_fast", args.dqn_run, Path(tmp), args.quick)
        scenario = Scenario("highway-fast")
        results = {
            "dqn": evaluate(dqn, scenario, episodes, TEST_SEED, progress=True),
            "idm": evaluate(create_agent("idm", scenario), scenario, episodes, TEST_SEED),
            "random": evaluate(create_agent("random", scenario), scenario, episodes, TEST_SEED),
        }
        print(comparison_table(results))
        s = {name: r.summary() for name, r in results.items()}
        rows += [
            Row("DQN (published settings)", "mean return", s["dqn"]["return"], 19.7, ANCHOR, 26, True, "return"),
            Row("DQN (published settings)", "crash rate", s["dqn"]["crash_rate"], None, "–", 0.05, False, "share"),
            Row("DQN (published settings)", "episode length", s["dqn"]["length"], 25.2, ANCHOR, None, True, "steps"),
            Row("IDM/MOBIL (rule-based)", "mean return", s["idm"]["return"], None, "–", None, True, "return"),
            Row("IDM/MOBIL (rule-based)", "crash rate", s["idm"]["crash_rate"], None, "–", None, False, "share"),
            Row("random", "mean return", s["random"]["return"], None, "–", None, True, "return"),
            Row(
                "DQN − IDM", "return, same seeds", s["dqn"]["return"] - s["idm"]["return"], None, "–", 0, True, "return"
            ),
        ]
        if learn_seconds is not None:
            rows.append(Row("DQN", "learning wall time", learn_seconds, 26 * 60, ANCHOR, None, False, "s"))

        ensemble, _ = trained("ensemble_highway_fast", args.ensemble_run, Path(tmp), args.quick)
        threshold = ensemble.options["threshold"]
        for label, config in (("training traffic", {}), ("denser traffic (2.0)", DENSE)):
            where = Scenario("highway-fast", config)
            table = {}
            for fallback in ("none", "idm"):
                ensemble.with_fallback(fallback)
                table[f"ensemble, fallback {fallback}"] = evaluate(ensemble, where, episodes, TEST_SEED)
            table["idm"] = evaluate(create_agent("idm", where), where, episodes, TEST_SEED)
            print(f"\n{label}, threshold {threshold:.3g}\n{comparison_table(table)}")
            for name, result in table.items():
                summary = result.summary()
                rows.append(
                    Row(f"{name}, {label}", "crash rate", summary["crash_rate"], None, "–", None, False, "share")
                )
                rows.append(Row(f"{name}, {label}", "mean return", summary["return"], None, "–", None, True, "return"))
                if "fallback idm" in name:
                    rows.append(
                        Row(
                            f"{name}, {label}",
                            "fallback steps",
                            summary["fallback_rate"],
                            None,
                            "–",
                            None,
                            False,
                            "share",
                        )
                    )

        perceived = {"simulator state": evaluate(dqn, scenario, seen, TEST_SEED)}
        detectors = {"oracle detector": "oracle"} | (
            {"detector " + args.detector: args.detector} if args.detector else {}
        )
        for name, spec in detectors.items():
            env = PerceivedKinematics(make_env(scenario, render=True), spec)
            perceived[name] = evaluate(dqn, scenario, seen, TEST_SEED, env=env)
        print(f"\nperception in the loop ({seen} episodes)\n{comparison_table(perceived)}")
        for name, result in perceived.items():
            summary = result.summary()
            rows.append(Row(f"DQN from {name}", "mean return", summary["return"], None, "–", None, True, "return"))
            rows.append(Row(f"DQN from {name}", "crash rate", summary["crash_rate"], None, "–", None, False, "share"))
    print(f"\nwall time {time.perf_counter() - wall:.0f} s")
    report("driving control (highway-fast)", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
