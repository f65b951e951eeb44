"""What every page of the tujie app shares: the page list (with the book chapter behind each page), the runs folder,
upload checks, run-folder discovery, the message of a page whose package is not installed, and the button that
trains a domain's quick demo models in place.

Pages are thin: they call the packages and only arrange the results. Nothing here imports a domain package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import streamlit as st
import yaml

RUNS_ENV = "TUJIE_RUNS_DIR"  # the runs folder the app starts on (default: runs, where `make demo` writes)
VIEWS = Path(__file__).parent / "views"


@dataclass(frozen=True)
class PageSpec:
    """One page: its file under ``views/`` (the stem is its URL path), title, icon, the book chapters it
    illustrates, what it shows, the package it needs (import name) and the ``tujie demo`` part that trains its
    default models."""

    file: str
    title: str
    icon: str
    chapters: str
    shows: str
    package: str | None = None
    demo_part: str | None = None

    @property
    def url_path(self) -> str:
        return Path(self.file).stem

    @property
    def distribution(self) -> str | None:
        return self.package.replace("_", "-") if self.package else None

    @property
    def installed(self) -> bool:
        return self.package is None or importlib.util.find_spec(self.package) is not None


PAGES = [
    PageSpec("home.py", "Home", ":material/home:", "—", "what tujie is, the pages, the latest `tujie demo` results"),
    PageSpec(
        "text.py",
        "Text",
        ":material/article:",
        "8–9 (attention, explanations), 13–14 (pre-training, transfer)",
        "classify typed or uploaded text with a fine-tuned encoder; token attributions highlighted",
        "tujie_nlp",
        "nlp",
    ),
    PageSpec(
        "vision.py",
        "Vision",
        ":material/image:",
        "6 (CNN), 10 (GAN), 14 (transfer), 17 (perception)",
        "classify an image; vehicle boxes in a simulator frame or an upload; a GAN sample grid",
        "tujie_vision",
        "vision",
    ),
    PageSpec(
        "driving.py",
        "Driving",
        ":material/directions_car:",
        "16 (reinforcement learning), 17 (autonomous driving)",
        "an episode of a chosen agent and scenario, the baseline comparison, the uncertainty trace",
        "tujie_driving",
        "driving",
    ),
    PageSpec(
        "imaging.py",
        "Medical imaging",
        ":material/radiology:",
        "18 (healthcare: imaging, clinical risk)",
        "segmentation overlay with a slice slider, saliency of a classification, a risk form",
        "tujie_health",
        "health",
    ),
    PageSpec(
        "molecules.py",
        "Molecules",
        ":material/science:",
        "18.4.1 (graph networks for drug discovery)",
        "predictions with uncertainty for SMILES, molecule drawings, rejects, screening the shipped library",
        "tujie_health",
        "molecules",
    ),
    PageSpec(
        "privacy.py",
        "Privacy",
        ":material/lock:",
        "19 (privacy: DP-SGD, membership inference, homomorphic encryption)",
        "accuracy against ε, the audit ROC, a run's report card, an encrypted-inference round trip",
        "tujie_privacy",
        "privacy",
    ),
    PageSpec(
        "runs.py",
        "Training runs",
        ":material/monitoring:",
        "11–12 (training, evaluation)",
        "browse run folders: metric curves, reports, plots; compare two runs",
    ),
]


def page_spec(file: str) -> PageSpec:
    return next(p for p in PAGES if p.file == file)


def runs_root() -> Path:
    """The runs folder chosen in the sidebar (``$TUJIE_RUNS_DIR`` or ``runs`` at first)."""
    return Path(st.session_state.get("runs_root") or os.environ.get(RUNS_ENV, "runs"))


def missing_package(distribution: str, exc: ImportError) -> NoReturn:
    """Say on the page that ``distribution`` is not installed (and how to install it), then stop the page."""
    st.error(
        f"{distribution} is not installed, so this page cannot run: `pip install {distribution}` (or `make setup`)."
    )
    st.caption(f"import error: {exc}")
    st.stop()


def upload_bytes(upload, max_mb: float, suffixes: tuple[str, ...]) -> bytes | None:
    """The uploaded file's bytes after the checks every page makes (type by name, size, not empty); on a failed
    check, a message naming the file on the page and None. Content checks (decoding, columns) are the page's."""
    name = upload.name
    if not name.lower().endswith(suffixes):
        st.error(f"{name}: not a {' / '.join(suffixes)} file")
        return None
    if upload.size > max_mb * 2**20:
        st.error(f"{name}: {upload.size / 2**20:.1f} MB is over this page's {max_mb:g} MB limit")
        return None
    if upload.size == 0:
        st.error(f"{name}: the file is empty")
        return None
    return upload.getvalue()


def finished_runs(root: Path, kind: str | None = None) -> list[Path]:
    """Finished run folders (with ``summary.json``) under ``root``, newest first; only ``kind`` runs if given."""
    if not root.is_dir():
        return []
    found = []
    for summary in root.glob("**/summary.json"):
        try:
            run_kind = json.loads(summary.read_text(encoding="utf-8")).get("kind", "supervised")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            continue  # a torn or foreign file is not a run
        if kind is None or run_kind == kind:
            found.append(summary.parent)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def runs_on_data(root: Path, data_name: str) -> list[Path]:
    """Runs under ``root`` with a saved model (``model/config.json``) whose config trains on the data source
    ``data_name`` (``data.name`` in ``config.yaml``), newest first."""
    found = []
    for config in root.glob("**/config.yaml") if root.is_dir() else []:
        run = config.parent
        if not (run / "model" / "config.json").is_file():
            continue
        try:
            data = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {}
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and data.get("name") == data_name:
            found.append(run)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def show_markdown(text: str, folder: Path) -> None:
    """A markdown report with its images (``![caption](plots/x.png)``, relative to ``folder``) drawn in place;
    an image link that leaves ``folder`` or names no file is left as text."""
    base = folder.resolve()
    position = 0
    for link in IMAGE_LINK.finditer(text):
        image = (base / link.group(2)).resolve()
        if not (image.is_relative_to(base) and image.is_file()):
            continue
        st.markdown(text[position : link.start()])
        st.image(str(image), caption=link.group(1) or None)
        position = link.end()
    st.markdown(text[position:])


def offer_demo(part: str | None, what: str, how: str) -> None:
    """Nothing to show yet: say how to train ``what`` from the command line (``how``), and offer a button that
    trains the package's quick demo models (``tujie demo --only PART --quick``) into ``<runs folder>/demo``."""
    st.info(f"No {what} under `{runs_root()}`. Train one: `{how}`, or `make demo` for every page.")
    if part is None:
        return
    if st.button(f"Train the quick `{part}` demo models here", key=f"demo-{part}-{what}"):
        train_demo(part)


def train_demo(part: str) -> None:
    """Run the ``tujie demo`` part ``part`` (quick) into ``<runs folder>/demo`` with a status box, then rerun."""
    from importlib.metadata import entry_points

    from tujie_core.demo import run_part

    (point,) = [ep for ep in entry_points(group="tujie.demo") if ep.name == part]
    output = runs_root() / "demo"
    with st.status(f"Training the quick `{part}` demo models into `{output}`…", expanded=False) as status:
        result, seconds = run_part(part, point.load(), output, quick=True)
        status.update(label=f"{result.name}: trained in {seconds:.0f} s", state="complete")
    st.rerun()
