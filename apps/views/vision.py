"""Vision: classify an image with a trained classifier, detect vehicles in a freshly generated highway-env frame or
an uploaded image (boxes drawn), and draw a class from a trained conditional GAN (tujie_vision)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw
from tujie_ui import finished_runs, missing_package, offer_demo, page_spec, relative, runs_root, upload_bytes

from tujie_core import TujieError

try:
    from tujie_vision.classifier import ImageClassifier
    from tujie_vision.detection import YoloDetector
    from tujie_vision.gan import ConditionalGAN
    from tujie_vision.scenes import SceneOptions, frames
except ImportError as exc:
    missing_package("tujie-vision", exc)

SPEC = page_spec("vision.py")
MAX_UPLOAD_MB = 10
MAX_PIXELS = 40_000_000  # a decompression bomb is refused before it is decoded
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "ppm", "webp"]
SCENARIOS = ["highway-fast", "merge", "roundabout", "intersection"]


def image_classifiers(root: Path) -> list[Path]:
    """Supervised runs whose model reads images (a 3-d input shape), newest first."""
    found = []
    for run in finished_runs(root, "supervised"):
        config = run / "model" / "config.json"
        if (
            config.is_file()
            and len(json.loads(config.read_text(encoding="utf-8"))["model"].get("input_shape", [])) == 3
        ):
            found.append(run)
    return found


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
    """The upload as an image, or None after a message on the page (type, size, not an image, too many pixels)."""
    data = upload_bytes(upload, MAX_UPLOAD_MB, tuple(f".{t}" for t in IMAGE_TYPES))
    if data is None:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            st.error(f"{upload.name}: {image.width}×{image.height} pixels is over the {MAX_PIXELS:,} pixel limit")
            return None
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


st.title("Vision")
st.caption(f"Book ch. {SPEC.chapters}.")
root = runs_root()

st.header("Classify an image")
classifiers = image_classifiers(root)
if not classifiers:
    offer_demo(SPEC.demo_part, "image classifier", "tujie vision classify train")
else:
    choice = st.selectbox("classifier run", [relative(p, root) for p in classifiers])
    model = classifier(str(root / choice))
    upload = st.file_uploader("an image", type=IMAGE_TYPES, key="classify", max_upload_size=MAX_UPLOAD_MB)
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

st.header("Detect vehicles")
detectors = finished_runs(root, "detection")
upload = st.file_uploader(
    "an image of a road (or a generated driving scene below)",
    type=IMAGE_TYPES,
    key="detect",
    max_upload_size=MAX_UPLOAD_MB,
)
truth: list[tuple] = []
if upload is not None:
    picture = uploaded_image(upload)
    frame = np.asarray(picture.convert("RGB")) if picture is not None else None
    source = upload.name
else:
    col1, col2 = st.columns(2)
    scenario = col1.selectbox("scenario", SCENARIOS)
    seed = int(col2.number_input("seed", 0, 10_000, 0))
    frame, boxes = next(frames(SceneOptions(scenario=scenario), count=1, seed=seed))
    truth, source = [tuple(b) for b in boxes], f"{scenario}, seed {seed}"
if frame is not None and not detectors:
    st.image(draw_boxes(frame, truth, (0, 200, 0)), caption=f"{source}: boxes from simulator state (green)")
    offer_demo(SPEC.demo_part, "detection run", "tujie vision detect train")
elif frame is not None:
    run = st.selectbox("detector run", [relative(p, root) for p in detectors])
    found = detector(str(root / run)).detect(frame)
    picture = draw_boxes(draw_boxes(frame, truth, (0, 200, 0)), [d.box for d in found], (230, 0, 0))
    against = f" against {len(truth)} simulator boxes (green)" if upload is None else ""
    st.image(picture, caption=f"{source}: {len(found)} detections (red){against}")
    if found:
        st.dataframe(
            pd.DataFrame(
                [{"label": d.label, "score": round(d.score, 3), "box": tuple(round(v) for v in d.box)} for d in found]
            ),
            hide_index=True,
        )

st.header("Synthetic images from a conditional GAN (ch. 10)")
gans = finished_runs(root, "gan")
if not gans:
    offer_demo(SPEC.demo_part, "GAN run", "tujie vision gan train")
else:
    run = st.selectbox("GAN run", [relative(p, root) for p in gans])
    generator = gan(str(root / run))
    label = st.selectbox("class", generator.class_names)
    samples = generator.sample(label, 16, seed=int(st.number_input("noise seed", 0, 10_000, 0)))
    grid = np.concatenate([np.concatenate(list(samples[r * 8 : (r + 1) * 8]), axis=1) for r in range(2)], axis=0)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    st.image(
        picture.resize((picture.width * 4, picture.height * 4), Image.Resampling.NEAREST),
        caption=f"16 samples of class {label}",
    )
