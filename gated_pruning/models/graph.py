"""Any CNN as a gated network, through Torch-Pruning's dependency graph (Fang et al., "DepGraph:
Towards Any Structural Pruning", CVPR 2023): a gate on every coupled channel group the graph finds.
`GraphNet` serves torchvision's models (`tv.py`, by name) and a user's own module (`build`, the
`model=custom` target: `model.net._target_=mypkg.module.Class`, instantiated by Hydra).

A group is a set of channels that must be removed together: a conv's outputs and the inputs of
every layer that reads them; in a residual network, every layer that writes into or reads from
one residual stream. Its gate (one value per channel) multiplies the output of every batch norm
in the group that produces those channels (`layers.GatedBatchNorm2d`, gates folded into the
affine parameters), so a residual-stream channel is gated once wherever it is written, and a
channel whose gate is zero is zero everywhere it flows. An architecture the graph cannot express
as such groups (channel concatenation, grouped convolutions that are not depthwise, no batch norm
at all) is refused with one line naming the layer; so is, in a user's network, a conv whose
outputs no batch norm writes and a network without a Linear classifier (torchvision's
squeeze-excitation bottlenecks, written by no batch norm, keep their width).
"""
from __future__ import annotations

import torch
from torch import nn

from gated_pruning.gates import Gate
from gated_pruning.models.layers import GatedBatchNorm2d
from gated_pruning.models.protocol import GatedNetwork, LayerCost, Unit


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


