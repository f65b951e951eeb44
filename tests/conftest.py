"""Shared test setup: offline everywhere, tiny data and models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset


@pytest.fixture
def blobs() -> TensorDataset:
    """120 points in 3 separable Gaussian blobs, 4 features."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    y = torch.arange(120) % 3
    x = centers[y] + 0.7 * torch.randn(120, 4, generator=g)
    return TensorDataset(x, y)


@pytest.fixture
def blob_loaders(blobs: TensorDataset) -> tuple[DataLoader, DataLoader]:
    train = TensorDataset(*blobs[:90])
    val = TensorDataset(*blobs[90:])
    return DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=32)
