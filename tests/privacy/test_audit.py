"""The membership-inference audit, the canary ε lower bound and the privacy report card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binom
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from tujie_core import ClassificationTask, Trainer, train_from_config
from tujie_core.runs import parse_config
from tujie_privacy.audit import attack_result, epsilon_lower_bound, lira_offline, sample_scores, tpr_at_fpr
from tujie_privacy.cli import app

pytestmark = pytest.mark.filterwarnings(
    "ignore:Full backward hook is firing:UserWarning", "ignore:Optimal order is the largest alpha:UserWarning"
)


def random_labels(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 8, generator=generator), torch.randint(0, 4, (n,), generator=generator))


def fitted(data: TensorDataset) -> ClassificationTask:
    torch.manual_seed(0)
    task = ClassificationTask(
        nn.Sequential(nn.Linear(8, 128), nn.ReLU(), nn.Linear(128, 4)),
        num_classes=4,
        optimizer={"name": "adamw", "lr": 0.01},
    )
    Trainer(accelerator="cpu", max_epochs=150, progress="none").fit(task, DataLoader(data, batch_size=32))
    return task


def test_the_loss_attack_finds_a_memorising_model_and_not_one_that_never_saw_the_data() -> None:
    members, non_members = random_labels(64, 1), random_labels(64, 2)  # random labels: only memorising fits them
    task = fitted(members)
    attack = attack_result("loss", -sample_scores(task, members)[0], -sample_scores(task, non_members)[0])
    assert attack.auc > 0.9
    assert tpr_at_fpr(np.array(attack.fpr), np.array(attack.tpr), 0.1) > 0.5
    assert tpr_at_fpr(np.array([0, 0.005, 0.02, 1]), np.array([0, 0.4, 0.6, 1]), 0.01) == 0.4
    unseen = fitted(random_labels(64, 3))
    blind = attack_result("loss", -sample_scores(unseen, members)[0], -sample_scores(unseen, non_members)[0])
    assert 0.35 < blind.auc < 0.65


def test_lira_scores_a_sample_against_the_models_that_did_not_train_on_it() -> None:
    rng = np.random.default_rng(0)
    n, k = 400, 4
    used = rng.random((k, n)) < 0.5
    member = np.arange(n) < n // 2
    base = rng.normal(0, 1, n)  # how easy each sample is, the same for every model
    reference = base + rng.normal(0, 0.3, (k, n)) + 1.5 * used  # trained on: more confident
    target = base + rng.normal(0, 0.3, n) + 1.5 * member
    scores = lira_offline(target, reference, used)
    assert attack_result("lira", scores[member], scores[~member]).auc > 0.95
    plain = attack_result("raw confidence", target[member], target[~member]).auc
    assert plain < 0.9  # without the references, sample difficulty hides membership


def test_the_epsilon_lower_bound_is_the_binomial_test_of_the_guesses() -> None:
    assert epsilon_lower_bound(50, 25) == 0.0  # chance
    assert epsilon_lower_bound(0, 0) == 0.0
    strong = epsilon_lower_bound(50, 50)
    assert strong > epsilon_lower_bound(50, 45) > epsilon_lower_bound(50, 40) > 0
    p = 1 / (1 + np.exp(-strong))
    assert binom.sf(49, 50, p) == pytest.approx(0.05, abs=1e-3)  # at ε̂, 50/50 is exactly the 5 % tail


def digits_run(tmp_path: Path, name: str, plugins: list) -> Path:
    config = parse_config(
        {
            "name": name,
            "output_dir": str(tmp_path),
            "data": {"name": "digits", "batch_size": 64, "test_fraction": 0.3},
            "model": {"name": "mlp", "hidden": [32]},
            "optimizer": {"name": "adamw", "lr": 0.01},
            "trainer": {"max_epochs": 3, "progress": "none"},
            "plugins": plugins,
        }
    )
    return train_from_config(config).run_dir


def test_audit_and_report_card_through_the_cli(tmp_path: Path) -> None:
    private = digits_run(tmp_path, "private", [{"name": "dp", "epsilon": 1.0}])
    baseline = digits_run(tmp_path, "baseline", [])
    result = CliRunner().invoke(app, ["audit", str(private), "--references", "2", "--canaries", "64"])
    assert result.exit_code == 0, result.output
    audit = json.loads((private / "audit" / "audit.json").read_text())
    assert set(audit["attacks"]) == {"loss_threshold", "lira"}
    assert all(0 <= a["auc"] <= 1 for a in audit["attacks"].values())
    canaries = audit["canaries"]
    assert canaries["guesses"] == 16 and canaries["epsilon_lower_bound"] <= audit["accountant_epsilon"] <= 1.0
    assert canaries["control_correct"] is not None  # the non-private control was trained too
    assert (private / "audit" / "roc.png").stat().st_size > 1000

    result = CliRunner().invoke(app, ["report", str(private), "--baseline", str(baseline)])
    assert result.exit_code == 0, result.output
    card = (private / "privacy.md").read_text()
    assert "ε (spent) at δ" in card and "PRV" in card and "| test/accuracy |" in card and "lira" in card
    facts = json.loads((private / "privacy.json").read_text())
    assert facts["dp"]["epsilon"] <= 1.0 and facts["utility"]["baseline"]["test/accuracy"] > 0


PLANTED = (
    "id,amount,note\n"
    "1,12.50,call +44 20 7946 0958 tomorrow\n"
    "2,4111111111111111,paid in full\n"
    "3,7.25,card 4111 1111 1111 1111 mail ann@example.org\n"
)


def test_scan_cli_reports_rows_redacts_and_fails_clearly(tmp_path: Path) -> None:
    data = tmp_path / "payments.csv"
    data.write_text(PLANTED)
    redacted = tmp_path / "clean.csv"
    result = CliRunner().invoke(app, ["scan", str(data), "--redact", str(redacted)])
    assert result.exit_code == 0, result.output
    assert "| note | card_number | 1 | 4 |" in result.output and "| amount | card_number | 1 | 3 |" in result.output
    assert "ann@example.org" not in redacted.read_text() and "[EMAIL]" in redacted.read_text()
    assert "12.50" in redacted.read_text()  # amounts untouched
    assert CliRunner().invoke(app, ["scan", str(redacted), "--strict"]).exit_code == 0
    assert CliRunner().invoke(app, ["scan", str(data), "--strict"]).exit_code == 1

    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"text": "fine"}\n[1, 2]\n')
    tujie = str(Path(sys.executable).with_name("tujie"))
    for args, message in (
        ([str(bad)], "notes.jsonl:2: expected a JSON object"),
        ([str(tmp_path / "missing.csv")], "no such file"),
        ([str(data), "--kinds", "emial"], "emial"),
    ):
        proc = subprocess.run([tujie, "privacy", "scan", *args], capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
