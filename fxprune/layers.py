"""Layers as users think of them, and NNI's config_list applied to them.

A *layer* is a module that owns output channels: a call of a module whose rule has an `out_param`
(`nn.Conv2d`, `nn.Linear`, `nn.BatchNorm2d`, ...), or a function call (`F.conv2d`, `aten.linear`, ...)
whose weight is a parameter, the layer then being the module that owns the weight. Its type is the
class of that module in the user's model as written (a `Conv2dStaticSamePadding` whose forward pads
then calls `F.conv2d` is a layer of type `Conv2dStaticSamePadding`), and `op_types` matches it by
that class or any class it derives from (`'Conv2d'` selects it). `op_names` matches any of a
module's names (`conv1` and `features.0` for one module registered twice).

    layers = find_layers(dg)                 # every layer of a traced model
    chosen = select_layers(dg, cfg)          # those a config's rules select or exclude
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

from .config import Config, RuleConfig
from .errors import ConfigError
from .graph import DependencyGraph, Slot, module_class, module_map, op_name, rule_nodes
from .rules import lookup

__all__ = ["Layer", "find_layers", "select_layers", "module_layers", "assign_rules", "matches", "DEFAULT_TYPES",
           "LEVEL_DEFAULT_TYPES", "module_classes"]

#: What op_types=['default'] means for structured pruners: the layers whose output channels are pruned.
DEFAULT_TYPES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear",
                 "Conv1D",  # Hugging Face's transposed linear (GPT-2)
                 "MultiheadAttention")  # its in-projection rows, whole heads
#: NNI's default op types for weight-level pruners (Level, ADMM, Movement): never the norms.
LEVEL_DEFAULT_TYPES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                       "Linear", "Bilinear", "PReLU", "Embedding", "EmbeddingBag", "Conv1D")


@dataclass
class Layer:
    """A module with an output-channel parameter dim, as the config sees it.

    Attributes:
        name: the module's qualname in the traced graph.
        type_name: its class name as written in the user's model.
        type_names: that class and every class it derives from (what `op_types` matches).
        aliases: every name of the module in the user's model (`named_modules(remove_duplicate=False)`).
        slot: the parameter dim holding its output channels (`@name.weight`, 0 for a conv).
        rule: the config entry that selects it (the last one that matches), if any.
        excluded: an `exclude` entry matches it.
        nodes: the graph nodes that call it.
    """

    name: str
    type_name: str
    type_names: tuple[str, ...]
    aliases: tuple[str, ...]
    slot: Slot
    rule: RuleConfig | None = None
    excluded: bool = False
    nodes: list[str] = field(default_factory=list)

    @property
    def weight(self) -> str:
        """Qualname of the parameter holding the output channels."""
        return self.slot.tensor[1:]


def module_classes(model: torch.nn.Module) -> dict[str, type]:
    """Class of every module of the user's model by every name it has (recorded by the trace pass)."""
    return {name: module_class(m) for name, m in model.named_modules(remove_duplicate=False)}


def _class_names(cls: type) -> tuple[str, ...]:
    return tuple(c.__name__ for c in cls.__mro__ if c not in (torch.nn.Module, object))


def _aliases(gm: torch.fx.GraphModule, name: str) -> tuple[str, ...]:
    names = gm.meta.get("module_aliases", {}).get(name)
    return tuple(names) if names else (name,)


def _layer_class(gm: torch.fx.GraphModule, name: str, node: torch.fx.Node) -> type | str:
    classes = gm.meta.get("module_classes", {})
    if name in classes:
        return classes[name]
    if node.op == "call_module":
        return module_class(gm.get_submodule(node.target))
    for path, cls in node.meta.get("nn_module_stack", {}).values():  # torch.export: the module the call ran in
        if path == name:
            return cls if isinstance(cls, type) else str(cls).rpartition(".")[2]
    return op_name(node.target)


