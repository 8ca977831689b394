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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .catalog import ALGORITHMS, Algorithm, implemented
from .errors import ConfigError

__all__ = ["Config", "RuleConfig", "parse_config", "PRUNERS"]

#: Pruner names this build runs (the catalogue, `fxprune.catalog`, lists the others too).
PRUNERS = tuple(implemented())

_TOP_KEYS = {
    "pruner": "the algorithm: " + ", ".join(PRUNERS),
    "sparsity": "shorthand for rules=[{'sparsity': s, 'op_types': ['default']}]",
    "rules": "NNI config_list (alias: config_list)",
    "global_ranking": "rank channels across all selected groups instead of per group (alias: global)",
    "round_to": "keep channel counts a multiple of N",
    "mode": "'dependency_aware' (score a channel over its whole group) | 'normal' (the layer's own weights, as "
            "NNI) | 'global' (dependency-aware scores, ranked across groups); alias: dependency_aware=True/False",
    "verify": "check masked == pruned on the example inputs (default True)",
    "rtol": "relative tolerance of the check",
    "atol": "absolute tolerance of the check",
    "frontend": "'auto' (fx, then torch.export where fx fails) | 'fx' | 'export'",
    "attention": "where a view splits channels into (heads, head_dim): prune 'heads' or 'head_dim'; None (default):"
                 " heads where the view allows it, without an error where no heads are prunable",
    "prune_hidden": "also prune the hidden size (residual stream, norms, embeddings); default False",
    "data": "an iterable of batches (x, or (x, y) pairs) for the algorithms that need statistics or training",
    "loss": "loss(output, target) -> scalar, for the algorithms that need gradients",
    "batches": "how many batches of `data` to collect statistics over (default: all of one pass)",
    "options": "algorithm-specific parameters, as a dict (e.g. {'scale': 1e-4} for slim)",
    "budget": "{'macs' | 'params' | 'latency': fraction of the dense model's to keep, in (0, 1]}: rank channels "
              "globally by importance per unit of that resource (fxprune.budget); the rules' sparsity caps a group",
    "budget_worth": "what a channel is worth when channels compete for a budget: 'score' (default: the "
                    "criterion's score, normalised within its group) or 'macs' (that score times the MACs the channel "
                    "carries: a latency budget keeps the most MACs per unit of latency)",
}
#: with a budget and no sparsity, what one group may lose at most
BUDGET_CAP = 0.9
_BUDGET_RESOURCES = ("macs", "params", "latency")
_BUDGET_WORTH = ("score", "macs")
#: Other spellings accepted in dicts (NNI's and earlier fxprune's), mapped to the one vocabulary above.
_ALIASES = {"config_list": "rules", "global": "global_ranking"}
_FRONTENDS = ("auto", "fx", "export")
_ATTENTION = ("heads", "head_dim")
_MODES = ("dependency_aware", "normal", "global")
_RULE_KEYS = {"sparsity", "sparse_ratio", "sparsity_per_layer", "op_types", "op_names", "op_partial_names",
              "exclude", "total_sparsity", "max_sparsity_per_layer", "rho"}


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
    rho: float | None = None  # ADMM's penalty weight for the entry's layers

    @property
    def target(self) -> float:
        return self.total_sparsity if self.sparsity is None else self.sparsity


@dataclass
class Config:
    """A config: the same names as the dict keys. Build it in code or from a dict; `parse_config` (which
    every entry point calls) validates both the same way and returns a new, normalised Config whose
    `rules` hold the sparsity (`sparsity` is then None)."""

    pruner: str = "l1"
    sparsity: float | None = None
    rules: list[Any] = field(default_factory=list)
    global_ranking: bool = False
    round_to: int = 1
    mode: str = "dependency_aware"
    verify: bool = True
    rtol: float = 1e-4
    atol: float = 1e-5
    frontend: str = "auto"
    attention: str | None = None
    prune_hidden: bool = False
    data: Any = None
    loss: Any = None
    batches: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, float] | None = None
    budget_worth: str = "score"

    @property
    def dependency_aware(self) -> bool:
        """Score a channel over every tensor of its group (else over the layer's own weights, NNI's normal)."""
        return self.mode != "normal"

    @property
    def ranks_globally(self) -> bool:
        return self.global_ranking or self.mode == "global"

    @property
    def algorithm(self) -> Algorithm:
        return ALGORITHMS[self.pruner]


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
    if "rho" in entry:
        rho = entry["rho"]
        if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not rho > 0:
            raise ConfigError(f"{where}.rho = {rho!r} must be a positive number (ADMM's penalty weight, e.g. 1e-4)")
        rule.rho = float(rho)
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


