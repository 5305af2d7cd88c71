"""Jacobians of uploaded models (issue 8, item 4): per block between probe points and end to end.

* Exact mode against an independent reference: the eager module, a forward hook replacing probe point
  i's output by z and reading probe point i+1's, differentiated per example by ``torch.func.jacrev``
  and ``svdvals``. Float64 models: both sides are exact to rounding, relative 1e-9.
* Estimate mode against exact mode on the same (float32, as uploaded) blocks, large enough that the
  Lanczos steps do not span the space: every exact value inside the bounds the estimate reports,
  widened by the exact value's own resolution (its ``sv_floor`` on σ, hence 2·σ_max·sv_floor on σ²).
  The ± 3 standard-error parts hold with ≈ 99.7 % probability each; the seeds are fixed.
* The MLP uploaded as safetensors gives the built-in MLP's J^i numbers (float64 Grams; J is formed in
  float32 on both sides, one product per entry: relative 1e-5).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from glorot_core.models import build_mlp
from glorot_core.runner import run_experiment
from glorot_core.spec import JacobianSpec, ModelSpec, validate_spec
from glorot_core.uploads.jacobians import uploaded_jacobian_spectra
from glorot_core.uploads.segments import graph_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upload_fixtures import TinyTransformer, small_cnn

QUANTITIES = ("mean_sv", "mean_sq_sv", "max_sv")


def _f(v: Any) -> float:
    return float(v)


def _exported(net: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    return torch.export.export(net, (example,)).module()


def _hooked(net: nn.Module, start: str, end: str, x1: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """z ↦ module ``end``'s output with module ``start``'s output replaced by z, for one example x1."""
    modules = dict(net.named_modules())

    def f(z: torch.Tensor) -> torch.Tensor:
        got: list[torch.Tensor] = []
        h1 = modules[start].register_forward_hook(lambda _m, _i, _o: z[None])
        h2 = modules[end].register_forward_hook(lambda _m, _i, o: got.append(o))
        try:
            net(x1)
        finally:
            h1.remove()
            h2.remove()
        return got[-1][0]

    return f


def _output_of(net: nn.Module, start: str, x1: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """z ↦ the model's output with module ``start``'s output replaced by z (end to end)."""
    modules = dict(net.named_modules())

    def f(z: torch.Tensor) -> torch.Tensor:
        h = modules[start].register_forward_hook(lambda _m, _i, _o: z[None])
        try:
            return net(x1)[0]
        finally:
            h.remove()

    return f


def _value_at(net: nn.Module, name: str, x1: torch.Tensor) -> torch.Tensor:
    got: list[torch.Tensor] = []
    h = dict(net.named_modules())[name].register_forward_hook(lambda _m, _i, o: got.append(o.detach()))
    with torch.no_grad():
        net(x1)
    h.remove()
    return got[0][0]


def _reference(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    j = torch.func.jacrev(fn)(z)
    out_n = math.prod(j.shape[: j.dim() - z.dim()])
    return torch.linalg.svdvals(j.reshape(out_n, z.numel()))


def _assert_matches(section: dict[str, Any], sv: torch.Tensor) -> None:
    """Exact section vs reference singular values (E, k): the statistics of module jacobian.py.

    σ from a Gram eigen-solve is resolved to the section's ``sv_floor`` (≈ √(k ε₆₄) σ_max): σ that are
    0 in exact arithmetic (rank-deficient blocks) come out anywhere below it, so mean σ and min σ are
    compared to that absolute resolution; mean σ² and σ_max are well conditioned (relative 1e-9).
    """
    assert section["mode"] == "exact" and section["examples"] == sv.shape[0]
    floor = _f(section["sv_floor"])
    assert floor <= 1e-6 * sv.max().item()
    assert _f(section["mean_sv"]) == pytest.approx(sv.mean().item(), rel=1e-9, abs=floor)
    assert _f(section["min_sv"]) == pytest.approx(sv.min().item(), rel=1e-9, abs=floor)
    for key, ref in (("mean_sq_sv", sv.square().mean()), ("max_sv", sv.max())):
        assert _f(section[key]) == pytest.approx(ref.item(), rel=1e-9), key


def test_exact_blocks_of_a_cnn_match_eager_jacobians() -> None:
    net = small_cnn().double().eval()  # conv(1→4) tanh maxpool flatten linear(36→10) softsign
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for view, batch in ((graph_view(net, exported=False), None),
                        (graph_view(_exported(net, x[:2]), exported=True), 2)):  # traced batch 2: a padded chunk
        res = uploaded_jacobian_spectra(view, x, ["1", "5"], JacobianSpec(mode="exact", precision="float64"), 20,
                                        static_batch=batch)
        block, last, e2e = res["layers"][0], res["layers"][1], res["end_to_end"]
        assert last is None and (block["from"], block["to"]) == ("1", "5") and block["size"] == [10, 144]
        ref = torch.stack([_reference(_hooked(net, "1", "5", x[b:b + 1]), _value_at(net, "1", x[b:b + 1]))
                           for b in range(5)])
        _assert_matches(block, ref)
        assert (e2e["from"], e2e["to"], e2e["size"]) == ("input", "output", [10, 64])
        ref = torch.stack([_reference(lambda v, b=b: net(v[None])[0], x[b]) for b in range(5)])
        _assert_matches(e2e, ref)


def test_exact_blocks_of_a_transformer_match_eager_jacobians() -> None:
    # Blocks across attention, a residual sum and a LayerNorm: the skip path and the norm's inputs from
    # upstream stay fixed in both computations (the hook replaces one module's output, the rest reruns).
    torch.manual_seed(0)
    net = TinyTransformer().double().eval()
    tokens = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(2))
    view = graph_view(_exported(net, tokens[:3]), exported=True)
    assert view.embedding is not None
    pairs = [("blocks.0.mlp.act", "blocks.1.mlp.act"), ("blocks.0", "blocks.1.norm2")]
    for a, b in pairs:
        res = uploaded_jacobian_spectra(view, tokens, [a, b], JacobianSpec(mode="exact", precision="float64"), 20,
                                        static_batch=3)
        sec = res["layers"][0]
        assert (sec["from"], sec["to"]) == (a, b)
        ref = torch.stack([_reference(_hooked(net, a, b, tokens[i:i + 1]), _value_at(net, a, tokens[i:i + 1]))
                           for i in range(3)])
        _assert_matches(sec, ref)
    e2e = res["end_to_end"]
    assert (e2e["from"], e2e["to"], e2e["size"]) == ("embedding", "output", [5, 8 * 16])
    ref = torch.stack([_reference(_output_of(net, "embed", tokens[i:i + 1]), _value_at(net, "embed", tokens[i:i + 1]))
                       for i in range(3)])
    _assert_matches(e2e, ref)


def _bigger_cnn() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.Tanh(), nn.Conv2d(6, 6, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(96, 10)).eval()


def _mlp() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(60, 80), nn.Tanh(), nn.Linear(80, 70), nn.Tanh(), nn.Linear(70, 5)).eval()


def _cases() -> dict[str, tuple[Any, torch.Tensor, list[str], int | None]]:
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    tokens = torch.randint(0, 50, (4, 8), generator=g)
    transformer = _exported(TinyTransformer().eval(), tokens)
    return {
        # conv block (6×6×6 = 216) → (6×4×4 = 96): 96 singular values, 16 Lanczos steps
        "cnn": (graph_view(_bigger_cnn(), exported=False), torch.randn(4, 1, 8, 8, generator=g), ["1", "3"], None),
        "mlp": (graph_view(_mlp(), exported=False), torch.rand(4, 60, generator=g) * 2 - 1, ["1", "3"], None),
        # 8 tokens × 64 GELU features → the next block's: 512 × 512 through attention, residuals, norms
        "transformer": (graph_view(transformer, exported=True), tokens, ["blocks.0.mlp.act", "blocks.1.mlp.act"], 4),
    }


@pytest.mark.parametrize("case", ["cnn", "mlp", "transformer"])
def test_estimates_agree_with_exact_spectra_within_their_bounds(case: str) -> None:
    view, x, names, batch = _cases()[case]
    exact = uploaded_jacobian_spectra(view, x, names, JacobianSpec(mode="exact", precision="float64"), 20,
                                      static_batch=batch)
    est = uploaded_jacobian_spectra(view, x, names, JacobianSpec(mode="estimate", estimate_iterations=16), 20,
                                    static_batch=batch, seed=7)
    for e, d in ((exact["layers"][0], est["layers"][0]), (exact["end_to_end"], est["end_to_end"])):
        assert d["mode"] == "estimate" and d["probes"] == 4 and (d["from"], d["to"]) == (e["from"], e["to"])
        floor = _f(e["sv_floor"])
        tol = {"mean_sv": floor, "max_sv": floor, "mean_sq_sv": 2 * _f(e["max_sv"]) * floor + floor**2}
        for q in QUANTITIES:
            assert _f(d[f"{q}_lower"]) - tol[q] <= _f(e[q]) <= _f(d[f"{q}_upper"]) + tol[q], (case, q, e[q], d)
        assert _f(d["min_sv"]) >= _f(e["min_sv"]) - floor  # smallest Ritz value: an upper bound on σ_min
    block = (exact["layers"][0], est["layers"][0])
    assert block[1]["iterations"] == 16 < min(block[0]["size"])  # the Krylov space is not the whole space
    # informative, not vacuous: mean σ, mean σ² within 30 %, σ_max within 2 %
    assert _f(block[1]["mean_sv_bound"]) <= 0.3 * _f(block[0]["mean_sv"])
    assert _f(block[1]["mean_sq_sv_bound"]) <= 0.3 * _f(block[0]["mean_sq_sv"])
    assert _f(block[1]["max_sv_bound"]) <= 0.02 * _f(block[0]["max_sv"])


def test_mlp_uploaded_as_safetensors_gives_the_built_in_jacobians(tmp_path: Path) -> None:
    arch = {"kind": "mlp", "input_dim": 1024, "hidden": [32, 24, 16], "num_classes": 9, "activation": "tanh"}
    jac = {"mode": "exact", "precision": "float64", "examples": 12}
    diag = {"monitor_examples": 30, "jacobian": jac}
    builtin = validate_spec({"model": {k: v for k, v in arch.items() if k != "kind"}, "diagnostics": diag,
                             "device": "cpu"})
    mlp, _ = build_mlp(builtin.model, seed=builtin.train.seed)
    seq = nn.Sequential(nn.Linear(1024, 32), nn.Tanh(), nn.Linear(32, 24), nn.Tanh(), nn.Linear(24, 16), nn.Tanh(),
                        nn.Linear(16, 9))
    for i, lin in zip((0, 2, 4, 6), mlp.linears, strict=True):
        seq[i].load_state_dict(lin.state_dict())
    save_file(seq.state_dict(), str(tmp_path / "mlp.safetensors"))
    uploaded = validate_spec({"model": {"source": "file", "path": str(tmp_path / "mlp.safetensors"),
                                        "format": "safetensors", "architecture": arch},
                              "diagnostics": diag, "device": "cpu"})
    a, b = run_experiment(builtin)["snapshots"][0], run_experiment(uploaded)["snapshots"][0]  # Shapeset monitor set
    blocks = [lay for lay in b["layers"] if lay.get("role", "activation") == "activation"]
    assert [lay["name"] for lay in blocks] == ["1", "3", "5"]
    for la, lb in zip(a["layers"], blocks, strict=True):
        if la["jacobian"] is None:
            assert lb["jacobian"] is None
            continue
        for key in ("mean_sv", "mean_sq_sv", "max_sv", "min_sv", "condition_number"):
            assert lb["jacobian"][key] == pytest.approx(la["jacobian"][key], rel=1e-5), key
        assert lb["jacobian"]["examples"] == la["jacobian"]["examples"] == 12
    # End to end: the built-in MLP's stops at the last hidden layer, an upload's goes on to the logits.
    assert (b["end_to_end"]["from"], b["end_to_end"]["to"], b["end_to_end"]["size"]) == ("input", "output", [9, 1024])
    assert b["end_to_end"]["max_sv"] > 0


def test_report_blocks_are_named_by_their_probe_points_and_auto_picks_the_mode(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(TinyTransformer().eval(), (torch.zeros(4, 8, dtype=torch.int64),)),
                      str(path))
    spec = validate_spec({"model": {"source": "file", "path": str(path), "format": "exported"},
                          "data": {"dataset": "tokens", "vocab_size": 50, "sequence_length": 8},
                          "diagnostics": {"monitor_examples": 6, "histogram_bins": 20,
                                          "jacobian": {"examples": 2, "exact_max_dim": 100, "estimate_iterations": 4}},
                          "device": "cpu"})
    assert spec.diagnostics.jacobian.mode == "auto"  # the default for uploaded models
    report = run_experiment(spec)
    names = [lay["name"] for lay in report["layers"]]
    layers = report["snapshots"][0]["layers"]
    assert len(names) >= 2 and layers[-1]["jacobian"] is None
    for i, lay in enumerate(layers[:-1]):
        sec = lay["jacobian"]
        assert (lay["name"], sec["from"], sec["to"]) == (names[i], names[i], names[i + 1])
        n_out, n_in = sec["size"]
        assert sec["mode"] == ("exact" if min(n_in, n_out) <= 100 else "estimate")
        assert sec["mean_sv"] > 0 and sec["examples"] == 2
    e2e = report["snapshots"][0]["end_to_end"]
    # every probe point is ≥ 128 wide (8 tokens × 16 or 64 features): blocks estimated; 5 logits: exact
    assert {lay["jacobian"]["mode"] for lay in layers[:-1]} == {"estimate"}
    assert (e2e["from"], e2e["to"], e2e["mode"], e2e["size"]) == ("embedding", "output", "exact", [5, 128])


class _TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([torch.tanh(self.a(x)), torch.sigmoid(self.b(x))], dim=-1))


def test_points_on_parallel_branches_have_no_block() -> None:
    # sigmoid(b(x)) is not downstream of tanh(a(x)): ∂/∂ is 0, there is no block between them.
    x = torch.randn(3, 4)
    view = graph_view(_exported(_TwoBranches().eval(), x), exported=True)
    assert set(view.points) == {"tanh", "sigmoid"}
    res = uploaded_jacobian_spectra(view, x, ["tanh", "sigmoid"], JacobianSpec(), 10, static_batch=3)
    assert res["layers"] == [None, None] and res["end_to_end"]["from"] == "input"
    assert uploaded_jacobian_spectra(view, x, ["tanh", "sigmoid"], JacobianSpec(mode="off"), 10) == \
        {"layers": [], "end_to_end": None}


class _OneHotTokens(nn.Module):
    """Token ids one-hot encoded (no embedding look-up): nothing differentiable starts at the input."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(40, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = nn.functional.one_hot(t, 10).float().flatten(1)
        return self.out(torch.tanh(self.b(torch.tanh(self.a(h)))))


