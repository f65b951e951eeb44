"""Explanations of a text classifier: integrated gradients, attention rollout, the plot and the markdown table."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tujie_core import ConfigError
from tujie_nlp.classifier import TextClassifier
from tujie_nlp.explain import Explanation, explain, explanation_html, explanation_markdown, plot_explanation

POS_TEXT = "terrible plot and awful acting"  # predicted 'pos' by the fixture's random model
NEG_TEXT = "a wonderful film"  # predicted 'neg'


@pytest.fixture(scope="module")
def classifier(tiny_bert: Path) -> TextClassifier:
    """The tiny BERT with weights redrawn at std 0.3: the default init (0.02) gives near-uniform attention and the
    same probabilities for every text, which would make every check here pass trivially."""
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"])
    torch.manual_seed(0)
    with torch.no_grad():
        for param in clf.model.hf_model.parameters():
            if param.ndim > 1:
                param.normal_(0, 0.3)
    return clf


@pytest.fixture(scope="module")
def reference(classifier: TextClassifier) -> torch.nn.Module:
    """A copy of the classifier's Hugging Face model in evaluation mode, with attention weights returned."""
    model = copy.deepcopy(classifier.model.hf_model).eval()
    model.set_attn_implementation("eager")
    return model


def probability(model: torch.nn.Module, ids: list[int], target: int) -> float:
    """The target probability with every position attended (the function integrated gradients integrates)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=torch.ones_like(x), token_type_ids=torch.zeros_like(x)).logits
    return logits.softmax(-1)[0, target].item()


def test_integrated_gradients_are_complete(classifier: TextClassifier, reference: torch.nn.Module) -> None:
    e = explain(classifier, POS_TEXT, steps=64)
    ids = classifier.tokenize([POS_TEXT])[0]
    pad = classifier.tokenizer.pad_token_id
    baseline = [ids[0], *[pad] * (len(ids) - 2), ids[-1]]
    gap = probability(reference, ids, e.target_index) - probability(reference, baseline, e.target_index)
    assert abs(gap) > 0.05  # the check below is not trivial
    assert sum(e.scores) == pytest.approx(gap, abs=1e-3)
    assert e.delta is not None and abs(e.delta) < 1e-3
    assert e.probabilities[e.target] == pytest.approx(probability(reference, ids, e.target_index), abs=1e-5)


def test_tokens_align_with_the_tokenizer(classifier: TextClassifier) -> None:
    text = "wonderfully unbelievable acting"
    tokens = classifier.tokenizer.tokenize(text)
    assert any(t.startswith("##") for t in tokens)
    for method, options in [("ig", {"steps": 8}), ("rollout", {})]:
        e = explain(classifier, text, method, **options)
        assert e.tokens == tokens
        assert len(e.scores) == len(tokens)
        assert e.method == method


def test_target_defaults_to_the_predicted_label(classifier: TextClassifier) -> None:
    predicted = classifier.predict([POS_TEXT, NEG_TEXT])
    assert predicted == ["pos", "neg"]
    for text, label in zip([POS_TEXT, NEG_TEXT], predicted, strict=True):
        e = explain(classifier, text, method="rollout")
        assert (e.target, e.predicted) == (label, label)
        assert e.target_index == classifier.labels.names.index(label)
        probs = classifier.predict_proba([text])[0].tolist()
        assert list(e.probabilities.values()) == pytest.approx(probs, abs=1e-6)


def test_explicit_target_flips_binary_attributions(classifier: TextClassifier) -> None:
    """p(neg) = 1 − p(pos), so the attributions to 'neg' are those to 'pos' negated."""
    pos = explain(classifier, POS_TEXT, target="pos", steps=16)
    neg = explain(classifier, POS_TEXT, target=0, steps=16)
    assert (neg.target, neg.target_index, neg.predicted) == ("neg", 0, "pos")
    assert max(abs(s) for s in pos.scores) > 1e-3
    assert neg.scores == pytest.approx([-s for s in pos.scores], abs=1e-6)
    with pytest.raises(ValueError, match="not a label"):
        explain(classifier, POS_TEXT, target="neutral")
    with pytest.raises(ValueError, match="out of range"):
        explain(classifier, POS_TEXT, method="rollout", target=2)


def test_attention_rollout_matches_the_paper_formula(classifier: TextClassifier, reference: torch.nn.Module) -> None:
    """Abnar & Zuidema: Π_layers (0.5 · mean-head attention + 0.5 · I), [CLS] row, here over the text's tokens."""
    e = explain(classifier, POS_TEXT, method="rollout")
    ids = torch.tensor(classifier.tokenize([POS_TEXT]))
    with torch.no_grad():
        attentions = reference(input_ids=ids, output_attentions=True).attentions
    rollout = torch.eye(ids.shape[1])
    for layer in attentions:
        rollout = (0.5 * layer[0].mean(0) + 0.5 * torch.eye(ids.shape[1])) @ rollout
    expected = rollout[0, 1:-1] / rollout[0, 1:-1].sum()
    assert e.scores == pytest.approx(expected.tolist(), abs=1e-5)
    assert max(e.scores) - min(e.scores) > 0.02  # attention is not uniform: the comparison is not trivial


