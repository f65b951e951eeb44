"""Export a segmentation run as a MONAI Bundle: a folder that MONAI's own tooling runs without tujie installed.

    bundle/configs/metadata.json    version, MONAI/PyTorch versions, network input and output description
    bundle/configs/inference.json   network, preprocessing (as in training), sliding-window inferer, saving
    bundle/models/model.pt          the state dict (``torch.load(weights_only=True)`` reads it)
    bundle/docs/README.md

    python -m monai.bundle run --config_file bundle/configs/inference.json \\
        --meta_file bundle/configs/metadata.json --bundle_root bundle --input scan.nii.gz --output_dir out/

writes ``out/<scan>/<scan>_seg.nii.gz`` on the scan's own grid (MONAI's ``Invertd`` undoes the preprocessing).
The inference config uses plain MONAI transforms and expressions (no ignite engine), so it needs only ``monai``
and ``nibabel``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai
import torch

from tujie_core import DataError, load_config
from tujie_health.imaging.models import network_arguments
from tujie_health.imaging.segmenter import Segmenter


@dataclass
class BundleExport:
    folder: Path
    inference: Path
    metadata: Path
    weights: Path

    def command(self, image: str = "scan.nii.gz", output_dir: str = "out") -> str:
        return (
            f"python -m monai.bundle run --config_file {self.inference} --meta_file {self.metadata} "
            f"--bundle_root {self.folder} --input {image} --output_dir {output_dir}"
        )


def _preprocessing(segmenter: Segmenter) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]
    if segmenter.orientation:
        steps.append({"_target_": "Orientationd", "keys": "image", "axcodes": segmenter.orientation})
    if segmenter.spacing is not None:
        steps.append({"_target_": "Spacingd", "keys": "image", "pixdim": list(segmenter.spacing), "mode": "bilinear"})
    if segmenter.intensity is not None:
        a_min, a_max, b_min, b_max = segmenter.intensity
        window = {"a_min": a_min, "a_max": a_max, "b_min": b_min, "b_max": b_max, "clip": True}
        steps.append({"_target_": "ScaleIntensityRanged", "keys": "image", **window})
    else:
        steps.append({"_target_": "ScaleIntensityd", "keys": "image"})
    steps.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"})
    return steps


def export_bundle(run_dir: str | Path, folder: str | Path, version: str = "0.1.0") -> BundleExport:
    """Write the MONAI Bundle of a segmentation run into ``folder``."""
    run_dir, folder = Path(run_dir), Path(folder)
    segmenter = Segmenter.load(run_dir)
    config = load_config(run_dir / "config.yaml")
    if config.plugins:
        raise DataError(f"{run_dir}: trained with plugins ({config.plugins[0].name}); export a run without them")
    name = config.model.name
    if not name.startswith("monai/"):
        raise DataError(f"{run_dir}: model '{name}' is not a MONAI network; a bundle needs monai.networks.nets")
    arch = name.removeprefix("monai/")
    input_shape, classes = segmenter.input_shape, len(segmenter.class_names)
    arguments = network_arguments(arch, input_shape, classes, **config.model.params)
    task = segmenter.task
    inference = {
        "imports": ["$import torch", "$import monai"],
        "bundle_root": str(folder.resolve()),
        "input": "scan.nii.gz",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": f"monai.networks.nets.{arch}", **arguments},
        "network": "$@network_def.to(@device)",
        "checkpoint": "$torch.load(@bundle_root + '/models/model.pt', map_location=@device, weights_only=True)",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing(segmenter)},
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(input_shape[1:]),
            "sw_batch_size": task.sw_batch_size,
            "overlap": task.overlap,
            "mode": task.blend,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": True,
                },
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "output_dtype": "$torch.uint8",
                    "resample": False,
                    "separate_folder": True,
                },
            ],
        },
        "sample": "$@preprocessing({'image': @input})",
        "predict": "$lambda d: {**d, 'pred': @inferer(d['image'][None].to(@device), @network)[0].cpu()}",
        "run": [
            "$@network.load_state_dict(@checkpoint)",
            "$@network.eval()",
            "$torch.set_grad_enabled(False)",
            "$@postprocessing(@predict(@sample))",
        ],
    }
    names = segmenter.class_names
    metadata = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": version,
        "changelog": {version: f"exported by tujie from {run_dir.name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": __import__("numpy").__version__,
        "required_packages_version": {"nibabel": __import__("nibabel").__version__},
        "task": f"{len(input_shape) - 1}D segmentation",
        "description": f"{arch} trained by tujie ({config.name}); classes: {', '.join(names)}",
        "authors": "tujie",
        "copyright": "the model's owner",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "num_channels": input_shape[0],
                    "spatial_shape": list(input_shape[1:]),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {str(c): f"channel {c}" for c in range(input_shape[0])},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": classes,
                    "spatial_shape": list(input_shape[1:]),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {str(c): n for c, n in enumerate(names)},
                }
            },
        },
    }
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "docs").mkdir(exist_ok=True)
    paths = BundleExport(
        folder,
        folder / "configs" / "inference.json",
        folder / "configs" / "metadata.json",
        folder / "models" / "model.pt",
    )
    paths.inference.write_text(json.dumps(inference, indent=2), encoding="utf-8")
    paths.metadata.write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    torch.save({k: v.cpu() for k, v in segmenter.model.state_dict().items()}, paths.weights)
    (folder / "docs" / "README.md").write_text(
        f"# {config.name}\n\n{metadata['description']}.\n\nRun it on a scan:\n\n    {paths.command()}\n",
        encoding="utf-8",
    )
    return paths
