"""The two-head classifier: a ResNet trunk, a gesture head and a leading-hand head.

``resnet18`` is torchvision's ResNet-18 rebuilt in plain torch (torchvision cannot sit
beside the CPU torch build here), with the same parameter names under ``trunk``, and two
linear heads as in HaGRID v1's ``classifier/models/resnet.py``. ``small`` is a narrow ResNet
(a 3x3 stem of stride 2, no max-pool, one block per stage, 16-128 channels) that trains on
a CPU at 32-64 px. Its strided stem made it 3x faster than a stride-1 stem at 64 px and
learn in fewer epochs (bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Architecture:
    """A ResNet of basic blocks: ``widths`` and ``blocks`` per stage, and its stem."""

    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    stem_kernel: int  # 7: ImageNet stem (a max-pool follows); 3: no pool
    stem_stride: int = 2


ARCHITECTURES: dict[str, Architecture] = {
    "resnet18": Architecture(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), stem_kernel=7),
    "small": Architecture(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), stem_kernel=3),
}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (a 1x1 projection when the shape changes)."""

    def __init__(self, inputs: int, outputs: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample: nn.Module | None = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class Trunk(nn.Module):
    """The convolutional part: stem, four stages, global average pooling."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        first = arch.widths[0]
        big = arch.stem_kernel == 7
        self.conv1 = nn.Conv2d(3, first, arch.stem_kernel, stride=arch.stem_stride,
                               padding=arch.stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(first)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if big else nn.Identity()
        stages, inputs = [], first
        for i, (width, count) in enumerate(zip(arch.widths, arch.blocks, strict=True)):
            blocks = [BasicBlock(inputs if j == 0 else width, width,
                                 stride=2 if i > 0 and j == 0 else 1) for j in range(count)]
            stages.append(nn.Sequential(*blocks))
            inputs = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.features = inputs

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class TwoHeadNet(nn.Module):
    """A trunk with a gesture head (one output per class) and a leading-hand head (2)."""

    def __init__(self, arch: Architecture, *, num_classes: int) -> None:
        super().__init__()
        self.trunk = Trunk(arch)
        self.gesture = nn.Linear(self.trunk.features, num_classes)
        self.leading_hand = nn.Linear(self.trunk.features, 2)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits of both heads for a float batch NCHW in [0, 1]."""
        features = self.trunk(images)
        return self.gesture(features), self.leading_hand(features)


def build_model(name: str, *, num_classes: int) -> TwoHeadNet:
    """A freshly initialised model (seed torch first for reproducible weights)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; use one of {sorted(ARCHITECTURES)}")
    return TwoHeadNet(ARCHITECTURES[name], num_classes=num_classes)
