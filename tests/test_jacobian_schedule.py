"""The Jacobian instrument runs on its own schedule (``diagnostics.jacobian.every_snapshots``), while
the cheap statistics run at every snapshot."""

from __future__ import annotations

from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec


def test_jacobian_every_third_snapshot_and_the_last() -> None:
    spec = validate_spec({
        "model": {"input_dim": 1024, "hidden": [32, 32, 32], "num_classes": 9},
        "data": {"test_examples": 50},
        "train": {"steps": 40, "lr": 0.01},
        "diagnostics": {"every": 5, "monitor_examples": 40,
                        "jacobian": {"mode": "exact", "examples": 2, "every_snapshots": 3}},
    })
    snaps = run_experiment(spec)["snapshots"]
    assert len(snaps) == 9  # steps 0, 5, ..., 40
    with_jacobian = [i for i, s in enumerate(snaps) if s["end_to_end"] is not None]
    assert with_jacobian == [0, 3, 6, 8]  # every 3rd snapshot, and the last one
    for i, s in enumerate(snaps):
        assert all(lay["activation"] is not None for lay in s["layers"])
        assert (s["layers"][0]["jacobian"] is not None) == (i in with_jacobian)
