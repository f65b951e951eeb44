"""The privacy part of ``tujie demo``: the digits MLP trained with DP-SGD at ε = 3 and without DP, both audited
by a membership-inference attack, and the private run's report card."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tujie_core.demo import DemoResult


def bundled_config(name: str = "digits_dp") -> Path:
    return Path(str(resources.files("tujie_privacy") / "configs" / f"{name}.yaml"))


def privacy_demo(output_dir: Path, quick: bool = False) -> DemoResult:
    from tujie_core import load_config, train_from_config
    from tujie_privacy.audit import audit_run
    from tujie_privacy.report import privacy_report

    overrides = [f"output_dir={output_dir}"] + (["trainer.max_epochs=8"] if quick else [])
    private = train_from_config(load_config(bundled_config(), overrides))
    baseline = train_from_config(load_config(bundled_config(), [*overrides, "name=digits-no-dp", "plugins=[]"]))
    references, canaries = (0, 0) if quick else (2, 200)
    private_audit = audit_run(private.run_dir, references=references, canaries=canaries)
    baseline_audit = audit_run(baseline.run_dir, references=references, canaries=0)
    card, _ = privacy_report(private.run_dir, baseline.run_dir)
    eps = private_audit.accountant_epsilon or 0.0
    metrics = {
        "DP test/accuracy": private.metrics["test/accuracy"],
        "non-DP test/accuracy": baseline.metrics["test/accuracy"],
        "ε spent (δ = 1e-5)": eps,
        "DP loss-attack AUC": private_audit.attacks["loss_threshold"].auc,
        "non-DP loss-attack AUC": baseline_audit.attacks["loss_threshold"].auc,
    }
    if private_audit.canaries is not None:
        metrics["canary ε̂ (lower bound)"] = private_audit.canaries.epsilon_lower_bound
    notes = [f"report card: {card}", f"non-private baseline: {baseline.run_dir}"]
    return DemoResult("privacy: digits MLP with DP-SGD (ε = 3)", metrics, private.run_dir, notes)
