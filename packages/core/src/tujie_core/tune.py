"""Hyperparameter search on Optuna: a ``tune:`` section of a run config → a study of training runs.

``tune(config)`` runs trials (one ``train_from_config`` each, pruned early by :class:`PruningCallback`), in one
process or in several worker processes that share the study through its RDB storage, and writes into
``<output_dir>/<name>/tune/``: ``study.db`` (the default storage), ``trials/<number>/`` (each trial's run
folder), ``best.yaml`` (a ready run config), ``trials.csv``, ``history.png``, ``importance.png`` and ``tune.md``.
Rerunning the same command resumes the study and runs only the trials still missing.

``optimize(objective, space, trials)`` is the same search for any function of a parameter dict (in memory).
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import optuna
import torch
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.exceptions import ExperimentalWarning
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from tujie_core.callbacks import Callback
from tujie_core.config import BaseRunConfig, ComponentSpec, ParamSpec, apply_params
from tujie_core.errors import ConfigError, TrainingError, TujieError
from tujie_core.registry import Registry, format_validation_error
from tujie_core.report import save_figure
from tujie_core.runs import kind_of, parse_config, train_from_config

if TYPE_CHECKING:
    from tujie_core.trainer import Trainer

SAMPLERS: Registry = Registry("samplers")
PRUNERS: Registry = Registry("pruners")

Space = dict[str, ParamSpec]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A worker killed with kill -9 leaves its trial RUNNING. Every worker's storage has a heartbeat: a RUNNING trial
# whose heartbeat is older than the grace period is marked FAIL (by ``fail_stale_trials`` at the start of tune()
# and before every trial). Unlike "mark every RUNNING trial failed at start", this is safe when several `tujie
# tune` commands (other machines) share one study. RUNNING trials are never counted as finished, so a zombie
# never blocks a rerun: the target counts COMPLETE + PRUNED trials only.
HEARTBEAT_S, GRACE_S = 15, 60
_PRIMITIVE = (str, int, float, bool, type(None))


# Trials run one after another in a worker process whose devices and process group are set up once.
# ---- search space ----------------------------------------------------------------------------------------------
def parse_space(space: Mapping[str, ParamSpec | Mapping[str, Any]]) -> Space:
    """Validate a ``{dotted key: ParamSpec or dict}`` search space; ConfigError names the key."""
    if not space:
        raise ConfigError("tune.space: empty search space: add at least one parameter")
    parsed: Space = {}
    for key, spec in space.items():
        try:
            parsed[key] = spec if isinstance(spec, ParamSpec) else ParamSpec.model_validate(spec)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"tune.space.{key}", list(ParamSpec.model_fields))) from None
    return parsed


def _choices(spec: ParamSpec) -> tuple[list[Any], dict[Any, Any]]:
    """Optuna stores only primitive choices: others (lists such as ``[128, 64]``) travel as JSON strings."""
    choices = list(spec.choices or [])
    if all(isinstance(c, _PRIMITIVE) for c in choices):
        return choices, {c: c for c in choices}
    encoded = [json.dumps(c) for c in choices]
    return encoded, dict(zip(encoded, choices, strict=True))


def _int_args(key: str, spec: ParamSpec) -> tuple[int, int, int]:
    low, high, step = spec.low, spec.high, spec.step or 1
    assert low is not None and high is not None  # ParamSpec checked it
    if not all(float(v).is_integer() for v in (low, high, step)):
        raise ConfigError(f"tune.space.{key}: an int parameter needs whole low, high and step")
    return int(low), int(high), int(step)


def _suggest_float(trial: optuna.Trial, key: str, spec: ParamSpec) -> float:
    return trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)  # type: ignore[arg-type]


def _suggest_int(trial: optuna.Trial, key: str, spec: ParamSpec) -> int:
    low, high, step = _int_args(key, spec)
    return trial.suggest_int(key, low, high, step=step, log=spec.log)


def _suggest_categorical(trial: optuna.Trial, key: str, spec: ParamSpec) -> Any:
    encoded, decode = _choices(spec)
    return decode[trial.suggest_categorical(key, encoded)]


_SUGGEST: dict[str, Callable[[optuna.Trial, str, ParamSpec], Any]] = {
    "float": _suggest_float,
    "int": _suggest_int,
    "categorical": _suggest_categorical,
}


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Ask ``trial`` for every parameter of ``space``: ``{"optimizer.lr": 0.003, "model.hidden": [128, 64]}``."""
    return {key: _SUGGEST[spec.type](trial, key, spec) for key, spec in space.items()}


