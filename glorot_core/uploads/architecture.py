"""Architectures a weights-only upload is loaded into: the spec's MLP and CNNs as a list of layers.

The network is always an ``nn.Sequential`` of the described modules, in order, so its ``state_dict``
keys are exactly those of the user's own ``nn.Sequential`` of the same modules: an MLP 784→100→10
with tanh is ``Linear, Tanh, Linear`` with keys ``0.weight``, ``0.bias``, ``2.weight``, ``2.bias``;
a CNN's keys follow its layer list (``0.weight`` for a first conv2d, ``2.running_mean`` for a
batchnorm third, …). Uploaders write what ``save_file(model.state_dict())`` wrote.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

#: Activation modules by the names a description uses (the engine's names, plus gelu and silu).
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softsign": nn.Softsign, "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU, "linear": nn.Identity, "gelu": nn.GELU, "silu": nn.SiLU,
}
ActivationName = Literal["sigmoid", "tanh", "softsign", "relu", "leaky_relu", "linear", "gelu", "silu"]
Size = Annotated[int, Field(ge=1, le=65_536)]
Kernel = Annotated[int, Field(ge=1, le=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class MLPArchitecture(_Strict):
    """The spec's MLP: ``input_dim → hidden[0] → … → num_classes``, ``activation`` after every hidden layer."""

    kind: Literal["mlp"]
    input_dim: Size
    hidden: list[Size] = Field(min_length=1, max_length=64)
    num_classes: Size
    activation: ActivationName = "tanh"

    def build(self) -> nn.Sequential:
        widths = [self.input_dim, *self.hidden, self.num_classes]
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            modules.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                modules.append(ACTIVATION_MODULES[self.activation]())
        return nn.Sequential(*modules)

    def input_shape(self) -> tuple[int, ...]:
        return (self.input_dim,)


class Conv2dLayer(_Strict):
    type: Literal["conv2d"]
    in_channels: Size
    out_channels: Size
    kernel_size: Kernel
    stride: Kernel = 1
    padding: Annotated[int, Field(ge=0, le=64)] = 0
    bias: bool = True

    def build(self) -> nn.Module:
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         bias=self.bias)


class PoolingLayer(_Strict):
    type: Literal["pooling"]
    mode: Literal["max", "avg"] = "max"
    kernel_size: Kernel = 2
    stride: Kernel | None = None

    def build(self) -> nn.Module:
        cls = nn.MaxPool2d if self.mode == "max" else nn.AvgPool2d
        return cls(self.kernel_size, self.stride)


class ActivationLayer(_Strict):
    type: Literal["activation"]
    name: ActivationName

    def build(self) -> nn.Module:
        return ACTIVATION_MODULES[self.name]()


class FlattenLayer(_Strict):
    type: Literal["flatten"]

    def build(self) -> nn.Module:
        return nn.Flatten()


class LinearLayer(_Strict):
    type: Literal["linear"]
    in_features: Size
    out_features: Size
    bias: bool = True

    def build(self) -> nn.Module:
        return nn.Linear(self.in_features, self.out_features, bias=self.bias)


class BatchNormLayer(_Strict):
    type: Literal["batchnorm"]
    num_features: Size
    dims: Literal[1, 2] = 2

    def build(self) -> nn.Module:
        return nn.BatchNorm2d(self.num_features) if self.dims == 2 else nn.BatchNorm1d(self.num_features)


class DropoutLayer(_Strict):
    type: Literal["dropout"]
    p: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5

    def build(self) -> nn.Module:
        return nn.Dropout(self.p)


Layer = Annotated[Conv2dLayer | PoolingLayer | ActivationLayer | FlattenLayer | LinearLayer | BatchNormLayer
                  | DropoutLayer, Field(discriminator="type")]


class CNNArchitecture(_Strict):
    """A CNN as an ordered list of layers; module ``i`` of the ``nn.Sequential`` is ``layers[i]``."""

    kind: Literal["cnn"]
    layers: list[Layer] = Field(min_length=1, max_length=256)

    def build(self) -> nn.Sequential:
        return nn.Sequential(*(layer.build() for layer in self.layers))


Architecture = Annotated[MLPArchitecture | CNNArchitecture, Field(discriminator="kind")]


def parameter_count(arch: MLPArchitecture | CNNArchitecture) -> int:
    """Parameters of the described network, counted on the meta device (nothing is allocated), so an
    oversized description is refused before any memory is spent on it."""
    with torch.device("meta"):
        net = arch.build()
    return sum(math.prod(p.shape) for p in net.parameters())
