"""Membership-inference audit of a trained run, and an empirical ε lower bound from canaries.

>>> audit = audit_run("runs/digits/20261203-101500")         # doctest: +SKIP
>>> audit.attacks["loss_threshold"].auc, audit.canaries.epsilon_lower_bound  # doctest: +SKIP

Attacks (members: the run's training split; non-members: its test split, else validation):

- ``loss_threshold`` (Yeom et al. 2018): a lower loss means "member".
- ``lira`` (Carlini et al. 2022, offline with a global variance): ``references`` models are trained with the
  run's own config on random halves of members ∪ non-members; a sample's logit-scaled confidence under the target
  model is compared with its distribution under the reference models that did not train on it.

Each gives ROC-AUC, TPR at 1 % and 0.1 % FPR and a log-scale ROC curve. ``canaries`` mislabelled copies of
training inputs, each put into the training data with probability ½, train one more model with the run's config
(DP included) and one without its plugins (the non-private control); guessing which canaries were in from their
losses gives ε̂ (Steinke, Nasr and Jagielski 2023, one-run auditing, pure-DP form at 95 % confidence). ε̂ is a lower
bound from one black-box attack: far below the accountant's ε does not mean the accountant is loose.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import binom
from sklearn.metrics import roc_auc_score, roc_curve
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from tujie_core import ConfigError, DataSplits, Task, train_from_config
from tujie_core.report import save_figure
from tujie_core.run import load_run

AUDIT_DIR = "audit"


@dataclass
class AttackResult:
    """One attack's success: ROC-AUC, TPR at low FPR and the ROC curve (for the log-scale plot)."""

    name: str
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    members: int
    non_members: int
    fpr: list[float] = field(repr=False)
    tpr: list[float] = field(repr=False)


@dataclass
class CanaryResult:
    """One-run audit: correct guesses among the most confident ones, and the ε they prove (95 % confidence)."""

    canaries: int
    guesses: int
    correct: int
    epsilon_lower_bound: float
    control_correct: int | None = None
    control_epsilon_lower_bound: float | None = None


@dataclass
class AuditResult:
    run_dir: Path
    attacks: dict[str, AttackResult]
    canaries: CanaryResult | None
    accountant_epsilon: float | None

    def to_json(self) -> dict[str, Any]:
        attacks = {k: {f: v for f, v in asdict(a).items() if f not in ("fpr", "tpr")} for k, a in self.attacks.items()}
        return {
            "attacks": attacks,
            "canaries": asdict(self.canaries) if self.canaries else None,
            "accountant_epsilon": self.accountant_epsilon,
        }

    def markdown(self) -> str:
        lines = [
            "| attack | ROC-AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | members | non-members |",
            "|---|---|---|---|---|---|",
        ]
        for a in self.attacks.values():
            lines.append(
                f"| {a.name} | {a.auc:.3f} | {a.tpr_at_1pct_fpr:.3f} | {a.tpr_at_01pct_fpr:.3f} | {a.members} | "
                f"{a.non_members} |"
            )
        c = self.canaries
        if c is not None:
            control = (
                f"; the non-private control: {c.control_correct}/{c.guesses}, ε̂ = {c.control_epsilon_lower_bound:.2f}"
                if c.control_correct is not None
                else ""
            )
            eps = f"{self.accountant_epsilon:.2f}" if self.accountant_epsilon is not None else "n/a (not a DP run)"
            lines += [
                "",
                f"Canaries: {c.correct}/{c.guesses} correct guesses among {c.canaries} canaries, empirical "
                f"ε̂ ≥ {c.epsilon_lower_bound:.2f} (95 % confidence) against the accountant's ε = {eps}{control}. "
                "ε̂ is a lower bound from one black-box attack, not an estimate of ε.",
            ]
        return "\n".join(lines) + "\n"


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR at an FPR no larger than ``target``."""
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def attack_result(name: str, member_scores: np.ndarray, non_member_scores: np.ndarray) -> AttackResult:
    """Scores where higher means "member" → ROC-AUC, TPR at 1 % / 0.1 % FPR, the curve."""
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(non_member_scores))]
    scores = np.r_[member_scores, non_member_scores]
    fpr, tpr, _ = roc_curve(labels, scores)
    return AttackResult(
        name,
        float(roc_auc_score(labels, scores)),
        tpr_at_fpr(fpr, tpr, 0.01),
        tpr_at_fpr(fpr, tpr, 0.001),
        len(member_scores),
        len(non_member_scores),
        fpr.tolist(),
        tpr.tolist(),
    )


@torch.no_grad()
def sample_scores(task: Task, dataset: Dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss and logit-scaled confidence of the true label, ``log p − log(1 − p)`` (LiRA's statistic;
    minus the loss for regression), of ``task``'s model on ``dataset``."""
    model = task.model
    was_training = model.training
    model.eval()
    losses, confidences = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        out = task.step(batch, sample_losses=True)
        if out.sample_losses is None:
            raise ConfigError("audit: the task has no per-sample losses (class weights?)")
        loss = out.sample_losses.double()
        losses.append(loss)
        kind = getattr(task, "kind", "regression")
        if kind == "multiclass":
            p = out.preds.double().gather(1, out.target.long().view(-1, 1)).squeeze(1)
        elif kind == "binary":
            p1 = out.preds.double().view(-1)
            p = torch.where(out.target.view(-1) > 0.5, p1, 1 - p1)
        else:
            confidences.append(-loss)
            continue
        p = p.clamp(1e-12, 1 - 1e-12)
        confidences.append(torch.log(p) - torch.log1p(-p))
    model.train(was_training)
    return torch.cat(losses).numpy(), torch.cat(confidences).numpy()


