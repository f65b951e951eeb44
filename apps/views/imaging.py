"""Medical imaging: segment a volume (slices with the predicted mask over them and a slice slider), classify a
medical image with a saliency overlay, and a risk form giving a patient's calibrated probability with the columns
that drove it (tujie_health)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st
import yaml
from PIL import Image
from tujie_ui import missing_package, offer_demo, page_spec, relative, runs_on_data, runs_root, upload_bytes

from tujie_core import TujieError

try:
    from tujie_health.clinical import RiskModel
    from tujie_health.imaging import Segmenter
    from tujie_health.imaging.classifier import MedicalImageClassifier
    from tujie_health.imaging.classify import Lesions, image_tensor
    from tujie_health.imaging.data import Synthetic
except ImportError as exc:
    missing_package("tujie-health", exc)

SPEC = page_spec("imaging.py")
MAX_UPLOAD_MB = 200
MASK_COLOUR = np.array([230, 40, 40], dtype=np.float32)
TRUTH_COLOUR = np.array([40, 200, 80], dtype=np.float32)


@st.cache_resource
def segmenter(run: str) -> Segmenter:
    return Segmenter.load(run)


@st.cache_resource
def image_classifier(run: str) -> MedicalImageClassifier:
    return MedicalImageClassifier.load(run)


@st.cache_resource
def risk_model(run: str) -> RiskModel:
    return RiskModel.load(run)


def pick_run(root: Path, data_name: str, label: str, how_to_train: str) -> Path | None:
    """A selectbox over the runs on ``data_name``, or a message saying how to make one."""
    runs = runs_on_data(root, data_name)
    if not runs:
        offer_demo(SPEC.demo_part, label, how_to_train)
        return None
    return root / st.selectbox(label, [relative(p, root) for p in runs])


def overlay_slice(image: np.ndarray, mask: np.ndarray, truth: np.ndarray | None, scale: int) -> Image.Image:
    """A grey slice with the predicted mask in red (and the true outline in green), enlarged ``scale``×."""
    span = float(image.max() - image.min()) or 1.0
    grey = np.repeat(((image - image.min()) / span * 255)[..., None], 3, axis=-1).astype(np.float32)
    rgb = np.where((mask > 0)[..., None], 0.55 * grey + 0.45 * MASK_COLOUR, grey)
    if truth is not None:
        edge = (truth > 0) & ~(np.roll(truth > 0, 1, 0) & np.roll(truth > 0, -1, 0))
        edge |= (truth > 0) & ~(np.roll(truth > 0, 1, 1) & np.roll(truth > 0, -1, 1))
        rgb[edge] = TRUTH_COLOUR
    picture = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def synthetic_size(run: Path) -> int:
    data = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")).get("data", {})
    synthetic = data.get("synthetic") if isinstance(data.get("synthetic"), dict) else {}
    return int(synthetic.get("size", Synthetic.size))


def segmentation_section(root: Path) -> None:
    st.header("Segment a volume")
    run = pick_run(root, "volumes", "segmentation run", "tujie health segment train")
    if run is None:
        return
    model = segmenter(str(run))
    upload = st.file_uploader(
        "a NIfTI volume (.nii, .nii.gz)", type=["nii", "gz"], key="volume", max_upload_size=MAX_UPLOAD_MB
    )
    truth = None
    try:
        if upload is not None and (data := upload_bytes(upload, MAX_UPLOAD_MB, (".nii", ".nii.gz"))) is not None:
            suffix = ".nii.gz" if upload.name.endswith(".gz") else ".nii"
            with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
                handle.write(data)
                handle.flush()
                original, prepared = model.preprocess(Path(handle.name))
                result = model.segment(original, prepared)
        elif upload is None:
            seed = st.slider("or a synthetic volume (seed)", 0, 99, 7)
            record = Synthetic(count=1, size=synthetic_size(run), seed=1000 + seed).records()[0]
            original, prepared = model.preprocess(record["image"])
            result = model.segment(original, prepared)
            truth = np.asarray(record["label"][0])
        else:
            return
    except TujieError as exc:
        st.error(str(exc))
        return
    volume = np.asarray(original[0])
    mask = result.mask
    if mask.ndim == 2:  # a 2D model: one slice
        volume, mask = volume[..., None], mask[..., None]
        truth = truth[..., None] if truth is not None else None
    depth = volume.shape[-1]
    index = st.slider("slice", 0, depth - 1, int(np.argmax((mask > 0).sum(axis=(0, 1)))) if mask.any() else depth // 2)
    scale = max(1, 384 // max(volume.shape[:2]))
    caption = "predicted mask (red)" + (", true outline (green)" if truth is not None else "")
    left, right = st.columns([2, 1])
    left.image(
        overlay_slice(volume[..., index], mask[..., index], None if truth is None else truth[..., index], scale),
        caption=f"slice {index} of {depth}: {caption}",
    )
    for name, ml in result.millilitres.items():
        right.metric(f"{name} volume", f"{ml:.2f} ml", f"{result.voxels[name]} voxels", delta_color="off")
    if truth is not None:
        overlap = float(2 * ((mask > 0) & (truth > 0)).sum() / max(1, (mask > 0).sum() + (truth > 0).sum()))
        right.metric("Dice against the truth", f"{overlap:.3f}")


def classification_section(root: Path) -> None:
    st.header("Classify a medical image, with saliency")
    run = pick_run(root, "medical_images", "image classifier run", "tujie health classify-images train")
    if run is None:
        return
    model = image_classifier(str(run))
    upload = st.file_uploader(
        "a MedMNIST .npz (its test split)", type=["npz"], key="npz", max_upload_size=MAX_UPLOAD_MB
    )
    try:
        if upload is not None:
            if (data := upload_bytes(upload, MAX_UPLOAD_MB, (".npz",))) is None:
                return
            with tempfile.NamedTemporaryFile(suffix=".npz") as handle:
                handle.write(data)
                handle.flush()
                images, _ = model.images(Path(handle.name))
        else:
            arrays, _ = Lesions(count=32, size=model.input_shape[-1], seed=99).arrays()
            images = image_tensor(arrays, None)
    except TujieError as exc:
        st.error(str(exc))
        return
    index = st.slider("image", 0, len(images) - 1, 0, key="image_index")
    method = st.radio("saliency", ["gradcam", "occlusion"], horizontal=True)
    probability = model.probabilities(images[index : index + 1])[0]
    left, right = st.columns(2)
    left.image(model.explain(images[index], method), caption=f"{method} overlay (red: what drove the prediction)")
    if model.task.kind == "binary":
        positive = model.class_names[-1]
        flagged = float(probability) > model.task.decision_threshold
        right.metric(f"P({positive})", f"{float(probability):.3f}", "flagged" if flagged else "not flagged")
    else:
        best = int(probability.argmax())
        right.metric("predicted class", model.class_names[best], f"p = {float(probability[best]):.3f}")


def risk_section(root: Path) -> None:
    st.header("Risk of one patient")
    run = pick_run(root, "patients", "risk model run", "tujie health risk train")
    if run is None:
        return
    try:
        model = risk_model(str(run))
    except TujieError as exc:
        st.error(str(exc))
        return
    typical = model.typical_record()
    record: dict[str, object] = {}
    with st.expander("patient record (starts at the mean training patient)", expanded=False):
        columns = st.columns(3)
        for i, column in enumerate(model.schema.columns):
            box = columns[i % 3]
            if column.kind == "numeric":
                record[column.name] = box.number_input(column.name, value=float(typical[column.name]), format="%.4g")
            else:
                default = column.categories.index(typical[column.name])
                record[column.name] = box.selectbox(column.name, column.categories, index=default)
    try:
        value = float(model.predict_proba([record])[0])
        explanation = model.explain(record)
    except TujieError as exc:
        st.error(str(exc))
        return
    left, right = st.columns([1, 2])
    if model.kind == "binary":
        flagged = model.predict([record])[0] == model.class_names[1]
        left.metric(
            f"P({model.class_names[1]}), calibrated ({model.calibration.method})",
            f"{value:.3f}",
            f"flagged (threshold {model.calibrated_threshold:.3f})" if flagged else "not flagged",
        )
    else:
        left.metric(f"predicted {model.schema.target}", f"{value:.4g}")
    saved = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    if "inference" in saved:
        left.caption(f"inference: {saved['inference'].get('function') or saved['inference'].get('why_not_plain')}")
    right.pyplot(explanation.plot(k=10))


st.title("Medical imaging")
st.caption(f"Book ch. {SPEC.chapters}.")
root = runs_root()
segmentation_section(root)
classification_section(root)
risk_section(root)
st.caption(f"Uploads up to {MAX_UPLOAD_MB} MB; everything runs on this machine and nothing is sent anywhere.")
