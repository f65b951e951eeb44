"""A conditional DCGAN (book ch. 10) as a kind of run (``kind: gan``): it learns to draw images of a chosen class,
for instance to add synthetic examples of a rare class to a classifier's training data.

>>> gan = ConditionalGAN.load("runs/digits-gan/20261203-150000")                      # doctest: +SKIP
>>> gan.save_samples("synthetic/", {"8": 200})  # synthetic/8/0000.png …: an ``images`` folder  # doctest: +SKIP

Radford et al.'s recipe: transposed convolutions with batch norm and ReLU up from 4×4 in the generator, strided
convolutions with LeakyReLU down in the discriminator, Adam (lr 2e-4, β₁ 0.5). The class enters the generator as an
embedding added to the noise and the discriminator as an extra input plane. Images are the ``images`` dataset's
training split at a power-of-two size (8–128), pixels in [-1, 1] (the generator ends in tanh). Each epoch's data
order comes from (seed, epoch), and checkpoints hold both networks, both optimizers and the random state, so a
resumed run is identical to an uninterrupted one. The last epoch's generator is kept: GAN losses do not rank
checkpoints.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tujie_core import (
    DATASETS,
    RUN_KINDS,
    BaseRunConfig,
    ConfigError,
    DataError,
    ModelCheckpoint,
    RunContext,
    RunKind,
    RunOutput,
    TrainState,
)
from tujie_core.checkpoint import atomic_write_bytes, rng_state, set_rng_state
from tujie_core.config import DataSpec


def _levels(size: int) -> int:
    levels = math.log2(size / 4)
    if size < 8 or size > 128 or not levels.is_integer():
        raise ConfigError(f"data.image_size: the GAN needs a square power of two from 8 to 128, got {size}")
    return int(levels)


class Generator(nn.Module):
    """Noise + class embedding → image ``(C, size, size)`` in [-1, 1]."""

    def __init__(self, latent_dim: int, num_classes: int, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        levels = _levels(size)
        self.latent_dim = latent_dim
        self.embed = nn.Embedding(num_classes, latent_dim)
        top = width * 2 ** (levels - 1)
        self.project = nn.Sequential(nn.Linear(latent_dim, top * 16), nn.BatchNorm1d(top * 16), nn.ReLU(True))
        layers: list[nn.Module] = []
        for i in range(levels - 1):
            out = top // 2 ** (i + 1)
            layers += [nn.ConvTranspose2d(out * 2, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.top = top
        self.up = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        h = self.project(z + self.embed(labels)).view(len(z), self.top, 4, 4)
        return self.up(h)


class Discriminator(nn.Module):
    """Image + class plane → one real/fake logit."""

    def __init__(self, num_classes: int, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        levels = _levels(size)
        self.size = size
        self.plane = nn.Embedding(num_classes, size * size)
        layers: list[nn.Module] = []
        width_in = channels + 1
        for i in range(levels):
            out = width * 2**i
            layers += [nn.Conv2d(width_in, out, 4, 2, 1, bias=i == 0)]
            layers += [nn.BatchNorm2d(out)] if i else []
            layers += [nn.LeakyReLU(0.2, True)]
            width_in = out
        self.down = nn.Sequential(*layers, nn.Flatten(), nn.Linear(width_in * 16, 1))

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        plane = self.plane(labels).view(len(images), 1, self.size, self.size)
        return self.down(torch.cat([images, plane], 1)).view(-1)


class GanRunConfig(BaseRunConfig):
    """A conditional DCGAN run: the ``images`` dataset's training split (``data``), network widths, optimisation."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, serialize_by_alias=True)

    kind: Literal["gan"] = "gan"
    data: DataSpec = DataSpec(name="images", image_size=16, batch_size=64)
    latent_dim: int = Field(64, ge=2)
    width: int = Field(64, ge=4, description="channels of the generator's last / discriminator's first block")
    epochs: int = Field(30, ge=1)
    lr: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    device: str = Field("auto", description="auto (CUDA when present), cpu or cuda")
    seed_value: int = Field(0, alias="seed")

    @property
    def monitor(self) -> str:
        return "train/g_loss"

    @property
    def mode(self) -> Literal["min", "max"]:
        return "min"

    @property
    def seed(self) -> int:
        return self.seed_value


