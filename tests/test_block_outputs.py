"""Probe points at block outputs of uploaded models (residual sums, norm outputs) and activations written
out by hand (issue 8, item 3).

Equalities with the eager module: the exported program is run op by op on the same ATen kernels, in
chunks of its traced batch size; the eager module here runs on the same chunks, so the tensors are the
same float32 values up to kernel rounding (relative 1e-5 on moments and gradients; histogram counts may
differ only for an entry within rounding of a bin edge, so they are compared to within 1 count per bin).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec
from glorot_core.uploads.capture import capture
from glorot_core.uploads.inspect import ModelInfo, inspect_model_file
from glorot_core.uploads.probe_points import graph_probe_points

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upload_fixtures import TinyTransformer

TRACED_BATCH = 4


class NewGELU(nn.Module):
    """GPT-2's GELU, written out (tanh form)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class HandWritten(nn.Module):
    """Activations as formulas: a GELU module, then softsign, erf-GELU and SiLU inline, and 2·tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 6), NewGELU(), nn.Linear(6, 6)
        self.fc3, self.fc4, self.fc5 = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc2(self.act(self.fc1(x)))
        h = self.fc3(h / (1 + h.abs()))
        h = self.fc4(0.5 * h * (1 + torch.erf(h / math.sqrt(2.0))))
        h = self.fc5(h * torch.sigmoid(h))
        return 2 * torch.tanh(h)  # not a known function as a whole: the tanh op is the activation


def _export(net: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    return torch.export.export(net.eval(), (example,))


def test_hand_written_activations_are_found_by_what_they_compute() -> None:
    torch.manual_seed(0)
    net = HandWritten().eval()
    ep = _export(net, torch.zeros(TRACED_BATCH, 6))
    points = graph_probe_points(ep.graph)
    assert [(p.name, p.activation, p.role) for p in points] == [
        ("act", "gelu_tanh", "activation"),  # a module holding only the formula is named by its path
        ("softsign", "softsign", "activation"),  # inline at top level: named by the function
        ("gelu", "gelu", "activation"),  # the erf form, told apart from the tanh form (4.7e-4 apart)
        ("silu", "silu", "activation"),  # x·sigmoid(x) is one SiLU, not a sigmoid
        ("tanh", "tanh", "activation"),
    ]
    # s and z at each point are the formula's input and output, and z = f(s) for the named f.
    x = torch.randn(TRACED_BATCH, 6, generator=torch.Generator().manual_seed(1))
    raw = capture(ep.module(), x, None, graph=True, batch=TRACED_BATCH)
    inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: inputs.append(out.detach()))
             for m in (net.fc1, net.fc2, net.fc3, net.fc4, net.fc5)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    fns = {"gelu_tanh": lambda s: F.gelu(s, approximate="tanh"), "softsign": F.softsign, "gelu": F.gelu,
           "silu": F.silu, "tanh": torch.tanh}
    for site, s_eager in zip(raw.sites, inputs, strict=True):
        torch.testing.assert_close(site.s, s_eager, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(site.z, fns[site.activation](s_eager), rtol=1e-5, atol=1e-6)
    assert all(site.weight is not None for site in raw.sites)  # each is fed by its Linear directly


def test_nn_softsign_and_tanh_gelu_modules_keep_their_names() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.Softsign(), nn.Linear(3, 3), nn.GELU(approximate="tanh"))
    points = graph_probe_points(_export(net, torch.zeros(2, 3)).graph)
    assert [(p.name, p.activation) for p in points] == [("1", "softsign"), ("3", "gelu_tanh")]


class ResBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)) + x)


class PosEmbed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.pos = nn.Embedding(10, 4), nn.Parameter(torch.randn(5, 4))
        self.fc = nn.Linear(4, 4)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        u = self.fc(self.embed(t) + self.pos)  # neither operand of this sum is an ancestor of the other
        return torch.tanh(u + 0.5 * u)  # u is an ancestor of 0.5·u, but through no layer: not a residual


def test_residual_sums_need_an_ancestor_operand_across_a_layer() -> None:
    resnet = nn.Sequential(ResBlock(), nn.Flatten(), nn.Linear(27, 2))
    points = graph_probe_points(_export(resnet, torch.zeros(2, 3, 3, 3)).graph)
    assert [(p.name, p.role, p.kind) for p in points] == [
        ("0.bn", "norm", "conv"),
        ("0.add", "residual", "conv"),  # not the block's last node (the relu is): named <path>.add
        ("0.relu", "activation", "conv"),
    ]
    points = graph_probe_points(_export(PosEmbed(), torch.zeros(2, 5, dtype=torch.int64)).graph)
    assert [(p.name, p.role) for p in points] == [("tanh", "activation")]


def _tokens_spec(path: Path, examples: int) -> Any:
    return validate_spec({"model": {"source": "file", "path": str(path), "format": "exported"},
                          "data": {"dataset": "tokens", "vocab_size": 50, "sequence_length": 8, "seed": 5},
                          "diagnostics": {"monitor_examples": examples}, "device": "cpu"})


Tensors = dict[str, torch.Tensor]


def _eager_points(net: TinyTransformer, tokens: torch.Tensor) -> tuple[Tensors, Tensors]:
    """Each block output's value and ∂C/∂(value) on ``tokens`` by forward hooks on the eager module, in
    chunks of the traced batch (C = Σ_n mean_k y², the cost without labels)."""
    values: dict[str, list[torch.Tensor]] = {}
    grads: dict[str, list[torch.Tensor]] = {}
    seen: dict[str, torch.Tensor] = {}
    for chunk in tokens.split(TRACED_BATCH):
        seen.clear()
        hooks = []
        for i, block in enumerate(net.blocks):
            hooks.append(block.register_forward_pre_hook(lambda _m, inp, i=i: seen.__setitem__(f"in{i}", inp[0])))
            hooks.append(block.proj.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(f"proj{i}", out)))
            for norm in ("norm1", "norm2"):
                hooks.append(getattr(block, norm).register_forward_hook(
                    lambda _m, _i, out, k=f"blocks.{i}.{norm}": seen.__setitem__(k, out)))
            hooks.append(block.register_forward_hook(lambda _m, _i, out, k=f"blocks.{i}": seen.__setitem__(k, out)))
        out = net(chunk)
        for h in hooks:
            h.remove()
        cost = out.square().mean(dim=1).sum()
        names = [k for k in seen if k.startswith("blocks.")]
        for i in range(len(net.blocks)):  # h + proj(att·v): its gradient is the proj output's (∂sum/∂proj = I)
            seen[f"blocks.{i}.add"] = seen[f"proj{i}"]
        names += [f"blocks.{i}.add" for i in range(len(net.blocks))]
        g = torch.autograd.grad(cost, [seen[k] for k in names])
        for k, gk in zip(names, g, strict=True):
            v = seen[k] if not k.endswith(".add") else seen[f"in{k.split('.')[1]}"] + seen[k]
            values.setdefault(k, []).append(v.detach())
            grads.setdefault(k, []).append(gk.detach())
    return ({k: torch.cat(v) for k, v in values.items()}, {k: torch.cat(v) for k, v in grads.items()})


def _std(t: torch.Tensor) -> float:
    """The report's std: unbiased, pooled over every entry."""
    return float(t.double().std())


