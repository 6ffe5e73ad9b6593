"""Write the saved probes and the activation cache that ``tests/test_legacy_files.py`` loads.

Run once, by the commit before the engine's subpackage layout (9e59995), so that the test
proves that probe folders, single-file probes, pickles and cache entries written before the
re-layout still load after it:

    python tests/data/make_legacy_files.py

Everything is float32 on the bundled SmolLM2 (so cache keys do not depend on the CPU's
native dtype), and ``expected.json`` holds what each probe predicted when it was saved.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent / "legacy"
PROMPTS = [
    "Who wants to go for a walk?",
    "Fetch the ball, good boy!",
    "Purring, stalking, pouncing.",
    "Uses a litterbox, throws sand.",
]
LABELS = [1, 1, 0, 0]
TEST = ["Let us go to the park, buddy!", "Curled up in a box, purring."]


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir(parents=True)
    os.environ["LMPROBE_CACHE_DIR"] = str(HERE / "cache")
    os.environ.setdefault("LMPROBE_PROGRESS", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmprobe_jupyter import Probe
    from lmprobe_jupyter.engine.cache.settings import reset_cache

    reset_cache()
    common = dict(layers=12, device="cpu", dtype="float32", random_state=0)
    probes = {
        "folder": Probe(pooling="mean", **common),
        "attention.safetensors": Probe(classifier="attention", **common),
        "pickled.pkl": Probe(pooling="mean", classifier="mass_mean", **common),
    }
    expected = {}
    for name, probe in probes.items():
        probe.fit(PROMPTS, LABELS)
        probe.save(HERE / name)
        expected[name] = probe.predict_proba(TEST)[:, 1].tolist()
    (HERE / "expected.json").write_text(
        json.dumps({"prompts": PROMPTS, "test": TEST, "proba": expected}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
