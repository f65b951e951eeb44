"""Fine-tuning runs (``kind: text_classification`` on core's run layer): data files → TextClassifier → core Trainer →
run folder with a report. ``tujie train``, ``tujie nlp train``, ``tujie tune`` and ``tujie evaluate cv`` all run it.

A run folder ``<output_dir>/<name>/<timestamp>/`` holds ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``
(last + best, resumable), ``model/`` (a ``save_pretrained`` folder), ``summary.json``, ``report.md`` with plots,
and ``bad_rows.txt`` when input rows were skipped.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from sklearn.model_selection import train_test_split

from tujie_core import (
    RUN_KINDS,
    ConfigError,
    DataError,
    Evaluation,
    RunContext,
    RunKind,
    RunOutput,
    TrainedRunConfig,
    Trainer,
    TrainerConfig,
    write_report,
)
from tujie_core.compress import CompressionResult
from tujie_core.config import ComponentSpec, Strict, add_plugin, apply_overrides, read_yaml
from tujie_core.inference import InferenceSummary, Rejected, file_fingerprint, module_fingerprint, predict_stream
from tujie_core.progress import Mode
from tujie_nlp.baseline import TextBaseline
from tujie_nlp.classifier import TextClassifier
from tujie_nlp.data import LabelVocab, TextFormat, TextTable, _row_problem, iter_records, read_texts
from tujie_nlp.encoders import DEFAULT_ENCODER
from tujie_nlp.modeling import count_parameters, freeze


def bundled_data(name: str = "support_tickets.csv") -> Path:
    """A data file shipped inside tujie_nlp (``data/<name>``)."""
    return Path(str(resources.files("tujie_nlp") / "data" / name))


class WindowsConfig(Strict):
    """Long documents as overlapping windows pooled into one prediction (see :class:`tujie_nlp.windows.Windows`)."""

    size: int = Field(128, description="tokens per window, special tokens included (at most the encoder's limit)")
    stride: int = Field(96, description="text tokens from one window's start to the next (< size)")
    max_windows: int = Field(8, ge=1, description="per document; a longer one gets that many, evenly spaced")
    pool: Literal["mean", "max", "attention"] = "mean"


class TextDataConfig(Strict):
    """Where the labelled text is and how to read and batch it."""

    train: Path | None = Field(None, description="default: the bundled, illustrative support tickets")
    val: Path | None = Field(None, description="default: val_fraction of train")
    test: Path | None = Field(None, description="default: test_fraction of train")
    format: TextFormat = "auto"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    multi_label: bool = False
    label_separator: str | None = Field(None, description="multi-label: splits a label field (default '|')")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    max_length: int = Field(128, ge=8)
    truncation: Literal["head", "tail", "head+tail"] = Field(
        "head", description="which max_length tokens of a longer text are read: first, last, or both ends"
    )
    windows: WindowsConfig | None = Field(None, description="read whole documents as pooled windows")
    batch_size: int = Field(32, ge=1, description="texts per batch; with windows, windows per batch")
    eval_batch_size: int = Field(128, ge=1)
    group_by_length: bool = Field(True, description="training batches of similar length (less padding); False: random")
    seed: int = 0

    @model_validator(mode="after")
    def _batches_hold_a_document(self) -> TextDataConfig:
        if self.windows is not None:
            for name in ("batch_size", "eval_batch_size"):
                if getattr(self, name) < self.windows.max_windows:
                    raise ValueError(
                        f"{name} {getattr(self, name)} counts windows with windows set and must hold a whole "
                        f"document's windows.max_windows = {self.windows.max_windows}"
                    )
        return self


class TransferConfig(Strict):
    """Transfer-learning controls (book ch. 14): what stays frozen and how fast each layer learns."""

    freeze_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0, description="freeze the first N transformer layers")
    feature_extraction: bool = Field(False, description="freeze the whole encoder; only the head trains")
    layer_lr_decay: float = Field(1.0, gt=0, le=1, description="lr × decay^(depth below the head)")


class TextRunConfig(TrainedRunConfig):
    """A whole fine-tuning run."""

    kind: Literal["text_classification"] = "text_classification"
    name: str = "text"
    encoder: str = Field(DEFAULT_ENCODER, description="short name, local folder (e.g. a pretrain output) or hub id")
    dropout: float | None = Field(None, ge=0, lt=1)
    pooling: Literal["auto", "cls", "mean"] = Field("auto", description="auto: mean for sentence-transformers")
    data: TextDataConfig = TextDataConfig()
    transfer: TransferConfig = TransferConfig()
    class_weights: Literal["balanced"] | list[float] | None = None
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    rdrop: float = Field(0.0, ge=0, description="R-Drop weight: KL between two dropout passes (2× compute)")
    optimizer: ComponentSpec = ComponentSpec(name="adamw", lr=5e-5, weight_decay=0.01)
    scheduler: ComponentSpec | None = ComponentSpec(name="linear")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of optimizer steps spent warming up")
    trainer: TrainerConfig = TrainerConfig(max_epochs=3, monitor="val/accuracy", mode="max")
    baseline: bool = Field(True, description="also fit TF-IDF + logistic regression on the same splits (seconds)")
    baseline_only: bool = Field(False, description="fit only the baseline: no encoder is loaded or trained")


def load_text_config(
    path: str | Path | None = None, overrides: list[str] | None = None, plugins: dict[str, str] | None = None
) -> TextRunConfig:
    """A YAML config (or the defaults when ``path`` is None) with ``KEY=VALUE`` overrides and ``plugins`` (name →
    options, from ``--dp``), validated.

    Sections merge into the defaults, so ``optimizer.lr=1e-4`` keeps the default optimizer; a component section
    that names another component (``optimizer: {name: sgd}``) replaces the default one instead.
    """
    raw = apply_overrides(read_yaml(Path(path)) if path is not None else {}, overrides or [])
    for name, options in (plugins or {}).items():
        add_plugin(raw, name, options)
    try:
        return TextClassificationRun().parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None


def _merged(defaults: Any, given: Any) -> Any:
    """``given`` over ``defaults``, recursively; a component that names another component is not merged."""
    if not isinstance(defaults, dict) or not isinstance(given, dict):
        return given
    if "name" in defaults and given.get("name", defaults["name"]) != defaults["name"]:
        return given
    return {**defaults, **{k: _merged(defaults[k], v) if k in defaults else v for k, v in given.items()}}


def read_split(data: TextDataConfig, path: Path, labelled: bool = True) -> TextTable:
    return read_texts(
        path,
        format=data.format,
        text_column=data.text_column,
        text_pair_column=data.text_pair_column,
        label_column=data.label_column if labelled else None,
        label_separator=data.label_separator,
        multi_label=data.multi_label,
    )


def load_tables(data: TextDataConfig) -> dict[str, TextTable | None]:
    """Train/val/test tables; a split without a file is carved from train (stratified for single-label)."""
    train = read_split(data, data.train or bundled_data())
    if not train.texts:
        raise DataError(f"{train.path}: no usable rows" + (f" ({train.bad_report()})" if train.bad else ""))
    tables: dict[str, TextTable | None] = {"train": train, "val": None, "test": None}
    carve = {}
    for split, path, fraction in (("test", data.test, data.test_fraction), ("val", data.val, data.val_fraction)):
        if path is not None:
            tables[split] = read_split(data, path)
        elif fraction > 0:
            carve[split] = fraction
    if carve:
        tables.update(_carve(train, carve, data.seed, stratify=not data.multi_label))
    return tables


def _carve(train: TextTable, fractions: dict[str, float], seed: int, stratify: bool) -> dict[str, TextTable]:
    index = list(range(len(train)))
    labels = [row[0] for row in train.labels] if stratify and train.labels else None
    if labels is not None and min(labels.count(n) for n in set(labels)) < 2:
        labels = None  # a class with one example cannot be split both ways
    parts: dict[str, list[int]] = {}
    remaining = 1.0
    for split in ("test", "val"):
        if split not in fractions:
            continue
        strat = [labels[i] for i in index] if labels else None
        index, parts[split] = train_test_split(
            index, test_size=fractions[split] / remaining, random_state=seed, stratify=strat
        )
        remaining -= fractions[split]
    parts["train"] = sorted(index)
    return {split: _subset(train, sorted(rows), keep_bad=split == "train") for split, rows in parts.items()}


def _subset(table: TextTable, rows: list[int], keep_bad: bool) -> TextTable:
    return TextTable(
        table.path,
        [table.texts[i] for i in rows],
        None if table.pairs is None else [table.pairs[i] for i in rows],
        None if table.labels is None else [table.labels[i] for i in rows],
        [table.lines[i] for i in rows],
        table.bad if keep_bad else [],
    )


@RUN_KINDS.register("text_classification")
class TextClassificationRun(RunKind):
    """Fine-tune, evaluate the best checkpoint on val and test, save the model and write the report."""

    config_model = TextRunConfig

    def parse(self, raw: dict[str, Any]) -> TextRunConfig:  # type: ignore[override]
        defaults = TextRunConfig.model_construct().model_dump(mode="json")
        merged = {**defaults, **{k: _merged(defaults[k], v) if k in defaults else v for k, v in raw.items()}}
        return super().parse(merged)  # type: ignore[return-value]

    def trial_overrides(self) -> dict[str, Any]:
        return {"trainer.progress": "none", "baseline": False}  # a search compares trials, not the baseline

    def folds(self, config: TextRunConfig, folds: int, stratified: bool) -> list[dict[str, TextTable | None]]:  # type: ignore[override]
        """Folds over the training rows (plus a validation file, if any); the test split stays out."""
        from sklearn.model_selection import KFold, StratifiedKFold

        tables = load_tables(config.data.model_copy(update={"val_fraction": 0.0}))
        pool = tables["train"]
        assert pool is not None and pool.labels is not None
        labels = [row[0] for row in pool.labels]
        stratify = stratified and not config.data.multi_label and min(map(labels.count, set(labels))) >= folds
        splitter = (StratifiedKFold if stratify else KFold)(folds, shuffle=True, random_state=config.data.seed)
        return [
            {"train": _subset(pool, list(train), keep_bad=True), "val": _subset(pool, list(val), False), "test": None}
            for train, val in splitter.split(labels, labels)
        ]

    def compress(  # type: ignore[override]
        self,
        run_dir: Path,
        config: TextRunConfig,
        methods: Sequence[str] | None,
        options: dict[str, dict[str, Any]],
        *,
        fine_tune_epochs: int = 2,
        student: dict[str, Any] | None = None,
    ) -> CompressionResult:
        """The run's classifier through core's compression loop: default int8 and distil, measured on the test
        split (else validation); ``student`` holds distil's options (``layers``, ``epochs``). No fine-tuning after
        pruning or low-rank (``fine_tune_epochs`` is not used; QAT is not available)."""
        from tujie_nlp.compress import DEFAULT_TEXT_METHODS, compress_text

        methods = list(methods or DEFAULT_TEXT_METHODS)
        if student:
            if "distil" not in methods:
                raise ConfigError("compress.student: options for the distillation student, but distil is not run")
            options = {**options, "distil": {**student, **options.get("distil", {})}}
        tables = load_tables(config.data)
        split = "test" if tables["test"] is not None else "val"
        if tables[split] is None:
            raise ConfigError(f"{run_dir}: compression needs a test or validation split")
        return compress_text(
            run_dir / "model",
            tables[split],  # type: ignore[arg-type]
            run_dir / "compression",
            methods=methods,
            options=options,
            train_table=tables["train"],
            batch_size=config.data.batch_size,
            trainer=config.trainer,
            report=run_dir / "report.md",
        )

    def train(self, config: TextRunConfig, context: RunContext) -> RunOutput:  # type: ignore[override]
        data = config.data
        tables = context.data or load_tables(data)
        train = tables["train"]
        assert train is not None and train.labels is not None
        labels = LabelVocab.from_labels(train.labels, data.multi_label)
        if config.baseline_only:
            return _baseline_only(config, context, tables, labels)
        classifier = TextClassifier.from_encoder(
            config.encoder,
            labels,
            max_length=data.max_length,
            dropout=config.dropout,
            pooling=config.pooling,
            truncation=data.truncation,
            windows=data.windows.model_dump() if data.windows is not None else None,
        )
        private = any(plugin.name == "dp" for plugin in config.plugins)
        if private and data.windows is not None:  # DP-SGD clips per row; a document spans several rows
            raise ConfigError("data.windows: DP-SGD bounds each training row, and a windowed document spans several")
        if config.trainer.micro_batch_size is not None and data.windows is not None:
            raise ConfigError(
                "trainer.micro_batch_size: splitting a batch of windows would split documents; "
                "lower data.batch_size and raise trainer.accumulate_grad_batches instead"
            )
        transfer = config.transfer
        try:
            freeze(
                classifier.model,
                embeddings=transfer.freeze_embeddings,
                layers=transfer.freeze_layers,
                encoder=transfer.feature_extraction,
            )
        except ValueError as exc:
            raise ConfigError(f"transfer: {exc}") from None
        trainer = Trainer(config.trainer, callbacks=context.callbacks(), plugins=context.plugins())
        trainer.run_dir = run_dir = context.open(trainer.fabric.broadcast, trainer.fabric.is_global_zero)
        loaders = {
            split: classifier.loader(
                classifier.dataset(table),
                data.batch_size if split == "train" else data.eval_batch_size,
                shuffle=split == "train",
                seed=config.trainer.seed,
                group_by_length=data.group_by_length,
            )
            for split, table in tables.items()
            if table is not None and len(table)
        }
        task = self._task(config, classifier, labels, train, len(loaders["train"]))
        trainer.fit(task, loaders["train"], loaders.get("val"), ckpt_path=context.resume)
        best = trainer.checkpoint_callback
        if best is not None and best.best_path.is_file():
            trainer.load_weights(task, best.best_path)
        evaluations: dict[str, Evaluation] = {
            split: trainer.evaluate(task, loaders[split], split) for split in ("val", "test") if split in loaders
        }
        metrics = {k: v for ev in evaluations.values() for k, v in ev.metrics.items()}
        bad = {split: t.bad for split, t in tables.items() if t is not None and t.bad}
        sections = [*trainer.report_sections(), _data_section(tables, classifier)]
        if trainer.fabric.is_global_zero and config.baseline and not private:
            baseline_metrics, section = fit_baseline(tables, labels, run_dir, config.trainer.seed, metrics)
            metrics |= baseline_metrics
            sections.insert(0, section)
        elif config.baseline and private:  # a non-private model of the same data would void the DP guarantee
            sections.insert(
                0,
                "## Classical baseline\n\nNot fitted: this is a DP run, and a model trained on the same "
                "data without DP would leak what DP protects.",
            )
        if trainer.fabric.is_global_zero:
            classifier.model.eval()
            classifier.save_pretrained(run_dir / "model")
            if bad:
                lines = [f"{tables[s].path} {row}" for s, rows in bad.items() for row in rows]  # type: ignore[union-attr]
                (run_dir / "bad_rows.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return RunOutput(
            metrics,
            title=f"Text classification report: {config.name}",
            header=_header(config, classifier, trainer),
            evaluations=evaluations,
            history=trainer.state.history,
            class_names=labels.names,
            sections=sections,
            summary={"epochs": trainer.state.epoch, "steps": trainer.state.step},
            model=classifier,
            warnings=[tables[s].bad_report() for s in bad],  # type: ignore[union-attr]
            details={"tables": tables, "bad_rows": bad},
            is_global_zero=trainer.fabric.is_global_zero,
        )

    @staticmethod
    def _task(config: TextRunConfig, classifier: TextClassifier, labels: LabelVocab, train: TextTable, batches: int):
        cfg = config.trainer
        steps = cfg.max_epochs * math.ceil(batches / cfg.accumulate_grad_batches)
        steps = min(steps, cfg.max_steps or steps)
        scheduler = None
        if config.scheduler is not None:
            warmup = int(config.warmup_ratio * steps)
            scheduler = ComponentSpec(**{"warmup_steps": warmup, **config.scheduler.model_dump()})
        weights = config.class_weights
        if weights == "balanced":
            weights = labels.balanced_weights(train.labels)
        elif weights is not None and len(weights) != len(labels):
            raise ConfigError(f"class_weights: {len(weights)} weights for {len(labels)} labels {labels.names}")
        return classifier.task(
            optimizer=config.optimizer,
            scheduler=scheduler,
            class_weights=weights,
            label_smoothing=config.label_smoothing,
            layer_lr_decay=config.transfer.layer_lr_decay,
            rdrop=config.rdrop,
        )


def _header(config: TextRunConfig, classifier: TextClassifier, trainer: Trainer) -> str:
    trainable, total = count_parameters(classifier.model)
    kind = "multi-label" if classifier.labels.multi_label else "single-label"
    return (
        f"Encoder: `{config.encoder}` ({total:,} parameters, {trainable:,} trainable). {kind} over "
        f"{len(classifier.labels)} labels. Epochs run: {trainer.state.epoch}, optimizer steps: {trainer.state.step}. "
        f"Evaluated with the best checkpoint by `{config.trainer.monitor}`."
    )


def _data_section(tables: dict[str, TextTable | None], classifier: TextClassifier) -> str:
    lines = ["## Data", "", "| split | file | rows | skipped rows |", "|---|---|---:|---:|"]
    for split, table in tables.items():
        if table is not None:
            lines.append(f"| {split} | `{table.path}` | {len(table):,} | {len(table.bad):,} |")
    w = classifier.windows
    reading = (
        f"windows of {w.size} tokens every {w.stride} tokens (at most {w.max_windows} per text), `{w.pool}` pooling"
        if w is not None
        else f"max_length {classifier.max_length} tokens, truncation `{classifier.truncation}`"
    )
    lines += ["", f"Labels: {', '.join(f'`{n}`' for n in classifier.labels.names)}; {reading}."]
    return "\n".join(lines)


BASELINE_DIR = "baseline"


def fit_baseline(
    tables: dict[str, TextTable | None],
    labels: LabelVocab,
    run_dir: Path,
    seed: int,
    fine_tuned: dict[str, float] | None = None,
) -> tuple[dict[str, float], str]:
    """Fit the TF-IDF baseline on the run's splits, save it to ``RUN/baseline/`` and return its metrics
    (``baseline/{split}/{metric}``) and the report section comparing it with the fine-tuned model's metrics."""
    train = tables["train"]
    assert train is not None
    baseline = TextBaseline.fit(train, tables.get("val"), labels, seed)
    baseline.save(run_dir / BASELINE_DIR)
    scores = {
        split: baseline.scores(table)
        for split in ("val", "test")
        if (table := tables.get(split)) is not None and len(table) and table.labels is not None
    }
    metrics = {f"baseline/{split}/{k}": v for split, values in scores.items() for k, v in values.items()}
    return metrics, baseline_section(baseline.info, scores, fine_tuned or {})


