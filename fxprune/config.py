"""Config: a plain dict (or dataclass) validated before any work is done.

    {"pruner": "l1", "sparsity": 0.5}                         # every Conv/Linear layer, 50% channels
    {"pruner": "fpgm", "rules": [                              # NNI's config_list, verbatim
        {"sparsity": 0.5, "op_types": ["Conv2d"]},
        {"exclude": True, "op_names": ["conv1"]}]}
    [{"sparsity": 0.8, "op_types": ["default"]}]               # a bare config_list

Sparsity is the fraction removed: channels of a group for structured pruners, weights of a layer
for Level.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["Config", "RuleConfig", "parse_config", "PRUNERS"]

#: Pruner names accepted in `config["pruner"]`; structured ones remove channels, `level` weights.
PRUNERS = ("l1", "l2", "fpgm", "level")

_TOP_KEYS = {
    "pruner": "which importance / algorithm: " + ", ".join(PRUNERS),
    "sparsity": "shorthand for rules=[{'sparsity': s, 'op_types': ['default']}]",
    "rules": "NNI config_list",
    "config_list": "alias of rules",
    "global": "rank channels across all selected groups instead of per group",
    "round_to": "keep channel counts a multiple of N",
    "dependency_aware": "score channels over every parameter of their group (NNI's mode flag)",
    "mode": "NNI's 'dependency_aware' | 'normal'",
    "verify": "check masked == pruned on the example inputs (default True)",
    "rtol": "relative tolerance of the check",
    "atol": "absolute tolerance of the check",
    "frontend": "'auto' (fx, then torch.export where fx fails) | 'fx' | 'export'",
    "attention": "where a view splits channels into (heads, head_dim): prune 'heads' or 'head_dim'; None (default):"
                 " heads where the view allows it, without an error where no heads are prunable",
    "prune_hidden": "also prune the hidden size (residual stream, norms, embeddings); default False",
}
_FRONTENDS = ("auto", "fx", "export")
_ATTENTION = ("heads", "head_dim")
_RULE_KEYS = {"sparsity", "sparse_ratio", "sparsity_per_layer", "op_types", "op_names", "op_partial_names",
              "exclude", "total_sparsity", "max_sparsity_per_layer"}


@dataclass
class RuleConfig:
    """One entry of NNI's config_list."""

    sparsity: float | None = None
    op_types: list[str] = field(default_factory=list)
    op_names: list[str] = field(default_factory=list)
    op_partial_names: list[str] = field(default_factory=list)
    exclude: bool = False
    total_sparsity: float | None = None
    max_sparsity_per_layer: float | dict[str, float] | None = None

    def matches(self, name: str, type_name: str, default_types: tuple[str, ...]) -> bool:
        """Whether a layer (qualname, class name) is selected by this entry."""
        by_type = not self.op_types or type_name in self.op_types or (
            "default" in self.op_types and type_name in default_types)
        by_name = (not self.op_names or name in self.op_names) and (
            not self.op_partial_names or any(p in name for p in self.op_partial_names))
        return by_type and by_name

    @property
    def target(self) -> float:
        return self.total_sparsity if self.sparsity is None else self.sparsity


@dataclass
class Config:
    """A validated config. Build it with `parse_config`."""

    pruner: str = "l1"
    rules: list[RuleConfig] = field(default_factory=list)
    global_ranking: bool = False
    round_to: int = 1
    dependency_aware: bool = True
    verify: bool = True
    rtol: float = 1e-4
    atol: float = 1e-5
    frontend: str = "auto"
    attention: str | None = None
    prune_hidden: bool = False