def find_layers(dg: DependencyGraph) -> list[Layer]:
    """Every layer of the traced model, in graph order (see the module docstring)."""
    gm = dg.gm
    layers: dict[str, Layer] = {}
    modules = module_map(gm)
    for node, rule in rule_nodes(gm, "out_param", modules):
        attr, dim = rule.out_param
        if node.op == "call_module":
            if getattr(modules[node.target], attr, None) is None:
                continue
            name, key = node.target, f"@{node.target}.{attr}"
        else:
            weight = node.args[rule.weight_arg] if len(node.args) > rule.weight_arg else None
            if not isinstance(weight, torch.fx.Node) or weight.op != "get_attr" or f"@{weight.target}" not in dg.shapes:
                continue
            name, key = weight.target.rpartition(".")[0], f"@{weight.target}"
        if name not in layers:
            cls = _layer_class(gm, name, node)
            type_name = cls.__name__ if isinstance(cls, type) else cls
            type_names = _class_names(cls) if isinstance(cls, type) else (cls,)
            if node.op != "call_module":  # a function call also answers to its op's name ('conv2d', 'linear')
                type_names += (op_name(node.target),)
            layers[name] = Layer(name, type_name, type_names, _aliases(gm, name), Slot(key, dim))
        layers[name].nodes.append(node.name)
    return list(layers.values())


def matches(rule: RuleConfig, layer: Layer, default_types: tuple[str, ...]) -> bool:
    """Whether a config entry selects a layer: by class (or a base class), any of its names, a name part."""
    by_type = not rule.op_types or any(t in rule.op_types for t in layer.type_names) or (
        "default" in rule.op_types and any(t in default_types for t in layer.type_names))
    by_name = (not rule.op_names or any(a in rule.op_names for a in layer.aliases)) and (
        not rule.op_partial_names or any(p in a for p in rule.op_partial_names for a in layer.aliases))
    return by_type and by_name


def select_layers(dg: DependencyGraph, cfg: Config) -> list[Layer]:
    """Apply the config's rules to the model's layers (later entries override; exclude wins).

    Returns:
        The layers some entry selects or excludes, with `rule` / `excluded` set.

    Raises:
        ConfigError: an entry matches no layer (lists the layer types and names there are).
    """
    return assign_rules(find_layers(dg), cfg)


def module_layers(model: torch.nn.Module) -> list[Layer]:
    """The layers of a model that is not traced (NNI's normal mode): every module with a `weight` parameter, its
    output-channel dim from the rule table's row for its class (0 when it has none), each module once under its
    first name, with all its names as aliases."""
    out: dict[int, Layer] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        weight = getattr(module, "weight", None)
        if not name or not isinstance(weight, torch.Tensor) or weight.dim() == 0:
            continue
        if id(module) in out:
            out[id(module)].aliases += (name,)
            continue
        cls = module_class(module)
        rule = lookup(cls)
        attr, dim = rule.out_param if rule is not None and rule.out_param is not None else ("weight", 0)
        out[id(module)] = Layer(name, cls.__name__, _class_names(cls), (name,), Slot(f"@{name}.{attr}", dim))
    return list(out.values())


def assign_rules(layers: list[Layer], cfg: Config) -> list[Layer]:
    """Set `rule` / `excluded` on `layers` from the config's rules (later entries override; exclude wins) and
    return those some entry selects or excludes (see `select_layers`)."""
    default = LEVEL_DEFAULT_TYPES if cfg.algorithm.unit == "weights" else DEFAULT_TYPES
    for i, rule in enumerate(cfg.rules):
        hits = [layer for layer in layers if matches(rule, layer, default)]
        if not hits:
            types = sorted({layer.type_name for layer in layers})
            names = ", ".join(layer.name for layer in layers[:12]) + (" ..." if len(layers) > 12 else "")
            raise ConfigError(
                f"rules[{i}] matches no layer (op_types={rule.op_types}, op_names={rule.op_names}, "
                f"op_partial_names={rule.op_partial_names}); the model has layer types {types} and "
                f"layers {names}")
        for layer in hits:
            if rule.exclude:
                layer.excluded = True
            else:
                layer.rule = rule
    return [layer for layer in layers if layer.rule is not None or layer.excluded]