def _budget(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _BUDGET_RESOURCES:
        raise ConfigError(f"config['budget'] = {value!r} must name one resource and the fraction of the dense "
                          f"model's to keep, e.g. {{'macs': 0.5}}; resources: {', '.join(_BUDGET_RESOURCES)}")
    (resource, fraction), = value.items()
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise ConfigError(f"config['budget']['{resource}'] = {fraction!r} is outside (0, 1]: it is the fraction of "
                          f"the dense model's {resource} to KEEP, e.g. 0.5 for half")
    return {resource: float(fraction)}


def _pruner(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in ALGORITHMS:
        raise ConfigError(f"config['pruner'] = {value!r} is not one of {', '.join(PRUNERS)}"
                          f"{_suggest(str(value).lower(), ALGORITHMS)}")
    name = value.lower()
    family = ALGORITHMS[name].family
    if family == "iterative":
        raise ConfigError(f"config['pruner'] = {name!r} is a schedule, not a one-shot algorithm: the schedule goes in "
                          f"schedule= of fxprune.iterate(model, {{'pruner': 'l1', 'sparsity': 0.5}}, x, schedule="
                          f"{name!r}, iterations=10, finetune=...), or use {ALGORITHMS[name].nni[0]}")
    if family == "search":
        raise ConfigError(f"config['pruner'] = {name!r} searches per-layer sparsities with your evaluator: use "
                          f"fxprune.pruners.{ALGORITHMS[name].nni[0]}(model, config_list, evaluator=...)")
    if name not in PRUNERS:
        algo = ALGORITHMS[name]
        raise ConfigError(f"config['pruner'] = {name!r} ({'/'.join(algo.nni)}) is in the NNI catalogue but not "
                          f"implemented in this build; implemented: {', '.join(PRUNERS)}")
    return name


def _rule_dict(rule: RuleConfig) -> dict[str, Any]:
    """A parsed rule as the config_list entry it came from (fields left at their defaults omitted)."""
    default = RuleConfig()
    return {k: v for k, v in vars(rule).items() if v is not getattr(default, k) and v != getattr(default, k)
            or isinstance(v, float)}


def _as_dict(config: Config) -> dict[str, Any]:
    """A Config built in code, as the dict it stands for (defaults left out; rules as plain dicts)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        value = getattr(config, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name == "rules":
            value = [_rule_dict(r) if isinstance(r, RuleConfig) else r for r in value]
        if f.name in ("pruner", "rules") or value is not default and value != default:
            out[f.name] = value
    if not out["rules"]:
        del out["rules"]
    return out


def parse_config(config: Any) -> Config:
    """Validate a config dict, a `Config` built in code, or a bare NNI config_list.

    Returns:
        A new Config (the input is not modified) with the rules parsed and `sparsity` folded into them.

    Raises:
        ConfigError: naming the key and the fix, for any unknown key, wrong type or value.
    """
    if isinstance(config, Config):
        config = _as_dict(config)
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        config = {"rules": list(config)}
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a dict, a fxprune.Config or an NNI config_list, got "
                          f"{type(config).__name__}")
    for key in config:
        if key not in _TOP_KEYS and key not in _ALIASES and key != "dependency_aware":
            raise ConfigError(f"unknown config key '{key}'{_suggest(key, [*_TOP_KEYS, *_ALIASES])}; known keys:\n"
                              + "\n".join(f"  {k}: {v}" for k, v in _TOP_KEYS.items()))
    for alias, key in _ALIASES.items():
        if alias in config and key in config:
            raise ConfigError(f"config gives both '{key}' and '{alias}' (its alias): keep one")
    config = {_ALIASES.get(k, k): v for k, v in config.items()}
    cfg = Config(pruner=_pruner(config.get("pruner", "l1")))
    rules = config.get("rules")
    if rules is not None and config.get("sparsity") is not None:
        raise ConfigError("config gives both 'sparsity' and 'rules': put the sparsity inside the rules")
    cfg.budget = _budget(config.get("budget"))
    if "budget_worth" in config:
        worth = config["budget_worth"]
        if worth not in _BUDGET_WORTH:
            raise ConfigError(f"config['budget_worth'] = {worth!r} must be one of "
                              f"{', '.join(map(repr, _BUDGET_WORTH))}")
        if cfg.budget is None and worth != "score":
            raise ConfigError("config['budget_worth'] weighs channels competing for a budget, and the config has "
                              "no 'budget': add one, e.g. 'budget': {'latency': 0.5}, or drop 'budget_worth'")
        if worth == "macs" and cfg.budget is not None and "macs" in cfg.budget:
            raise ConfigError("config['budget_worth'] = 'macs' with a 'macs' budget weighs each channel by the MACs "
                              "it saves, which cancels what it costs: channels would rank by score alone. Use "
                              "'budget_worth': 'macs' with a 'latency' or 'params' budget, or drop it")
        cfg.budget_worth = worth
    if rules is None and cfg.budget is not None and config.get("sparsity") is None:
        rules = [{"sparsity": BUDGET_CAP, "op_types": ["default"]}]
    if rules is None:
        if "sparsity" not in config:
            raise ConfigError("config has neither 'sparsity' nor 'rules': add e.g. 'sparsity': 0.5")
        rules = [{"sparsity": config["sparsity"], "op_types": ["default"]}]
    if not isinstance(rules, (list, tuple)) or not rules:
        raise ConfigError("config['rules'] must be a non-empty list of dicts (NNI's config_list)")
    cfg.rules = [_parse_rule(e, i) for i, e in enumerate(rules)]
    if all(r.exclude for r in cfg.rules):
        raise ConfigError("every entry of config['rules'] is an exclude: add one with a sparsity")
    cfg.global_ranking = _flag(config.get("global_ranking", False), "config['global_ranking']")
    round_to = config.get("round_to", 1)
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise ConfigError(f"config['round_to'] = {round_to!r} must be a positive int, e.g. 8")
    cfg.round_to = int(round_to)
    mode = config.get("mode", "dependency_aware")
    if mode not in _MODES:
        raise ConfigError(f"config['mode'] = {mode!r} must be 'dependency_aware' or 'normal' (or 'global')")
    if "dependency_aware" in config:  # NNI v1's flag
        mode = "dependency_aware" if _flag(config["dependency_aware"], "config['dependency_aware']") else "normal"
    cfg.mode = mode
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
    cfg.prune_hidden = _flag(config.get("prune_hidden", False), "config['prune_hidden']")
    cfg.data, cfg.loss = config.get("data"), config.get("loss")
    if cfg.data is not None and not isinstance(cfg.data, Iterable):
        raise ConfigError(f"config['data'] must be an iterable of batches (a DataLoader, a list of (x, y) pairs), "
                          f"got {type(cfg.data).__name__}")
    if cfg.loss is not None and not callable(cfg.loss):
        raise ConfigError(f"config['loss'] must be callable as loss(output, target), got {type(cfg.loss).__name__}")
    batches = config.get("batches")
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, numbers.Integral)
                                or batches < 1):
        raise ConfigError(f"config['batches'] = {batches!r} must be a positive int (the number of batches of "
                          "config['data'] to collect statistics over)")
    cfg.batches = batches
    options = config.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"config['options'] must be a dict of algorithm parameters, got {options!r}")
    cfg.options = dict(options)
    return cfg
