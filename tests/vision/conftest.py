"""Tiny image data for the vision tests: written into tmp folders, never read from ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, value: int, size: tuple[int, int] = (12, 12), mode: str = "RGB") -> Path:
    """A flat image with a bright square whose position depends on ``value`` (so classes are learnable)."""
    rng = np.random.default_rng(value * 1000 + hash(path.name) % 1000)
    pixels = rng.integers(0, 40, (size[1], size[0], 3), dtype=np.uint8)
    offset = (value * 4) % (size[0] - 4)
    pixels[2:6, offset : offset + 4] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


@pytest.fixture(name="write_image")
def write_image_fixture():
    return write_image


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """Three classes × 10 images in ImageFolder layout."""
    root = tmp_path / "shapes"
    for c, name in enumerate(["circle", "square", "star"]):
        for i in range(10):
            write_image(root / name / f"{i}.png", c)
    return root
