"""Iterative pruning: rounds of prune -> (speedup) -> fine-tune -> evaluate on a sparsity schedule.

    result = fxprune.iterate(model, {"pruner": "l1", "sparsity": 0.5}, x, schedule="agp", iterations=10,
                             finetune=finetuner, evaluate=evaluator)
    result.model           # physically smaller after every round (speedup=True), verified each time
    result.rounds          # per round: target sparsity, per-layer config used, params, MACs, score, seconds

and NNI's classes on top of it (v2.6-2.10 legacy signatures; `compress()` returns None):

    pruner = AGPPruner(model, config_list, pruning_algorithm="l1", total_iteration=10, finetuner=finetuner,
                       speedup=True, dummy_input=x, evaluator=evaluator)
    pruner.compress()
    task_id, model, masks, score, config_list = pruner.get_best_result()

NNI 2.9's form takes a `TorchEvaluator` instead of the finetuner and evaluator callables (dispatched, as NNI
does, on the type of the argument): its training_func fine-tunes each round, its evaluating_func scores it.

    pruner = AGPPruner(model, config_list, "taylorfo", 10, log_dir, False, evaluator=TorchEvaluator(...),
                       speedup=True, pruning_params={"evaluator": evaluator, "training_steps": 20})

A round runs the inner algorithm (`config["pruner"]`, NNI's `pruning_algorithm`: level, l1, l2, fpgm, or
slim, apoz, mean_activation, taylorfo, admm with their NNI arguments in `pruning_params`, which build the
algorithm's pruner class once) on a pruning session under the round's own rules: the schedule's sparsity
(`fxprune.schedules`) for every selected layer. Without speedup one session serves every round and its
masks only shrink (a channel removed once stays removed, and counts towards the next round's sparsity).
With speedup, each round ends with `session.finish()` (channels removed physically, pruned == masked
verified) and the next round starts a session on that smaller model, its sparsity re-expressed per layer
relative to it: to remove `k_target` of a layer's original `n0` channels when `n0 - n` are gone already,
the round removes `(k_target - (n0 - n)) / n` of the `n` left (NNI's `(s - s_done) / (1 - s_done)`, in
whole channels), so the last round lands on exactly the channels one-shot pruning would keep.

Lottery Ticket (`reset_weights=True`): each round fine-tunes first, prunes the trained weights, then rewinds
every weight and buffer to its value at the start (theta_0); the result is the winning ticket (initial
weights, final mask), which you train afterwards.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.fx
import torch.nn.utils.parametrize as parametrize

from ..catalog import ALGORITHMS
from ..config import Config, parse_config
from ..errors import ConfigError, FxPruneError, InputError
from ..masks import Masks
from ..passes.mask import MASK_PREFIX, WeightMask
from ..passes.speedup import detach_shared, speedup_pass
from ..progress import progress as _progress
from ..report import Baseline
from ..schedules import SCHEDULES, Schedule
from ..serialize import save
from ..session import Session, analyze, prepare
from .base import Pruner, bind_call, is_evaluator
from .data import ActivationAPoZRankPruner, ActivationMeanRankPruner, TaylorFOWeightPruner
from .evaluator import TorchEvaluator
from .slim import SlimPruner
from .training import ADMMPruner

__all__ = ["iterate", "IterateResult", "Round", "ROUND_RUNNERS", "RoundRunner", "Inner", "round_runner", "start_inner",
           "capture_inputs", "LinearPruner", "AGPPruner",
           "LotteryTicketPruner", "NNI_ALGORITHMS", "inner_config", "rewind", "round_rules", "sizes", "snapshot"]

_log = logging.getLogger("fxprune")


def _weights_round(session: Session, config: Config) -> None:
    """Level/L1/L2/FPGM: score the weights under this round's rules, apply (masks only shrink)."""
    session.apply(session.compute_masks(config=config))


@dataclass(frozen=True)
class Inner:
    """The inner algorithm of an iterative run, its pruning_params checked once.

    Attributes:
        run: `run(session, config)`: one round's pruning on `session.model` under the round's rules (`config`).
        structured: whether it removes channels (its rounds' sparsity is then re-expressed per layer after speedup).
        example_inputs: `example_inputs(model)`: inputs from the algorithm's own batches (None: it has none).
    """

    run: Callable[[Session, Config], None]
    structured: bool
    example_inputs: Callable[[torch.nn.Module], Any] | None = None


@dataclass(frozen=True)
class RoundRunner:
    """How a round runs the algorithms of one catalogue family (or one algorithm).

    Attributes:
        keys: the `pruning_params` keys the algorithm takes, as NNI spells them (config keys such as `mode` and
            `dummy_input` come on top).
        start: `start(model, config_list, params, cfg) -> Inner`: check `params` (the algorithm's keys only) on the
            user's `model` (what a traced optimizer was built on) and the run's `cfg`.
    """

    keys: tuple[str, ...]
    start: Callable[[torch.nn.Module, list[dict[str, Any]], dict[str, Any], Config], Inner]


def _start_weights(model: torch.nn.Module, config_list: list[dict[str, Any]], params: dict[str, Any],
                   cfg: Config) -> Inner:
    return Inner(_weights_round, cfg.algorithm.unit == "channels")


