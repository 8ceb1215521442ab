"""Logit lens, tuned lens and "the lens converges by layer L" on the zoo models."""

import json
import os

import numpy as np
import pytest
import torch

from circuitcheck import CircuitAssertionError, CircuitCheckError, tasks
from circuitcheck import lens as L
from circuitcheck.claims.lens import DEFAULT_MAX_KL, assert_logit_lens_converges_by, check_logit_lens_converges_by

PROMPT = "a b c d e a b c d e"  # 11 tokens with BOS


@pytest.fixture(scope="module", autouse=True)
def cache_root(tmp_path_factory):
    """Every tuned lens of this module is cached under a temporary CIRCUITCHECK_CACHE_DIR, never in ~/.cache."""
    root = tmp_path_factory.mktemp("circuitcheck-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv(L.CACHE_ENV, str(root))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def tuned_2l(induction_2l, cache_root):
    """The default tuned lens of induction-2l (trained once here, a few seconds)."""
    before = L.TRAINING_RUNS
    lens = L.tuned_lens(induction_2l, seed=0)
    assert not lens.from_cache and L.TRAINING_RUNS == before + 1
    return lens


# --------------------------------------------------------------------------- logit lens


def test_the_last_layer_lens_is_the_model_logits(induction_2l):
    model = induction_2l
    tokens = model.to_tokens(PROMPT)
    last = model.cfg.n_layers - 1
    logits, resid = L.residuals(model, tokens, [last])
    with torch.no_grad():
        lens_logits = L.project(model, resid[last])
    torch.testing.assert_close(lens_logits, logits, atol=1e-5, rtol=1e-5)

    frame = L.logit_lens(model, PROMPT)
    final = frame[frame.layer == last]
    assert final["top1_agrees"].all()
    assert final["kl"].abs().max() < 1e-6
    probs = logits[0].softmax(-1)
    expected = probs.max(-1).values[1:]  # positions 1.. (BOS excluded)
    assert final["p_final_top1"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)


def test_the_logit_lens_table_has_one_row_per_layer_prompt_and_position(induction_2l):
    model = induction_2l
    frame = L.logit_lens(model, PROMPT, k=3, include_embed=True)
    assert len(frame) == 3 * 10  # layers -1, 0, 1; positions 1..10
    assert sorted(frame.layer.unique()) == [-1, 0, 1]
    assert frame.position.min() == 1  # BOS excluded by default
    assert {"layer", "prompt", "position", "token", "top_k", "top_k_probs", "top1", "final_top1", "p_final_top1",
            "top1_agrees", "kl"} <= set(frame.columns)
    row = frame.iloc[0]
    assert len(row.top_k) == 3 and isinstance(row.top_k[0], str) and row.top1 == row.top_k[0]
    assert row.token == "a"
    assert (frame.kl >= 0).all()

    two = L.logit_lens(model, [PROMPT, "b c d e a b c d e a"], positions=[-1])
    assert len(two) == 2 * 2 and set(two.position) == {10} and set(two.prompt) == {0, 1}
    as_tensor = L.logit_lens(model, model.to_tokens(PROMPT), positions=slice(5, None))
    assert sorted(as_tensor.position.unique()) == list(range(5, 11))

    with pytest.raises(ValueError, match="different lengths"):
        L.logit_lens(model, [PROMPT, "a b"])


def test_without_a_tokenizer_the_top_tokens_are_ids():
    from conftest import build_native

    model = build_native(n_layers=2, d_model=16, n_heads=2, d_vocab=20, seed=3)
    frame = L.logit_lens(model, torch.tensor([[1, 2, 3, 4]]))
    assert len(frame) == 2 * 4  # no BOS to exclude
    assert all(isinstance(t, int) for t in frame.iloc[0].top_k)
    assert frame[frame.layer == 1].top1_agrees.all()


# --------------------------------------------------------------------------- convergence claims


def test_a_claim_about_the_last_layer_is_refused_it_cannot_fail(induction_2l):
    # the last layer's lens is the model's output (test_the_last_layer_lens_is_the_model_logits): KL 0 whatever the model
    with pytest.raises(ValueError, match="layer=1 is the last layer of zoo:induction-2l .*so the claim cannot fail"):
        assert_logit_lens_converges_by(1, prompt=PROMPT, model=induction_2l)
    with pytest.raises(ValueError, match="cannot fail"):
        assert_logit_lens_converges_by(1, prompt=PROMPT, model=induction_2l, lens="tuned")


def test_a_claim_that_holds_records_what_it_measured(induction_2l):
    # layer 0 is about 4 nats from the output: generous thresholds make the claim hold
    result = assert_logit_lens_converges_by(0, prompt=PROMPT, model=induction_2l, max_kl=100.0, min_agreement=0.0)
    table = result.evidence["lens_by_layer"]
    assert result.passed and result.kind == "logit_lens"
    assert result.claim == "the logit lens converges by layer 0"
    assert result.metric == "KL(final || lens)" and result.max_value == 100.0
    assert result.decided_on.startswith("upper bound of the worst layer >= 0")
    assert result.n == 10 and result.value == pytest.approx(table["mean_kl"].max()) and result.value > 1.0
    assert result.ci_high == pytest.approx(table["kl_ci_high"].max()) and result.parameters["min_agreement"] == 0.0
    assert result.parameters["converges_by"] == 0

    task = tasks.induction(induction_2l, n_prompts=8)
    on_task = assert_logit_lens_converges_by(0, task=task, model=induction_2l, max_kl=100.0, min_agreement=0.0)
    assert on_task.n == 8 * 40 and on_task.parameters["task"] == "induction"


def test_a_claim_at_layer_0_fails_naming_the_first_converging_layer(induction_2l):
    with pytest.raises(CircuitAssertionError) as info:
        assert_logit_lens_converges_by(0, prompt=PROMPT, model=induction_2l)
    message = str(info.value)
    result = info.value.result
    table = result.evidence["lens_by_layer"]
    assert message.startswith("claim failed: the logit lens converges by layer 0 (model zoo:induction-2l)")
    assert "converges by layer 1 instead" in message
    assert "decided on the upper bound of the worst layer >= 0 (L0; and top-1 agreement's lower bound)" in message
    assert "not converged at layer 0" in message and "furthest positions at layer 0" in message
    # layer 0 of induction-2l is far from the output: most top-1s differ, KL of nats
    assert table.loc[0, "top1_agreement"] < 0.5 and table.loc[0, "mean_kl"] > 1.0
    assert result.value == pytest.approx(table["mean_kl"].max())
    assert result.ci_high == pytest.approx(table["kl_ci_high"].max()) and result.ci_low < result.value < result.ci_high
    assert list(table.columns[:4]) == ["mean_kl", "max_kl", "top1_agreement", "mean_p_final_top1"]
    assert len(result.evidence["lens_top_k"]) == 2 * 10


def test_a_lens_that_never_converges_says_so(induction_2l):
    d = induction_2l.cfg.d_model
    broken = L.TunedLens(d, 2, {1: (torch.zeros(d, d), torch.zeros(d))}, settings=L.TunedLensSettings(), weights_hash="x")
    result = check_logit_lens_converges_by(1, prompt=PROMPT, model=induction_2l, lens=broken)
    assert not result.passed and result.parameters["converges_by"] is None
    assert "never converges" in result.message()


def test_max_kl_is_part_of_the_decision(induction_2l):
    # with a generous KL the claim still needs the top-1 tokens to agree
    result = check_logit_lens_converges_by(0, prompt=PROMPT, model=induction_2l, max_kl=100.0)
    assert not result.passed and "top-1 agrees at 20% of positions (lower bound" in result.message()
    # positions where layer 0 already agrees (the lens's top-1 is the final one) and a loose KL: passes
    frame = L.logit_lens(induction_2l, PROMPT)
    agreeing = frame[(frame.layer == 0) & frame.top1_agrees].position.tolist()
    assert agreeing
    passed = check_logit_lens_converges_by(0, prompt=PROMPT, model=induction_2l, positions=agreeing, max_kl=100.0)
    assert passed.passed and passed.parameters["converges_by"] == 0


def test_without_inputs_the_task_comes_from_the_test(induction_2l):
    with pytest.raises(CircuitCheckError, match="no task"):
        check_logit_lens_converges_by(0, model=induction_2l)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"layer": 2}, ValueError, "valid layers are 0 to 1"),
        ({"layer": -1}, ValueError, "valid layers are 0 to 1"),
        ({"layer": 0, "positions": [11]}, ValueError, "position 11 is out of range: the inputs have 11 positions, valid are 0 to 10"),
        ({"layer": 0, "positions": []}, ValueError, "selects no position"),
        ({"layer": 0, "max_kl": 0}, ValueError, "max_kl=0 is not valid: it must be a positive number"),
        ({"layer": 0, "max_kl": -0.5}, ValueError, "max_kl=-0.5 is not valid"),
        ({"layer": 0, "max_kl": float("nan")}, ValueError, "max_kl=nan is not valid"),
        ({"layer": 0, "lens": "tunned"}, ValueError, "lens='tunned' is not valid"),
        ({"layer": 0, "task": "induction"}, CircuitCheckError, "give one of prompt=, tokens= or task="),
        ({"layer": 0, "k": 0}, ValueError, "k=0 is not valid"),
    ],
)
def test_bad_inputs_are_clear_errors(induction_2l, kwargs, error, message):
    kwargs = {"prompt": PROMPT, **kwargs}
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_logit_lens_converges_by(model=induction_2l, **kwargs)


