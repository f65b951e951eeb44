"""Graph neural networks over molecule batches (torch-geometric ``Batch``: ``x``, ``edge_index``, ``edge_attr``,
``batch``), registered in the core model registry: ``dmpnn`` (chemprop's directed message passing), ``gin``
(GINE convolutions) and ``attentivefp`` (PyG's AttentiveFP).

>>> model = create_model("dmpnn", input_shape=(8,), num_outputs=1, hidden=300, depth=3)  # doctest: +SKIP

Every model embeds the category codes of :mod:`~tujie_health.molecules.featurize` (one embedding per feature,
summed: a linear layer on the one-hot vector), passes messages, pools atoms into a molecule vector and maps it to
the outputs through a feed-forward head; a regression model ends in the training targets' inverse standardisation,
so it predicts in the target's own unit. With ``mol_features`` (molecule-level descriptors from the data, see
``mol_features`` in the ``molecules`` dataset) the head reads them beside the molecule vector, each mapped through
its training-set quantiles to [-1, 1] (chemprop's CDF normalisation, robust to RDKit's heavy-tailed descriptors).
:meth:`MoleculeNet.atom_attributions` gives gradient × input per atom, for
the pictures of top hits.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from tujie_core.models import Standardize
from tujie_health.molecules.featurize import ATOM_FEATURES, BOND_FEATURES, QUANTILE_LEVELS

Pooling = Literal["mean", "sum", "norm"]


class CategoryEmbedding(nn.Module):
    """The sum of one embedding per category feature (codes ``(N, F)`` → ``(N, dim)``)."""

    def __init__(self, features: tuple[tuple[str, int], ...], dim: int) -> None:
        super().__init__()
        sizes = torch.tensor([size for _, size in features])
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.table = nn.Embedding(int(sizes.sum()), dim)

    def forward(self, codes: Tensor) -> Tensor:
        return F.embedding_bag(codes.long() + self.offsets, self.table.weight, mode="sum")  # no (N, F, dim) tensor


def _pool(h: Tensor, batch: Tensor, size: int, how: Pooling) -> Tensor:
    if how == "norm":  # chemprop's "norm": a sum scaled by a typical molecule size
        return scatter(h, batch, 0, size, "sum") / 100.0
    return scatter(h, batch, 0, size, how)


class QuantileScale(nn.Module):
    """Each column through its empirical CDF: ``quantiles`` (D, K) are the training values at K evenly spaced
    levels; a value maps piecewise-linearly to its level in [-1, 1] (below the lowest: -1, above the highest: 1; a
    value several levels share: their middle), NaN (a descriptor that could not be computed) to 0, the median."""

    def __init__(self, quantiles: list[list[float]]) -> None:
        super().__init__()
        q = torch.tensor(quantiles, dtype=torch.float32)
        if q.ndim != 2 or q.shape[1] < 2:
            raise ValueError(f"feature_quantiles: a (features, levels ≥ 2) table, got shape {tuple(q.shape)}")
        self.register_buffer("quantiles", torch.nan_to_num(q).cummax(1).values)  # non-decreasing per column

    def forward(self, x: Tensor) -> Tensor:
        q, levels = self.quantiles, self.quantiles.shape[1]
        values = x.t().contiguous().to(q.dtype)  # (D, B)
        missing = torch.isnan(values)
        values = torch.where(missing, q[:, levels // 2 : levels // 2 + 1], values)
        first = torch.searchsorted(q, values)  # the first level ≥ the value
        after = torch.searchsorted(q, values, right=True)  # the first level > the value
        upper = after.clamp(1, levels - 1)
        low, high = q.gather(1, upper - 1), q.gather(1, upper)
        step = torch.where(high > low, (values - low) / (high - low).clamp_min(1e-12), torch.zeros_like(values))
        level = torch.where(after > first, (first + after - 1) / 2, upper - 1 + step.clamp(0, 1))  # ties: mid-rank
        level = torch.where(values < q[:, :1], 0.0, torch.where(values > q[:, -1:], levels - 1.0, level))
        return torch.where(missing, 0.0, 2 * level / (levels - 1) - 1).t()


def _head(dim: int, hidden: int, layers: int, outputs: int, dropout: float) -> nn.Sequential:
    parts: list[nn.Module] = []
    for _ in range(layers):
        parts += [nn.Dropout(dropout), nn.Linear(dim, hidden), nn.ReLU()]
        dim = hidden
    return nn.Sequential(*parts, nn.Dropout(dropout), nn.Linear(dim, outputs))


class MoleculeNet(nn.Module):
    """Shared frame: atom embedding → :meth:`encode` (message passing + pooling) → head → output scaling."""

    def __init__(
        self,
        hidden: int,
        num_outputs: int,
        ffn_hidden: int,
        ffn_layers: int,
        dropout: float,
        target_mean: list[float] | None,
        target_std: list[float] | None,
        mol_features: int = 0,
        feature_quantiles: list[list[float]] | None = None,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.atom_embedding = CategoryEmbedding(ATOM_FEATURES, embed_dim or hidden)
        self.head = _head(hidden + mol_features, ffn_hidden, ffn_layers, num_outputs, dropout)
        if mol_features and feature_quantiles is None:
            feature_quantiles = [[0.0] * QUANTILE_LEVELS] * mol_features  # placeholders: a saved buffer replaces them
        if mol_features and len(feature_quantiles or []) != mol_features:
            raise ValueError(f"feature_quantiles: one row per molecule feature ({mol_features})")
        self.features = QuantileScale(feature_quantiles) if mol_features else None  # type: ignore[arg-type]
        if (target_mean is None) != (target_std is None):
            raise ValueError("give both target_mean and target_std, or neither")
        self.scale = Standardize(target_mean, target_std, inverse=True) if target_mean is not None else nn.Identity()

    def encode(self, atoms: Tensor, batch: Any) -> Tensor:
        """Molecule vectors ``(num_graphs, hidden)`` from embedded atoms ``(num_atoms, dim)``."""
        raise NotImplementedError

    def forward(self, batch: Any) -> Tensor:
        return self._readout(self.atom_embedding(batch.x), batch)

    def _readout(self, atoms: Tensor, batch: Any) -> Tensor:
        molecule = self.encode(atoms, batch)
        if self.features is not None:
            extra = getattr(batch, "mol_features", None)
            if extra is None:
                raise ValueError("this model reads molecule features (mol_features) and the batch has none")
            molecule = torch.cat([molecule, self.features(extra)], 1)
        return self.scale(self.head(molecule))

    def atom_attributions(self, batch: Any, output: int = 0) -> Tensor:
        """Gradient × input of output ``output`` on each atom's embedding, summed over its dimensions (num_atoms,)."""
        atoms = self.atom_embedding(batch.x).detach().requires_grad_(True)
        result = self._readout(atoms, batch)
        (grad,) = torch.autograd.grad(result[:, output].sum(), atoms)
        return (grad * atoms).sum(-1).detach()


