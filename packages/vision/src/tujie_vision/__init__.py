"""tujie vision: timm classification and ultralytics YOLO detection.

Skeleton: the package's dependencies are declared and installed; its API arrives with its own issue.
"""

__version__ = "0.1.0"
