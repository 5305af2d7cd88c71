"""Files the upload tests send: a small CNN in every format, a tiny transformer, a pickle that leaves a
marker file when unpickled (planted alone and inside a .pt2), a TorchScript archive and zip bombs."""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

CNN_ARCH: dict[str, Any] = {"kind": "cnn", "layers": [
    {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
    {"type": "activation", "name": "tanh"},
    {"type": "pooling", "mode": "max", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "linear", "in_features": 36, "out_features": 10},
    {"type": "activation", "name": "softsign"},
]}
CNN_INPUT = {"shape": [1, 8, 8]}


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 10),
                         nn.Softsign())


def write_cnn_files(folder: Path) -> dict[str, Path]:
    """The same CNN as safetensors, state_dict (.pt) and torch.export (.pt2)."""
    net = small_cnn()
    paths = {"safetensors": folder / "cnn.safetensors", "state_dict": folder / "cnn.pt",
             "exported": folder / "cnn.pt2"}
    save_file(net.state_dict(), str(paths["safetensors"]))
    torch.save(net.state_dict(), paths["state_dict"])
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 8, 8),)), str(paths["exported"]))
    return paths


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential()
        self.mlp.fc, self.mlp.act, self.mlp.out = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        h = h + self.proj(att @ v)
        return h + self.mlp(self.norm2(h))


class TinyTransformer(nn.Module):
    """Embedding, attention, an MLP with GELU, residuals and LayerNorm: the shape of a transformer block."""

    def __init__(self, vocab: int = 50, d: int = 16, blocks: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(_Block(d) for _ in range(blocks))
        self.head = nn.Linear(d, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for b in self.blocks:
            h = b(h)
        return self.head(h.mean(dim=1))


class _Marker:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff the pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"0.weight": _Marker(marker)}, protocol=2)


def evil_torch_save(marker: Path) -> bytes:
    """A torch.save zip whose data.pkl runs code (what a full-pickle state_dict is)."""
    buf = io.BytesIO()
    torch.save({"x": _Marker(marker)}, buf)
    return buf.getvalue()


def plant_in_pt2(pt2: Path, out: Path, payload: bytes, member_suffix: str = "data/sample_inputs/model.pt") -> None:
    """A copy of ``pt2`` whose member ending in ``member_suffix`` is replaced by ``payload``."""
    with zipfile.ZipFile(pt2) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = payload if info.filename.endswith(member_suffix) else src.read(info.filename)
            dst.writestr(info, data)


def torchscript_file(path: Path) -> None:
    torch.jit.save(torch.jit.script(small_cnn()), str(path))


def zip_bomb(path: Path, inflated: int = 200 << 20) -> None:
    """A few hundred KB that inflate to ``inflated`` bytes of zeros, named like a .pt2 member."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("m/data/sample_inputs/model.pt", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(inflated >> 20):
                f.write(block)
        z.writestr("m/archive_format", "pt2")


def save_builtin_mlp(model: nn.Module, path: Path) -> Path:
    """The built-in MLP ``model``'s weights as the user's own ``nn.Sequential`` of the same Linear/Tanh
    modules would write them (keys ``0.weight``, ``2.weight``, …), saved as safetensors at ``path``."""
    layers: list[nn.Module] = []
    for lin in model.linears:
        layers += [nn.Linear(lin.in_features, lin.out_features), nn.Tanh()]
    seq = nn.Sequential(*layers[:-1])
    for i, lin in zip(range(0, len(seq), 2), model.linears, strict=True):
        seq[i].load_state_dict(lin.state_dict())
    save_file(seq.state_dict(), str(path))
    return path
