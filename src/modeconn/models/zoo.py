"""Built-in architectures, sized from the input shape.

Every factory takes ``in_channels``, ``image_size`` (square images) and ``num_classes`` plus its own
keyword arguments, and works from 8×8 digits up to 32×32 CIFAR images: poolings and strided stages
that would shrink a 1×1 map are skipped, and classifiers are sized from what is left.

Two rules keep the models usable by the rest of modeconn:

* ``torch.func.functional_call`` must work: forward reads parameters only through submodules and
  changes no Python state, so a curve point φ(t) can be evaluated on any of them;
* double backprop must work (input-Hessian-vector products, weight-Hessian spectra): only ReLU,
  GELU, max/average pooling, BatchNorm, LayerNorm and attention through the composite "math"
  kernel, all of which have second derivatives in autograd.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.models.pooling import MaxPool2x2
from modeconn.models.registry import register_model


def _check_positive(value: object, name: str) -> int:
    """Check a user-given size (channels, widths, depths)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(name, f"{name} must be a positive integer, got {value!r}")
    return value


def _pool(size: int) -> tuple[nn.Module, int]:
    """2×2 max pooling and the size after it, or nothing once the map is 1×1."""
    if size < 2:
        return nn.Identity(), size
    return MaxPool2x2(), size // 2


def _stride(size: int, stride: int) -> tuple[int, int]:
    """The stride to use at a downsampling stage and the size after it (stride 1 once 1×1)."""
    if size < 2:
        return 1, size
    return stride, (size - 1) // stride + 1