def decode_params(space: Space, params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's stored parameter values (categorical choices JSON-encoded where needed) → config values."""
    decoded = dict(params)
    for key, spec in space.items():
        if spec.type == "categorical" and key in decoded:
            decoded[key] = _choices(spec)[1].get(decoded[key], decoded[key])
    return decoded


# ---- samplers and pruners --------------------------------------------------------------------------------------
def _given(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _float_grid(key: str, spec: ParamSpec) -> list[float]:
    if spec.step is None:
        raise ConfigError(
            f"tune.space.{key}: the grid sampler needs 'step' for a float parameter (or make it categorical)"
        )
    low, high = float(spec.low), float(spec.high)  # type: ignore[arg-type]
    n = math.floor((high - low) / spec.step + 1e-9) + 1
    return [round(low + i * spec.step, 12) for i in range(n)]


def _int_grid(key: str, spec: ParamSpec) -> list[int]:
    low, high, step = _int_args(key, spec)
    return list(range(low, high + 1, step))


_GRID: dict[str, Callable[[str, ParamSpec], list[Any]]] = {
    "float": _float_grid,
    "int": _int_grid,
    "categorical": lambda key, spec: _choices(spec)[0],
}


def grid_values(space: Space) -> dict[str, list[Any]]:
    """Every value the grid sampler tries, per parameter (floats need ``step``)."""
    return {key: _GRID[spec.type](key, spec) for key, spec in space.items()}


@SAMPLERS.register("grid")
def grid_sampler(space: Space, seed: int | None = None) -> BaseSampler:
    """Every combination of the grid once (random order); the study stops when the grid is exhausted."""
    return optuna.samplers.GridSampler(grid_values(space), seed=seed)


@SAMPLERS.register("random")
def random_sampler(space: Space, seed: int | None = None) -> BaseSampler:
    """Independent uniform (or log-uniform) draws."""
    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("tpe")
def tpe_sampler(
    space: Space,
    seed: int | None = None,
    n_startup_trials: int = 10,
    n_ei_candidates: int = 24,
    multivariate: bool | None = None,
    group: bool = False,
    constant_liar: bool = True,
) -> BaseSampler:
    """Tree-structured Parzen estimator (the default); ``constant_liar`` keeps parallel workers apart."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=n_startup_trials,
            n_ei_candidates=n_ei_candidates,
            group=group,
            constant_liar=constant_liar,
            **_given(multivariate=multivariate),
        )


@SAMPLERS.register("gp")
def gp_sampler(
    space: Space, seed: int | None = None, n_startup_trials: int = 10, deterministic_objective: bool = False
) -> BaseSampler:
    """Gaussian-process Bayesian optimisation (torch + scipy); strong for few, expensive trials."""
    return optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=n_startup_trials, deterministic_objective=deterministic_objective
    )


@SAMPLERS.register("cmaes")
def cmaes_sampler(
    space: Space,
    seed: int | None = None,
    n_startup_trials: int = 1,
    sigma0: float | None = None,
    popsize: int | None = None,
    use_separable_cma: bool = False,
    with_margin: bool = False,
) -> BaseSampler:
    """CMA-ES (the ``cmaes`` package); categorical parameters are sampled at random."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            n_startup_trials=n_startup_trials,
            use_separable_cma=use_separable_cma,
            with_margin=with_margin,
            warn_independent_sampling=False,
            **_given(sigma0=sigma0, popsize=popsize),
        )


@PRUNERS.register("median")
def median_pruner(n_startup_trials: int = 5, n_warmup_steps: int = 0, interval_steps: int = 1) -> BasePruner:
    """Prune when the epoch's value is worse than the median of earlier trials at the same epoch."""
    return optuna.pruners.MedianPruner(
        n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps, interval_steps=interval_steps
    )


@PRUNERS.register("hyperband")
def hyperband_pruner(
    min_resource: int = 1, max_resource: int | Literal["auto"] = "auto", reduction_factor: int = 3
) -> BasePruner:
    """Successive halving in several brackets; resource = epochs."""
    return optuna.pruners.HyperbandPruner(
        min_resource=min_resource, max_resource=max_resource, reduction_factor=reduction_factor
    )


@PRUNERS.register("none")
def no_pruner() -> BasePruner:
    """Never prune."""
    return optuna.pruners.NopPruner()


def _create(registry: Registry, spec: ComponentSpec, where: str, **runtime: Any) -> Any:
    try:
        registry.get(spec.name)
    except ConfigError as exc:
        raise ConfigError(f"{where}.name: {exc}") from None
    try:
        return registry.create(spec.name, where=where, runtime=runtime, **spec.params)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # optuna's own checks of the options
        raise ConfigError(f"{where}: {exc}") from None


def create_sampler(spec: ComponentSpec | str, space: Space, seed: int | None = None) -> BaseSampler:
    """A sampler from ``SAMPLERS``; ``seed`` applies unless the spec sets its own."""
    spec = ComponentSpec(name=spec) if isinstance(spec, str) else spec
    if seed is not None and "seed" not in spec.params:
        spec = ComponentSpec(name=spec.name, **spec.params, seed=seed)
    return _create(SAMPLERS, spec, "tune.sampler", space=space)


def create_pruner(spec: ComponentSpec | str | None) -> BasePruner:
    """A pruner from ``PRUNERS``; ``None`` means no pruning."""
    spec = ComponentSpec(name=spec) if isinstance(spec, str) else spec or ComponentSpec(name="none")
    return _create(PRUNERS, spec, "tune.pruner")


# ---- generic search ---------------------------------------------------------------------------------------------
def optimize(
    objective: Callable[[dict[str, Any]], float],
    space: Mapping[str, ParamSpec | Mapping[str, Any]],
    trials: int,
    direction: Literal["minimize", "maximize"] = "minimize",
    sampler: str | ComponentSpec = "tpe",
    seed: int | None = 0,
) -> tuple[dict[str, Any], float]:
    """Search ``space`` for the best ``objective(params)`` in memory; returns ``(best_params, best_value)``.

    >>> optimize(lambda p: (p["x"] - 2) ** 2, {"x": {"type": "float", "low": -5, "high": 5}}, 40)  # doctest: +SKIP
    """
    parsed = parse_space(space)
    study = optuna.create_study(direction=direction, sampler=create_sampler(sampler, parsed, seed))
    study.optimize(lambda trial: objective(suggest(trial, parsed)), n_trials=trials)
    return decode_params(parsed, study.best_params), study.best_value


# ---- pruning ----------------------------------------------------------------------------------------------------
class _MissingMetric(ConfigError):
    """The objective metric is not logged: every trial would fail the same way, so the study stops."""


class PruningCallback(Callback):
    """Report ``metric`` to an Optuna trial after every epoch; raise ``optuna.TrialPruned`` when it says so."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned_epoch: int | None = None

    def on_train_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self.metric not in metrics:
            raise _MissingMetric(
                f"tune.metric: '{self.metric}' is not among the epoch's metrics: {', '.join(sorted(metrics))}"
            )
        value, epoch = metrics[self.metric], trainer.state.epoch
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.metric}={value:.4g}")


# ---- tuning a run config ----------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """Where a search wrote its outputs, its best trial and how many trials ended in each state."""

    output_dir: Path
    study_name: str
    storage: str
    best_value: float
    best_params: dict[str, Any]
    best_config: Path
    n_complete: int
    n_pruned: int
    n_failed: int


class _TrialFailed(TujieError):
    """One trial's configuration or training failed; the study goes on."""


def _trial_config(base: dict[str, Any], params: Mapping[str, Any]) -> BaseRunConfig:
    return parse_config(apply_params(base, {**kind_of(base).trial_overrides(), **params}))


@dataclass
class _Job:
    """Everything a worker process needs (picklable)."""

    base: dict[str, Any]
    space: dict[str, dict[str, Any]]
    metric: str
    storage: str
    study_name: str
    sampler: dict[str, Any]
    pruner: dict[str, Any] | None
    target: int
    quota: int
    seed: int | None
    offset: int  # trials already in the study: a resumed study's workers draw new seeds, not the old ones again
    tune_dir: str


def _storage(url: str) -> optuna.storages.RDBStorage:
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
            )
    except Exception as exc:  # SQLAlchemy: bad URL, missing driver, unreachable server
        raise ConfigError(f"tune.storage: cannot open '{url}': {exc}") from None


