"""Named experiment specs that reproduce a figure or a Table 1 cell of Glorot & Bengio (2010).

Each :class:`Preset` is the paper's setup for one configuration (docs/science.md §1: 1000 units per
hidden layer, softmax output, plain SGD on mini-batches of 10, biases at 0, 300 monitor examples) and
two budgets:

* ``paper``: the paper's budget — training curves over 2.5 million updates (Figs 11–12 run to 2.5·10⁷
  examples; Figs 2, 3, 9, 10 count epochs of 20,000 updates) with one snapshot per epoch, Table 1
  cells over the 5 million updates the learning rate was selected on. Meant for GPU workers.
* ``quick``: at most about 10 minutes on a 2-core CPU. It is a *reduction* of the paper's run and says
  so in the spec's ``name`` (hence in the report) and in :attr:`Budget.note`; ``quick_shows`` says
  whether the figure's qualitative fact is expected to show already at that budget.

What the paper does not state is a choice here, said in each preset: the learning rate (tuned per model
in the paper, grid not given) is 0.01 except where a value is known to show the fact (Fig 2: 0.1); the
Shapeset pixels are mapped to [−1, 1] except for Fig 3, whose saturation needs uncentred inputs in [0, 1].
``spec_for(name, budget, overrides)`` builds the spec as a plain dict (``overrides`` are merged in
last, key by key), which ``glorot_core.spec.validate_spec`` then checks like any other spec.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

BudgetName = Literal["quick", "paper"]
BUDGETS: tuple[BudgetName, ...] = ("quick", "paper")

EPOCH = 20_000
"""The paper's "epoch" on the x axis of Figs 2, 3, 9, 10: 20,000 mini-batch updates (200k examples)."""
PAPER_CURVE_STEPS = 2_500_000
"""Figs 11–12 run to 2.5·10⁷ examples seen = 2.5 million updates of 10 examples."""
PAPER_TABLE_STEPS = 5_000_000
"""Table 1: the learning rate was selected on validation error after 5 million updates."""
FILE_DATASETS = frozenset({"mnist", "cifar10"})
"""Data sets read from local files (the service: a folder under ``GLOROT_DATA_DIR``)."""