def test_integer_inputs_without_an_embedding_have_no_end_to_end() -> None:
    t = torch.randint(0, 10, (3, 4), generator=torch.Generator().manual_seed(8))
    view = graph_view(_exported(_OneHotTokens().eval(), t), exported=True)
    assert view.embedding is None and len(view.points) == 2  # the two tanh
    res = uploaded_jacobian_spectra(view, t, list(view.points), JacobianSpec(), 10, static_batch=3)
    assert res["end_to_end"] is None  # ids have no derivative and no embedding output was found
    assert res["layers"][0]["size"] == [6, 6] and res["layers"][1] is None


def test_uploaded_models_default_to_auto_and_take_every_mode() -> None:
    model = {"source": "uploaded", "model_id": "m1"}
    assert validate_spec({"model": model}).diagnostics.jacobian.mode == "auto"
    for mode in ("exact", "estimate", "auto", "off"):
        assert validate_spec({"model": model, "diagnostics": {"jacobian": {"mode": mode}}}).diagnostics.jacobian.mode \
            == mode
    assert validate_spec({}).diagnostics.jacobian.mode == "exact"  # the built-in MLP's default is unchanged


def test_auto_is_exact_for_the_built_in_mlp() -> None:
    from glorot_core.instruments.jacobian import jacobian_spectra

    model, _ = build_mlp(ModelSpec(input_dim=12, hidden=[9, 8, 7], num_classes=3))
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(9))
    auto = jacobian_spectra(model, x, JacobianSpec(mode="auto", examples=4), 10)
    exact = jacobian_spectra(model, x, JacobianSpec(mode="exact", examples=4), 10)
    for a, e in zip([*auto["layers"], auto["end_to_end"]], [*exact["layers"], exact["end_to_end"]], strict=True):
        assert a["mode"] == "exact" and torch.equal(a["mean_sv"], e["mean_sv"])
