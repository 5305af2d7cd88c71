"""Training costs: −log P(y|x) (the paper's) and the quadratic cost of §4.1 / Fig 5."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Loss = Callable[..., Tensor]


def cross_entropy(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Softmax output with cost −log P(y|x) (paper §2.3)."""
    return F.cross_entropy(logits, y, reduction=reduction)


def quadratic(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """½‖softmax(logits) − onehot(y)‖² per example: the quadratic cost compared in §4.1 / Fig 5."""
    p = torch.softmax(logits, dim=-1)
    per = 0.5 * ((p - F.one_hot(y, p.shape[-1]).to(p.dtype)) ** 2).sum(-1)
    return per.sum() if reduction == "sum" else per.mean() if reduction == "mean" else per


LOSSES: dict[str, Loss] = {"cross_entropy": cross_entropy, "quadratic": quadratic}
