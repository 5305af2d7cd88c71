"""Matrix-free Jacobians of uploaded models: a wide convolution's block, and cost against width.

Everything runs through the uploaded-model path (``glorot_core.uploads.jacobians``: a Sequential traced
by ``torch.fx``, products by ``torch.func`` jvp / vjp, vmapped over the 4 probes), on the first
``--examples`` of N(0, 1) inputs, float32 model, PyTorch's default init.

(a) **conv**: ``Conv2d(C→C, 3×3, padding 1) → tanh`` on C×H×W maps (C = 64, H = W = 32 by default):
    the block between two tanh probe points is J = diag(tanh′(s)) · Conv, 65,536 × 65,536 per example,
    never formed. Estimate mode (``--iterations`` Lanczos steps): its time, λ_max (as σ_max) and mean σ²
    with their bounds. Accuracy: at the full size against the exact mean σ², ‖J‖_F² / N, which needs no
    J (‖J‖_F² = Σ_o tanh′(s_o)² ‖row_o‖², the row norms of the zero-padded convolution by one conv of
    the squared kernel with a map of ones); at the small sizes ``--exact-sizes`` (8×8: J is 4,096²) also
    against exact mode (J formed from identity probes, float64 Gram, every singular value) for σ_max,
    mean σ and mean σ². Exact mode at 32×32 (a 65,536² Gram per example) is not attempted.
(b) **width**: one dense ``Linear(n→n) → tanh`` block at n = ``--widths`` (1k, 4k, 16k): estimate mode
    against exact mode, time per example and the estimate's errors where exact ran. Exact mode at
    n > ``--exact-max-width`` (default 4096) is skipped with the reason printed: J is n² per example and
    the eigen-solve O(n³) (16k: 2.1 GB in float64, 64× the 4k solve).

Prints one JSON document. Timings: best of ``--repeats``, synchronised on CUDA. The machine must be
quiet: other processes only add time.

Run: ``.venv/bin/python benchmarks/bench_matrix_free.py [--device cpu] [--examples 4] [--repeats 2]``;
``--quick`` is a smoke run at tiny sizes (8 channels, 8×8 / 4×4 maps, widths 64 and 256).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from glorot_core.spec import JacobianSpec
from glorot_core.uploads.jacobians import uploaded_jacobian_spectra
from glorot_core.uploads.segments import GraphView, graph_view

KEYS = ("mean_sv", "mean_sq_sv", "max_sv")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def _numbers(section: dict[str, Any]) -> dict[str, Any]:
    """The section's scalar statistics and bounds as floats (histograms dropped)."""
    out = {}
    for k, v in section.items():
        if isinstance(v, torch.Tensor) and v.dim() == 0:
            out[k] = float(v)
        elif isinstance(v, (int, float, str)) or k == "size":
            out[k] = v
    return out


def _spectra(view: GraphView, x: torch.Tensor, mode: str, iterations: int) -> dict[str, Any]:
    spec = JacobianSpec(mode=mode, examples=x.shape[0], end_to_end=False, estimate_iterations=iterations,
                        precision="float64")
    return uploaded_jacobian_spectra(view, x, ["1", "3"], spec, 50)["layers"][0]


def _errors(est: dict[str, Any], ref: dict[str, float], keys: tuple[str, ...]) -> dict[str, Any]:
    """Relative error of each estimate, its reported relative bound, and whether ref is inside the bounds."""
    out = {}
    for k in keys:
        e, r = float(est[k]), ref[k]
        out[k] = {"exact": r, "estimate": e, "rel_error": e / r - 1, "rel_bound": float(est[f"{k}_bound"]) / r,
                  "inside_bounds": float(est[f"{k}_lower"]) <= r <= float(est[f"{k}_upper"])}
    return out


def _conv_net(channels: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(channels, channels, 3, padding=1), nn.Tanh()).eval()


@torch.no_grad()
def _conv_exact_mean_sq(net: nn.Sequential, x: torch.Tensor) -> float:
    """‖J‖_F² / N of J = diag(tanh′(s)) · Conv (the block 1 → 3), exactly, without forming J."""
    conv = net[2]
    z1 = net[1](net[0](x))
    d2 = (1 - torch.tanh(conv(z1)).double().square()).square()  # tanh′(s)², (E, C, H, W)
    ones = torch.ones_like(z1[:1]).double()
    row2 = nn.functional.conv2d(ones, conv.weight.double().square(), padding=1)  # ‖row_o‖², (1, C, H, W)
    n = z1[0].numel()
    return float((d2 * row2).sum(dim=(1, 2, 3)).mean() / n)


