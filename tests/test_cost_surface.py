"""Fig 5's cost surfaces (glorot_core/cost_surface.py, glorot_core/figures/cost_surface.py): the grid
equals the cost computed directly with the weights set, the quadratic cost has the larger plateaus on
the paper's network, the fig5 presets put the section in their reports and the figure draws exactly
its numbers."""

from __future__ import annotations

import copy

import pytest
import torch

from glorot_core import figures
from glorot_core.cost_surface import (
    PLATEAU_RELATIVE_SLOPE,
    SurfaceWeights,
    cost_surface,
    default_weights,
    plateau_fraction,
)
from glorot_core.data import open_dataset
from glorot_core.losses import LOSSES
from glorot_core.models import build_mlp
from glorot_core.presets import spec_for
from glorot_core.runner import run_experiment
from glorot_core.spec import ModelSpec, validate_spec


def _tiny(hidden: list[int], seed: int = 3) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model, _ = build_mlp(ModelSpec(input_dim=6, hidden=hidden, num_classes=4, activation="tanh"), seed=seed)
    model = model.double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(25, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (25,), generator=g)
    return model, x, y


def _direct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, w: SurfaceWeights, v1: float, v2: float,
            loss: str) -> float:
    """The mean cost with W1 and W2 set to (v1, v2) in a copy of the network, by a plain forward pass."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.linears[-2].weight[w.unit, w.source] = v1
        m.linears[-1].weight[w.target, w.output_unit] = v2
        return float(LOSSES[loss](m(x), y, reduction="mean"))


@pytest.mark.parametrize(("hidden", "weights"), [
    ([5], SurfaceWeights(unit=2, source=4, target=1, output_unit=2)),  # the paper's: one path x_k → h_j → y_c
    ([5], SurfaceWeights(unit=2, source=0, target=3, output_unit=1)),  # W2 leaves another hidden unit
    ([5, 3], SurfaceWeights(unit=1, source=4, target=0, output_unit=1)),  # W1 into the last of two hidden layers
])
def test_grid_equals_the_cost_computed_directly(hidden: list[int], weights: SurfaceWeights) -> None:
    model, x, y = _tiny(hidden)
    before = [p.clone() for p in model.parameters()]
    s = cost_surface(model, x, y, extent=3.0, points=7, weights=weights)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # model untouched
    assert len(s["w1"]) == len(s["w2"]) == 7 and s["examples"] == 25
    assert s["w1"][3] == pytest.approx(s["at"]["w1"]) and s["w2"][3] == pytest.approx(s["at"]["w2"])
    for loss in ("cross_entropy", "quadratic"):
        grid = s["costs"][loss]
        assert len(grid) == 7 and all(len(row) == 7 for row in grid)
        for i, j in ((0, 0), (0, 6), (6, 0), (3, 3), (2, 5), (6, 6)):
            # float64 throughout: the incremental update of the logits and the plain forward pass agree to
            # rounding (a few ulps of costs of order 1)
            assert grid[i][j] == pytest.approx(_direct(model, x, y, weights, s["w1"][i], s["w2"][j], loss),
                                               rel=1e-12, abs=1e-12), (loss, i, j)


def test_chunked_rows_give_the_same_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = _tiny([5])
    whole = cost_surface(model, x, y, extent=2.0, points=9)
    monkeypatch.setattr("glorot_core.cost_surface.CHUNK_NUMBERS", 1)  # one grid row per chunk
    assert cost_surface(model, x, y, extent=2.0, points=9)["costs"] == whole["costs"]


def test_plateau_fraction_of_known_surfaces() -> None:
    a = torch.linspace(-1, 1, 21, dtype=torch.float64)
    plane = (a[:, None] + 2 * a[None, :]).tolist()  # constant slope: no point is flat
    assert plateau_fraction(plane, a, a) == 0.0
    # flat where |w1| > 0.5, slope 1 inside: the rows at |w1| >= 0.6 (10 of 21) have both central-difference
    # neighbours on the flat part; the kinks at ±0.5 have slope ½ and are not plateau
    ramp = torch.clamp(a, -0.5, 0.5)[:, None].expand(21, 21).tolist()
    assert plateau_fraction(ramp, a, a) == pytest.approx(10 / 21)
    assert plateau_fraction([[1.0] * 3] * 3, [0, 1, 2], [0, 1, 2]) == 1.0


def test_quadratic_cost_has_larger_plateaus_on_the_papers_network() -> None:
    """The paper's network (1024-1000-9 tanh, standard init, seed 0) on 300 Shapeset monitor examples,
    W1 and W2 over ±10 (where tanh and the softmax saturate). Plateau: |∇C| below 5 % of the surface's
    steepest slope (PLATEAU_RELATIVE_SLOPE), judged per surface so that the two costs' different scales
    do not matter. The quadratic cost's gradient vanishes wherever the softmax saturates, right or wrong;
    the cross-entropy's only near its minimum: measured 0.28 against 0.10 at this seed."""
    spec = validate_spec(spec_for("fig5_quadratic", "quick"))
    assert spec.model.hidden == [1000] and spec.diagnostics.cost_surface.enabled
    data = open_dataset("shapeset3x2", input_range=spec.data.input_range, seed=spec.data.seed)
    x, y = data.fixed_set("monitor", 300)
    model, _ = build_mlp(spec.model, seed=0)
    s = cost_surface(model, x, y, extent=10.0, points=41)
    assert s["weights"] == default_weights(model, x, y).describe()
    ce = plateau_fraction(s["costs"]["cross_entropy"], s["w1"], s["w2"])
    quad = plateau_fraction(s["costs"]["quadratic"], s["w1"], s["w2"])
    assert PLATEAU_RELATIVE_SLOPE == 0.05
    assert quad > 2 * ce > 0, (quad, ce)
    # the cross-entropy is the top surface everywhere: −log p ≥ 1 − p ≥ ½‖p − onehot‖² for a softmax p
    assert all(c >= q for rc, rq in zip(s["costs"]["cross_entropy"], s["costs"]["quadratic"], strict=True)
               for c, q in zip(rc, rq, strict=True))