#: NNI's PRUNER_DICT for the algorithms that need more than weights: the class whose constructor takes pruning_params
_CLASSES: dict[str, type[Pruner]] = {"apoz": ActivationAPoZRankPruner, "mean_activation": ActivationMeanRankPruner,
                                     "taylorfo": TaylorFOWeightPruner, "slim": SlimPruner, "admm": ADMMPruner}


def _start_class(model: torch.nn.Module, config_list: list[dict[str, Any]], params: dict[str, Any],
                 cfg: Config) -> Inner:
    """Build the algorithm's NNI class from pruning_params (NNI: `PRUNER_DICT[alg](None, None, **pruning_params)`);
    each round runs its `run(session, config)` on the round's session and rules."""
    params = dict(params)
    if cfg.data is not None and not {"trainer", "evaluator", "data"} & set(params) and cfg.pruner != "admm":
        params.update(data=cfg.data, loss=params.get("loss", cfg.loss))  # fxprune's config['data'] / ['loss']
        if cfg.batches is not None and cfg.pruner != "slim":
            params.setdefault("training_batches", cfg.batches)
    params["mode"] = cfg.mode  # pruning_params' mode, already in cfg
    cls = _CLASSES[cfg.pruner]
    try:
        pruner = cls(model, config_list, **params)
    except FxPruneError as e:
        raise type(e)(f"pruning_params for pruning_algorithm {cfg.pruner!r}: {e}") from e
    if cfg.pruner == "admm":
        missing = [k for k in ("iterations", "training_epochs") if k not in pruner.options]  # type: ignore[attr-defined]
        if missing:
            raise ConfigError(f"pruning_params for pruning_algorithm 'admm' misses {', '.join(missing)}: ADMM rounds "
                              "and epochs per round, e.g. pruning_params={'trainer': trainer, 'traced_optimizer': "
                              "optimizer, 'criterion': criterion, 'iterations': 2, 'training_epochs': 1}")
        structured = pruner.options.get("granularity", "fine-grained") == "coarse-grained"  # type: ignore
    else:
        structured = True
    feed = getattr(pruner, "feed", None)
    return Inner(pruner.run, structured, None if feed is None else feed.example_inputs)  # type: ignore[attr-defined]


def _class_keys(cls: type[Pruner], extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    names = [*cls._old, *cls._new, "optimizer", *extra]  # type: ignore[attr-defined]
    return tuple(dict.fromkeys(n for n in names if n not in ("mode", "dummy_input")))


#: catalogue family or algorithm name (ahead of its family) -> how a round runs it
ROUND_RUNNERS: dict[str, RoundRunner] = {
    "weights": RoundRunner((), _start_weights),
    **{name: RoundRunner(_class_keys(cls, ("rho",) if name == "admm" else ("data", "loss")), _start_class)
       for name, cls in _CLASSES.items()},
}

#: NNI's `pruning_algorithm` names (`PRUNER_DICT` of the v2 iterative pruners), each a catalogue entry.
NNI_ALGORITHMS = ("level", "l1", "l2", "fpgm", "slim", "apoz", "mean_activation", "taylorfo", "admm")

#: config keys `pruning_params` may set for every algorithm (NNI's `mode`, `dummy_input` included)
_PARAM_KEYS = ("mode", "dummy_input", "global_ranking", "round_to", "verify", "rtol", "atol", "frontend", "attention",
               "prune_hidden")


def round_runner(cfg: Config) -> RoundRunner | None:
    """The round runner of a config's algorithm (its own, else its family's; None: it cannot be scheduled)."""
    return ROUND_RUNNERS.get(cfg.pruner) or ROUND_RUNNERS.get(cfg.algorithm.family)


@dataclass
class Round:
    """One round of an iterative run.

    Attributes:
        id: the round's number (0 is NNI's sparsity-0 warm-up when there is one).
        sparsity: the schedule's target this round for the largest configured sparsity, relative to the
            original model.
        config_list: the rules the round used, per layer, relative to the round's input model.
        params, macs: of the round's model once its masked channels are removed (MACs for the example inputs).
        nonzero_params: parameters that are not zero (what unstructured pruning reduces).
        score: the evaluator's value after the round's fine-tuning (None without an evaluator).
        seconds: wall time of the round, fine-tuning and evaluation included.
        max_abs_diff: max |masked - pruned| on the example inputs (speedup rounds; 0 when not checked).
        file: the round's model saved with `fxprune.save` (None without log_dir or once deleted).
    """

    id: int
    sparsity: float
    config_list: list[dict[str, Any]]
    params: int = 0
    macs: int = 0
    nonzero_params: int = 0
    score: float | None = None
    seconds: float = 0.0
    max_abs_diff: float = 0.0
    file: str | None = None


@dataclass
class IterateResult:
    """What `iterate` returns.

    Attributes:
        model: the chosen round's model: physically pruned (speedup=True) or the masked, trainable
            GraphModule (speedup=False; remove the channels with `fxprune.speedup(model, masks, x)`).
        masks: `{}` after speedup (as NNI); else the fxprune `Masks` of `model`.
        rounds: every round, in order.
        chosen: the round `model` comes from (the latest, or the best score with best="score").
        params_before, macs_before: of the original model.
        example_inputs: the inputs every round was traced and verified with.
        log_dir: where rounds.json and the saved models are (None: nothing written).
    """

    model: torch.fx.GraphModule
    masks: Masks | dict[str, Any]
    rounds: list[Round]
    chosen: Round
    params_before: int
    macs_before: int
    example_inputs: tuple[Any, ...]
    log_dir: str | None = None

    def best_result(self) -> tuple[int, torch.fx.GraphModule, Masks | dict[str, Any], float | None,
                                   list[dict[str, Any]]]:
        """NNI's `get_best_result()` 5-tuple: (task_id, model, masks, score, config_list)."""
        return self.chosen.id, self.model, self.masks, self.chosen.score, self.chosen.config_list

    def summary(self) -> str:
        """One line per round: sparsity, params, MACs, score, time."""
        rows = [f"{'round':>5} {'sparsity':>8} {'params':>12} {'MACs':>14} {'score':>7} {'time':>7}"]
        for r in self.rounds:
            score = "-" if r.score is None else f"{r.score:.4f}"
            mark = " *" if r is self.chosen else ""
            rows.append(f"{r.id:>5} {r.sparsity:>8.4f} {r.params:>12,} {r.macs:>14,} {score:>7} "
                        f"{r.seconds:>6.1f}s{mark}")
        rows.append(f"original: params {self.params_before:,}, MACs {self.macs_before:,}; * = returned")
        return "\n".join(rows)


# -- validation ------------------------------------------------------------------------------------

def _schedule(schedule: str | Schedule) -> tuple[str, Schedule]:
    if callable(schedule):
        return getattr(schedule, "__name__", "custom"), schedule
    if isinstance(schedule, str) and schedule.lower() in SCHEDULES:
        return schedule.lower(), SCHEDULES[schedule.lower()]
    raise ConfigError(f"schedule={schedule!r} is not one of {', '.join(SCHEDULES)} nor a function "
                      "(iteration, total, final) -> sparsity")


def _check_iterations(iterations: Any, where: str) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"{where}={iterations!r}: iterative pruning needs at least one round; pass an "
                          "integer >= 1, e.g. 10")
    return iterations


