"""Every presentation test starts the renderers' id counter at 0."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fixed_uids():
    from lmprobe_jupyter import presentation

    presentation.reset_uids()
    yield
    presentation.reset_uids()
