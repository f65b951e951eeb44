"""DP-SGD with the dp plugin: accuracy at ε ∈ {1, 3, 8} against non-private training, DP step time, the
membership-inference audit and peak memory.

1. **Digits CNN** (the core ``cnn`` with ``norm: group`` on scikit-learn's 8×8 digits: the architecture DP
   needs, in every run): test accuracy at each ε (δ = 1e-5, PRV accountant) and without
   DP. Anchors: Opacus' MNIST CNN, ε = 1.16 → 94.6 %, ε = 2.91 → 96.8 %, non-private 98.9 % (MNIST is 60,000
   28×28 images; digits has 1,257 training images, so each sample costs more privacy: expect lower figures).
2. **SST-2** (MiniLM-L6, ``$TUJIE_DATA_DIR/sst2``): the top ``--sst2-layers`` transformer layers and the head train,
   embeddings and lower layers stay frozen (full DP fine-tuning on two CPU cores is days); dev accuracy at each ε
   and without DP, on ``--sst2-rows`` training rows. Anchor: Li et al. 2021 (RoBERTa-base, full fine-tuning,
   ε = 3) ≈ 92 %. Goal: ≥ 85 % at ε = 3.
3. **Step time**: median optimizer-step time with DP / without, same model (the digits CNN and an MLP), same
   logical batch, ghost clipping (default) and per-sample hooks. Anchors: Opacus' hooks ≈ 2–3×, ghost ≈ 1.2×.
   Goal ≤ 1.5×. The small models' steps take 1–8 ms, where the hooks' fixed cost per layer dominates; the
   2048-wide MLP shows the ratio once the arithmetic dominates.
4. **Audit**: an MLP on 107 digits (``--audit-train-fraction 0.06``) trained 100 epochs (overfitting) without
   DP, and the same at ε = 1; loss attack and LiRA (4 reference models): non-DP AUC ≥ 0.60, ε = 1 AUC ≤ 0.55;
   canary ε̂ ≤ ε in every DP run.
5. **Peak memory**: how much a fresh process's peak RSS grows during one epoch of the digits CNN (batch 1,024),
   with and without DP, at the same physical batch.

    python benchmarks/privacy_dp.py [--quick] [--json PATH] [--parts digits,sst2,speed,audit,memory]
        [--epsilons 1,3,8] [--sst2-rows N] [--sst2-epochs N] [--sst2-layers N] [--sst2-batch B] [--sst2-lr LR]
        [--no-sst2-baseline] [--audit-train-fraction F] [--seed S]

``--quick``: ε = 3 and no DP only, fewer epochs, no canaries, no 2048-wide MLP, and no SST-2 unless
``--parts`` names it (then 2,000 rows, one epoch).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _common import Row, data_dir, parse_args, report

from tujie_core import Callback, train_from_config
from tujie_core.runs import parse_config

warnings.filterwarnings("ignore", message="Full backward hook is firing")
warnings.filterwarnings("ignore", message="Optimal order is the")
OPACUS_MNIST = {1: (94.6, "Opacus MNIST CNN, ε = 1.16"), 3: (96.8, "Opacus MNIST CNN, ε = 2.91"), 8: (None, "")}
OPACUS_PLAIN = (98.9, "Opacus MNIST CNN, non-private")
LI_SST2 = (92.0, "Li et al. 2021, RoBERTa-base full fine-tuning, ε = 3")


class StepTimer(Callback):
    """Wall time of every optimizer step inside an epoch (epoch ends, validation and ε accounting excluded)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.last: float | None = None

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.last = time.perf_counter()

    def on_train_step_end(self, trainer: Any, loss: Any) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def digits_config(model: dict, epochs: int, epsilon: float | None, seed: int, **data: Any) -> dict:
    plugins = [] if epsilon is None else [{"name": "dp", "epsilon": epsilon, "max_grad_norm": 1.0}]
    return {
        "name": "digits",
        "output_dir": tempfile.mkdtemp(),
        "data": {"name": "digits", "batch_size": 128, "as_image": model["name"] == "cnn", **data},
        "model": model,
        "optimizer": {"name": "adamw", "lr": 0.01},
        "trainer": {"max_epochs": epochs, "progress": "none", "seed": seed, "monitor": "val/accuracy", "mode": "max"},
        "plugins": plugins,
    }


PARTS = "digits,sst2,speed,audit,memory"
CNN = {"name": "cnn", "channels": [32, 64], "dropout": 0.0, "norm": "group"}  # DP's GroupNorm in every run