def _targets(name: str, fn: Schedule, iterations: int, warm_up: bool, finals: list[float]) -> list[list[float]]:
    """Per round, per rule: the schedule's sparsity relative to the original model (checked: never above the
    rule's target, never decreasing, ending on it)."""
    ids = list(range(0 if warm_up else 1, iterations + 1))
    table = []
    for final in finals:
        values = []
        for i in ids:
            try:
                s = float(fn(i, iterations, final))
            except Exception as e:
                raise ConfigError(f"schedule {name!r} failed at round {i} of {iterations}: {e}") from e
            if not 0 <= s <= final + 1e-9:
                raise ConfigError(f"schedule {name!r} gives sparsity {s:.4g} at round {i} of {iterations}, outside "
                                  f"[0, target {final:g}]: a schedule must not go above the target")
            if values and s < values[-1] - 1e-12:
                raise ConfigError(f"schedule {name!r} goes down at round {i} ({values[-1]:.4g} -> {s:.4g}): "
                                  "masks only shrink what is kept, so a schedule must not decrease")
            values.append(min(s, final))
        if abs(values[-1] - final) > 1e-6:
            raise ConfigError(f"schedule {name!r} ends at {values[-1]:.4g}, not the target {final:g}: the last "
                              "round must reach the configured sparsity")
        table.append(values)
    return [list(col) for col in zip(*table)]


def inner_config(config: Any, params: dict[str, Any] | None) -> tuple[Config, Any]:
    """The config each round runs (its `pruner` is the inner algorithm) and the dummy_input of pruning_params.

    Raises:
        ConfigError: an algorithm that cannot be scheduled, or a pruning_params key it does not take.
    """
    cfg = parse_config(config)
    algo = cfg.algorithm
    if algo.family in ("iterative", "search"):
        raise ConfigError(f"config['pruner'] = {cfg.pruner!r} is a {algo.family} algorithm; the pruner each round "
                          f"runs must be one-shot ({', '.join(_schedulable())}); the schedule goes in schedule=")
    runner = round_runner(cfg)
    if runner is None:
        raise ConfigError(f"pruning_algorithm {cfg.pruner!r} ({'/'.join(algo.nni)}) cannot be scheduled (NNI's "
                          f"iterative pruners run {', '.join(NNI_ALGORITHMS)}); schedulable in this build: "
                          f"{', '.join(_schedulable())}")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"pruning_params must be a dict of {cfg.pruner!r}'s arguments, got {type(params).__name__}")
    params = dict(params or {})
    unknown = [k for k in params if k not in _PARAM_KEYS and k not in runner.keys]
    if unknown:
        raise ConfigError(f"pruning_params has unknown key(s) {unknown} for pruning_algorithm {cfg.pruner!r}; it "
                          f"takes: {', '.join((*runner.keys, *_PARAM_KEYS))}")
    dummy = params.pop("dummy_input", None)
    settings = {k: v for k, v in params.items() if k in _PARAM_KEYS}
    if cfg.pruner == "slim" and "mode" not in settings and not _mode_given(config):
        settings["mode"] = "global"  # SlimPruner's default (NNI's), not the config's
    if settings:
        cfg = parse_config(dataclasses.replace(cfg, **settings))
    return cfg, dummy


def _mode_given(config: Any) -> bool:
    if isinstance(config, Config):
        return config.mode != "dependency_aware"
    return isinstance(config, dict) and ("mode" in config or "dependency_aware" in config)


