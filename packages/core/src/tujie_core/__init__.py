"""tujie core: a training engine on Lightning Fabric, streaming metrics, evaluation reports and the tujie CLI.

>>> from tujie_core import Trainer, ClassificationTask, create_model
>>> model = create_model("mlp", input_shape=(64,), num_outputs=10)
>>> trainer = Trainer(max_epochs=3, progress="none")
"""

__version__ = "0.1.0"

from tujie_core.averaging import WeightEMA
from tujie_core.callbacks import (
    CALLBACKS,
    PLUGINS,
    Callback,
    EarlyStopping,
    GradientClipping,
    ModelCheckpoint,
    NonFiniteLossGuard,
    Plugin,
)
from tujie_core.config import BaseRunConfig, RunConfig, TrainedRunConfig, TrainerConfig
from tujie_core.data import DATASETS, DataInfo, DataSplits
from tujie_core.errors import ConfigError, DataError, TrainingError, TujieError
from tujie_core.loop import Loop, TrainState
from tujie_core.models import MODELS, create_model
from tujie_core.optim import OPTIMIZERS, SCHEDULERS, Schedule
from tujie_core.pretrained import load_pretrained, save_pretrained
from tujie_core.registry import Registry
from tujie_core.report import write_report
from tujie_core.run import SupervisedRun
from tujie_core.runs import (
    RUN_KINDS,
    RunContext,
    RunKind,
    RunOutput,
    RunResult,
    compress_run,
    load_config,
    train_from_config,
)
from tujie_core.tasks import TASKS, ClassificationTask, RegressionTask, StepOutput, Task
from tujie_core.trainer import Evaluation, Trainer

__all__ = [
    "CALLBACKS",
    "DATASETS",
    "MODELS",
    "OPTIMIZERS",
    "PLUGINS",
    "RUN_KINDS",
    "SCHEDULERS",
    "TASKS",
    "BaseRunConfig",
    "Callback",
    "ClassificationTask",
    "ConfigError",
    "DataError",
    "DataInfo",
    "DataSplits",
    "EarlyStopping",
    "Evaluation",
    "GradientClipping",
    "Loop",
    "ModelCheckpoint",
    "NonFiniteLossGuard",
    "Plugin",
    "Registry",
    "RegressionTask",
    "RunConfig",
    "RunContext",
    "RunKind",
    "RunOutput",
    "RunResult",
    "Schedule",
    "StepOutput",
    "SupervisedRun",
    "Task",
    "TrainState",
    "TrainedRunConfig",
    "Trainer",
    "TrainerConfig",
    "TrainingError",
    "TujieError",
    "WeightEMA",
    "compress_run",
    "create_model",
    "load_config",
    "load_pretrained",
    "save_pretrained",
    "train_from_config",
    "write_report",
]