def baseline_section(info: dict[str, Any], scores: dict[str, dict[str, float]], fine_tuned: dict[str, float]) -> str:
    """The report's comparison: each split's accuracy and macro-F1 for both models, and a plain sentence."""
    lines = [
        "## Classical baseline",
        "",
        f"TF-IDF (word 1–2-grams, character 2–5-grams) + logistic regression, C = {info['C']:g} "
        f"({info['chosen_by']}), fitted in {info['fit_seconds']:.1f} s on {info['training_rows']:,} rows "
        f"(`{BASELINE_DIR}/`; `tujie nlp predict RUN FILE --baseline` uses it).",
        "",
    ]
    if not scores:
        return "\n".join([*lines, "No validation or test split to score it on."])
    compare = any(f"{split}/accuracy" in fine_tuned for split in scores)
    lines += (
        ["| split | metric | fine-tuned | baseline | difference |", "|---|---|---:|---:|---:|"]
        if compare
        else ["| split | metric | baseline |", "|---|---|---:|"]
    )
    for split, values in scores.items():
        for metric, value in values.items():
            tuned = fine_tuned.get(f"{split}/{metric}")
            if compare and tuned is not None:
                lines.append(f"| {split} | {metric} | {tuned:.4f} | {value:.4f} | {tuned - value:+.4f} |")
            elif not compare:
                lines.append(f"| {split} | {metric} | {value:.4f} |")
    split = "test" if "test" in scores else "val"
    tuned = fine_tuned.get(f"{split}/accuracy")
    if tuned is not None:
        base = scores[split]["accuracy"]
        verdict = (
            f"**The baseline wins on {split} accuracy** ({base:.2%} against the fine-tuned model's {tuned:.2%}), "
            f"fitted in {info['fit_seconds']:.1f} s: prefer it, or let the model see more of each text (a longer "
            "`data.max_length`, `data.truncation: head+tail` or `data.windows`), train longer or use a larger "
            "encoder."
            if base >= tuned
            else f"The fine-tuned model beats the baseline on {split} accuracy by {100 * (tuned - base):.2f} points."
        )
        lines += ["", verdict]
    return "\n".join(lines)


