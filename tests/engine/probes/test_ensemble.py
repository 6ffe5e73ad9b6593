"""ProbeEnsemble: voting, weights, bootstraps, shared extraction and the saved folder."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lmtest_helpers import NEG, POS

from lmprobe_jupyter import Extractor, NotFittedError, Probe, ProbeEnsemble

TEXTS = ["alpha omega beta", "omega omega alpha gamma delta", "beta", "sigma alpha", "delta"]
LABELS = [1] * 5 + [0] * 5


@pytest.fixture
def three(tiny_probe):
    return [
        tiny_probe(classifier="logistic_regression", classifier_kwargs={"C": 0.5}),
        tiny_probe(classifier="mass_mean"),
        tiny_probe(classifier="ensemble", classifier_kwargs={"C_values": [0.1, 1.0]}),
    ]


def test_soft_voting_is_the_weighted_mean_of_member_probabilities(three):
    weights = [1.0, 2.0, 3.0]
    ens = ProbeEnsemble(three, weights=weights).fit(POS, NEG)
    alone = [p.fit(POS, NEG).predict_proba(TEXTS) for p in three]
    want = sum(w * p for w, p in zip(weights, alone)) / sum(weights)
    np.testing.assert_allclose(ens.predict_proba(TEXTS), want, atol=1e-10)
    np.testing.assert_array_equal(ens.predict(TEXTS), ens.classes_[want.argmax(1)])
    np.testing.assert_allclose(ens.weights_, np.array(weights) / 6)
    assert ens.score(TEXTS, [1, 0, 1, 1, 0]) == np.mean(ens.predict(TEXTS) == [1, 0, 1, 1, 0])


def test_fit_fits_the_members_themselves_from_one_extraction(tiny_probe):
    p1, p2 = tiny_probe(), tiny_probe(classifier="mass_mean", layers=3)
    before = Extractor.forward_calls
    ens = ProbeEnsemble([p1, p2], weights=[1, 3]).fit(POS, NEG)
    assert Extractor.forward_calls - before == math.ceil(10 / 8)  # shared, not one per member
    assert ens.probes_[0] is p1 and ens.probes_[1] is p2
    want = (p1.predict_proba(TEXTS) + 3 * p2.predict_proba(TEXTS)) / 4
    np.testing.assert_allclose(ens.predict_proba(TEXTS), want, atol=1e-12)
    # the members are fitted as if alone
    alone = tiny_probe(classifier="mass_mean", layers=3).fit(POS, NEG)
    np.testing.assert_allclose(p2.predict_proba(TEXTS), alone.predict_proba(TEXTS), atol=1e-6)


def test_a_probe_listed_twice_is_fitted_once_and_weighs_twice(tiny_probe, monkeypatch):
    p, q = tiny_probe(), tiny_probe(classifier="mass_mean")
    fits = []
    real_fit = type(p).fit

    def counting_fit(self, *args, **kwargs):
        fits.append(self)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(type(p), "fit", counting_fit)
    ens = ProbeEnsemble([p, q, p]).fit(POS, NEG)
    assert len(fits) == 2 and fits[0] is p and fits[1] is q
    want = (2 * p.predict_proba(TEXTS) + q.predict_proba(TEXTS)) / 3
    np.testing.assert_allclose(ens.predict_proba(TEXTS), want, atol=1e-12)


def test_cloning_the_ensemble_leaves_the_callers_probes_unfitted(three):
    from sklearn.base import clone

    fitted = clone(ProbeEnsemble(three)).fit(POS, NEG)
    assert all(hasattr(m, "pipeline_") for m in fitted.probes_)
    assert not any(m is p for m, p in zip(fitted.probes_, three))
    for p in three:
        with pytest.raises(NotFittedError, match="not fitted"):
            p.predict_proba(TEXTS)


def test_bootstrap_owns_clones_and_leaves_the_base_probe_alone(tiny_probe):
    base = tiny_probe().fit(POS[:3], NEG[:3])
    before = base.predict_proba(TEXTS)
    ens = ProbeEnsemble.bootstrap(base, n_resamples=3, random_state=0)
    assert len({id(m) for m in ens.probes}) == 3 and all(m is not base for m in ens.probes)
    assert ens.probes[0].get_params() == base.get_params()
    ens.fit(POS, NEG)
    assert ens.probes_ == list(ens.probes)  # the clones it owns are the fitted members
    np.testing.assert_array_equal(base.predict_proba(TEXTS), before)  # base untouched


def test_resampling_needs_distinct_member_objects(tiny_probe):
    p = tiny_probe()
    with pytest.raises(ValueError, match=r"probes\[1\] is the same Probe object as probes\[0\]"):
        ProbeEnsemble([p, p], resample=True).fit(POS, NEG)
    assert not hasattr(p, "pipeline_")  # refused before anything was fitted


def test_members_sharing_model_and_layers_run_one_forward_pass_per_prompt(three):
    batches = math.ceil(len(POS + NEG) / 8)
    before = Extractor.forward_calls
    ens = ProbeEnsemble(three).fit(POS, NEG)
    assert Extractor.forward_calls - before == batches  # not 3 * batches
    before = Extractor.forward_calls
    ens.predict_proba(TEXTS)
    assert Extractor.forward_calls - before == math.ceil(len(TEXTS) / 8)


def test_hard_voting_ties_go_to_the_lower_class(three, monkeypatch):
    ens = ProbeEnsemble(three[:2], voting="hard").fit(POS, NEG)
    votes = {0: np.array([1, 0, 1]), 1: np.array([0, 0, 1])}
    for i, m in enumerate(ens.probes_):
        monkeypatch.setattr(m, "predict", lambda prompts, i=i, **kw: votes[i])
    prompts = TEXTS[:3]
    np.testing.assert_array_equal(ens.predict(prompts), [0, 0, 1])
    np.testing.assert_allclose(ens.predict_proba(prompts), [[0.5, 0.5], [1, 0], [0, 1]])
    ens.weights_ = np.array([2 / 3, 1 / 3])  # as fit sets it for weights=[2, 1]
    np.testing.assert_array_equal(ens.predict(prompts), [1, 0, 1])


def test_hard_voting_is_the_majority_of_member_predictions(tiny_probe):
    members = [
        tiny_probe(classifier="ridge"),
        tiny_probe(classifier="mass_mean"),
        tiny_probe(layers=1),
    ]
    ens = ProbeEnsemble(members, voting="hard").fit(POS, NEG)
    preds = np.stack([m.predict(TEXTS) for m in ens.probes_])
    np.testing.assert_array_equal(ens.predict(TEXTS), (preds.sum(0) >= 2).astype(int))
    np.testing.assert_allclose(ens.predict_proba(TEXTS)[:, 1], preds.mean(0))


def test_string_classes_tie_to_the_lower_class(tiny_probe, monkeypatch):
    ens = ProbeEnsemble([tiny_probe(), tiny_probe(classifier="mass_mean")], voting="hard")
    ens.fit(POS + NEG, labels=["dog"] * 5 + ["cat"] * 5)
    assert list(ens.classes_) == ["cat", "dog"]
    monkeypatch.setattr(ens.probes_[0], "predict", lambda prompts, **kw: np.array(["dog"]))
    monkeypatch.setattr(ens.probes_[1], "predict", lambda prompts, **kw: np.array(["cat"]))
    assert list(ens.predict(["x"])) == ["cat"]


def test_ridge_with_soft_voting_says_use_hard(tiny_probe):
    ens = ProbeEnsemble([tiny_probe(), tiny_probe(classifier="ridge")])
    with pytest.raises(ValueError, match=r"probes\[1\] uses classifier='ridge'.*voting=\"hard\""):
        ens.fit(POS, NEG)


def test_identical_members_have_zero_prediction_std(tiny_probe):
    ens = ProbeEnsemble([tiny_probe(), tiny_probe(), tiny_probe()]).fit(POS, NEG)
    np.testing.assert_allclose(ens.prediction_std(TEXTS), 0.0, atol=1e-12)


def test_prediction_std_is_the_std_of_members_positive_probability(three):
    ens = ProbeEnsemble(three).fit(POS, NEG)
    pos = np.stack([m.predict_proba(TEXTS)[:, 1] for m in ens.probes_])
    np.testing.assert_allclose(ens.prediction_std(TEXTS), pos.std(0), atol=1e-12)


def test_multiclass_soft_voting(tiny_probe):
    prompts = POS + NEG + ["gamma gamma", "gamma zeta", "zeta gamma gamma", "gamma"]
    y = [1] * 5 + [0] * 5 + [2] * 4
    ens = ProbeEnsemble([tiny_probe(), tiny_probe(classifier="mass_mean")]).fit(prompts, labels=y)
    want = np.mean([m.predict_proba(TEXTS) for m in ens.probes_], axis=0)
    np.testing.assert_allclose(ens.predict_proba(TEXTS), want)
    assert ens.prediction_std(TEXTS).shape == (len(TEXTS), 3)


def test_from_configs_shares_keywords(tiny_model_path):
    ens = ProbeEnsemble.from_configs(
        model=tiny_model_path,
        configs=[{"classifier": "logistic_regression"}, {"classifier": "mass_mean", "layers": 1}],
        voting="hard",
        layers=2,
        device="cpu",
        random_state=0,
    )
    assert ens.voting == "hard"
    assert [(p.model, p.layers, p.classifier) for p in ens.probes] == [
        (tiny_model_path, 2, "logistic_regression"),
        (tiny_model_path, 1, "mass_mean"),
    ]
    ens.fit(POS, NEG)
    assert ens.score(POS + NEG, LABELS) == 1.0
    with pytest.raises(ValueError, match="configs must be a non-empty list of dicts"):
        ProbeEnsemble.from_configs(model=tiny_model_path, configs=[])


def test_bootstrap_fits_members_on_resamples_with_one_extraction(tiny_probe):
    before = Extractor.forward_calls
    ens = ProbeEnsemble.bootstrap(tiny_probe(), n_resamples=4, random_state=0).fit(POS, NEG)
    assert Extractor.forward_calls - before == math.ceil(10 / 8)
    assert len(ens.probes_) == 4 and ens.resample
    idx = ens.resample_indices_
    assert all(len(i) == 10 for i in idx)
    assert len({tuple(np.sort(i)) for i in idx}) == 4  # four different resamples
    again = ProbeEnsemble.bootstrap(tiny_probe(), n_resamples=4, random_state=0).fit(POS, NEG)
    for a, b in zip(idx, again.resample_indices_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ens.predict_proba(TEXTS), again.predict_proba(TEXTS))


def test_bootstrap_with_groups_resamples_whole_groups(tiny_probe):
    groups = [0, 0, 1, 1, 2, 3, 3, 4, 4, 5]
    ens = ProbeEnsemble.bootstrap(tiny_probe(), n_resamples=5, random_state=1)
    ens.fit(POS, NEG, groups=groups)
    g = np.array(groups)
    for idx in ens.resample_indices_:
        for group in np.unique(g):
            members = np.flatnonzero(g == group)
            counts = [int(np.sum(idx == i)) for i in members]
            assert len(set(counts)) == 1  # a group is drawn whole, or not at all
    with pytest.raises(ValueError, match="got 3 groups for 10 training prompts"):
        ProbeEnsemble.bootstrap(tiny_probe(), n_resamples=2).fit(POS, NEG, groups=[0, 1, 2])
    with pytest.raises(ValueError, match="groups= only matters for bootstrap ensembles"):
        ProbeEnsemble([tiny_probe(), tiny_probe()]).fit(POS, NEG, groups=groups)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"voting": "average"}, ValueError, r"voting='average' is not one of 'soft', 'hard'"),
        ({"weights": [1.0]}, ValueError, r"weights=\[1.0\] must be 2 non-negative numbers"),
        ({"weights": [1.0, -1.0]}, ValueError, "non-negative"),
    ],
    ids=["voting", "weights-length", "weights-sign"],
)
def test_bad_parameters(tiny_probe, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ProbeEnsemble([tiny_probe(), tiny_probe()], **kwargs).fit(POS, NEG)


def test_bad_members_and_unfitted_use(tiny_probe):
    with pytest.raises(TypeError, match=r"probes\[1\] is a str"):
        ProbeEnsemble([tiny_probe(), "probe"]).fit(POS, NEG)
    with pytest.raises(ValueError, match="non-empty list"):
        ProbeEnsemble([]).fit(POS, NEG)
    with pytest.raises(ValueError, match="not fitted yet"):
        ProbeEnsemble([tiny_probe()]).predict(TEXTS)
    with pytest.raises(ValueError, match="n_resamples=1 must be an int >= 2"):
        ProbeEnsemble.bootstrap(tiny_probe(), n_resamples=1)


def test_sklearn_params_round_trip(three):
    from sklearn.base import clone

    ens = ProbeEnsemble(three, weights=[1, 1, 2], voting="hard")
    copy = clone(ens)
    assert copy.get_params(deep=False)["weights"] == [1, 1, 2] and copy.voting == "hard"
    assert copy.set_params(voting="soft").voting == "soft"
    with pytest.raises(ValueError, match="'vote' is not a ProbeEnsemble parameter"):
        ens.set_params(vote="soft")


def test_save_and_load_round_trip_without_pickle(three, tmp_path):
    ens = ProbeEnsemble(three, weights=[1, 2, 3]).fit(POS, NEG)
    path = ens.save(tmp_path / "ens")
    names = sorted(p.name for p in path.iterdir())
    assert names == ["ensemble.json", "member_00", "member_01", "member_02"]
    assert not list(path.rglob("*.pkl"))
    back = ProbeEnsemble.load(path)
    assert back.voting == "soft" and back.weights == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(back.predict_proba(TEXTS), ens.predict_proba(TEXTS))
    np.testing.assert_allclose(back.prediction_std(TEXTS), ens.prediction_std(TEXTS))
    ens.save(path)  # overwriting a saved ensemble is fine


def test_load_refuses_bad_folders(three, tmp_path):
    import json

    from lmprobe_jupyter.engine.sharing.probe_format import ProbeFormatError

    path = ProbeEnsemble(three[:2]).fit(POS, NEG).save(tmp_path / "ens")
    meta = json.loads((path / "ensemble.json").read_text())
    (path / "ensemble.json").write_text(json.dumps({**meta, "members": ["../elsewhere"]}))
    with pytest.raises(ProbeFormatError, match="bad member folder name '../elsewhere'"):
        ProbeEnsemble.load(path)
    (path / "ensemble.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ProbeFormatError, match="ensemble format version 99 .* upgrade"):
        ProbeEnsemble.load(path)
    with pytest.raises(FileNotFoundError, match="no saved ensemble"):
        ProbeEnsemble.load(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="is not a saved ensemble"):
        ProbeEnsemble(three[:2]).fit(POS, NEG).save(tmp_path / "other")


def _user_files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (p.name == "README.md" or ".git" in p.parts)
    }


def test_save_over_an_ensemble_keeps_other_files_and_drops_old_members(three, tmp_path):
    path = ProbeEnsemble(three).fit(POS, NEG).save(tmp_path / "ens")
    (path / "README.md").write_text("# my ensemble")
    (path / ".git").mkdir()
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main")
    before = _user_files(path)
    two = ProbeEnsemble(three[:2], weights=[1, 3]).fit(POS, NEG)
    two.save(path)
    assert (
        _user_files(path)
        == before
        == {
            ".git/HEAD": "ref: refs/heads/main",
            "README.md": "# my ensemble",
        }
    )
    members = sorted(p.name for p in path.iterdir() if p.name.startswith("member_"))
    assert members == ["member_03", "member_04"]  # the old three are gone
    back = ProbeEnsemble.load(path)
    assert len(back) == 2 and back.weights == [1.0, 3.0]
    np.testing.assert_allclose(back.predict_proba(TEXTS), two.predict_proba(TEXTS))
    ProbeEnsemble(three).fit(POS, NEG).save(path)  # and back: the freed names are reused
    assert sorted(p.name for p in path.iterdir()) == [
        ".git",
        "README.md",
        "ensemble.json",
        "member_00",
        "member_01",
        "member_02",
    ]
    assert len(ProbeEnsemble.load(path)) == 3 and _user_files(path) == before


def test_save_into_a_folder_that_is_not_an_ensemble_needs_overwrite(three, tmp_path):
    folder = tmp_path / "repo"
    (folder / ".git").mkdir(parents=True)
    (folder / "README.md").write_text("# notes")
    ens = ProbeEnsemble(three[:2]).fit(POS, NEG)
    with pytest.raises(
        FileExistsError, match=r"not a saved ensemble \(it holds \.git, README\.md\).*overwrite"
    ):
        ens.save(folder)
    ens.save(folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [
        ".git",
        "README.md",
        "ensemble.json",
        "member_00",
        "member_01",
    ]
    assert (folder / "README.md").read_text() == "# notes"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "ensemble.json").write_text('{"someone": "else"}')
    with pytest.raises(FileExistsError, match="ensemble.json that is not a saved lmprobe"):
        ens.save(tmp_path / "foreign")
    assert (tmp_path / "foreign" / "ensemble.json").read_text() == '{"someone": "else"}'
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        ens.save(tmp_path / "afile")


@pytest.fixture
def saved_pair(three, tmp_path):
    import json

    path = ProbeEnsemble(three[:2]).fit(POS, NEG).save(tmp_path / "ens")
    meta = json.loads((path / "ensemble.json").read_text())

    def edit(**changes):
        (path / "ensemble.json").write_text(json.dumps({**meta, **changes}))
        return path

    return edit


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"format_version": 0}, "format_version 0, which no lmprobe-jupyter ever wrote"),
        ({"format_version": -7}, "format_version -7, which no lmprobe-jupyter ever wrote"),
        ({"format_version": "1"}, "invalid format_version '1'"),
        ({"format_version": True}, "invalid format_version True"),
        ({"format": "lmprobe-jupyter.probe"}, "is not an lmprobe-jupyter ensemble"),
        ({"members": ["../x"]}, "bad member folder name '../x'"),
        ({"members": ["member_00/../../x"]}, "bad member folder name"),
        ({"members": ["/tmp/member_00"]}, "bad member folder name"),
        ({"members": ["member_00", "member_00"]}, "lists a member folder twice"),
        ({"members": [f"member_{i:02d}" for i in range(5000)]}, "lists 5,000 members"),
        ({"members": []}, "lists no members"),
        ({"n_train": "many"}, "invalid n_train 'many'"),
    ],
    ids=[
        "version-0",
        "version-negative",
        "version-string",
        "version-bool",
        "wrong-format",
        "parent-member",
        "nested-member",
        "absolute-member",
        "duplicate-member",
        "too-many-members",
        "no-members",
        "bad-n-train",
    ],
)
def test_load_refuses_malformed_ensemble_json(saved_pair, changes, match):
    from lmprobe_jupyter.engine.sharing.probe_format import ProbeFormatError

    with pytest.raises(ProbeFormatError, match=match):
        ProbeEnsemble.load(saved_pair(**changes))


def test_load_refuses_an_oversized_ensemble_json(saved_pair, monkeypatch):
    from lmprobe_jupyter.engine.sharing import probe_format
    from lmprobe_jupyter.engine.sharing.probe_format import ProbeFormatError

    path = saved_pair()
    monkeypatch.setattr(probe_format, "MAX_JSON_BYTES", 100)
    with pytest.raises(ProbeFormatError, match="bytes; a probe description is at most 100"):
        ProbeEnsemble.load(path)


@pytest.mark.real_model
def test_bootstrap_members_disagree_on_smollm(smollm):
    from lmprobe_jupyter.examples import CAT, DOG, DOG_CAT_TEST

    base = Probe(model=smollm.name, layers=16, random_state=0, device="cpu")
    ens = ProbeEnsemble.bootstrap(base, n_resamples=5, random_state=0).fit(DOG, CAT)
    test = [t for t, _ in DOG_CAT_TEST]
    std = ens.prediction_std(test)
    assert std.shape == (len(test),)
    assert np.all(std > 0) and std.max() < 0.5
    same = ProbeEnsemble([base, base, base]).fit(DOG, CAT)
    np.testing.assert_allclose(same.prediction_std(test), 0.0, atol=1e-12)


@pytest.mark.real_model
def test_members_fitted_by_the_ensemble_work_alone_on_smollm(smollm, tmp_path):
    """lmprobe's workflow: fit an ensemble, compare each member with it, save the best."""
    from sklearn.metrics import roc_auc_score

    from lmprobe_jupyter.examples import CAT, DOG, DOG_CAT_TEST

    p1 = Probe(model=smollm.name, layers=16, random_state=0, device="cpu")
    p2 = Probe(model=smollm.name, layers=16, classifier="mass_mean", random_state=0, device="cpu")
    before = Extractor.forward_calls
    ens = ProbeEnsemble([p1, p2], weights=[1, 3]).fit(DOG, CAT)
    assert Extractor.forward_calls - before == math.ceil(20 / p1.batch_size)  # one pass
    test = [t for t, _ in DOG_CAT_TEST]
    y = [label for _, label in DOG_CAT_TEST]
    want = (p1.predict_proba(test) + 3 * p2.predict_proba(test)) / 4
    np.testing.assert_allclose(ens.predict_proba(test), want, atol=1e-12)
    aurocs = {name: m.evaluate(test, y)["auroc"] for name, m in (("p1", p1), ("p2", p2))}
    aurocs["ensemble"] = ens.evaluate(test, y)["auroc"]
    # 12 held-out prompts: AUROC's CI is wide; each member must still beat chance clearly
    assert min(aurocs.values()) > 0.6, aurocs
    assert aurocs["ensemble"] == pytest.approx(roc_auc_score(y, want[:, 1]))
    best = max((p1, p2), key=lambda m: m.evaluate(test, y)["auroc"])
    best.save(tmp_path / "best")
    again = Probe.load(tmp_path / "best")
    np.testing.assert_allclose(again.predict_proba(test), best.predict_proba(test), atol=1e-6)


