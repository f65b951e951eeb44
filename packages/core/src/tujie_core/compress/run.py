"""One trained model → every compressed variant, measured, in a comparison table: the loop every kind of run uses."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tujie_core.compress.measurement import CompressionRow, compression_table, measure, rows_to_json
from tujie_core.compress.registry import COMPRESSORS, CompressionContext, compress
from tujie_core.errors import ConfigError
from tujie_core.registry import validate_kwargs
from tujie_core.report import replace_section

REPORT_SECTION = "## Compression"


@dataclass
class CompressionResult:
    """Every variant of a run's model, its table row, notes on the methods, and where the table was written."""

    rows: list[CompressionRow]
    models: dict[str, nn.Module]
    table: str
    output_dir: Path
    notes: list[str] = field(default_factory=list)


NEEDS = {"distil": "distil", "qat": "fine_tune", "int8-static": "calibration"}  # method → CompressionContext field


def check_methods(
    methods: Sequence[str],
    options: dict[str, dict[str, Any]],
    *,
    provided: Iterable[str],
    distil: Callable[..., nn.Module] | None = None,
) -> None:
    """ConfigError, before any work, for an unknown method, options of a method that is not run, an option the
    method does not take, or a method that needs a context field (``distil``, ``fine_tune``, ``calibration``) not
    in ``provided``. ``distil`` options are those of the ``distil`` function after its teacher."""
    if not methods:
        raise ConfigError("compress: name at least one method")
    provided = set(provided)
    for name in methods:
        COMPRESSORS.get(name)  # unknown names fail with the registry's suggestion
        if name in NEEDS and NEEDS[name] not in provided:
            raise ConfigError(f"compress.{name}: not available for this kind of run (it has no {NEEDS[name]})")
    for name, kwargs in options.items():
        if name not in methods:
            raise ConfigError(f"compress.{name}: options for a method that is not run ({', '.join(methods)})")
        if name == "distil" and distil is not None:
            teacher = next(iter(inspect.signature(distil).parameters))
            validate_kwargs(distil, kwargs, where="compress.distil", skip=(teacher,))
        else:
            validate_kwargs(COMPRESSORS.get(name), kwargs, where=f"compress.{name}", skip=("model", "context"))


def compress_model(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    context: CompressionContext,
    output_dir: str | Path,
    *,
    methods: Sequence[str],
    options: dict[str, dict[str, Any]] | None = None,
    title: str,
    metric_name: str = "accuracy",
    baseline_details: str = "trained model",
    note: str = "",
    throughput: Callable[[nn.Module], float] | None = None,
    throughput_unit: str = "items/s",
    repeats: int = 50,
    report: Path | None = None,
) -> CompressionResult:
    """Measure ``model`` (fp32) and ``compress(name, model, context)`` for each of ``methods``: size, CPU latency,
    ``evaluate`` (``metric_name``) and, with ``throughput``, items per second over a whole evaluation set.

    Writes ``compression.md`` (``title``, ``note``, the table) and ``compression.json`` into ``output_dir``, and
    replaces the compression section of ``report`` when given. Names and options are checked before any work.
    """
    options = options or {}
    provided = [name for name in NEEDS.values() if getattr(context, name)]
    check_methods(methods, options, provided=provided, distil=context.distil)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    def row(variant: nn.Module, name: str, details: str) -> CompressionRow:
        measured = measure(
            variant, evaluate, context.example, name=name, details=details, metric_name=metric_name,
            repeats=repeats, warmup=min(5, repeats),
        )  # fmt: skip
        if throughput is not None:
            measured.throughput, measured.throughput_unit = throughput(variant), throughput_unit
        return measured

    baseline = model.cpu().eval()
    models: dict[str, nn.Module] = {"fp32": baseline}
    rows = [row(baseline, "fp32", baseline_details)]
    for name in methods:
        variant, details = compress(name, baseline, context, **options.get(name, {}))
        models[name] = variant
        rows.append(row(variant, name, details))
    table = compression_table(rows)
    timing = (
        f"latency on the CPU with {torch.get_num_threads()} threads (median of {repeats} forward passes); "
        "size = serialized weights. Ratios against fp32."
    )
    text = " ".join(part for part in (note, timing) if part)
    (output_dir / "compression.md").write_text(f"# Compression: {title}\n\n{text}\n\n{table}\n", "utf-8")
    (output_dir / "compression.json").write_text(rows_to_json(rows), encoding="utf-8")
    if report is not None and report.is_file():
        replace_section(report, REPORT_SECTION, f"{text}\n\n{table}\n")
    return CompressionResult(rows, models, table, output_dir)
