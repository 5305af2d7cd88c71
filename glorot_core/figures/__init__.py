"""Figures drawn from a report the way Glorot & Bengio (2010) draw theirs (docs/figures.md).

``available(report)`` names the figures a report can be drawn as (a run at initialisation has no
curves over training; one without Jacobians has no spectra); ``build(report, name)`` returns the
matplotlib ``Figure`` (its Artists carry the report's numbers, which the tests read back) and
``render(report, name, fmt)`` its PNG or SVG bytes. matplotlib draws on its Agg canvas; ``pyplot`` is
never imported.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from glorot_core.figures import cost_surface, curves, histograms
from glorot_core.figures._base import FORMATS, MEDIA_TYPES, RENDER_LOCK, FigureDef, Report, save


def _hist(section: str, which: str, title: str) -> FigureDef:
    return FigureDef(
        name=f"{section}_histograms_{which}", paper="", title=title,
        applies=lambda r: histograms.has_histograms(r, section, which),
        build=lambda r: histograms.layer_histograms(r, section, which, title),
    )


def _with_paper(d: FigureDef, paper: str) -> FigureDef:
    return FigureDef(d.name, paper, d.title, d.applies, d.build)


FIGURES: dict[str, FigureDef] = {d.name: d for d in (
    FigureDef("activation_mean_std", "Fig 2", "Activation mean and std per layer over training",
              lambda r: curves.over_training(r, "activation"), curves.mean_std),
    FigureDef("activation_p98_std", "Figs 3, 10", "Activation 98th percentiles and std per layer over training",
              lambda r: curves.over_training(r, "activation"), curves.percentiles_std),
    FigureDef("weight_grad_std", "Fig 9", "Weight-gradient std intervals per layer over training",
              lambda r: curves.over_training(r, "weight_grad"), curves.weight_grad_std),
    FigureDef("test_error", "Figs 11, 12", "Test error against examples seen",
              curves.has_test_error, curves.error_curve),
    _with_paper(_hist("activation", "init", "Activation histograms per layer at initialisation"), "Fig 6"),
    _with_paper(_hist("activation", "final", "Activation histograms per layer at the end of training"), "Fig 4"),
    _with_paper(_hist("backprop_grad", "init", "Back-propagated gradient histograms per layer at initialisation"),
                "Fig 7"),
    _with_paper(_hist("weight_grad", "init", "Weight-gradient histograms per layer at initialisation"), "Fig 8"),
    _with_paper(_hist("jacobian", "init", "Jacobian singular-value histograms per layer"), "§4.2.2"),
    FigureDef("jacobian_end_to_end", "§4.2.2", "End-to-end Jacobian singular-value histogram",
              histograms.has_end_to_end, histograms.end_to_end),
    FigureDef("cost_surface", "Fig 5", "Cross-entropy and quadratic cost over two weights",
              cost_surface.has_surface, cost_surface.surface),
)}


def available(report: Report) -> list[FigureDef]:
    """The figures this report can be drawn as, in a fixed order."""
    return [d for d in FIGURES.values() if d.applies(report)]


def build(report: Report, name: str) -> Figure:
    """Figure ``name`` of ``report``; KeyError for an unknown name, ValueError when it does not apply."""
    d = FIGURES[name]
    if not d.applies(report):
        raise ValueError(f"figure {name!r} does not apply to this report")
    return d.build(report)


def render(report: Report, name: str, fmt: str = "png") -> bytes:
    """Figure ``name`` of ``report`` as PNG or SVG bytes (drawing serialised by ``RENDER_LOCK``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    with RENDER_LOCK:
        return save(build(report, name), fmt)


def write_all(report: Report, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Every available figure of ``report`` into ``out_dir`` as ``NAME.FMT``; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for d in available(report):
        with RENDER_LOCK:
            fig = d.build(report)
            for fmt in formats:
                path = out_dir / f"{d.name}.{fmt}"
                path.write_bytes(save(fig, fmt))
                written.append(path)
    return written


__all__ = ["FIGURES", "FORMATS", "MEDIA_TYPES", "FigureDef", "available", "build", "render", "write_all"]
