"""Sparsity schedules: pure functions `(iteration, total, final) -> sparsity` for iterative pruning.

`iteration` runs from 0 to `total`; every schedule gives 0 at 0 and `final` at `total`. NNI starts
its iterative pruners with a sparsity-0 warm-up round (iteration 0); `rounds(...)` lists the
sparsities of every round, with or without it.

    >>> rounds(linear, 5, 0.5)
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["linear", "agp", "lottery", "rounds", "SCHEDULES", "Schedule", "agp_epoch"]

Schedule = Callable[[int, int, float], float]


def _check(iteration: int, total: int, final: float) -> None:
    if total < 1 or not 0 <= iteration <= total:
        raise ValueError(f"iteration {iteration} of {total}: need total >= 1 and 0 <= iteration <= total")
    if not 0 <= final < 1:
        raise ValueError(f"final sparsity {final} is outside [0, 1)")


def linear(iteration: int, total: int, final: float) -> float:
    """i/N * s: the same number of channels removed every round (NNI's LinearPruner)."""
    _check(iteration, total, final)
    return final * iteration / total


def agp(iteration: int, total: int, final: float) -> float:
    """s * (1 - (1 - i/N)^3): prune fast while there is redundancy, slowly near the end (Zhu & Gupta 2017)."""
    _check(iteration, total, final)
    return final * (1 - (1 - iteration / total) ** 3)


def lottery(iteration: int, total: int, final: float) -> float:
    """1 - (1 - s)^(i/N): every round removes the same fraction, 1 - (1 - s)^(1/N), of what is left."""
    _check(iteration, total, final)
    return 1 - (1 - final) ** (iteration / total)


SCHEDULES: dict[str, Schedule] = {"linear": linear, "agp": agp, "lottery": lottery}


def rounds(schedule: Schedule, total: int, final: float, *, warm_up: bool = True) -> list[float]:
    """The sparsity of every round: iterations 0..total (NNI's sparsity-0 warm-up first), or 1..total."""
    return [schedule(i, total, final) for i in range(0 if warm_up else 1, total + 1)]


def agp_epoch(epoch: int, initial: float, final: float, start: int, end: int, frequency: int) -> float | None:
    """NNI v1 AGPPruner's sparsity at `epoch`, or None where the mask is not recomputed (before `start_epoch`,
    or between two `frequency` steps).

    `s = final + (initial - final) (1 - (epoch - start) / span)^3` with `span = ((end - start - 1) // frequency) *
    frequency`; `final` from `end` on (and when the span is empty).
    """
    if epoch < start:
        return None
    span = ((end - start - 1) // frequency) * frequency
    if epoch >= end or span <= 0 or initial >= final:
        return final
    if (epoch - start) % frequency:
        return None
    return final + (initial - final) * (1 - (epoch - start) / span) ** 3