TINY_RUN = {"model": {"hidden": [12]}, "train": {"steps": 20},
            "diagnostics": {"every": 10, "monitor_examples": 30, "jacobian": {"mode": "off"},
                            "cost_surface": {"points": 9, "extent": 5.0}},
            "data": {"test_examples": 50}}


def test_fig5_preset_reports_carry_the_surface_and_its_figure() -> None:
    report = run_experiment(validate_spec(spec_for("fig5_cross_entropy", "quick", TINY_RUN)))
    s = report["cost_surface"]
    assert s["step"] == 20 and s["examples"] == 30 and len(s["w1"]) == 9
    assert s["w1"][0] == pytest.approx(s["at"]["w1"] - 5.0) and s["w2"][-1] == pytest.approx(s["at"]["w2"] + 5.0)
    assert set(s["plateau_fraction"]) == {"cross_entropy", "quadratic"}
    assert "cost_surface" in [d.name for d in figures.available(report)]

    fig = figures.build(report, "cost_surface")
    lines = {ln.get_gid(): ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid()}
    for name, color in (("cross_entropy", "black"), ("quadratic", "red")):
        grid = s["costs"][name]
        for i in range(9):  # every grid row and column is a drawn line with the section's numbers
            xs, ys, zs = lines[f"{name}-w1-{i}"].get_data_3d()
            assert list(xs) == [s["w1"][i]] * 9 and list(ys) == s["w2"] and list(zs) == grid[i]
            xs, ys, zs = lines[f"{name}-w2-{i}"].get_data_3d()
            assert list(xs) == s["w1"] and list(ys) == [s["w2"][i]] * 9 and list(zs) == [row[i] for row in grid]
        assert lines[f"{name}-w1-0"].get_color() == color
    assert figures.render(report, "cost_surface", "png").startswith(b"\x89PNG")


def test_without_the_switch_there_is_no_surface() -> None:
    spec = validate_spec({**TINY_RUN, "diagnostics": {**TINY_RUN["diagnostics"], "cost_surface": {"points": 9}}})
    report = run_experiment(spec)
    assert "cost_surface" not in report
    assert "cost_surface" not in [d.name for d in figures.available(report)]


def test_uploaded_models_refuse_the_switch() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        validate_spec({"model": {"source": "uploaded", "model_id": "m" * 8},
                       "data": {"dataset": "random", "shape": [4]},
                       "diagnostics": {"cost_surface": {"enabled": True}}})
    assert any(err["loc"] == ("diagnostics", "cost_surface", "enabled") for err in e.value.errors())