def start_inner(model: torch.nn.Module, cfg: Config, params: dict[str, Any] | None) -> Inner:
    """The inner algorithm of `cfg` (from `inner_config`) with its pruning_params checked on `model`.

    Raises:
        FxPruneError: pruning_params the algorithm's NNI class rejects (no trainer, no batch count, ...).
    """
    runner = round_runner(cfg)
    assert runner is not None  # inner_config checked it
    own = {k: v for k, v in (params or {}).items() if k in runner.keys}
    config_list = [{k: v for k, v in asdict(r).items() if v is not None and v is not False and v != []}
                   for r in cfg.rules]
    return runner.start(model, config_list, own, cfg)


def _schedulable() -> list[str]:
    return [n for n in NNI_ALGORITHMS if ALGORITHMS[n].implemented
            and (n in ROUND_RUNNERS or ALGORITHMS[n].family in ROUND_RUNNERS)]


def _callable(fn: Any, name: str) -> None:
    if fn is not None and not callable(fn):
        raise InputError(f"{name} must be a function of the model ({name}(model)), got {type(fn).__name__}")


# -- example inputs --------------------------------------------------------------------------------

class _Captured(BaseException):  # BaseException: a user's `except Exception` must not swallow it
    def __init__(self, inputs: tuple[Any, ...]) -> None:
        super().__init__()
        self.inputs = inputs


def capture_inputs(model: torch.nn.Module, fn: Callable[[torch.nn.Module], Any], who: str) -> tuple[Any, ...]:
    """Example inputs taken from the first forward call `fn` makes on a copy of `model` (stopped right there):
    the first sample of each tensor argument. For NNI snippets that give no dummy_input.

    Raises:
        FxPruneError: `fn` raised, or returned without calling the model.
    """
    probe = copy.deepcopy(model)

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        raise _Captured(args)

    probe.register_forward_pre_hook(hook)
    try:
        fn(probe)
    except _Captured as c:
        inputs = tuple(a[:1].detach() if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in c.inputs)
        _log.info("fxprune: example inputs taken from the %s's first batch (shapes %s); pass dummy_input= to "
                  "choose them", who, [tuple(a.shape) for a in inputs if isinstance(a, torch.Tensor)])
        return inputs
    except Exception as e:
        raise FxPruneError(f"the {who} raised {type(e).__name__}: {e} while fxprune took example inputs from its "
                           "first batch; pass dummy_input=torch.randn(1, ...) to trace without calling it") from e
    raise InputError(f"fxprune needs example inputs to trace the model and the {who} never called it: pass "
                     "dummy_input=torch.randn(1, ...) (the shape your model takes)")


# -- weights and masks -----------------------------------------------------------------------------

