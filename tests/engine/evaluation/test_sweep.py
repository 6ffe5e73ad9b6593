"""Layer sweeps: one extraction for every layer, working per-layer probes, result views."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmprobe_jupyter import Probe, sweep_layers
from lmprobe_jupyter.engine.evaluation import sweep as sweep_mod
from lmprobe_jupyter.engine.evaluation.sweep import SweepResult
from lmprobe_jupyter.engine.extraction.extractor import Extractor

# ---------------------------------------------------------------------- tiny model (logic)
POS = ["alpha alpha alpha", "alpha beta alpha", "alpha gamma", "alpha alpha", "beta alpha alpha"]
NEG = ["omega omega omega", "omega delta", "delta omega omega", "omega omega", "omega sigma"]
HELD = ["alpha beta beta", "gamma alpha", "omega delta delta", "sigma omega"]
HELD_Y = [1, 1, 0, 0]


@pytest.fixture
def tiny_sweep(tiny_model_path):
    def run(**kw):
        kw.setdefault("layers", "all")
        kw.setdefault("random_state", 0)
        kw.setdefault("device", "cpu")
        kw.setdefault("batch_size", 4)
        return Probe.sweep_layers(
            model=tiny_model_path, positive_prompts=POS, negative_prompts=NEG, **kw
        )

    return run


def test_one_extraction_serves_every_layer(tiny_sweep, monkeypatch):
    calls = []
    real = Extractor.pooled

    def counting(self, prompts, layers, pooling):
        calls.append((len(prompts), sorted(layers)))
        return real(self, prompts, layers, pooling)

    monkeypatch.setattr(Extractor, "pooled", counting)
    before = Extractor.forward_calls
    result = tiny_sweep()
    # 10 prompts in batches of 4: one pass is 3 forward calls, whatever the layer count.
    assert Extractor.forward_calls - before == 3
    assert calls == [(10, [0, 1, 2, 3])]
    assert isinstance(result, SweepResult)
    assert result.layers == [0, 1, 2, 3] and len(result) == 4
    assert sorted(result.train_scores) == [0, 1, 2, 3]
    assert all(p.layers_ == [layer] for layer, p in result.probes.items())
    # Memory: each probe keeps its slice of the pooled float32 array, not a float64 copy.
    for p in result.probes.values():
        assert p.training_activations[0].dtype == np.float32 and p.training_activations[
            0
        ].shape == (10, 32)


def test_per_layer_probes_predict_from_cache(tiny_sweep):
    result = tiny_sweep()
    before = Extractor.forward_calls
    scores = result.score(HELD, HELD_Y)
    assert Extractor.forward_calls - before == 1  # 4 new prompts, one batch, all layers
    before = Extractor.forward_calls
    for layer, p in result.probes.items():
        # Each per-layer probe is a full Probe; its score equals the sweep's, from cache.
        assert p.score(HELD, HELD_Y) == pytest.approx(scores[layer])
        assert p.predict(POS).shape == (5,)
    assert Extractor.forward_calls == before


def test_score_matches_probe_scores_token_level(tiny_sweep):
    result = tiny_sweep(inference_pooling="max")
    scores = result.score(HELD, HELD_Y)
    for layer, p in result.probes.items():
        assert p.score(HELD, HELD_Y) == pytest.approx(scores[layer])
        expected = p.evaluate(HELD, HELD_Y)
        got = result.evaluate(HELD, HELD_Y)[layer]
        assert got["accuracy"] == pytest.approx(expected["accuracy"])
        assert got["auroc"] == pytest.approx(expected["auroc"], nan_ok=True)


def test_evaluate_gives_all_metrics_per_layer(tiny_sweep):
    result = tiny_sweep(layers=[1, 3])
    metrics = result.evaluate(HELD, HELD_Y)
    assert sorted(metrics) == [1, 3]
    for m in metrics.values():
        assert set(m) >= {"accuracy", "f1", "precision", "recall", "auroc", "n"}
        assert m["n"] == 4
    assert result.test_scores == {k: m["accuracy"] for k, m in metrics.items()}


def test_cv_scores_and_best_layer_without_test_data(tiny_sweep):
    result = tiny_sweep(cv=5)
    assert sorted(result.cv_scores) == [0, 1, 2, 3]
    assert all(0.0 <= s <= 1.0 for s in result.cv_scores.values())
    best = result.best_layer()
    top = max(result.cv_scores.values())
    # Ties go to the shallowest layer.
    assert best == min(k for k, v in result.cv_scores.items() if v == top)


def test_best_layer_on_given_data_then_by_cv(tiny_sweep):
    result = tiny_sweep()
    assert result.cv_scores is None and result.test_scores is None
    best = result.best_layer(HELD, HELD_Y)  # the reference's form: on the data given
    scores = result.test_scores
    assert scores[best] == max(scores.values())
    assert result.best_choice()[1] == "test"
    # without arguments the choice never uses the test scores: CV, computed now
    chosen = result.best_layer()
    assert result.cv_scores is not None
    top = max(result.cv_scores.values())
    assert chosen == min(k for k, v in result.cv_scores.items() if v == top)
    assert result.best_choice() == (chosen, "cv")


def test_best_layer_is_the_cv_argmax_where_the_test_set_disagrees(tiny_sweep):
    result = tiny_sweep()
    # a constructed case: the test set prefers layers 0 and 3, cross-validation 1 and 2
    result.cv_scores = {0: 0.55, 1: 0.90, 2: 0.90, 3: 0.60}
    result.test_scores = {0: 1.00, 1: 0.50, 2: 0.75, 3: 1.00}
    assert result.best_layer() == 1  # argmax of CV; the tie with 2 goes to the shallower
    assert result.best_choice() == (1, "cv")
    assert repr(result).endswith("best_layer=1 (by cv))")
    widget = result.show()
    assert (widget.best_layer, widget.best_by) == (1, "cv")
    assert "best by CV: layer 1 (CV 0.900 \u00b7 test 0.500)" in widget._html
    html = result._repr_html_()
    assert "best layer 1 by CV" in html and '<tr style="font-weight:bold"><td>1</td>' in html
    fig = result.plot()
    assert "best by CV: 1" in [t.get_text() for t in fig.axes[0].texts]


def test_selected_layer_follows_the_widget(tiny_sweep):
    result = tiny_sweep(cv=2)
    assert result.selected_layer is None and result.selected_probe is None
    widget = result.show()
    widget.selected_layer = 2  # what a click in the view does
    assert result.selected_layer == 2 and result.selected_probe is result.probes[2]
    widget.selected_layer = None
    assert result.selected_layer is None
    result.selected_layer = 3
    assert result.show().selected_layer == 3  # shown again, the choice is kept
    with pytest.raises(ValueError, match=r"selected_layer=9 is not one of the swept layers"):
        result.selected_layer = 9


def test_plot_legend_sits_beside_the_curves(tiny_sweep):
    result = tiny_sweep(cv=2, test_prompts=HELD, test_labels=HELD_Y)
    fig = result.plot()
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes, over no line
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "cv", "test"]


def test_best_layer_computes_cv_when_nothing_else(tiny_sweep):
    result = tiny_sweep()
    result.best_layer()
    assert result.cv_scores is not None and len(result.cv_scores) == 4


def test_test_prompts_are_scored_in_the_same_call(tiny_sweep):
    result = tiny_sweep(test_prompts=HELD, test_labels=HELD_Y, layers="sweep:2")
    assert result.layers == [0, 2]
    assert sorted(result.test_scores) == [0, 2]


def test_prompts_and_labels_multiclass(tiny_model_path):
    prompts = ["red red", "red apple", "green leaf", "green green", "blue sky", "blue blue"]
    labels = ["r", "r", "g", "g", "b", "b"]
    result = sweep_layers(
        model=tiny_model_path, prompts=prompts, labels=labels, layers=[2, 3], device="cpu"
    )
    assert list(result.probes[2].classes_) == ["b", "g", "r"]
    assert result.score(prompts, labels) == {2: 1.0, 3: 1.0}
    m = result.evaluate(prompts, labels)
    assert m[3]["accuracy"] == 1.0


def test_regression_sweep(tiny_model_path):
    prompts = [f"{'very ' * k}long" for k in range(12)]
    y = np.arange(12, dtype=float)
    result = sweep_layers(
        model=tiny_model_path,
        prompts=prompts,
        labels=y,
        layers=[1, 3],
        task="regression",
        pooling="mean",
        device="cpu",
    )
    assert result.metric == "r2"
    scores = result.score(prompts, y)
    assert all(scores[k] == pytest.approx(result.train_scores[k]) for k in (1, 3))
    assert "r2" in result.evaluate(prompts, y)[1]


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"layers": "auto"}, ValueError, "selects layers inside one probe"),
        ({"layers": "fast_auto"}, ValueError, "selects layers inside one probe"),
        ({"layers": "sweep:x"}, ValueError, "not a valid layer spec"),
        ({"cv": 1}, ValueError, r"cv=1 must be None or an int >= 2"),
        ({"test_prompts": HELD}, TypeError, "test_prompts and test_labels"),
        ({"prompts": POS}, TypeError, "not both"),
        ({"classifier": "forest"}, ValueError, "classifier='forest' is not one of"),
    ],
    ids=["auto", "fast_auto", "bad-spec", "cv1", "test-no-labels", "both-forms", "bad-clf"],
)
def test_sweep_errors(tiny_sweep, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tiny_sweep(**kwargs)


def test_sweep_needs_training_data(tiny_model_path):
    with pytest.raises(TypeError, match="positive_prompts and negative_prompts"):
        sweep_layers(model=tiny_model_path, positive_prompts=POS, device="cpu")
    with pytest.raises(TypeError, match="needs training data"):
        sweep_layers(model=tiny_model_path, device="cpu")
    with pytest.raises(ValueError, match="only one class"):
        sweep_layers(model=tiny_model_path, prompts=POS, labels=[1] * 5, device="cpu")


def test_result_views(tiny_sweep):
    import matplotlib.figure

    result = tiny_sweep(cv=2)
    result.score(HELD, HELD_Y)
    frame = result.to_frame()
    assert list(frame.columns) == ["layer", "train", "cv", "test"]
    assert frame["layer"].tolist() == [0, 1, 2, 3]
    assert frame["test"].tolist() == [result.test_scores[k] for k in range(4)]
    assert frame.attrs["metric"] == "accuracy"

    fig = result.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert {"train", "cv", "test"} <= set(labels)

    best = result.best_layer()
    html = result._repr_html_()
    assert html.count("<tr") == 5  # header + 4 layers
    assert f'<tr style="font-weight:bold"><td>{best}</td>' in html
    assert f"best layer {best}" in html
    assert "SweepResult(4 layers [0..3]" in repr(result)
    assert result[2] is result.probes[2]
    with pytest.raises(KeyError, match="layer 7 was not swept"):
        result[7]


def test_show_builds_sweep_widget(tiny_sweep):
    result = tiny_sweep()
    widget = result.show(HELD, HELD_Y)
    assert type(widget).__name__ == "SweepCurveWidget"
    assert widget.layers == [0, 1, 2, 3]
    assert widget.test_scores == [result.test_scores[k] for k in range(4)]
    # No CV requested and a test set given: the "train" curve is the training score,
    # and the best layer is the test set's, labelled so.
    assert widget.train_scores == [result.train_scores[k] for k in range(4)]
    assert (widget.best_layer, widget.best_by) == result.best_choice()
    assert widget.best_by == "test"
    assert widget.metric == "accuracy"


def test_sweep_spec_in_probe_picks_cv_best(tiny_model_path):
    p = Probe(model=tiny_model_path, layers="sweep", device="cpu", random_state=0)
    before = Extractor.forward_calls
    p.fit(POS, NEG)
    assert Extractor.forward_calls - before == math.ceil(10 / 8)
    res = p.sweep_result_
    assert isinstance(res, SweepResult) and res.layers == [0, 1, 2, 3]
    assert p.selected_layers_ == p.layers_ == [res.best_layer()]
    assert p.selection_scores_ == res.cv_scores
    assert p.predict(HELD).shape == (4,)


def test_small_fits_run_single_threaded(monkeypatch):
    from threadpoolctl import threadpool_info

    with sweep_mod.small_fit_threads(100):
        assert all(i["num_threads"] == 1 for i in threadpool_info())
    monkeypatch.setattr(sweep_mod, "SMALL_FIT_ENTRIES", 10)
    before = [i["num_threads"] for i in threadpool_info()]
    with sweep_mod.small_fit_threads(100):
        assert [i["num_threads"] for i in threadpool_info()] == before


# ---------------------------------------------------------------------- SmolLM2 (learning)
SENT_POS = [
    "The food was delicious and the staff were lovely.",
    "I adored every minute of this wonderful film.",
    "What a fantastic day at the beach with friends.",
    "The new phone works perfectly and looks beautiful.",
    "She was thrilled with her excellent exam results.",
    "This book is a delightful and inspiring read.",
    "Our hotel room was spotless, bright and cosy.",
    "The concert was amazing and the crowd was joyful.",
    "I am so happy with how the garden turned out.",
    "The team played brilliantly and won the final.",
    "Thank you, the gift was perfect and made my week.",
    "The hike offered gorgeous views and fresh air.",
    "His kind words made everyone feel welcome.",
    "The coffee here is superb and the service is quick.",
    "We had a lovely, relaxing holiday in the mountains.",
    "The software update made everything faster and smoother.",
    "My puppy is cheerful, playful and full of love.",
    "The teacher was patient, clear and encouraging.",
    "Dinner was a great success and everyone smiled.",
    "The museum visit was fascinating and fun.",
]
SENT_NEG = [
    "The food was cold and the staff were rude.",
    "I hated every minute of this boring film.",
    "What a miserable day stuck in traffic alone.",
    "The new phone keeps crashing and looks cheap.",
    "She was devastated by her terrible exam results.",
    "This book is a dull and depressing read.",
    "Our hotel room was filthy, dark and cramped.",
    "The concert was awful and the crowd was hostile.",
    "I am so upset with how the garden turned out.",
    "The team played horribly and lost the final.",
    "Sadly, the gift was broken and ruined my week.",
    "The hike was exhausting, muddy and dangerous.",
    "His harsh words made everyone feel unwelcome.",
    "The coffee here is bitter and the service is slow.",
    "We had a stressful, tiring holiday in the rain.",
    "The software update made everything slower and buggy.",
    "My neighbour is grumpy, noisy and always angry.",
    "The teacher was impatient, confusing and unkind.",
    "Dinner was a disaster and everyone argued.",
    "The museum visit was tedious and disappointing.",
]
SENT_TEST = [
    ("I love this cosy little bakery and its warm bread.", 1),
    ("The repair was done quickly and the price was fair.", 1),
    ("The wedding was joyful, elegant and full of laughter.", 1),
    ("This jacket is comfortable, warm and stylish.", 1),
    ("The nurse was gentle and incredibly helpful.", 1),
    ("Our trip went smoothly and the weather was perfect.", 1),
    ("The show was hilarious and we laughed all night.", 1),
    ("I feel proud and grateful for this great team.", 1),
    ("The park is peaceful, green and beautifully kept.", 1),
    ("The soup was rich, fresh and wonderfully tasty.", 1),
    ("I dislike this dirty little cafe and its stale bread.", 0),
    ("The repair took weeks and the price was outrageous.", 0),
    ("The meeting was tense, awkward and full of shouting.", 0),
    ("This jacket is itchy, flimsy and ugly.", 0),
    ("The clerk was rude and completely unhelpful.", 0),
    ("Our trip was a mess and the weather was dreadful.", 0),
    ("The show was painful and we left early in disgust.", 0),
    ("I feel ashamed and angry about this awful mistake.", 0),
    ("The park is littered, grey and badly neglected.", 0),
    ("The soup was bland, greasy and completely inedible.", 0),
]


@pytest.mark.real_model
def test_smollm_sweep_all_30_layers(smollm):
    texts, labels = map(list, zip(*SENT_TEST))
    before = Extractor.forward_calls
    result = Probe.sweep_layers(
        model=smollm.name,
        positive_prompts=SENT_POS,
        negative_prompts=SENT_NEG,
        layers="all",
        classifier="ridge",
        cv=5,
        device="cpu",
        random_state=0,
    )
    assert Extractor.forward_calls - before == math.ceil(40 / 8)  # one pass, 30 layers
    assert result.layers == list(range(30))
    scores = result.score(texts, labels)
    assert len(scores) == 30
    best = result.best_layer(texts, labels)
    # The last token of layer 0 has barely mixed in its context; deep layers know the
    # sentiment of sentences they never saw.
    assert scores[best] > scores[0] + 0.25
    assert scores[best] >= 0.9
    assert max(result.cv_scores.values()) > result.cv_scores[0] + 0.25
    # The chosen layer's probe predicts raw prompts from the cache.
    before = Extractor.forward_calls
    pred = result.probes[best].predict(texts)
    assert np.mean(pred == np.array(labels)) == pytest.approx(scores[best])
    assert Extractor.forward_calls == before


@pytest.mark.real_model
@pytest.mark.parametrize(
    "spec,layers", [("sweep:10", [0, 10, 20]), ("sweep:5-8", [5, 6, 7, 8])], ids=["every10", "5-8"]
)
def test_smollm_sweep_specs(smollm, spec, layers):
    p = Probe(model=smollm.name, layers=spec, classifier="ridge", device="cpu", random_state=0)
    p.fit(SENT_POS, SENT_NEG)
    assert len(p.sweep_result_.probes) == len(layers)
    assert p.sweep_result_.layers == layers
    assert p.layers_[0] in layers and len(p.layers_) == 1
    assert p.sweep_result_.cv_scores[p.layers_[0]] == max(p.sweep_result_.cv_scores.values())
    direct = Probe.sweep_layers(
        model=smollm.name,
        positive_prompts=SENT_POS,
        negative_prompts=SENT_NEG,
        layers=spec,
        classifier="ridge",
        device="cpu",
    )
    assert direct.layers == layers
