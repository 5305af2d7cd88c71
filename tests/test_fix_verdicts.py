"""Verdicts that say what to change (issue 8 item 5): the gain that brings a block's mean squared singular
value to 1, the init scheme that would, and the learning-rate bound 2/λ_max from the Hessian's top
eigenvalue.

The numbers are checked against theory: J^i = diag(f′(s_{i+1})) W_{i+1}, so for linear layers χ_i (the
mean squared singular value) scales exactly as c² when W_{i+1} does, and g = 1/√χ restores 1; an
orthogonal W preserves every gradient's norm, so the gradient-ratio estimate is exact there too; the top
Hessian eigenvalue of a quadratic is known exactly, and gradient descent on it is stable exactly below
2/λ_max.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from glorot_core.data import open_dataset
from glorot_core.fixes import init_scheme, mean_sq_derivative_normal
from glorot_core.instruments.curvature import top_hessian_eigenvalue
from glorot_core.instruments.jacobian import layer_jacobian_spectra
from glorot_core.models import build_mlp
from glorot_core.report import metric_rows
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec


def _spec(model: dict[str, Any], *, jacobian: str = "exact", curvature: str = "off", steps: int = 0,
          lr: float = 0.01, input_range: tuple[float, float] = (-1.0, 1.0)) -> Any:
    return validate_spec({
        "model": {"hidden": [64, 64, 64], **model}, "data": {"test_examples": 50, "input_range": list(input_range)},
        "train": {"steps": steps, "lr": lr},
        "diagnostics": {"every": max(steps, 1), "monitor_examples": 60,
                        "jacobian": {"mode": jacobian, "examples": 4, "precision": "float64"},
                        "curvature": {"mode": curvature}},
        "device": "cpu"})


def _codes(report: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [v for v in report["verdicts"] if v["code"] == code]


def _monitor_x(spec: Any) -> torch.Tensor:
    data = open_dataset("shapeset3x2", root=None, input_range=spec.data.input_range, seed=spec.data.seed)
    return data.fixed_set("monitor", spec.diagnostics.monitor_examples)[0]


@pytest.mark.parametrize(("c", "code"), [(0.5, "jacobian_contracting"), (2.0, "jacobian_expanding")])
def test_linear_block_scaled_by_c_has_mean_sq_sv_c2_and_the_gain_restores_1(c: float, code: str) -> None:
    """Linear layers, orthogonal weights times c: J^i = c·Q, every singular value is c, so mean_sq_sv = c²
    exactly and the fix's gain is 1/c; scaling W_{i+1} by it gives mean_sq_sv 1 (to float64 rounding)."""
    spec = _spec({"activation": "linear", "init": "orthogonal", "init_gain": c})
    report = run_experiment(spec)
    found = {v["layer"]: v for v in _codes(report, code)}
    assert sorted(found) == [1, 2]  # J^1, J^2 (the last hidden layer has no J)
    for i, v in found.items():
        fix = v["fix"]
        assert fix["statistic"] == "jacobian.mean_sq_sv" and fix["action"] == "scale weights by"
        assert fix["value"] == pytest.approx(c * c, rel=1e-6)
        assert fix["gain"] == pytest.approx(1 / c, rel=1e-6)
        assert fix["probe_point"] == f"hidden{i + 1}" and fix["layer"] == i + 1
        # the normalized init (eq. 16) on a square 64→64 linear block: Var = 2/128, expected χ = 64·Var = 1
        assert fix["init"]["scheme"] == "normalized"
        assert fix["init"]["weight_var"] == pytest.approx(2 / 128)
        assert fix["init"]["expected_mean_sq_sv"] == pytest.approx(1.0)
    model, _ = build_mlp(spec.model, seed=spec.train.seed)
    x = _monitor_x(spec)
    before = [s["mean_sq_sv"] for s in layer_jacobian_spectra(model, x, examples=4)]
    with torch.no_grad():
        for i, v in found.items():
            model.linears[i].weight.mul_(v["fix"]["gain"])  # linears[i] is W_{i+1}, the weights into layer i+1
    after = [s["mean_sq_sv"] for s in layer_jacobian_spectra(model, x, examples=4)]
    assert [float(b) for b in before] == pytest.approx([c * c] * 2, rel=1e-6)
    assert [float(a) for a in after] == pytest.approx([1.0, 1.0], rel=1e-6)


