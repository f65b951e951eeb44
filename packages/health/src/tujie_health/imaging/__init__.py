"""Medical imaging on MONAI: segmentation of 2D/3D volumes as core runs (``data: volumes``, ``task:
segmentation``, any ``monai/<Network>``)."""

from tujie_health.imaging.data import Synthetic, volumes, write_synthetic
from tujie_health.imaging.segmenter import Segmentation, Segmenter
from tujie_health.imaging.task import Dice, Hausdorff95, SegmentationTask

__all__ = [
    "Dice",
    "Hausdorff95",
    "Segmentation",
    "SegmentationTask",
    "Segmenter",
    "Synthetic",
    "volumes",
    "write_synthetic",
]
