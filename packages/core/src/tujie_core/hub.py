"""Downloads only when the user asks for them.

Library code never reaches the network by default: model names that are not local (a hub id, ``pretrained=True``
weights) are loaded from local caches only, unless ``TUJIE_ALLOW_DOWNLOADS=1`` is set.
"""

from __future__ import annotations

import os

ALLOW_DOWNLOADS = "TUJIE_ALLOW_DOWNLOADS"


def downloads_allowed() -> bool:
    """True when the user opted in to downloads with ``TUJIE_ALLOW_DOWNLOADS=1``."""
    return os.environ.get(ALLOW_DOWNLOADS, "").strip().lower() in ("1", "true", "yes")
