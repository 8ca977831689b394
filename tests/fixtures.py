"""Small nn.Module fixtures for fxprune tests: architecture families, per-op rule cases, bad models."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from fxprune.models import BasicBlock, Bottleneck, ResNet

__all__ = [
    "ATTENTION_MODELS",
    "BAD_MODELS",
    "GQAttention",
    "MHAEncoder",
    "SDPAEncoder",
    "swin_tiny",
    "vit_tiny",
    "FAMILY",
    "RULE_CASES",
    "channel_shuffle",
    "densenet_small",
    "inception_small",
    "mobilenet_v2",
    "my_custom_gate",
    "resnet18",
    "resnet50",
    "resnext_small",
    "shufflenet_v2_small",
    "squeezenet_small",
    "unet_small",
    "vgg16_cifar",
    "vgg16_conv_names",
]

Factory = Callable[[], nn.Module]


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------


@torch.fx.wrap
def my_custom_gate(x: torch.Tensor) -> torch.Tensor:
    """Opaque gate that fx keeps as a single call_function node (no pruning rule knows it)."""
    return x * torch.sigmoid(x)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle written with view/transpose/view on sizes read from the tensor."""
    b, c, h, w = x.size()
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


def _conv_bn_act(
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv2d (no bias) + BatchNorm2d + optional activation, as one Sequential."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Projection shortcut: strided 1x1 conv (no bias) + BatchNorm2d."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


# --------------------------------------------------------------------------------------------------
# ResNet (torchvision structure)
# --------------------------------------------------------------------------------------------------


# The architecture is the package's built-in one (fxprune.models); these factories pick test sizes.


def resnet18(num_classes: int = 10, width: int = 16) -> ResNet:
    """BasicBlock ResNet-18 (stages [2, 2, 2, 2]); width=64, num_classes=1000 is torchvision's."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, width)


def resnet50(num_classes: int = 10, width: int = 16) -> ResNet:
    """Bottleneck ResNet-50 (stages [3, 4, 6, 3]); width=64, num_classes=1000 is torchvision's."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, width)


# --------------------------------------------------------------------------------------------------
# VGG-16 (CIFAR, "Pruning Filters for Efficient ConvNets" / NNI)
# --------------------------------------------------------------------------------------------------

# fmt: off
VGG16_CFG: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
]
# fmt: on