def test_results_are_json_safe(induction_2l):
    for max_kl in (0.1, 100.0):  # failed and held
        result = check_logit_lens_converges_by(0, prompt=PROMPT, model=induction_2l, max_kl=max_kl, min_agreement=0.0)
        text = json.dumps(result.to_dict(), allow_nan=False)
        assert '"lens_by_layer"' in text and '"lens_top_k"' in text
        assert len(result.to_frame()) == 1


# --------------------------------------------------------------------------- tuned lens


def test_the_tuned_lens_beats_the_logit_lens_before_the_last_layer(tuned_2l):
    report = tuned_2l.report()
    assert list(report.index) == [-1, 0, 1]
    before_last = report.loc[[-1, 0]]
    assert (before_last["tuned_lens_kl"] < before_last["logit_lens_kl"]).all()
    # the last layer needs no translator: both lenses are the model's output there
    assert report.loc[1, "tuned_lens_kl"] == pytest.approx(0.0, abs=1e-6)
    assert report.loc[1, "logit_lens_kl"] == pytest.approx(0.0, abs=1e-6)


def test_a_second_call_loads_the_cached_lens_without_training(induction_2l, tuned_2l, cache_root):
    runs = L.TRAINING_RUNS
    mtime = os.stat(tuned_2l.path).st_mtime_ns
    again = L.tuned_lens(induction_2l, seed=0)
    assert again.from_cache and L.TRAINING_RUNS == runs
    assert os.stat(tuned_2l.path).st_mtime_ns == mtime and again.path == tuned_2l.path
    for layer, (A, b) in tuned_2l.translators.items():
        torch.testing.assert_close(again.translators[layer][0], A, atol=0, rtol=0)
        torch.testing.assert_close(again.translators[layer][1], b, atol=0, rtol=0)
    assert again.report().equals(tuned_2l.report())
    # the cache lives in $CIRCUITCHECK_CACHE_DIR/tuned_lens and nothing is written beside it
    assert tuned_2l.path.parent == cache_root / "tuned_lens" == L.cache_dir()
    assert {p.name for p in cache_root.iterdir()} == {"tuned_lens"}
    assert all(p.suffix == ".safetensors" for p in (cache_root / "tuned_lens").iterdir())


