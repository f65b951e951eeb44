"""tujie vision: image classification on timm architectures or a small CNN, transfer learning, YOLO detection on
generated driving scenes or your own data, a conditional DCGAN, and ONNX export.

>>> from tujie_vision import ImageClassifier
>>> clf = ImageClassifier.train(data={"path": "signs/", "image_size": 32}, model="timm/resnet18")  # doctest: +SKIP

Modules: ``data`` (the ``images`` dataset), ``models`` (``timm/<arch>`` in the core registry), ``classifier``,
``detection`` (``kind: detection``, ``YoloDetector``), ``scenes`` (highway-env YOLO datasets), ``gan``
(``kind: gan``), ``export`` (ONNX), ``cli`` (``tujie vision``).
"""

__version__ = "0.1.0"

from tujie_vision.classifier import ImageClassifier, Prediction

__all__ = ["ImageClassifier", "Prediction"]
