"""What every training loop shares with its callbacks: where training is, and a small protocol callbacks rely on.

The supervised :class:`~tujie_core.trainer.Trainer` is one loop; a kind of run that owns its own loop (an RL
algorithm's ``learn``, ultralytics' trainer) is another. Callbacks typed on :class:`Loop` (early stopping,
checkpointing, Optuna pruning) work with both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass
class TrainState:
    """Where training is: completed epochs, optimizer steps, micro-batches consumed in the current epoch."""

    epoch: int = 0
    step: int = 0
    batches_in_epoch: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@runtime_checkable
class Loop(Protocol):
    """The part of a training loop that generic callbacks use.

    ``state.epoch``/``state.step`` say where training is ("epoch" may be an evaluation round of an RL loop),
    setting ``should_stop`` ends training after the current round, ``save_checkpoint`` writes everything a resume
    needs to ``path`` (atomically).
    """

    state: TrainState
    should_stop: bool

    def save_checkpoint(self, path: str | Path) -> None: ...