def part_digits(args: argparse.Namespace, epsilons: list[float]) -> list[Row]:
    rows = []
    epochs = 10 if args.quick else 30
    plain = train_from_config(parse_config(digits_config(CNN, epochs, None, args.seed)))
    plain_acc = 100 * plain.metrics["test/accuracy"]
    print(f"digits CNN, no DP: {plain_acc:.2f} %", flush=True)
    rows.append(Row("digits CNN, no DP", "test accuracy", plain_acc, *OPACUS_PLAIN, None, True, "%"))
    for eps in epsilons:
        start = time.perf_counter()
        result = train_from_config(parse_config(digits_config(CNN, epochs, eps, args.seed)))
        acc = 100 * result.metrics["test/accuracy"]
        spent = json.loads((result.run_dir / "dp.json").read_text())["epsilon"]
        print(
            f"digits CNN, ε = {eps}: {acc:.2f} % (spent {spent:.3f}, {time.perf_counter() - start:.0f} s)", flush=True
        )
        anchor, source = OPACUS_MNIST.get(int(eps), (None, ""))
        rows.append(
            Row(f"digits CNN, ε = {eps:g} (spent {spent:.2f})", "test accuracy", acc, anchor, source, None, True, "%")
        )
    return rows


def part_sst2(args: argparse.Namespace, epsilons: list[float]) -> list[Row]:
    folder = data_dir() / "sst2"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        header, *lines = (folder / "train.tsv").read_text(encoding="utf-8").splitlines()
        random.Random(args.seed).shuffle(lines)
        n = 2000 if args.quick else args.sst2_rows
        train = Path(tmp) / "train.tsv"
        train.write_text("\n".join([header, *lines[:n]]) + "\n", encoding="utf-8")
        for eps in ([None] if args.sst2_baseline else []) + epsilons:
            plugins = [] if eps is None else [{"name": "dp", "epsilon": eps, "max_grad_norm": 0.1}]
            config = {
                "kind": "text_classification",
                "name": "sst2-dp",
                "output_dir": tmp,
                "encoder": "minilm-l6",
                "transfer": {"freeze_embeddings": True, "freeze_layers": 6 - args.sst2_layers},
                "data": {
                    "train": str(train),
                    "val": str(folder / "dev.tsv"),
                    "text_column": "sentence",
                    "max_length": 66,
                    "batch_size": args.sst2_batch,
                },
                "optimizer": {"name": "adamw", "lr": args.sst2_lr if eps is not None else 2e-4, "weight_decay": 0.01},
                "warmup_ratio": 0.06,
                "trainer": {
                    "max_epochs": 1 if args.quick else args.sst2_epochs,
                    "micro_batch_size": 64,
                    "monitor": "val/accuracy",
                    "mode": "max",
                    "progress": "plain",
                    "log_every_n_steps": 20,
                    "seed": args.seed,
                },
                "plugins": plugins,
            }
            start = time.perf_counter()
            result = train_from_config(parse_config(config))
            wall = time.perf_counter() - start
            acc = 100 * result.metrics["val/accuracy"]
            label = "no DP" if eps is None else f"ε = {eps:g}"
            print(f"SST-2 MiniLM top-{args.sst2_layers}, {label}: {acc:.2f} % ({wall / 60:.1f} min)", flush=True)
            anchor, source = LI_SST2 if eps == 3 else (None, "")
            goal = 85.0 if eps == 3 else None
            name = f"SST-2 MiniLM-L6 top {args.sst2_layers} layers, {n} rows, {label}"
            rows.append(Row(name, "dev accuracy", acc, anchor, source, goal, True, "%"))
            rows.append(Row(name, "training wall time", wall / 60, None, "", None, False, "min"))
    return rows


def step_times(model: dict, epsilon: float | None, clipping: str, seed: int, epochs: int) -> float:
    config = digits_config(model, epochs, epsilon, seed)
    config["trainer"]["train_metrics"] = False
    if epsilon is not None:
        config["plugins"][0]["clipping"] = clipping
    timer = StepTimer()
    train_from_config(parse_config(config), callbacks=[timer])
    return statistics.median(timer.times)


def part_speed(args: argparse.Namespace) -> list[Row]:
    rows = []
    epochs = 2 if args.quick else 5
    models = (
        ("digits CNN", CNN),
        ("digits MLP 128-64", {"name": "mlp", "hidden": [128, 64]}),
        ("digits MLP 2048-2048", {"name": "mlp", "hidden": [2048, 2048]}),  # compute, not per-step overhead, dominates
    )
    for label, model in models[:2] if args.quick else models:
        plain = step_times(model, None, "", args.seed, epochs)
        for clipping, anchor in (("ghost", 1.2), ("hooks", 2.5)):
            if clipping == "hooks" and "2048" in label:
                continue  # 128 per-sample copies of 8.4 M weights: 2.4 s a step, measured once (README)
            dp = step_times(model, 3.0, clipping, args.seed, epochs)
            ratio = dp / plain
            print(f"{label}: step {plain * 1e3:.2f} ms, DP ({clipping}) {dp * 1e3:.2f} ms: {ratio:.2f}×", flush=True)
            source = f"Opacus ({'ghost clipping' if clipping == 'ghost' else 'per-sample hooks'}), their figures"
            rows.append(
                Row(
                    f"{label}, {clipping} clipping, batch 128",
                    "DP / non-DP step time",
                    ratio,
                    anchor,
                    source,
                    1.5,
                    False,
                    "×",
                )
            )
    return rows


