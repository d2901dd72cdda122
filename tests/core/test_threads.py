"""The training's thread count: as asked, from OMP_NUM_THREADS, or measured (every core only
where clearly faster), without touching the seeded random state."""

from __future__ import annotations

import pytest
import torch

from bchw.core import threads


@pytest.fixture(autouse=True)
def restore_threads():
    """The tests set PyTorch's process-wide thread count: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_asked_and_environment_counts_are_kept(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    choice = threads.choose_threads([8, 4, 2], 10, "square-hinge", requested=1)
    assert choice.threads == 1 and torch.get_num_threads() == 1 and "as asked" in choice.describe()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    choice = threads.choose_threads([8, 4, 2], 10, "square-hinge")
    assert choice.threads == 2 and "OMP_NUM_THREADS" in choice.describe()


def test_every_core_only_where_clearly_faster(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    for one, four, expected in ((1.0, 0.9, 1), (1.0, 0.8, 4), (1.0, 2.0, 1)):
        monkeypatch.setattr(
            threads, "_seconds_per_step", lambda s, b, loss, n, a=one, c=four: a if n == 1 else c
        )
        choice = threads.choose_threads([8, 4, 2], 10, "square-hinge")
        assert choice.threads == expected and set(choice.measured) == {1, 4}
        assert "measured" in choice.describe()
    monkeypatch.setattr(threads, "available_cores", lambda: 1)
    assert threads.choose_threads([8, 4, 2], 10, "square-hinge").threads == 1


def test_the_probe_leaves_the_random_state_as_it_was(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    threads._seconds_per_step([8, 4, 2], 10, "square-hinge", 1)
    assert torch.equal(torch.rand(3), expected)