def snapshot(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every parameter and buffer (mask buffers excepted) with a copy of its value, to rewind to."""
    out = [(p, p.detach().clone()) for p in model.parameters()]
    out += [(b, b.clone()) for name, b in model.named_buffers()
            if not name.startswith(MASK_PREFIX) and not name.endswith(".mask")]
    return out


@torch.no_grad()
def rewind(snapshot: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for tensor, value in snapshot:
        tensor.copy_(value)


@contextmanager
def _held(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """Keep unstructured weight masks applied while a pruned model is fine-tuned (zeros stay zeros), then
    leave the masked values in the weights."""
    held = []
    for qualname, keep in weights.items():
        owner, _, attr = qualname.rpartition(".")
        module = model.get_submodule(owner)
        if getattr(module, attr).shape == keep.shape and not parametrize.is_parametrized(module, attr):
            parametrize.register_parametrization(module, attr, WeightMask(keep))
            held.append((module, attr))
    try:
        yield
    finally:
        for module, attr in held:
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)


def _measure(model: torch.nn.Module, inputs: tuple[Any, ...]) -> tuple[int, int, int]:
    """(params, MACs, nonzero params) of a model, counted the way the report counts them."""
    gm, dg = analyze(model, inputs)
    base = Baseline.measure(gm, dg)
    nonzero = sum(int(p.count_nonzero()) for p in gm.parameters())
    return base.params, sum(base.macs.values()), nonzero


# -- rounds ----------------------------------------------------------------------------------------

def sizes(session: Session) -> dict[str, int]:
    """Output channels of every selected layer (what structured sparsity counts)."""
    return {layer.name: session.graph.shapes[layer.slot.tensor][layer.slot.dim] for layer in session.layers}


def _relative(target: float, n0: int, n: int) -> float:
    """The fraction of the `n` channels left to remove so that `target` of the original `n0` are gone."""
    k = math.floor(target * n0 + 1e-9) - (n0 - n)
    return max(0, k) / n if n > 0 else 0.0


def round_rules(session: Session, targets: list[float], n0: dict[str, int], relative: bool) -> list[dict[str, Any]]:
    """This round's config_list, per layer (one entry per global pool), relative to the session's model."""
    cfg = session.config
    index = {id(r): i for i, r in enumerate(cfg.rules)}
    now = sizes(session)
    out: list[dict[str, Any]] = []
    excluded: list[str] = []
    pools: dict[int, list[str]] = {}
    for layer in session.layers:
        if layer.excluded:
            excluded.append(layer.name)
        elif cfg.ranks_globally or layer.rule.total_sparsity is not None:
            pools.setdefault(index[id(layer.rule)], []).append(layer.name)
        else:
            t = targets[index[id(layer.rule)]]
            s = _relative(t, n0[layer.name], now[layer.name]) if relative else t
            out.append({"sparsity": round(s, 12), "op_names": [layer.name]} | _rho(layer.rule))
    for i, names in pools.items():
        rule, t = cfg.rules[i], targets[i]
        total0, total = sum(n0[n] for n in names), sum(now[n] for n in names)
        s = _relative(t, total0, total) if relative else t
        entry: dict[str, Any] = {"total_sparsity" if rule.total_sparsity is not None else "sparsity": round(s, 12),
                                 "op_names": names}
        if rule.max_sparsity_per_layer is not None:
            entry["max_sparsity_per_layer"] = rule.max_sparsity_per_layer
        out.append(entry | _rho(rule))
    if excluded:
        out.append({"exclude": True, "op_names": excluded})
    return out


def _rho(rule: Any) -> dict[str, float]:
    """ADMM's per-entry penalty weight, kept on the round's entries."""
    return {} if rule.rho is None else {"rho": rule.rho}


def _user_call(fn: Callable[[torch.nn.Module], Any], model: torch.nn.Module, who: str, round_id: int,
               log_dir: str | None, done: int) -> Any:
    try:
        return fn(model)
    except Exception as e:
        kept = (f"the {done} round(s) done are recorded in {log_dir}/rounds.json" if log_dir and done
                else "no round was completed" if not done else f"{done} round(s) were done (no log_dir given)")
        raise FxPruneError(f"round {round_id}: the {who} raised {type(e).__name__}: {e}\n{kept}; your model is "
                           f"unchanged. Fix the {who} (it is called as {who}(model) on the round's model).") from e


def _in_round(e: FxPruneError, round_id: int) -> FxPruneError:
    msg = f"round {round_id}: {e}"
    try:
        return type(e)(msg)
    except TypeError:
        return FxPruneError(msg)


class _Log:
    """rounds.json and one fxprune.save file per round under `log_dir` (nothing when it is None)."""

    def __init__(self, log_dir: str | os.PathLike[str] | None, keep_all: bool) -> None:
        self.dir = None if log_dir is None else Path(log_dir)
        self.keep_all = keep_all
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, model: Any, r: Round) -> None:
        if self.dir is not None:
            path = self.dir / f"round_{r.id}.fxp"
            save(model, path)
            r.file = str(path)

    def write(self, rounds: list[Round], chosen: Round | None, meta: dict[str, Any]) -> None:
        if self.dir is None:
            return
        if not self.keep_all:  # NNI's keep_intermediate_result=False: only the latest and the chosen stay
            for r in rounds[:-1]:
                if r is not chosen and r.file and os.path.exists(r.file):
                    os.remove(r.file)
                    r.file = None
        tmp = self.dir / "rounds.json.tmp"
        tmp.write_text(json.dumps({**meta, "chosen": chosen.id if chosen else None,
                                   "rounds": [asdict(r) for r in rounds]}, indent=2))
        os.replace(tmp, self.dir / "rounds.json")


@dataclass
class _State:
    session: Session
    model: torch.nn.Module
    masks: Masks | dict[str, Any]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # unstructured masks to carry over


def iterate(model: torch.nn.Module, config: Any, example_inputs: Any = None, *, schedule: str | Schedule = "agp",
            iterations: int = 10, finetune: Callable[[torch.nn.Module], Any] | None = None,
            evaluate: Callable[[torch.nn.Module], float] | None = None, speedup: bool = True,
            reset_weights: bool = False, warm_up: bool | None = None, best: str = "latest",
            log_dir: str | os.PathLike[str] | None = None, keep_intermediate_result: bool = False,
            pruning_params: dict[str, Any] | None = None, progress: bool | None = None) -> IterateResult:
    """Prune `model` in rounds on a sparsity schedule, fine-tuning and evaluating between rounds.

    Args:
        model: the dense model; it is not modified (every round works on traced copies).
        config: the usual config; `config["pruner"]` is the algorithm each round runs (level, l1, l2, fpgm, slim,
            apoz, mean_activation, taylorfo, admm) and the rules' sparsities are the final targets. The
            data-driven ones may take their batches from `config["data"]` (and `"loss"`, `"batches"`).
        example_inputs: inputs to trace and verify with; None: the first sample of the finetuner's (else the
            evaluator's, else the inner algorithm's data's) first batch.
        schedule: "linear" (i/N s), "agp" (s (1 - (1 - i/N)^3)), "lottery" (1 - (1 - s)^(i/N)), or a function
            (iteration, total, final) -> sparsity that never decreases, never exceeds `final` and ends on it.
        iterations: N, the number of pruning rounds.
        finetune: `finetune(model)`, called once per round on the round's model (trains it in place).
        evaluate: `evaluate(model) -> float` (higher is better), called once per round after fine-tuning.
        speedup: remove the channels physically after every round (verified) and continue on the smaller
            model; False: one masked model, masks carried over (never revived).
        reset_weights: Lottery Ticket: fine-tune first, prune, then rewind every weight to its initial value.
        warm_up: start with NNI's sparsity-0 round 0 (default: True, except for the lottery schedule).
        best: "latest" (NNI >= 2.9: the last round) or "score" (NNI 2.6-2.8: the highest evaluator score; it can
            be an early, barely pruned round).
        log_dir: write rounds.json (updated after every round) and round_<i>.fxp models here.
        keep_intermediate_result: keep every round's model file (default: the latest and the chosen only).
        pruning_params: the inner algorithm's NNI constructor arguments, as NNI spells them: `mode`,
            `dummy_input` (and fxprune config keys: round_to, ...) for all; `trainer, traced_optimizer, criterion,
            training_batches` or `evaluator, training_steps` or `data, loss` (+ `activation`) for apoz,
            mean_activation, taylorfo; the same with `training_epochs, scale` for slim; `trainer,
            traced_optimizer, criterion` or `evaluator`, with `iterations, training_epochs, granularity, rho`
            for admm. The statistics are collected (and Slim/ADMM train) on every round's model.
        progress: a progress line on stderr (None: when stderr is a terminal; False: silent).

    Returns:
        IterateResult (`.model`, `.rounds`, `.best_result()` = NNI's 5-tuple).

    Raises:
        ConfigError: bad iterations, schedule, algorithm, config or pruning_params key (before any work).
        FxPruneError: the finetuner or evaluator raised (names the round; rounds done stay in log_dir).

    Example:
        >>> r = fxprune.iterate(model, {"pruner": "l1", "sparsity": 0.5}, x, schedule="agp", iterations=5,
        ...                     finetune=finetuner)
        >>> print(r.summary())
    """
    iterations = _check_iterations(iterations, "iterations")
    name, fn = _schedule(schedule)
    cfg, dummy = inner_config(config, pruning_params)
    _callable(finetune, "finetune")
    _callable(evaluate, "evaluate")
    if best not in ("latest", "score"):
        raise ConfigError(f"best={best!r}: use 'latest' (the last round, NNI >= 2.9) or 'score' (the highest "
                          "evaluator score, NNI 2.6-2.8)")
    warm_up = (name != "lottery") if warm_up is None else warm_up
    finals = [r.target for r in cfg.rules if not r.exclude]
    rule_targets = _targets(name, fn, iterations, warm_up, finals)
    first = 0 if warm_up else 1
    inner = start_inner(model, cfg, pruning_params)
    if example_inputs is None:
        example_inputs = dummy
    if example_inputs is None:
        source = finetune if finetune is not None else evaluate
        if source is not None:
            example_inputs = capture_inputs(model, source, "finetuner" if finetune is not None else "evaluator")
        elif inner.example_inputs is not None:
            example_inputs = inner.example_inputs(model)
        else:
            raise InputError("fxprune needs example inputs to trace the model: pass example_inputs= (NNI: "
                             "dummy_input=), or a finetuner/evaluator to take them from")

    session = prepare(model, cfg, example_inputs)
    inputs = session.example_inputs
    n0 = sizes(session)
    params0 = session._baseline.params
    macs0 = sum(session._baseline.macs.values())
    log = _Log(log_dir, keep_intermediate_result)
    meta = {"schedule": name, "iterations": iterations, "pruner": cfg.pruner, "speedup": speedup,
            "reset_weights": reset_weights, "best": best, "params_before": params0, "macs_before": macs0}
    state = _State(session, session.model, session.masks)
    rounds: list[Round] = []
    chosen: Round | None = None
    kept: tuple[torch.nn.Module, Any] | None = None
    with _progress(len(rule_targets), f"{name} pruning ({cfg.pruner})", enabled=progress) as bar:
        for step, targets in enumerate(rule_targets):
            rid = first + step
            start = time.perf_counter()
            r = _one_round(rid, targets, state, n0, speedup, reset_weights, inner, finetune, inputs, log, len(rounds))
            if evaluate is not None:
                r.score = float(_user_call(evaluate, state.model, "evaluator", rid, log.dir and str(log.dir),
                                           len(rounds)))
            r.sparsity = max(targets) if targets else 0.0
            if not speedup:  # with speedup they come from the round's report
                r.params, r.macs, r.nonzero_params = _measure(speedup_pass(state.model, state.masks), inputs)
            r.seconds = time.perf_counter() - start
            rounds.append(r)
            try:
                log.save(_savable(state, speedup), r)
            except FxPruneError as e:
                raise _in_round(e, rid) from e
            better = best == "score" and r.score is not None and (chosen is None or chosen.score is None
                                                                   or r.score > chosen.score)
            if best == "latest" or better or chosen is None:
                chosen = r
                if best == "score":
                    kept = (copy.deepcopy(state.model), state.masks)
            log.write(rounds, chosen, meta)
            bar.update(sparsity=round(r.sparsity, 4), score=r.score if r.score is not None else "-")
    assert chosen is not None
    out_model, out_masks = (state.model, state.masks) if kept is None else kept
    return IterateResult(out_model, out_masks, rounds, chosen, params0, macs0, inputs,
                         None if log.dir is None else str(log.dir))


def _savable(state: _State, speedup: bool) -> Any:
    if speedup:
        return state.model
    pruned = speedup_pass(state.model, state.masks)
    detach_shared(pruned, state.model)
    return pruned


def _one_round(rid: int, targets: list[float], state: _State, n0: dict[str, int], speedup: bool, reset: bool,
               inner: Inner, finetune: Callable[[torch.nn.Module], Any] | None, inputs: tuple[Any, ...], log: _Log,
               done: int) -> Round:
    """One round: (new session on the last round's model) -> [fine-tune first if reset] -> prune ->
    [rewind if reset] -> [finish: speedup + verify] -> [fine-tune]. Updates `state`."""
    log_dir = None if log.dir is None else str(log.dir)
    session = state.session
    try:
        if speedup and state.model is not session.model:  # a round after the first: on the last one's model
            session = prepare(state.model, session.config, inputs)
            if state.weights:  # unstructured masks: shapes did not change; zeros stay zeros
                session.apply(Masks(session.graph, weights={k: v for k, v in state.weights.items()
                                                            if _is_param(session.model, k)}))
        # unstructured rounds prune the current layer (all-zero channels may have left between rounds), so each
        # keeps at most (1 - s) of its original weights
        rules = round_rules(session, targets, n0, relative=speedup and inner.structured)
        config = parse_config(dataclasses.replace(session.config, rules=rules))
    except FxPruneError as e:
        raise _in_round(e, rid) from e
    r = Round(rid, 0.0, rules)
    initial = snapshot(session.model) if reset else None
    if reset and finetune is not None:
        _user_call(finetune, session.model, "finetuner", rid, log_dir, done)
    try:
        inner.run(session, config)
        if initial is not None:
            rewind(initial)
        if speedup:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="fxprune removed nothing")
                result = session.finish()
            state.model, state.masks = result.model, {}
            state.weights = _kept_nonzero(result.model, result.masks.weights)
            rep = result.report
            r.params, r.macs, r.nonzero_params, r.max_abs_diff = (rep.params_after, rep.macs_after,
                                                                 rep.nonzero_params_after, rep.max_abs_diff)
        else:
            state.model, state.masks = session.model, session.masks
    except FxPruneError as e:
        raise _in_round(e, rid) from e
    state.session = session
    if not reset and finetune is not None:
        with _held(state.model, state.weights) if speedup else _nothing():
            _user_call(finetune, state.model, "finetuner", rid, log_dir, done)
    return r


def _kept_nonzero(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The unstructured masks of a finished round in the pruned model's shapes: the speedup pass also removes
    channels whose weights all became zero, so the masks of the model before it no longer fit."""
    out = {}
    for qualname in weights:
        if _is_param(model, qualname):
            owner, _, attr = qualname.rpartition(".")
            out[qualname] = getattr(model.get_submodule(owner), attr).detach() != 0
    return out


def _is_param(model: torch.nn.Module, qualname: str) -> bool:
    owner, _, attr = qualname.rpartition(".")
    try:
        return isinstance(getattr(model.get_submodule(owner), attr), torch.Tensor)
    except AttributeError:
        return False


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- NNI's classes ---------------------------------------------------------------------------------

class _IterativePruner:
    """NNI v2's scheduled pruners, both call forms, dispatched as NNI does on the type of the first argument after
    keep_intermediate_result (or of `evaluator=`):

    - NNI 2.9+: `(model, config_list, pruning_algorithm, total_iteration, log_dir, keep_intermediate_result,
      evaluator=TorchEvaluator(...), speedup=False, [reset_weight,] pruning_params={})`: the evaluator's
      `training_func` fine-tunes each round (max_steps = max_epochs = None: "finetune"), its `evaluating_func`
      (if any) scores it, its `dummy_input` traces the model;
    - NNI 2.6-2.8: `(..., finetuner=None, speedup=False, dummy_input=None, evaluator=None, [reset_weight,]
      pruning_params={})` with `finetuner(model)` and `evaluator(model) -> float` (`speed_up=` of 2.5/2.6 accepted).

    `pruning_params` are the inner algorithm's NNI constructor arguments (NNI builds
    `PRUNER_DICT[pruning_algorithm](None, None, **pruning_params)`): nothing for level/l1/l2/fpgm but `mode` and
    `dummy_input`; `trainer, traced_optimizer, criterion, training_batches` (or `evaluator, training_steps`, or
    fxprune's `data`, `loss`) for apoz, mean_activation, taylorfo; `..., training_epochs, scale` for slim;
    `..., iterations, training_epochs, granularity` (and `rho`) for admm.

    `compress()` runs every round and returns None (as NNI); the result is in `get_best_result()`, never in
    the model you passed (NNI issue #4518). NNI >= 2.9 keeps the latest round (`best_result_mode="latest"`,
    the default); 2.6-2.8 kept the highest score (`best_result_mode="maximize"`).
    """

    schedule = "agp"
    reset_weight_default = False
    _old: tuple[str, ...] = ("finetuner", "speedup", "dummy_input", "evaluator", "pruning_params")
    _new: tuple[str, ...] = ("evaluator", "speedup", "pruning_params")
    _keywords = ("speed_up", "reset_weight", "best_result_mode", "warm_up", "progress", "dummy_input")

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], pruning_algorithm: str = "l1",
                 total_iteration: int = 10, log_dir: str = ".", keep_intermediate_result: bool = False,
                 *args: Any, **kwargs: Any) -> None:
        call, self.torch_evaluator = self._bind(args, kwargs)
        if not isinstance(pruning_algorithm, str) or pruning_algorithm not in NNI_ALGORITHMS:
            raise ConfigError(f"pruning_algorithm={pruning_algorithm!r} is not one of {', '.join(NNI_ALGORITHMS)}")
        self.total_iteration = _check_iterations(total_iteration, "total_iteration")
        best_result_mode = call.get("best_result_mode", "latest")
        if best_result_mode not in ("latest", "maximize"):
            raise ConfigError(f"best_result_mode={best_result_mode!r}: use 'latest' (NNI >= 2.9) or 'maximize' "
                              "(the highest evaluator score, NNI 2.6-2.8)")
        self.model, self.config_list = model, config_list
        self.pruning_algorithm = pruning_algorithm
        self.pruning_params = call.get("pruning_params")
        self.config, dummy = inner_config({"pruner": pruning_algorithm, "rules": config_list}, self.pruning_params)
        start_inner(model, self.config, self.pruning_params)  # pruning_params checked now, not after round 0
        ev = self.torch_evaluator
        if ev is not None:
            self.finetuner: Callable[[torch.nn.Module], Any] | None = _EvaluatorFinetune(ev, model)
            self.evaluator: Callable[[torch.nn.Module], Any] | None = \
                ev.evaluate if ev.evaluating_func is not None else None
            self.dummy_input = call.get("dummy_input", ev.dummy_input)
        else:
            self.finetuner, self.evaluator = call.get("finetuner"), call.get("evaluator")
            self.dummy_input = call.get("dummy_input")
            _callable(self.finetuner, "finetuner")
            _callable(self.evaluator, "evaluator")
        if self.dummy_input is None:
            self.dummy_input = dummy
        speedup = call.get("speedup", False)
        self.speedup = speedup if call.get("speed_up") is None else call["speed_up"]
        reset_weight = call.get("reset_weight")
        self.reset_weight = self.reset_weight_default if reset_weight is None else reset_weight
        self.best = "latest" if best_result_mode == "latest" else "score"
        self.log_dir = os.path.join(log_dir, datetime.now().strftime("%Y-%m-%d-%H-%M-%S-%f"))
        self.keep_intermediate_result = keep_intermediate_result
        self.warm_up, self.progress = call.get("warm_up"), call.get("progress")
        _targets(self.schedule, SCHEDULES[self.schedule], self.total_iteration,
                 (self.schedule != "lottery") if self.warm_up is None else self.warm_up,
                 [r.target for r in self.config.rules if not r.exclude])
        self.result: IterateResult | None = None

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], TorchEvaluator | None]:
        """NNI's "fake overload" (`fxprune.pruners.base.bind_call`) after keep_intermediate_result."""
        owner = type(self).__name__
        if "finetuner" in kwargs and is_evaluator(args[0] if args else kwargs.get("evaluator")):
            raise InputError(f"{owner}: the NNI 2.9+ form fine-tunes with the TorchEvaluator's training_func; pass "
                             "either evaluator=TorchEvaluator(...) or finetuner=, not both")
        call, new = bind_call(owner, args, kwargs, self._old, self._new, after="keep_intermediate_result",
                              keywords=self._keywords)
        if not new and is_evaluator(call.get("evaluator")):
            raise InputError(f"{owner}: evaluator=TorchEvaluator(...) is NNI 2.9's form, which has no finetuner: "
                             "pass it as the first argument after keep_intermediate_result (or evaluator= alone), "
                             "or give an evaluator(model) -> float with finetuner=")
        return call, call["evaluator"] if new else None

    def compress(self) -> None:
        """Run every round (NNI: returns None; see `get_best_result`)."""
        self.result = iterate(
            self.model, self.config, self.dummy_input, schedule=self.schedule, iterations=self.total_iteration,
            finetune=self.finetuner, evaluate=self.evaluator, speedup=self.speedup, reset_weights=self.reset_weight,
            warm_up=self.warm_up, best=self.best, log_dir=self.log_dir,
            keep_intermediate_result=self.keep_intermediate_result,
            pruning_params={k: v for k, v in (self.pruning_params or {}).items() if k != "dummy_input"} or None,
            progress=self.progress)

    def get_best_result(self) -> tuple[int, torch.fx.GraphModule, Masks | dict[str, Any], float | None,
                                       list[dict[str, Any]]] | None:
        """(task_id, model, masks, score, config_list), or None before `compress()`.

        model is physically pruned with speedup=True (masks `{}`), else the masked GraphModule with its fxprune
        `Masks` (`fxprune.speedup(model, masks, x)` removes them); config_list is the per-layer rules the round
        used, relative to its input model.
        """
        return None if self.result is None else self.result.best_result()


