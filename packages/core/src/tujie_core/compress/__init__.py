"""Model compression for any ``nn.Module`` (book ch. 15): pruning, low-rank factorisation, int8 quantisation,
ONNX export and knowledge distillation, plus one measurement that puts every variant into a comparison table.

Every technique returns a new model and never modifies the one it is given. :data:`COMPRESSORS` names each
technique for the CLI; :func:`compress` calls one with a :class:`CompressionContext` and validated options.

>>> small = prune(model, 0.5)                                   # doctest: +SKIP
>>> rows = [measure(m, evaluate, x[:1], name=n) for n, m in (("fp32", model), ("prune", small))]  # doctest: +SKIP
>>> print(compression_table(rows))                              # doctest: +SKIP
"""

from __future__ import annotations

from tujie_core.compress._util import TrainFn
from tujie_core.compress.distil import DistillationTask
from tujie_core.compress.lowrank import low_rank
from tujie_core.compress.measurement import CompressionRow, compression_table, measure, rows_to_json
from tujie_core.compress.onnx import OnnxModule, export_onnx, onnx_parity
from tujie_core.compress.pruning import make_permanent, prune
from tujie_core.compress.quantize import quantize_aware, quantize_dynamic, quantize_static
from tujie_core.compress.registry import COMPRESSORS, CompressionContext, compress
from tujie_core.compress.run import REPORT_SECTION, CompressionResult, check_methods, compress_model

__all__ = [
    "COMPRESSORS",
    "REPORT_SECTION",
    "CompressionContext",
    "CompressionResult",
    "CompressionRow",
    "DistillationTask",
    "OnnxModule",
    "TrainFn",
    "check_methods",
    "compress",
    "compress_model",
    "compression_table",
    "export_onnx",
    "low_rank",
    "make_permanent",
    "measure",
    "onnx_parity",
    "prune",
    "quantize_aware",
    "quantize_dynamic",
    "quantize_static",
    "rows_to_json",
]
