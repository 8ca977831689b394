"""Couplings many ops share: element-wise, metadata-only, dims that pass through, created tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .context import RuleContext

__all__ = ["elementwise", "metadata", "along_dims", "all_but", "per_channel", "first_input", "created", "opaque"]


def elementwise(c: RuleContext) -> None:
    """Output channel i is computed from input channel i only (broadcasting allowed)."""
    c.broadcast(c.out, c.inputs())


def metadata(c: RuleContext) -> None:
    """The op reads sizes or dtypes only: its inputs stay free to change."""
    for key in c.inputs():
        c.touch(key)


def along_dims(keep: Callable[[RuleContext], Iterable[int]]) -> Callable[[RuleContext], None]:
    """Input and output share the dims `keep(c)` returns (same positions); the rest are mixed."""

    def couple(c: RuleContext) -> None:
        x = c.inputs()[0]
        for d in keep(c):
            c.link((x, d), (c.out, d))

    return couple


def all_but(dims_of: Callable[[RuleContext], Iterable[int]]) -> Callable[[RuleContext], Iterable[int]]:
    """The dims of the first input other than `dims_of(c)` (for `along_dims`: softmax, roll, cumsum)."""

    def keep(c: RuleContext) -> Iterable[int]:
        n = c.ndim(c.inputs()[0])
        mixed = {d % n for d in dims_of(c)}
        return [d for d in range(n) if d not in mixed]

    return keep


def _channel_and_batch(c: RuleContext) -> Iterable[int]:
    return (0, 1) if c.ndim(c.inputs()[0]) > 1 else (0,)


#: pooling, upsampling, padding modules: batch and channel dims pass through, spatial dims are mixed
per_channel = along_dims(_channel_and_batch)


def first_input(c: RuleContext) -> None:
    """Same tensor out as in (contiguous, clone, to, type_as, ...): other tensor args are templates."""
    ins = c.inputs()
    c.same(ins[0], c.out)
    for other in ins[1:]:
        c.touch(other)


def created(c: RuleContext) -> None:
    """A new tensor from sizes or scalars (arange, zeros, full): no channels flow into it."""


def opaque(c: RuleContext) -> None:
    """The op moves elements across positions in ways no coupling describes (gather, diff)."""
    for key in c.inputs() + ([c.out] if c.out else []):
        for d in range(c.ndim(key)):
            c.freeze(key, d, f"{c.target_name()} reads elements by index")
