"""Save a small network of your own in the forms the service takes (docs/uploads.md, "Formats").

    .venv/bin/python examples/save_model.py [FOLDER]      (default: my-model)

writes into FOLDER (the paths are printed):

* ``tiny-cnn.pt2`` — the network exported with ``torch.export`` (its graph carries the architecture and
  the input shape: upload it with ``{"format": "exported"}``);
* ``tiny-cnn.safetensors`` — the same weights alone (its ``state_dict``), and
* ``tiny-cnn.architecture.json`` — the architecture that rebuilds the ``nn.Sequential`` module by module
  (``layers[i]`` is module ``i``, so the weight names match), the ``architecture`` of an upload's
  ``metadata`` (``glorot models upload --architecture``); a CNN's upload also says one example's input
  shape (``--input-shape 1,32,32``), which a weights file does not hold.

The network takes one 32×32 grey image, the shape of a Shapeset-3x2 example, and has 9 outputs, one per
Shapeset class, so a spec can diagnose (and fine-tune) it on that data set: conv 3×3 (1 → 4 channels),
tanh, 2×2 max-pooling, flatten, linear 900 → 32, tanh, linear 32 → 9. Its probe points are the two tanh.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

#: One example's input (channels, height, width): a Shapeset-3x2 image.
INPUT_SHAPE = [1, 32, 32]

#: The upload's description of :func:`tiny_cnn`, layer for module (docs/uploads.md, ``architecture``).
ARCHITECTURE: dict[str, Any] = {"kind": "cnn", "layers": [
    {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
    {"type": "activation", "name": "tanh"},
    {"type": "pooling", "mode": "max", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "linear", "in_features": 4 * 15 * 15, "out_features": 32},
    {"type": "activation", "name": "tanh"},
    {"type": "linear", "in_features": 32, "out_features": 9},
]}


def tiny_cnn(seed: int = 0) -> nn.Sequential:
    """The network, with PyTorch's default initialisation under ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 15 * 15, 32), nn.Tanh(), nn.Linear(32, 9))


#: The files :func:`save` writes, by what they hold.
FILES = {"exported": "tiny-cnn.pt2", "safetensors": "tiny-cnn.safetensors",
         "architecture": "tiny-cnn.architecture.json"}


def save(folder: Path) -> dict[str, Path]:
    """Write the three files of :data:`FILES` into ``folder`` (created if absent); their paths by key."""
    folder.mkdir(parents=True, exist_ok=True)
    net = tiny_cnn().eval()  # export in eval mode: the service diagnoses examples independently
    paths = {key: folder / name for key, name in FILES.items()}
    example = torch.zeros(2, *INPUT_SHAPE)
    batch = {0: torch.export.Dim("batch", min=1, max=4096)}  # any batch size, not only the example's
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=(batch,)), str(paths["exported"]))
    save_file(net.state_dict(), str(paths["safetensors"]))
    paths["architecture"].write_text(json.dumps(ARCHITECTURE, indent=1) + "\n")
    return paths


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "my-model")
    for path in save(out).values():
        print(path)