def test_without_jacobians_the_gradient_ratio_gives_the_gain() -> None:
    """Jacobians off: χ_i is estimated by E[(∂C/∂s_i)²]/E[(∂C/∂s_{i+1})²] (eq. 6). With linear layers and
    orthogonal W_{i+1}·c, every example's gradient keeps its norm times c going down: the ratio is c²
    exactly, the gain 1/c, and a network drawn with that gain applied (init_gain c·g = 1) has ratio 1."""
    c = 0.5
    report = run_experiment(_spec({"activation": "linear", "init": "orthogonal", "init_gain": c}, jacobian="off"))
    (v,) = _codes(report, "vanishing_gradient")
    blocks = v["fix"]["blocks"]
    assert [b["layer"] for b in blocks] == [2, 3]
    for b in blocks:
        assert b["statistic"] == "backprop_grad.second_moment_ratio"
        assert b["value"] == pytest.approx(c * c, rel=1e-5)
        assert b["gain"] == pytest.approx(1 / c, rel=1e-5)
    fixed = run_experiment(_spec({"activation": "linear", "init": "orthogonal", "init_gain": c * blocks[0]["gain"]},
                                 jacobian="off"))
    assert not _codes(fixed, "vanishing_gradient")
    grads = [lay["backprop_grad"] for lay in fixed["snapshots"][0]["layers"]]
    moments = [g["std"] ** 2 + g["mean"] ** 2 for g in grads]
    assert [moments[i] / moments[i + 1] for i in range(2)] == pytest.approx([1.0, 1.0], rel=1e-5)


def test_tanh_gain_undershoots_as_documented() -> None:
    """Standard init, tanh: χ ≈ n·Var[W]·E[f′²] ≈ 1/3. Applying g = 1/√χ raises χ, but not to 1: larger
    weights push s into tanh's tails, so E[f′(s)²] falls and the first-order gain undershoots."""
    spec = _spec({"activation": "tanh", "init": "standard"})
    report = run_experiment(spec)
    fix = {v["layer"]: v["fix"] for v in _codes(report, "jacobian_contracting")}[1]
    assert fix["value"] < 1 / 3 + 0.02  # n·Var[W] = 1/3 (eq. 15), times E[f′²] < 1
    model, _ = build_mlp(spec.model, seed=spec.train.seed)
    with torch.no_grad():
        model.linears[1].weight.mul_(fix["gain"])
    after = float(layer_jacobian_spectra(model, _monitor_x(spec), examples=4)[0]["mean_sq_sv"])
    assert fix["value"] < after < 1.0


def test_normalized_init_gives_the_expected_mean_sq_sv_in_the_linear_regime() -> None:
    """The init a fix names for tanh is the normalized one; drawn on square 64-unit layers with small inputs
    (f′ ≈ 1), the measured χ is its expected max(n_in, n_out)·Var[W] = 1 within the sample variance of
    64² uniform weights (relative sd √(0.8/4096) ≈ 1.4 %) and tanh's 1 − E[f′²] ≈ 2·Var[s] ≪ 1 %."""
    spec = _spec({"activation": "tanh", "init": "normalized"}, input_range=(-0.05, 0.05))
    scheme = init_scheme("tanh", 64, 64)
    snap = run_experiment(spec)["snapshots"][0]
    for lay in snap["layers"][:2]:
        assert lay["jacobian"]["mean_sq_sv"] == pytest.approx(scheme["expected_mean_sq_sv"], rel=0.06)


def test_init_schemes_per_activation() -> None:
    tanh = init_scheme("tanh", 1024, 1000)
    assert tanh["bound"] == pytest.approx(math.sqrt(6 / 2024)) and tanh["weight_var"] == pytest.approx(2 / 2024)
    assert tanh["expected_mean_sq_sv"] == pytest.approx(1024 * 2 / 2024)
    relu = init_scheme("relu", 1000, 1000)
    assert relu["scheme"] == "he" and relu["weight_var"] == pytest.approx(2 / 1000)
    assert relu["expected_mean_sq_sv"] == pytest.approx(1.0)  # E[relu′²] = 1/2 at symmetric s
    sigmoid = init_scheme("sigmoid", 100, 100)
    assert sigmoid["weight_var"] == pytest.approx(16 * 2 / 200) and sigmoid["expected_mean_sq_sv"] == pytest.approx(1)
    # gelu: E[f′(s)²] for s ~ N(0, 1) by quadrature, against a Monte Carlo mean (tolerance 5 standard errors)
    g = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_(True)
    (d,) = torch.autograd.grad(torch.nn.functional.gelu(g).sum(), g)
    mc = (d * d).detach().numpy()
    e = mean_sq_derivative_normal("gelu")
    assert e == pytest.approx(float(mc.mean()), abs=5 * float(mc.std()) / 1000)
    gelu = init_scheme("gelu", 100, 100)
    assert gelu["weight_var"] == pytest.approx(1 / (100 * e)) and gelu["expected_mean_sq_sv"] == pytest.approx(1)


