"""Paper Fig 2 on a CPU (docs/science.md §5): sigmoid 1024-1000×4-9, standard init, ε = 0.1, batch 10,
Shapeset in [−1, 1]. The top hidden layer is driven to saturation at 0 within the first updates
(paper: mean ≈0.04 after 1,000 updates), layer 3 rises to ≈0.70, and test error stays near the
prior's ≈83 % (the issue's bounds: top < 0.1, layer 3 > 0.6, error > 75 %).
"""

from __future__ import annotations

from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec


def test_sigmoid_top_layer_saturates_at_zero() -> None:
    spec = validate_spec({
        "name": "fig2", "device": "cpu",
        "model": {"hidden": [1000] * 4, "activation": "sigmoid", "init": "standard"},
        "train": {"steps": 1000, "lr": 0.1, "batch_size": 10, "seed": 0},
        "data": {"test_examples": 1000},
        "diagnostics": {"every": 1000, "jacobian": {"mode": "off"}},
    })
    report = run_experiment(spec)
    first, last = report["snapshots"][0], report["snapshots"][-1]
    assert last["step"] == 1000 and last["examples_seen"] == 10_000
    means = [lay["activation"]["mean"] for lay in last["layers"]]
    assert abs(first["layers"][3]["activation"]["mean"] - 0.5) < 0.05  # starts at sigmoid(0)
    assert means[3] < 0.1, means
    assert means[2] > 0.6, means
    assert last["test_error"] > 0.75
    codes = {(v["code"], v["layer"]) for v in report["verdicts"]}
    assert ("saturated_low", 4) in codes
