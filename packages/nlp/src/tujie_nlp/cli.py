"""``tujie nlp``: train, evaluate, predict, pretrain, explain and compress text classifiers.

Registered through the ``tujie.cli`` entry point; user errors print one line and exit 2 (core's ``main``).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tujie_core import ConfigError, TujieError
from tujie_core.cli import DP_OPTION, metrics_table, plugin_flags

app = typer.Typer(help="NLP: fine-tune BERT-family encoders on your labelled text.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

TEXT_COLUMN = typer.Option("text", help="column with the text")
PAIR_COLUMN = typer.Option(None, help="column with the second text of a pair (NLI, paraphrase)")
LABEL_COLUMN = typer.Option("label", help="column with the label(s)")
FORMAT = typer.Option("auto", help="auto | csv | tsv | glue | jsonl | datasets")


def _warn_bad(what: str, bad: list, limit: int = 10, total: int | None = None) -> None:
    total = len(bad) if total is None else total
    if not total:
        return
    err_console.print(f"warning: {what}: skipped {total} bad row(s)", markup=False)
    for row in bad[:limit]:
        err_console.print(f"  {row}", markup=False)
    if total > limit:
        err_console.print(f"  … {total - limit} more", markup=False)


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    rows = [(k, f"{v:.4f}") for k, v in metrics.items() if not k.endswith(("_micro", "_weighted"))]
    console.print(metrics_table(title, rows, ("metric", "value")))


@app.command()
def train(
    config: Path | None = typer.Argument(None, help="run config (YAML); default: the bundled support tickets"),
    train_file: Path | None = typer.Option(None, "--train", help="training file (data.train)"),
    val_file: Path | None = typer.Option(None, "--val", help="validation file (data.val)"),
    test_file: Path | None = typer.Option(None, "--test", help="test file (data.test)"),
    encoder: str | None = typer.Option(None, help="minilm-l6 | a local folder | a hub id"),
    epochs: int | None = typer.Option(None, help="trainer.max_epochs"),
    resume: Path | None = typer.Option(None, help="a run folder to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: data.max_length=64"),
    truncation: str | None = typer.Option(None, help="head | tail | head+tail: which tokens of a long text are read"),
    windows: str | None = typer.Option(
        None, help="SIZE/STRIDE: read whole texts as windows of SIZE tokens every STRIDE tokens, pooled (data.windows)"
    ),
    pool: str | None = typer.Option(None, help="with --windows: mean | max | attention (data.windows.pool)"),
    max_windows: int | None = typer.Option(None, help="with --windows: windows per text (data.windows.max_windows)"),
    baseline_only: bool = typer.Option(False, "--baseline-only", help="fit only the TF-IDF baseline (seconds)"),
    dp: str | None = DP_OPTION,
) -> None:
    """Fine-tune a text classifier and write a run folder (checkpoints, model/, baseline/, report.md). A TF-IDF +
    logistic-regression baseline is fitted on the same splits and compared in the report."""
    from tujie_core import train_from_config
    from tujie_nlp.run import load_text_config

    shortcuts = {"data.train": train_file, "data.val": val_file, "data.test": test_file}
    shortcuts |= {"encoder": encoder, "trainer.max_epochs": epochs, "baseline_only": baseline_only or None}
    shortcuts |= {"data.truncation": truncation, **_window_options(windows, pool, max_windows)}
    extra = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    if resume is not None and config is None and (resume / "config.yaml").is_file():
        config = resume / "config.yaml"
    result = train_from_config(load_text_config(config, [*extra, *overrides], plugin_flags(dp)), resume=resume)
    for split, rows in result.details.get("bad_rows", {}).items():
        _warn_bad(f"{split} data", rows)
    _print_metrics("baseline metrics" if baseline_only else "metrics (best checkpoint)", result.metrics)
    model = "" if baseline_only else f"\nmodel: {result.run_dir / 'model'}"
    console.print(f"run folder: {result.run_dir}{model}\nreport: {result.report}")


def _window_options(windows: str | None, pool: str | None, max_windows: int | None) -> dict[str, object]:
    """``--windows SIZE/STRIDE``, ``--pool`` and ``--max-windows`` as ``data.windows.*`` overrides."""
    if windows is None:
        if pool is not None or max_windows is not None:
            raise ConfigError("--pool and --max-windows go with --windows SIZE/STRIDE")
        return {}
    size, _, stride = windows.partition("/")
    if not (size.strip().isdigit() and stride.strip().isdigit()):
        raise ConfigError(f"--windows: expected SIZE/STRIDE in tokens, such as 128/96, got '{windows}'")
    options = {"data.windows.size": size.strip(), "data.windows.stride": stride.strip()}
    return options | {"data.windows.pool": pool, "data.windows.max_windows": max_windows}


@app.command()
def evaluate(
    model_dir: Path = typer.Argument(..., help="a saved classifier folder (run folder's model/)"),
    data: Path = typer.Argument(..., help="labelled file"),
    text_column: str = TEXT_COLUMN,
    text_pair_column: str | None = PAIR_COLUMN,
    label_column: str = LABEL_COLUMN,
    format: str = FORMAT,
    output_dir: Path | None = typer.Option(None, help="write report.md with plots here"),
) -> None:
    """Metrics of a saved classifier on a labelled file."""
    from tujie_nlp.classifier import TextClassifier
    from tujie_nlp.run import TextDataConfig, evaluate_text

    multi = TextClassifier.from_pretrained(model_dir).labels.multi_label
    spec = TextDataConfig(
        format=format,  # type: ignore[arg-type]
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        multi_label=multi,
    )
    evaluation, table, report = evaluate_text(model_dir, data, spec, output_dir)
    _warn_bad(str(data), table.bad)
    _print_metrics(f"{data} ({len(table)} rows)", evaluation.metrics)
    if report is not None:
        console.print(f"report: {report}")


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="a saved classifier folder"),
    data: Path = typer.Argument(..., help="file with texts to classify"),
    output: Path = typer.Argument(..., help="CSV to write (line, text, label, p_<label>...)"),
    text_column: str = TEXT_COLUMN,
    text_pair_column: str | None = PAIR_COLUMN,
    format: str = FORMAT,
    batch_size: int = typer.Option(64, min=1),
    threshold: float = typer.Option(0.5, help="multi-label: probability above which a label is given"),
    chunk_size: int = typer.Option(1024, min=1, help="rows read, predicted and written at a time"),
    workers: int | None = typer.Option(None, min=1, help="tokenising threads (default: one per core)"),
    restart: bool = typer.Option(False, "--restart", help="start over instead of resuming an interrupted run"),
    baseline: bool = typer.Option(False, "--baseline", help="use the run's TF-IDF baseline instead of the encoder"),
) -> None:
    """Classify every good row of a file of any size, streaming; bad rows go to OUTPUT.rejects.csv, and a rerun
    after an interruption resumes where it stopped."""
    from tujie_nlp.baseline import TextBaseline
    from tujie_nlp.run import BASELINE_DIR, predict_file

    model: Path | TextBaseline = model_dir
    if baseline:  # the run folder, or its model/ folder beside baseline/
        folder = model_dir / BASELINE_DIR if (model_dir / BASELINE_DIR).is_dir() else model_dir.parent / BASELINE_DIR
        model = TextBaseline.load(folder)
    summary = predict_file(
        model,
        data,
        output,
        text_column=text_column,
        text_pair_column=text_pair_column,
        format=format,  # type: ignore[arg-type]
        batch_size=batch_size,
        threshold=threshold,
        chunk_size=chunk_size,
        workers=workers,
        resume=not restart,
        progress="auto",
    )
    if summary.rejected:
        _warn_bad(str(data), summary.examples, total=summary.rejected)
        err_console.print(f"  all {summary.rejected} rejected row(s) → {summary.rejects}", markup=False)
    resumed = f" (resumed after row {summary.resumed_from})" if summary.resumed_from else ""
    console.print(
        f"predicted {summary.predicted} row(s) → {summary.output}{resumed}, {summary.rows_per_second:,.0f} rows/s"
    )


@app.command()
def pretrain(
    text_file: Path = typer.Argument(..., help="plain UTF-8 text, one passage per line"),
    output_dir: Path = typer.Argument(..., help="folder for checkpoints/ and the adapted model/"),
    encoder: str = typer.Option("minilm-l6", help="encoder to adapt"),
    epochs: int = typer.Option(1, min=1),
    max_steps: int | None = typer.Option(None, min=1),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(5e-5),
    max_length: int = typer.Option(128, min=8),
    mlm_probability: float = typer.Option(0.15),
    precision: str = typer.Option("32-true", help="e.g. bf16-mixed (faster on CPUs with AVX-512 BF16 and on GPUs)"),
    resume: bool = typer.Option(False, help="continue from OUTPUT_DIR/checkpoints/last.ckpt"),
) -> None:
    """Domain-adaptive masked-language-model pre-training; fine-tune from OUTPUT_DIR/model afterwards."""
    from tujie_nlp.pretrain import pretrain_mlm

    result = pretrain_mlm(
        text_file,
        output_dir,
        encoder=encoder,
        max_length=max_length,
        mlm_probability=mlm_probability,
        batch_size=batch_size,
        lr=lr,
        resume=resume,
        max_epochs=epochs,
        max_steps=max_steps,
        precision=precision,
    )
    _warn_bad(str(text_file), result.bad_rows)
    rows = [
        ("val MLM loss", f"{result.val_loss_before:.4f}", f"{result.val_loss_after:.4f}"),
        ("val perplexity", f"{result.perplexity_before:.2f}", f"{result.perplexity_after:.2f}"),
    ]
    console.print(metrics_table(f"pre-training ({result.steps} steps)", rows, ("metric", "before", "after")))
    console.print(f"adapted encoder: {result.model_dir} (use it as `encoder:` when fine-tuning)")


@app.command()
def explain(
    model_dir: Path = typer.Argument(..., help="a saved classifier folder"),
    text: str = typer.Argument(..., help="the text to explain"),
    method: str = typer.Option("ig", help="ig (integrated gradients) | rollout (attention rollout)"),
    target: str | None = typer.Option(None, help="label to explain (default: the predicted one)"),
    output: Path | None = typer.Option(None, help="write the highlighted-text figure (PNG) here"),
) -> None:
    """Per-token attributions for one text, as a table and optionally a highlighted-text figure."""
    from tujie_nlp.classifier import TextClassifier
    from tujie_nlp.explain import explain as run_explain
    from tujie_nlp.explain import explanation_markdown, plot_explanation

    if not text.strip():
        raise TujieError("TEXT is empty")
    classifier = TextClassifier.from_pretrained(model_dir)
    if target is not None and target not in classifier.labels.names:
        raise TujieError(f"--target: '{target}' is not a label of this model ({', '.join(classifier.labels.names)})")
    explanation = run_explain(classifier, text, method=method, target=target)
    typer.echo(explanation_markdown(explanation))
    if output is not None:
        plot_explanation(explanation, output)
        console.print(f"figure: {output}")


@app.command()
def compress(
    model_dir: Path = typer.Argument(..., help="a saved classifier folder"),
    data: Path = typer.Argument(..., help="labelled evaluation file"),
    output_dir: Path = typer.Argument(..., help="where the table and the distilled student go"),
    train_file: Path | None = typer.Option(None, "--train", help="labelled training text (needed by distil)"),
    methods: str = typer.Option("int8,distil", help="comma-separated core compressors: int8, distil, prune, lowrank"),
    layers: int = typer.Option(2, help="distil: student layers"),
    epochs: int = typer.Option(2, help="distil: training epochs"),
    text_column: str = TEXT_COLUMN,
    label_column: str = LABEL_COLUMN,
    format: str = FORMAT,
) -> None:
    """Compress a classifier (dynamic int8, distillation, pruning, low-rank) into a size/latency/accuracy table."""
    from tujie_nlp.classifier import TextClassifier
    from tujie_nlp.compress import compress_text
    from tujie_nlp.run import TextDataConfig, read_split

    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise TujieError("--methods: name at least one method")
    classifier = TextClassifier.from_pretrained(model_dir)
    spec = TextDataConfig(
        format=format,  # type: ignore[arg-type]
        text_column=text_column,
        label_column=label_column,
        multi_label=classifier.labels.multi_label,
    )
    eval_table = read_split(spec, data)
    train_table = read_split(spec, train_file) if train_file is not None else None
    _warn_bad(str(data), eval_table.bad)
    result = compress_text(
        classifier,
        eval_table,
        output_dir,
        methods=names,
        options={"distil": {"layers": layers, "epochs": epochs}} if "distil" in names else {},
        train_table=train_table,
    )
    typer.echo(result.table)
    console.print(f"table: {result.output_dir / 'compression.md'}")