def _suggest(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _ratio(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where} must be a number in [0, 1), got {value!r}")
    if not 0 <= value < 1:
        raise ConfigError(f"{where} = {value} is outside [0, 1): it is the fraction removed, e.g. 0.5")
    return float(value)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be True or False, got {value!r}")
    return value


def _names(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings, got {value!r}")
    return list(value)


def _parse_rule(entry: Any, i: int) -> RuleConfig:
    where = f"rules[{i}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a dict like {{'sparsity': 0.5, 'op_types': ['Conv2d']}}, got {entry!r}")
    for key in entry:
        if key not in _RULE_KEYS:
            raise ConfigError(f"unknown key '{key}' in {where}{_suggest(key, _RULE_KEYS)}; "
                              f"allowed: {', '.join(sorted(_RULE_KEYS))}")
    rule = RuleConfig(exclude=_flag(entry.get("exclude", False), f"{where}.exclude"))
    ratio_keys = [k for k in ("sparsity", "sparse_ratio", "sparsity_per_layer") if k in entry]
    if len(ratio_keys) > 1:
        raise ConfigError(f"{where} gives both {ratio_keys[0]} and {ratio_keys[1]}: keep one")
    if ratio_keys:
        rule.sparsity = _ratio(entry[ratio_keys[0]], f"{where}.{ratio_keys[0]}")
    if "total_sparsity" in entry:
        if rule.sparsity is not None:
            raise ConfigError(f"{where} gives both sparsity and total_sparsity: keep one")
        rule.total_sparsity = _ratio(entry["total_sparsity"], f"{where}.total_sparsity")
    if "max_sparsity_per_layer" in entry:
        cap = entry["max_sparsity_per_layer"]
        if isinstance(cap, dict) and not all(isinstance(k, str) for k in cap):
            raise ConfigError(f"{where}.max_sparsity_per_layer keys must be layer names, got {list(cap)!r}")
        rule.max_sparsity_per_layer = (
            {k: _ratio(v, f"{where}.max_sparsity_per_layer[{k!r}]") for k, v in cap.items()}
            if isinstance(cap, dict) else _ratio(cap, f"{where}.max_sparsity_per_layer"))
    for key in ("op_types", "op_names", "op_partial_names"):
        if key in entry:
            setattr(rule, key, _names(entry[key], f"{where}.{key}"))
    if rule.exclude and (rule.sparsity is not None or rule.total_sparsity is not None):
        raise ConfigError(f"{where} is an exclude and also gives a sparsity: split it into two entries")
    if not rule.exclude and rule.sparsity is None and rule.total_sparsity is None:
        raise ConfigError(f"{where} has no sparsity: add 'sparsity': 0.5 (or 'exclude': True to skip layers)")
    if not (rule.op_types or rule.op_names or rule.op_partial_names):
        raise ConfigError(f"{where} selects no layer: add 'op_types': ['default'] or 'op_names': [...]")
    return rule


def parse_config(config: Any) -> Config:
    """Validate a config dict, dataclass or bare NNI config_list.

    Raises:
        ConfigError: naming the key and the fix, for any unknown key, wrong type or value.
    """
    if isinstance(config, Config):
        return config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if isinstance(config, (list, tuple)):
        config = {"rules": list(config)}
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a dict or an NNI config_list, got {type(config).__name__}")
    for key in config:
        if key not in _TOP_KEYS:
            raise ConfigError(f"unknown config key '{key}'{_suggest(key, _TOP_KEYS)}; known keys:\n"
                              + "\n".join(f"  {k}: {v}" for k, v in _TOP_KEYS.items()))
    cfg = Config()
    pruner = config.get("pruner", "l1")
    if not isinstance(pruner, str) or pruner.lower() not in PRUNERS:
        raise ConfigError(f"config['pruner'] = {pruner!r} is not one of {', '.join(PRUNERS)}"
                          f"{_suggest(str(pruner).lower(), PRUNERS)}")
    cfg.pruner = pruner.lower()
    if "rules" in config and "config_list" in config:
        raise ConfigError("config gives both 'rules' and 'config_list': keep one")
    rules = config.get("rules", config.get("config_list"))
    if rules is not None and "sparsity" in config:
        raise ConfigError("config gives both 'sparsity' and 'rules': put the sparsity inside the rules")
    if rules is None:
        if "sparsity" not in config:
            raise ConfigError("config has neither 'sparsity' nor 'rules': add e.g. 'sparsity': 0.5")
        rules = [{"sparsity": config["sparsity"], "op_types": ["default"]}]
    if not isinstance(rules, (list, tuple)) or not rules:
        raise ConfigError("config['rules'] must be a non-empty list of dicts (NNI's config_list)")
    cfg.rules = [_parse_rule(e, i) for i, e in enumerate(rules)]
    if all(r.exclude for r in cfg.rules):
        raise ConfigError("every entry of config['rules'] is an exclude: add one with a sparsity")
    cfg.global_ranking = _flag(config.get("global", False), "config['global']")
    round_to = config.get("round_to", 1)
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise ConfigError(f"config['round_to'] = {round_to!r} must be a positive int, e.g. 8")
    cfg.round_to = int(round_to)
    mode = config.get("mode", "dependency_aware")
    if mode not in ("dependency_aware", "normal"):
        raise ConfigError(f"config['mode'] = {mode!r} must be 'dependency_aware' or 'normal'")
    cfg.dependency_aware = _flag(config.get("dependency_aware", mode == "dependency_aware"),
                                 "config['dependency_aware']")
    cfg.verify = _flag(config.get("verify", True), "config['verify']")
    for key in ("rtol", "atol"):
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                    or value < 0:
                raise ConfigError(f"config['{key}'] = {value!r} must be a finite non-negative number")
            setattr(cfg, key, float(value))
    for key, allowed in (("frontend", _FRONTENDS), ("attention", (None, *_ATTENTION))):
        value = config.get(key, getattr(cfg, key))
        if value not in allowed:
            raise ConfigError(f"config['{key}'] = {value!r} must be one of {', '.join(map(repr, allowed))}"
                              f"{_suggest(str(value), [a for a in allowed if a])}")
        setattr(cfg, key, value)
    prune_hidden = config.get("prune_hidden", False)
    if not isinstance(prune_hidden, bool):
        raise ConfigError(f"config['prune_hidden'] = {prune_hidden!r} must be True or False")
    cfg.prune_hidden = prune_hidden
    return cfg