def _baseline_only(
    config: TextRunConfig, context: RunContext, tables: dict[str, TextTable | None], labels: LabelVocab
) -> RunOutput:
    """A run folder holding just the baseline: no encoder is loaded or trained."""
    run_dir = context.open()
    metrics, section = fit_baseline(tables, labels, run_dir, config.trainer.seed)
    scores = {k.removeprefix("baseline/"): v for k, v in metrics.items()}  # the run's own metrics, unprefixed
    return RunOutput(
        scores,
        title=f"Text classification baseline: {config.name}",
        header=f"Baseline only (`--baseline-only`): no encoder trained. {len(labels)} labels.",
        class_names=labels.names,
        sections=[section],
        summary={"baseline_only": True},
        details={"tables": tables},
    )


# ---- evaluation and prediction of a saved model ---------------------------------------------------------------
def evaluate_text(
    model_dir: str | Path,
    path: str | Path,
    data: TextDataConfig | None = None,
    output_dir: str | Path | None = None,
    batch_size: int = 64,
) -> tuple[Evaluation, TextTable, Path | None]:
    """Metrics of a saved classifier on a labelled file; with ``output_dir``, a report with plots there."""
    classifier = TextClassifier.from_pretrained(model_dir)
    table = read_split(data or TextDataConfig(multi_label=classifier.labels.multi_label), Path(path))
    if not table.texts:
        raise DataError(f"{path}: no usable rows" + (f" ({table.bad_report()})" if table.bad else ""))
    evaluation = classifier.evaluate(table, batch_size)
    report = None
    if output_dir is not None:
        report = write_report(
            output_dir,
            title=f"Evaluation of {model_dir} on {path}",
            evaluations={"test": evaluation},
            class_names=classifier.labels.names,
        )
    return evaluation, table, report


