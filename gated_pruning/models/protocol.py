"""What a gated model offers the rest of the code: its prunable units, their FLOPs, and the
physically smaller network that pruning makes. Nothing outside `models/` knows a layer of a VGG
or a ResNet; training, penalties, the budget, pruning, baselines and reports talk to this.

A **unit** is what one gate decides: `kind="channels"`, one gate value per channel of a channel
group (a conv layer's outputs; in a residual network, a block's inner channels, or a residual
stream's channels, coupled across every layer that reads or writes them), or `kind="block"`, one
value for a whole residual branch (SSS's block selection). `minimum` is the fewest values pruning
keeps open: 1 for channels (a group with none kills the network), 0 for a block (its removal
leaves the shortcut). A plain network has the same units, without gates (the baselines cut and
rescale them).

FLOPs are a table of layers, each `coef * prod(counts[u] for u in factors)`: a conv's FLOPs are
its kernel area times output pixels times its input and output channel counts, each of which is
a unit's count (or fixed, folded into `coef`); a layer inside a residual branch has the branch's
block unit as a factor too. `flops(counts)` evaluates the table for any kept counts, on numbers or
on device tensors (the budget calls it every step); 2 FLOPs per multiply-add, convs and linear
layers, as `torch.utils.flop_counter` counts.

A model implements `GatedNetwork` by providing `units()`, `gates()` (one per unit, None where a
unit has no gate), `cost_table()`, `_fold_gates()` (turn the gates into batch-norm parameters),
`_channel_root(unit)` (the layer and pruning function whose Torch-Pruning dependency group is
that unit's channels) and, for block units, `_remove_blocks(units)`. `compact(masks)` then does the
rest: fold, remove blocks, and remove channels group by group through Torch-Pruning's dependency
graph (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

KINDS = ("channels", "block")


@dataclass(frozen=True)
class Unit:
    name: str
    kind: str
    size: int
    minimum: int


@dataclass(frozen=True)
class LayerCost:
    """FLOPs of one layer: `coef` times the product of the kept counts of the units `factors`."""
    coef: float
    factors: tuple[int, ...]


class GatedNetwork(nn.Module):
    """The protocol's shared machinery; subclasses describe their units and layers."""

    # -- what a model describes -------------------------------------------------------------
    def units(self) -> list[Unit]:
        raise NotImplementedError

    def gates(self) -> list:
        """The gate of every unit, in unit order ([] for a plain network)."""
        raise NotImplementedError

    def cost_table(self) -> list[LayerCost]:
        raise NotImplementedError

    def regrows(self) -> list[bool]:
        """Per unit, whether a gate at exactly 0 still gets a gradient, so that a closed value can
        train back: a residual block's does (the ReLU after the sum sees the shortcut), a channel
        gate folded into the batch norm before a ReLU does not (ReLU'(0) = 0)."""
        return [u.kind == "block" for u in self.units()]

    def _fold_gates(self) -> None:
        """In place: every gate's kept value into the batch-norm parameters; gates removed."""
        raise NotImplementedError

    def _channel_root(self, unit: int):
        """(layer, Torch-Pruning pruning function) whose dependency group is `unit`'s channels."""
        raise NotImplementedError

    def unit_filters(self, unit: int) -> torch.Tensor | None:
        """The weight of the conv that produces `unit`'s channels (output channels first), for the
        filter-norm criterion of L1-norm pruning; None for a block."""
        if self.units()[unit].kind != "channels":
            return None
        layer, _ = self._channel_root(unit)
        return layer.weight if isinstance(layer, nn.Conv2d) else self._producer(layer).weight

    def unit_norms(self, unit: int) -> list[nn.Module]:
        """The batch norms whose outputs are `unit`'s channels (every writer of a residual stream;
        none for a block): where a data-driven criterion reads the channels' activations."""
        raise NotImplementedError(f"{type(self).__name__} does not say which batch norms write its channels")

    def unit_consumer(self, unit: int) -> nn.Module | None:
        """The one conv or linear layer that reads `unit`'s channels (through channel-wise ops only:
        ReLU, pooling), or None where several do (a residual stream) or none: where a
        reconstruction criterion (ThiNet, He et al.) rebuilds the next layer."""
        return None

    def _producer(self, bn: nn.Module) -> nn.Conv2d:
        """The conv whose outputs batch norm `bn` normalizes (the module just before it)."""
        previous = None
        for m in self.modules():
            if m is bn:
                return previous
            if isinstance(m, nn.Conv2d):
                previous = m
        raise ValueError("a batch norm without a conv before it")

    def _remove_blocks(self, units: list[int]) -> None:
        """In place: the residual branches of these block units go, their shortcuts stay."""
        raise NotImplementedError(f"{type(self).__name__} has no block units")

    # -- what every model gets --------------------------------------------------------------
    def sizes(self) -> list[int]:
        return [u.size for u in self.units()]

    def flops(self, counts=None, table: list[LayerCost] | None = None):
        """FLOPs of one image's forward pass with `counts[u]` of unit u kept (default: all)."""
        counts = self.sizes() if counts is None else counts
        total = 0
        for layer in table or self.cost_table():
            term = layer.coef
            for u in layer.factors:
                term = term * counts[u]
            total = total + term
        return total

    def flops_function(self, device=None):
        """`flops(counts)` for a counts tensor on `device` (one value per unit), in a few kernels
        whatever the number of layers: the cost table as an index tensor (each layer's factors,
        padded with a slot that holds 1) and a coefficient tensor. What the budget calls every step."""
        table, units = self.cost_table(), len(self.units())
        width = max([len(layer.factors) for layer in table] + [1])
        index = torch.full((len(table), width), units, dtype=torch.long)
        for i, layer in enumerate(table):
            index[i, :len(layer.factors)] = torch.tensor(layer.factors, dtype=torch.long)
        index = index.to(device)
        coef = torch.tensor([float(layer.coef) for layer in table], device=device)
        one = torch.ones(1, device=device)

        def flops(counts: torch.Tensor) -> torch.Tensor:
            return (coef * torch.cat([counts.to(coef.dtype), one])[index].prod(dim=1)).sum()

        return flops

    def unit_costs(self) -> list[float]:
        """Per unit, the FLOPs that closing one of its gate values saves in the dense network
        (a block: the whole branch), the weights of the FLOPs-weighted penalties."""
        sizes, table = self.sizes(), self.cost_table()
        base = self.flops(sizes, table)
        out = []
        for u in range(len(sizes)):
            less = list(sizes)
            less[u] -= 1
            out.append(float(base - self.flops(less, table)))
        return out

    def compact(self, masks: list[torch.Tensor]) -> nn.Module:
        """A physically smaller plain copy: gates folded in, then per unit only the values in
        `masks[u]` kept (a block whose mask is empty becomes its shortcut). `self` is unchanged.
        Computes what the gated network computes when the removed gate values are zero."""
        import torch_pruning as tp

        units = self.units()
        if len(masks) != len(units):
            raise ValueError(f"{len(masks)} masks for {len(units)} units")

        def check(u, m):
            if int(m.sum()) < min(u.minimum, u.size):
                raise ValueError(f"unit {u.name} keeps {int(m.sum())} of {u.size}, fewer than its minimum {u.minimum}")

        for u, m in zip(units, masks):
            if u.kind != "channels":
                check(u, m)
        small = copy.deepcopy(self)
        with torch.no_grad():
            small._fold_gates()
            small._absorb_constants(masks)
        channel = [i for i, u in enumerate(units) if u.kind == "channels" and not bool(masks[i].all())]
        roots = {i: small._channel_root(i) for i in channel}  # before blocks go: indices are of `self`
        gone = [i for i, (u, m) in enumerate(zip(units, masks)) if u.kind == "block" and not bool(m.any())]
        if gone:
            small._remove_blocks(gone)
        alive = {id(m) for m in small.modules()}
        channel = [i for i in channel if id(roots[i][0]) in alive]  # inner channels of a removed block went with it
        for i in channel:  # so their count does not matter; any other unit keeps its minimum
            check(units[i], masks[i])
        for p in small.parameters():
            p.requires_grad_(True)  # a frozen BN weight too: the graph traces every parameter
        if channel:
            device = next(small.parameters()).device
            example = torch.zeros(1, small.in_channels, small.input_size, small.input_size, device=device)
            was = small.training
            small.eval()
            with torch.enable_grad():  # the dependency graph is traced through autograd
                graph = tp.DependencyGraph().build_dependency(small, example_inputs=example, verbose=False)
            with torch.no_grad():
                for i in channel:
                    layer, fn = roots[i]
                    drop = (~masks[i].cpu()).nonzero().flatten().tolist()
                    graph.get_pruning_group(layer, fn, idxs=drop).prune()
            small.train(was)
        small._after_compact(masks)
        return small

    def _absorb_constants(self, masks) -> None:
        """Before channels go: move the output of each removed channel that is a constant (not
        zero) into the layer that reads it. Nothing by default: a closed gate zeroes its channel."""

    def _after_compact(self, masks) -> None:
        """Bookkeeping of a compacted copy (sizes of its units); nothing by default."""

    def first_masks(self, counts) -> list[torch.Tensor]:
        """Masks keeping the first `counts[u]` values of each unit (for rebuilt architectures)."""
        out = []
        for u, k in zip(self.units(), counts):
            m = torch.zeros(u.size, dtype=torch.bool)
            m[:int(k)] = True
            out.append(m)
        return out


def kept_by_name(names: list[str], counts: list[int], reference: list[str] | None) -> list[int]:
    """`counts` of the units `names`, listed by the `reference` network's units: a unit the
    network no longer has (a removed block, and the inner channels it took along) counts 0.
    Without reference names, `counts` as given."""
    if not reference:
        return list(counts)
    by = dict(zip(names, counts))
    return [by.get(n, 0) for n in reference]


def rebuilt(model: GatedNetwork, counts) -> GatedNetwork:
    """A plain network of `model`'s kind with `counts[u]` values of each unit (a block with 0 is
    its shortcut), freshly initialized: a pruned architecture trained from scratch, or a
    uniformly scaled one."""
    return reinitialize(model.compact(model.first_masks(counts)))


def reinitialize(model: nn.Module) -> nn.Module:
    """Fresh weights for every layer (a rebuilt architecture trained from scratch)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
    return model