class _GanLoop:
    """The GAN's own loop as core callbacks see it (``tujie_core.Loop``)."""

    def __init__(self, generator: Generator, discriminator: Discriminator, optimizers: list) -> None:
        self.state, self.should_stop = TrainState(), False
        self.generator, self.discriminator, self.optimizers = generator, discriminator, optimizers

    def save_checkpoint(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        torch.save(
            {
                "generator": self.generator.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "optimizers": [o.state_dict() for o in self.optimizers],
                "state": {"epoch": self.state.epoch, "step": self.state.step, "history": self.state.history},
                "rng": rng_state(),
            },
            buffer,
        )
        atomic_write_bytes(Path(path), buffer.getvalue())

    def load_checkpoint(self, path: Path) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self.generator.load_state_dict(saved["generator"])
        self.discriminator.load_state_dict(saved["discriminator"])
        for optimizer, state in zip(self.optimizers, saved["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        self.state = TrainState(**saved["state"])
        set_rng_state(saved["rng"])


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


@RUN_KINDS.register("gan")
class GanRun(RunKind):
    """Train a conditional DCGAN on the ``images`` dataset; see the module doc."""

    config_model = GanRunConfig
    takes_plugins = False  # two optimizers in a loop of its own

    def check(self, config: GanRunConfig) -> None:  # type: ignore[override]
        super().check(config)
        if config.data.name != "images":
            raise ConfigError(f"data.name: the GAN trains on the 'images' dataset, got '{config.data.name}'")

    def train(self, config: GanRunConfig, context: RunContext) -> RunOutput:  # type: ignore[override]
        splits = DATASETS.create("images", where="data", **config.data.params)
        info = splits.info
        channels, height, width = info.input_shape
        if height != width:
            raise ConfigError(f"data.image_size: the GAN needs square images, got {height}×{width}")
        if info.kind not in ("binary", "multiclass"):
            raise DataError(f"{info.source}: the GAN conditions on one class per image; this data is {info.kind}")
        device = _device(config.device)
        classes = len(info.class_names)
        generator = Generator(config.latent_dim, classes, channels, height, config.width).to(device)
        discriminator = Discriminator(classes, channels, height, config.width).to(device)
        betas = (config.beta1, 0.999)
        opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas)
        loop = _GanLoop(generator, discriminator, [opt_g, opt_d])
        run_dir = context.open()
        checkpoint = ModelCheckpoint(run_dir / "checkpoints", config.monitor, config.mode)
        callbacks = [checkpoint, *context.callbacks()]
        if context.resume is not None:
            loop.load_checkpoint(context.resume)
        criterion = nn.BCEWithLogitsLoss()
        while loop.state.epoch < config.epochs and not loop.should_stop:
            order = torch.Generator().manual_seed(config.seed * 100_003 + loop.state.epoch)
            loader = DataLoader(
                splits.train,
                batch_size=config.data.batch_size,
                shuffle=True,
                generator=order,
                drop_last=len(splits.train) > config.data.batch_size,
            )
            sums = np.zeros(4)
            batches = 0
            generator.train()
            discriminator.train()
            for images, labels in loader:
                images, labels = images.to(device), labels.to(device)
                n = len(images)
                z = torch.randn(n, config.latent_dim, device=device)
                fake = generator(z, labels)
                real_logit, fake_logit = discriminator(images, labels), discriminator(fake.detach(), labels)
                d_loss = criterion(real_logit, torch.full_like(real_logit, 0.9)) + criterion(
                    fake_logit, torch.zeros_like(fake_logit)
                )  # one-sided label smoothing (Salimans et al. 2016)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                g_logit = discriminator(fake, labels)
                g_loss = criterion(g_logit, torch.ones_like(g_logit))
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                loop.state.step += 1
                batches += 1
                sums += [
                    float(d_loss.detach()),
                    float(g_loss.detach()),
                    float(real_logit.detach().sigmoid().mean()),
                    float(fake_logit.detach().sigmoid().mean()),
                ]
            means = sums / max(1, batches)
            loop.state.epoch += 1
            metrics = dict(
                zip(("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"), map(float, means), strict=True)
            )
            loop.state.history.append({"epoch": loop.state.epoch, "step": loop.state.step, **metrics})
            for callback in callbacks:
                callback.on_train_epoch_end(loop, metrics)
        gan = ConditionalGAN(generator.eval().cpu(), info.class_names, (channels, height, width))
        gan.save(run_dir / "model")
        grid = gan.grid(per_class=8, seed=config.seed)
        (run_dir / "plots").mkdir(exist_ok=True)
        grid.save(run_dir / "plots" / "samples.png")
        last = loop.state.history[-1] if loop.state.history else {}
        return RunOutput(
            {k: v for k, v in last.items() if k.startswith("train/")},
            title=f"Conditional DCGAN: {config.name}",
            header=(
                f"Data: `{info.source}` training split, {len(splits.train)} images {channels}×{height}×{width}, "
                f"{classes} classes. {loop.state.epoch} epochs, {loop.state.step} steps per network. The last "
                "epoch's generator is kept (GAN losses do not rank checkpoints)."
            ),
            history=loop.state.history,
            sections=["## Samples\n\nOne row per class, from fixed noise.\n\n![Samples](plots/samples.png)\n"],
            summary={"epochs": loop.state.epoch, "steps": loop.state.step, "classes": info.class_names},
            model=gan,
        )


class ConditionalGAN:
    """A trained generator: images of any of its classes, as arrays, a folder or a grid."""

    def __init__(self, generator: Generator, class_names: list[str], input_shape: tuple[int, int, int]) -> None:
        self.generator, self.class_names, self.input_shape = generator.eval(), list(class_names), input_shape

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.generator.state_dict().items()},
            str(directory / "generator.safetensors"),
        )
        g = self.generator
        config = {
            "latent_dim": g.latent_dim,
            "width": g.top // 2 ** (_levels(self.input_shape[1]) - 1),
            "class_names": self.class_names,
            "input_shape": list(self.input_shape),
        }
        (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ConditionalGAN:
        """A GAN run folder (or its ``model/``): safetensors weights, no pickle."""
        path = Path(path)
        directory = path / "model" if (path / "model").is_dir() else path
        if not (directory / "generator.safetensors").is_file():
            raise DataError(f"{path}: not a GAN run folder (no model/generator.safetensors)")
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        channels, size, _ = config["input_shape"]
        generator = Generator(config["latent_dim"], len(config["class_names"]), channels, size, config["width"])
        generator.load_state_dict(load_file(str(directory / "generator.safetensors")))
        return cls(generator, config["class_names"], tuple(config["input_shape"]))

    @torch.no_grad()
    def sample(self, label: str, count: int, seed: int = 0) -> np.ndarray:
        """``count`` images of class ``label``: uint8 ``(count, H, W, C)``."""
        if label not in self.class_names:
            raise DataError(f"class '{label}' is not one of the GAN's ({', '.join(self.class_names)})")
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(count, self.generator.latent_dim, generator=generator)
        labels = torch.full((count,), self.class_names.index(label), dtype=torch.long)
        images = self.generator(z, labels)
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).numpy()

    def save_samples(self, folder: str | Path, counts: dict[str, int], seed: int = 0) -> Path:
        """Write ``counts[class]`` images of each class as ``folder/<class>/<n>.png`` (an ``images`` folder)."""
        folder = Path(folder)
        for i, (label, count) in enumerate(counts.items()):
            (folder / label).mkdir(parents=True, exist_ok=True)
            for n, pixels in enumerate(self.sample(label, count, seed + i)):
                _image(pixels).save(folder / label / f"{n:05d}.png")
        return folder

    def grid(self, per_class: int = 8, seed: int = 0) -> Image.Image:
        """One row of ``per_class`` samples for each class."""
        rows = [np.concatenate(list(self.sample(c, per_class, seed)), axis=1) for c in self.class_names]
        return _image(np.concatenate(rows, axis=0))


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
