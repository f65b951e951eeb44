"""A conditional DCGAN against a rare class: does adding synthetic images of it raise that class's recall?

scikit-learn's digits at 16×16, the fixed split of the bundled config (seed 0), with class ``--rare`` (default 8)
cut to ``--keep`` training images (default 8; the other classes keep ~125). For each seed: a conditional DCGAN
(``digits_gan.yaml``) trains on that imbalanced training split, draws ``--synthetic`` images of the rare class,
and the bundled small-CNN classifier trains twice on the same split, without and with those images
(``data.extra_train``). Reported: the rare class's test recall and the overall test accuracy, mean and standard
deviation over the seeds, and the mean gain. No published anchor uses this setting.

    python benchmarks/vision_gan.py [--quick] [--json PATH] [--seeds 0,1,2] [--rare 8] [--keep 8] [--synthetic 150]

``--quick``: one seed, 2 GAN epochs, 2 classifier epochs (a smoke test).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import Row, parse_args, report
from torch.utils.data import DataLoader

from tujie_core import DATASETS, train_from_config
from tujie_core.runs import load_config
from tujie_vision.classifier import ImageClassifier
from tujie_vision.cli import bundled_config
from tujie_vision.gan import ConditionalGAN


def options(parser) -> None:
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rare", default="8")
    parser.add_argument("--keep", type=int, default=8)
    parser.add_argument("--synthetic", type=int, default=150)
    parser.add_argument("--gan-epochs", type=int, default=40)


def recall_and_accuracy(run_dir: Path, data: dict, rare: str) -> tuple[float, float]:
    classifier = ImageClassifier.load(run_dir)
    test = DATASETS.create("images", **data).test
    predicted, truth = [], []
    for images, targets in DataLoader(test, batch_size=256):
        predicted.append(classifier.probabilities(images).argmax(1))
        truth.append(targets)
    p, t = torch.cat(predicted).numpy(), torch.cat(truth).numpy()
    rare_index = classifier.class_names.index(rare)
    return float((p[t == rare_index] == rare_index).mean()), float((p == t).mean())


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    gan_epochs, clf_epochs = (2, 2) if args.quick else (args.gan_epochs, None)
    results: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for seed in seeds:
            start = time.perf_counter()
            cap = f"data.per_class={{'{args.rare}': {args.keep}}}"
            gan_run = train_from_config(
                load_config(
                    bundled_config("digits_gan"),
                    [f"output_dir={out}", f"epochs={gan_epochs}", f"seed={seed}", cap],
                )
            )
            folder = ConditionalGAN.load(gan_run.run_dir).save_samples(
                out / f"synthetic{seed}", {args.rare: args.synthetic}, seed
            )
            for variant, extra in (("without", []), ("with", [f"data.extra_train={folder}"])):
                overrides = [f"output_dir={out}", "trainer.progress=none", f"trainer.seed={seed}", cap, *extra]
                overrides += [f"trainer.max_epochs={clf_epochs}"] if clf_epochs else []
                config = load_config(bundled_config("digits_cnn"), overrides)
                run = train_from_config(config)
                results[variant].append(recall_and_accuracy(run.run_dir, config.data.params, args.rare))
            print(
                f"seed {seed}: without {results['without'][-1]}, with {results['with'][-1]} (recall, accuracy), "
                f"{time.perf_counter() - start:.0f} s"
            )
    rows = []
    for variant in ("without", "with"):
        recalls = [100 * r for r, _ in results[variant]]
        accuracies = [100 * a for _, a in results[variant]]
        spread = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        name = f"digits, class {args.rare} cut to {args.keep} images, {variant} {args.synthetic} GAN images"
        rows.append(
            Row(
                name,
                f"class {args.rare} recall (mean of {len(seeds)} seeds)",
                statistics.mean(recalls),
                None,
                "",
                None,
                True,
                "%",
            )
        )
        rows.append(Row(name, "class recall, std over seeds", spread(recalls), None, "", None, False, "%"))
        rows.append(Row(name, "test accuracy (mean)", statistics.mean(accuracies), None, "", None, True, "%"))
    gain = np.mean([100 * (w[0] - o[0]) for w, o in zip(results["with"], results["without"], strict=True)])
    rows.append(
        Row(f"GAN augmentation of class {args.rare}", "recall gain (mean)", float(gain), None, "", None, True, "points")
    )
    report("vision_gan", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
