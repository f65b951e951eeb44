"""Per-step overhead of the tujie Trainer over a plain PyTorch loop (same model, data, optimizer, steps).

The loops run alternately in short rounds; every optimizer step is timed from the end of the previous step (data
loading included). We report the median step time of each and the median over rounds of the per-round ratio
trainer / plain (goal ≤ 1.03),
with the trainer's training metrics off (the same work as the plain loop) and on (the default).
Anchor: Lightning's parity benchmark, "about 0.06 s slower per epoch" for an MNIST CNN (938 steps of 64).

    python benchmarks/core_overhead.py [--quick] [--json PATH]
"""

from __future__ import annotations

import itertools
import statistics
import time

import torch
from _common import Row, parse_args, report
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tujie_core import Callback, ClassificationTask, Trainer

MNIST_STEPS_PER_EPOCH = 938  # 60,000 / 64
ANCHOR = "Lightning docs, 'Benchmark performance vs. vanilla PyTorch' (MNIST CNN, 2020-12-16)"
WARMUP = 5


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def make_loader(steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * 64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (steps * 64,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)


def plain_loop(steps: int) -> list[float]:
    model, loader = make_model(), make_loader(steps)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = [time.perf_counter()]
    model.train()
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(times)][WARMUP:]


class StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer) -> None:
        self.times.append(time.perf_counter())

    def on_train_step_end(self, trainer, loss) -> None:
        self.times.append(time.perf_counter())


def trainer_loop(steps: int, train_metrics: bool) -> list[float]:
    timer = StepTimer()
    task = ClassificationTask(make_model(), num_classes=10, optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9})
    trainer = Trainer(accelerator="cpu", max_epochs=1, progress="none", train_metrics=train_metrics, callbacks=[timer])
    trainer.fit(task, make_loader(steps))
    return [b - a for a, b in itertools.pairwise(timer.times)][WARMUP:]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.set_num_threads(1)  # two cores shared with the OS: one intra-op thread gives far steadier step times
    rounds, steps = (6, 40) if args.quick else (16, 60)
    times: dict[str, list[float]] = {"plain": [], "trainer": [], "trainer+metrics": []}
    paired: dict[str, list[float]] = {"trainer": [], "trainer+metrics": []}
    for _ in range(rounds):  # short alternating rounds: slow drifts of the machine hit both loops alike
        plain = statistics.median(plain_loop(steps))
        times["plain"].append(plain)
        for key, metrics in (("trainer", False), ("trainer+metrics", True)):
            value = statistics.median(trainer_loop(steps, train_metrics=metrics))
            times[key].append(value)
            paired[key].append(value / plain)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = statistics.median(paired["trainer"])
    extra = (ratio - 1) * median["plain"] * MNIST_STEPS_PER_EPOCH
    rows = [
        Row("plain PyTorch loop", "median step time", median["plain"] * 1e3, None, "", None, False, "ms"),
        Row("tujie Trainer", "median step time", median["trainer"] * 1e3, None, "", None, False, "ms"),
        Row("tujie Trainer / plain loop", "step time ratio", ratio, None, "", 1.03, False, "×"),
        Row("tujie Trainer − plain loop", "extra time per MNIST epoch", extra, 0.06, ANCHOR, None, False, "s"),
        Row(
            "tujie Trainer + train metrics / plain loop",
            "step time ratio",
            median["trainer+metrics"] / median["plain"],
            None,
            "",
            None,
            False,
            "×",
        ),
    ]
    print(f"{rounds} rounds × {steps} steps each, batch 64, 28×28 CNN, {torch.get_num_threads()} threads")
    report("core_overhead", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
