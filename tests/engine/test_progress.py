"""engine.progress: tqdm.auto by default, a factory when the notebook layer sets one."""

from __future__ import annotations

import pytest

from lmprobe_jupyter.engine import progress


@pytest.fixture(autouse=True)
def _no_factory():
    progress.set_progress_factory(None)
    yield
    progress.set_progress_factory(None)


def test_default_is_a_tqdm_bar_that_does_not_stay():
    bar = progress.progress_bar([1, 2, 3], desc="extracting", unit="batch")
    assert list(bar) == [1, 2, 3]
    assert bar.leave is False and bar.desc == "extracting" and bar.unit == "batch"


def test_factory_receives_every_bar():
    seen = []

    def factory(iterable, *, desc, unit):
        seen.append((desc, unit))
        return iterable

    progress.set_progress_factory(factory)
    assert list(progress.progress_bar(range(2), desc="fitting probes", unit="layer")) == [0, 1]
    assert seen == [("fitting probes", "layer")]
