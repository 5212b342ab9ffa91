"""PyTorch models: an MLP for tabular rows, a small CNN for images, the fitted normalization as a module, and the
served heads (class probabilities, or a regression prediction in the target's units)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from functions.ml.features import Transform
from functions.ml.metrics import REGRESSION


class Normalize(nn.Module):
    """The featurize step's standardization inside the graph, so a served model takes raw inputs."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, transform: Transform):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(transform.mean, np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(transform.std, np.float32)))
        self.image = transform.kind == "image"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.unsqueeze(1) if self.image else x  # images: (N, H, W) → (N, 1, H, W)


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its masks from its network's own generator (``Network.reseed``) instead of torch's
    process-wide one, so trainings running side by side in one process (parallel trials in a function's threads)
    each stay reproducible; without a generator, or outside training, it is ``nn.Dropout``."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.generator is None:
            return super().forward(x)
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep / (1 - self.p)


class MLP(nn.Module):
    """Fully connected layers with ReLU and dropout."""

    def __init__(self, in_features: int, num_outputs: int, hidden: int = 128, layers: int = 1, dropout: float = 0.1):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, num_outputs))
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
        num_outputs: int,
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
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), Dropout(dropout), nn.Linear(hidden, num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Network(nn.Module):
    """Normalization + network; ``forward`` gives the raw outputs: class logits, or the standardized regression
    prediction. ``Probabilities`` and ``Prediction`` wrap it for serving."""

    def __init__(self, normalize: Normalize, net: nn.Module):
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def reseed(self, seed: int) -> None:
        """Seed the generator every dropout layer of this network draws from (one per network, on its device)."""
        device = next(self.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        for layer in self.modules():
            if isinstance(layer, Dropout):
                layer.generator = generator


class Probabilities(nn.Module):
    """The served classifier: raw (encoded) inputs in, class probabilities out."""

    def __init__(self, network: Network):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x), dim=1)


class Prediction(nn.Module):
    """The served regressor: raw (encoded) inputs in, the prediction in the target's own units out, one per row."""

    def __init__(self, network: Network, target_mean: float, target_std: float):
        super().__init__()
        self.network = network
        self.register_buffer("target_mean", torch.tensor(target_mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(target_std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[:, 0] * self.target_std + self.target_mean


def served(network: Network, transform: Transform, task: str) -> nn.Module:
    """The module whose outputs the served model answers: probabilities (classification) or predictions."""
    if task == REGRESSION:
        return Prediction(network, transform.target_mean, transform.target_std)
    return Probabilities(network)


def build_model(
    arch: str, transform: Transform, num_outputs: int, *, hidden: int, layers: int, dropout: float, channels: int
) -> Network:
    """The network for an architecture name (``mlp``, ``cnn`` or ``auto``: cnn for images, mlp otherwise) with
    ``num_outputs`` outputs (the classes, or 1 for regression)."""
    if arch == "auto":
        arch = "cnn" if transform.kind == "image" else "mlp"
    if arch == "cnn":
        if len(transform.input_shape) != 2:
            raise ValueError(f"a CNN needs 2-dimensional images, the features have shape {transform.input_shape}")
        net: nn.Module = CNN(transform.input_shape, num_outputs, channels=channels, hidden=hidden, dropout=dropout)
    elif arch == "mlp":
        net = MLP(int(np.prod(transform.input_shape)), num_outputs, hidden=hidden, layers=layers, dropout=dropout)
    else:
        raise ValueError(f"unknown model architecture {arch!r} (mlp, cnn or auto)")
    return Network(Normalize(transform), net)
