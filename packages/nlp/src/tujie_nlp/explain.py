"""Explaining a text classifier's prediction: how much each token of one text contributed (book ch. 9.1).

* :func:`integrated_gradients` (Sundararajan et al. 2017): signed attributions of the target probability,
  integrated along the straight line in word-embedding space from a baseline to the text. They add up to
  ``f(text) − f(baseline)``, up to the reported convergence ``delta``.
* :func:`attention_rollout` (Abnar & Zuidema 2020): how much the ``[CLS]`` representation draws on each token
  through all the attention layers. Non-negative and class-agnostic.

>>> e = explain(clf, "a gripping, beautifully shot film", method="ig")   # doctest: +SKIP
>>> e.words()[:2]                                                        # doctest: +SKIP
[('a', 0.004), ('gripping', 0.21)]
>>> plot_explanation(e, "explanation.png"); print(explanation_markdown(e))   # doctest: +SKIP

An :class:`Explanation` holds the text's tokens without the special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``).
Integrated gradients keeps those tokens in its baseline, so their attribution is exactly zero and the returned
scores still add up to the whole attribution.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor, nn

from tujie_core import Registry
from tujie_nlp.classifier import TextClassifier

EXPLAINERS: Registry[Callable[..., Explanation]] = Registry("explainers")
TITLES = {"ig": "Integrated gradients", "rollout": "Attention rollout"}
HEAD_FUSIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": lambda heads: heads.mean(0),
    "max": lambda heads: heads.amax(0),
    "min": lambda heads: heads.amin(0),
}


@dataclass
class Explanation:
    """Per-token scores for one text and the prediction they explain.

    ``tokens``: the tokenizer's tokens of ``text`` (WordPiece: ``##`` marks a continuation), special tokens
    excluded, as far as the classifier reads them (``max_length`` and ``truncation``, or every token its windows
    cover, once); ``scores`` is aligned with them. ``target`` is the
    explained label (``target_index`` its output index), ``probabilities`` maps every label to the model's
    probability. ``delta`` (integrated gradients only): ``sum(scores) − (f(text) − f(baseline))``, the integration
    error.
    """

    text: str
    tokens: list[str]
    scores: list[float]
    target: str
    target_index: int
    probabilities: dict[str, float]
    method: str
    delta: float | None = None

    @property
    def predicted(self) -> str:
        """The most probable label."""
        return max(self.probabilities, key=self.probabilities.__getitem__)

    def words(self) -> list[tuple[str, float]]:
        """Whole words with summed scores: ``##`` pieces are merged into the word before them."""
        merged: list[tuple[str, float]] = []
        for token, score in zip(self.tokens, self.scores, strict=True):
            if token.startswith("##") and merged:
                word, total = merged[-1]
                merged[-1] = (word + token[2:], total + score)
            else:
                merged.append((token, score))
        return merged


# ---- methods --------------------------------------------------------------------------------------------------
def explain(classifier: TextClassifier, text: str, method: str = "ig", **options: object) -> Explanation:
    """Explain ``classifier``'s prediction for ``text`` with a registered method (``ig``, ``rollout``).

    ``options`` are the method's keyword arguments (``target``, ``steps``, ...), checked against its signature:
    an unknown method or option raises :class:`~tujie_core.ConfigError`.
    """
    runtime = {"classifier": classifier, "text": text}
    return EXPLAINERS.create(method, where=f"explain method '{method}'", runtime=runtime, **options)


@EXPLAINERS.register("ig")
def integrated_gradients(
    classifier: TextClassifier,
    text: str,
    target: int | str | None = None,
    steps: int = 50,
    baseline: Literal["pad", "mask", "unk"] = "pad",
) -> Explanation:
    """Layer integrated gradients on the word embeddings, explaining the probability of ``target`` (a label name
    or index; default: the predicted label).

    The baseline is the text with every token except ``[CLS]``/``[SEP]`` replaced by ``[PAD]`` (or ``[MASK]``,
    ``[UNK]``). The model sees it, like the text, with a full attention mask: masking the baseline's padding would
    change the function being integrated. Scores are attributions summed over the embedding dimension (signed:
    positive tokens raise the target probability).
    """
    from captum.attr import LayerIntegratedGradients

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    fill = getattr(classifier.tokenizer, f"{baseline}_token_id", None)
    if fill is None:
        raise ValueError(f"baseline '{baseline}': the tokenizer has no {baseline} token")
    with _inference(classifier.model):
        doc, probs, index = _prepare(classifier, text, target)
        reference = torch.where(doc.keep, torch.full_like(doc.ids, fill), doc.ids).reshape(1, -1)
        embeddings = classifier.model.hf_model.get_input_embeddings()
        forward = _probabilities(classifier, doc)
        flat = doc.ids.reshape(1, -1)  # a windowed text is one example: its windows side by side
        lig = LayerIntegratedGradients(forward, embeddings)
        attributions = lig.attribute(flat, baselines=reference, target=index, n_steps=steps)
        with torch.no_grad():
            change = forward(flat)[0, index] - forward(reference)[0, index]
    scores = doc.gather(attributions.sum(-1))
    delta = float(scores.sum() - change)
    return _explanation(classifier, text, doc, probs, index, scores, "ig", delta)


