"""The extension API: what a domain package may import from tujie_core, and nothing else.

Everything in ``tujie_core.__all__`` plus the names below. A test scans every domain package and fails on an import
outside this list, so a refactor of core's internals cannot break a domain silently, and a domain that needs more
asks for it here (with a test) instead of reaching into a private module.
"""

from __future__ import annotations

EXTENSION_API: dict[str, tuple[str, ...]] = {
    "tujie_core.config": (
        "ComponentSpec",
        "DataSpec",
        "Strict",
        "TrainerConfig",
        "add_plugin",
        "apply_overrides",
        "parse_yaml",
        "read_yaml",
    ),
    "tujie_core.calibration": ("Calibration", "Method", "calibration_scores", "fit_calibration", "plot_calibration"),
    "tujie_core.cli": ("DP_OPTION", "console", "err_console", "metrics_table", "plugin_flags"),
    "tujie_core.checkpoint": ("atomic_write_bytes", "rng_state", "set_rng_state"),
    "tujie_core.compress": (
        "COMPRESSORS",
        "CompressionContext",
        "CompressionResult",
        "CompressionRow",
        "DistillationTask",
        "OnnxModule",
        "check_methods",
        "compress_model",
        "compression_table",
        "export_onnx",
        "low_rank",
        "measure",
        "onnx_parity",
        "prune",
        "quantize_dynamic",
    ),
    "tujie_core.data": ("parse_float", "split_arrays"),
    "tujie_core.demo": ("DemoResult",),
    "tujie_core.evaluate": ("choose_threshold", "cross_validate", "tune_run_threshold"),
    "tujie_core.hub": ("ALLOW_DOWNLOADS", "downloads_allowed"),
    "tujie_core.inference": (
        "BACKENDS",
        "Backend",
        "DaskBackend",
        "InferenceSummary",
        "LocalBackend",
        "Rejected",
        "RejectedRow",
        "default_workers",
        "file_fingerprint",
        "module_fingerprint",
        "predict_stream",
        "read_table_header",
        "rejecting",
        "release_memory",
        "resolve_backend",
        "table_records",
    ),
    "tujie_core.metrics": ("classification_metrics", "regression_metrics"),
    "tujie_core.models": ("ACTIVATIONS", "Square", "Standardize"),
    "tujie_core.plain": ("NUMPY_ACTIVATIONS", "AffineStack", "PlainModel", "plain_model"),
    "tujie_core.optim": ("build_optimizer",),
    "tujie_core.progress": ("Mode",),
    "tujie_core.protocols": ("DETECTORS", "Detection", "Detector"),
    "tujie_core.registry": ("format_validation_error", "suggest", "validate_kwargs"),
    "tujie_core.run": ("load_run",),
    "tujie_core.runs": ("parse_config",),  # a run config from a mapping (a demo's or a user's inline config)
    "tujie_core.tasks": ("SpecLike",),
    "tujie_core.report": ("replace_section", "save_figure", "write_report"),
    "tujie_core.transfer": ("head_parameters", "load_matching"),
    "tujie_core.tune": ("optimize", "tune"),
}
