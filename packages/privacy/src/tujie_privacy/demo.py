"""The privacy part of ``tujie demo``: the digits MLP trained with DP-SGD at ε = 3 and without DP, both audited
by a membership-inference attack, the private run's report card, and encrypted inference: a digits MLP with square
activations served over HTTP on CKKS ciphertexts, its predictions compared with plaintext."""

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
    he_metrics, he_note = encrypted_inference(output_dir, quick)
    metrics |= he_metrics
    notes = [f"report card: {card}", f"non-private baseline: {baseline.run_dir}", he_note]
    return DemoResult("privacy: digits MLP with DP-SGD (ε = 3); encrypted inference", metrics, private.run_dir, notes)


def encrypted_inference(output_dir: Path, quick: bool = False) -> tuple[dict[str, float], str]:
    """Train a digits MLP with square activations, compile it, serve it on a local port and predict its test split
    under encryption; metrics compare the decrypted outputs with the plaintext model's."""
    import time

    import numpy as np
    import torch

    from tujie_core import train_from_config
    from tujie_core.run import load_run
    from tujie_core.runs import parse_config
    from tujie_privacy.he import BackgroundServer, ServiceClient, compile_run

    raw = {
        "name": "digits-he",
        "output_dir": str(output_dir),
        "data": {"name": "digits", "batch_size": 64},
        "model": {"name": "mlp", "hidden": [32], "activation": "square", "dropout": 0.0},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "trainer": {"max_epochs": 10 if quick else 40, "progress": "none", "seed": 0},
    }
    run_dir = train_from_config(parse_config(raw)).run_dir
    model = compile_run(run_dir)
    model.save(run_dir / "he")
    run = load_run(run_dir)
    x = torch.stack([run.splits.test[i][0] for i in range(len(run.splits.test))])
    y = np.array([int(run.splits.test[i][1]) for i in range(len(run.splits.test))])
    with torch.no_grad():
        plain = run.task.model.eval()(x).double().numpy()
    with BackgroundServer({"digits": model}) as server, ServiceClient(server.url) as client:
        started = time.perf_counter()
        encrypted = client.predict(x.numpy().astype(np.float64))
        seconds = time.perf_counter() - started
    metrics = {
        "HE agreement with plaintext": float((encrypted.argmax(1) == plain.argmax(1)).mean()),
        "HE max |logit error|": float(np.abs(encrypted - plain).max()),
        "HE test/accuracy (encrypted)": float((encrypted.argmax(1) == y).mean()),
        "HE public context (MB)": client.timing.context_bytes / 1e6,
    }
    note = (
        f"encrypted inference: {model.describe()}, {len(x)} test images in {seconds:.1f} s through "
        f"http://127.0.0.1 (compiled model: {run_dir / 'he'}; serve it: tujie privacy he-serve {run_dir / 'he'})"
    )
    return metrics, note