def _objective(job: _Job, space: Space, trial: optuna.Trial) -> float:
    params = suggest(trial, space)
    run_dir = Path(job.tune_dir) / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("params", params)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("worker_pid", os.getpid())
    try:
        config = _trial_config(job.base, params)
    except ConfigError as exc:
        trial.set_user_attr("error", str(exc))
        raise _TrialFailed(f"trial {trial.number}: {exc}") from None
    if run_dir.exists():  # left by an earlier study in this folder (trial numbers restart with a new study)
        shutil.rmtree(run_dir)
    try:
        result = train_from_config(config, callbacks=[PruningCallback(trial, job.metric)], run_dir=run_dir)
    except (optuna.TrialPruned, _MissingMetric):
        raise
    except (TujieError, ValueError, torch.OutOfMemoryError) as exc:  # NaN loss, bad option value, out of memory
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        raise _TrialFailed(f"trial {trial.number}: {exc}") from exc
    if job.metric not in result.metrics:
        raise _MissingMetric(f"tune.metric: '{job.metric}' not found; evaluated: {', '.join(sorted(result.metrics))}")
    trial.set_user_attr("metrics", result.metrics)
    return result.metrics[job.metric]


_stop_event: Any = None  # set in worker processes: the parent asks them to stop after a fatal error


