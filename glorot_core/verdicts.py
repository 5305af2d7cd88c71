"""Rule-based findings ("verdicts") read off a report: each has a stable code, a severity, the layer,
a message, and the numbers behind it, so a tool can act on them without parsing prose.

Every verdict that flags a problem also carries a ``fix`` (glorot_core.fixes): which probe point, which
statistic and its value, and the change — the gain that brings a block's mean squared singular value
to 1, the init scheme that would, and the learning-rate bound 2(1 + μ)/λ_max of the curvature section.

Thresholds are module constants, documented where they are defined; they follow the paper where it
gives a number (standard init shrinks std by ≈0.58 per layer, Jacobian mean singular value ≈0.5 vs
≈0.8 with normalized init).
"""

from __future__ import annotations

import math
from typing import Any

from glorot_core.fixes import block_gain, block_init, learning_rate_bound

SATURATED_FRACTION = 0.5
"""A two-sided activation's layer (sigmoid, tanh, softsign) is flagged when at least half of its
outputs on the monitor set are saturated, counting both asymptotes together: a layer with 50 % of its
outputs at −1 and 50 % at +1 is fully saturated (paper Fig 3), though neither side alone reaches 0.5."""
SIDE_SHARE = 0.1
"""A side (low / high) is named in a saturation verdict when it holds at least 10 % of the layer's
saturated outputs; both named gives the code ``saturated_both``."""
EXPECTED_ZERO_FRACTION = 0.5
"""relu-style activations (zero on a half-line) output exactly 0 wherever s ≤ 0. At init, with
zero-mean symmetric weights and zero biases (every built-in init), each pre-activation is symmetric
about 0, so about half the outputs of a healthy layer are 0: measured 0.48–0.52 per layer on a He-init
relu 5×1000 network on Shapeset."""
ZERO_FRACTION_MARGIN = 0.25
"""A relu-style layer is flagged when its zero fraction exceeds the expected 0.5 by 0.25 (≥ 0.75):
half of the units' expected active outputs lost. The pooled fraction of a healthy 1000-unit layer
varies by ≈0.01–0.015 from one weight draw to the next (per-unit fractions spread with sd ≈0.35 in
deep layers, averaged over 1000 units), so the margin is > 15 such deviations; for a 16-unit layer
still ≈3."""
DEAD_UNITS_FRACTION = 0.1
"""…or when at least 10 % of its units are saturated/dead on every monitor example (they pass no
gradient at all). A healthy He-init relu 5×1000 network has 0–6 % such units at init (more in deeper
layers, whose inputs are more correlated), so 10 % is not reached by chance there."""
GRADIENT_RATIO_LOW, GRADIENT_RATIO_HIGH = 0.8, 1.25
"""Per-layer geometric-mean ratio of ∂C/∂s std between successive layers (lower over upper): below
0.8 the back-propagated gradient shrinks by >20 % per layer going down (standard init gives ≈0.58),
above 1.25 it grows."""
JACOBIAN_LOW, JACOBIAN_HIGH = 0.6, 1 / 0.6
"""Mean singular value of J^i: ≈0.5 under standard init (flagged), ≈0.75 under normalized (not)."""
NO_LEARNING_MARGIN = 0.02
"""Test error within 2 points of always predicting the majority class counts as nothing learned."""
LR_MARGIN = 1.0
"""A training run is flagged when its learning rate exceeds LR_MARGIN × 2(1 + μ)/λ_max at init: above it
SGD is unstable along the sharpest direction of the (locally quadratic) monitor cost."""


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def verdict(code: str, severity: str, message: str, *, layer: int | None = None, step: int | None = None,
            fix: dict[str, Any] | None = None, **values: Any) -> dict[str, Any]:
    out = {"code": code, "severity": severity, "layer": layer, "step": step, "message": message, "values": values}
    if fix is not None:
        out["fix"] = fix
    return out


