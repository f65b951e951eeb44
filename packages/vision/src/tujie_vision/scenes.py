"""Driving-scene detection data from the highway-env simulator: rendered frames with every vehicle's box
computed from simulator state, written as a YOLO dataset.

>>> make_driving_data("data/vehicles", scenario="highway-fast", frames=200, val_frames=50, seed=0)  # doctest: +SKIP
PosixPath('data/vehicles/data.yaml')

Frames are rendered headless (pygame offscreen) at ``width`` × ``height`` pixels; a vehicle's box is the
axis-aligned hull of its body rectangle (``LENGTH`` × ``WIDTH`` metres, turned by its heading) mapped through the
viewer's own world → pixel transform (``WorldSurface.pos2pix`` after the frame's camera move), clipped to the
frame. A vehicle less than ``min_visible`` inside the frame is left out. Training and validation frames come from
episodes with different seeds, so validation is a held-out split of unseen traffic. Uses highway-env only (this
package never imports tujie_driving).
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tujie_core import ConfigError

SCENARIOS = ("highway-fast", "highway", "merge", "roundabout", "intersection", "racetrack", "two-way", "u-turn")
CLASS_NAMES = ["vehicle"]
VAL_SEED_OFFSET = 1_000_003  # validation episodes never share a seed with training ones


def env_id(scenario: str) -> str:
    """The newest registered highway-env id of a scenario name (``merge`` → ``merge-v1``); ids pass through."""
    import gymnasium as gym
    import highway_env  # noqa: F401  (registers the environments)

    if scenario in gym.registry:
        return scenario
    versions = [k for k in gym.registry if k.rsplit("-v", 1)[0] == scenario]
    if not versions:
        raise ConfigError(f"scenario: no highway-env scenario '{scenario}' (try {', '.join(SCENARIOS)})")
    return max(versions, key=lambda k: int(k.rsplit("-v", 1)[1]))


@dataclass
class SceneOptions:
    """How frames are made: scenario, frame size and zoom (pixels per metre), traffic density, steps between
    frames, and the smallest visible share of a vehicle that still gets a box."""

    scenario: str = "highway-fast"
    width: int = 400
    height: int = 200
    scaling: float = 5.5
    vehicles_density: float = 1.5
    every: int = 2
    min_visible: float = 0.5


def make_env(options: SceneOptions) -> object:
    import gymnasium as gym

    os.environ.pop("SDL_VIDEODRIVER", None)  # "dummy" renders blank frames; offscreen rendering needs none
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # no sound device needed
    if "XDG_RUNTIME_DIR" not in os.environ:  # SDL prints an error line without one (headless machines)
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="tujie-sdl-")
    config = {
        "offscreen_rendering": True,
        "screen_width": options.width,
        "screen_height": options.height,
        "scaling": options.scaling,
        "vehicles_density": options.vehicles_density,
    }
    try:
        return gym.make(env_id(options.scenario), render_mode="rgb_array", config=config)
    except TypeError as exc:  # a scenario without one of the options
        raise ConfigError(f"scenario {options.scenario}: {exc}") from None


def vehicle_boxes(env: object, min_visible: float = 0.5) -> np.ndarray:
    """``(N, 4)`` pixel boxes ``x1, y1, x2, y2`` of the vehicles in the frame just rendered."""
    unwrapped = env.unwrapped  # type: ignore[attr-defined]
    surface = unwrapped.viewer.sim_surface
    width, height = surface.get_width(), surface.get_height()
    boxes = []
    for vehicle in unwrapped.road.vehicles:
        cos, sin = math.cos(vehicle.heading), math.sin(vehicle.heading)
        half_l, half_w = vehicle.LENGTH / 2, vehicle.WIDTH / 2
        corners = [
            surface.pos2pix(vehicle.position[0] + cos * dx - sin * dy, vehicle.position[1] + sin * dx + cos * dy)
            for dx in (-half_l, half_l)
            for dy in (-half_w, half_w)
        ]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        box = np.array([min(xs), min(ys), max(xs), max(ys)], dtype=np.float64)
        clipped = np.clip(box, 0, [width, height, width, height])
        area = (box[2] - box[0]) * (box[3] - box[1])
        visible = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
        if area > 0 and visible / area >= min_visible:
            boxes.append(clipped)
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def frames(options: SceneOptions, count: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``count`` (frame ``H×W×3`` uint8, boxes) pairs from seeded episodes (seed, seed + 1, …), driving mostly
    straight with random lane changes and speed changes."""
    env = make_env(options)
    rng = random.Random(seed)
    episode = 0
    try:
        made = 0
        while made < count:
            env.reset(seed=seed + episode)  # type: ignore[attr-defined]
            env.action_space.seed(seed + episode)  # type: ignore[attr-defined]
            episode += 1
            done, step = False, 0
            while not done and made < count:
                if step % options.every == 0:
                    frame = env.render()  # type: ignore[attr-defined]
                    yield np.asarray(frame, dtype=np.uint8), vehicle_boxes(env, options.min_visible)
                    made += 1
                action = env.action_space.sample() if rng.random() < 0.4 else 1  # type: ignore[attr-defined]
                _, _, terminated, truncated, _ = env.step(action)  # type: ignore[attr-defined]
                done, step = terminated or truncated, step + 1
    finally:
        env.close()  # type: ignore[attr-defined]


def yolo_lines(boxes: np.ndarray, width: int, height: int, cls: int = 0) -> list[str]:
    """YOLO label lines ``class cx cy w h`` (normalised to the frame)."""
    lines = []
    for x1, y1, x2, y2 in boxes:
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return lines


def make_driving_data(
    output: str | Path,
    *,
    scenario: str = "highway-fast",
    frames_count: int = 200,
    val_frames: int = 50,
    seed: int = 0,
    width: int = 400,
    height: int = 200,
    scaling: float = 5.5,
    vehicles_density: float = 1.5,
) -> Path:
    """Write a YOLO dataset (``images/{train,val}``, ``labels/{train,val}``, ``data.yaml``) and return the yaml."""
    if frames_count < 1 or val_frames < 0:
        raise ConfigError(f"frames must be ≥ 1 and val_frames ≥ 0, got {frames_count} and {val_frames}")
    options = SceneOptions(scenario, width, height, scaling, vehicles_density)
    env_id(scenario)  # an unknown scenario fails before anything is written
    root = Path(output)
    boxes_written = 0
    for split, count, split_seed in (("train", frames_count, seed), ("val", val_frames, seed + VAL_SEED_OFFSET)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i, (frame, boxes) in enumerate(frames(options, count, split_seed)):
            stem = f"{split}_{i:06d}"
            Image.fromarray(frame).save(root / "images" / split / f"{stem}.png")
            lines = yolo_lines(boxes, frame.shape[1], frame.shape[0])
            (root / "labels" / split / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
            boxes_written += len(lines)
    data = {
        "path": str(root.resolve()),
        "train": "images/train",
        "val": "images/val" if val_frames else "images/train",
        "names": dict(enumerate(CLASS_NAMES)),
        "tujie": {
            "scenario": scenario,
            "frames": frames_count,
            "val_frames": val_frames,
            "seed": seed,
            "boxes": boxes_written,
            "size": [width, height],
        },
    }
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return root / "data.yaml"