def test_explaining_leaves_the_model_as_it_was(classifier: TextClassifier) -> None:
    """Dropout is off while explaining; afterwards each module's mode and the attention implementation are back."""
    classifier.model.train()
    classifier.model.hf_model.classifier.eval()  # mixed modes, so that restoring only the top module's fails
    modes = [m.training for m in classifier.model.modules()]
    hf = classifier.model.hf_model
    implementation = hf.config._attn_implementation
    assert implementation != "eager"
    try:
        first = [explain(classifier, POS_TEXT, "ig", steps=8).scores, explain(classifier, POS_TEXT, "rollout").scores]
        again = [explain(classifier, POS_TEXT, "ig", steps=8).scores, explain(classifier, POS_TEXT, "rollout").scores]
        assert [m.training for m in classifier.model.modules()] == modes
        assert hf.config._attn_implementation == implementation
        assert again == first  # deterministic: no dropout
    finally:
        classifier.model.eval()


def test_rollout_options_give_a_distribution(classifier: TextClassifier) -> None:
    mean = explain(classifier, POS_TEXT, method="rollout")
    sharp = explain(classifier, POS_TEXT, method="rollout", head_fusion="max", discard_ratio=0.5)
    for e in (mean, sharp):
        assert min(e.scores) >= 0
        assert sum(e.scores) == pytest.approx(1.0, abs=1e-5)
    assert sharp.scores != pytest.approx(mean.scores, abs=1e-3)
    with pytest.raises(ValueError, match="discard_ratio"):
        explain(classifier, POS_TEXT, method="rollout", discard_ratio=1.0)


def test_unknown_method_or_option_is_a_config_error(classifier: TextClassifier) -> None:
    with pytest.raises(ConfigError, match=r"'lime' is not in the explainers registry.*available: ig, rollout"):
        explain(classifier, POS_TEXT, method="lime")
    with pytest.raises(ConfigError, match=r"'rollout'\.steps: unknown key"):
        explain(classifier, POS_TEXT, method="rollout", steps=8)
    with pytest.raises(ValueError, match="no tokens"):
        explain(classifier, "", method="rollout")


def test_multi_label_explains_a_sigmoid_probability(tiny_bert: Path) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["a", "b", "c"], multi_label=True)
    e = explain(clf, POS_TEXT, target="b", steps=8)
    probs = clf.predict_proba([POS_TEXT])[0].tolist()
    assert list(e.probabilities.values()) == pytest.approx(probs)
    assert sum(probs) != pytest.approx(1.0, abs=1e-3)  # sigmoids, not a softmax
    assert (e.target, e.target_index) == ("b", 1)
    assert e.delta is not None and abs(e.delta) < 1e-3


def made_up(tokens: list[str], scores: list[float]) -> Explanation:
    return Explanation("", tokens, scores, "pos", 1, {"neg": 0.2, "pos": 0.8}, "ig", 0.001)


def test_words_merge_wordpiece_continuations(classifier: TextClassifier) -> None:
    e = made_up(["##x", "a", "wonder", "##ful", "##ly", "film"], [0.5, 0.1, 0.2, 0.3, -0.1, 0.4])
    words, scores = zip(*e.words(), strict=True)
    assert words == ("##x", "a", "wonderfully", "film")
    assert scores == pytest.approx([0.5, 0.1, 0.4, 0.4])
    real = explain(classifier, "wonderfully unbelievable acting", method="rollout")
    assert [w for w, _ in real.words()] == ["wonderfully", "unbelievable", "acting"]
    assert sum(s for _, s in real.words()) == pytest.approx(1.0, abs=1e-5)


def test_plot_colours_wraps_and_writes_a_png(tmp_path: Path) -> None:
    e = made_up(["terrible", "and", "wonderful", "film"], [-1.0, 0.0, 1.0, 0.5])
    fig = plot_explanation(e, tmp_path / "e.png", width=20)
    data = (tmp_path / "e.png").read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    texts = fig.axes[0].texts
    assert [t.get_text() for t in texts] == ["terrible", "and", "wonderful", "film"]
    red, _, green = (texts[i].get_bbox_patch().get_facecolor() for i in range(3))
    assert red[0] > red[1] and green[1] > green[0]
    assert len({t.get_position()[1] for t in texts}) == 2  # "terrible and" / "wonderful film"
    assert len({t.get_position()[1] for t in plot_explanation(e).axes[0].texts}) == 1
    assert "Integrated gradients for 'pos' (p = 0.800)" in fig.texts[0].get_text()


def test_markdown_ranks_words_by_absolute_score() -> None:
    e = made_up(["a|b", "wonder", "##ful", "film"], [0.1, -0.3, -0.4, 0.5])
    lines = explanation_markdown(e, top=2).splitlines()
    assert lines[0].startswith("Integrated gradients for 'pos' (p = 0.800); convergence delta")
    assert lines[2:] == [
        "| rank | word | score |",
        "|---|---|---|",
        "| 1 | wonderful | -0.7000 |",
        "| 2 | film | +0.5000 |",
    ]
    assert r"a\|b" in explanation_markdown(e)


def test_html_highlights_words_by_sign_and_strength_and_escapes_them() -> None:
    import re

    e = made_up(["<b>", "wonder", "##ful", "film"], [0.0, -0.3, -0.4, 0.35])
    html = explanation_html(e)
    spans = re.findall(
        r'<span title="([^"]+)" style="background: rgba\((\d+,\d+,\d+),([\d.]+)\)[^"]*">([^<]*)</span>', html
    )
    assert [(word, title) for title, _, _, word in spans] == [
        ("&lt;b&gt;", "+0.0000"),
        ("wonderful", "-0.7000"),
        ("film", "+0.3500"),
    ]
    colours = {word: (rgb, float(alpha)) for _, rgb, alpha, word in spans}
    assert colours["wonderful"] == ("215,48,39", 0.85)  # against the target, the strongest
    assert colours["film"][0] == "26,152,80" and colours["film"][1] == pytest.approx(0.42, abs=0.01)
    assert colours["&lt;b&gt;"][1] == 0.0 and "<b>" not in html
