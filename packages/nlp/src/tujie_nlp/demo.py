"""The NLP part of ``tujie demo``: fine-tune MiniLM-L6 to route the bundled support tickets, compress it to int8
and explain one prediction. The tickets are hand-written and illustrative, not a benchmark."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tujie_core.demo import DemoResult


def bundled_config(name: str = "tickets") -> Path:
    return Path(str(resources.files("tujie_nlp") / "configs" / f"{name}.yaml"))


def nlp_demo(output_dir: Path, quick: bool = False) -> DemoResult:
    from tujie_core import train_from_config
    from tujie_nlp.compress import compress_text
    from tujie_nlp.explain import explain, plot_explanation
    from tujie_nlp.run import load_text_config

    overrides = [f"output_dir={output_dir}"] + (["trainer.max_epochs=2"] if quick else [])
    result = train_from_config(load_text_config(bundled_config(), overrides))
    metrics = {k: result.metrics[k] for k in ("test/accuracy", "test/f1_macro", "test/ece", "test/loss")}
    notes = [f"report: {result.report}"]
    test = result.details["tables"]["test"]
    assert test is not None
    compression = compress_text(result.model, test, result.run_dir / "compression", methods=["int8"])
    fp32, int8 = compression.rows
    metrics["int8 test/accuracy"] = int8.metric or 0.0
    metrics["int8 size × smaller"] = fp32.size_mb / int8.size_mb
    metrics["int8 throughput ×"] = (int8.throughput or 0.0) / (fp32.throughput or 1.0)
    text = test.texts[0]
    explanation = explain(result.model, text)
    figure = result.run_dir / "explanation.png"
    plot_explanation(explanation, figure)
    notes += [f"compression: {compression.output_dir / 'compression.md'}", f"explanation of '{text}': {figure}"]
    return DemoResult("nlp: support-ticket routing (MiniLM-L6)", metrics, result.run_dir, notes)
