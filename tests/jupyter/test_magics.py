"""The %probe_* magics through a real IPython InteractiveShell (tiny random model)."""

from __future__ import annotations

import numpy as np
import pytest
from IPython.core.error import UsageError

from lmprobe_jupyter.examples import CAT, DOG
from lmprobe_jupyter.examples import DOG_CAT_TEST as HELD_OUT
from lmprobe_jupyter.jupyter.magics import DEFAULT_MODEL, ProbeMagics
from lmprobe_jupyter.jupyter.views import HTMLView
from lmprobe_jupyter.jupyter.widgets import BatteryWidget, TokenHighlightWidget

CELL = """
# dogs vs cats
+ Who wants to go for a walk?
+ Fetch the ball!
+ Good boy, wag that tail!

- Purring, stalking, pouncing, scratching.
- Uses a litterbox, throws sand all over the room.
- Tail raised, back arched, whiskers forward.
"""
POS = ["Who wants to go for a walk?", "Fetch the ball!", "Good boy, wag that tail!"]
NEG = [
    "Purring, stalking, pouncing, scratching.",
    "Uses a litterbox, throws sand all over the room.",
    "Tail raised, back arched, whiskers forward.",
]


@pytest.fixture
def shell(ip, tiny_model_path):
    ip.user_ns["TINY"] = tiny_model_path
    ip.user_ns["pos"] = list(POS)
    ip.user_ns["neg"] = list(NEG)
    ip.user_ns["X"] = [
        "Arf! Let's go outside!",
        "Knocking things off the counter.",
        "Fetch!",
        "Purr.",
    ]
    ip.user_ns["y"] = [1, 0, 1, 0]
    return ip


@pytest.fixture
def dog(shell, tiny_model_path):
    card = shell.run_cell_magic(
        "probe_fit", f"dog --model {tiny_model_path} --layers 2 --random-state 0", CELL
    )
    return shell.user_ns["dog"], card


def test_default_model_matches_engine():
    from lmprobe_jupyter.engine.extraction.models import DEFAULT_MODEL as ENGINE_DEFAULT

    assert DEFAULT_MODEL == ENGINE_DEFAULT
    assert ProbeMagics.model.default_value == ENGINE_DEFAULT


def test_probe_fit_cell_binds_probe_and_shows_card(dog, shell, tiny_model_path):
    probe, card = dog
    from lmprobe_jupyter.engine.probes.probe import Probe

    assert isinstance(probe, Probe)
    assert probe.model == tiny_model_path and probe.layers_ == [2] and probe.random_state == 0
    assert isinstance(card, HTMLView)
    data = card.data
    assert data["name"] == "dog"
    assert data["model"] == tiny_model_path
    assert data["layers"] == [2]
    assert data["pooling"] == "last_token"
    assert data["classifier"] == "logistic_regression"
    assert (data["n_positive"], data["n_negative"]) == (3, 3)
    assert 0.0 <= data["train_accuracy"] <= 1.0
    assert data["train_accuracy"] == probe.score(POS + NEG, [1, 1, 1, 0, 0, 0])
    assert data["fit_time_s"] > 0
    assert data["cache_hits"] == "0 of 6 prompts"  # a fresh cache: everything extracted
    assert (
        '<tr data-field="n_positive"><th>positive prompts</th><td>3</td></tr>' in card._repr_html_()
    )
    assert "training accuracy" in repr(card)
    # the probe is usable straight away
    assert probe.predict(["Fetch!"]).shape == (1,)


def test_probe_fit_refit_hits_cache(dog, shell, tiny_model_path):
    card = shell.run_cell_magic("probe_fit", f"dog2 --model {tiny_model_path} --layers 2", CELL)
    assert card.data["cache_hits"] == "6 of 6 prompts"


def test_probe_fit_from_variables_and_options(shell, tiny_model_path):
    shell.run_line_magic(
        "probe_fit",
        f"p --positive pos --negative neg --model {tiny_model_path} --layers 1,2 "
        "--pooling mean --classifier ridge --normalize-layers per_layer --cv 0",
    )
    p = shell.user_ns["p"]
    assert p.layers_ == [1, 2]
    assert (p.pooling, p.classifier, p.normalize_layers) == ("mean", "ridge", "per_layer")