def test_members_on_different_layers_of_one_model_share_one_pass(tiny_probe):
    members = [
        tiny_probe(layers=1),
        tiny_probe(layers=3, classifier="mass_mean"),
        tiny_probe(layers=[1, 3]),
    ]
    before = Extractor.forward_calls
    ens = ProbeEnsemble(members).fit(POS, NEG)
    assert Extractor.forward_calls - before == math.ceil(10 / 8)
    assert [m.layers_ for m in ens.probes_] == [[1], [3], [1, 3]]
    before = Extractor.forward_calls
    ens.predict_proba(TEXTS)
    assert Extractor.forward_calls - before == math.ceil(len(TEXTS) / 8)


def test_members_with_different_inference_poolings_predict_right(tiny_probe):
    members = [
        tiny_probe(inference_pooling="mean"),
        tiny_probe(layers=1, inference_pooling="activation:max"),
    ]
    ens = ProbeEnsemble(members).fit(POS, NEG)
    want = np.mean([m.predict_proba(TEXTS) for m in ens.probes_], axis=0)
    np.testing.assert_allclose(ens.predict_proba(TEXTS), want)


def test_members_with_different_poolings_share_one_pass(tiny_probe):
    members = [
        tiny_probe(pooling="last_token"),
        tiny_probe(pooling="mean", layers=1),
        tiny_probe(pooling="activation:max", layers=3, classifier="mass_mean"),
        tiny_probe(pooling="first_token", inference_pooling="mean"),
    ]
    before = Extractor.forward_calls
    ens = ProbeEnsemble(members).fit(POS, NEG)
    assert Extractor.forward_calls - before == math.ceil(10 / 8)  # not one pass per pooling
    assert len({id(m.runtime) for m in ens.probes_}) == 1  # one runtime for the whole ensemble
    before = Extractor.forward_calls
    proba = ens.predict_proba(TEXTS)
    assert Extractor.forward_calls - before == math.ceil(len(TEXTS) / 8)
    alone = [p.fit(POS, NEG).predict_proba(TEXTS) for p in members]
    np.testing.assert_allclose(proba, np.mean(alone, axis=0), atol=1e-6)
