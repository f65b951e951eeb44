"""tujie Streamlit app, vision page: classify an image with a trained classifier, detect vehicles in a freshly
generated highway-env frame (boxes drawn), and draw a class from a trained GAN (tujie_vision)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from tujie_core import TujieError

try:
    from tujie_vision.classifier import ImageClassifier
    from tujie_vision.detection import YoloDetector
    from tujie_vision.gan import ConditionalGAN
    from tujie_vision.scenes import SceneOptions, frames
except ImportError:  # the page of a package that is not installed says so
    st.error("tujie-vision is not installed: `pip install tujie-vision` (or `make setup`).")
    st.stop()

MAX_UPLOAD_MB = 10
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "ppm", "webp"]
SCENARIOS = ["highway-fast", "merge", "roundabout", "intersection"]


def runs_of(root: Path, kind: str) -> list[Path]:
    """Finished run folders of ``kind`` under ``root`` (newest first); image classifiers only for supervised."""
    found = []
    for summary in root.glob("**/summary.json"):
        run = summary.parent
        if json.loads(summary.read_text(encoding="utf-8")).get("kind") != kind:
            continue
        if kind == "supervised":
            config = run / "model" / "config.json"
            shape = (
                json.loads(config.read_text(encoding="utf-8"))["model"].get("input_shape", [])
                if config.is_file()
                else []
            )
            if len(shape) != 3:
                continue
        found.append(run)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


@st.cache_resource
def classifier(run: str) -> ImageClassifier:
    return ImageClassifier.load(run)


@st.cache_resource
def detector(run: str) -> YoloDetector:
    return YoloDetector.load(run)


@st.cache_resource
def gan(run: str) -> ConditionalGAN:
    return ConditionalGAN.load(run)


def uploaded_image(upload) -> Image.Image | None:
    """The upload as an image, or None after a message on the page (too large, not an image)."""
    if upload.size > MAX_UPLOAD_MB * 2**20:
        st.error(f"{upload.name}: {upload.size / 2**20:.1f} MB is over the {MAX_UPLOAD_MB} MB limit")
        return None
    try:
        image = Image.open(io.BytesIO(upload.getvalue()))
        image.load()
    except Exception as exc:  # any decoder error is a bad upload, shown on the page
        st.error(f"{upload.name}: not a readable image ({type(exc).__name__})")
        return None
    return image


def draw_boxes(picture: np.ndarray | Image.Image, boxes: list[tuple], colour: tuple[int, int, int]) -> Image.Image:
    image = Image.fromarray(picture) if isinstance(picture, np.ndarray) else picture.copy()
    pen = ImageDraw.Draw(image)
    for box in boxes:
        pen.rectangle([float(v) for v in box[:4]], outline=colour, width=2)
    return image


st.set_page_config(page_title="tujie — vision", layout="wide")
st.title("tujie 图解 — vision (book ch. 6, 10, 14, 17)")
root = Path(st.sidebar.text_input("runs folder", "runs"))

st.header("Classify an image")
classifiers = runs_of(root, "supervised") if root.is_dir() else []
if not classifiers:
    st.info(
        f"No image classifier under `{root}`. Train one: `tujie vision classify train` (the digits) or `make demo`."
    )
else:
    choice = st.selectbox("classifier run", [str(p.relative_to(root)) for p in classifiers])
    model = classifier(str(root / choice))
    upload = st.file_uploader("an image", type=IMAGE_TYPES, key="classify")
    image = uploaded_image(upload) if upload is not None else None
    if upload is None:
        from sklearn.datasets import load_digits

        index = st.slider("or a digit from scikit-learn's set", 0, 1796, 0)
        image = Image.fromarray((load_digits().images[index] * 16).clip(0, 255).astype(np.uint8))
    if image is not None:
        try:
            prediction = model.predict([image])[0]
        except TujieError as exc:
            st.error(str(exc))
        else:
            left, right = st.columns([1, 2])
            left.image(image.resize((128, int(128 * image.height / image.width)), Image.Resampling.NEAREST))
            left.metric("predicted class", prediction.label, f"p = {prediction.score:.3f}")
            probabilities = pd.DataFrame(
                {"class": list(prediction.probabilities), "probability": list(prediction.probabilities.values())}
            )
            right.bar_chart(probabilities, x="class", y="probability")

st.header("Detect vehicles in a generated driving scene")
col1, col2 = st.columns(2)
scenario = col1.selectbox("scenario", SCENARIOS)
seed = int(col2.number_input("seed", 0, 10_000, 0))
frame, truth = next(frames(SceneOptions(scenario=scenario), count=1, seed=seed))
detectors = runs_of(root, "detection") if root.is_dir() else []
if not detectors:
    st.image(draw_boxes(frame, [tuple(b) for b in truth], (0, 200, 0)), caption="boxes from simulator state (green)")
    st.info(f"No detection run under `{root}`. Train one: `tujie vision detect train` (generated scenes).")
else:
    run = st.selectbox("detector run", [str(p.relative_to(root)) for p in detectors])
    found = detector(str(root / run)).detect(frame)
    picture = draw_boxes(draw_boxes(frame, [tuple(b) for b in truth], (0, 200, 0)), [d.box for d in found], (230, 0, 0))
    st.image(picture, caption=f"{len(found)} detections (red) against {len(truth)} simulator boxes (green)")
    if found:
        st.dataframe(
            pd.DataFrame(
                [{"label": d.label, "score": round(d.score, 3), "box": tuple(round(v) for v in d.box)} for d in found]
            ),
            hide_index=True,
        )

st.header("Synthetic images from a conditional GAN (ch. 10)")
gans = runs_of(root, "gan") if root.is_dir() else []
if not gans:
    st.info(f"No GAN run under `{root}`. Train one: `tujie vision gan train` (the digits).")
else:
    run = st.selectbox("GAN run", [str(p.relative_to(root)) for p in gans])
    generator = gan(str(root / run))
    label = st.selectbox("class", generator.class_names)
    samples = generator.sample(label, 16, seed=int(st.number_input("noise seed", 0, 10_000, 0)))
    grid = np.concatenate([np.concatenate(list(samples[r * 8 : (r + 1) * 8]), axis=1) for r in range(2)], axis=0)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    st.image(
        picture.resize((picture.width * 4, picture.height * 4), Image.Resampling.NEAREST),
        caption=f"16 samples of class {label}",
    )