@dataclass(frozen=True)
class Budget:
    """How long a preset trains and how often it measures."""

    steps: int
    every: int
    note: str
    jacobian: bool = True
    """Measure Jacobian spectra at every snapshot (off in quick training runs: they are the dearest
    instrument and no training-curve figure needs them)."""

    def cost(self, batch_size: int) -> dict[str, int]:
        """The budget's cost in updates and examples seen, and its snapshot count."""
        return {"updates": self.steps, "examples": self.steps * batch_size, "snapshots": self.steps // self.every + 1}


@dataclass(frozen=True)
class Preset:
    """One configuration of the paper: its spec at the paper's setup, what it reproduces, the claim."""

    name: str
    reproduces: tuple[str, ...]
    claim: str
    spec: dict[str, Any]
    budgets: dict[str, Budget]
    quick_shows: str
    choices: str = "learning rate 0.01 (the paper tuned it per model and does not give it)"
    paper_value: float | None = None
    """Table 1 cells: the paper's test error (%)."""

    @property
    def dataset(self) -> str:
        return str(self.spec["data"]["dataset"])

    def describe(self) -> dict[str, Any]:
        """The JSON description ``GET /v1/presets`` lists."""
        batch = int(self.spec["train"]["batch_size"])
        return {
            "name": self.name,
            "reproduces": list(self.reproduces),
            "claim": self.claim,
            "paper_value": self.paper_value,
            "dataset": self.dataset,
            "needs_data_files": self.dataset in FILE_DATASETS,
            "choices": self.choices,
            "quick_shows": self.quick_shows,
            "budgets": {name: {"steps": b.steps, "every": b.every, "note": b.note, "jacobian": b.jacobian,
                               "cost": b.cost(batch)} for name, b in self.budgets.items()},
            "spec": copy.deepcopy(self.spec),
        }


class PresetError(ValueError):
    """An unknown preset or budget, or overrides that are not an object; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _spec(activation: str, init: str = "standard", *, depth: int = 5, dataset: str = "shapeset3x2",
          lr: float = 0.01, loss: str = "cross_entropy", test_examples: int = 2000,
          cost_surface: bool = False, input_range: tuple[float, float] = (-1.0, 1.0)) -> dict[str, Any]:
    """The paper's setup (§2.3) for one network; ``train.steps`` and ``diagnostics.every`` come from a budget.
    ``cost_surface``: the report gets Fig 5's surfaces of both costs at the end of the run. ``input_range``:
    where the pixels are mapped (Fig 3 needs the uncentred [0, 1], docs/science.md "Fig 3")."""
    inputs, classes = {"shapeset3x2": (1024, 9), "mnist": (784, 10), "cifar10": (3072, 10)}[dataset]
    return {
        "model": {"input_dim": inputs, "hidden": [1000] * depth, "num_classes": classes,
                  "activation": activation, "init": init, "bias_init": 0.0},
        "data": {"dataset": dataset, "input_range": list(input_range), "test_examples": test_examples},
        "train": {"batch_size": 10, "lr": lr, "loss": loss, "optimizer": "sgd", "momentum": 0.0},
        # the paper's basis: each example's own weight gradient (Figs 8-9 are drawn on it)
        "diagnostics": {"monitor_examples": 300, "gradient_basis": "per_example",
                        **({"cost_surface": {"enabled": True}} if cost_surface else {})},
    }


AT_INIT = {"quick": Budget(0, 1, "at initialisation: the paper's figure, no reduction"),
           "paper": Budget(0, 1, "at initialisation, as in the paper")}


PAPER_CURVES = Budget(PAPER_CURVE_STEPS, EPOCH, "the paper's 2.5 million updates (125 epochs; 2.5e7 examples), "
                      "a snapshot per epoch")


def _curves(quick_steps: int, quick_every: int, what: str) -> dict[str, Budget]:
    return {
        "quick": Budget(quick_steps, quick_every, f"REDUCED: {quick_steps:,} of the paper's {PAPER_CURVE_STEPS:,} "
                        f"updates ({quick_steps / EPOCH:g} epochs of 20,000), {what}; Jacobians off", jacobian=False),
        "paper": PAPER_CURVES,
    }


def _table(quick_steps: int) -> dict[str, Budget]:
    return {
        "quick": Budget(quick_steps, quick_steps // 20,
                        f"REDUCED: {quick_steps:,} of the paper's {PAPER_TABLE_STEPS:,} updates; "
                        "the test error is far above the paper's converged value", jacobian=False),
        "paper": Budget(PAPER_TABLE_STEPS, 4 * EPOCH, "the paper's 5 million updates, a snapshot every 4 epochs"),
    }


_NAMES = {"sigmoid": "Sigmoid", "tanh": "Tanh", "softsign": "Softsign"}
_TABLE1: dict[tuple[str, str], dict[str, float]] = {
    ("softsign", "standard"): {"shapeset3x2": 16.27, "mnist": 1.64, "cifar10": 55.78},
    ("softsign", "normalized"): {"shapeset3x2": 16.06, "mnist": 1.72, "cifar10": 53.8},
    ("tanh", "standard"): {"shapeset3x2": 27.15, "mnist": 1.76, "cifar10": 55.9},
    ("tanh", "normalized"): {"shapeset3x2": 15.60, "mnist": 1.64, "cifar10": 52.92},
    ("sigmoid", "standard"): {"shapeset3x2": 82.61, "mnist": 2.21, "cifar10": 57.28},
}
_DATASET_TITLES = {"shapeset3x2": "Shapeset", "mnist": "MNIST", "cifar10": "CIFAR-10"}
_QUICK_TABLE_STEPS = {"shapeset3x2": 30_000, "mnist": 20_000, "cifar10": 15_000}
"""≈6–9 minutes of a 5×1000 network on a 2-core CPU (CIFAR-10's 3072 inputs make each update dearer)."""


def _table1_presets() -> list[Preset]:
    out = []
    for (act, init), row in _TABLE1.items():
        label = _NAMES[act] + (" N" if init == "normalized" else "")
        for dataset, value in row.items():
            title = _DATASET_TITLES[dataset]
            figs = ["Fig 11"] if dataset == "shapeset3x2" else [f"Fig 12 ({title})"]
            name = f"table1_{act}{'_n' if init == 'normalized' else ''}_{dataset}"
            out.append(Preset(
                name=name,
                reproduces=(f"Table 1: {label} × {title}", *(f"{f}: the {label} curve" for f in figs)),
                claim=f"{label}, 5 hidden layers of 1000, reaches {value} % test error on {title} (Table 1)"
                + ("; the sigmoid network learns nothing beyond the class prior (≈83 % error)"
                   if (act, dataset) == ("sigmoid", "shapeset3x2") else ""),
                spec=_spec(act, init, dataset=dataset, test_examples=2000 if dataset == "shapeset3x2" else 10_000),
                budgets=_table(_QUICK_TABLE_STEPS[dataset]),
                quick_shows="no: the quick budget only starts the learning curve; Table 1's values need the paper "
                "budget and several seeds",
                paper_value=value,
            ))
    return out


def _figure_presets() -> list[Preset]:
    return [
        Preset("fig2_sigmoid", ("Fig 2",),
               "sigmoid, 4 hidden layers, standard init: the top hidden layer's mean activation falls from 0.5 "
               "to ≈0 within the first epochs and stays there until ≈epoch 100, while the layers below rise "
               "(layer 3 ≈0.8); test error stays at the class prior's",
               _spec("sigmoid", depth=4, lr=0.1),
               {"quick": Budget(2_000, 100, f"REDUCED: 2,000 of the paper's {PAPER_CURVE_STEPS:,} updates: the "
                                "top layer's fall to 0 shows within 1,000; its later escape does not; Jacobians off",
                                jacobian=False),
                "paper": PAPER_CURVES},
               quick_shows="yes: top-layer mean < 0.1 and layer 3 > 0.6 after 1,000 updates",
               choices="learning rate 0.1 (not given by the paper; shows the top layer's saturation fastest)"),
        *[Preset(f"fig3_{act}", (f"Fig 3 ({'top' if act == 'tanh' else 'bottom'}: {_NAMES[act]})",),
                 "tanh, standard init: layers saturate one after another, layer 1 first (its 98th percentile "
                 "reaches 1 within the first epochs, then layers 2, 3, 4 follow; the top layer does not)"
                 if act == "tanh" else
                 "softsign, standard init: all layers' 98th percentiles rise together to ≈0.8–0.9 within ≈10 "
                 "epochs; none saturates",
                 _spec(act, input_range=(0.0, 1.0)), _curves(30_000, 1_000, "1.5 epochs"),
                 quick_shows="partly: layer 1's 98th percentile rises towards 1 (0.63 → 0.94) while the layers "
                 "above stay at 0.2–0.3; layers 2, 3, 4 follow only over the paper budget (docs/science.md, Fig 3)"
                 if act == "tanh" else "partly: the layers' joint rise begins within the quick budget",
                 choices="Shapeset pixels in [0, 1], not centred (with the centred default [−1, 1] no layer "
                 "saturates: docs/science.md, Fig 3); learning rate 0.01 (the paper tuned it per model and "
                 "does not give it)")
          for act in ("tanh", "softsign")],
        *[Preset(f"fig4_{act}", ("Fig 4 (" + _NAMES[act] + ")",),
                 "activation histograms at the end of training: tanh has peaks at ±1 (saturated) and at 0; "
                 "softsign has modes near ±(0.6–0.8) and few values at ±1",
                 _spec(act), _curves(30_000, 5_000, "the end-of-training histograms are of an early network"),
                 quick_shows="no: the end of the paper's training is far beyond the quick budget")
          for act in ("tanh", "softsign")],
        *[Preset(f"fig5_{loss}", ("Fig 5",),
                 "the quadratic cost has far larger plateaus than the cross-entropy over two weights (one "
                 "into the hidden layer, one of the output layer) of a 1-hidden-layer tanh network; trained "
                 "here with " + loss.replace("_", "-") + ", both surfaces drawn at the end (figure cost_surface)",
                 _spec("tanh", depth=1, loss=loss, cost_surface=True), _curves(20_000, 1_000, "1 epoch"),
                 quick_shows="yes for the surfaces (the quadratic one has the larger plateaus at any budget, "
                 "initialisation included); partly for training: its slower start shows in the test error")
          for loss in ("cross_entropy", "quadratic")],
        *[Preset(f"fig6_8_{init}", ("Fig 6", "Fig 7", "Fig 8", "§4.2.2 Jacobian singular values"),
                 "at initialisation, tanh: " + (
                     "activations narrow ≈1.6–2× per layer going up, back-propagated gradients ≈1.6–2× per layer "
                     "going down, weight gradients about the same width in every layer; Jacobian mean singular "
                     "value ≈0.5" if init == "standard" else
                     "activation and back-propagated gradient histograms of all layers nearly coincide; weight "
                     "gradients the same width in every layer; Jacobian mean singular value ≈0.8"),
                 _spec("tanh", init), dict(AT_INIT), quick_shows="yes: at initialisation the budget is the paper's",
                 choices="none beyond the instruments' bins (diagnostics defaults)")
          for init in ("standard", "normalized")],
        *[Preset(f"fig9_{init}", ("Fig 9 (" + ("top" if init == "standard" else "bottom") + ")",),
                 "standard-deviation intervals of the weight gradients per layer over training: with the standard "
                 "init the lower layers' grow much larger (≈±0.05 vs ±0.015 at epoch 90); the normalized init "
                 "keeps them closer",
                 _spec("tanh", init), _curves(30_000, 1_000, "1.5 epochs"),
                 quick_shows="partly: the layers' spread of weight-gradient std at init and its first drift")
          for init in ("standard", "normalized")],
        Preset("fig10_tanh_n", ("Fig 10",),
               "tanh with the normalized init: the layers' 98th percentiles and std move together over training, "
               "like softsign's, with no layer-by-layer saturation",
               _spec("tanh", "normalized"), _curves(30_000, 1_000, "1.5 epochs"),
               quick_shows="partly: the layers' joint behaviour at the start of training"),
        Preset("fig11_sigmoid_d4", ("Fig 11: the Sigmoid depth 4 curve",),
               "sigmoid with 4 hidden layers escapes the prior and reaches ≈35 % test error at 2.5·10⁷ examples, "
               "where depth 5 stays at ≈83 %",
               _spec("sigmoid", depth=4), _curves(30_000, 1_500, "1.5 epochs"),
               quick_shows="no: the escape from saturation comes after ≈2 million updates"),
    ]


PRESETS: dict[str, Preset] = {p.name: p for p in (*_figure_presets(), *_table1_presets())}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; :class:`PresetError` naming the known ones when there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError("preset", f"unknown preset {name!r}; GET /v1/presets lists them "
                          f"({', '.join(sorted(PRESETS)[:6])}, …)") from None


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in key by key (objects recursively; anything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def spec_for(name: str, budget: str = "quick", overrides: Any = None) -> dict[str, Any]:
    """The spec (a plain dict, not yet validated) of preset ``name`` at ``budget``, with ``overrides``.

    The spec's ``name`` says the preset and the budget, and for a reduced budget that it is reduced, so
    the report states it; an override of ``name`` replaces that too.
    """
    preset = get_preset(name)
    if budget not in preset.budgets:
        raise PresetError("budget", f"unknown budget {budget!r}; expected one of: {', '.join(preset.budgets)}")
    if overrides is not None and not isinstance(overrides, dict):
        raise PresetError("overrides", "overrides must be an object of spec fields, e.g. {\"train\": {\"steps\": 50}}")
    b = preset.budgets[budget]
    label = f"{name} [{budget} budget" + (": REDUCED from the paper's]" if "REDUCED" in b.note else "]")
    spec = merge(preset.spec, {
        "name": label,
        "train": {"steps": b.steps},
        "diagnostics": {"every": b.every, **({} if b.jacobian else {"jacobian": {"mode": "off"}})},
    })
    return merge(spec, overrides or {})


def catalogue() -> list[dict[str, Any]]:
    """Every preset's description, in a stable order (figures first, then Table 1)."""
    return [p.describe() for p in PRESETS.values()]


__all__ = ["BUDGETS", "PRESETS", "Budget", "Preset", "PresetError", "catalogue", "get_preset", "merge", "spec_for"]
