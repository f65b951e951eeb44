"""Medical imaging on MONAI: segmentation of 2D/3D volumes as core runs (``data: volumes``, ``task:
segmentation``, any ``monai/<Network>``)."""

from tujie_health.imaging.data import volumes
from tujie_health.imaging.task import Dice, Hausdorff95, SegmentationTask

__all__ = ["Dice", "Hausdorff95", "SegmentationTask", "volumes"]