class VGG(nn.Module):
    """VGG with Conv-BN-ReLU features and a Linear-BN1d-ReLU-Linear classifier."""

    def __init__(self, cfg: list[int | str], num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_ch = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.classifier(x)


def vgg16_cifar(num_classes: int = 10) -> VGG:
    """VGG-16 CIFAR variant (13 conv+BN, 5 maxpools, BN1d classifier) for 32x32 inputs."""
    return VGG(VGG16_CFG, num_classes)


def vgg16_conv_names(model: nn.Module) -> list[str]:
    """Qualified names of the Conv2d layers under model.features, in order (13 for VGG-16)."""
    return [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]


# --------------------------------------------------------------------------------------------------
# MobileNetV2 (torchvision structure)
# --------------------------------------------------------------------------------------------------


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of divisor, never dropping below 90% of v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise 3x3, linear 1x1 project, add when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_act(inp, hidden, 1, act=nn.ReLU6))
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision-style MobileNetV2 with a width multiplier."""

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()
        settings = [
            [1, 16, 1, 1],
            [6, 24, 2, 2],
            [6, 32, 3, 2],
            [6, 64, 4, 2],
            [6, 96, 3, 1],
            [6, 160, 3, 2],
            [6, 320, 1, 1],
        ]
        in_ch = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_act(3, in_ch, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in settings:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        features.append(_conv_bn_act(in_ch, self.last_channel, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 10, width_mult: float = 0.25) -> MobileNetV2:
    """MobileNetV2 (torchvision layout) at a small default width multiplier."""
    return MobileNetV2(num_classes, width_mult)


# --------------------------------------------------------------------------------------------------
# DenseNet (small)
# --------------------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """DenseNet layer: BN-ReLU-1x1 conv, BN-ReLU-3x3 conv, output concatenated onto the input."""

    def __init__(self, in_ch: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_ch, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(self.relu1(self.norm1(x)))
        new = self.conv2(self.relu2(self.norm2(new)))
        return torch.cat([x, new], 1)


class Transition(nn.Sequential):
    """DenseNet transition: BN, ReLU, 1x1 conv, 2x2 average pool."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNet(nn.Module):
    """Small CIFAR-style DenseNet: 3x3 stem, dense blocks with transitions, BN-ReLU head."""

    def __init__(
        self,
        num_classes: int = 10,
        growth: int = 8,
        block_config: tuple[int, ...] = (2, 2, 2),
        init_features: int = 16,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, init_features, 3, padding=1, bias=False)]
        ch = init_features
        for i, n in enumerate(block_config):
            for _ in range(n):
                layers.append(DenseLayer(ch, growth))
                ch += growth
            if i != len(block_config) - 1:
                layers.append(Transition(ch, ch // 2))
                ch //= 2
        layers += [nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(x)


def densenet_small(num_classes: int = 10) -> DenseNet:
    """Small DenseNet (growth 8, blocks (2, 2, 2)) for 32x32 inputs."""
    return DenseNet(num_classes)


# --------------------------------------------------------------------------------------------------
# Inception (small)
# --------------------------------------------------------------------------------------------------


class InceptionBlock(nn.Module):
    """Four-branch Inception block (1x1; 1x1-3x3; 1x1-5x5; maxpool-1x1) concatenated on channels."""

    def __init__(self, in_ch: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = _conv_bn_act(in_ch, c1, 1)
        self.branch2 = nn.Sequential(_conv_bn_act(in_ch, c3r, 1), _conv_bn_act(c3r, c3, 3))
        self.branch3 = nn.Sequential(_conv_bn_act(in_ch, c5r, 1), _conv_bn_act(c5r, c5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv_bn_act(in_ch, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionSmall(nn.Module):
    """Stem conv, two stacked Inception blocks with a maxpool between, avgpool, Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn_act(3, 32, 3)
        self.block1 = InceptionBlock(32, 8, 8, 16, 4, 8, 8)
        self.pool = nn.MaxPool2d(2)
        self.block2 = InceptionBlock(40, 16, 16, 24, 4, 8, 8)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(56, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.pool(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def inception_small(num_classes: int = 10) -> InceptionSmall:
    """Small two-block Inception network for 32x32 inputs."""
    return InceptionSmall(num_classes)


# --------------------------------------------------------------------------------------------------
# ShuffleNetV2 (small, torchvision structure)
# --------------------------------------------------------------------------------------------------


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: chunk/branch/concat (stride 1) or two strided branches, then shuffle."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch_ch = out_ch // 2
        self.branch1: nn.Module = nn.Identity()
        if stride > 1:
            self.branch1 = nn.Sequential(
                _conv_bn_act(in_ch, in_ch, 3, stride, groups=in_ch, act=None),
                _conv_bn_act(in_ch, branch_ch, 1),
            )
        self.branch2 = nn.Sequential(
            _conv_bn_act(in_ch if stride > 1 else branch_ch, branch_ch, 1),
            _conv_bn_act(branch_ch, branch_ch, 3, stride, groups=branch_ch, act=None),
            _conv_bn_act(branch_ch, branch_ch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """torchvision-style ShuffleNetV2 with configurable stage repeats and channels."""

    def __init__(
        self,
        num_classes: int = 10,
        repeats: tuple[int, int, int] = (2, 2, 2),
        channels: tuple[int, int, int, int, int] = (16, 32, 64, 128, 256),
    ) -> None:
        super().__init__()
        self.conv1 = _conv_bn_act(3, channels[0], 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = channels[0]
        stages: list[nn.Module] = []
        for n, out_ch in zip(repeats, channels[1:4], strict=True):
            units = [ShuffleUnit(in_ch, out_ch, 2)] + [ShuffleUnit(out_ch, out_ch, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            in_ch = out_ch
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = _conv_bn_act(in_ch, channels[4], 1)
        self.fc = nn.Linear(channels[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


def shufflenet_v2_small(num_classes: int = 10) -> ShuffleNetV2:
    """Small ShuffleNetV2 (repeats (2, 2, 2), channels 16-256) for 32x32 inputs."""
    return ShuffleNetV2(num_classes)


# --------------------------------------------------------------------------------------------------
# SqueezeNet (small)
# --------------------------------------------------------------------------------------------------


class Fire(nn.Module):
    """SqueezeNet Fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, in_ch: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_ch, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNetSmall(nn.Module):
    """SqueezeNet-1.1-style network with Fire modules and a conv classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(32, 8, 16, 16),
            Fire(32, 8, 16, 16),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(32, 16, 32, 32),
            Fire(64, 16, 32, 32),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Conv2d(64, num_classes, 1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def squeezenet_small(num_classes: int = 10) -> SqueezeNetSmall:
    """Small SqueezeNet for 32x32 inputs."""
    return SqueezeNetSmall(num_classes)


# --------------------------------------------------------------------------------------------------
# ResNeXt (small)
# --------------------------------------------------------------------------------------------------


class ResNeXtBlock(nn.Module):
    """ResNeXt bottleneck: 1x1, grouped 3x3 (cardinality groups), 1x1 expand x2, residual add."""

    def __init__(self, in_ch: int, cardinality: int, group_width: int, stride: int = 1) -> None:
        super().__init__()
        width = cardinality * group_width
        out_ch = 2 * width
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNeXtSmall(nn.Module):
    """CIFAR-style ResNeXt: 3x3 stem, three stages of grouped bottlenecks, avgpool, Linear."""

    def __init__(
        self,
        num_classes: int = 10,
        num_blocks: tuple[int, int, int] = (2, 2, 1),
        cardinality: int = 8,
        group_width: int = 4,
    ) -> None:
        super().__init__()
        self.stem = _conv_bn_act(3, 32, 3)
        in_ch = 32
        stages: list[nn.Module] = []
        for i, n in enumerate(num_blocks):
            blocks = []
            for j in range(n):
                blocks.append(ResNeXtBlock(in_ch, cardinality, group_width, 2 if (i > 0 and j == 0) else 1))
                in_ch = 2 * cardinality * group_width
            stages.append(nn.Sequential(*blocks))
            group_width *= 2
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnext_small(num_classes: int = 10) -> ResNeXtSmall:
    """Small ResNeXt (cardinality 8, width per group 4) for 32x32 inputs."""
    return ResNeXtSmall(num_classes)


# --------------------------------------------------------------------------------------------------
# UNet (small)
# --------------------------------------------------------------------------------------------------


class DoubleConv(nn.Sequential):
    """Two 3x3 Conv-BN-ReLU layers."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(_conv_bn_act(in_ch, out_ch, 3), _conv_bn_act(out_ch, out_ch, 3))


class UNetSmall(nn.Module):
    """3-level UNet; upsampling by ConvTranspose2d, nn.Upsample and F.interpolate; cat skips."""

    def __init__(self, in_ch: int = 3, out_ch: int = 2, base: int = 8) -> None:
        super().__init__()
        self.enc1 = DoubleConv(in_ch, base)
        self.enc2 = DoubleConv(base, base * 2)
        self.enc3 = DoubleConv(base * 2, base * 4)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(base * 4, base * 8)
        self.up3 = nn.ConvTranspose2d(base * 8, base * 4, 2, stride=2)
        self.dec3 = DoubleConv(base * 8, base * 4)
        self.up2 = nn.Upsample(scale_factor=2)
        self.dec2 = DoubleConv(base * 4 + base * 2, base * 2)
        self.dec1 = DoubleConv(base * 2 + base, base)
        self.out_conv = nn.Conv2d(base, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        b = self.bottleneck(self.pool(e3))
        d3 = self.dec3(torch.cat([self.up3(b), e3], 1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], 1))
        up1 = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([up1, e1], 1))
        return self.out_conv(d1)


def unet_small(in_ch: int = 3, out_ch: int = 2) -> UNetSmall:
    """Small 3-level UNet for 32x32 inputs."""
    return UNetSmall(in_ch, out_ch)


FAMILY: dict[str, tuple[Factory, tuple[int, ...]]] = {
    "resnet18": (resnet18, (1, 3, 32, 32)),
    "resnet50": (lambda: resnet50(width=8), (1, 3, 32, 32)),
    "vgg16_cifar": (vgg16_cifar, (1, 3, 32, 32)),
    "mobilenet_v2": (mobilenet_v2, (1, 3, 32, 32)),
    "densenet_small": (densenet_small, (1, 3, 32, 32)),
    "inception_small": (inception_small, (1, 3, 32, 32)),
    "shufflenet_v2_small": (shufflenet_v2_small, (1, 3, 32, 32)),
    "squeezenet_small": (squeezenet_small, (1, 3, 32, 32)),
    "resnext_small": (resnext_small, (1, 3, 32, 32)),
    "unet_small": (unet_small, (1, 3, 32, 32)),
}


# --------------------------------------------------------------------------------------------------
# Rule cases: one tiny model per op spelling, channels flowing through the op between two layers
# --------------------------------------------------------------------------------------------------


class Conv1dCase(nn.Module):
    """Conv1d -> ReLU -> Conv1d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, 16, 3, padding=1)
        self.conv2 = nn.Conv1d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class Conv2dCase(nn.Module):
    """Conv2d -> ReLU -> Conv2d -> ReLU -> Conv2d head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv2(F.relu(self.conv1(x)))))


class Conv3dCase(nn.Module):
    """Conv3d -> ReLU -> Conv3d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv3d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class Conv2dGroupedCase(nn.Module):
    """Conv2d -> grouped Conv2d (groups=4, 16 -> 32) -> Conv2d head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.grouped(F.relu(self.conv1(x)))))


class Conv2dDepthwiseCase(nn.Module):
    """Conv2d -> depthwise Conv2d (16 -> 16) -> depthwise with multiplier 2 (16 -> 32) -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.dw_mult2 = nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.dw(F.relu(self.conv1(x))))
        return self.head(F.relu(self.dw_mult2(x)))


class ConvTranspose2dCase(nn.Module):
    """Conv2d -> ConvTranspose2d (stride 2) -> ReLU -> Conv2d head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.deconv = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.deconv(F.relu(self.conv1(x)))))


