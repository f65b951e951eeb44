"""Training process driven by tests that need a fresh process: SIGKILL + resume, and multi-process DDP.

Writes the final weights to --out (safetensors).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

from lightning.fabric import seed_everything
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, Subset, SubsetRandomSampler, WeightedRandomSampler

from tujie_core import Callback, ClassificationTask, Trainer, create_model
from tujie_core.data import digits


class KillAt(Callback):
    """SIGKILL this process right after optimizer step ``step`` (before any checkpoint of that step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_step_end(self, trainer, loss) -> None:
        if trainer.state.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NonFiniteOnRank(ClassificationTask):
    """The loss turns NaN on one process only, at one optimizer step."""

    def __init__(self, *args, rank: int, step: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rank, self.at_step, self.calls = rank, step, 0

    def loss(self, outputs, target):
        self.calls += 1
        loss = super().loss(outputs, target)
        if int(os.environ.get("LOCAL_RANK", "0")) == self.rank and self.calls == self.at_step:
            return loss * float("nan")
        return loss


class IndexLog(Dataset):
    """The wrapped dataset, noting every index this process reads."""

    def __init__(self, data) -> None:
        self.data, self.seen = data, []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        self.seen.append(int(index))
        return self.data[index]


def custom_sampler(name: str, size: int):
    if name == "subset":  # the first 64 rows only, in a random order
        return SubsetRandomSampler(range(64))
    return WeightedRandomSampler([0.0] * 9 + [1.0] + [0.0] * (size - 10), num_samples=64)  # only row 9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-dir")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=0, help="use only the first N training samples")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--ema-decay", type=float)
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--nan-on-rank", type=int, help="make the loss NaN on this process at step 3")
    parser.add_argument("--sampler", choices=["subset", "weighted"], help="a custom sampler for the training data")
    parser.add_argument("--index-log", help="write the training rows each process read to INDEX_LOG.rank<r>.json")
    args = parser.parse_args()

    seed_everything(0, verbose=False)
    splits = digits(val_fraction=0.1, test_fraction=0.0)
    train = splits.train if not args.samples else Subset(splits.train, range(args.samples))
    train = IndexLog(train) if args.index_log else train
    sampler = custom_sampler(args.sampler, len(train)) if args.sampler else None
    model = create_model("mlp", input_shape=(64,), num_outputs=10, hidden=[32], dropout=args.dropout)
    options = {"num_classes": 10, "optimizer": {"name": args.optimizer, "lr": 0.05}}
    if args.nan_on_rank is not None:
        task = NonFiniteOnRank(model, rank=args.nan_on_rank, step=3, **options)
    else:
        task = ClassificationTask(model, **options)
    callbacks = [KillAt(args.kill_at_step)] if args.kill_at_step else []
    trainer = Trainer(
        accelerator="cpu",
        devices=args.devices,
        max_epochs=args.epochs,
        checkpoint_every_n_steps=args.checkpoint_every,
        ema_decay=args.ema_decay,
        progress="none",
        deterministic=True,
        callbacks=callbacks,
        run_dir=args.run_dir,
    )
    trainer.fit(
        task,
        DataLoader(train, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler),
        DataLoader(splits.val, batch_size=128),
        ckpt_path=args.resume,
    )
    if args.index_log:
        Path(f"{args.index_log}.rank{trainer.fabric.global_rank}.json").write_text(json.dumps(train.seen))
    if trainer.fabric.is_global_zero:
        save_file({k: v.contiguous() for k, v in task.model.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
