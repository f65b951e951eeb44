"""Medical imaging on MONAI: segmentation of 2D/3D volumes as core runs (``data: volumes``, ``task:
segmentation``, any ``monai/<Network>``), 2D image classification (``data: medical_images``) and saliency."""

from tujie_health.imaging.classifier import MedicalImageClassifier
from tujie_health.imaging.classify import medical_images
from tujie_health.imaging.data import Synthetic, volumes, write_synthetic
from tujie_health.imaging.segmenter import Segmentation, Segmenter
from tujie_health.imaging.task import Dice, Hausdorff95, SegmentationTask

__all__ = [
    "Dice",
    "Hausdorff95",
    "MedicalImageClassifier",
    "Segmentation",
    "SegmentationTask",
    "Segmenter",
    "Synthetic",
    "medical_images",
    "volumes",
    "write_synthetic",
]