class DMPNN(MoleculeNet):
    """Directed message passing (Yang et al. 2019, chemprop): hidden states live on directed bonds; a bond's message
    sums the bonds entering its source atom except its own reverse, so no message echoes straight back. The reverse
    of edge ``e`` is ``e ^ 1`` (the featuriser stores bonds as reverse pairs, kept through batching)."""

    def __init__(
        self,
        num_outputs: int,
        hidden: int = 300,
        depth: int = 3,
        dropout: float = 0.0,
        pooling: Pooling = "mean",
        ffn_hidden: int = 300,
        ffn_layers: int = 1,
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
        mol_features: int = 0,
        feature_quantiles: list[list[float]] | None = None,
    ) -> None:
        super().__init__(
            hidden,
            num_outputs,
            ffn_hidden,
            ffn_layers,
            dropout,
            target_mean,
            target_std,
            mol_features,
            feature_quantiles,
        )
        if depth < 1:
            raise ValueError(f"depth must be ≥ 1, got {depth}")
        self.depth, self.pooling = depth, pooling
        self.bond_embedding = CategoryEmbedding(BOND_FEATURES, hidden)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.w_h = nn.Linear(hidden, hidden, bias=False)
        self.w_o = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def encode(self, atoms: Tensor, batch: Any) -> Tensor:
        src, dst = batch.edge_index
        n = atoms.shape[0]
        h0 = atoms[src] + self.bond_embedding(batch.edge_attr) + self.bias  # W_i [x_src ‖ e] as embeddings
        h = torch.relu(h0)
        reverse = torch.arange(h.shape[0], device=h.device) ^ 1
        for _ in range(self.depth - 1):
            incoming = torch.zeros(n, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, dst, h)
            h = self.dropout(torch.relu(h0 + self.w_h(incoming[src] - h[reverse])))
        incoming = torch.zeros(n, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, dst, h)
        atom_h = self.dropout(torch.relu(self.w_o(incoming) + atoms))  # W_o [x_v ‖ m_v]
        return _pool(atom_h, batch.batch, batch.num_graphs, self.pooling)