def _init_worker(threads: int, stop_event: Any) -> None:
    global _stop_event
    torch.set_num_threads(threads)
    _stop_event = stop_event


def _run_worker(job: _Job, worker: int) -> None:
    """Run up to ``job.quota`` trials, stopping early once the study has ``job.target`` finished trials."""
    space = parse_space(job.space)
    seed = (
        None if job.seed is None else int(np.random.SeedSequence([job.seed, job.offset, worker]).generate_state(1)[0])
    )
    study = optuna.load_study(
        study_name=job.study_name,
        storage=_storage(job.storage),
        sampler=create_sampler(ComponentSpec.model_validate(job.sampler), space, seed),
        pruner=create_pruner(None if job.pruner is None else ComponentSpec.model_validate(job.pruner)),
    )

    def stop_requested(study: optuna.Study, trial: FrozenTrial) -> None:
        if _stop_event is not None and _stop_event.is_set():
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.optimize(
            lambda trial: _objective(job, space, trial),
            n_trials=job.quota,
            catch=(_TrialFailed,),
            callbacks=[optuna.study.MaxTrialsCallback(job.target, states=FINISHED), stop_requested],
        )


def _run_workers(jobs: list[_Job], workers: int) -> None:
    if len(jobs) == 1:
        _run_worker(jobs[0], 0)
        return
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    threads = max(1, (os.cpu_count() or 1) // workers)
    error: BaseException | None = None
    with ProcessPoolExecutor(len(jobs), mp_context=ctx, initializer=_init_worker, initargs=(threads, stop)) as pool:
        futures = [pool.submit(_run_worker, job, i) for i, job in enumerate(jobs)]
        for future in as_completed(futures):
            exc = future.exception()
            if exc is not None and error is None:
                error = exc
                stop.set()
    if error is not None:
        raise error


def tune(
    config: BaseRunConfig, trials: int | None = None, workers: int = 1, output_dir: Path | None = None
) -> TuneResult:
    """Search ``config.tune.space`` until the study has ``trials`` finished (complete + pruned) trials.

    ``workers`` > 1 starts that many processes on the one study (its storage hands out trial numbers). A rerun
    resumes the study and runs only the missing trials; a failed trial uses up its slot in this call (a rerun
    tops up). Raises ConfigError for a bad ``tune`` section before any training, TrainingError when no trial
    completed.
    """
    spec = config.tune
    if spec is None:
        raise ConfigError("tune: the config has no 'tune' section (add tune.space with at least one parameter)")
    if workers < 1:
        raise ConfigError(f"workers: must be at least 1, got {workers}")
    target = trials if trials is not None else spec.trials
    if target < 1:
        raise ConfigError(f"trials: must be at least 1, got {target}")
    space = parse_space(spec.space)
    kind_of(config).check_space(config, space)
    metric = spec.metric or config.monitor
    if not metric.startswith("val/"):
        raise ConfigError(f"tune.metric: the objective must be a validation metric (val/...), got '{metric}'")
    direction = spec.direction or ("minimize" if config.mode == "min" else "maximize")
    # Each worker (and each resumed run) derives its own seed from this one: equal seeds would repeat draws.
    seed = spec.sampler.params.get("seed", config.seed)
    if seed is not None and not isinstance(seed, int):
        raise ConfigError(f"tune.sampler.seed: expected a whole number or null, got {seed!r}")
    sampler = ComponentSpec(name=spec.sampler.name, **{k: v for k, v in spec.sampler.params.items() if k != "seed"})
    create_sampler(sampler, space, seed)  # fail fast on a bad name or option
    create_pruner(spec.pruner)

    tune_dir = Path(output_dir) if output_dir is not None else config.output_dir / config.name / "tune"
    tune_dir.mkdir(parents=True, exist_ok=True)
    url = spec.storage or f"sqlite:///{(tune_dir / 'study.db').resolve()}"
    study_name = spec.study_name or config.name
    storage = _storage(url)
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"tune.direction: study '{study_name}' in {url} was created to {study.direction.name.lower()}, "
            f"not {direction}; use another study_name or storage"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)

    base = config.model_dump(mode="json", exclude={"tune"})
    remaining = max(0, target - len(study.get_trials(deepcopy=False, states=FINISHED)))
    n = min(workers, remaining)
    if n:
        jobs = [
            _Job(
                base=base,
                space={k: v.model_dump() for k, v in space.items()},
                metric=metric,
                storage=url,
                study_name=study_name,
                sampler=sampler.model_dump(),
                pruner=None if spec.pruner is None else spec.pruner.model_dump(),
                target=target,
                quota=remaining // n + (i < remaining % n),
                seed=seed,
                offset=len(study.trials),
                tune_dir=str(tune_dir),
            )
            for i in range(n)
        ]
        _run_workers(jobs, n)
    study = optuna.load_study(study_name=study_name, storage=storage)
    return _write_outputs(study, space, base, tune_dir, metric, url)


