"""Reduction names shared by the losses."""

from __future__ import annotations

from typing import Literal

from seedkit.checks import check_choice

Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")


def check_reduction(reduction: object) -> Reduction:
    """Validate a reduction name (raises :class:`~seedkit.errors.InvalidValueError`)."""
    return check_choice("reduction", reduction, REDUCTIONS)  # type: ignore[return-value]