def test_probe_fit_prompts_and_labels(shell, tiny_model_path):
    shell.user_ns["prompts"] = POS + NEG
    shell.user_ns["labels"] = np.array([1, 1, 1, 0, 0, 0])
    card = shell.run_line_magic(
        "probe_fit", f"q --prompts prompts --labels labels --model {tiny_model_path} --layers 0"
    )
    assert card.data["n_samples"] == 6
    assert "n_positive" not in card.data
    assert list(shell.user_ns["q"].classes_) == [0, 1]


def test_probe_fit_string_labels_from_a_list(shell, tiny_model_path):
    shell.user_ns["prompts"] = POS + NEG
    shell.user_ns["names"] = ["up"] * 3 + ["down"] * 3  # a plain list of strings
    shell.run_line_magic(
        "probe_fit", f"s --prompts prompts --labels names --model {tiny_model_path} --layers 0"
    )
    assert list(shell.user_ns["s"].classes_) == ["down", "up"]
    assert shell.user_ns["s"].n_train_ == 6


def test_config_default_model(shell, tiny_model_path):
    shell.run_line_magic("config", f"ProbeMagics.model = {tiny_model_path!r}")
    try:
        shell.run_cell_magic("probe_fit", "cfg --layers 1", CELL)
        assert shell.user_ns["cfg"].model == tiny_model_path
    finally:
        shell.run_line_magic("config", f"ProbeMagics.model = {DEFAULT_MODEL!r}")


def test_probe_tokens_forms(dog, shell):
    probe, _ = dog
    w = shell.run_line_magic("probe_tokens", 'dog "Fetch the ball" -o toks')
    assert isinstance(w, TokenHighlightWidget)
    toks = shell.user_ns["toks"]
    assert "".join(toks[0].tokens).endswith("Fetch the ball")
    assert w.texts[0]["tokens"] == toks[0].tokens
    scores = np.asarray(toks[0].scores, dtype=float)
    assert np.isnan(scores[0]) and w.texts[0]["scores"][0] is None  # the sink is unscored
    assert w.texts[0]["scores"][1:] == pytest.approx(scores[1:].tolist())
    assert w.threshold == 0.5

    w2 = shell.run_cell_magic("probe_tokens", "dog --threshold 0.3", "Good boy!\n\nPurring.\n")
    assert len(w2.texts) == 2 and w2.threshold == 0.3

    shell.user_ns["many"] = ["one\ntwo", "three"]
    w3 = shell.run_line_magic("probe_tokens", "dog --texts many")
    assert any("\n" in t for t in w3.texts[0]["tokens"])  # newlines survive as tokens
    assert "\u21b5\n" in w3._repr_mimebundle_()[0]["text/html"]


def test_probe_eval_metrics_and_roc(dog, shell):
    probe, _ = dog
    view = shell.run_line_magic("probe_eval", "dog --test X --labels y -o metrics")
    metrics = shell.user_ns["metrics"]
    assert metrics == probe.evaluate(shell.user_ns["X"], [1, 0, 1, 0])
    assert set(metrics) >= {"accuracy", "f1", "precision", "recall", "auroc"}
    html = view._repr_html_()
    assert '<tr data-metric="accuracy">' in html
    assert 'class="lmpj-roc"' in html
    assert f"AUC {metrics['auroc']:.3f}" in html


def test_probe_battery_includes_probe_row(dog, shell):
    w = shell.run_line_magic(
        "probe_battery",
        "dog --positive pos --negative neg --test X --labels y --include bow,majority",
    )
    assert isinstance(w, BatteryWidget)
    names = {r["name"] for r in w.rows}
    assert names == {"dog", "bow", "majority"}
    probe_row = next(r for r in w.rows if r["is_probe"])
    assert probe_row["score"] == shell.user_ns["dog"].score(shell.user_ns["X"], [1, 0, 1, 0])
    assert shell.user_ns["battery"]["bow"].score == next(
        r["score"] for r in w.rows if r["name"] == "bow"
    )
    assert 'class="lmpj-ref-line"' in w._repr_mimebundle_()[0]["text/html"]


def test_probe_cache_table_and_clear(dog, shell):
    view = shell.run_line_magic("probe_cache", "")
    assert view.data["entries"] >= 6
    assert '<tr data-field="entries"><th>entries</th><td>' in view._repr_html_()
    cleared = shell.run_line_magic("probe_cache", "--clear")
    assert cleared.data["entries"] == 0


