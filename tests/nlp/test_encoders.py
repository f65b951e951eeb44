"""Encoder names resolve offline, and a wrong name fails at once with a suggestion, never a hub retry loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tujie_core import ConfigError
from tujie_nlp.encoders import hub_options, resolve_encoder


def test_a_typo_fails_at_once_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # no help from the environment: the library decides
    monkeypatch.delenv("TUJIE_ALLOW_DOWNLOADS", raising=False)
    with pytest.raises(ConfigError, match=r"encoder 'minilm_l6': not a registered encoder \(did you mean 'minilm-l6'"):
        resolve_encoder("minilm_l6")
    with pytest.raises(ConfigError, match="TUJIE_ALLOW_DOWNLOADS=1"):
        resolve_encoder("someone/not-cached-model")


def test_downloads_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUJIE_ALLOW_DOWNLOADS", raising=False)
    assert hub_options() == {"local_files_only": True}
    monkeypatch.setenv("TUJIE_ALLOW_DOWNLOADS", "1")
    assert hub_options() == {}
    assert resolve_encoder("someone/some-model") == "someone/some-model"  # handed to the hub as asked


def test_the_shipped_encoder_and_local_folders_resolve(tiny_bert) -> None:
    assert (Path(resolve_encoder("minilm-l6")) / "model.safetensors").is_file()
    assert resolve_encoder(tiny_bert) == str(tiny_bert)