def test_other_settings_are_another_cache_entry(induction_2l, tuned_2l):
    assert L.cache_path(induction_2l, L.TunedLensSettings(seed=1)) != tuned_2l.path
    assert L.cache_path(induction_2l, L.TunedLensSettings(seed=0)) == tuned_2l.path


def test_the_cache_key_changes_with_the_weights(tmp_path):
    from conftest import build_native

    one = build_native(n_layers=2, d_model=16, n_heads=2, d_vocab=20, seed=0)
    two = build_native(n_layers=2, d_model=16, n_heads=2, d_vocab=20, seed=1)
    same = build_native(n_layers=2, d_model=16, n_heads=2, d_vocab=20, seed=0)
    settings = L.TunedLensSettings()
    assert L.weights_hash(one) == L.weights_hash(same) != L.weights_hash(two)
    assert L.cache_path(one, settings) != L.cache_path(two, settings)
    before = L.weights_hash(one)
    with torch.no_grad():
        next(iter(one.parameters())).add_(1e-3)  # an in-place edit, as a training step would make
    assert L.weights_hash(one) != before

    small = dict(n_prompts=8, seq_len=8, max_steps=20, directory=tmp_path)
    first = L.tuned_lens(one, tokens=torch.randint(0, 20, (8, 8), generator=torch.Generator().manual_seed(0)), **small)
    trained = L.TRAINING_RUNS
    other = L.tuned_lens(two, tokens=torch.randint(0, 20, (8, 8), generator=torch.Generator().manual_seed(0)), **small)
    assert not other.from_cache and L.TRAINING_RUNS == trained + 1 and other.path != first.path


def test_training_is_seeded_and_deterministic(induction_2l):
    settings = dict(n_prompts=8, seq_len=8, max_steps=20, cache=False)
    a = L.tuned_lens(induction_2l, seed=5, **settings)
    b = L.tuned_lens(induction_2l, seed=5, **settings)
    assert a.path is None and b.path is None and not a.from_cache
    for layer in a.translators:
        torch.testing.assert_close(a.translators[layer][0], b.translators[layer][0], atol=0, rtol=0)