def test_help_shows_probe_flags(shell):
    doc = shell.find_cell_magic("probe_fit").__doc__
    for flag in ("--layers", "--inference-pooling", "--classifier-kwargs", "--positive", "--cv"):
        assert flag in doc


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("%probe_fit 1dog", "NAME must be a variable name, got '1dog'"),
        ("%probe_fit d --bogus 3", "unrecognized arguments: --bogus 3"),
        ("%probe_fit d --batch-size lots", "--batch-size expects an integer, got 'lots'"),
        ("%probe_fit d", "no prompts: the cell body holds one prompt per line, '+ ' before"),
        # an empty cell body reaches the magic (not IPython's "Did you mean %probe_fit?")
        ("%%probe_fit d\n", "no prompts: the cell body holds one prompt per line, '+ ' before"),
        ("%%probe_sweep --cv 3\n  \n", "no prompts: the cell body holds one prompt per line"),
        ("%%probe_fit d --model {TINY}\n+ only dogs here", "no negative ('- ...') prompts"),
        ("%%probe_fit d\n+ a dog\n~ what", "cell line 2"),
        ("%probe_fit d --positive nope --negative neg", "--positive: no variable named 'nope'"),
        ("%probe_fit d --positive pos", "give both --positive VAR and --negative VAR"),
        (
            "%probe_fit d --positive pos --negative neg --model {TINY} --classifier nope",
            "probe_fit: classifier='nope' is not one of",
        ),
        (
            "%probe_fit d --positive pos --negative neg --model {TINY} --layers 9",
            "probe_fit: layer 9 is out of range",
        ),
        (
            "%probe_fit d --prompts pos --labels y --model {TINY}",
            "probe_fit: got 3 prompts but 4 labels",
        ),
        ("%probe_tokens missing hi", "PROBE: no variable named 'missing'"),
        ("%probe_tokens pos hi", "pos is a list, not a Probe"),
        ("%probe_eval dog --test X", "give both --test VAR and --labels VAR"),
        ("%probe_eval dog", "give the held-out set with --test VAR --labels VAR"),
        ("%probe_eval dog --test X --labels y -o 2x", "-o/--out expects a variable name, got '2x'"),
        ("%probe_cache --model m", "--model only applies with --clear"),
    ],
)
def test_user_mistakes_are_one_line_usage_errors(dog, shell, capsys, cell, message):
    capsys.readouterr()
    result = shell.run_cell(cell.replace("{TINY}", shell.user_ns["TINY"]))
    assert isinstance(result.error_in_exec, UsageError)
    assert message in str(result.error_in_exec)
    err = capsys.readouterr().err.strip()
    assert err.startswith("UsageError: ") and message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_unfitted_probe_is_a_usage_error(shell):
    from lmprobe_jupyter.engine.probes.probe import Probe

    shell.user_ns["raw"] = Probe()
    with pytest.raises(
        UsageError, match=r"probe raw is not fitted yet; fit it first \(%%probe_fit raw\)"
    ):
        shell.run_line_magic("probe_tokens", "raw hello")


def test_probe_sweep_cell_with_test_set(shell, tiny_model_path):
    w = shell.run_cell_magic(
        "probe_sweep",
        f"--model {tiny_model_path} --test X --labels y --cv 3 --classifier ridge -o sw",
        CELL,
    )
    from lmprobe_jupyter.jupyter.widgets import SweepCurveWidget

    assert isinstance(w, SweepCurveWidget)
    result = shell.user_ns["sw"]
    assert w.layers == [0, 1, 2, 3]  # --layers all on the 4-layer model
    assert w.test_scores == [result.test_scores[layer] for layer in range(4)]
    assert w.train_scores == pytest.approx(
        [result.cv_scores[layer] for layer in range(4)], nan_ok=True
    )
    assert (w.best_layer, w.best_by) == result.best_choice()
    assert w.best_layer == result.best_layer() and w.best_by == "cv"
    assert result.probes[0].classifier == "ridge"
    w.selected_layer = 3  # a click on the curve
    assert result.selected_layer == 3 and result.selected_probe is result.probes[3]


def test_probe_sweep_from_variables_cv_only(shell, tiny_model_path):
    w = shell.run_line_magic(
        "probe_sweep", f"--positive pos --negative neg --model {tiny_model_path} --layers 1,3"
    )
    assert w.layers == [1, 3] and w.test_scores == [] and len(w.train_scores) == 2
    assert "sweep" in shell.user_ns
    with pytest.raises(UsageError, match="with --cv 0 the sweep needs --test VAR --labels VAR"):
        shell.run_line_magic("probe_sweep", "--positive pos --negative neg --cv 0")