class LinearPruner(_IterativePruner):
    """Rounds at sparsity i/N * s (NNI's LinearPruner); round 0 is a sparsity-0 warm-up."""

    schedule = "linear"


class AGPPruner(_IterativePruner):
    """Rounds at s * (1 - (1 - i/N)^3) (Zhu & Gupta's automated gradual pruning; NNI's AGPPruner)."""

    schedule = "agp"


class LotteryTicketPruner(_IterativePruner):
    """Rounds at 1 - (1 - s)^(i/N), i = 1..N: each fine-tunes, prunes, then rewinds the weights to their initial
    values (`reset_weight=True`); the result is the winning ticket (initial weights, final mask) to train."""

    schedule = "lottery"
    reset_weight_default = True
    _old = ("finetuner", "speedup", "dummy_input", "evaluator", "reset_weight", "pruning_params")
    _new = ("evaluator", "speedup", "reset_weight", "pruning_params")


class _EvaluatorFinetune:
    """A round's fine-tuning with NNI 2.9's TorchEvaluator: its training_func with the optimizers rebuilt on the
    round's model, max_steps = max_epochs = None ("finetune": the training_func decides how long)."""

    def __init__(self, evaluator: TorchEvaluator, model: torch.nn.Module) -> None:
        self.evaluator, self.source = evaluator, model

    def __call__(self, model: torch.nn.Module) -> None:
        self.evaluator.train(self.source, model)
