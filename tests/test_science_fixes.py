"""Issue 9's science corrections, each checked on behaviour: float32 numbers written at float32
precision, and (elsewhere in this file) histogram resolution and the theory's input statistic."""

from __future__ import annotations

import json

import numpy as np
import torch

from glorot_core.instruments.host import to_host
from glorot_core.json_numbers import float32_numbers


def test_float32_values_are_written_in_their_shortest_round_trip_form() -> None:
    """0.0002 held in float32 is 0.00019999999494757503 as a double; the report says 0.0002."""
    host = to_host({"lr": torch.tensor(0.0002), "v": torch.tensor([0.1, 1 / 3, 1e-30], dtype=torch.float32),
                    "exact": torch.tensor(0.1, dtype=torch.float64), "n": torch.tensor(7)})
    text = json.dumps(host)
    assert '"lr": 0.0002' in text and "0.1, 0.33333334, 1e-30" in text
    assert host["exact"] == 0.1 and host["n"] == 7 and isinstance(host["n"], int)
    # Each written value reads back as exactly the float32 that was measured.
    for written, original in zip(host["v"], [0.1, 1 / 3, 1e-30], strict=True):
        assert np.float32(written) == np.float32(original)


def test_float32_numbers_keeps_non_finite_values() -> None:
    out = float32_numbers([float("nan"), float("inf"), -0.0, 3.4028234663852886e38])
    assert np.isnan(out[0]) and out[1] == float("inf") and out[2] == 0.0
    assert np.float32(out[3]) == np.finfo(np.float32).max
