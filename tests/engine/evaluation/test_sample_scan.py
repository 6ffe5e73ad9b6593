"""Sample scans: capture is exact, bases reload, plots, separability finds a planted layer."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

from lmprobe_jupyter.engine.evaluation.sample_scan import SampleScan, ScanImage
from lmprobe_jupyter.engine.extraction import models
from lmprobe_jupyter.engine.extraction.extractor import Extractor

WORDS = ["apple", "river", "stone", "cloud", "green", "seven"]
PROMPTS = [" ".join(p) for p in itertools.islice(itertools.permutations(WORDS), 0, 720, 36)]
LABELS = [int(b) for b in np.random.default_rng(3).permutation([0, 1] * 10)]
PLANTED = 2


@pytest.fixture
def tiny(tiny_model_path):
    return models.load_model(tiny_model_path, device="cpu")


@pytest.fixture
def planted(tiny):
    """Layer 2's MLP adds a large fixed vector to every token of the label-1 prompts.

    The prompts are permutations of one bag of words and the labels are random, so
    nothing but the planted vector tells the classes apart.
    """
    import torch

    by_ids = {tuple(tiny.tokenizer(p)["input_ids"]): y for p, y in zip(PROMPTS, LABELS)}
    current = {}
    vec = torch.nn.functional.normalize(
        torch.randn(32, generator=torch.Generator().manual_seed(1)), dim=0
    )

    def pre(_m, _args, kwargs):
        current["y"] = by_ids.get(tuple(kwargs["input_ids"][0].tolist()), 0)

    def plant(_m, _i, output):
        return output + 20.0 * current["y"] * vec

    h1 = tiny.model.model.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = tiny.model.model.layers[PLANTED].mlp.register_forward_hook(plant)
    yield
    h1.remove()
    h2.remove()


def _labelled_scan(tiny, scan_dir, n_components, batch_size):
    """A SampleScan of PROMPTS with LABELS on the tiny model, on the CPU."""
    return SampleScan.run(
        PROMPTS,
        LABELS,
        model_name=tiny.name,
        scan_dir=scan_dir,
        n_components=n_components,
        device="cpu",
        batch_size=batch_size,
    )


@pytest.fixture
def scan(tiny, tmp_path):
    return _labelled_scan(tiny, tmp_path / "scan", n_components=32, batch_size=4)


def test_separability_map_finds_the_planted_layer(tiny, planted, tmp_path):
    scan = _labelled_scan(tiny, tmp_path / "s", n_components=16, batch_size=1)
    sep = scan.separability_map()
    assert sep.classes == [0, 1]
    assert sep.first_layer_above(0.999) == PLANTED
    assert sep.auroc["mlp_delta"][PLANTED] == 1.0
    assert sep.auroc["attn_delta"][PLANTED] < 0.999  # attention runs before the plant
    assert all(sep.auroc[s][layer] < 0.999 for s in sep.auroc for layer in range(PLANTED))
    assert sep.auroc["residual"][PLANTED] == 1.0 and sep.auroc["residual"][3] == 1.0
    assert sep.best()[:2] == (PLANTED, "mlp_delta") or sep.best()[:2] == (PLANTED, "residual")
    assert sep.to_frame().shape == (4, 3)
    assert "layer 2" in sep._repr_html_()
    grid = np.asarray(sep)
    assert grid.shape == sep.shape == (4, 3) and grid.dtype == np.float64
    mlp = sep.signals.index("mlp_delta")
    assert grid[PLANTED, mlp] == 1.0 and np.all(grid[:PLANTED] < 0.999)
    assert sep.best_component[PLANTED, mlp] == sep.component["mlp_delta"][PLANTED]


def test_capture_is_exact_residual_equals_previous_plus_deltas(scan):
    # with 32 of 32 components the bases are complete: reconstruct the raw vectors
    def raw(signal, layer, i):
        comps = scan.bases[f"{signal}.layer_{layer}.components"]
        mean = scan.bases[f"{signal}.layer_{layer}.mean"]
        return scan.per_token(i, layer, signal) @ comps + mean

    for layer in (1, 3):
        got = raw("residual", layer, 5)
        want = (
            raw("residual", layer - 1, 5) + raw("attn_delta", layer, 5) + raw("mlp_delta", layer, 5)
        )
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_projections_match_extractor_per_token(scan, tiny):
    toks = Extractor(tiny, progress=False, use_cache=False).per_token(
        [PROMPTS[4], "a new prompt"], [2]
    )
    for text, acts in zip([PROMPTS[4], "a new prompt"], toks):
        comps = scan.bases["residual.layer_2.components"]
        mean = scan.bases["residual.layer_2.mean"]
        want = (acts.acts[2] - mean) @ comps.T
        proj = scan.project_prompt(text)
        np.testing.assert_allclose(proj.projections["residual"][2], want, atol=1e-4)
        assert proj.tokens == acts.tokens
    evr = scan.explained_variance_ratio(2)
    assert np.all(np.diff(evr) <= 1e-7) and evr.sum() == pytest.approx(1.0, abs=1e-5)


def test_surprise_is_the_models_negative_log_probability(scan, tiny):
    import torch

    ids = tiny.tokenizer(PROMPTS[7], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(tiny.model(ids).logits[0].float(), -1)
    want = -logp[:-1].gather(-1, ids[0, 1:, None])[:, 0].numpy()
    got = scan.project_prompt(7).surprise
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1:], want, atol=1e-4)


def test_reload_from_directory(scan):
    again = SampleScan(scan.scan_dir)
    assert again.prompts == PROMPTS and again.labels == LABELS
    assert again.signals == ["residual", "attn_delta", "mlp_delta"]
    assert (again.n_layers, again.n_components) == (4, 32)
    np.testing.assert_array_equal(
        again.per_token(3, 2, "mlp_delta"), scan.per_token(3, 2, "mlp_delta")
    )
    assert again.per_token(PROMPTS[3], -1).shape == (len(again.tokens[3]), 32)
    assert not list(scan.scan_dir.glob(".tmp-*"))
    with pytest.raises(FileNotFoundError, match="has no scan.json"):
        SampleScan(scan.scan_dir / "nothing")


def test_plot_image_and_png(scan):
    from PIL import Image

    img = scan.plot(PROMPTS[2], signal="attn_delta")
    assert isinstance(img, ScanImage)
    n = len(scan.tokens[2])
    assert img.rgb.shape == (5, n, 3) and img.rgb.dtype == np.uint8
    assert tuple(img.rgb[0, 0]) == (255, 255, 255)  # no surprise for the first token
    assert img.top.shape == (4, n, 3)
    decoded = np.asarray(Image.open(io.BytesIO(img.png(scale=1))).convert("RGB"))
    np.testing.assert_array_equal(decoded, img.rgb)
    assert np.asarray(Image.open(io.BytesIO(img.png(scale=3)))).shape == (15, 3 * n, 3)
    page = img._repr_html_()
    assert "data:image/png;base64," in page and "<script" not in page
    props = img.to_props()
    assert props["tokens"] == scan.tokens[2] and props["surprise"][0] is None
    assert len(props["top"]) == 4 and len(props["top"][0][0]) == 3


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda s: s.plot(0, signal="logits"), ValueError, "signal='logits' is not in this scan"),
        (lambda s: s.separability_map([0] * 20), ValueError, "exactly two classes"),
        (lambda s: s.per_token(99, 0), IndexError, "sample_id=99 is out of range"),
        (lambda s: s.per_token(0, 4), ValueError, "layer 4 is out of range"),
    ],
    ids=["signal", "one-class", "sample", "layer"],
)
def test_errors(scan, call, exc, match):
    with pytest.raises(exc, match=match):
        call(scan)


def test_run_argument_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="signals=.*must be one of"):
        SampleScan.run(
            PROMPTS, model_name=tiny.name, scan_dir=tmp_path, signals=["x"], device="cpu"
        )
    with pytest.raises(ValueError, match="n_components=2"):
        SampleScan.run(
            PROMPTS, model_name=tiny.name, scan_dir=tmp_path, n_components=2, device="cpu"
        )


@pytest.mark.real_model
def test_separability_map_is_the_layers_by_signals_auroc_array_on_smollm(smollm, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score

    from lmprobe_jupyter import SampleScan
    from lmprobe_jupyter.examples import CAT, DOG

    labels = [1] * len(DOG) + [0] * len(CAT)
    scan = SampleScan.run(
        DOG + CAT, labels, smollm.name, tmp_path / "scan", n_components=8, device="cpu"
    )
    sep = scan.separability_map()
    grid = np.asarray(sep)
    assert grid.dtype == np.float64 and grid.shape == sep.shape == (30, 3)
    assert sep.signals == ["residual", "attn_delta", "mlp_delta"]
    for j, signal in enumerate(sep.signals):
        np.testing.assert_array_equal(grid[:, j], sep.auroc[signal])
        np.testing.assert_array_equal(sep.best_component[:, j], sep.component[signal])
    assert sep.best_component.dtype == np.int64
    assert np.all((grid >= 0.5) & (grid <= 1.0))
    assert np.all((sep.best_component >= 0) & (sep.best_component < 8))
    np.testing.assert_array_equal(np.asarray(sep, dtype=np.float32), grid.astype(np.float32))
    with pytest.raises(ValueError, match="without copy=False"):
        np.asarray(sep, copy=False)

    # the array's best cell is sep.best(), and its component really reaches that AUROC
    layer, j = np.unravel_index(np.argmax(grid), grid.shape)
    assert sep.best() == (layer, sep.signals[j], grid[layer, j])
    assert grid[layer, j] >= 0.9  # dogs and cats come apart somewhere in the network
    comp = sep.best_component[layer, j]
    auc = roc_auc_score(labels, scan.prompt_means(sep.signals[j])[:, layer, comp])
    assert max(auc, 1 - auc) == pytest.approx(grid[layer, j])

    frame = sep.to_frame()
    assert frame.index.name == "layer" and list(frame.index) == list(range(30))
    assert frame.columns.name == "signal" and list(frame.columns) == sep.signals
    np.testing.assert_array_equal(frame.to_numpy(), grid)
    np.testing.assert_array_equal(sep.to_frame("component").to_numpy(), sep.best_component)
    with pytest.raises(ValueError, match="values='p' is not one of 'auroc', 'component'"):
        sep.to_frame("p")

    image = plt.imshow(sep, aspect="auto")
    np.testing.assert_array_equal(image.get_array(), grid)
    plt.close("all")