@EXPLAINERS.register("rollout")
def attention_rollout(
    classifier: TextClassifier,
    text: str,
    target: int | str | None = None,
    head_fusion: Literal["mean", "max", "min"] = "mean",
    discard_ratio: float = 0.0,
) -> Explanation:
    """Attention rollout: per layer, fuse the heads (``head_fusion``), zero the smallest ``discard_ratio`` of the
    weights, add the identity for the residual connection and renormalise the rows; multiply the layers' matrices and
    read the ``[CLS]`` row (with mean pooling, the mean of all rows).

    Scores are that row over the text's tokens, renormalised to sum to 1. Rollout does not depend on the label:
    ``target`` (default: the predicted label) is only recorded with the explanation.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {sorted(HEAD_FUSIONS)}, got '{head_fusion}'")
    if not 0 <= discard_ratio < 1:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    model = classifier.model
    with _inference(model), _eager_attention(model.hf_model), torch.no_grad():
        doc, probs, index = _prepare(classifier, text, target)
        inputs = model.model_inputs(doc.ids, doc.mask)
        attentions = model.hf_model(input_ids=doc.ids, output_attentions=True, **inputs).attentions
        weights = _window_weights(model, doc)
    if not attentions:
        raise RuntimeError(f"{type(model.hf_model).__name__} returned no attention weights")
    rows = []
    for row in range(doc.ids.shape[0]):
        length = int(doc.mask[row].sum())
        identity = torch.eye(length)
        rollout = identity
        for layer in attentions:
            fused = HEAD_FUSIONS[head_fusion](layer[row, :, :length, :length].float().cpu())
            dropped = int(discard_ratio * fused.numel())
            if dropped:
                fused = fused.flatten().scatter(0, fused.flatten().topk(dropped, largest=False).indices, 0.0)
                fused = fused.view(length, length)
            mixed = fused + identity
            rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
        # what the head reads: the [CLS] row, or with mean pooling the average of every token's row
        pooled = rollout[0] if model.pooling == "cls" else rollout.mean(0)
        pooled = torch.cat([pooled, pooled.new_zeros(doc.ids.shape[1] - length)])
        text_share = pooled * doc.keep[row].cpu()
        rows.append(weights[row] * text_share / text_share.sum())  # windows weighted as the pool weighs them
    scores = doc.gather(torch.stack(rows))
    return _explanation(classifier, text, doc, probs, index, scores / scores.sum(), "rollout")


@dataclass
class _Document:
    """What the model reads of one text: ``ids`` (one row, or one per window), the real tokens (``mask``: not
    padding) and the text tokens among them (``keep``: not special), each text token's index in ``token_ids``
    (``positions``; a token read by two overlapping windows has one index) and the text tokens read, in order."""

    ids: Tensor
    mask: Tensor
    keep: Tensor
    positions: Tensor
    token_ids: list[int]

    def gather(self, values: Tensor) -> Tensor:
        """Per-token values ``(rows, width)`` summed into one per text token (over windows that share it)."""
        out = values.new_zeros(len(self.token_ids))
        return out.index_add(0, self.positions[self.keep].to(values.device), values[self.keep.to(values.device)])


def _document(classifier: TextClassifier, text: str, device: torch.device) -> _Document:
    tokenizer = classifier.tokenizer
    if classifier.windows is None:
        ids = torch.tensor(classifier.tokenize([text]), device=device)
        special = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
        keep = ~torch.isin(ids, torch.tensor([i for i in special if i is not None], device=device))
        positions = (keep.long().cumsum(-1) - 1).clamp(min=0)
        return _Document(ids, torch.ones_like(ids), keep, positions, ids[keep].tolist())
    whole = classifier._whole([text])[0]
    windows = classifier.window_tokens(whole)
    before, after = (len(part) for part in classifier._template)
    covered = sorted({start + j for start, w in windows for j in range(len(w) - before - after)})
    index = {p: i for i, p in enumerate(covered)}
    ids = torch.full((len(windows), max(len(w) for _, w in windows)), tokenizer.pad_token_id, dtype=torch.long)
    mask, keep, positions = torch.zeros_like(ids), torch.zeros_like(ids, dtype=torch.bool), torch.zeros_like(ids)
    for row, (start, w) in enumerate(windows):
        count = len(w) - before - after
        ids[row, : len(w)] = torch.tensor(w)
        mask[row, : len(w)] = 1
        keep[row, before : before + count] = True
        positions[row, before : before + count] = torch.tensor([index[start + j] for j in range(count)])
    token_ids = [whole[p] for p in covered]
    return _Document(ids.to(device), mask.to(device), keep.to(device), positions.to(device), token_ids)


def _window_weights(model: nn.Module, doc: _Document) -> list[float]:
    """How much each window counts in the pooled representation: equal shares (mean), the attention weights, or
    (max) the share of feature dimensions whose maximum comes from that window."""
    rows = doc.ids.shape[0]
    if model.window_pool is None or rows == 1:
        return [1.0] * rows
    if model.window_pool == "mean":
        return [1.0 / rows] * rows
    features = model.features(doc.ids, doc.mask)
    if model.window_pool == "attention":
        return model.window_scores(features).float().softmax(0).tolist()
    winners = features.argmax(0)
    return (torch.bincount(winners, minlength=rows).float() / winners.numel()).tolist()


def _prepare(classifier: TextClassifier, text: str, target: int | str | None) -> tuple[_Document, Tensor, int]:
    """The text as the model reads it (on the model's device), the label probabilities and the target index."""
    device = next(classifier.model.parameters()).device
    doc = _document(classifier, text, device)
    if not doc.token_ids:
        raise ValueError(f"nothing to explain: {text!r} has no tokens")
    probs = classifier.predict_proba([text], device=device)[0]
    names = classifier.labels.names
    if target is None:
        index = int(probs.argmax())
    elif isinstance(target, str):
        if target not in names:
            raise ValueError(f"target '{target}' is not a label of this classifier: {names}")
        index = names.index(target)
    elif 0 <= target < len(names):
        index = int(target)
    else:
        raise ValueError(f"target index {target} is out of range for {len(names)} labels")
    return doc, probs, index


def _probabilities(classifier: TextClassifier, doc: _Document) -> Callable[[Tensor], Tensor]:
    """``(n, rows × width)`` ids → probabilities ``(n, labels)``: each row of the input is one copy of ``doc``
    (its windows side by side), read with ``doc``'s attention mask (the integrated-gradients baseline's padding
    tokens stay visible, as the text's tokens) through the classifier's own head and window pooling."""
    model = classifier.model
    multi_label = classifier.labels.multi_label
    rows, width = doc.ids.shape

    def forward(flat: Tensor) -> Tensor:
        ids = flat.reshape(-1, width)
        copies = ids.shape[0] // rows
        mask = doc.mask.repeat(copies, 1)
        doc_index = torch.arange(copies, device=ids.device).repeat_interleave(rows)
        logits = model.logits(ids, mask, doc_index if model.window_pool is not None else None).float()
        return logits.sigmoid() if multi_label else logits.softmax(-1)

    return forward


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout) for the block, then every submodule's previous mode."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


