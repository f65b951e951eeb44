"""NLP fixtures: a tiny random BERT (MiniLM's tokenizer, 2 layers × 32 hidden) and small labelled files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a randomly initialised 2-layer BERT (hidden 32) and the MiniLM WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from tujie_nlp.encoders import load_tokenizer, quiet_transformers

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("minilm-l6")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.1,  # BERT's 0.02 leaves a random 2-layer model nearly blind to its input
    )
    torch.manual_seed(0)
    with quiet_transformers():
        BertForMaskedLM(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


SENTIMENT = [
    ("a wonderful , moving film", "pos"),
    ("great acting and a great story", "pos"),
    ("i loved every minute", "pos"),
    ("funny , warm and wonderful", "pos"),
    ("a great , great time", "pos"),
    ("terrible plot and awful acting", "neg"),
    ("boring , dull and far too long", "neg"),
    ("i hated it", "neg"),
    ("an awful , boring mess", "neg"),
    ("dull and terrible", "neg"),
]


@pytest.fixture
def sentiment_csv(tmp_path: Path) -> Path:
    """40 rows of an easy two-class sentiment CSV (``text,label``)."""
    path = tmp_path / "sentiment.csv"
    rows = ["text,label", *(f'"{t}",{lab}' for t, lab in SENTIMENT * 4)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
