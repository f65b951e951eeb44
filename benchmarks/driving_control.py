"""Driving control on highway-fast: DQN with highway-env's published settings against the IDM and random drivers on
the same 100 seeded episodes; a DQN ensemble with and without its uncertainty fallback, in the training traffic and
in denser, unseen traffic; and the DQN driving from a detector's boxes instead of the simulator's state.

Agents train through ``kind: driving`` runs from the bundled configs (``dqn_highway_fast.yaml``,
``ensemble_highway_fast.yaml``: 20 k steps, seed 0), or are taken from finished run folders (``--dqn-run``,
``--ensemble-run``). Every agent is then evaluated here on test seeds 20 000 … 20 099 (never seen in training or
validation); a crash is highway-env's ``info["crashed"]``. Denser traffic: ``vehicles_density`` 2.0 instead of 1.0,
with target speeds 10–30 m/s instead of 20–30 (in denser traffic the car ahead is often slower than 20 m/s).
Perception: the DQN's kinematics rows rebuilt from boxes on the rendered 400 × 200 frame (the size tujie_vision's
scene generator trains YOLO on), by the ground-truth ``oracle`` and, with ``--detector yolo:RUN_DIR`` (a tujie_vision
detection run), by a trained YOLO.

    python benchmarks/driving_control.py [--quick] [--json PATH] [--parts control,safety,perception]
        [--dqn-run DIR] [--ensemble-run DIR] [--episodes 100] [--perception-episodes 50] [--detector yolo:RUN_DIR]

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
from tujie_driving import (
    Agent,
    Evaluation,
    Scenario,
    bundled_config,
    comparison_table,
    create_agent,
    evaluate,
    make_env,
)
from tujie_driving.perception import PerceivedKinematics

VIEW = {"screen_width": 400, "screen_height": 200}  # the frames tujie_vision's scene generator trains YOLO on
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


def rows_of(name: str, result: Evaluation, *metrics: str) -> list[Row]:
    """Rows without an anchor: each of ``metrics`` of one evaluation's summary."""
    summary = result.summary()
    units = {"return": ("mean return", True, "return"), "crash_rate": ("crash rate", False, "share")}
    units["fallback_rate"] = ("fallback steps", False, "share")
    return [Row(name, units[m][0], summary[m], None, "–", None, units[m][1], units[m][2]) for m in metrics]


def control(dqn: Agent, learn_seconds: float | None, episodes: int) -> list[Row]:
    """The DQN against IDM and random on the same test seeds."""
    scenario = Scenario("highway-fast")
    results = {
        "dqn": evaluate(dqn, scenario, episodes, TEST_SEED, progress=True),
        "idm": evaluate(create_agent("idm", scenario), scenario, episodes, TEST_SEED),
        "random": evaluate(create_agent("random", scenario), scenario, episodes, TEST_SEED),
    }
    print(comparison_table(results))
    s = {name: r.summary() for name, r in results.items()}
    rows = [
        Row("DQN (published settings)", "mean return", s["dqn"]["return"], 19.7, ANCHOR, 26, True, "return"),
        Row("DQN (published settings)", "crash rate", s["dqn"]["crash_rate"], None, "–", 0.05, False, "share"),
        Row("DQN (published settings)", "episode length", s["dqn"]["length"], 25.2, ANCHOR, None, True, "steps"),
        *rows_of("IDM/MOBIL (rule-based)", results["idm"], "return", "crash_rate"),
        *rows_of("random", results["random"], "return", "crash_rate"),
        Row("DQN − IDM", "return, same seeds", s["dqn"]["return"] - s["idm"]["return"], None, "–", 0, True, "return"),
    ]
    if learn_seconds is not None:
        rows.append(Row("DQN", "learning wall time", learn_seconds, 26 * 60, ANCHOR, None, False, "s"))
    return rows


def safety(ensemble: Agent, episodes: int) -> list[Row]:
    """The ensemble with and without its IDM fallback, in the training traffic and in denser traffic."""
    rows = []
    for label, config in (("training traffic", {}), ("denser traffic (2.0)", DENSE)):
        where = Scenario("highway-fast", config)
        table = {}
        for fallback in ("none", "idm"):
            ensemble.with_fallback(fallback)
            table[f"ensemble, fallback {fallback}"] = evaluate(ensemble, where, episodes, TEST_SEED)
        table["idm"] = evaluate(create_agent("idm", where), where, episodes, TEST_SEED)
        print(f"\n{label}, threshold {ensemble.options['threshold']:.3g}\n{comparison_table(table)}")
        for name, result in table.items():
            extra = ("fallback_rate",) if "fallback idm" in name else ()
            rows += rows_of(f"{name}, {label}", result, "return", "crash_rate", *extra)
    return rows


def perception(dqn: Agent, episodes: int, detector: str | None) -> list[Row]:
    """The DQN from the simulator's state, from the oracle's boxes and from a trained detector's."""
    view = Scenario("highway-fast", VIEW)
    perceived = {"simulator state": evaluate(dqn, view, episodes, TEST_SEED)}
    detectors = {"oracle detector": "oracle"} | ({"YOLO detector": detector} if detector else {})
    for name, spec in detectors.items():
        env = PerceivedKinematics(make_env(view, render=True), spec)
        perceived[name] = evaluate(dqn, view, episodes, TEST_SEED, env=env)
    print(f"\nperception in the loop ({episodes} episodes)\n{comparison_table(perceived)}")
    return [
        row for name, result in perceived.items() for row in rows_of(f"DQN from {name}", result, "return", "crash_rate")
    ]


PARTS = ("control", "safety", "perception")


def main() -> None:
    def options(parser) -> None:
        parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
        parser.add_argument("--dqn-run", type=Path)
        parser.add_argument("--ensemble-run", type=Path)
        parser.add_argument("--episodes", type=int, default=100)
        parser.add_argument("--perception-episodes", type=int, default=50)
        parser.add_argument("--detector", help="NAME:RUN_DIR of a trained detector, e.g. yolo:runs/vehicles/…")

    args = parse_args(__doc__.splitlines()[0], options)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--parts: unknown part {unknown[0]} (one of {', '.join(PARTS)})")
    episodes, seen = (5, 3) if args.quick else (args.episodes, args.perception_episodes)
    wall = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "control" in parts or "perception" in parts:
            dqn, learn_seconds = trained("dqn_highway_fast", args.dqn_run, Path(tmp), args.quick)
            if "control" in parts:
                rows += control(dqn, learn_seconds, episodes)
            if "perception" in parts:
                rows += perception(dqn, seen, args.detector)
        if "safety" in parts:
            rows += safety(trained("ensemble_highway_fast", args.ensemble_run, Path(tmp), args.quick)[0], episodes)
    print(f"\nwall time {time.perf_counter() - wall:.0f} s")
    report("driving control (highway-fast)", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