def test_probe_monitor_scores_generated_tokens(dog, shell):
    from lmprobe_jupyter.jupyter.monitor_widget import MonitorWidget

    w = shell.run_line_magic(
        "probe_monitor", "dog Fetch the --max-new-tokens 4 --threshold 0.4 -o mon"
    )
    mon = shell.user_ns["mon"]
    assert isinstance(w, MonitorWidget) and w.result is mon
    assert len(mon.tokens) == 4 and w.tokens == mon.tokens
    assert w.scores == pytest.approx(np.asarray(mon.scores, dtype=float).tolist())
    assert w.threshold == 0.4 == mon.threshold and w.status == "done"
    with pytest.raises(UsageError, match="no prompt"):
        shell.run_line_magic("probe_monitor", "dog")
    with pytest.raises(UsageError, match="probe_monitor: max_new_tokens=0 must be a positive int"):
        shell.run_line_magic("probe_monitor", "dog hi --max-new-tokens 0")


def test_probe_sweep_and_monitor_with_a_sequence_classifier(shell, tiny_model_path):
    from lmprobe_jupyter.engine.probes.sequence_probes import MILProbe

    w = shell.run_cell_magic(
        "probe_sweep",
        f"--model {tiny_model_path} --layers 1,3 --classifier mil "
        "--classifier-kwargs window=2,max_epochs=4 --cv 3 -o sw",
        CELL,
    )
    result = shell.user_ns["sw"]
    assert w.layers == [1, 3] and isinstance(result.probes[3].classifier_, MILProbe)
    assert w.train_scores == pytest.approx([result.cv_scores[1], result.cv_scores[3]])
    assert (w.best_layer, w.best_by) == result.best_choice()
    shell.user_ns["seq"] = result.probes[3]
    # a bare prompt: after the chat template's newline the tiny model writes newlines,
    # which merge into one token when the text is re-tokenized
    mon_widget = shell.run_line_magic(
        "probe_monitor", "seq Fetch the --max-new-tokens 3 --chat-template false -o m"
    )
    mon = shell.user_ns["m"]
    assert mon.score_kind == "prefix" and len(mon.scores) == 3
    assert mon.scores[-1] == pytest.approx(
        result.probes[3].predict_proba([mon.prompt_text + mon.text])[0, 1], abs=1e-5
    )
    assert mon_widget.scores == pytest.approx(list(mon.scores))


@pytest.mark.real_model
def test_default_bundled_model_learns_dog_vs_cat(ip):
    """No --model: the magics use the bundled SmolLM2, and the probe finds the concept."""
    cell = "\n".join([*(f"+ {t}" for t in DOG), *(f"- {t}" for t in CAT)])
    card = ip.run_cell_magic("probe_fit", "pet --layers 16 --random-state 42 --device cpu", cell)
    assert card.data["model"] == DEFAULT_MODEL
    assert card.data["train_accuracy"] == 1.0
    ip.user_ns["T"] = [t for t, _ in HELD_OUT]
    ip.user_ns["L"] = [label for _, label in HELD_OUT]
    view = ip.run_line_magic("probe_eval", "pet --test T --labels L")
    assert view.data["accuracy"] >= 0.75
    assert view.data["auroc"] >= 0.8
    toks = ip.run_line_magic("probe_tokens", "pet Fetch the ball, good boy!")
    assert "".join(toks.texts[0]["tokens"]) == "Fetch the ball, good boy!"


def test_load_ext_shows_bare_figures_as_png():
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib.figure import Figure

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "lmprobe_jupyter")
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    data, _ = ip.display_formatter.format(fig)
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_line_magic_takes_a_question(dog, shell, capsys):
    """A trailing ? is part of the text, not IPython's help (input transformer)."""
    result = shell.run_cell("%probe_tokens dog Who's a good boy?")
    assert result.error_in_exec is None and result.error_before_exec is None
    assert isinstance(result.result, TokenHighlightWidget)
    (text,) = result.result.texts
    assert "".join(text["tokens"]).strip() == "Who's a good boy?"
    # the magic alone with ? is still its help
    capsys.readouterr()
    shell.run_cell("%probe_tokens?")
    assert "Per-token score highlights" in capsys.readouterr().out


