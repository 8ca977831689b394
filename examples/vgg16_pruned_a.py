"""Reproduce VGG-16-pruned-A of "Pruning Filters for Efficient ConvNets" (Li et al.) with the NNI API.

conv1 and conv8-conv13 lose 50% of their filters (L1 norm): 15.0M -> 5.4M parameters (-64%).

    python examples/vgg16_pruned_a.py
"""

import copy
import sys
from pathlib import Path

import torch

import fxprune
from fxprune.nni import ModelSpeedup
from fxprune.pruners import L1NormPruner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the architecture lives in the test fixtures
from tests.fixtures import vgg16_cifar, vgg16_conv_names  # noqa: E402


def main() -> None:
    model = vgg16_cifar().eval()
    convs = vgg16_conv_names(model)
    config_list = [{"sparsity": 0.5, "op_names": [convs[0]] + convs[7:]}]
    x = torch.randn(1, 3, 32, 32)

    # NNI style: compress() masks the model in place (fine-tune it here), then ModelSpeedup shrinks it in place.
    nni_model = copy.deepcopy(model)
    pruner = L1NormPruner(nni_model, config_list)   # NNI's normal mode: no example input needed
    _, masks = pruner.compress()
    pruner._unwrap_model()
    ModelSpeedup(nni_model, dummy_input=x, masks_file=masks).speedup_model()  # verified against the masked model
    before, after = (sum(p.numel() for p in m.parameters()) for m in (model, nni_model))
    print(f"NNI API : {before / 1e6:.2f}M -> {after / 1e6:.2f}M parameters ({1 - after / before:.1%} pruned)")

    # One call: the same, with the report.
    result = fxprune.compile(model, {"pruner": "l1", "rules": config_list}, x)
    print(result.report)


if __name__ == "__main__":
    main()