def test_a_tuned_lens_on_a_task_holds_out_prompts(induction_2l):
    task = tasks.induction(induction_2l, n_prompts=8, seq_len=10)
    lens = L.tuned_lens(induction_2l, task=task, max_steps=20, cache=False)
    assert lens.settings.data.startswith("tokens:")
    report = lens.report()
    assert report["n_heldout_positions"].iloc[0] == 2 * 20 and report["n_train_positions"].iloc[0] == 6 * 20
    assert (report["tuned_lens_kl"] <= report["logit_lens_kl"]).all()  # early stopping keeps the best, identity included
    with pytest.raises(TypeError, match="unknown tuned-lens setting"):
        L.tuned_lens(induction_2l, data="random")


def test_the_tuned_lens_claim(induction_2l, tuned_2l):
    passed = assert_logit_lens_converges_by(0, prompt=PROMPT, model=induction_2l, lens="tuned", max_kl=100.0, min_agreement=0.0)
    assert passed.claim == "the tuned lens converges by layer 0"
    assert passed.parameters["tuned_lens_from_cache"] is True
    assert passed.parameters["tuned_lens_file"] == tuned_2l.path.name
    failed = check_logit_lens_converges_by(0, prompt=PROMPT, model=induction_2l, lens=tuned_2l)
    assert not failed.passed and "the tuned lens converges by layer 1 instead" in failed.message()
    logit = check_logit_lens_converges_by(0, prompt=PROMPT, model=induction_2l)
    # on the claim's own prompt the tuned lens is closer to the output at layer 0 than the logit lens
    assert failed.evidence["lens_by_layer"].loc[0, "mean_kl"] < logit.evidence["lens_by_layer"].loc[0, "mean_kl"]
    json.dumps(failed.to_dict(), allow_nan=False)


def test_a_lens_for_another_model_is_refused(induction_1l, tuned_2l):
    with pytest.raises(CircuitCheckError, match="trained for a model with d_model=64 and 2 layers"):
        check_logit_lens_converges_by(0, prompt=PROMPT, model=induction_1l, lens=tuned_2l)


# --------------------------------------------------------------------------- decisions on intervals


def _by_hand(run, layer):
    """Per-prompt mean KL and top-1 agreement of one layer, computed from the run's tensors here."""
    i = run.layers.index(layer)
    return run.kl[i].double().mean(dim=1).numpy(), run.agrees[i].double().mean(dim=1).numpy()


def test_agreement_is_decided_on_its_lower_bound_and_kl_on_its_upper_bound(induction_2l):
    task = tasks.induction(induction_2l, n_prompts=8)
    result = check_logit_lens_converges_by(0, task=task, model=induction_2l)
    table = result.evidence["lens_by_layer"]
    run = L.measure(induction_2l, task.clean, list(range(1, task.clean.shape[1])), [0, 1])
    kl, agreement = _by_hand(run, 0)
    # the intervals are bootstraps over prompts: resampled here, independently of the claim's code
    rng = np.random.default_rng(11)
    index = rng.integers(0, 8, size=(4000, 8))
    kl_high = np.quantile(kl[index].mean(axis=1), 0.975)
    agreement_low = np.quantile(agreement[index].mean(axis=1), 0.025)
    assert table.loc[0, "kl_ci_high"] == pytest.approx(kl_high, rel=0.05)
    assert table.loc[0, "agreement_ci_low"] == pytest.approx(agreement_low, abs=0.03)
    # a tolerance on agreement: 100% is no longer required, the lower bound must clear min_agreement
    lenient = check_logit_lens_converges_by(0, task=task, model=induction_2l, max_kl=100.0,
                                            min_agreement=max(0.0, float(table.loc[0, "agreement_ci_low"]) - 0.01))
    strict = check_logit_lens_converges_by(0, task=task, model=induction_2l, max_kl=100.0,
                                           min_agreement=min(1.0, float(table.loc[0, "agreement_ci_low"]) + 0.01))
    assert lenient.passed and not strict.passed
    # a KL threshold between the mean and the upper bound fails: the bound decides, not the mean
    between = float((table.loc[0, "mean_kl"] + table.loc[0, "kl_ci_high"]) / 2)
    on_mean = check_logit_lens_converges_by(0, task=task, model=induction_2l, max_kl=between, min_agreement=0.0)
    assert on_mean.value < between and not on_mean.passed
    assert "upper bound" in on_mean.message() and on_mean.p_value > 0.025


def test_one_prompt_is_resampled_over_its_positions_and_says_so(induction_2l):
    result = check_logit_lens_converges_by(0, prompt=PROMPT, model=induction_2l)
    assert "bootstrap over the 10 positions of the one prompt (not independent" in result.message()
    assert result.ci_low is not None and result.p_value is not None


def test_bad_agreement_thresholds_are_clear_errors(induction_2l):
    with pytest.raises(ValueError, match="min_agreement=1.5 is not valid"):
        check_logit_lens_converges_by(1, prompt=PROMPT, model=induction_2l, min_agreement=1.5)