def test_transformer_residual_and_norm_points_match_forward_hooks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyTransformer().eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(_export(net, torch.zeros(TRACED_BATCH, 8, dtype=torch.int64)), str(path))
    expected = [(n, r) for b in ("blocks.0", "blocks.1") for n, r in (
        (f"{b}.norm1", "norm"), (f"{b}.add", "residual"), (f"{b}.norm2", "norm"), (f"{b}.mlp.act", "activation"),
        (b, "residual"))]  # forward order; the sum closing block i is named blocks.i

    info = inspect_model_file(path, {"format": "exported"})  # what POST /v1/models answers
    assert [(p.name, p.role) for p in info.probe_points] == expected
    assert all(p.activation == ("gelu" if p.role == "activation" else "none") for p in info.probe_points)
    assert ModelInfo.from_dict(info.to_dict()) == info and info.to_dict()["probe_points"][0]["role"] == "norm"

    report = run_experiment(_tokens_spec(path, 32))
    assert [(lay["name"], lay["role"]) for lay in report["layers"]] == expected
    tokens = torch.randint(0, 50, (32, 8), generator=torch.Generator().manual_seed(5), dtype=torch.int64)
    values, grads = _eager_points(net, tokens)
    for desc, lay in zip(report["layers"], report["snapshots"][0]["layers"], strict=True):
        if desc["role"] == "activation":
            assert lay["saturation"] is not None and lay["weight_grad"] is not None
            continue
        v, g = values[desc["name"]], grads[desc["name"]]
        assert desc["kind"] == "sequence" and desc["shape"] == [8, 16] and desc["activation"] == "none"
        assert lay["saturation"] is None  # no activation, no saturation rule
        assert lay["weight_grad"] is None  # s is not fed by one weight
        assert lay["activation"]["mean"] == pytest.approx(float(v.double().mean()), rel=1e-5, abs=1e-6)
        assert lay["activation"]["std"] == pytest.approx(_std(v), rel=1e-5)
        assert lay["backprop_grad"]["std"] == pytest.approx(_std(g), rel=1e-5)
        hist = lay["activation"]["histogram"]
        assert (hist["edges"][0], hist["edges"][-1]) == (-5.0, 5.0)  # the unbounded symmetric range
        counts = torch.histc(v.double().clamp(-5, 5), bins=len(hist["counts"]), min=-5, max=5)
        counts[0] -= int((v < -5).sum())
        counts[-1] -= int((v > 5).sum())
        assert hist["underflow"] == int((v < -5).sum()) and hist["overflow"] == int((v > 5).sum())
        assert max(abs(a - b) for a, b in zip(hist["counts"], counts.tolist(), strict=True)) <= 1
        if desc["role"] == "norm":  # LayerNorm with its initial affine (1, 0): every token has mean 0, variance 1
            assert lay["activation"]["std"] == pytest.approx(1.0, rel=1e-3)
    assert isinstance(report["verdicts"], list)  # the verdicts ran over the null saturation sections


