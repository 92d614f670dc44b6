"""Weight-space symmetry: which axes of which tensors share a permutation of hidden units.

Permuting the hidden units of a layer — the rows of its weight and bias, the matching BatchNorm or
LayerNorm entries (running statistics included), and the matching input columns of every layer
that reads them — leaves the function of the network unchanged. A :class:`PermutationSpec` lists,
for one model, the permutation *groups* (one per independently permutable set of units, with its
size) and, for every tensor of the state dict, which group acts on each of its axes.

Three refinements over "one group per axis" cover the zoo:

* **Concatenated groups.** An axis may be the concatenation of several groups. ResNet-20's
  zero-padding shortcut (option A) writes the block input into the middle channels of the wider
  output and zeros elsewhere, so the output stream's permutation must act on the middle channels
  as the input stream's does, while the padded channels may be permuted among themselves. The
  spec restricts that further to two free groups, the padding before and the padding after the
  copied channels (a permutation never moves a padded channel from one side to the other).
* **Views.** A tensor may be reshaped (row-major) before its axes are named: a ViT's fused qkv
  weight (3·dim × dim) is viewed as (3, heads, head_dim, dim), so that heads are permuted as
  blocks and the dimensions within a head by one shared permutation, the same for q, k and v
  and for the input columns of the output projection. (q and k could have a within-head
  permutation of their own, independent of v's; the spec uses one subgroup for all three.)
* **Shared groups.** Residual connections add a block's output to its input, so every tensor
  that reads or writes the residual stream of a stage (or, in a ViT, of the whole network,
  position embedding, class token and patch embedding included) shares one group.

:func:`permutation_spec` recognises every zoo architecture (also inside the
:class:`~modeconn.models.normalize.NormalizedModel` wrapper the registry builds, whose names carry
the ``net.`` prefix) and plain ``nn.Sequential`` chains of linear, convolutional, BatchNorm and
element-wise layers. A permutation of group g is a LongTensor ``p`` of its size: unit i of the
permuted model is unit ``p[i]`` of the original (:func:`apply_permutation`).

A spec also names *probes* per group — module outputs whose features are the group's units — for
activation matching (:mod:`modeconn.connectivity.alignment`); a group without probes (attention
heads) is matched on weights.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from modeconn.errors import ModeconnError
from modeconn.models.normalize import NormalizedModel
from modeconn.models.zoo import (
    VGG,
    BasicBlock,
    CifarResNet,
    LeNet,
    PadShortcut,
    PreActBlock,
    PreActResNet,
    TransformerBlock,
    VisionTransformer,
)

#: Groups whose units are concatenated along one axis; None: the axis is not permuted.
Axis = tuple[str, ...] | None
Permutations = dict[str, torch.Tensor]
StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class TensorAxes:
    """How one tensor is permuted: the groups along each axis of its (optional) row-major view."""

    axes: tuple[Axis, ...]
    view: tuple[int, ...] | None = None

    @property
    def permuted(self) -> bool:
        """Whether any axis of the tensor is permuted."""
        return any(axis for axis in self.axes)


@dataclass(frozen=True)
class Probe:
    """A module whose output carries a group's units along its feature axis, from ``offset``.

    The feature axis is 1 for NCHW maps and the last one otherwise (linear layers, tokens).
    """

    module: str
    offset: int = 0


@dataclass
class PermutationSpec:
    """Permutation groups (name → size) and, per state-dict tensor, the groups on its axes.

    ``buffers`` names the tensors that are buffers (BatchNorm statistics): they are permuted with
    the rest but do not take part in weight matching. ``probes`` lists, per group, the module
    outputs that activation matching correlates. ``blocks`` maps a group whose units are blocks
    (attention heads) to the group that permutes the entries inside every block (within-head
    dimensions); wherever the outer group acts, the inner one acts on the next axis, alone.
    """

    groups: dict[str, int]
    tensors: dict[str, TensorAxes]
    buffers: frozenset[str] = frozenset()
    probes: dict[str, tuple[Probe, ...]] = field(default_factory=dict)
    blocks: dict[str, str] = field(default_factory=dict)
    architecture: str = ""

    def occurrences(self, group: str) -> list[tuple[str, int, int]]:
        """Where ``group`` acts: (tensor name, axis of the view, offset along that axis)."""
        found = []
        for name, entry in self.tensors.items():
            for k, axis in enumerate(entry.axes):
                offset = 0
                for g in axis or ():
                    if g == group:
                        found.append((name, k, offset))
                    offset += self.groups[g]
        return found

    def axis_index(self, axis: tuple[str, ...], perms: Permutations) -> torch.Tensor:
        """The index along an axis that applies each of its groups' permutations to its range."""
        parts, offset = [], 0
        for group in axis:
            parts.append(perms[group].long().cpu() + offset)
            offset += self.groups[group]
        return torch.cat(parts)

    def check(self, state: StateDict) -> None:
        """Raise unless the spec names exactly the tensors of ``state`` with consistent sizes."""
        missing = [name for name in self.tensors if name not in state]
        if missing:
            raise ModeconnError(
                f"the permutation spec names tensor '{missing[0]}', which is not in the model"
            )
        extra = [name for name in state if name not in self.tensors]
        if extra:
            raise ModeconnError(f"the permutation spec does not cover tensor '{extra[0]}'")
        for name, entry in self.tensors.items():
            self._check_tensor(name, entry, tuple(state[name].shape))
        used = {g for entry in self.tensors.values() for axis in entry.axes for g in axis or ()}
        unused = set(self.groups) - used
        if unused:
            raise ModeconnError(f"permutation group '{sorted(unused)[0]}' acts on no tensor")
        for outer, inner in self.blocks.items():
            for name, k, _ in self.occurrences(outer):
                axes = self.tensors[name].axes
                if k + 1 >= len(axes) or axes[k + 1] != (inner,):
                    raise ModeconnError(
                        f"in '{name}' the blocks of group '{outer}' are not followed by an axis "
                        f"of group '{inner}' alone"
                    )

    def _check_tensor(self, name: str, entry: TensorAxes, shape: tuple[int, ...]) -> None:
        view = entry.view or shape
        if math.prod(view) != math.prod(shape) or len(entry.axes) != len(view):
            raise ModeconnError(
                f"the permutation spec of '{name}' (view {view}, {len(entry.axes)} axes) does not "
                f"fit its shape {shape}"
            )
        for k, axis in enumerate(entry.axes):
            size = sum(self.groups[g] for g in axis or ())
            if axis and size != view[k]:
                raise ModeconnError(
                    f"axis {k} of '{name}' has {view[k]} entries but its permutation groups "
                    f"{list(axis)} have {size}"
                )