class GIN(MoleculeNet):
    """Graph isomorphism network with bond features (GINE, Hu et al. 2020): ``layers`` convolutions, each an MLP
    over the atom plus the sum of its neighbours' (atom + bond) messages."""

    def __init__(
        self,
        num_outputs: int,
        hidden: int = 300,
        layers: int = 4,
        dropout: float = 0.0,
        pooling: Pooling = "mean",
        ffn_hidden: int = 300,
        ffn_layers: int = 1,
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
        mol_features: int = 0,
        feature_quantiles: list[list[float]] | None = None,
    ) -> None:
        from torch_geometric.nn import GINEConv

        super().__init__(
            hidden,
            num_outputs,
            ffn_hidden,
            ffn_layers,
            dropout,
            target_mean,
            target_std,
            mol_features,
            feature_quantiles,
        )
        self.pooling = pooling
        self.bond_embeddings = nn.ModuleList(CategoryEmbedding(BOND_FEATURES, hidden) for _ in range(layers))
        self.convs = nn.ModuleList(
            GINEConv(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)), train_eps=True)
            for _ in range(layers)
        )
        self.dropout = nn.Dropout(dropout)

    def encode(self, atoms: Tensor, batch: Any) -> Tensor:
        h = atoms
        for conv, bonds in zip(self.convs, self.bond_embeddings, strict=True):
            h = h + self.dropout(torch.relu(conv(h, batch.edge_index, bonds(batch.edge_attr))))  # residual
        return _pool(h, batch.batch, batch.num_graphs, self.pooling)


class AttentiveFPNet(MoleculeNet):
    """AttentiveFP (Xiong et al. 2020, PyG's implementation): graph attention over atoms, then ``timesteps`` rounds
    of attention from a molecule node; its readout feeds the head."""

    def __init__(
        self,
        num_outputs: int,
        hidden: int = 200,
        layers: int = 2,
        timesteps: int = 2,
        dropout: float = 0.0,
        ffn_hidden: int = 200,
        ffn_layers: int = 1,
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
        mol_features: int = 0,
        feature_quantiles: list[list[float]] | None = None,
    ) -> None:
        from torch_geometric.nn.models import AttentiveFP

        super().__init__(
            hidden,
            num_outputs,
            ffn_hidden,
            ffn_layers,
            dropout,
            target_mean,
            target_std,
            mol_features,
            feature_quantiles,
        )
        self.bond_embedding = CategoryEmbedding(BOND_FEATURES, hidden)
        self.net = AttentiveFP(hidden, hidden, hidden, hidden, layers, timesteps, dropout)

    def encode(self, atoms: Tensor, batch: Any) -> Tensor:
        return self.net(atoms, batch.edge_index, self.bond_embedding(batch.edge_attr), batch.batch)


def _builder(cls: type[MoleculeNet]) -> Any:
    def build(input_shape: tuple[int, ...], num_outputs: int, **options: Any) -> nn.Module:
        if tuple(input_shape) != (len(ATOM_FEATURES),):
            raise ValueError(f"{cls.__name__} takes molecule graphs (data 'molecules'), got input shape {input_shape}")
        return cls(num_outputs, **options)

    build.__doc__ = cls.__doc__
    build.__signature__ = _signature(cls)  # type: ignore[attr-defined]
    return build


def _signature(cls: type) -> Any:
    """The builder's signature: ``input_shape``, then the class's options (the registry validates against it)."""
    import inspect

    params = list(inspect.signature(cls.__init__, eval_str=True).parameters.values())[1:]  # drop self
    shape = inspect.Parameter("input_shape", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=tuple[int, ...])
    return inspect.Signature([shape, *params])


dmpnn = _builder(DMPNN)
gin = _builder(GIN)
attentivefp = _builder(AttentiveFPNet)