def test_described_cnn_gets_a_norm_point_after_each_batchnorm(tmp_path: Path) -> None:
    arch = {"kind": "cnn", "layers": [
        {"type": "conv2d", "in_channels": 1, "out_channels": 3, "kernel_size": 3},
        {"type": "batchnorm", "num_features": 3},
        {"type": "activation", "name": "tanh"},
        {"type": "flatten"},
        {"type": "linear", "in_features": 108, "out_features": 4},
    ]}
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(108, 4))
    net[1].running_mean.copy_(torch.tensor([0.3, -0.2, 0.1]))  # running statistics that are not (0, 1)
    net[1].running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
    save_file(net.state_dict(), str(tmp_path / "cnn.safetensors"))
    meta = {"format": "safetensors", "architecture": arch, "input": {"shape": [1, 8, 8]}}
    info = inspect_model_file(tmp_path / "cnn.safetensors", meta)
    assert [(p.name, p.role, p.activation, p.shape) for p in info.probe_points] == [
        ("1", "norm", "none", (3, 6, 6)), ("2", "activation", "tanh", (3, 6, 6))]
    assert graph_probe_points(_export(net, torch.zeros(2, 1, 8, 8)).graph) == info.probe_points  # as a graph too

    report = run_experiment(validate_spec({
        "model": {"source": "file", "path": str(tmp_path / "cnn.safetensors"), **meta},
        "data": {"dataset": "random", "shape": [1, 8, 8], "seed": 2}, "diagnostics": {"monitor_examples": 40},
        "device": "cpu"}))
    assert [(lay["name"], lay["role"]) for lay in report["layers"]] == [("1", "norm"), ("2", "activation")]
    net.eval()
    x = torch.randn((40, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    bn_out = net[1](net[0](x))
    (g,) = torch.autograd.grad(net[2:](bn_out).square().mean(dim=1).sum(), bn_out)
    norm, act = report["snapshots"][0]["layers"]
    assert norm["saturation"] is None and act["saturation"]["rule"].startswith("output <= -0.95")
    assert norm["activation"]["std"] == pytest.approx(_std(bn_out), rel=1e-5)
    assert norm["activation"]["mean"] == pytest.approx(float(bn_out.double().mean()), rel=1e-4, abs=1e-6)
    assert norm["backprop_grad"]["std"] == pytest.approx(_std(g), rel=1e-5)
    # the tanh's s is the norm's z: both points' ∂C/∂s are the gradient at that one tensor
    assert act["backprop_grad"]["std"] == pytest.approx(norm["backprop_grad"]["std"], rel=1e-6)
