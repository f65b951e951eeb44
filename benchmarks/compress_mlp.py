"""Compression of small digits models: every technique's size ratio, latency ratio and accuracy change vs fp32.

Trains a digits MLP and a digits CNN with the core Trainer, then runs ``tujie_core.compress.compress_run`` on each
(the same code as ``tujie compress RUN_DIR``) and prints both full tables plus one summary row per technique.
Anchor: PyTorch's dynamic-int8 BERT tutorial (BERT-base on MRPC: 438 → 181 MB, F1 unchanged, ≈ 1.8× faster).
The anchor is a 110 M-parameter transformer; on a 20 k-parameter model int8 kernels are not expected to pay off,
and this benchmark measures how far they do on this CPU.

    python benchmarks/compress_mlp.py [--quick] [--json PATH]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _common import Row, parse_args, report

from tujie_core import RunConfig, train_from_config
from tujie_core.runs import compress_run

ANCHOR = "PyTorch tutorial 'Dynamic quantization on BERT' (BERT-base, MRPC)"
ANCHOR_SIZE_RATIO = 438 / 181
ANCHOR_SPEEDUP = 1.8

MODELS = {
    "mlp": {
        "data": {"name": "digits", "batch_size": 64},
        "model": {"name": "mlp", "hidden": [256, 128], "dropout": 0.1},
        "methods": ["prune", "prune-structured", "lowrank", "int8", "onnx", "distil"],
    },
    "cnn": {
        "data": {"name": "digits", "batch_size": 64, "as_image": True},
        "model": {"name": "cnn", "channels": [32, 64], "dropout": 0.1},
        "methods": ["prune-structured", "int8-static", "qat", "onnx", "distil"],
    },
}


def train(name: str, spec: dict, epochs: int, output_dir: Path) -> Path:
    config = RunConfig.model_validate(
        {
            "name": f"bench-{name}",
            "output_dir": str(output_dir),
            "data": spec["data"],
            "model": spec["model"],
            "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
            "scheduler": {"name": "cosine", "warmup_steps": 20},
            "trainer": {
                "max_epochs": epochs,
                "accelerator": "cpu",
                "monitor": "val/accuracy",
                "mode": "max",
                "progress": "none",
            },
        }
    )
    return train_from_config(config).run_dir


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(0)
    epochs = 15 if args.quick else 40
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in MODELS.items():
            run_dir = train(name, spec, epochs, Path(tmp))
            result = compress_run(run_dir, spec["methods"], fine_tune_epochs=1 if args.quick else 3)
            print(f"\n### digits {name} ({epochs} epochs; {torch.get_num_threads()} torch threads)\n")
            print(result.table)
            base = result.rows[0]
            rows.append(Row(f"{name} fp32", "test accuracy", 100 * base.metric, None, "", None, True, "%"))
            for row in result.rows[1:]:
                int8 = row.method in ("int8", "int8-static", "qat")
                anchor = ANCHOR if int8 else ""
                label = f"{name} {row.method}"
                rows += [
                    Row(
                        label,
                        "size ×",
                        base.size_mb / row.size_mb,
                        ANCHOR_SIZE_RATIO if int8 else None,
                        anchor,
                        None,
                        True,
                        "×",
                    ),
                    Row(
                        label,
                        "speed-up × (batch 32)",
                        base.latency_b32_ms / row.latency_b32_ms,
                        ANCHOR_SPEEDUP if int8 else None,
                        anchor,
                        None,
                        True,
                        "×",
                    ),
                    Row(
                        label, "speed-up × (batch 1)", base.latency_b1_ms / row.latency_b1_ms, None, "", None, True, "×"
                    ),
                    Row(
                        label,
                        "Δ accuracy",
                        100 * (row.metric - base.metric),
                        0.0 if int8 else None,
                        anchor,
                        -1.0 if int8 else None,
                        True,
                        "pts",
                    ),
                ]
    report("compress_mlp", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