def test_unload_removes_the_input_transformer(shell):
    mgr = shell.extension_manager
    ours = [t for t in shell.input_transformers_cleanup if getattr(t, "lmprobe_jupyter", False)]
    assert len(ours) == 1
    mgr.unload_extension("lmprobe_jupyter")
    try:
        assert not any(
            getattr(t, "lmprobe_jupyter", False) for t in shell.input_transformers_cleanup
        )
        assert shell.transform_cell("%probe_tokens dog Who?\n") != (
            "get_ipython().run_line_magic('probe_tokens', 'dog Who?')\n"
        )
    finally:
        mgr.load_extension("lmprobe_jupyter")
    assert shell.transform_cell("%probe_tokens dog Who?\n") == (
        "get_ipython().run_line_magic('probe_tokens', 'dog Who?')\n"
    )
    # loading twice keeps one transformer
    from lmprobe_jupyter.jupyter import load_ipython_extension

    load_ipython_extension(shell)
    assert sum(getattr(t, "lmprobe_jupyter", False) for t in shell.input_transformers_cleanup) == 1


class _Raising:
    """Looks like a fitted probe; token_scores raises the error it was given."""

    classifier_ = object()

    def __init__(self, exc):
        self.exc = exc

    def evaluate(self, *a, **k):  # pragma: no cover - never called
        raise AssertionError

    def token_scores(self, texts):
        raise self.exc


def _project_errors():
    from lmprobe_jupyter.engine.cache.errors import CacheReadOnlyError
    from lmprobe_jupyter.engine.extraction.nnsight_backend import NDIFAuthError
    from lmprobe_jupyter.engine.probes.probe import NotFittedError
    from lmprobe_jupyter.engine.sharing.datasets import MissingPromptsError
    from lmprobe_jupyter.engine.sharing.pickles import UntrustedPickleError
    from lmprobe_jupyter.engine.sharing.probe_format import ProbeFormatError, UnsafeFormatError

    return [
        ValueError("pooling='avg' is not one of 'mean', ..."),
        TypeError("layers must be int, got 'x'"),
        FileNotFoundError("no probe at /nope"),
        NotFittedError("this Probe is not fitted yet; call fit first"),
        ProbeFormatError("probe.json: missing format"),
        UnsafeFormatError("classifier of type X is not saved safely"),
        MissingPromptsError("dataset has no prompts for 2 of them"),
        UntrustedPickleError("refusing to unpickle; pass trust_remote_code=True"),
        NDIFAuthError("NDIF refused the API key; set NDIF_API_KEY"),
        CacheReadOnlyError("the cache at /c is read-only; set_cache_dir(...) to write"),
    ]


@pytest.mark.parametrize("exc", _project_errors(), ids=lambda e: type(e).__name__)
def test_every_project_input_error_is_a_one_line_usage_error(shell, capsys, exc):
    shell.user_ns["fake"] = _Raising(exc)
    capsys.readouterr()
    result = shell.run_cell("%probe_tokens fake some text")
    assert isinstance(result.error_in_exec, UsageError)
    first = str(exc).split()[0]
    assert str(result.error_in_exec).startswith(f"probe_tokens: {first}")
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_a_bug_is_not_hidden_as_a_usage_error(shell):
    shell.user_ns["fake"] = _Raising(ZeroDivisionError("bug"))
    result = shell.run_cell("%probe_tokens fake some text")
    assert isinstance(result.error_in_exec, ZeroDivisionError)


def test_cache_clear_reports_removed_entries(dog, shell):
    before = shell.run_line_magic("probe_cache", "").data["entries"]
    assert before >= 6
    view = shell.run_line_magic("probe_cache", "--clear")
    assert view.data["removed"] == before and view.data["entries"] == 0
    assert f"removed {before:,} entries" in view._repr_html_()
    assert repr(view).startswith(f"removed {before:,} entries\n")


def test_probe_monitor_applies_the_chat_template_by_default(dog, shell):
    shell.run_line_magic("probe_monitor", "dog Who's there? --max-new-tokens 2 -o m1")
    on = shell.user_ns["m1"]
    assert on.chat_template is True
    assert "<|im_start|>user\nWho's there?<|im_end|>" in on.prompt_text
    shell.run_line_magic(
        "probe_monitor", "dog Who's there? --max-new-tokens 2 --chat-template false -o m2"
    )
    off = shell.user_ns["m2"]
    assert off.chat_template is False and off.prompt_text == "Who's there?"
    assert "--chat-template" in shell.find_line_magic("probe_monitor").__doc__
