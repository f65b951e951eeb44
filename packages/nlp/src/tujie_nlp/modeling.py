"""A Hugging Face encoder as a one-tensor module, transfer-learning controls, and the text classification task.

:class:`SequenceClassifier` takes padded token ids and returns logits: the attention mask comes from the padding id
and segment ids from the first separator, so every core tool (Trainer, metrics, int8, ONNX, distillation) sees a
plain ``Tensor → Tensor`` model.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from tujie_core import SCHEDULERS, ClassificationTask, Schedule, StepOutput
from tujie_core.optim import build_optimizer
from tujie_nlp.windows import WINDOW_POOLS, pool_windows

_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


POOLINGS = ("cls", "mean")


class SequenceClassifier(nn.Module):
    """``AutoModelForSequenceClassification`` behind ``forward(input_ids) → logits``.

    ``pooling="cls"`` is the Hugging Face head (the pooled ``[CLS]`` state); ``"mean"`` feeds the mean of the
    unmasked token states to the same linear classifier, as sentence-transformers encoders such as the default
    MiniLM were trained to be used.

    ``window_pool`` (``mean``, ``max``, ``attention``) makes it a long-document classifier: ``forward(input_ids,
    doc_index)`` reads windows (rows) of several documents and pools each document's window representations (what
    the head would read) into one row before the head. Attention pooling learns one score per window (a linear
    layer, zero-initialised, so it starts as the mean). Without ``doc_index`` every row is its own document, so one
    window gives exactly the plain model's logits.
    """

    def __init__(
        self,
        hf_model: nn.Module,
        pad_token_id: int,
        sep_token_id: int | None = None,
        pooling: str = "cls",
        window_pool: str | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got '{pooling}'")
        linear_head = isinstance(getattr(hf_model, "classifier", None), nn.Linear)
        for needs, what in ((pooling == "mean", "mean pooling"), (window_pool is not None, "window pooling")):
            if needs and not linear_head:
                raise ValueError(f"{what} needs a linear classifier head; {type(hf_model).__name__} has none")
        if window_pool not in (None, *WINDOW_POOLS):
            raise ValueError(f"window pooling must be one of {', '.join(WINDOW_POOLS)}, got '{window_pool}'")
        self.hf_model = hf_model
        self.pad_token_id = int(pad_token_id)
        self.pooling = pooling
        self.window_pool = window_pool
        self.window_attention = None
        if window_pool == "attention":
            self.window_attention = nn.Linear(hf_model.config.hidden_size, 1)
            nn.init.zeros_(self.window_attention.weight)
            nn.init.zeros_(self.window_attention.bias)
        pooler = getattr(base_model(self), "pooler", None)
        if pooling == "mean" and pooler is not None:
            pooler.requires_grad_(False)  # mean pooling never uses it: nothing would learn (DP-SGD needs all used)
        # segment ids only for encoders that have them (BERT: type_vocab_size 2; RoBERTa: 1)
        types = getattr(hf_model.config, "type_vocab_size", 0) or 0
        self.sep_token_id = int(sep_token_id) if sep_token_id is not None and types > 1 else None

    @property
    def config(self) -> Any:
        return self.hf_model.config

    def model_inputs(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Attention mask (default: the non-padding tokens) and segment ids: 0 up to the first ``[SEP]``, then 1."""
        mask = input_ids.ne(self.pad_token_id).long() if attention_mask is None else attention_mask
        inputs = {"attention_mask": mask}
        if self.sep_token_id is not None:
            sep = input_ids.eq(self.sep_token_id).long()
            inputs["token_type_ids"] = (sep.cumsum(-1) - sep).clamp(max=1)
        return inputs

    def features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """What the linear head reads, one row per input row: the mean of the unmasked token states, or the
        encoder's pooled ``[CLS]`` output (the ``[CLS]`` state for encoders without a pooler)."""
        inputs = self.model_inputs(input_ids, attention_mask)
        out = base_model(self)(input_ids=input_ids, **inputs)
        if self.pooling == "cls":
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else out.last_hidden_state[:, 0]
        weights = inputs["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
        return (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1)

    def head(self, features: Tensor) -> Tensor:
        return self.hf_model.classifier(self.hf_model.dropout(features))

    def window_scores(self, features: Tensor) -> Tensor | None:
        """The attention pool's score of each window (None for mean and max pooling)."""
        return None if self.window_attention is None else self.window_attention(features).squeeze(-1)

    def logits(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, doc_index: Tensor | None = None
    ) -> Tensor:
        if self.window_pool is not None and doc_index is not None:
            features = self.features(input_ids, attention_mask)
            pooled = pool_windows(features, doc_index, self.window_pool, self.window_scores(features))
            return self.head(pooled)
        if self.pooling == "cls":
            inputs = self.model_inputs(input_ids, attention_mask)
            return self.hf_model(input_ids=input_ids, **inputs).logits
        return self.head(self.features(input_ids, attention_mask))

    def forward(self, input_ids: Tensor, doc_index: Tensor | None = None) -> Tensor:
        return self.logits(input_ids, doc_index=doc_index)


def base_model(model: SequenceClassifier) -> nn.Module:
    """The encoder without its classification head (``model.bert``, ``model.roberta``, …)."""
    hf = model.hf_model
    return getattr(hf, hf.base_model_prefix)


def encoder_layers(model: SequenceClassifier) -> int:
    return int(model.config.num_hidden_layers)


def layer_of(name: str, num_layers: int) -> int:
    """Depth of a parameter: 0 for embeddings, ``i + 1`` for transformer layer ``i``, ``num_layers + 1`` for the
    pooler and the head."""
    if "embeddings" in name:
        return 0
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def freeze(
    model: SequenceClassifier,
    *,
    embeddings: bool = False,
    layers: int = 0,
    encoder: bool = False,
) -> list[str]:
    """Stop gradients: the embeddings, the first ``layers`` transformer layers, or the whole encoder
    (``encoder=True``: feature extraction, only the head trains). Returns the frozen parameter names."""
    depth = encoder_layers(model)
    if not 0 <= layers <= depth:
        raise ValueError(f"freeze_layers must be in [0, {depth}] for this {depth}-layer encoder, got {layers}")
    prefix = model.hf_model.base_model_prefix + "."
    frozen = []
    for name, param in model.hf_model.named_parameters():
        in_encoder = name.startswith(prefix)
        level = layer_of(name, depth)
        if in_encoder and (encoder or (embeddings and level == 0) or 1 <= level <= layers):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def layerwise_groups(
    model: nn.Module, lr: float, decay: float, weight_decay: float, num_layers: int
) -> list[dict[str, Any]]:
    """Parameter groups for layer-wise learning-rate decay (Howard & Ruder 2018; Clark et al. 2020):
    ``lr · decay^(num_layers + 1 − depth)``, so the head gets ``lr`` and the embeddings the smallest rate.
    Biases and norm weights (1-D) get no weight decay."""
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = layer_of(name, num_layers)
        no_decay = param.ndim <= 1
        group = groups.setdefault(
            (depth, no_decay),
            {
                "params": [],
                "lr": lr * decay ** (num_layers + 1 - depth),
                "weight_decay": 0.0 if no_decay else weight_decay,
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


class TextClassificationTask(ClassificationTask):
    """Classification of ``(input_ids, target)`` batches with optional layer-wise learning-rate decay and R-Drop.

    ``rdrop`` > 0 (R-Drop, Liang et al. 2021): each training batch goes through the model twice (as one doubled
    batch, so under two dropout masks) and the loss adds ``rdrop`` × the symmetric KL divergence between the two
    predicted distributions to the mean cross-entropy of both; evaluation is unchanged. It costs about twice the
    compute per step.
    """

    def __init__(
        self,
        model: SequenceClassifier,
        *args: Any,
        layer_lr_decay: float = 1.0,
        rdrop: float = 0.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("input_key", None)  # window batches are {"input_ids", "doc_index", "target"} mappings
        super().__init__(model, *args, **kwargs)
        if not 0 < layer_lr_decay <= 1:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {layer_lr_decay}")
        if rdrop < 0:
            raise ValueError(f"rdrop must be >= 0, got {rdrop}")
        self.layer_lr_decay = layer_lr_decay
        self.rdrop = rdrop

    def step(self, batch: Any, with_predictions: bool = True, sample_losses: bool = False) -> StepOutput:
        if not (self.rdrop and self.model.training):
            return super().step(batch, with_predictions, sample_losses)
        inputs, target = self.unpack(batch)
        first, second = self.forward(doubled(inputs)).float().chunk(2)
        loss = (self.loss(first, target) + self.loss(second, target)) / 2
        loss = loss + self.rdrop * symmetric_kl(first, second, self.kind == "multiclass")
        out = first.detach()
        preds = self.predictions(out) if with_predictions else out
        return StepOutput(loss, preds, target.long() if with_predictions else target, int(target.shape[0]))

    def configure_optimizers(self, total_steps: int) -> tuple[Optimizer, Schedule | None]:
        if self.layer_lr_decay == 1.0:
            return super().configure_optimizers(total_steps)
        spec = self.optimizer_spec
        options = dict(spec.params)
        lr = float(options.pop("lr", 1e-3))
        weight_decay = float(options.pop("weight_decay", 0.0))
        raw = getattr(self.model, "module", self.model)  # unwrapped when a plugin wrapped it
        groups = layerwise_groups(raw, lr, self.layer_lr_decay, weight_decay, encoder_layers(raw))
        optimizer = build_optimizer(spec.name, groups, lr=lr, **options)
        if self.scheduler_spec is None:
            return optimizer, None
        sched = self.scheduler_spec
        runtime = {"optimizer": optimizer, "total_steps": total_steps}
        return optimizer, SCHEDULERS.create(sched.name, where="scheduler", runtime=runtime, **sched.params)


def doubled(inputs: Tensor | dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
    """The batch twice over, as one batch: token ids stacked; windows with the second copy's documents numbered
    after the first's."""
    if isinstance(inputs, Tensor):
        return torch.cat([inputs, inputs])
    docs = int(inputs["doc_index"].max()) + 1
    return {
        "input_ids": torch.cat([inputs["input_ids"], inputs["input_ids"]]),
        "doc_index": torch.cat([inputs["doc_index"], inputs["doc_index"] + docs]),
    }


def symmetric_kl(first: Tensor, second: Tensor, softmax: bool) -> Tensor:
    """Mean over rows of ``(KL(p‖q) + KL(q‖p)) / 2``: softmax rows, or independent sigmoids summed over labels."""
    if softmax:
        p, q = first.log_softmax(-1), second.log_softmax(-1)
        return ((p.exp() - q.exp()) * (p - q)).sum(-1).mean() / 2
    p, q = F.logsigmoid(first), F.logsigmoid(second)
    p_not, q_not = F.logsigmoid(-first), F.logsigmoid(-second)
    kl = (p.exp() - q.exp()) * (p - q) + (p_not.exp() - q_not.exp()) * (p_not - q_not)
    return kl.reshape(first.shape[0], -1).sum(-1).mean() / 2


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


@torch.no_grad()
def shrink_encoder(model: SequenceClassifier, layers: int) -> SequenceClassifier:
    """A student for distillation: the same encoder with only ``layers`` transformer layers, evenly spaced from the
    teacher's and initialised from them (as DistilBERT initialises from every second BERT layer)."""
    import copy

    depth = encoder_layers(model)
    if not 1 <= layers < depth:
        raise ValueError(f"a student needs 1 to {depth - 1} layers (the teacher has {depth}), got {layers}")
    keep = sorted({round(i * (depth - 1) / max(layers - 1, 1)) for i in range(layers)}) if layers > 1 else [depth - 1]
    student = copy.deepcopy(model)
    owner, name, stack = _layer_stack(base_model(student), depth)
    setattr(owner, name, nn.ModuleList([stack[i] for i in keep]))
    student.hf_model.config.num_hidden_layers = layers
    for i, layer in enumerate(getattr(owner, name)):  # attention implementations index caches by layer
        attention = getattr(layer, "attention", None)
        inner = getattr(attention, "self", None)
        if inner is not None and hasattr(inner, "layer_idx"):
            inner.layer_idx = i
    return student


def _layer_stack(encoder: nn.Module, depth: int) -> tuple[nn.Module, str, nn.ModuleList]:
    """The ModuleList holding the transformer layers (``encoder.layer`` in BERT, ``transformer.layer`` in
    DistilBERT): the first one with ``depth`` entries."""
    for module in encoder.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == depth:
                return module, name, child
    raise ValueError(f"cannot find the {depth} transformer layers in {type(encoder).__name__}")
