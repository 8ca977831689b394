"""AMC: a DDPG agent chooses each unit's sparsity, one unit after the other, under the budget.

    pruner = AMCPruner(400, model, [{"op_types": ["Conv2d"], "total_sparsity": 0.5}], dummy_input, evaluator)
    pruner.compress()
    _, model, masks, score, config_list = pruner.get_best_result()

The environment follows NNI v2 (`rl_env/amc_env.py`): units in graph order; the state has NNI's 10
features (index, layer type, input size, output size, stride, kernel size, params, the fraction of the
needed removal already done, the fraction later units can still do, the previous action), min-max
normalised per feature over the units. The action (a sparsity) is clipped to bounds that guarantee
the budget: at least what the later units at their caps cannot make up, at most what the budget
still needs, so every episode ends within the budget (`max_sparsity_per_layer` is optional, default
1.0: a unit keeps one channel). At the end of an episode the candidate is fine-tuned (if a finetuner
is given) and evaluated; the reward is score / dense score (NNI uses score - 1 on the raw scale),
minus a moving-average baseline, given to every transition of the episode. Warm-up episodes act
uniformly at random; then a truncated-normal exploration around the actor whose width decays.

The DDPG agent is plain torch: actor MLP -> sigmoid, critic Q(s, a), target networks with soft
updates (tau), a replay buffer, and one seed for the networks, the noise and the batches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .search import SearchPruner, SearchSpace

__all__ = ["DDPG", "AMCPruner"]

_log = logging.getLogger(__name__)

_DDPG_DEFAULTS = {"hidden1": 300, "hidden2": 300, "lr_c": 1e-3, "lr_a": 1e-4, "discount": 1.0, "bsize": 64,
                  "rmsize": 100, "window_length": 1, "tau": 0.01, "init_delta": 0.5, "delta_decay": 0.99,
                  "max_episode_length": 1e9, "epsilon": 50000}


def _mlp(n_in: int, h1: int, h2: int, out: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(n_in, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 1)]
    return nn.Sequential(*layers, *([out] if out is not None else []))


class DDPG:
    """Deep deterministic policy gradient with a replay buffer (NNI's `rl_env/agent.py`, plain torch).

    Args:
        n_states: state features.
        hidden1, hidden2, lr_a, lr_c, tau, discount, bsize, rmsize, init_delta, delta_decay: NNI's names
            and defaults (`rmsize` = replay capacity in transitions).
        seed: seeds the networks, the exploration noise and the sampled batches.
    """

    def __init__(self, n_states: int, hidden1: int = 300, hidden2: int = 300, lr_a: float = 1e-4, lr_c: float = 1e-3,
                 tau: float = 0.01, discount: float = 1.0, bsize: int = 64, rmsize: int = 100,
                 init_delta: float = 0.5, delta_decay: float = 0.99, seed: int = 0, **_: Any) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            self.actor = _mlp(n_states, hidden1, hidden2, nn.Sigmoid())
            self.critic = _mlp(n_states + 1, hidden1, hidden2)
        self.actor_target = _clone(self.actor)
        self.critic_target = _clone(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr_a)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr_c)
        self.tau, self.discount, self.bsize, self.rmsize = tau, discount, bsize, int(rmsize)
        self.init_delta, self.delta_decay = init_delta, delta_decay
        self.rng = np.random.default_rng(seed)
        self.memory: list[tuple[np.ndarray, float, float, np.ndarray, float]] = []
        self.baseline: float | None = None

    def act(self, state: np.ndarray, episode: int, warmup: int) -> float:
        """U(0, 1) during warm-up; then the actor's action plus truncated-normal noise, in [0, 1]."""
        if episode < warmup:
            return float(self.rng.uniform())
        with torch.no_grad():
            mu = float(self.actor(torch.as_tensor(state, dtype=torch.float32)[None])[0, 0])
        sigma = self.init_delta * self.delta_decay ** (episode - warmup)
        for _ in range(100):  # truncated normal on [0, 1]
            a = self.rng.normal(mu, max(sigma, 1e-6))
            if 0 <= a <= 1:
                return float(a)
        return float(np.clip(mu, 0, 1))

    def remember(self, state: np.ndarray, action: float, reward: float, next_state: np.ndarray, done: bool) -> None:
        self.memory.append((state, action, reward, next_state, float(done)))
        if len(self.memory) > self.rmsize:
            self.memory.pop(0)

    def shaped(self, reward: float) -> float:
        """The reward minus a moving-average baseline (NNI's alpha = 0.5)."""
        self.baseline = reward if self.baseline is None else 0.5 * self.baseline + 0.5 * reward
        return reward - self.baseline

    def update(self) -> float:
        """One critic + actor step on a batch from the replay buffer; returns the critic loss."""
        idx = self.rng.integers(0, len(self.memory), min(self.bsize, len(self.memory)))
        s, a, r, s2, d = (torch.as_tensor(np.array(x), dtype=torch.float32)
                          for x in zip(*(self.memory[i] for i in idx)))
        a, r, d = a[:, None], r[:, None], d[:, None]
        with torch.no_grad():
            q_next = self.critic_target(torch.cat([s2, self.actor_target(s2)], 1))
            target = r + self.discount * (1 - d) * q_next
        loss = nn.functional.mse_loss(self.critic(torch.cat([s, a], 1)), target)
        self.critic_opt.zero_grad()
        loss.backward()
        self.critic_opt.step()
        policy_loss = -self.critic(torch.cat([s, self.actor(s)], 1)).mean()
        self.actor_opt.zero_grad()
        policy_loss.backward()
        self.actor_opt.step()
        for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
            with torch.no_grad():
                for p, tp in zip(net.parameters(), tgt.parameters()):
                    tp.mul_(1 - self.tau).add_(self.tau * p)
        return float(loss.detach())


def _clone(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


def _static_features(space: SearchSpace) -> np.ndarray:
    """Per unit: index, type (0 conv, 1 linear), input size, output size, stride, kernel, params."""
    dg, gm = space.session.graph, space.session.graph.gm
    nodes = {n.name: n for n in gm.graph.nodes}
    rows = []
    for i, unit in enumerate(space.units):
        module = gm.get_submodule(unit.name)
        layer = next(la for la in space.session.layers if la.name == unit.name)
        node = nodes[layer.nodes[0]]
        out = dg.shapes.get(node.name, ())
        first = node.args[0] if node.args and hasattr(node.args[0], "name") else None
        inp = dg.shapes.get(first.name, ()) if first is not None else ()
        stride = np.atleast_1d(getattr(module, "stride", 1)).astype(float)
        kernel = np.atleast_1d(getattr(module, "kernel_size", 1)).astype(float)
        rows.append([i, 0.0 if isinstance(module, nn.modules.conv._ConvNd) else 1.0, float(np.prod(inp or (0,))),
                     float(np.prod(out or (0,))), float(np.exp(np.log(stride).mean())),
                     float(np.exp(np.log(kernel).mean())), float(unit.size)])
    return np.array(rows, dtype=float)


def _normalise(features: np.ndarray) -> np.ndarray:
    lo, hi = features.min(0), features.max(0)
    return (features - lo) / np.where(hi - lo > 0, hi - lo, 1.0)


class AMCPruner(SearchPruner):
    """NNI's v2 AMCPruner: `AMCPruner(total_episode, model, config_list, dummy_input, evaluator, ...)`
    (old API) or `AMCPruner(total_episode, model, config_list, evaluator, ...)` (v2.9 keyword form).

    `target='flops'` (default, MACs), 'params' or 'latency' (the per-layer onnxruntime table; the best episode
    then calibrated end to end, see `fxprune.pruners.search`): what `total_sparsity` removes. `ddpg_params` takes
    NNI's DDPG names (`warmup` defaults to total_episode // 4). Extra keywords: `seed`, `speedup`.
    The search history records each episode's score and reward (the reward curve).
    """

    name = "AMC"

    def __init__(self, total_episode: int, model: torch.nn.Module, config_list: list[dict[str, Any]],
                 dummy_input: Any = None, evaluator: Callable[[torch.nn.Module], float] | None = None,
                 pruning_algorithm: str = "l1", log_dir: str | os.PathLike[str] | None = ".",
                 keep_intermediate_result: bool = False, finetuner: Callable[[torch.nn.Module], None] | None = None,
                 ddpg_params: dict[str, Any] | None = None, pruning_params: dict[str, Any] | None = None,
                 target: str = "flops", *, seed: int = 0, speedup: bool = False, round_to: int = 1,
                 min_sparsity: float = 0.0, executor: Executor | None = None) -> None:
        if callable(dummy_input) and not isinstance(dummy_input, torch.Tensor) and not callable(evaluator):
            if isinstance(evaluator, str):  # v2.9 form: (total_episode, model, config_list, evaluator, algorithm)
                pruning_algorithm = evaluator
            dummy_input, evaluator = None, dummy_input
        ddpg = {**_DDPG_DEFAULTS, **(ddpg_params or {})}
        unknown = set(ddpg) - set(_DDPG_DEFAULTS) - {"warmup"}
        if unknown:
            raise InputError(f"ddpg_params has unknown keys {sorted(unknown)}; known: {sorted(_DDPG_DEFAULTS)}, warmup")
        if not isinstance(total_episode, int) or total_episode < 1:
            raise InputError(f"total_episode={total_episode!r}: give the number of episodes, e.g. 400")
        self.warmup = int(ddpg.pop("warmup", total_episode // 4))
        if total_episode <= self.warmup:
            raise InputError(f"total_episode={total_episode} <= warmup={self.warmup}: the agent would never learn; "
                             "give more episodes or ddpg_params={'warmup': fewer}")
        super().__init__(model, config_list, evaluator, finetuner=finetuner, dummy_input=dummy_input,
                         pruning_algorithm=pruning_algorithm, target=target, log_dir=log_dir, speedup=speedup,
                         seed=seed, round_to=round_to, min_sparsity=min_sparsity, executor=executor)
        self.total_episode, self.ddpg_params = total_episode, ddpg
        self.agent: DDPG | None = None

    def _state(self, static: np.ndarray, space: SearchSpace, current: np.ndarray, i: int, prev: float) -> np.ndarray:
        need = max(space.dense - space.limit, 1e-12)
        upto = np.where(np.arange(len(current)) < i, current, space.min_sparsity)
        reduced = (space.dense - space.resource(upto)) / need
        later = np.where(np.arange(len(current)) >= i, space.caps, upto)
        rest = (space.resource(upto) - space.resource(later)) / need
        return np.concatenate([static[i], [reduced, rest, prev]]).astype(np.float32)

    def _search(self, space: SearchSpace) -> None:
        n = len(space.units)
        static = _normalise(_static_features(space))
        self.agent = agent = DDPG(static.shape[1] + 3, seed=self.seed,
                                  **{**self.ddpg_params, "rmsize": self.ddpg_params["rmsize"] * n})
        for episode in range(self.total_episode):
            current = np.full(n, space.min_sparsity)
            transitions = []
            prev = 0.0
            for i in range(n):
                state = self._state(static, space, current, i, prev)
                action = agent.act(state, episode, self.warmup)
                want = space.min_sparsity + action * (space.caps[i] - space.min_sparsity)
                later_cap = np.where(np.arange(n) > i, space.caps, current)
                lowest = space.cut(later_cap, i, space.limit)  # later units at their caps must make up the rest
                a_min = lowest[i] if lowest is not None else space.caps[i]
                later_none = np.where(np.arange(n) > i, space.min_sparsity, current)
                enough = space.cut(later_none, i, space.limit)  # beyond this the budget needs nothing more
                a_max = enough[i] if enough is not None else space.caps[i]
                current[i] = min(max(want, a_min), a_max)
                current = space.quantise(current)
                prev = float((current[i] - space.min_sparsity) / max(space.caps[i] - space.min_sparsity, 1e-12))
                transitions.append((state, prev))
            score, cand, _ = self._evaluate(current, f"episode {episode}", episode=episode)
            reward = score / max(abs(self.dense_score or 0.0), 1e-12)
            shaped = agent.shaped(reward)
            cand.extra["reward"] = reward
            for t, (state, action) in enumerate(transitions):
                nxt = transitions[t + 1][0] if t + 1 < n else state
                agent.remember(state, action, shaped, nxt, t == n - 1)
            if episode >= self.warmup:
                for _ in range(n):
                    agent.update()

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "total_episode": self.total_episode, "warmup": self.warmup,
                "rewards": [c.extra.get("reward") for c in self.history]}