class ConvTranspose1dCase(nn.Module):
    """Conv1d -> ConvTranspose1d (stride 2) -> ReLU -> Conv1d head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, 16, 3, padding=1)
        self.deconv = nn.ConvTranspose1d(16, 8, 4, stride=2, padding=1)
        self.head = nn.Conv1d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.deconv(F.relu(self.conv1(x)))))


class LinearCase(nn.Module):
    """Linear -> ReLU -> Linear -> ReLU -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32, bias=False)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Linear3dInputCase(nn.Module):
    """Linear on a (B, T, F) tensor -> GELU -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class BatchNorm1dCase(nn.Module):
    """BatchNorm1d on (B, C, L) after Conv1d and on (B, C) after Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 16, 3, padding=1)
        self.bn_conv = nn.BatchNorm1d(16)
        self.fc1 = nn.Linear(16, 32)
        self.bn_fc = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_conv(self.conv(x))).mean(-1)
        return self.fc2(F.relu(self.bn_fc(self.fc1(x))))


class BatchNorm2dCase(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU -> Conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.bn(self.conv1(x))))


class BatchNorm3dCase(nn.Module):
    """Conv3d -> BatchNorm3d -> ReLU -> Conv3d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(8)
        self.head = nn.Conv3d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.bn(self.conv1(x))))


class GroupNormCase(nn.Module):
    """Conv2d -> GroupNorm(4, 16) -> ReLU -> Conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.gn(self.conv1(x))))