def _quadratic(dim: int = 50, top: float = 5.0) -> tuple[torch.Tensor, torch.nn.Parameter]:
    """A = Q diag(λ) Qᵀ with λ_max = ``top`` and the rest in [0.1, 1]; C(w) = ½ wᵀ A w has Hessian A."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.linspace(0.1, 1.0, dim - 1, dtype=torch.float64), torch.tensor([top], dtype=torch.float64)])
    a = q @ torch.diag(lam) @ q.T
    w = torch.nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64))
    return a, w


def test_lanczos_finds_the_top_hessian_eigenvalue_of_a_quadratic() -> None:
    """λ_max = 5 exactly. The gap (5 − 1)/(1 − 0.1) ≈ 4.4 makes Lanczos converge geometrically: 20 steps
    reach float64 rounding, and the residual β_k|s_k| says so."""
    a, w = _quadratic()
    out = top_hessian_eigenvalue(lambda: 0.5 * w @ a @ w, [w], iterations=20, seed=0)
    assert float(out["lambda_max"]) == pytest.approx(5.0, rel=1e-10)
    assert float(out["residual"]) < 1e-8
    assert float(out["learning_rate_max"]) == pytest.approx(2 / 5.0, rel=1e-10)
    assert w.grad is None  # the parameters' .grad is not touched


def test_gradient_descent_on_the_quadratic_is_stable_exactly_below_the_bound() -> None:
    """Along the top eigenvector a step multiplies w by (1 − ελ_max): |0.98| < 1 at ε = 0.99·2/λ_max,
    |−1.02| > 1 at 1.01·2/λ_max. After 2000 steps the first shrinks by ≥ 0.98^2000 and the second grows."""
    a, w0 = _quadratic()
    start = float(w0.detach().norm())
    bound = float(top_hessian_eigenvalue(lambda: 0.5 * w0 @ a @ w0, [w0], iterations=20, seed=0)["learning_rate_max"])
    norms = []
    for lr in (0.99 * bound, 1.01 * bound):
        w = w0.detach().clone()  # plain tensors: no graph
        for _ in range(2000):
            w = w - lr * (a @ w)
        norms.append(float(w.norm()))
    assert norms[0] < 1e-6 * start and norms[1] > 1e6 * start


def test_lanczos_matches_the_dense_hessian_of_a_small_network() -> None:
    """A 3-5-4 tanh network (44 parameters, float64): the dense Hessian's top eigenvalue is within the
    reported residual of the Lanczos estimate (Paige: a Ritz value with residual r lies within r of an
    eigenvalue; it is the top one here)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)).double()
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randint(0, 4, (40,))
    params = list(net.parameters())

    def cost() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(x), y)

    shapes = [p.shape for p in params]

    def flat_cost(theta: torch.Tensor) -> torch.Tensor:
        chunks, k = [], 0
        for s in shapes:
            n = int(np.prod(s))
            chunks.append(theta[k:k + n].reshape(s))
            k += n
        h = torch.tanh(x @ chunks[0].T + chunks[1])
        return torch.nn.functional.cross_entropy(h @ chunks[2].T + chunks[3], y)

    theta = torch.cat([p.detach().reshape(-1) for p in params])
    dense = torch.autograd.functional.hessian(flat_cost, theta)
    true_top = float(torch.linalg.eigvalsh(dense)[-1])
    out = top_hessian_eigenvalue(cost, params, iterations=30, seed=0)
    assert abs(float(out["lambda_max"]) - true_top) <= float(out["residual"]) + 1e-9 * true_top
    assert float(out["residual"]) < 1e-3 * true_top


def test_learning_rate_above_the_curvature_bound_is_flagged_with_the_bound() -> None:
    """λ_max at init depends only on the weights and the monitor set: a run at twice 2/λ_max is flagged
    with that bound as its fix, a run at half of it is not. λ_max is also a layer-0 metric series."""
    model = {"hidden": [16, 16], "activation": "tanh", "init": "normalized"}
    at_init = run_experiment(_spec(model, jacobian="off", curvature="init"))
    curv = at_init["snapshots"][0]["curvature"]
    bound = 2 / curv["lambda_max"]
    assert curv["learning_rate_max"] == pytest.approx(bound) and curv["residual"] < 1e-2 * curv["lambda_max"]
    assert ("curvature.lambda_max", curv["lambda_max"]) in {(name, v) for _, layer, name, v in metric_rows(at_init)
                                                            if layer == 0}
    high = run_experiment(_spec(model, jacobian="off", curvature="init", steps=5, lr=2 * bound))
    (v,) = _codes(high, "learning_rate_above_curvature_bound")
    assert v["fix"]["learning_rate_max"] == pytest.approx(bound)
    assert v["fix"]["learning_rate"] == pytest.approx(2 * bound)
    low = run_experiment(_spec(model, jacobian="off", curvature="init", steps=5, lr=0.5 * bound))
    assert not _codes(low, "learning_rate_above_curvature_bound")
    assert low["snapshots"][-1]["curvature"] is None  # mode "init": not at the later snapshots
