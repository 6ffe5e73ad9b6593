"""Notebook progress bars leave an empty output behind, never a stale bar."""

from __future__ import annotations

from lmprobe_jupyter.jupyter import progress


def test_bar_output_is_emptied_on_close(monkeypatch):
    calls = []

    class Handle:
        def update(self, obj, **kwargs):
            calls.append(("update", obj, kwargs))

    def display(obj, display_id=False):
        calls.append(("display", type(obj).__name__, display_id))
        return Handle()

    monkeypatch.setattr(progress, "display", display)
    bar = progress.notebook_progress(range(3), desc="extracting", unit="batch")
    assert list(bar) == [0, 1, 2]  # iterating to the end closes it
    assert calls == [("display", "TqdmHBox", True), ("update", {}, {"raw": True})]
    assert bar.container.comm is None  # the widget is closed too: no model left
    bar.close()  # closing twice publishes nothing more
    assert len(calls) == 2


def test_an_interrupted_bar_is_emptied_too(monkeypatch):
    updates = []

    class Handle:
        def update(self, obj, **kwargs):
            updates.append(obj)

    monkeypatch.setattr(progress, "display", lambda obj, display_id=False: Handle())
    bar = progress.notebook_progress(range(5), desc="extracting", unit="batch")
    for i in bar:
        if i == 1:
            break
    bar.close()
    assert updates == [{}]