class InstanceNorm2dCase(nn.Module):
    """Conv2d -> InstanceNorm2d(affine=True) -> ReLU -> Conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.InstanceNorm2d(16, affine=True)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.norm(self.conv1(x))))


class ActivationsModuleCase(nn.Module):
    """A conv before each activation module (ReLU ... Mish), ending in a conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.acts = nn.ModuleList(
            [
                nn.ReLU(),
                nn.ReLU6(),
                nn.LeakyReLU(0.1),
                nn.GELU(),
                nn.SiLU(),
                nn.Sigmoid(),
                nn.Tanh(),
                nn.Hardswish(),
                nn.Hardsigmoid(),
                nn.ELU(),
                nn.Softplus(),
                nn.Mish(),
            ]
        )
        self.convs = nn.ModuleList(
            [nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1) for i in range(len(self.acts))]
        )
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, act in zip(self.convs, self.acts, strict=True):
            x = act(conv(x))
        return self.head(x)


class ActivationsFunctionalCase(nn.Module):
    """A conv before each functional / method activation spelling, ending in a conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1) for i in range(11)])
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.convs
        x = F.relu(c[0](x))
        x = torch.relu(c[1](x))
        x = c[2](x).relu()
        x = F.gelu(c[3](x))
        x = torch.sigmoid(c[4](x))
        x = c[5](x).sigmoid()
        x = torch.tanh(c[6](x))
        x = F.silu(c[7](x))
        x = F.leaky_relu(c[8](x), 0.1)
        x = F.hardtanh(c[9](x), -1.0, 1.0)
        x = F.relu6(c[10](x))
        return self.head(x)


class ReluInplaceCase(nn.Module):
    """Conv -> nn.ReLU(inplace=True) -> Conv -> F.relu(inplace=True) -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = F.relu(self.conv2(x), inplace=True)
        return self.head(x)


class DropoutCase(nn.Module):
    """Convs separated by nn.Dropout, nn.Dropout2d and F.dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.drop = nn.Dropout(0.2)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.drop2d = nn.Dropout2d(0.2)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(F.relu(self.conv1(x)))
        x = self.drop2d(F.relu(self.conv2(x)))
        x = F.dropout(F.relu(self.conv3(x)), p=0.2, training=self.training)
        return self.head(x)


class MaxPoolCase(nn.Module):
    """Conv -> nn.MaxPool2d -> Conv -> F.max_pool2d -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.pool(F.relu(self.conv1(x))))
        return self.head(F.max_pool2d(F.relu(x), 2))