def _conv3x3(in_planes: int, planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3×3 convolution with padding 1 (size-preserving at stride 1)."""
    return nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)


def _init_conv_bn(model: nn.Module) -> None:
    """He initialisation for ReLU convnets: convs N(0, 2/fan_out), BN (1, 0), biases zero."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------- MLP


@register_model("mlp")
def mlp(
    *, in_channels: int, image_size: int, num_classes: int, hidden: Sequence[int] = (256, 128)
) -> nn.Module:
    """Fully connected ReLU network on the flattened image; ``hidden`` lists the layer widths."""
    if isinstance(hidden, int):
        hidden = (hidden,)
    widths = [in_channels * image_size**2, *(_check_positive(h, "hidden") for h in hidden)]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------- LeNet


class LeNet(nn.Module):
    """Two conv-(BN)-ReLU-maxpool stages (32 and 64 channels) and two linear layers (128, classes).

    A modern LeNet: strong enough for Fashion-MNIST (about 0.9 test accuracy within a few epochs),
    small enough for CPU. Optional BatchNorm after each convolution.
    """

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, 32, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(32) if batch_norm else nn.Identity()
        self.pool1, size = _pool(image_size)
        self.conv2 = _conv3x3(32, 64, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(64) if batch_norm else nn.Identity()
        self.pool2, size = _pool(size)
        self.fc1 = nn.Linear(64 * size * size, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for normalised images.

        Each stage pools before its ReLU: ReLU is monotone, so ``relu(maxpool(x))`` equals
        ``maxpool(relu(x))`` to the bit, gradients included, and the ReLU then touches a quarter
        of the elements (on CPU it took a quarter of a lenet's inference time before the pool).
        """
        x = F.relu(self.pool1(self.bn1(self.conv1(x))))
        x = F.relu(self.pool2(self.bn2(self.conv2(x))))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@register_model("lenet")
def lenet(
    *, in_channels: int, image_size: int, num_classes: int, batch_norm: bool = False
) -> nn.Module:
    """:class:`LeNet`, the default CNN for Fashion-MNIST and digits."""
    return LeNet(in_channels, image_size, num_classes, batch_norm=batch_norm)


# --------------------------------------------------------------------------------------- VGG

_VGG_STAGES: dict[int, tuple[tuple[int, ...], ...]] = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


class VGG(nn.Module):
    """CIFAR-style VGG as in the mode-connectivity reference code (Garipov et al. 2018).

    Five stages of 3×3 conv (+BN) + ReLU, each followed by 2×2 max pooling while the map is larger
    than 1×1, then dropout-linear-ReLU, dropout-linear-ReLU, linear. ``width`` is the first stage's
    channel count (64 in the paper); later stages scale with it, as does the classifier (8×width).
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]],
        in_channels: int,
        image_size: int,
        num_classes: int,
        batch_norm: bool,
        width: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for stage in stages:
            for paper_channels in stage:
                out = max(1, paper_channels * width // 64)
                layers.append(_conv3x3(channels, out, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU())
                channels = out
            if size >= 2:  # pool while the map is larger than 1×1
                layers.append(MaxPool2x2())
                size //= 2
        self.features = nn.Sequential(*layers)
        hidden = 8 * width
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * size * size, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for normalised images."""
        return self.classifier(self.features(x))


def _vgg(depth: int, batch_norm: bool, width: int, dropout: float, **shape: int) -> nn.Module:
    """Build VGG-``depth`` after checking the user's kwargs."""
    _check_positive(width, "width")
    if not 0.0 <= dropout < 1.0:
        raise InvalidArgument("dropout", f"dropout must be in [0, 1), got {dropout}")
    return VGG(_VGG_STAGES[depth], batch_norm=batch_norm, width=width, dropout=dropout, **shape)


@register_model("vgg11")
def vgg11(
    *, in_channels: int, image_size: int, num_classes: int, width: int = 64, dropout: float = 0.5
) -> nn.Module:
    """VGG-11 without BatchNorm."""
    shape = dict(in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    return _vgg(11, False, width, dropout, **shape)


@register_model("vgg16")
def vgg16(
    *, in_channels: int, image_size: int, num_classes: int, width: int = 64, dropout: float = 0.5
) -> nn.Module:
    """VGG-16 without BatchNorm (the reference architecture of Zhao et al. 2020)."""
    shape = dict(in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    return _vgg(16, False, width, dropout, **shape)


@register_model("vgg11_bn")
def vgg11_bn(
    *, in_channels: int, image_size: int, num_classes: int, width: int = 64, dropout: float = 0.5
) -> nn.Module:
    """VGG-11 with BatchNorm after every convolution."""
    shape = dict(in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    return _vgg(11, True, width, dropout, **shape)


@register_model("vgg16_bn")
def vgg16_bn(
    *, in_channels: int, image_size: int, num_classes: int, width: int = 64, dropout: float = 0.5
) -> nn.Module:
    """VGG-16 with BatchNorm after every convolution."""
    shape = dict(in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    return _vgg(16, True, width, dropout, **shape)


# ------------------------------------------------------------- pre-activation and wide ResNets


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b): BN-ReLU-conv, BN-ReLU-[dropout]-conv.

    The shortcut is the identity, or a 1×1 convolution of the pre-activated input when the shape
    changes. With dropout it is the wide-ResNet block (Zagoruyko & Komodakis 2016).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(planes, planes)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update of ``x``."""
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut


class PreActResNet(nn.Module):
    """3×3 stem conv, stages of :class:`PreActBlock`, final BN-ReLU, global average pool, linear."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        stem_width: int,
        stages: Sequence[tuple[int, int, int]],
        dropout: float = 0.0,
    ) -> None:
        """``stages`` lists (number of blocks, width, stride) per stage."""
        super().__init__()
        self.conv1 = _conv3x3(in_channels, stem_width)
        blocks: list[nn.Module] = []
        planes, size = stem_width, image_size
        for num_blocks, width, stage_stride in stages:
            stride, size = _stride(size, stage_stride)
            for i in range(num_blocks):
                blocks.append(PreActBlock(planes, width, stride if i == 0 else 1, dropout))
                planes = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(planes)
        self.fc = nn.Linear(planes, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for normalised images."""
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("preact_resnet18")
def preact_resnet18(
    *, in_channels: int, image_size: int, num_classes: int, width: int = 64
) -> nn.Module:
    """Pre-activation ResNet-18 with a CIFAR stem; stage widths width × (1, 2, 4, 8)."""
    _check_positive(width, "width")
    stages = [(2, width, 1), (2, 2 * width, 2), (2, 4 * width, 2), (2, 8 * width, 2)]
    return PreActResNet(in_channels, image_size, num_classes, width, stages)


@register_model("wide_resnet")
def wide_resnet(
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    depth: int = 16,
    widen_factor: int = 4,
    dropout: float = 0.0,
) -> nn.Module:
    """WRN-depth-widen_factor (Zagoruyko & Komodakis 2016); depth must be 6n + 4."""
    _check_positive(widen_factor, "widen_factor")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise InvalidArgument(
            None, f"wide_resnet depth must be 6n + 4 with n >= 1 (10, 16, 28…), got {depth}"
        )
    if not 0.0 <= dropout < 1.0:
        raise InvalidArgument("dropout", f"dropout must be in [0, 1), got {dropout}")
    n = (depth - 4) // 6
    stages = [(n, 16 * widen_factor, 1), (n, 32 * widen_factor, 2), (n, 64 * widen_factor, 2)]
    return PreActResNet(in_channels, image_size, num_classes, 16, stages, dropout)


# ---------------------------------------------------------------------------- CIFAR ResNet-20


class PadShortcut(nn.Module):
    """Option-A shortcut (He et al. 2016a): subsample, then zero-pad the new channels."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Match the block's output shape."""
        x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, before, self.extra_channels - before))


class BasicBlock(nn.Module):
    """Post-activation basic block: conv-BN-ReLU-conv-BN, add the shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = PadShortcut(planes - in_planes, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update of ``x``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016a: 3×3 conv w, three stages (w, 2w, 4w) of n blocks
    (w = 16 in the paper; a smaller ``width`` gives a narrow ResNet)."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        depth: int,
        shortcut: str,
        width: int = 16,
    ) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        planes, size = width, image_size
        stages = ((width, 1), (2 * width, 2), (4 * width, 2))
        for stage_width, stage_stride in stages:
            stride, size = _stride(size, stage_stride)
            for i in range(n):
                blocks.append(BasicBlock(planes, stage_width, stride if i == 0 else 1, shortcut))
                planes = stage_width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(planes, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for normalised images."""
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("resnet20")
def resnet20(
    *, in_channels: int, image_size: int, num_classes: int, shortcut: str = "A", width: int = 16
) -> nn.Module:
    """ResNet-20 for CIFAR; ``shortcut`` "A" (zero padding, as in the paper) or "B" (1×1 conv);
    ``width`` the first stage's channels (16 in the paper; 8 is a narrow ResNet-20)."""
    if shortcut not in ("A", "B"):
        raise InvalidArgument(None, f"resnet20 shortcut must be 'A' or 'B', got {shortcut!r}")
    width = _check_positive(width, "width")
    return CifarResNet(in_channels, image_size, num_classes, 20, shortcut, width)


# ---------------------------------------------------------------------- Vision Transformer


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection.

    Attention goes through ``scaled_dot_product_attention`` pinned to the "math" backend: the fused
    flash / memory-efficient kernels have no double backward, which input- and weight-Hessian-vector
    products need. For a ViT-Tiny on 32×32 images (65 tokens) the cost is small.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the tokens of ``x`` (batch, tokens, dim)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        with sdpa_kernel(SDPBackend.MATH):
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One encoder layer."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT (Dosovitskiy et al. 2021): patch embedding, cls token, learned positions, encoder."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(
            *(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Truncated-normal(0.02) embeddings and linear weights, zero biases (as in timm)."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the final cls token."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def _patch_size(image_size: int, requested: int | None) -> int:
    """The requested patch size (which must divide the image), or by default 4 or the largest
    divisor of the image size below it."""
    if requested is None:
        return max(p for p in range(1, 5) if image_size % p == 0)
    _check_positive(requested, "patch_size")
    if image_size % requested:
        raise ModeconnError(f"patch_size {requested} does not divide image_size {image_size}")
    return requested


@register_model("vit_tiny")
def vit_tiny(
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    patch_size: int | None = None,
    dim: int = 192,
    depth: int = 6,
    heads: int = 3,
    mlp_ratio: float = 4.0,
) -> nn.Module:
    """ViT-Tiny for small images: width 192, 3 heads, 6 layers, 4×4 patches by default."""
    for value, name in ((dim, "dim"), (depth, "depth"), (heads, "heads")):
        _check_positive(value, name)
    if dim % heads:
        raise ModeconnError(f"vit_tiny dim {dim} is not divisible by heads {heads}")
    if mlp_ratio <= 0:
        raise InvalidArgument("mlp_ratio", f"mlp_ratio must be positive, got {mlp_ratio}")
    patch = _patch_size(image_size, patch_size)
    return VisionTransformer(
        in_channels, image_size, num_classes, patch, dim, depth, heads, mlp_ratio
    )
