"""A DP run in a fresh process (for SIGKILL + resume): a supervised config with the dp plugin, optionally killed
right after optimizer step ``--kill-at-step``. The run folder gets model/, dp.json and checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tujie_core import train_from_config
from tujie_core.runs import parse_config

sys.path.insert(0, str(Path(__file__).parents[2] / "core" / "scripts"))
from train_script import KillAt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--resume")
    parser.add_argument("--kill-at-step", type=int)
    args = parser.parse_args()
    config = parse_config(
        {
            "name": "dp-resume",
            "data": {"name": "breast_cancer", "batch_size": 32},
            "model": {"name": "mlp", "hidden": [16], "batch_norm": True},
            "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
            "trainer": {"max_epochs": 3, "checkpoint_every_n_steps": 4, "progress": "none", "micro_batch_size": 8},
            "plugins": [{"name": "dp", "epsilon": 2.0, "accountant": "rdp"}],
        }
    )
    callbacks = [KillAt(args.kill_at_step)] if args.kill_at_step else []
    train_from_config(config, resume=args.resume, callbacks=callbacks, run_dir=Path(args.run_dir))


if __name__ == "__main__":
    main()
