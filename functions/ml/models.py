"""PyTorch models: an MLP for tabular rows, a small CNN for images, and the fitted normalization as a module."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from functions.ml.features import Transform


class Normalize(nn.Module):
    """The featurize step's standardization inside the graph, so a served model takes raw inputs."""

    def __init__(self, transform: Transform):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(transform.mean, np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(transform.std, np.float32)))
        self.image = transform.kind == "image"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.unsqueeze(1) if self.image else x  # images: (N, H, W) → (N, 1, H, W)


class MLP(nn.Module):
    """Fully connected layers with ReLU and dropout."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, layers: int = 1, dropout: float = 0.1):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class CNN(nn.Module):
    """The Kubeflow Fashion-MNIST CNN (conv 20@5x5, pool, conv 50@5x5, pool, FC 500, FC).

    Small images (8x8 digits) get 3x3 padded convolutions instead.
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        num_classes: int,
        channels: int = 20,
        hidden: int = 500,
        dropout: float = 0.1,
    ):
        super().__init__()
        small = min(image_shape) < 20
        kernel, pad = (3, 1) if small else (5, 0)
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel, 1, pad),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, int(channels * 2.5), kernel, 1, pad),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, *image_shape)).numel()
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Classifier(nn.Module):
    """Normalization + network; ``forward`` gives logits, ``Probabilities`` wraps it for export."""

    def __init__(self, normalize: Normalize, net: nn.Module):
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class Probabilities(nn.Module):
    """The served model: raw inputs in, class probabilities out."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x), dim=1)


def build_model(
    arch: str, transform: Transform, num_classes: int, *, hidden: int, layers: int, dropout: float, channels: int
) -> Classifier:
    """The classifier for an architecture name (``mlp``, ``cnn`` or ``auto``: cnn for images, mlp otherwise)."""
    if arch == "auto":
        arch = "cnn" if transform.kind == "image" else "mlp"
    if arch == "cnn":
        if len(transform.input_shape) != 2:
            raise ValueError(f"a CNN needs 2-dimensional images, the features have shape {transform.input_shape}")
        net: nn.Module = CNN(transform.input_shape, num_classes, channels=channels, hidden=hidden, dropout=dropout)  # type: ignore[arg-type]
    elif arch == "mlp":
        net = MLP(int(np.prod(transform.input_shape)), num_classes, hidden=hidden, layers=layers, dropout=dropout)
    else:
        raise ValueError(f"unknown model architecture {arch!r} (mlp, cnn or auto)")
    return Classifier(Normalize(transform), net)