class AvgPoolCase(nn.Module):
    """Conv -> nn.AvgPool2d -> Conv -> F.avg_pool2d -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.pool(F.relu(self.conv1(x))))
        return self.head(F.avg_pool2d(F.relu(x), 2))


class AdaptivePoolCase(nn.Module):
    """F.adaptive_avg_pool2d, nn.AdaptiveAvgPool2d((2, 2)) and nn.AdaptiveMaxPool2d(1) between layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.avg = nn.AdaptiveAvgPool2d((2, 2))
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.max = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(F.relu(self.conv1(x)), 4)
        x = self.avg(F.relu(self.conv2(x)))
        x = self.max(F.relu(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))


class UpsampleCase(nn.Module):
    """nn.Upsample (nearest), nn.Upsample (bilinear) and F.interpolate(size=...) between convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.up_nearest = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.up_bilinear = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.up_nearest(F.relu(self.conv1(x))))
        x = self.conv3(self.up_bilinear(F.relu(x)))
        x = F.interpolate(F.relu(x), size=(8, 8))
        return self.head(x)


class ResidualAddCase(nn.Module):
    """Residual adds spelled x + y, torch.add, x.add(y) and x += y, all coupling one channel group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.convs = nn.ModuleList([nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)])
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = x + self.convs[0](x)
        x = torch.add(x, self.convs[1](x))
        x = x.add(self.convs[2](x))
        y = self.convs[3](x)
        y += x
        return self.head(F.relu(y))


class ResidualSubCase(nn.Module):
    """Difference of two conv outputs (x - y and x.sub(y)) feeding a conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv_a = nn.Conv2d(16, 16, 3, padding=1)
        self.conv_b = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = x - self.conv_a(x)
        x = x.sub(self.conv_b(x))
        return self.head(x)


class ResidualMulCase(nn.Module):
    """Elementwise product of two conv outputs (x * y and torch.mul) feeding a conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 16, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 16, 3, padding=1)
        self.conv_c = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_a(x) * self.conv_b(x)
        y = torch.mul(y, torch.sigmoid(self.conv_c(y)))
        return self.head(y)


class BroadcastMulCase(nn.Module):
    """Squeeze-excitation: x * sigmoid(conv1x1(relu(conv1x1(mean(x, (2, 3), keepdim=True)))))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.se_reduce = nn.Conv2d(16, 4, 1)
        self.se_expand = nn.Conv2d(4, 16, 1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        gate = x.mean((2, 3), keepdim=True)
        gate = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(gate))))
        return self.head(x * gate)


class BroadcastAddBiasCase(nn.Module):
    """Conv -> x + bias_param of shape (1, C, 1, 1) -> ReLU -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bias_param = nn.Parameter(torch.randn(1, 16, 1, 1))
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv1(x) + self.bias_param))


class ConcatCase(nn.Module):
    """torch.cat of two conv outputs (8 and 24 channels) -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 24, 3, padding=1)
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([F.relu(self.conv_a(x)), F.relu(self.conv_b(x))], 1))


class ConcatNegativeDimCase(nn.Module):
    """torch.cat(..., dim=-3) of two NCHW conv outputs -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(24, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat((F.relu(self.conv_a(x)), F.relu(self.conv_b(x))), dim=-3))


class SplitCase(nn.Module):
    """torch.split(x, [8, 24], dim=1), a conv per branch, then concat and a conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(24, 16, 3, padding=1)
        self.head = nn.Conv2d(24, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(F.relu(self.conv1(x)), [8, 24], dim=1)
        return self.head(torch.cat([self.conv_a(a), self.conv_b(b)], 1))


class SplitEqualCase(nn.Module):
    """x.split(8, dim=1) into four parts, a conv per part, then concat and a conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.branches = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1) for _ in range(4)])
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = F.relu(self.conv1(x)).split(8, dim=1)
        return self.head(torch.cat([self.branches[i](parts[i]) for i in range(4)], 1))


