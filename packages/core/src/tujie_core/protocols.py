"""Small protocols for cross-domain work: one domain implements them, another consumes them, neither imports the
other (a driving policy reads detections from any detector; tujie_vision's YOLO runs provide one).

Detectors are also registered by name in :data:`DETECTORS` (entry-point group ``tujie.detectors``), so a consumer
can load one from a saved folder without importing the package that trained it:
``DETECTORS.create("yolo", run_dir="runs/vehicles/…")``.

>>> def brake_needed(detector: Detector, frame) -> bool:
...     return any(d.label == "vehicle" and d.score > 0.5 and d.box[3] > 0.8 * frame.shape[0]
...                for d in detector.detect(frame))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tujie_core.registry import Registry


@dataclass(frozen=True)
class Detection:
    """One detected object: pixel box ``(x1, y1, x2, y2)`` in the frame, its class name and confidence."""

    box: tuple[float, float, float, float]
    label: str
    score: float


@runtime_checkable
class Detector(Protocol):
    """Anything that turns an RGB frame ``(H, W, 3)`` uint8 array into detections."""

    class_names: Sequence[str]

    def detect(self, frame: Any) -> list[Detection]: ...


DETECTORS: Registry = Registry("detectors")  # name → loader(run_dir, **options) returning a Detector