class _Fixes:
    """What the fixes of one report need: its layer descriptions, snapshots and training options."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.layers: list[dict[str, Any]] = report.get("layers") or []
        train = (report.get("spec") or {}).get("train") or {}
        self.lr, self.steps = _num(train.get("lr")), int(train.get("steps") or 0)
        self.bound = learning_rate_bound(report.get("snapshots", []), _num(train.get("momentum")) or 0.0)

    def lr_fields(self) -> dict[str, Any]:
        if self.bound is None:
            return {}
        return {"learning_rate_max": self.bound["learning_rate_max"], "lambda_max": self.bound["lambda_max"]}

    def name(self, i: int | None) -> str | None:
        return next((lay.get("name") for lay in self.layers if lay.get("index") == i), None)

    def block(self, snap: dict[str, Any], i: int) -> dict[str, Any] | None:
        """Gain, init scheme and learning-rate bound of block i (probe point i → i+1)."""
        found = block_gain(self.layers, i, snap)
        if found is None:
            return None
        found["init"] = block_init(self.layers, i + 1)
        return {**found, **self.lr_fields()}

    def layer(self, i: int, statistic: str, value: Any, action: str, step: int) -> dict[str, Any]:
        """A fix at probe point i that is not a gain: re-initialise (at init) or lower the learning rate."""
        return {"probe_point": self.name(i), "layer": i, "statistic": statistic, "value": value,
                "action": action if step == 0 else "lower the learning rate below learning_rate_max, or " + action,
                "init": block_init(self.layers, i), **self.lr_fields()}

    def learning_rate(self, statistic: str, value: Any) -> dict[str, Any]:
        return {"statistic": statistic, "value": value, "action": "lower the learning rate below",
                "learning_rate": self.lr, **self.lr_fields()}


def diagnose(report: dict[str, Any], majority_error: float | None) -> list[dict[str, Any]]:
    """All verdicts of a report, from its first (initialisation) and last snapshots."""
    out: list[dict[str, Any]] = []
    snaps = report.get("snapshots", [])
    end = report.get("end", {})
    fixes = _Fixes(report)
    if end.get("diverged"):
        d = end["diverged_at"]
        out.append(verdict(
            "diverged", "error",
            f"training diverged at step {d['step']}: {d['reason']}"
            + (f"; first non-finite weights in layer {d['layer']}" if d.get("layer") else ""),
            layer=d.get("layer"), step=d["step"], reason=d["reason"], loss=d.get("loss"),
            fix=fixes.learning_rate("end.diverged_at.loss", d.get("loss")),
        ))
    if not snaps:
        return out
    checked = [snaps[0]] if len(snaps) == 1 else [snaps[0], snaps[-1]]
    for snap in checked:
        out.extend(_snapshot_verdicts(snap, fixes))
    bound = fixes.bound
    if fixes.steps > 0 and bound is not None and fixes.lr is not None and \
            fixes.lr > LR_MARGIN * bound["learning_rate_max"]:
        out.append(verdict(
            "learning_rate_above_curvature_bound", "warning",
            f"learning rate {fixes.lr:g} is above 2(1 + momentum)/λ_max = {bound['learning_rate_max']:.3g} "
            f"(λ_max {bound['lambda_max']:.3g} of the monitor cost's Hessian at step {bound['step']}): SGD is "
            "unstable along the sharpest direction",
            step=bound["step"], learning_rate=fixes.lr, learning_rate_max=bound["learning_rate_max"],
            lambda_max=bound["lambda_max"], residual=bound["residual"], momentum=bound["momentum"],
            fix=fixes.learning_rate("curvature.lambda_max", bound["lambda_max"]),
        ))
    last = snaps[-1]
    err = _num(last.get("test_error"))
    if last["step"] > 0 and err is not None and majority_error is not None and \
            err >= majority_error - NO_LEARNING_MARGIN:
        above = bound is not None and fixes.lr is not None and fixes.lr > bound["learning_rate_max"]
        fix = fixes.learning_rate("test_error", err) if above else {
            "statistic": "test_error", "value": err, "learning_rate": fixes.lr, **fixes.lr_fields(),
            "action": "train longer, or raise the learning rate" + (" towards learning_rate_max" if bound else "")}
        out.append(verdict(
            "no_learning", "warning",
            f"test error {err:.1%} is no better than always predicting the majority class "
            f"({majority_error:.1%}) after {last['step']} updates",
            step=last["step"], test_error=err, majority_error=majority_error, fix=fix,
        ))
    return out


def _snapshot_verdicts(snap: dict[str, Any], fixes: _Fixes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    step = snap["step"]
    layers = snap["layers"]
    for lay in layers:
        i = lay["index"]
        nonfinite = {k: lay[k].get("nonfinite") for k in ("activation", "backprop_grad", "weight_grad")
                     if lay.get(k) and lay[k].get("nonfinite")}
        if nonfinite:
            out.append(verdict("non_finite", "error", f"layer {i} has non-finite values: {nonfinite}",
                               layer=i, step=step, counts=nonfinite,
                               fix={**fixes.learning_rate("nonfinite", nonfinite), "probe_point": fixes.name(i)}))
        sat = lay.get("saturation") or {}  # null at a residual or norm probe point (no activation, no rule)
        found = _saturation_verdict(sat, i, step)
        if found is not None:
            found["fix"] = fixes.layer(i, "saturation.fraction", found["values"]["fraction"],
                                       "re-initialise the weights into this layer", step)
            out.append(found)
        dead = _num(sat.get("dead_units"))
        if dead is not None and dead >= DEAD_UNITS_FRACTION:
            out.append(verdict("dead_units", "warning",
                               f"layer {i}: {dead:.0%} of units saturated or dead on every monitor example",
                               layer=i, step=step, fraction=dead,
                               fix=fixes.layer(i, "saturation.dead_units", dead,
                                               "re-initialise the weights into this layer, biases 0", step)))
        jac = lay.get("jacobian") or {}
        msv = _num(jac.get("mean_sv"))
        if msv is not None and not JACOBIAN_LOW <= msv <= JACOBIAN_HIGH:
            code = "jacobian_contracting" if msv < JACOBIAN_LOW else "jacobian_expanding"
            out.append(verdict(code, "warning",
                               f"J^{i} mean singular value {msv:.3f} is far from 1 at step {step}",
                               layer=i, step=step, mean_sv=msv, mean_sq_sv=_num(jac.get("mean_sq_sv")),
                               fix=fixes.block(snap, i)))
    stds = [_num((lay.get("backprop_grad") or {}).get("std")) for lay in layers]
    if len(stds) >= 2 and all(s is not None and s > 0 for s in stds):
        ratio = (stds[0] / stds[-1]) ** (1 / (len(stds) - 1))
        if ratio < GRADIENT_RATIO_LOW or ratio > GRADIENT_RATIO_HIGH:
            code = "vanishing_gradient" if ratio < GRADIENT_RATIO_LOW else "exploding_gradient"
            blocks = [b for b in (fixes.block(snap, lay["index"]) for lay in layers) if b is not None]
            out.append(verdict(
                code, "warning",
                f"back-propagated gradient std changes by ×{ratio:.2f} per layer going down "
                f"(layer 1: {stds[0]:.3g}, layer {len(stds)}: {stds[-1]:.3g}) at step {step}",
                step=step, per_layer_ratio=ratio, stds=stds,
                fix={"statistic": "backprop_grad.std", "value": ratio, "action": "scale weights by",
                     "blocks": blocks, **fixes.lr_fields()},
            ))
    return out


def _saturation_verdict(sat: dict[str, Any], layer: int, step: int) -> dict[str, Any] | None:
    """The saturation verdict of one layer, if any (see the constants above for each rule).

    Two-sided activations: the total saturated fraction (low + high) against SATURATED_FRACTION, the
    code naming the sides that carry it. relu-style activations (the rule reports threshold 0): the
    fraction of outputs exactly 0 against EXPECTED_ZERO_FRACTION + ZERO_FRACTION_MARGIN.
    """
    low, high = _num(sat.get("low")) or 0.0, _num(sat.get("high")) or 0.0
    total = _num(sat.get("fraction"))
    total = low + high if total is None else total
    rule = sat.get("rule")
    if _zero_region(sat):
        limit = EXPECTED_ZERO_FRACTION + ZERO_FRACTION_MARGIN
        if total < limit:
            return None
        return verdict(
            "saturated_low", "warning",
            f"layer {layer}: {total:.0%} of outputs are 0 ({rule}) at step {step}, where a healthy layer "
            f"at init has ≈{EXPECTED_ZERO_FRACTION:.0%}",
            layer=layer, step=step, fraction=total, low=low, high=high, sides=["low"],
            expected_fraction=EXPECTED_ZERO_FRACTION, limit=limit, threshold=sat.get("threshold"),
        )
    if total < SATURATED_FRACTION:
        return None
    sides = [name for name, frac in (("low", low), ("high", high)) if frac >= SIDE_SHARE * total] or \
        ["low" if low >= high else "high"]
    code = "saturated_both" if len(sides) == 2 else f"saturated_{sides[0]}"
    where = " and ".join(f"{frac:.0%} {name}" for name, frac in (("low", low), ("high", high)) if name in sides)
    return verdict(
        code, "warning",
        f"layer {layer}: {total:.0%} of outputs saturated ({where}; {rule}) at step {step}",
        layer=layer, step=step, fraction=total, low=low, high=high, sides=sides, threshold=sat.get("threshold"),
    )


def _zero_region(sat: dict[str, Any]) -> bool:
    """relu-style saturation (output exactly 0), recognised from the rule the report carries."""
    return sat.get("threshold") == 0.0 and str(sat.get("rule", "")).startswith("output == 0")
