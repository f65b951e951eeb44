"""Environment throughput: highway-fast steps per second, one environment in this process against one per core in
worker processes (SB3 ``SubprocVecEnv``, what ``tujie_driving.make_vec_env`` builds for training).

Both drive random meta-actions from the same seeds for the same number of steps per environment (episodes that end
reset automatically); the rate is all environments' steps over wall time, after one warm-up step.

    python benchmarks/driving_throughput.py [--quick] [--json PATH] [--steps 1500] [--scenario highway-fast]
"""

from __future__ import annotations

import time

import numpy as np
from _common import Row, parse_args, report

from tujie_driving.scenarios import Scenario, default_envs, make_vec_env


def rate(scenario: Scenario, n_envs: int, steps: int, subprocess: bool) -> float:
    """Environment steps per second of ``n_envs`` environments stepping together ``steps`` times."""
    venv = make_vec_env(scenario, n_envs=n_envs, seed=0, subprocess=subprocess)
    rng = np.random.default_rng(0)
    try:
        venv.reset()
        venv.step(rng.integers(5, size=n_envs))
        start = time.perf_counter()
        for _ in range(steps):
            venv.step(rng.integers(5, size=n_envs))
        return n_envs * steps / (time.perf_counter() - start)
    finally:
        venv.close()


def main() -> None:
    def options(parser) -> None:
        parser.add_argument("--steps", type=int, default=1500, help="steps per environment")
        parser.add_argument("--scenario", default="highway-fast")

    args = parse_args(__doc__.splitlines()[0], options)
    steps = 150 if args.quick else args.steps
    scenario = Scenario(args.scenario)
    cores = default_envs()
    single = rate(scenario, 1, steps, subprocess=False)
    vectorised = rate(scenario, cores, steps, subprocess=True)
    print(f"{args.scenario}: 1 environment {single:.1f} steps/s; {cores} in processes {vectorised:.1f} steps/s")
    source = "one environment in this process, same machine"
    rows = [
        Row(f"{args.scenario}, 1 env", "steps/s", single, None, "–", None, True, "steps/s"),
        Row(
            f"{args.scenario}, {cores} envs (SubprocVecEnv)",
            "steps/s",
            vectorised,
            single,
            source,
            None,
            True,
            "steps/s",
        ),
        Row(f"{args.scenario}, speed-up", f"× on {cores} cores", vectorised / single, 1.0, source, 1.8, True, "×"),
    ]
    report("driving environment throughput", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
