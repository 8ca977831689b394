"""The `Rule` row type, the table `RULES`, and how a node's op finds its row (`spelling`, `lookup`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn.utils.parametrize as parametrize

from ..errors import RuleError
from .context import MaskContext, NodeView, RewriteContext, RuleContext

__all__ = ["Rule", "RULES", "register_rule", "lookup", "spelling", "spelling_name", "module_class", "module_map"]


@dataclass(frozen=True)
class Rule:
    """One row of the table: what fxprune knows about one op (see the package docstring)."""

    couple: Callable[[RuleContext], None]
    rewrite: Callable[[RewriteContext], None] | None = None
    macs: Callable[[NodeView], int] | None = None
    out_param: tuple[str, int] | None = None
    weight_arg: int = 1
    mask: Callable[[MaskContext], None] | None = None


#: spelling -> row. Keys: a module class, a function, a Tensor method name (`"view"`), an ATen overload, or the
#: qualified name of a function or class of a package fxprune does not import (`"timm.layers.drop.drop_path"`).
RULES: dict[Any, Rule] = {}


def register_rule(keys: Any | Iterable[Any], rule: Rule | Callable[[RuleContext], None], *,
                  replace: bool = False) -> None:
    """Add the row for one op: every spelling of it, with one rule.

    Args:
        keys: a module class, function, Tensor method name (`"view"`), ATen overload, `"package.module.name"`
            of a function or class fxprune cannot import, or a list of them (all spellings of the op).
        rule: a `Rule`, or a bare `couple` function (e.g. `fxprune.rules.elementwise`).
        replace: allow replacing a spelling that already has a row (without it, that is a `RuleError`).

    Example:
        >>> fxprune.register_rule(my_gate, fxprune.rules.elementwise)
    """
    if not isinstance(rule, Rule):
        rule = Rule(couple=rule)
    keys = list(dict.fromkeys(keys)) if isinstance(keys, (list, tuple, set)) else [keys]
    if not replace:
        taken = [k for k in keys if k in RULES]
        if taken:
            raise RuleError(f"{', '.join(spelling_name(k) for k in taken)} already has a rule; pass replace=True "
                            "to register_rule to replace it")
    for k in keys:
        RULES[k] = rule


def lookup(key: Any) -> Rule | None:
    """The row of a spelling (see `spelling`), or None. A function or class with no row of its own is also
    looked up by its qualified name, `f"{__module__}.{__qualname__}"`."""
    rule = RULES.get(key)
    if rule is None and not isinstance(key, (str, torch._ops.OpOverload)):
        module, name = getattr(key, "__module__", None), getattr(key, "__qualname__", None)
        if module and name:
            rule = RULES.get(f"{module}.{name}")
    return rule


def module_class(module: torch.nn.Module) -> type:
    """A module's class as the rule table knows it (seen through torch parametrizations)."""
    cls = type(module)
    return cls.__bases__[0] if parametrize.is_parametrized(module) else cls


def module_map(gm: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Every submodule by every qualname it has: one walk, for a caller that looks up many nodes' modules
    (`spelling`, the rule contexts) instead of a `get_submodule` per node."""
    return dict(gm.named_modules(remove_duplicate=False))


def spelling(node: torch.fx.Node, gm: torch.fx.GraphModule, modules: dict[str, Any] | None = None) -> Any:
    """The rule-table key of a node: module class, function object, method name or ATen overload (`modules`:
    `module_map(gm)`, for a caller that looks up many nodes)."""
    if node.op == "call_module":
        return module_class(modules[node.target] if modules is not None else gm.get_submodule(node.target))
    return node.target


def spelling_name(key: Any) -> str:
    """How messages name a spelling: `Tensor.view`, `aten.view.default`, `torch.nn.functional.relu`."""
    if isinstance(key, str):
        return key if "." in key else f"Tensor.{key}"
    if isinstance(key, torch._ops.OpOverload):
        return str(key)
    module = getattr(key, "__module__", "") or ""
    name = getattr(key, "__qualname__", getattr(key, "__name__", str(key)))
    if name.startswith("_VariableFunctionsClass."):  # torch's C functions (torch.add) carry no module
        module, name = "torch", name.partition(".")[2]
    return f"{module}.{name}".lstrip(".")