class ChunkCase(nn.Module):
    """torch.chunk(x, 2, 1) and x.chunk(2, dim=1), each half through its own conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_c = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(F.relu(self.conv1(x)), 2, 1)
        y = F.relu(torch.cat([self.conv_a(a), self.conv_b(b)], 1))
        c, d = y.chunk(2, dim=1)
        return self.head(torch.cat([self.conv_c(c), d], 1))


class SlicingCase(nn.Module):
    """x[:, :8], x[:, 8:] and x[:, 2:10] of a conv output, each into its own conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_c = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(24, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        a = self.conv_a(x[:, :8])
        b = self.conv_b(x[:, 8:])
        c = self.conv_c(x[:, 2:10])
        return self.head(torch.cat([a, b, c], 1))


class FlattenLinearCase(nn.Module):
    """Conv on a 4x4 map -> torch.flatten(x, 1) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.relu(self.conv1(x)), 1))


class ViewLinearCase(nn.Module):
    """Conv on a 4x4 map -> x.view(x.size(0), -1) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        return self.fc(x.view(x.size(0), -1))


class ReshapeLinearCase(nn.Module):
    """Conv on a 4x4 map -> x.reshape(x.shape[0], -1) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        b = x.shape[0]
        return self.fc(x.reshape(b, -1))


class FlattenModuleCase(nn.Module):
    """Conv on a 4x4 map -> nn.Flatten() -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(F.relu(self.conv1(x))))


class PermuteCase(nn.Module):
    """Conv -> permute(0, 2, 3, 1) -> Linear on channels -> permute(0, 3, 1, 2) -> Conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 24)
        self.head = nn.Conv2d(24, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x)).permute(0, 2, 3, 1)
        x = F.relu(self.fc(x)).permute(0, 3, 1, 2)
        return self.head(x)


class TransposeCase(nn.Module):
    """Linear on (B, T, F) -> x.transpose(1, 2) -> Conv1d."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 16)
        self.conv = nn.Conv1d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.fc(x)).transpose(1, 2))


class ChannelShuffleCase(nn.Module):
    """Conv -> view/transpose/view channel shuffle (groups=4) -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(channel_shuffle(F.relu(self.conv1(x)), 4))


class SpatialMeanCase(nn.Module):
    """x.mean((2, 3)) and x.mean(dim=[2, 3]) of conv outputs, each into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc1 = nn.Linear(16, 10)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        y = F.relu(self.conv2(x))
        return self.fc1(x.mean((2, 3))) + self.fc2(y.mean(dim=[2, 3]))


class SpatialSumCase(nn.Module):
    """Conv -> x.sum(dim=(2, 3)) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv1(x)).sum(dim=(2, 3)))


class PReLUCase(nn.Module):
    """Conv -> PReLU(num_parameters=C) -> Conv -> PReLU() single-parameter -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.prelu_c = nn.PReLU(num_parameters=16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.prelu_1 = nn.PReLU()
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.prelu_c(self.conv1(x)))
        return self.head(self.prelu_1(x))