def predict_file(
    model_dir: str | Path | TextClassifier | TextBaseline,
    path: str | Path,
    output: str | Path,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    format: TextFormat = "auto",
    batch_size: int = 64,
    threshold: float = 0.5,
    chunk_size: int = 1024,
    workers: int | None = None,
    resume: bool = True,
    progress: Mode = "none",
) -> InferenceSummary:
    """Predict every good row of a file of any size into a CSV (``line``, ``text``, ``label``, one ``p_<label>``
    column per label), streaming with core's inference engine: memory flat in file size, tokenisation on
    ``workers`` threads, bad rows (line, reason) in ``<output>.rejects.csv``, and a rerun after an interruption
    resumes where it stopped (same file, model and options) with output identical to an uninterrupted run.
    ``model_dir`` may also be a run's :class:`TextBaseline` (no tokenisation; the TF-IDF model predicts)."""
    model: TextClassifier | TextBaseline = (
        model_dir
        if isinstance(model_dir, (TextClassifier, TextBaseline))
        else TextClassifier.from_pretrained(model_dir)
    )
    columns = [c for c in (text_column, text_pair_column) if c]
    iter_records(path, format=format, columns=columns)  # a missing file or column fails now, not in a worker
    names = model.labels.names
    tokenizing = threading.Lock()  # a fast tokenizer is not safe to call from two threads; it parallelises itself

    def prepare(records: list[dict[str, Any] | str]) -> list[Any]:
        good: list[tuple[str, str | None]] = []
        items: list[Any] = []
        for record in records:
            problem = (
                record if isinstance(record, str) else _row_problem(record, columns, text_column, text_pair_column)
            )
            if problem is not None:
                items.append(Rejected(problem))
                continue
            good.append((str(record[text_column]), str(record[text_pair_column]) if text_pair_column else None))
            items.append(None)
        if isinstance(model, TextBaseline):
            ids: list[Any] = [None] * len(good)
        else:
            with tokenizing:
                ids = model.tokenize([t for t, _ in good], [p for _, p in good] if text_pair_column else None)
        filled = iter(zip(good, ids, strict=True))
        return [item if isinstance(item, Rejected) else next(filled) for item in items]

    def probabilities(items: list[tuple[tuple[str, str | None], Any]]) -> list[list[float]]:
        if isinstance(model, TextBaseline):
            texts = [text for (text, _), _ in items]
            pairs = [pair or "" for (_, pair), _ in items] if text_pair_column else None
            return model.probabilities(texts, pairs).tolist()
        return model.predict_ids([ids for _, ids in items], batch_size=batch_size).tolist()

    def predict(items: list[tuple[tuple[str, str | None], Any]]) -> list[list[Any]]:
        rows = []
        for ((text, _), _), row in zip(items, probabilities(items), strict=True):
            if model.labels.multi_label:
                label = "|".join(n for n, p in zip(names, row, strict=True) if p > threshold)
            else:
                label = names[max(range(len(row)), key=row.__getitem__)]
            rows.append([text, label, *(f"{p:.6f}" for p in row)])
        return rows

    fingerprint = (
        hashlib.sha256(model.coef.tobytes()).hexdigest()
        if isinstance(model, TextBaseline)
        else module_fingerprint(model.model)
    )
    reading = (
        None
        if isinstance(model, TextBaseline)
        else [model.max_length, model.truncation, model.windows.to_dict() if model.windows else None]
    )
    job = {
        "input": file_fingerprint(path),
        "model": fingerprint,
        "labels": names,
        "options": [text_column, text_pair_column, format, batch_size, threshold, reading],
    }
    return predict_stream(
        lambda: iter_records(path, format=format, columns=columns),
        predict,
        output,
        header=["text", "label", *(f"p_{n}" for n in names)],
        prepare=prepare,
        id_column="line",
        chunk_size=chunk_size,
        workers=workers,
        resume=resume,
        job=job,
        progress=progress,
    )
