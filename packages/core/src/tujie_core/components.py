"""Every registry the run config can name, and the check that a config's components exist and fit."""

from __future__ import annotations

from tujie_core.callbacks import CALLBACKS, PLUGINS
from tujie_core.config import ComponentSpec, RunConfig
from tujie_core.data import DATASETS
from tujie_core.errors import ConfigError
from tujie_core.models import MODELS
from tujie_core.optim import OPTIMIZERS, SCHEDULERS
from tujie_core.registry import Registry, validate_kwargs
from tujie_core.tasks import TASKS

# Arguments a run fills in itself (from the data, the model or the trainer): a config must not set them.
RUNTIME_ARGS: dict[str, tuple[str, ...]] = {
    "models": ("input_shape", "num_outputs"),
    "tasks": ("model", "optimizer", "scheduler"),
    "optimizers": ("params",),
    "schedulers": ("optimizer", "total_steps"),
    "callbacks": ("dirpath",),
}
# Arguments a config may set, and that the run takes from the data when it does not.
FROM_DATA: dict[str, tuple[str, ...]] = {"tasks": ("num_classes", "mode", "input_shape")}


def check_spec(registry: Registry, spec: ComponentSpec, where: str) -> None:
    try:
        factory = registry.get(spec.name)
    except ConfigError as exc:
        raise ConfigError(f"{where}.name: {exc}") from None
    runtime = RUNTIME_ARGS.get(registry.kind, ())
    clash = sorted(set(spec.params) & set(runtime))
    if clash:
        raise ConfigError(f"{where}.{clash[0]}: set by the run itself; remove it from the config")
    validate_kwargs(factory, spec.params, where=where, skip=runtime, optional=FROM_DATA.get(registry.kind, ()))


def check_components(config: RunConfig) -> None:
    """Raise ConfigError naming the field when a component is unknown or given a bad option."""
    check_spec(DATASETS, config.data, "data")
    check_spec(MODELS, config.model, "model")
    if config.task is not None:
        check_spec(TASKS, config.task, "task")
    check_spec(OPTIMIZERS, config.optimizer, "optimizer")
    if config.scheduler is not None:
        check_spec(SCHEDULERS, config.scheduler, "scheduler")
    for i, spec in enumerate(config.callbacks):
        check_spec(CALLBACKS, spec, f"callbacks[{i}]")
    for i, spec in enumerate(config.plugins):
        check_spec(PLUGINS, spec, f"plugins[{i}]")