class IdentityCase(nn.Module):
    """Conv -> nn.Identity -> ReLU -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.ident = nn.Identity()
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.ident(self.conv1(x))))


class ConvBNReLU(nn.Module):
    """Custom Conv-BN-ReLU sub-module (not an nn.Sequential)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class NestedBlock(nn.Module):
    """Custom block holding a ModuleList of ConvBNReLU layers applied in order."""

    def __init__(self, in_ch: int, out_ch: int, depth: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList([ConvBNReLU(in_ch if i == 0 else out_ch, out_ch) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class SequentialNestedCase(nn.Module):
    """Nested nn.Sequential / ModuleList of custom sub-modules, then pool, flatten, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Sequential(NestedBlock(3, 16), NestedBlock(16, 16)),
            nn.Sequential(nn.Sequential(ConvBNReLU(16, 24)), NestedBlock(24, 16, depth=1)),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))


class SharedModuleCase(nn.Module):
    """One conv module called twice on two different tensors, outputs added, then a conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem_a = nn.Conv2d(3, 16, 3, padding=1)
        self.stem_b = nn.Conv2d(3, 16, 5, padding=2)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.shared(F.relu(self.stem_a(x)))
        b = self.shared(F.relu(self.stem_b(x)))
        return self.head(F.relu(a + b))


class GetattrParameterCase(nn.Module):
    """Conv -> x * self.scale with scale an nn.Parameter of shape (C, 1, 1) -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(16, 1, 1) + 0.5)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv1(x)) * self.scale)


class OutputFromMiddleCase(nn.Module):
    """Returns a tuple (intermediate conv feature map, final logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = F.relu(self.conv1(x))
        y = F.relu(self.conv2(feat)).mean((2, 3))
        return feat, self.fc(y)


RULE_CASES: dict[str, tuple[Factory, tuple[int, ...]]] = {
    "conv1d": (Conv1dCase, (2, 4, 32)),
    "conv2d": (Conv2dCase, (2, 3, 16, 16)),
    "conv3d": (Conv3dCase, (2, 3, 8, 8, 8)),
    "conv2d_grouped": (Conv2dGroupedCase, (2, 3, 16, 16)),
    "conv2d_depthwise": (Conv2dDepthwiseCase, (2, 3, 16, 16)),
    "conv_transpose2d": (ConvTranspose2dCase, (2, 3, 16, 16)),
    "conv_transpose1d": (ConvTranspose1dCase, (2, 4, 16)),
    "linear": (LinearCase, (2, 32)),
    "linear_3d_input": (Linear3dInputCase, (2, 6, 16)),
    "batchnorm1d": (BatchNorm1dCase, (2, 4, 16)),
    "batchnorm2d": (BatchNorm2dCase, (2, 3, 16, 16)),
    "batchnorm3d": (BatchNorm3dCase, (2, 3, 8, 8, 8)),
    "groupnorm": (GroupNormCase, (2, 3, 16, 16)),
    "instancenorm2d": (InstanceNorm2dCase, (2, 3, 16, 16)),
    "activations_module": (ActivationsModuleCase, (2, 3, 8, 8)),
    "activations_functional": (ActivationsFunctionalCase, (2, 3, 8, 8)),
    "relu_inplace": (ReluInplaceCase, (2, 3, 16, 16)),
    "dropout": (DropoutCase, (2, 3, 16, 16)),
    "maxpool": (MaxPoolCase, (2, 3, 16, 16)),
    "avgpool": (AvgPoolCase, (2, 3, 16, 16)),
    "adaptive_pool": (AdaptivePoolCase, (2, 3, 16, 16)),
    "upsample": (UpsampleCase, (2, 3, 16, 16)),
    "residual_add": (ResidualAddCase, (2, 3, 16, 16)),
    "residual_sub": (ResidualSubCase, (2, 3, 16, 16)),
    "residual_mul": (ResidualMulCase, (2, 3, 16, 16)),
    "broadcast_mul": (BroadcastMulCase, (2, 3, 16, 16)),
    "broadcast_add_bias": (BroadcastAddBiasCase, (2, 3, 16, 16)),
    "concat": (ConcatCase, (2, 3, 16, 16)),
    "concat_negative_dim": (ConcatNegativeDimCase, (2, 3, 16, 16)),
    "split": (SplitCase, (2, 3, 16, 16)),
    "split_equal": (SplitEqualCase, (2, 3, 16, 16)),
    "chunk": (ChunkCase, (2, 3, 16, 16)),
    "slicing": (SlicingCase, (2, 3, 16, 16)),
    "flatten_linear": (FlattenLinearCase, (2, 3, 8, 8)),
    "view_linear": (ViewLinearCase, (2, 3, 8, 8)),
    "reshape_linear": (ReshapeLinearCase, (2, 3, 8, 8)),
    "flatten_module": (FlattenModuleCase, (2, 3, 8, 8)),
    "permute": (PermuteCase, (2, 3, 8, 8)),
    "transpose": (TransposeCase, (2, 10, 12)),
    "channel_shuffle": (ChannelShuffleCase, (2, 3, 16, 16)),
    "spatial_mean": (SpatialMeanCase, (2, 3, 16, 16)),
    "spatial_sum": (SpatialSumCase, (2, 3, 16, 16)),
    "prelu": (PReLUCase, (2, 3, 16, 16)),
    "identity": (IdentityCase, (2, 3, 16, 16)),
    "sequential_nested": (SequentialNestedCase, (2, 3, 16, 16)),
    "shared_module": (SharedModuleCase, (2, 3, 16, 16)),
    "getattr_parameter": (GetattrParameterCase, (2, 3, 16, 16)),
    "output_from_middle": (OutputFromMiddleCase, (2, 3, 16, 16)),
}


# --------------------------------------------------------------------------------------------------
# Bad models for error tests
# --------------------------------------------------------------------------------------------------


class DataDependentControlFlow(nn.Module):
    """Branches on a tensor value (if x.sum() > 0), which symbolic tracing cannot handle."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if x.sum() > 0:
            x = F.relu(x)
        return self.conv2(x)


class UnknownCustomOp(nn.Module):
    """Conv -> my_custom_gate (an fx-wrapped opaque function) -> Conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(my_custom_gate(self.conv1(x)))


BAD_MODELS: dict[str, tuple[Factory, tuple[int, ...]]] = {
    "data_dependent_control_flow": (DataDependentControlFlow, (2, 3, 16, 16)),
    "unknown_custom_op": (UnknownCustomOp, (2, 3, 16, 16)),
}


# --------------------------------------------------------------------------------------------------
# Transformers written here: hard-coded head counts in forward, SDPA, GQA, nn.MultiheadAttention
# --------------------------------------------------------------------------------------------------


class ViTBlock(nn.Module):
    """Pre-norm ViT block with the head count and head size hard-coded in forward (timm's qkv layout)."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * 8**-0.5
        y = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, 32)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTTiny(nn.Module):
    """Patch embedding (conv), class token, position embedding, two ViTBlocks, classifier on the class token."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 32, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 32) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 17, 32) * 0.02)
        self.blocks = nn.Sequential(ViTBlock(), ViTBlock())
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_tiny() -> ViTTiny:
    """ViTTiny on 16x16 images (4x4 patches, 16 tokens + class token), 4 heads of 8."""
    return ViTTiny()


class WindowAttention(nn.Module):
    """Swin-style window attention: windows of 4x4 tokens cut with hard-coded view/permute sizes, 2 heads
    hard-coded in forward, a relative position bias table indexed by a buffer."""

    def __init__(self, dim: int = 16, heads: int = 2, window: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape  # channels-last feature map, h and w multiples of 4
        win = self.norm(x).view(b, h // 4, 4, w // 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, c)
        qkv = self.qkv(win).reshape(-1, 16, 3, 2, 8).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = self.table[self.index.view(-1)].view(16, 16, 2).permute(2, 0, 1)
        attn = ((q * 8**-0.5) @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
        y = self.proj((attn @ v).transpose(1, 2).reshape(-1, 16, 16))
        y = y.view(b, h // 4, w // 4, 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = x + y
        return x + self.fc2(F.gelu(self.fc1(x)))


class SwinTiny(nn.Module):
    """Patch embedding -> channels-last -> one window-attention block -> pooled classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 2, stride=2)
        self.block = WindowAttention()
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.patch(x).permute(0, 2, 3, 1)).mean((1, 2)))


def swin_tiny() -> SwinTiny:
    """SwinTiny on 16x16 images (8x8 tokens, four 4x4 windows), 2 heads of 8."""
    return SwinTiny()


class SDPAEncoder(nn.Module):
    """Token embedding, one encoder layer with separate q/k/v, view into 4 heads (-1) and
    F.scaled_dot_product_attention, an FFN, and a classifier on the mean token."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)
        self.heads = heads

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        b, n, _ = x.shape
        h = self.norm1(x)
        q, k, v = (p(h).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        x = x + self.o(y)
        x = x + self.fc2(F.relu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


class GQAttention(nn.Module):
    """Grouped-query attention: 4 query heads share 2 key/value heads (repeat by expand + reshape, as
    Llama's repeat_kv), explicit softmax attention, RMSNorm, and a gated FFN."""

    def __init__(self, vocab: int = 50, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.RMSNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, 32, bias=False), nn.Linear(dim, 16), nn.Linear(dim, 16)
        self.o = nn.Linear(32, dim)
        self.gate, self.up, self.down = nn.Linear(dim, 64), nn.Linear(dim, 64), nn.Linear(64, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        b, n, _ = x.shape
        h = self.norm(x)
        q = self.q(h).view(b, n, 4, 8).transpose(1, 2)
        k = self.k(h).view(b, n, 2, 8).transpose(1, 2)
        v = self.v(h).view(b, n, 2, 8).transpose(1, 2)
        k = k[:, :, None].expand(b, 2, 2, n, 8).reshape(b, 4, n, 8)
        v = v[:, :, None].expand(b, 2, 2, n, 8).reshape(b, 4, n, 8)
        attn = (q @ k.transpose(-2, -1) / 8**0.5).softmax(-1)
        x = x + self.o((attn @ v).transpose(1, 2).reshape(b, n, 32))
        x = x + self.down(F.silu(self.gate(x)) * self.up(x))
        return self.head(x.mean(1))


class MHAEncoder(nn.Module):
    """nn.MultiheadAttention (an opaque module to fx) followed by an FFN and a classifier."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(dim, 64), nn.Linear(64, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.head((x + self.fc2(F.relu(self.fc1(x)))).mean(1))


ATTENTION_MODELS: dict[str, tuple[Factory, tuple[int, ...]]] = {
    "vit_tiny": (vit_tiny, (2, 3, 16, 16)),
    "swin_tiny": (swin_tiny, (2, 3, 16, 16)),
}
# Large models for memory measurements (examples/memory.py)
# --------------------------------------------------------------------------------------------------

RESNET_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def resnet(depth: int, num_classes: int = 1000, width: int = 64) -> ResNet:
    """torchvision-shaped ResNet of any standard depth (18/34/50/101/152); ResNet-152 has 60.2M params."""
    block, layers = RESNET_DEPTHS[depth]
    return ResNet(block, layers, num_classes, width)
