# ruff: noqa  -- NNI's code kept as NNI wrote it (only the import lines and the data differ)
"""NNI's `examples/model_compress/pruning/v2/simple_pruning_torch.py` at tag v2.6 (commit 0d3802ae), ported to fxprune.

Differences from NNI's file: the import lines (fxprune's instead of nni's, `small_cnn` instead of NNI's
`cifar10.vgg.VGG`, no torchvision) and the data (scikit-learn's 8x8 digits, `fxprune.datasets.digits()`, instead of
CIFAR-10, so the input shapes read 1x8x8 instead of 3x32x32). Everything else is NNI's code as it is.

    python examples/nni/simple_pruning.py
"""
import sys
from tqdm import tqdm

import torch
from torch.utils.data import TensorDataset

from fxprune import datasets

from fxprune.pruners import L1NormPruner
from fxprune.nni import ModelSpeedup

from fxprune.models import small_cnn as VGG  # NNI's cifar10.vgg.VGG -> a conv-BN-ReLU CNN for 8x8 digits


device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

digits = datasets.digits()  # the data: 8x8 digits instead of CIFAR-10's 3x32x32 images

train_loader = torch.utils.data.DataLoader(
    TensorDataset(digits.x_train, digits.y_train),
    batch_size=128, shuffle=True)

test_loader = torch.utils.data.DataLoader(
    TensorDataset(digits.x_test, digits.y_test),
    batch_size=128, shuffle=False)
criterion = torch.nn.CrossEntropyLoss()

def trainer(model, optimizer, criterion, epoch):
    model.train()
    for data, target in tqdm(iterable=train_loader, desc='Epoch {}'.format(epoch)):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()

def evaluator(model):
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in tqdm(iterable=test_loader, desc='Test'):
            data, target = data.to(device), target.to(device)
            output = model(data)
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    acc = 100 * correct / len(test_loader.dataset)
    print('Accuracy: {}%\n'.format(acc))
    return acc


if __name__ == '__main__':
    model = VGG().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()

    print('\nPre-train the model:')
    for i in range(5):
        trainer(model, optimizer, criterion, i)
        evaluator(model)

    config_list = [{'op_types': ['Conv2d'], 'sparsity': 0.8}]
    pruner = L1NormPruner(model, config_list)
    _, masks = pruner.compress()

    print('\nThe accuracy with masks:')
    evaluator(model)

    pruner._unwrap_model()
    ModelSpeedup(model, dummy_input=torch.rand(10, 1, 8, 8).to(device), masks_file=masks).speedup_model()

    print('\nThe accuracy after speed up:')
    evaluator(model)

    # Need a new optimizer due to the modules in model will be replaced during speedup.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    print('\nFinetune the model after speed up:')
    for i in range(5):
        trainer(model, optimizer, criterion, i)
        evaluator(model)
