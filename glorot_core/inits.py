"""Weight initialisations, with the variance each gives (paper §4.2).

Conventions: a ``torch.nn.Linear`` weight has shape (fan_out, fan_in); n_j = fan_in, n_{j+1} = fan_out.
Biases start at ``bias_init`` (paper: 0) for every scheme.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from glorot_core.activations import Activation

LSUV_TOLERANCE = 0.1
LSUV_MAX_TRIES = 10


def standard_(w: torch.Tensor) -> torch.Tensor:
    """Standard init, eq. (1): W ~ U[−1/√n, 1/√n] with n = fan-in, so n·Var[W] = 1/3."""
    bound = 1.0 / math.sqrt(w.shape[1])
    return nn.init.uniform_(w, -bound, bound)


def normalized_(w: torch.Tensor) -> torch.Tensor:
    """Normalized init, eq. (16): W ~ U[±√6/√(n_j + n_{j+1})], so Var[W] = 2/(n_j + n_{j+1}) (eq. 12)."""
    fan_out, fan_in = w.shape
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return nn.init.uniform_(w, -bound, bound)


def he_(w: torch.Tensor) -> torch.Tensor:
    """He et al. (2015): W ~ N(0, 2/fan_in), i.e. ½·n·Var[W] = 1, the ReLU fixed point."""
    return nn.init.normal_(w, 0.0, math.sqrt(2.0 / w.shape[1]))


def orthogonal_(w: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Saxe et al. (2013): a (semi-)orthogonal matrix times ``gain``; all singular values equal gain."""
    return nn.init.orthogonal_(w, gain=gain)


INITS: dict[str, Callable[..., torch.Tensor]] = {
    "standard": standard_,
    "normalized": normalized_,
    "he": he_,
    "orthogonal": orthogonal_,
}


@torch.no_grad()
def initialize(
    linears: list[nn.Linear],
    scheme: str,
    activation: Activation,
    *,
    gain: float | None = None,
    bias: float = 0.0,
    generator: torch.Generator | None = None,
    data: torch.Tensor | None = None,
) -> dict[str, object]:
    """Initialise every layer of ``linears`` in place; returns what was done (for the report).

    ``lsuv`` (Mishkin & Matas, 2015) needs ``data``: orthonormal init, then layer by layer rescale W by
    1/√Var(s) of the layer's pre-activation on that batch until |Var − 1| ≤ 0.1 (at most 10 tries).
    ``generator`` makes the draw deterministic without touching the global RNG.
    """
    with torch.random.fork_rng(devices=[], enabled=generator is not None):
        if generator is not None:
            torch.random.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        for lin in linears:
            if scheme in ("orthogonal", "lsuv"):
                orthogonal_(lin.weight, gain if gain is not None else 1.0)
            else:
                INITS[scheme](lin.weight)
            nn.init.constant_(lin.bias, bias)
    info: dict[str, object] = {"scheme": scheme, "bias": bias}
    if scheme == "lsuv":
        if data is None:
            raise ValueError("lsuv needs a data batch")
        info["lsuv_tries"] = _lsuv(linears, activation, data)
    return info


def _lsuv(linears: list[nn.Linear], activation: Activation, data: torch.Tensor) -> list[int]:
    tries: list[int] = []
    z = data
    for i, lin in enumerate(linears):
        used = 0
        for used in range(1, LSUV_MAX_TRIES + 1):  # noqa: B007 (the count is reported)
            var = float(lin(z).var())
            if abs(var - 1.0) <= LSUV_TOLERANCE or var == 0.0 or not math.isfinite(var):
                break
            lin.weight.div_(math.sqrt(var))
        tries.append(used)
        s = lin(z)
        z = activation(s) if i < len(linears) - 1 else s
    return tries
