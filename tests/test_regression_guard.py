"""Regression guard for the session refactor (issue 8): on every family model, L1, L2 and FPGM at 50%
give masks, weights and generated code bit-identical to what the one-shot compiler gave before the
session existed. The digests in `golden_digests.json` were recorded from main at 7c66016 with
`python tests/test_regression_guard.py --record`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures import FAMILY
from tests.test_determinism import digest

GOLDEN = Path(__file__).with_name("golden_digests.json")
PRUNERS = ("l1", "l2", "fpgm")


def _cases() -> list[tuple[str, str]]:
    return [(name, pruner) for name in FAMILY for pruner in PRUNERS]


FAST = {"resnet18", "densenet_small", "shufflenet_v2_small"}  # the fast loop's share; CI runs every family


@pytest.mark.parametrize(("name", "pruner"), [c if c[0] in FAST else pytest.param(*c, marks=pytest.mark.slow)
                                              for c in _cases()])
def test_bit_identical_to_one_shot_compiler(name: str, pruner: str) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert digest(name, {"pruner": pruner, "sparsity": 0.5}) == golden[f"{name}/{pruner}"]


if __name__ == "__main__" and "--record" in sys.argv:
    torch.set_num_threads(1)
    GOLDEN.write_text(json.dumps({f"{n}/{p}": digest(n, {"pruner": p, "sparsity": 0.5}) for n, p in _cases()},
                                 indent=1) + "\n")
