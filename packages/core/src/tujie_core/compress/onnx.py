"""ONNX export, a module that runs the exported file with ONNX Runtime, and a parity check against torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn


def export_onnx(model: nn.Module, example: Tensor, path: str | Path, *, dynamic_batch: bool = True) -> Path:
    """Write ``model`` (in eval mode) as ONNX to ``path``, input ``input``, output ``output``, with a dynamic
    batch axis unless ``dynamic_batch=False``.

    Uses torch's TorchScript-based exporter (``dynamo=False``; deprecated since torch 2.9 but present in 2.14):
    the default torch.export-based one needs ``onnxscript``, which tujie does not install.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        torch.onnx.export(
            model, (example,), path, dynamo=False, input_names=["input"], output_names=["output"], dynamic_axes=axes
        )
    return path


_NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


class OnnxModule(nn.Module):
    """An ONNX file run by ONNX Runtime on the CPU, callable like the model it came from (tensors in and out),
    so :func:`measure` and evaluation code work on it. It has no torch parameters and cannot be trained."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime

        super().__init__()
        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        feed = {name: x.detach().cpu().numpy() for name, x in zip(self.input_names, inputs, strict=True)}
        outputs = tuple(torch.from_numpy(o).to(inputs[0].device) for o in self.session.run(None, feed))
        return outputs[0] if len(outputs) == 1 else outputs

    def initializers(self) -> list[Tensor]:
        """The graph's stored weights, without BatchNorm running statistics (which torch counts as buffers;
        BatchNorm after a convolution is folded into it by the exporter)."""
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(self.path)).graph
        return [
            torch.from_numpy(numpy_helper.to_array(t).copy())
            for t in graph.initializer
            if not t.name.endswith(_NORM_STATISTICS)
        ]


def onnx_parity(model: nn.Module, path: str | Path, inputs: Tensor, atol: float | None = 1e-4) -> float:
    """Largest absolute difference between ``model`` (eval mode) and the ONNX file at ``path`` on ``inputs``;
    raises ValueError when it exceeds ``atol`` (``atol=None``: only report it)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            diff = float((model(inputs) - OnnxModule(path)(inputs)).abs().max())
    finally:
        model.train(was_training)
    if atol is not None and diff > atol:
        raise ValueError(f"ONNX output differs from PyTorch by {diff:.3g}, more than atol={atol:g} ({path})")
    return diff
