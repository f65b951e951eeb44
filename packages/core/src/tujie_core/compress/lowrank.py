"""Low-rank factorisation: Linear layers replaced by two thinner ones from a truncated SVD."""

from __future__ import annotations

import torch
from torch import nn

from tujie_core.compress._util import _copy


def low_rank(model: nn.Module, *, rank: int | None = None, energy: float | None = None) -> nn.Module:
    """Replace ``nn.Linear`` layers by ``Sequential(Linear(in, r, bias=False), Linear(r, out))`` from a truncated
    SVD ``W ≈ (U·S^½)(S^½·Vᵀ)``.

    Give exactly one of ``rank`` (``r = min(rank, in, out)``, applied to every Linear, even where it adds
    parameters, so full rank reproduces the model) or ``energy`` in (0, 1] (per layer, the smallest r keeping
    that fraction of the sum of squared singular values; layers where r·(in + out) ≥ in·out stay as they are).
    Only exact ``nn.Linear`` instances are replaced: subclasses (e.g. attention's ``out_proj``, whose weight
    is read directly) are kept.
    """
    return _low_rank(model, rank, energy)[0]


def _low_rank(model: nn.Module, rank: int | None, energy: float | None) -> tuple[nn.Module, dict[str, tuple[int, int]]]:
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank or energy")
    if rank is not None and rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    factorised = _copy(model)
    ranks = {}
    targets = [(name, m) for name, m in factorised.named_modules() if type(m) is nn.Linear]
    for name, linear in targets:
        weight = linear.weight.detach()
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
        if rank is not None:
            r = min(rank, len(s))
        else:
            cumulative = (s**2).cumsum(0)
            r = int(torch.searchsorted(cumulative, energy * cumulative[-1] * (1 - 1e-12))) + 1
            if r * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
                continue
        root = s[:r].sqrt()
        first = nn.Linear(linear.in_features, r, bias=False, device=weight.device, dtype=weight.dtype)
        second = nn.Linear(
            r, linear.out_features, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype
        )
        with torch.no_grad():
            first.weight.copy_(root[:, None] * vh[:r])
            second.weight.copy_(u[:, :r] * root)
            if linear.bias is not None:
                second.bias.copy_(linear.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(factorised.get_submodule(parent_name), child, nn.Sequential(first, second))
        ranks[name] = (r, len(s))
    return factorised, ranks
