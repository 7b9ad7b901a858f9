"""The CNN used by ``train.py`` and a loader for the model artefact it writes.

Kept free of training code so an inference host (or a test) can import it with only
torch installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

MODEL_FILE = "model.pt"
INFO_FILE = "model_info.json"


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    # BatchNorm is what lets plain SGD reach ~0.97 after two epochs; conv bias is
    # redundant in front of it.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class DigitsCNN(nn.Module):
    """Three 3×3 conv blocks over 1×8×8 inputs: 8×8 → pool → 4×4 → pool → 2×2 → linear.

    ``width`` is the channel count of the first block; the later ones use 2×width. The
    default (128) is deliberately wider than the task needs, so that one epoch costs a
    few seconds of CPU and spot-interruption demos land mid-training.
    """

    def __init__(self, width: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.kwargs: dict[str, Any] = {"width": width, "num_classes": num_classes}
        self.features = nn.Sequential(
            *_conv_block(1, width),
            *_conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_block(2 * width, 2 * width),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * width * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def load_model(model_dir: str | Path) -> DigitsCNN:
    """Rebuild the trained network from ``model.pt`` + ``model_info.json``, in eval mode."""
    model_dir = Path(model_dir)
    info = json.loads((model_dir / INFO_FILE).read_text())
    model = DigitsCNN(**info["kwargs"])
    state = torch.load(model_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model
