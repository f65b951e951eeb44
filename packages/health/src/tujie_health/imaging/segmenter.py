"""A trained segmentation run as an object: load it, segment one volume, stream a folder of scans into masks.

>>> segmenter = Segmenter.load("runs/synthetic-unet/20261203-...")  # doctest: +SKIP
>>> result = segmenter.predict("scan.nii.gz")  # the mask on the scan's own grid, ml per class  # doctest: +SKIP
>>> summary = segmenter.predict_files("incoming/", "masks/")  # bad files: a rejects CSV  # doctest: +SKIP

Inputs get the run's own preprocessing (orientation, spacing, intensity), the network runs in sliding windows of
the training patch, and the mask is resampled (nearest) back onto the input's grid, so it overlays the original
scan in any viewer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import Compose, EnsureTyped, ResampleToMatch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from tujie_core import PLUGINS, DataError, Evaluation, Trainer, create_model, load_config
from tujie_core.inference import InferenceSummary, Rejected, module_fingerprint, predict_stream
from tujie_core.progress import Mode
from tujie_health.imaging.data import (
    CheckPaird,
    ReadVolumed,
    file_records,
    preprocessing,
    spacing_problem,
    unwrap_data_error,
    volume_name,
)
from tujie_health.imaging.task import SegmentationTask


@dataclass
class Segmentation:
    """One volume's result: the label map on the input's grid, its affine, and per foreground class the voxel
    count and volume in millilitres."""

    mask: np.ndarray
    affine: np.ndarray
    voxels: dict[str, int]
    millilitres: dict[str, float]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(self.mask.astype(np.uint8), self.affine), str(path))
        return path


class Segmenter:
    """A segmentation network with the preprocessing and sliding-window settings of the run that trained it."""

    def __init__(
        self,
        task: SegmentationTask,
        input_shape: Sequence[int],
        class_names: list[str],
        *,
        spacing: Sequence[float] | None = None,
        orientation: str | None = None,
        intensity_range: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.task = task
        self.input_shape = tuple(int(v) for v in input_shape)  # (channels, *training patch)
        self.class_names = class_names
        self.spacing, self.orientation, self.intensity = spacing, orientation, intensity_range
        self.need_spacing = spacing is not None
        self.reader = ReadVolumed(("image",))
        self.transform = preprocessing(
            ("image",), spacing=spacing, orientation=orientation, intensity_range=intensity_range
        )
        self.device = torch.device(device)
        self.task.model.to(self.device).eval()

    @property
    def model(self) -> torch.nn.Module:
        return self.task.model

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Segmenter:
        """A run folder written by a segmentation run (weights via safetensors, no pickle)."""
        run_dir = Path(path)
        model_dir = run_dir / "model"
        for needed in (run_dir / "config.yaml", model_dir / "config.json", model_dir / "model.safetensors"):
            if not needed.is_file():
                raise DataError(f"{run_dir}: not a finished segmentation run (missing {needed.name})")
        config = load_config(run_dir / "config.yaml")
        if config.data.name != "volumes":
            raise DataError(f"{run_dir}: trained on '{config.data.name}', not on segmentation volumes")
        saved = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        spec = dict(saved["model"])
        input_shape = spec["input_shape"]
        model = create_model(spec.pop("name"), **spec)
        for plugin in config.plugins:  # the architecture the run trained (DP swaps BatchNorm for GroupNorm)
            model = PLUGINS.create(plugin.name, where="plugins", **plugin.params).prepare_model(model)
        model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
        options = dict(config.task.params) if config.task else {}
        task = SegmentationTask(model, int(spec["num_outputs"]), input_shape=input_shape, **options)
        data = config.data.params
        names = saved.get("class_names") or [str(c) for c in range(int(spec["num_outputs"]))]
        return cls(
            task,
            input_shape,
            names,
            spacing=data.get("spacing"),
            orientation=data.get("orientation"),
            intensity_range=data.get("intensity_range"),
            device=device,
        )

    # ---- one volume ---------------------------------------------------------------------------------------------
    def preprocess(self, source: str | Path | MetaTensor) -> tuple[MetaTensor, MetaTensor]:
        """(the volume as read, the volume the network sees); DataError naming the file when it is unusable."""
        original = self.reader({"image": str(source) if isinstance(source, Path) else source})["image"]
        if not isinstance(original, MetaTensor):
            original = MetaTensor(torch.as_tensor(original), affine=torch.eye(4))
        if self.need_spacing and (problem := spacing_problem(original, original.ndim - 1)):
            raise DataError(f"{source}: no valid voxel spacing in its header ({problem})")
        channels, expected = self.input_shape[0], len(self.input_shape) - 1
        if original.ndim - 1 != expected:
            raise DataError(f"{source}: a {original.ndim - 1}D image; the model segments {expected}D volumes")
        if original.shape[0] != channels:
            raise DataError(f"{source}: {original.shape[0]} image channel(s); the model takes {channels}")
        return original, self.transform({"image": original.clone()})["image"]

    @torch.no_grad()
    def segment(self, original: MetaTensor, image: MetaTensor) -> Segmentation:
        probs = self.task.predict_step({"image": image.as_tensor()[None].float().to(self.device)})[0].cpu()
        labels = MetaTensor(probs.argmax(0, keepdim=True).float(), affine=image.affine)
        on_input = ResampleToMatch(mode="nearest")(labels, img_dst=original)
        mask = np.asarray(on_input[0]).round().astype(np.uint8)
        affine = np.asarray(original.affine, dtype=np.float64)
        spatial = mask.ndim
        voxel_ml = float(np.abs(np.linalg.det(affine[:spatial, :spatial]))) / 1000.0
        voxels = {name: int((mask == c).sum()) for c, name in enumerate(self.class_names) if c > 0}
        return Segmentation(mask, affine, voxels, {k: v * voxel_ml for k, v in voxels.items()})

    def predict(self, source: str | Path | MetaTensor) -> Segmentation:
        """Segment one NIfTI/NRRD file, DICOM series folder, or channel-first MetaTensor."""
        return self.segment(*self.preprocess(Path(source) if isinstance(source, str) else source))

    def evaluate(self, source: str | Path, output_dir: str | Path | None = None) -> Evaluation:
        """Dice, HD95 and loss of every labelled volume of ``source`` (a dataset.json, a CSV of image,label paths or
        a folder of images/ + labels/), each preprocessed as in training and segmented whole in sliding windows;
        ``output_dir``: also ``metrics.json`` there."""
        records, _ = file_records(Path(source))
        steps = [ReadVolumed(), CheckPaird(len(self.class_names), self.need_spacing, require_foreground=False)]
        keys = ("image", "label")
        pre = preprocessing(keys, spacing=self.spacing, orientation=self.orientation, intensity_range=self.intensity)
        transform = Compose([*steps, *pre.transforms, EnsureTyped(keys=keys, track_meta=False)])
        loader = DataLoader(Dataset(records, transform), batch_size=1)
        try:
            evaluation = Trainer(accelerator=self.device.type, progress="none").evaluate(self.task, loader, "eval")
        except Exception as exc:
            raise unwrap_data_error(exc) from None
        if output_dir is not None:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "metrics.json").write_text(json.dumps(evaluation.metrics, indent=2))
        return evaluation

    # ---- many volumes -------------------------------------------------------------------------------------------
    def predict_files(
        self,
        inputs: str | Path,
        output_dir: str | Path,
        *,
        workers: int | None = None,
        resume: bool = True,
        progress: Mode = "none",
    ) -> InferenceSummary:
        """Segment every scan under ``inputs`` (a folder of files and DICOM series folders, a ``.txt`` list of
        paths, or one file) into ``output_dir/<name>_seg.nii.gz``, on core's streaming engine: reading on
        ``workers`` threads, one scan in memory per worker, bad files listed with the reason in
        ``segmentations.csv.rejects.csv`` while every good one is segmented, resumable after an interruption.
        ``segmentations.csv`` has one row per scan: the mask's path and the voxels and millilitres per class."""
        inputs, output_dir = Path(inputs), Path(output_dir)
        rows = list(volume_inputs(inputs))  # a missing input fails now, not in a worker
        foreground = self.class_names[1:]

        def prepare(records: list[str]) -> list[Any]:
            out: list[Any] = []
            for record in records:
                try:
                    out.append((record, *self.preprocess(Path(record))))
                except DataError as exc:
                    out.append(Rejected(str(exc).removeprefix(f"{record}: ")))
            return out

        def predict(items: list[tuple[str, MetaTensor, MetaTensor]]) -> list[list[Any]]:
            written = []
            for record, original, image in items:
                result = self.segment(original, image)
                mask = result.save(output_dir / f"{volume_name(Path(record))}_seg.nii.gz")
                written.append(
                    [
                        str(mask),
                        *(result.voxels[n] for n in foreground),
                        *(f"{result.millilitres[n]:.4f}" for n in foreground),
                    ]
                )
            return written

        return predict_stream(
            lambda: iter(rows),
            predict,
            output_dir / "segmentations.csv",
            header=["mask", *(f"voxels_{n}" for n in foreground), *(f"ml_{n}" for n in foreground)],
            prepare=prepare,
            id_column="file",
            chunk_size=1,
            workers=workers,
            resume=resume,
            job={"inputs": [r for _, r in rows], "model": module_fingerprint(self.model)},
            progress=progress,
        )


def volume_inputs(path: Path) -> Iterator[tuple[str, str]]:
    """(row id, path) for every scan: a folder's image files and DICOM series folders (sorted), the lines of a
    ``.txt`` list, or one file or series folder."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        yield from ((line, str((path.parent / line) if not Path(line).is_absolute() else line)) for line in lines)
    elif path.is_dir() and not any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
        for entry in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
            yield entry.name, str(entry)
    else:
        yield path.name, str(path)