# --- permutations ------------------------------------------------------------------------------


def identity_permutations(spec: PermutationSpec) -> Permutations:
    """The identity permutation of every group."""
    return {g: torch.arange(n) for g, n in spec.groups.items()}


def random_permutations(spec: PermutationSpec, seed: int = 0) -> Permutations:
    """A uniformly random permutation of every group, drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return {g: torch.randperm(n, generator=gen) for g, n in spec.groups.items()}


def invert_permutations(perms: Permutations) -> Permutations:
    """The inverse of every permutation: applying it undoes :func:`apply_permutation`."""
    return {g: torch.argsort(p) for g, p in perms.items()}


def check_permutations(spec: PermutationSpec, perms: Permutations) -> None:
    """Raise unless ``perms`` holds a permutation of the right size for every group."""
    for group, size in spec.groups.items():
        if group not in perms:
            raise ModeconnError(f"no permutation given for group '{group}'")
        p = perms[group].long().cpu()
        if p.shape != (size,) or not torch.equal(torch.sort(p).values, torch.arange(size)):
            raise ModeconnError(f"the entry for group '{group}' is not a permutation of {size}")


def permuted_view(
    spec: PermutationSpec,
    name: str,
    tensor: torch.Tensor,
    perms: Permutations,
    skip: Collection[int] = (),
) -> torch.Tensor:
    """``tensor`` in its spec view with every axis except those in ``skip`` permuted."""
    entry = spec.tensors[name]
    view = tensor.reshape(entry.view or tensor.shape)
    for k, axis in enumerate(entry.axes):
        if axis and k not in skip:
            view = view.index_select(k, spec.axis_index(axis, perms).to(view.device))
    return view


def apply_permutation(
    spec: PermutationSpec, state: StateDict, perms: Permutations
) -> dict[str, torch.Tensor]:
    """A new state dict: ``state`` with every group's permutation applied to its tensors.

    Loaded into the same architecture, it computes the same function as ``state`` (up to
    floating-point summation order). Tensors the spec does not permute are passed on unchanged.
    """
    check_permutations(spec, perms)
    out = dict(state)
    for name, entry in spec.tensors.items():
        if entry.permuted:
            tensor = state[name]
            out[name] = permuted_view(spec, name, tensor, perms).reshape(tensor.shape).clone()
    return out


# --- building specs ----------------------------------------------------------------------------

#: Layers that act on each feature (channel) separately and have no parameters: they pass a
#: group on unchanged. ``nn.Flatten`` turns channels into blocks of features (see ``_chain``).
_PASS_THROUGH = (
    nn.Identity,
    nn.ReLU,
    nn.GELU,
    nn.LeakyReLU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Dropout,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


class _Builder:
    """Collects groups, tensor axes and probes while an architecture is walked in forward order."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.groups: dict[str, int] = {}
        self.tensors: dict[str, TensorAxes] = {}
        self.probes: dict[str, list[Probe]] = {}
        self.blocks: dict[str, str] = {}

    def group(self, name: str, size: int) -> str:
        """A new group of ``size`` units, named after the module that produces them."""
        full = self.prefix + name
        if full in self.groups:
            raise ModeconnError(f"permutation group '{full}' defined twice")
        self.groups[full] = size
        return full

    def tensor(self, name: str, *axes: Axis, view: tuple[int, ...] | None = None) -> None:
        self.tensors[self.prefix + name] = TensorAxes(tuple(axes), view)

    def probe(self, axis: Axis, module: str) -> None:
        """``module``'s output carries the groups of ``axis`` (concatenated) as its features."""
        offset = 0
        for group in axis or ():
            self.probes.setdefault(group, []).append(Probe(self.prefix + module, offset))
            offset += self.groups[group]

    def size(self, axis: Axis) -> int | None:
        return None if axis is None else sum(self.groups[g] for g in axis)

    def weight_layer(self, name: str, module: nn.Module, out: Axis, inp: Axis) -> None:
        """A linear or convolutional layer writing ``out`` from ``inp``.

        A linear layer whose input is a flattened NCHW map (more inputs than the input groups'
        units) sees each channel as a block of H·W consecutive features: its weight is viewed as
        (out, channels, H·W).
        """
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise ModeconnError(
                    f"the permutation spec cannot handle grouped conv '{self.prefix}{name}'"
                )
            self.tensor(f"{name}.weight", out, inp, None, None)
        elif isinstance(module, nn.Linear):
            channels = self.size(inp)
            if channels is None or channels == module.in_features:
                self.tensor(f"{name}.weight", out, inp)
            elif module.in_features % channels == 0:
                view = (module.out_features, channels, module.in_features // channels)
                self.tensor(f"{name}.weight", out, inp, None, view=view)
            else:
                raise ModeconnError(
                    f"layer '{self.prefix}{name}' reads {module.in_features} features, which are "
                    f"not whole blocks of the {channels} channels before it"
                )
        else:
            raise ModeconnError(f"layer '{self.prefix}{name}' is not nn.Linear or nn.Conv2d")
        if module.bias is not None:
            self.tensor(f"{name}.bias", out)

    def norm(self, name: str, module: nn.Module, axis: Axis) -> None:
        """A BatchNorm or LayerNorm over ``axis``: affine parameters and running statistics."""
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if getattr(module, attr, None) is not None:
                self.tensor(f"{name}.{attr}", axis)
        if getattr(module, "num_batches_tracked", None) is not None:
            self.tensor(f"{name}.num_batches_tracked")

    def build(self, architecture: str, buffers: set[str]) -> PermutationSpec:
        probes = {g: tuple(p) for g, p in self.probes.items()}
        return PermutationSpec(
            self.groups, self.tensors, frozenset(buffers), probes, self.blocks, architecture
        )


def _unknown_layer(b: _Builder, name: str, module: nn.Module) -> ModeconnError:
    return ModeconnError(
        f"cannot build a permutation spec: layer '{b.prefix}{name}' is a "
        f"{type(module).__name__}, which it does not know (it knows Linear, Conv2d, BatchNorm, "
        "element-wise activations, dropout, pooling and Flatten)"
    )


def _chain(b: _Builder, layers: list[tuple[str, nn.Module]], current: Axis = None) -> None:
    """A feed-forward chain: each linear/conv layer but the last starts a new group.

    Normalisation and element-wise layers keep the group; the last of them before the next
    weight layer (the post-activation features) is the group's probe — unless a ``Flatten``
    came first, after which a module's features are no longer the group's units.
    """
    weight_layers = [n for n, m in layers if isinstance(m, nn.Linear | nn.Conv2d)]
    if not weight_layers:
        raise ModeconnError("cannot build a permutation spec: the model has no weight layer")
    flat = False
    for name, module in layers:
        if isinstance(module, nn.Linear | nn.Conv2d):
            size = module.out_features if isinstance(module, nn.Linear) else module.out_channels
            out = None if name == weight_layers[-1] else (b.group(name, size),)
            b.weight_layer(name, module, out, current)
            current, flat = out, False
        elif isinstance(module, _BatchNorm):
            b.norm(name, module, current)
        elif isinstance(module, nn.Flatten) and module.start_dim == 1:
            flat = True
            continue
        elif not isinstance(module, _PASS_THROUGH):
            raise _unknown_layer(b, name, module)
        if current is not None and not flat:
            b.probes[current[0]] = [Probe(b.prefix + name)]


def _sequential(b: _Builder, net: nn.Sequential) -> None:
    _chain(b, list(net.named_children()))


def _lenet(b: _Builder, net: LeNet) -> None:
    order = ("conv1", "bn1", "pool1", "conv2", "bn2", "pool2", "fc1", "fc2")
    _chain(b, [(name, getattr(net, name)) for name in order])


def _vgg(b: _Builder, net: VGG) -> None:
    layers = [(f"features.{n}", m) for n, m in net.features.named_children()]
    layers += [(f"classifier.{n}", m) for n, m in net.classifier.named_children()]
    _chain(b, layers)


def _preact_block(b: _Builder, name: str, block: PreActBlock, stream: Axis) -> Axis:
    """BN-ReLU-conv, BN-ReLU-conv plus the shortcut; returns the output stream."""
    b.norm(f"{name}.bn1", block.bn1, stream)
    hidden = (b.group(f"{name}.conv1", block.conv1.out_channels),)
    b.weight_layer(f"{name}.conv1", block.conv1, hidden, stream)
    b.norm(f"{name}.bn2", block.bn2, hidden)
    b.probe(hidden, f"{name}.bn2")
    out = stream
    if block.shortcut is not None:
        out = (b.group(f"{name}.shortcut", block.shortcut.out_channels),)
        b.weight_layer(f"{name}.shortcut", block.shortcut, out, stream)
    b.weight_layer(f"{name}.conv2", block.conv2, out, hidden)
    b.probe(out, name)
    return out


def _preact_resnet(b: _Builder, net: PreActResNet) -> None:
    stream: Axis = (b.group("conv1", net.conv1.out_channels),)
    b.weight_layer("conv1", net.conv1, stream, None)
    b.probe(stream, "conv1")
    for k, block in enumerate(net.blocks):
        stream = _preact_block(b, f"blocks.{k}", block, stream)
    b.norm("bn", net.bn, stream)
    b.weight_layer("fc", net.fc, None, stream)


def _shortcut_stream(b: _Builder, name: str, shortcut: nn.Module, stream: Axis) -> Axis:
    """The stream a post-activation block's shortcut produces from ``stream``."""
    if isinstance(shortcut, nn.Identity):
        return stream
    if isinstance(shortcut, PadShortcut):  # copied channels keep their groups, padding gets new
        before = shortcut.extra_channels // 2
        after = shortcut.extra_channels - before
        pads_before = (b.group(f"{name}.pad_before", before),) if before else ()
        pads_after = (b.group(f"{name}.pad_after", after),) if after else ()
        return (*pads_before, *(stream or ()), *pads_after)
    if isinstance(shortcut, nn.Sequential) and len(shortcut) == 2:
        conv, bn = shortcut
        out = (b.group(f"{name}.0", conv.out_channels),)
        b.weight_layer(f"{name}.0", conv, out, stream)
        b.norm(f"{name}.1", bn, out)
        return out
    raise _unknown_layer(b, name, shortcut)


def _basic_block(b: _Builder, name: str, block: BasicBlock, stream: Axis) -> Axis:
    """conv-BN-ReLU-conv-BN plus the shortcut; returns the output stream."""
    hidden = (b.group(f"{name}.conv1", block.conv1.out_channels),)
    b.weight_layer(f"{name}.conv1", block.conv1, hidden, stream)
    b.norm(f"{name}.bn1", block.bn1, hidden)
    b.probe(hidden, f"{name}.bn1")
    out = _shortcut_stream(b, f"{name}.shortcut", block.shortcut, stream)
    b.weight_layer(f"{name}.conv2", block.conv2, out, hidden)
    b.norm(f"{name}.bn2", block.bn2, out)
    b.probe(out, name)
    return out


def _cifar_resnet(b: _Builder, net: CifarResNet) -> None:
    stream: Axis = (b.group("conv1", net.conv1.out_channels),)
    b.weight_layer("conv1", net.conv1, stream, None)
    b.norm("bn1", net.bn1, stream)
    b.probe(stream, "bn1")
    for k, block in enumerate(net.blocks):
        stream = _basic_block(b, f"blocks.{k}", block, stream)
    b.weight_layer("fc", net.fc, None, stream)


def _transformer_block(b: _Builder, name: str, block: TransformerBlock, res: Axis) -> None:
    """Attention heads (as blocks) and within-head dimensions, MLP hidden units, norms."""
    attn, dim = block.attn, block.attn.proj.in_features
    head_dim = dim // attn.heads
    heads = (b.group(f"{name}.attn.heads", attn.heads),)
    dims = (b.group(f"{name}.attn.head_dims", head_dim),)
    b.blocks[heads[0]] = dims[0]
    b.norm(f"{name}.norm1", block.norm1, res)
    b.tensor(f"{name}.attn.qkv.weight", None, heads, dims, res, view=(3, attn.heads, head_dim, dim))
    b.tensor(f"{name}.attn.qkv.bias", None, heads, dims, view=(3, attn.heads, head_dim))
    b.tensor(f"{name}.attn.proj.weight", res, heads, dims, view=(dim, attn.heads, head_dim))
    b.tensor(f"{name}.attn.proj.bias", res)
    b.norm(f"{name}.norm2", block.norm2, res)
    fc1, _, fc2 = block.mlp
    hidden = (b.group(f"{name}.mlp.0", fc1.out_features),)
    b.weight_layer(f"{name}.mlp.0", fc1, hidden, res)
    b.weight_layer(f"{name}.mlp.2", fc2, res, hidden)
    b.probe(hidden, f"{name}.mlp.1")
    b.probe(res, name)


def _vit(b: _Builder, net: VisionTransformer) -> None:
    res: Axis = (b.group("residual", net.patch_embed.out_channels),)
    b.weight_layer("patch_embed", net.patch_embed, res, None)
    b.tensor("cls_token", None, None, res)
    b.tensor("pos_embed", None, None, res)
    for k, block in enumerate(net.blocks):
        _transformer_block(b, f"blocks.{k}", block, res)
    b.norm("norm", net.norm, res)
    b.weight_layer("head", net.head, None, res)


_BUILDERS = {
    nn.Sequential: _sequential,
    LeNet: _lenet,
    VGG: _vgg,
    PreActResNet: _preact_resnet,
    CifarResNet: _cifar_resnet,
    VisionTransformer: _vit,
}


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation spec of a zoo model (wrapped in ``NormalizedModel`` or bare).

    Raises :class:`ModeconnError` for an architecture it does not know (a user's own module) or a
    chain with a layer it cannot permute through; the spec is checked against the model's state
    dict before it is returned, so it covers every tensor with consistent sizes.
    """
    net, prefix = (model.net, "net.") if isinstance(model, NormalizedModel) else (model, "")
    builder = _BUILDERS.get(type(net))
    if builder is None:
        raise ModeconnError(
            f"modeconn has no permutation spec for {type(net).__name__} models (it knows "
            "nn.Sequential chains and the zoo's LeNet, VGG, PreActResNet, CifarResNet and "
            "VisionTransformer)"
        )
    b = _Builder(prefix)
    builder(b, net)
    state = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    spec = b.build(type(net).__name__, set(state) - params)
    spec.check(state)
    return spec


__all__ = [
    "Axis",
    "PermutationSpec",
    "Permutations",
    "Probe",
    "TensorAxes",
    "apply_permutation",
    "check_permutations",
    "identity_permutations",
    "invert_permutations",
    "permutation_spec",
    "permuted_view",
    "random_permutations",
]
