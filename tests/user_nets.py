"""Networks as a researcher would write them, for `model=custom model.net._target_=user_nets.NAME`:
one the graph can gate (a residual add couples two layers' channels), and three it must refuse."""
import torch
from torch import nn


def conv_bn(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class SmallNet(nn.Module):
    """conv-bn-relu, a residual pair (its add couples the channels of stem and pair), a strided
    conv, global pooling and a linear classifier."""

    def __init__(self, channels: int = 16, num_classes: int = 10):
        super().__init__()
        c = channels
        self.stem = conv_bn(3, c)
        self.pair = nn.Sequential(conv_bn(c, 2 * c), nn.Conv2d(2 * c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.down = conv_bn(c, 2 * c, stride=2)
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.pair(x))
        x = self.down(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Concat(SmallNet):
    """the residual pair's output concatenated to its input, as a DenseNet does"""

    def __init__(self, channels: int = 16, num_classes: int = 10):
        super().__init__(channels, num_classes)
        self.down = conv_bn(2 * channels, 2 * channels, stride=2)

    def forward(self, x):
        x = self.stem(x)
        x = self.down(torch.cat([x, self.pair(x)], 1))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class NoNorm(SmallNet):
    def __init__(self, channels: int = 16, num_classes: int = 10):
        super().__init__(channels, num_classes)
        self.down = nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, 2, 1), nn.ReLU())


class ConvHead(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(conv_bn(3, 8), nn.Conv2d(8, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.body(x)