class GraphNet(GatedNetwork):
    """`net` (any CNN module) with a gate on each of its coupled channel groups. `label` starts
    every refusal (`model.name=resnet18`, `model.net=mypkg.Net`); `strict` refuses a group that no
    batch norm writes (a user's network: say so) where torchvision's keep their width (its
    squeeze-excitation bottlenecks)."""

    def __init__(self, net: nn.Module, label: str, gated: bool = True, gate_init: float = 1.0,
                 binarizer=None, gate_jitter: float = 0.0, min_keep: float = 0, bn_weight: bool = True,
                 input_size: int = 32, in_channels: int = 3, width: float = 1.0, strict: bool = False,
                 channel_gates: bool = True, block_gates: bool = False):
        super().__init__()
        self.name, self.input_size, self.in_channels, self.strict = label, int(input_size), in_channels, strict
        self.net = net
        groups = self._groups()
        if width != 1.0:  # every group at `width` of its channels, then fresh weights
            self._scale(groups, width)
            groups = self._groups()
        blocks = self._blocks() if block_gates else []
        inside = {bn for _, bn, _ in blocks}
        self.unit_names, self.bn_paths = [], []
        self.unit_gates = nn.ModuleList()
        for root, bns in groups if channel_gates else []:
            self.unit_names.append(root)
            self.bn_paths.append(sorted(bns, key=lambda b: (b in inside, b)))  # a root that no removed block takes along
            gate = Gate(self._module(bns[0]).num_features, gate_init, binarizer, gate_jitter, min_keep) if gated else None
            if gate is not None:
                self.unit_gates.append(gate)
            for path in bns:  # every batch norm that writes the group's channels: gated by one gate
                self._gate_norm(path, gate, bn_weight or gate is None)
        # SSS's block gates (Huang & Wang, ECCV 2018): a scalar on each residual branch, folded into
        # the branch's last batch norm; at 0 the block becomes its shortcut (`Skip`)
        self.block_paths, self.branch_convs = [p for p, _, _ in blocks], [c for _, _, c in blocks]
        self.block_gates = nn.ModuleList()
        for _, bn, _ in blocks:
            gate = Gate(1, gate_init, binarizer, gate_jitter) if gated else None
            norm = self._gate_norm(bn, None, True)
            if gate is not None:
                norm.gates.append(gate)
                self.block_gates.append(gate)
        self._table = None

    def _gate_norm(self, path: str, gate, affine_weight: bool) -> GatedBatchNorm2d:
        """The batch norm at `path` as a GatedBatchNorm2d (made once, its state kept), `gate` added."""
        old = self._module(path)
        if not isinstance(old, GatedBatchNorm2d):
            new = GatedBatchNorm2d(old.num_features, [], affine_weight=affine_weight)
            new.load_state_dict(old.state_dict())
            new.eps, new.momentum = old.eps, old.momentum
            self._set(path, new)
            old = new
        if gate is not None:
            old.gates.append(gate)
        return old

    def _blocks(self) -> list[tuple[str, str, list[str]]]:
        """(path, the branch's last batch norm, the branch's convs) of every residual block
        (torchvision's BasicBlock and Bottleneck), in network order."""
        from torchvision.models.resnet import BasicBlock, Bottleneck

        out = []
        for path, m in self.net.named_modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                last = "bn3" if isinstance(m, Bottleneck) else "bn2"
                convs = [f"{path}.{n}" for n, c in m.named_children() if isinstance(c, nn.Conv2d)]
                out.append((path, f"{path}.{last}", convs))
        if not out:
            raise ValueError(f"{self.name}: model.block_gates=true, but it has no residual block (torchvision's "
                             "BasicBlock or Bottleneck) to gate")
        return out

    # -- the graph ----------------------------------------------------------------------------
    def _module(self, path: str) -> nn.Module:
        return self.net.get_submodule(path)

    def _set(self, path: str, module: nn.Module) -> None:
        parent, _, leaf = path.rpartition(".")
        setattr(self.net.get_submodule(parent) if parent else self.net, leaf, module)

    def _graph(self):
        import torch_pruning as tp

        example = torch.zeros(1, self.in_channels, self.input_size, self.input_size,
                              device=next(self.net.parameters()).device)
        was = self.net.training
        self.net.eval()
        try:
            with torch.enable_grad():
                return tp.DependencyGraph().build_dependency(self.net, example_inputs=example, verbose=False)
        except Exception as e:  # noqa: BLE001 - the tracer's own failure, on one line
            raise ValueError(f"{self.name}: Torch-Pruning's dependency graph cannot trace it "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
        finally:
            self.net.train(was)

    def _groups(self) -> list[tuple[str, list[str]]]:
        """(root conv name, names of the batch norms that produce the group) per prunable group."""
        for n, m in self.net.named_modules():
            if isinstance(m, nn.Conv2d) and m.groups > 1 and not _is_depthwise(m):
                raise ValueError(f"{self.name}: {n} is a grouped convolution ({m.groups} groups) "
                                 "that is not depthwise; its channels cannot be pruned one by one")
        classifier = [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1:]
        if self.strict and not classifier:
            raise ValueError(f"{self.name}: no nn.Linear classifier: the output channels of its last layer would "
                             "be gated and pruned as features (end the network with a Linear layer)")
        graph = self._graph()
        names = {m: n for n, m in self.net.named_modules()}
        out = []
        for group in graph.get_all_groups(ignored_layers=classifier, root_module_types=[nn.Conv2d]):
            root = group[0].dep.target.module
            bns = [names[d.dep.target.module] for d in group
                   if isinstance(d.dep.target.module, nn.BatchNorm2d) and graph.is_out_channel_pruning_fn(d.dep.handler)]
            if (not bns or root not in names) and self.strict and root in names:
                raise ValueError(f"{self.name}: the output channels of {names[root]} are written by no batch norm, "
                                 "which a gate folds into: put a BatchNorm2d after it")
            if not bns or root not in names:
                continue  # no batch norm writes these channels: they keep their width
            size = self._module(bns[0]).num_features
            if any(isinstance(d.dep.target.module, nn.Conv2d) and d.dep.target.module.in_channels != size
                   and not graph.is_out_channel_pruning_fn(d.dep.handler) for d in group):
                raise ValueError(f"{self.name}: the channels of {names[root]} are concatenated with "
                                 "others; gates on concatenated groups are not supported")
            out.append((names[root], sorted(set(bns))))
        if not out:
            raise ValueError(f"{self.name}: no channel group is written by a batch norm: nothing to gate")
        order = {n: i for i, (n, _) in enumerate(self.net.named_modules())}
        return sorted(out, key=lambda g: order[g[0]])  # in the order the network is written

    def _scale(self, groups, width: float) -> None:
        import torch_pruning as tp

        from gated_pruning.models.protocol import reinitialize

        if not 0 < width <= 1:
            raise ValueError(f"model.width={width}: {self.name} is scaled down from its own widths (a cut of each "
                             "channel group); a width above 1 would need new channels it does not define")
        graph = self._graph()
        with torch.no_grad():
            for _, bns in groups:
                bn = self._module(bns[0])
                keep = max(1, int(round(width * bn.num_features)))
                if keep < bn.num_features:
                    graph.get_pruning_group(bn, tp.prune_batchnorm_out_channels,
                                            idxs=list(range(keep, bn.num_features))).prune()
        reinitialize(self.net)

    # -- the protocol -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def units(self) -> list[Unit]:
        return [Unit(name, "channels", self._module(bns[0]).num_features, 1)
                for name, bns in zip(self.unit_names, self.bn_paths)] + \
            [Unit(path, "block", 1, 0) for path in self.block_paths]

    def gates(self) -> list[Gate]:
        return list(self.unit_gates) + list(self.block_gates)

    def cost_table(self) -> list[LayerCost]:
        """Per conv and linear layer: kernel area x output pixels x (input channels / groups) x
        output channels, each channel count a unit's where a gated group holds it. Output sizes
        come from one traced forward pass (cached)."""
        if self._table is None:
            self._table = self._trace_costs()
        return self._table

    def _trace_costs(self) -> list[LayerCost]:
        pixels = {}
        hooks = [m.register_forward_hook(lambda m, i, o: pixels.__setitem__(m, o.shape[-2] * o.shape[-1] if o.dim() == 4 else 1))
                 for m in self.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        try:
            was = self.net.training
            self.net.eval()
            with torch.no_grad():
                self.net(torch.zeros(1, self.in_channels, self.input_size, self.input_size,
                                     device=next(self.net.parameters()).device))
            self.net.train(was)
        finally:
            for h in hooks:
                h.remove()
        where_in, where_out = {}, {}
        graph = self._graph()
        by_bn = {bn: u for u, bns in enumerate(self.bn_paths) for bn in bns}
        for group in graph.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]):
            names = {n for n, m in self.net.named_modules() for d in group if m is d.dep.target.module}
            unit = next((by_bn[n] for n in names if n in by_bn), None)
            if unit is None:
                continue
            for d in group:
                m = d.dep.target.module
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    (where_out if graph.is_out_channel_pruning_fn(d.dep.handler) else where_in)[m] = unit
        first_block = len(self.unit_names)  # a conv of a residual branch counts 0 once its block is gone
        in_branch = {self._module(c): first_block + k for k, convs in enumerate(self.branch_convs) for c in convs}
        table = []
        for m, hw in pixels.items():
            if isinstance(m, nn.Conv2d):
                coef = 2 * m.kernel_size[0] * m.kernel_size[1] * hw
                if _is_depthwise(m):
                    u = where_out.get(m, where_in.get(m))
                    table.append(LayerCost(coef, (u,)) if u is not None else LayerCost(coef * m.out_channels, ()))
                    continue
                c_in, c_out = m.in_channels // m.groups, m.out_channels
            else:
                coef, c_in, c_out = 2, m.in_features, m.out_features
            factors, sizes = (), self.sizes()
            for size, u in ((c_in, where_in.get(m)), (c_out, where_out.get(m))):
                if u is None:
                    coef *= size
                else:  # a linear layer after a flatten reads each channel at several positions
                    factors, coef = factors + (u,), coef * size // sizes[u]
            block = in_branch.get(m)
            table.append(LayerCost(coef, factors + ((block,) if block is not None else ())))
        return table

    def unit_norms(self, unit: int) -> list[nn.Module]:
        return [self._module(b) for b in self.bn_paths[unit]] if unit < len(self.unit_names) else []

    def _fold_gates(self) -> None:
        for m in self.net.modules():
            if isinstance(m, GatedBatchNorm2d):
                m.fold()
        self.unit_gates, self.block_gates = nn.ModuleList(), nn.ModuleList()

    def _channel_root(self, unit: int):
        import torch_pruning as tp

        return self._module(self.bn_paths[unit][0]), tp.prune_batchnorm_out_channels

    def _remove_blocks(self, units: list[int]) -> None:
        for u in units:
            path = self.block_paths[u - len(self.unit_names)]
            self._set(path, Skip(getattr(self._module(path), "downsample", None)))

    def _after_compact(self, masks) -> None:
        """The units that remain: a removed block's, and the channel groups it held, are gone."""
        def alive(path):
            try:
                return not isinstance(self._module(path), Skip)
            except AttributeError:
                return False

        kept = [(n, [b for b in bns if alive(b)]) for n, bns in zip(self.unit_names, self.bn_paths)]
        kept = [(n, bns) for n, bns in kept if bns]
        self.unit_names, self.bn_paths = [n for n, _ in kept], [bns for _, bns in kept]
        present = [k for k, p in enumerate(self.block_paths) if alive(p)]
        self.block_paths = [self.block_paths[k] for k in present]
        self.branch_convs = [self.branch_convs[k] for k in present]
        self._table = None


