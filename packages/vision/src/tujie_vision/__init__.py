"""tujie vision: timm classification and ultralytics YOLO detection.

Built so far (issue 12, first part): every timm architecture in the core model registry as ``timm/<arch>``
(``tujie_vision.models``), so a run config trains a ResNet, MobileNetV3 or ViT like any core model. The image
classifier API, transfer learning, YOLO detection, the driving-scene generator and the GAN come next.
"""

__version__ = "0.1.0"