@contextlib.contextmanager
def _eager_attention(hf: nn.Module) -> Iterator[None]:
    """Eager attention for the block: SDPA and flash attention do not return attention weights."""
    previous = hf.config._attn_implementation
    if previous != "eager":
        hf.set_attn_implementation("eager")
    try:
        yield
    finally:
        if previous != "eager":
            hf.set_attn_implementation(previous)


def _explanation(
    classifier: TextClassifier,
    text: str,
    doc: _Document,
    probs: Tensor,
    index: int,
    scores: Tensor,
    method: str,
    delta: float | None = None,
) -> Explanation:
    names = classifier.labels.names
    return Explanation(
        text=text,
        tokens=classifier.tokenizer.convert_ids_to_tokens(doc.token_ids),
        scores=scores.detach().float().cpu().tolist(),
        target=names[index],
        target_index=index,
        probabilities={name: float(p) for name, p in zip(names, probs.tolist(), strict=True)},
        method=method,
        delta=delta,
    )


# ---- display --------------------------------------------------------------------------------------------------
FONT_SIZE = 12
CHAR_INCHES = 0.6 * FONT_SIZE / 72  # advance of a monospace character (DejaVu Sans Mono: 0.6 em)
LINE_INCHES = 0.34


def plot_explanation(explanation: Explanation, path: str | Path | None = None, *, width: int = 70) -> Figure:
    """The text's words, wrapped at ``width`` characters, on a background coloured by score: red negative (against
    the target), green positive, scaled by the largest absolute score. Written as a PNG when ``path`` is given."""
    words = explanation.words()
    lines: list[list[tuple[int, str, float]]] = [[]]
    column = 0
    for word, score in words:
        if column and column + len(word) > width:
            lines.append([])
            column = 0
        lines[-1].append((column, word, score))
        column += len(word) + 1
    limit = max((abs(score) for _, score in words), default=0.0) or 1.0
    norm, cmap = Normalize(-limit, limit), colormaps["RdYlGn"]

    margin, title, bar = 0.3, 0.6, 0.75  # inches
    text_w, text_h = width * CHAR_INCHES, len(lines) * LINE_INCHES
    fig_w, fig_h = text_w + 2 * margin, text_h + title + bar
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((margin / fig_w, bar / fig_h, text_w / fig_w, text_h / fig_h))
    ax.set(xlim=(0, width), ylim=(len(lines), 0))
    ax.axis("off")
    for row, line in enumerate(lines):
        for column, word, score in line:
            strong = abs(score) > 0.6 * limit
            ax.text(
                column,
                row + 0.5,
                word,
                va="center",
                family="monospace",
                fontsize=FONT_SIZE,
                color="white" if strong else "black",
                bbox={"boxstyle": "square,pad=0.15", "facecolor": cmap(norm(score)), "edgecolor": "none"},
            )
    cax = fig.add_axes((0.25, 0.3 / fig_h, 0.5, 0.12 / fig_h))
    fig.colorbar(ScalarMappable(norm, cmap), cax=cax, orientation="horizontal")
    cax.tick_params(labelsize=7)
    fig.suptitle(_headline(explanation), fontsize=10, y=1 - 0.15 / fig_h, va="top")
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def explanation_markdown(explanation: Explanation, top: int = 10) -> str:
    """A headline and a markdown table of the ``top`` words by absolute score."""
    ranked = sorted(explanation.words(), key=lambda item: abs(item[1]), reverse=True)[:top]
    headline = _headline(explanation)
    if explanation.delta is not None:
        headline += f"; convergence delta {explanation.delta:.2g}"
    cells = [(rank, word.replace("|", "\\|"), score) for rank, (word, score) in enumerate(ranked, 1)]
    rows = [f"| {rank} | {word} | {score:+.4f} |" for rank, word, score in cells]
    return "\n".join([headline, "", "| rank | word | score |", "|---|---|---|", *rows])


def explanation_html(explanation: Explanation) -> str:
    """The text's words as HTML spans on a background coloured by score (green for the target, red against it,
    opacity scaled by the largest absolute score), each with its score as a tooltip; words are escaped."""
    words = explanation.words()
    limit = max((abs(score) for _, score in words), default=0.0) or 1.0
    spans = []
    for word, score in words:
        rgb = "26,152,80" if score >= 0 else "215,48,39"
        alpha = 0.85 * abs(score) / limit
        spans.append(
            f'<span title="{score:+.4f}" style="background: rgba({rgb},{alpha:.2f}); padding: 1px 3px; '
            f'border-radius: 3px">{html.escape(word)}</span>'
        )
    return f'<div class="tujie-attributions" style="line-height: 2">{" ".join(spans)}</div>'


def _headline(explanation: Explanation) -> str:
    probs, target, predicted = explanation.probabilities, explanation.target, explanation.predicted
    text = f"{TITLES.get(explanation.method, explanation.method)} for '{target}' (p = {probs[target]:.3f})"
    if predicted != target:
        text += f", predicted '{predicted}' (p = {probs[predicted]:.3f})"
    return text