class Skip(nn.Module):
    """A residual block that its block gate removed: what is left of it, its shortcut and the
    ReLU after the sum (an identity shortcut of a ReLU's output is the identity)."""

    def __init__(self, shortcut: nn.Module | None = None):
        super().__init__()
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.shortcut(x))


def build(net: nn.Module, num_classes: int = 100, gated: bool = True, gate_init: float = 1.0, binarizer=None,
          gate_jitter: float = 0.0, min_keep: float = 0, bn_weight: bool = True, width: float = 1.0,
          gate_position: str = "bn", input_size: int = 32, channel_gates: bool = True,
          block_gates: bool = False) -> GraphNet:
    """A user's network (`model.net`, built by Hydra from its `_target_` and arguments) with gates
    on its channel groups: the `model=custom` target. Its output must have `num_classes` logits."""
    label = f"model.net={type(net).__module__}.{type(net).__qualname__}"
    if not isinstance(net, nn.Module):
        raise ValueError(f"model.net builds a {type(net).__name__}, not a torch.nn.Module")
    if gate_position != "bn":
        raise ValueError(f"model.gate_position={gate_position}: model=custom folds each gate into every batch norm "
                         "of its channel group; set model.gate_position=bn (method=sss and method=binary set relu)")
    _check_outputs(net, label, num_classes, input_size)
    return GraphNet(net, label, gated, gate_init, binarizer, gate_jitter, min_keep, bn_weight, input_size,
                    width=width, strict=True, channel_gates=channel_gates, block_gates=block_gates)


def _check_outputs(net: nn.Module, label: str, num_classes: int, input_size: int) -> None:
    """One forward pass of a zero image: `num_classes` logits, or one line saying what came out."""
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, 3, input_size, input_size, device=device))
    except Exception as e:  # noqa: BLE001 - the user's forward, on one line
        raise ValueError(f"{label}: its forward pass fails on a (1, 3, {input_size}, {input_size}) image "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    finally:
        net.train(was)
    if not torch.is_tensor(out) or tuple(out.shape) != (1, num_classes):
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"{label}: it outputs {shape} for one image, the data set has {num_classes} classes: "
                         f"give the network {num_classes} outputs (e.g. +model.net.num_classes={num_classes})")