def part_audit(args: argparse.Namespace) -> list[Row]:
    from tujie_privacy.audit import audit_run

    rows = []
    model = {"name": "mlp", "hidden": [256], "dropout": 0.0}
    # --audit-train-fraction of the 1,797 images (0.06: 107) trained long with no validation split, so the last
    # (most overfitted) weights are the ones audited, not an early epoch chosen by validation
    data = {"val_fraction": 0.0, "test_fraction": 1 - args.audit_train_fraction}
    for eps in (None, 1.0):
        config = digits_config(model, 30 if args.quick else 100, eps, args.seed, **data)
        config["data"]["batch_size"] = 32 if eps is None else 128
        config["optimizer"]["weight_decay"] = 0.0
        result = train_from_config(parse_config(config))
        audit = audit_run(result.run_dir, references=2 if args.quick else 4, canaries=0 if args.quick else 256)
        label = "no DP, overfitting" if eps is None else "ε = 1"
        goal = 0.60 if eps is None else 0.55
        for attack in audit.attacks.values():
            print(f"audit, {label}: {attack.name} AUC {attack.auc:.3f}", flush=True)
            rows.append(
                Row(
                    f"digits MLP on {attack.members} images, {label}: {attack.name}",
                    "attack ROC-AUC",
                    attack.auc,
                    None,
                    "",
                    goal,
                    eps is None,
                    "",
                )
            )
            rows.append(
                Row(
                    f"digits MLP, {label}: {attack.name}",
                    "TPR @ 1% FPR",
                    attack.tpr_at_1pct_fpr,
                    None,
                    "",
                    None,
                    eps is None,
                    "",
                )
            )
        if audit.canaries is not None:
            c = audit.canaries
            print(f"audit, {label}: canaries {c.correct}/{c.guesses}, ε̂ {c.epsilon_lower_bound:.2f}", flush=True)
            rows.append(
                Row(
                    f"digits MLP, {label}: canary ε̂ (accountant ε = {audit.accountant_epsilon or float('inf'):.2f})",
                    "ε lower bound",
                    c.epsilon_lower_bound,
                    None,
                    "Steinke et al. 2023 one-run audit",
                    eps,
                    False,
                    "",
                )
            )
    return rows


MEMORY_SCRIPT = """
import json, resource, sys, warnings
warnings.filterwarnings("ignore")
from tujie_core import train_from_config
from tujie_core.runs import parse_config
config = parse_config(json.loads(sys.argv[1]))
import torch, opacus, tujie_privacy.dp  # everything imported before the baseline is read
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
train_from_config(config)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
"""


def part_memory(args: argparse.Namespace) -> list[Row]:
    peaks = {}
    for label, eps in (("no DP", None), ("DP ε = 3", 3.0)):
        config = digits_config(CNN, 1, eps, args.seed)
        config["data"]["batch_size"] = 1024
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, json.dumps(config)], capture_output=True, text=True, check=True
        )
        peaks[label] = float(out.stdout.strip().splitlines()[-1])
        print(f"training's peak RSS growth, {label}: {peaks[label]:.0f} MB", flush=True)
    return [
        Row(
            "digits CNN, batch 1024, no DP", "peak RSS growth in training", peaks["no DP"], None, "", None, False, "MB"
        ),
        Row(
            "digits CNN, batch 1024, DP (ghost)",
            "peak RSS growth in training",
            peaks["DP ε = 3"],
            None,
            "",
            None,
            False,
            "MB",
        ),
    ]


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", default=PARTS)
    parser.add_argument("--epsilons", default="1,3,8", help="comma-separated ε values (quick: 3)")
    parser.add_argument("--sst2-rows", type=int, default=20000)
    parser.add_argument("--sst2-epochs", type=int, default=2)
    parser.add_argument("--sst2-layers", type=int, default=2, help="top transformer layers that train")
    parser.add_argument("--sst2-batch", type=int, default=256, help="expected (logical) batch")
    parser.add_argument("--sst2-lr", type=float, default=1e-3, help="AdamW learning rate of the DP runs")
    parser.add_argument("--no-sst2-baseline", dest="sst2_baseline", action="store_false", help="skip the non-DP run")
    parser.add_argument("--audit-train-fraction", type=float, default=0.06, help="digits share the audit trains on")
    parser.add_argument("--seed", type=int, default=0)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    epsilons = [3.0] if args.quick else [float(e) for e in args.epsilons.split(",")]
    parts = {
        "digits": lambda: part_digits(args, epsilons),
        "sst2": lambda: part_sst2(args, epsilons),
        "speed": lambda: part_speed(args),
        "audit": lambda: part_audit(args),
        "memory": lambda: part_memory(args),
    }
    rows: list[Row] = []
    start = time.perf_counter()
    names = [n.strip() for n in args.parts.split(",")]
    if args.quick and args.parts == PARTS:
        names.remove("sst2")  # a DP fine-tune takes minutes even on 2,000 rows: --quick --parts sst2 runs it
    for name in names:
        rows += parts[name.strip()]()
    print(f"total wall time {(time.perf_counter() - start) / 60:.1f} min")
    report("privacy_dp: DP-SGD accuracy, speed, audit and memory", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