def conv_case(channels: int, size: int, exact_sizes: list[int], examples: int, iterations: int, repeats: int,
              device: torch.device) -> dict[str, Any]:
    net = _conv_net(channels).to(device)
    view = graph_view(net, exported=False)
    out: dict[str, Any] = {"channels": channels, "kernel": 3, "activation": "tanh", "sizes": {}}
    for hw in sorted({*exact_sizes, size}):
        x = torch.randn(examples, channels, hw, hw, generator=torch.Generator().manual_seed(1)).to(device)
        n = channels * hw * hw
        t_est, est = _best(lambda x=x: _spectra(view, x, "estimate", iterations), repeats, device)
        row: dict[str, Any] = {"J": f"{n}x{n}", "estimate_s": t_est, "estimate_ms_per_example": 1e3 * t_est / examples,
                               "estimate": _numbers(est)}
        ref = {"mean_sq_sv": _conv_exact_mean_sq(net, x)}
        row["mean_sq_sv_frobenius"] = _errors(est, ref, ("mean_sq_sv",))
        if hw in exact_sizes:
            t_ex, ex = _best(lambda x=x: _spectra(view, x, "exact", iterations), 1, device)
            row["exact_s"] = t_ex
            row["exact_ms_per_example"] = 1e3 * t_ex / examples
            row["vs_exact"] = _errors(est, {k: float(ex[k]) for k in KEYS}, KEYS)
            row["exact_vs_frobenius_mean_sq_sv_rel"] = float(ex["mean_sq_sv"]) / ref["mean_sq_sv"] - 1
        else:
            row["exact"] = f"skipped: J is {n}² per example ({n * n * 8 / 2**30:.1f} GiB in float64), its Gram " \
                           f"eigen-solve O(N³); checked against the exact ‖J‖_F²/N only"
        out["sizes"][f"{hw}x{hw}"] = row
    return out


def width_case(widths: list[int], exact_max: int, examples: int, iterations: int, repeats: int,
               device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for n in widths:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(16, n), nn.Tanh(), nn.Linear(n, n), nn.Tanh()).eval().to(device)
        view = graph_view(net, exported=False)
        x = torch.randn(examples, 16, generator=torch.Generator().manual_seed(2)).to(device) * 4
        t_est, est = _best(lambda view=view, x=x: _spectra(view, x, "estimate", iterations), repeats, device)
        row: dict[str, Any] = {"width": n, "estimate_s": t_est, "estimate_ms_per_example": 1e3 * t_est / examples,
                               "estimate": _numbers(est)}
        if n <= exact_max:
            t_ex, ex = _best(lambda view=view, x=x: _spectra(view, x, "exact", iterations), 1, device)
            row |= {"exact_s": t_ex, "exact_ms_per_example": 1e3 * t_ex / examples, "exact_over_estimate": t_ex / t_est,
                    "vs_exact": _errors(est, {k: float(ex[k]) for k in KEYS}, KEYS)}
        else:
            row["exact"] = (f"skipped (> --exact-max-width {exact_max}): J is {n}² per example "
                            f"({n * n * 8 / 2**30:.1f} GiB in float64) and its eigen-solve "
                            f"≈ {(n / exact_max) ** 3:.0f}× the {exact_max} one")
        rows.append(row)
        del net, view
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--examples", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=32,
                    help="Lanczos steps (diagnostics.jacobian.estimate_iterations)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=32, help="conv maps are size×size")
    ap.add_argument("--exact-sizes", type=int, nargs="*", default=[8], help="conv sizes where exact mode also runs")
    ap.add_argument("--widths", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--exact-max-width", type=int, default=4096)
    ap.add_argument("--quick", action="store_true", help="smoke run at tiny sizes")
    a = ap.parse_args()
    if a.quick:
        a.channels, a.size, a.exact_sizes, a.widths, a.exact_max_width = 8, 8, [4], [64, 256], 64
        a.examples, a.repeats, a.iterations = 2, 1, 12
    device = torch.device(a.device)
    result = {
        "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
        "examples": a.examples, "iterations": a.iterations, "probes": 4,
        "conv": conv_case(a.channels, a.size, a.exact_sizes, a.examples, a.iterations, a.repeats, device),
        "width": width_case(a.widths, a.exact_max_width, a.examples, a.iterations, a.repeats, device),
    }
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