# ---- outputs ---------------------------------------------------------------------------------------------------
def _params(trial: FrozenTrial, space: Space) -> dict[str, Any]:
    return trial.user_attrs.get("params") or decode_params(space, trial.params)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)


def _write_csv(path: Path, trials: list[FrozenTrial], space: Space) -> None:
    keys = list(dict.fromkeys([*space, *(k for t in trials for k in _params(t, space))]))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "value", *keys, "duration_s", "run_dir"])
        for t in trials:
            params = _params(t, space)
            duration = t.duration.total_seconds() if t.duration is not None else None
            writer.writerow(
                [
                    t.number,
                    t.state.name,
                    _cell(t.value),
                    *(_cell(params.get(k)) for k in keys),
                    "" if duration is None else f"{duration:.2f}",
                    t.user_attrs.get("run_dir", ""),
                ]
            )


def _plot_history(path: Path, trials: list[FrozenTrial], metric: str, maximize: bool) -> None:
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    pruned = [t for t in trials if t.state is TrialState.PRUNED and t.intermediate_values]
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.subplots()
    x = [t.number for t in complete]
    values = [float(t.value) for t in complete]  # type: ignore[arg-type]
    ax.plot(x, values, "o", label="complete trial")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.plot([t.number for t in pruned], last, "x", color="0.6", label="pruned (last epoch)")
    if values:
        best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
        ax.step(x, best, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="Optimisation history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _plot_importance(path: Path, study: optuna.Study, space: Space, n_complete: int) -> str | None:
    """Draw the parameter importances; return why not when they cannot be estimated."""
    if len(space) < 2:
        return "only one parameter is searched, so it explains all the variation"
    if n_complete < 2:
        return "at least two complete trials are needed"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as exc:  # e.g. the trials do not share a search space
        return f"importances could not be estimated: {exc}"
    names = list(importances)[::-1]
    fig = Figure(figsize=(6, 0.5 * len(names) + 1.5), layout="tight")
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set(xlabel="importance (fANOVA, normalised)", title="Parameter importances")
    save_figure(fig, path)
    return None


def _markdown(
    study: optuna.Study,
    trials: list[FrozenTrial],
    space: Space,
    metric: str,
    best: FrozenTrial | None,
    importance_note: str | None,
) -> str:
    direction = study.direction.name.lower()
    counts = {state.name: sum(t.state is state for t in trials) for state in TrialState}
    lines = [f"# Tuning report: {study.study_name}", ""]
    lines.append(f"Objective: {direction} `{metric}` (validation split, best checkpoint of each trial).")
    lines.append("Trials: " + ", ".join(f"{n} {name.lower()}" for name, n in counts.items() if n) + ".")
    lines.append("")
    if best is not None:
        lines += [f"Best value: **{best.value:.6g}** (trial {best.number}); ready config: `best.yaml`.", ""]
        lines += ["| parameter | best value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in _params(best, space).items()]
        lines.append("")
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    complete.sort(key=lambda t: t.value, reverse=direction == "maximize")  # type: ignore[arg-type, return-value]
    if complete:
        keys = list(space)
        lines += ["## Top trials", "", "| trial | value | " + " | ".join(keys) + " | duration (s) |"]
        lines.append("|---|---|" + "---|" * len(keys) + "---|")
        for t in complete[:10]:
            params = _params(t, space)
            duration = f"{t.duration.total_seconds():.1f}" if t.duration else ""
            cells = " | ".join(_cell(params.get(k)) for k in keys)
            lines.append(f"| {t.number} | {t.value:.6g} | {cells} | {duration} |")
        lines.append("")
    failed = [t for t in trials if t.state is TrialState.FAIL and "error" in t.user_attrs]
    if failed:
        lines += ["## Failed trials", ""] + [f"- trial {t.number}: {t.user_attrs['error']}" for t in failed] + [""]
    lines += ["## Plots", "", "![optimisation history](history.png)", ""]
    lines.append("![parameter importances](importance.png)" if importance_note is None else f"{importance_note}.")
    return "\n".join(lines) + "\n"


def _write_outputs(
    study: optuna.Study, space: Space, base: dict[str, Any], tune_dir: Path, metric: str, storage: str
) -> TuneResult:
    trials = study.get_trials(deepcopy=False)
    count = lambda state: sum(t.state is state for t in trials)  # noqa: E731
    n_complete = count(TrialState.COMPLETE)
    best = study.best_trial if n_complete else None
    _write_csv(tune_dir / "trials.csv", trials, space)
    _plot_history(tune_dir / "history.png", trials, metric, study.direction.name == "MAXIMIZE")
    (tune_dir / "importance.png").unlink(missing_ok=True)
    note = _plot_importance(tune_dir / "importance.png", study, space, n_complete)
    (tune_dir / "tune.md").write_text(_markdown(study, trials, space, metric, best, note), encoding="utf-8")
    if best is None:
        first_error = next((t.user_attrs["error"] for t in trials if "error" in t.user_attrs), None)
        reason = f"; first error: {first_error}" if first_error else ""
        raise TrainingError(
            f"tune: no trial completed ({count(TrialState.PRUNED)} pruned, {count(TrialState.FAIL)} failed)"
            f"{reason}; see {tune_dir / 'tune.md'}"
        )
    best_params = _params(best, space)
    best_config = parse_config(apply_params(base, best_params))
    path = tune_dir / "best.yaml"
    header = f"# Best trial {best.number} of study '{study.study_name}': {metric} = {best.value:.6g}\n"
    dumped = yaml.safe_dump(best_config.model_dump(mode="json", exclude={"tune"}), sort_keys=False)
    path.write_text(header + dumped, encoding="utf-8")
    return TuneResult(
        output_dir=tune_dir,
        study_name=study.study_name,
        storage=storage,
        best_value=float(best.value),  # type: ignore[arg-type]
        best_params=best_params,
        best_config=path,
        n_complete=n_complete,
        n_pruned=count(TrialState.PRUNED),
        n_failed=count(TrialState.FAIL),
    )