def lira_offline(target: np.ndarray, reference: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Offline LiRA: ``target`` (n,) confidences, ``reference`` (k, n) under k reference models, ``used`` (k, n)
    whether a reference model trained on the sample. Score: how far above its OUT distribution a sample lies."""
    out = np.where(used, np.nan, reference)
    global_mean = np.nanmean(out)
    counts = (~used).sum(0)
    mean = np.where(counts > 0, np.nanmean(np.where(counts > 0, out, global_mean), axis=0), global_mean)
    std = np.nanstd(out - mean) + 1e-8  # one global spread: steadier than per-sample spreads with few models
    return (target - mean) / std


def epsilon_lower_bound(guesses: int, correct: int, confidence: float = 0.95) -> float:
    """The largest ε that ``correct`` right guesses out of ``guesses`` rule out at ``confidence``: under ε-DP the
    number of right guesses is dominated by Binomial(guesses, e^ε / (1 + e^ε)) (Steinke et al. 2023, Thm. 1)."""
    beta = 1 - confidence
    if guesses == 0 or binom.sf(correct - 1, guesses, 0.5) >= beta:
        return 0.0

    def tail(eps: float) -> float:
        return float(binom.sf(correct - 1, guesses, 1 / (1 + math.exp(-eps))))

    low, high = 0.0, 50.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if tail(mid) < beta else (low, mid)
    return low


def _train_on(config: Any, train: Dataset, splits: DataSplits, run_dir: Path, plugins: bool = True) -> Task:
    changes: dict[str, Any] = {"trainer": config.trainer.model_copy(update={"progress": "none"})}
    if not plugins:
        changes["plugins"] = []
    quiet = config.model_copy(update=changes)
    result = train_from_config(quiet, data=DataSplits(train, None, None, splits.info), run_dir=run_dir)
    return result.model


def _canary_set(train: Dataset, count: int, num_classes: int, rng: np.random.Generator) -> TensorDataset:
    """Copies of ``count`` training inputs, each with a wrong label: what a model can only learn by memorising."""
    rows = rng.choice(len(train), size=count, replace=count > len(train))
    xs, ys = zip(*(train[int(i)][:2] for i in rows), strict=True)
    y = torch.as_tensor(np.array([int(v) for v in ys]))
    wrong = (y + torch.as_tensor(rng.integers(1, num_classes, size=count))) % num_classes
    return TensorDataset(torch.stack([torch.as_tensor(x) for x in xs]), wrong.to(torch.as_tensor(ys[0]).dtype))


def canary_audit(
    config: Any, splits: DataSplits, workdir: Path, canaries: int = 200, seed: int = 0, control: bool = True
) -> CanaryResult:
    """Train with ``canaries`` mislabelled canaries, each in with probability ½, and guess membership from their
    losses: the top and bottom eighth of the canaries by loss (a quarter guessed in all)."""
    num_classes = len(splits.info.class_names) or splits.info.num_outputs
    if splits.info.kind not in ("multiclass", "binary"):
        raise ConfigError(f"audit: canaries need a classification run, this one is {splits.info.kind}")
    num_classes = max(num_classes, 2)
    rng = np.random.default_rng(seed)
    canary_data = _canary_set(splits.train, canaries, num_classes, rng)
    inside = rng.random(canaries) < 0.5
    train = ConcatDataset([splits.train, Subset(canary_data, np.flatnonzero(inside).tolist())])
    k = max(1, canaries // 8)

    def guess(task: Task) -> int:
        losses, _ = sample_scores(task, canary_data)
        order = np.argsort(losses)  # low loss on the wrong label: it was trained on
        return int(inside[order[:k]].sum() + (~inside[order[-k:]]).sum())

    correct = guess(_train_on(config, train, splits, workdir / "canaries"))
    result = CanaryResult(canaries, 2 * k, correct, epsilon_lower_bound(2 * k, correct))
    if control and config.plugins:
        result.control_correct = guess(_train_on(config, train, splits, workdir / "canaries-control", plugins=False))
        result.control_epsilon_lower_bound = epsilon_lower_bound(2 * k, result.control_correct)
    return result


def audit_run(
    run_dir: str | Path,
    *,
    references: int = 4,
    canaries: int = 200,
    seed: int = 0,
    output_dir: str | Path | None = None,
) -> AuditResult:
    """Audit a finished supervised run folder; writes ``audit/audit.{json,md}`` and ``audit/roc.png``."""
    if references < 0 or canaries < 0:
        raise ConfigError("audit: references and canaries must be ≥ 0")
    run = load_run(run_dir)
    splits = run.splits
    holdout = splits.test if splits.test is not None else splits.val
    if holdout is None:
        raise ConfigError(f"{run.run_dir}: the audit needs a test or validation split as non-members")
    out = Path(output_dir) if output_dir is not None else run.run_dir / AUDIT_DIR
    out.mkdir(parents=True, exist_ok=True)
    member_loss, member_conf = sample_scores(run.task, splits.train)
    holdout_loss, holdout_conf = sample_scores(run.task, holdout)
    attacks = {"loss_threshold": attack_result("loss_threshold", -member_loss, -holdout_loss)}
    population = ConcatDataset([splits.train, holdout])
    n_members = len(splits.train)
    if references:
        rng = np.random.default_rng(seed)
        used = np.zeros((references, len(population)), dtype=bool)
        scores = np.zeros((references, len(population)))
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            for k in range(references):
                used[k] = rng.random(len(population)) < 0.5
                subset = Subset(population, np.flatnonzero(used[k]).tolist())
                task = _train_on(run.config, subset, splits, Path(scratch) / f"reference-{k}")
                scores[k] = sample_scores(task, population)[1]
        lira = lira_offline(np.r_[member_conf, holdout_conf], scores, used)
        attacks["lira"] = attack_result(f"lira ({references} reference models)", lira[:n_members], lira[n_members:])
    canary = None
    if canaries:
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            canary = canary_audit(run.config, splits, Path(scratch), canaries, seed)
    dp_file = run.run_dir / "dp.json"
    accountant = json.loads(dp_file.read_text())["epsilon"] if dp_file.is_file() else None
    result = AuditResult(run.run_dir, attacks, canary, accountant)
    (out / "audit.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    (out / "audit.md").write_text(f"# Membership-inference audit\n\n{result.markdown()}", encoding="utf-8")
    plot_roc(result, out / "roc.png")
    return result


def plot_roc(result: AuditResult, path: Path) -> Path:
    """ROC curves of every attack on log-log axes (the low-FPR regime is what matters), with the chance line."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    grid = np.logspace(-4, 0, 100)
    ax.plot(grid, grid, "k:", label="chance")
    for attack in result.attacks.values():
        ax.plot(np.maximum(attack.fpr, 1e-4), np.maximum(attack.tpr, 1e-4), label=f"{attack.name} ({attack.auc:.3f})")
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1), xlabel="FPR", ylabel="TPR")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("membership inference (AUC)")
    save_figure(fig, path)
    return path
