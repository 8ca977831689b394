"""Progress lines: on stderr only when it is a terminal, never on stdout, silenced by FXPRUNE_PROGRESS=0."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

from fxprune import datasets, models, training
from fxprune.progress import progress


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _tiny_training() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 8, 8, generator=gen), torch.randint(0, 10, (40,), generator=gen)
    training.train(models.small_cnn(image=8, width=4), datasets.batches(x, y, 8), epochs=2, desc="fitting")


def test_silent_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FXPRUNE_PROGRESS", raising=False)
    _tiny_training()
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_draws_on_a_terminal_stderr_only(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FXPRUNE_PROGRESS", raising=False)
    tty = _TTY()
    monkeypatch.setattr(sys, "stderr", tty)
    _tiny_training()
    text = tty.getvalue()
    assert capsys.readouterr().out == ""
    assert text.startswith("\rfitting ") and text.endswith("\n") and text.count("\n") == 1
    final = text.rsplit("\r", 1)[1]
    assert final.startswith("fitting 10/10 loss=")  # 2 epochs x 5 batches, the current loss shown


@pytest.mark.parametrize("how", ["env", "argument"])
def test_silenced_on_request(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    tty = _TTY()
    if how == "env":
        monkeypatch.setenv("FXPRUNE_PROGRESS", "0")
        bar = progress(range(3), "work", stream=tty)
    else:
        monkeypatch.delenv("FXPRUNE_PROGRESS", raising=False)
        bar = progress(range(3), "work", stream=tty, enabled=False)
    assert list(bar) == [0, 1, 2]
    assert tty.getvalue() == ""


def test_counts_metrics_and_nesting() -> None:
    outer_stream = _TTY()
    with progress(2, "search", stream=outer_stream) as outer:
        for step in range(2):
            with progress(3, "fine-tuning", stream=outer_stream) as inner:
                for _ in range(3):
                    inner.update(loss=0.5)
            outer.update(score=0.25 * step)
        outer.set(best=0.9)
    text = outer_stream.getvalue()
    assert "fine-tuning 3/3 loss=0.5" in text
    # nested bars erase their line; only the outermost bar's final line stays
    assert text.endswith("search 2/2 score=0.25 best=0.9 " + text.rsplit(" ", 1)[1])
    assert text.count("\n") == 1
    with pytest.raises(TypeError, match="update"):
        list(progress(5, "counted"))


@pytest.mark.slow
def test_piped_run_keeps_stdout_clean() -> None:
    code = ("import torch; from fxprune import datasets, models, training\n"
            "x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))\n"
            "training.train(models.small_cnn(image=8, width=4), datasets.batches(x, y, 8), epochs=1)\n"
            "print('RESULT')\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("FXPRUNE_PROGRESS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "RESULT\n" and done.stderr == ""
