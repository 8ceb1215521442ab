"""Every batched result equals TransformerLens's one-forward-per-patch result (fp32, 1e-4)."""

import pytest
import torch
from transformer_lens import patching

import circuitcheck
from circuitcheck import tasks
from circuitcheck.components import Component
from circuitcheck.patcher import Patch, Patcher
from circuitcheck.zoo.tokenizer import build_tokenizer

ATOL = 1e-4

SWEEPS = {
    "resid_pre": patching.get_act_patch_resid_pre,
    "head_out": patching.get_act_patch_attn_head_out_all_pos,
    "head_out_by_pos": patching.get_act_patch_attn_head_out_by_pos,
    "mlp_out": patching.get_act_patch_mlp_out,
    "attn_out": patching.get_act_patch_attn_out,
    "head_q": patching.get_act_patch_attn_head_q_all_pos,
    "head_k": patching.get_act_patch_attn_head_k_all_pos,
    "head_v": patching.get_act_patch_attn_head_v_all_pos,
    "pattern": patching.get_act_patch_attn_head_pattern_all_pos,
}


def random_task(vocab, batch=4, seq=7, seed=0, low=3):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(low, vocab, (batch, seq), generator=g)
    corrupt = torch.randint(low, vocab, (batch, seq), generator=g)
    answers = torch.randint(low, vocab, (batch,), generator=g)
    wrong = torch.randint(low, vocab, (batch,), generator=g)
    return tasks.from_tokens(clean, corrupt, answers=answers, wrong_answers=wrong, d_vocab=vocab)


def tl_metric(task):
    return lambda logits: task.metric(logits, task).mean()


@pytest.fixture(scope="module")
def wide_gpt2(tmp_path_factory):
    """A GPT-2 (Hugging Face) with large random weights, so that patches move the metric a lot."""
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = tmp_path_factory.mktemp("wide-gpt2")
    torch.manual_seed(1)
    config = GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=64, n_positions=32, initializer_range=0.3)
    GPT2LMHeadModel(config).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return circuitcheck.load_model(str(directory), device="cpu")


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("what", sorted(SWEEPS))
@pytest.mark.parametrize("which", ["random_model", "wide_gpt2"])
def test_sweeps_equal_transformer_lens_on_models_with_mlps(what, which, fast, request):
    model = request.getfixturevalue(which)
    task = random_task(model.cfg.d_vocab)
    _, clean_cache = model.run_with_cache(task.clean)
    ours = Patcher(model, max_batch=12, fast=fast).sweep(task, what).mean
    theirs = SWEEPS[what](model, task.corrupt, clean_cache, tl_metric(task))
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs.float(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("what", ["resid_pre", "head_out", "head_out_by_pos", "pattern"])
def test_sweeps_equal_transformer_lens_on_the_zoo(what, fast, induction_2l):
    task = tasks.induction(induction_2l, n_prompts=6, seq_len=8)
    _, clean_cache = induction_2l.run_with_cache(task.clean)
    ours = Patcher(induction_2l, fast=fast).sweep(task, what).mean
    theirs = SWEEPS[what](induction_2l, task.corrupt, clean_cache, tl_metric(task))
    torch.testing.assert_close(ours, theirs.float(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("port", ["q", "k", "v"])
@pytest.mark.parametrize("sender", [(0, 1), (1, 2)])
def test_path_patching_equals_transformer_lens_direct_path(wide_gpt2, port, sender):
    task = random_task(64, seed=2)
    _, clean_cache = wide_gpt2.run_with_cache(task.clean)
    _, corrupt_cache = wide_gpt2.run_with_cache(task.corrupt)
    theirs = patching.get_act_patch_direct_path(
        wide_gpt2, task.corrupt, clean_cache, corrupt_cache, tl_metric(task), *sender, component=port, verbose=False
    )
    ours = Patcher(wide_gpt2, max_batch=8).path_sweep(task, f"L{sender[0]}H{sender[1]}", port)
    later = slice(sender[0] + 1, None)
    ours_later = torch.tensor(ours.to_numpy()[later])
    assert ours_later.abs().max() > 0.05  # the patch actually moves the metric
    torch.testing.assert_close(ours_later, theirs[later].float(), atol=ATOL, rtol=0)
    assert torch.isnan(torch.tensor(ours.to_numpy()[: sender[0] + 1])).all()


def one_forward_path_reference(model, task, sender, receiver, direction):
    """Path patching the slow way: one forward with a hand-written hook."""
    base, source = (task.corrupt, task.clean) if direction == "denoise" else (task.clean, task.corrupt)
    _, base_cache = model.run_with_cache(base)
    _, source_cache = model.run_with_cache(source)
    s = Component.parse(sender)
    z = f"blocks.{s.layer}.attn.hook_z"
    delta = (source_cache[z][:, :, s.head] - base_cache[z][:, :, s.head]) @ model.blocks[s.layer].attn.W_O[s.head]
    if receiver == "logits":
        last = base_cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
        logits = model.unembed(model.ln_final(last + delta))
        return task.metric(logits, task, None)
    r = Component.parse(receiver)
    if r.kind == "mlp":
        mid = base_cache[f"blocks.{r.layer}.hook_resid_mid"] + delta

        def hook(act, hook):
            return model.blocks[r.layer].ln2(mid)

        name = f"blocks.{r.layer}.mlp.hook_in"
    else:
        attn = model.blocks[r.layer].attn
        W, b = getattr(attn, f"W_{r.port.upper()}"), getattr(attn, f"b_{r.port.upper()}")
        x = model.blocks[r.layer].ln1(base_cache[f"blocks.{r.layer}.hook_resid_pre"] + delta)
        value = torch.einsum("bpd,de->bpe", x, W[r.head]) + b[r.head]

        def hook(act, hook):
            act = act.clone()
            act[:, :, r.head] = value
            return act

        name = f"blocks.{r.layer}.attn.hook_{r.port}"
    logits = model.run_with_hooks(base, fwd_hooks=[(name, hook)])
    return task.metric(logits, task, None)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("receiver", ["L1H3.k", "L1H0.q", "L1H2.v", "logits"])
def test_path_patching_on_the_zoo_equals_a_one_forward_reference(induction_2l, receiver, direction):
    # The zoo's native attention has no per-head input fork, so TransformerLens's
    # direct path cannot run on it; the reference is a hand-written hook instead.
    task = tasks.induction(induction_2l, n_prompts=6, seq_len=8)
    ours = Patcher(induction_2l).path_patch(task, [Component.parse("L0H0")], [receiver], direction)[0]
    reference = one_forward_path_reference(induction_2l, task, "L0H0", receiver, direction)
    torch.testing.assert_close(ours, reference.float(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_path_patching_into_an_mlp_equals_a_one_forward_reference(random_model, direction):
    task = random_task(64, seed=4)
    ours = Patcher(random_model).path_patch(task, [Component.parse("L0H1")], ["L1.mlp", "L0.mlp"], direction)
    for row, receiver in zip(ours, ["L1.mlp", "L0.mlp"]):
        torch.testing.assert_close(row, one_forward_path_reference(random_model, task, "L0H1", receiver, direction).float(), atol=ATOL, rtol=0)


def test_resid_mid_patches_the_residual_stream_itself(random_model):
    # hook_resid_mid is an alias of ln2's input in TransformerBridge; the sweep
    # must change the residual stream, checked by hand at the last layer.
    task = random_task(64, seed=5)
    sweep = Patcher(random_model).sweep(task, "resid_mid").mean
    _, clean_cache = random_model.run_with_cache(task.clean)
    _, corrupt_cache = random_model.run_with_cache(task.corrupt)
    last = random_model.cfg.n_layers - 1
    for pos in range(task.seq_len):
        mid = corrupt_cache[f"blocks.{last}.hook_resid_mid"].clone()
        mid[:, pos] = clean_cache[f"blocks.{last}.hook_resid_mid"][:, pos]
        post = mid + random_model.blocks[last].mlp(random_model.blocks[last].ln2(mid))
        logits = random_model.unembed(random_model.ln_final(post))
        assert sweep[last, pos].item() == pytest.approx(task.metric(logits, task).mean().item(), abs=ATOL)


def test_chunking_does_not_change_results(random_model):
    task = random_task(64, seed=6)
    one = Patcher(random_model, max_batch=4).sweep(task, "head_out_by_pos").values
    many = Patcher(random_model, max_batch=1000).sweep(task, "head_out_by_pos").values
    torch.testing.assert_close(one, many, atol=ATOL, rtol=0)


def test_out_of_memory_halves_the_chunk(random_model, monkeypatch):
    task = random_task(64, seed=7)
    patcher = Patcher(random_model, max_batch=64, fast=False)  # the fast path would cut chunks at layer changes
    expected = patcher.sweep(task, "head_out").values
    real = patcher._run_chunk
    sizes = []

    def flaky(runs, variants, *args):
        sizes.append(len(variants))
        if len(variants) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(runs, variants, *args)

    monkeypatch.setattr(patcher, "_run_chunk", flaky)
    torch.testing.assert_close(patcher.sweep(task, "head_out").values, expected)
    assert sizes[:3] == [8, 4, 2] and max(sizes[3:]) <= 2  # 8 fails, 4 fails, then chunks of 2


def test_one_forward_runs_many_variants(random_model):
    task = random_task(64, seed=8)
    patcher = Patcher(random_model, max_batch=10_000, fast=False)
    patcher.sweep(task, "resid_pre")
    assert patcher.forward_passes == 1
    fast = Patcher(random_model, max_batch=10_000)
    fast.sweep(task, "resid_pre")
    assert fast.forward_passes == 2 and fast.fast_passes == 1  # layer 0 in full, layer 1 from the cached residual


def test_unknown_sweep_lists_the_valid_ones(random_model):
    with pytest.raises(ValueError, match="unknown sweep 'resid': valid sweeps are resid_pre, resid_mid"):
        Patcher(random_model).sweep(random_task(64), "resid")


def test_sweep_frame_and_matrix(random_model):
    sweep = Patcher(random_model).sweep(random_task(64), "head_out")
    frame = sweep.frame()
    assert list(frame.columns) == ["layer", "head", "value", "normalized"] and len(frame) == 8
    matrix = sweep.matrix()
    assert matrix.shape == (2, 4) and matrix.index.name == "layer" and matrix.columns.name == "head"


def test_a_patch_with_an_unknown_dimension_is_refused(random_model):
    with pytest.raises(ValueError, match="indexed by"):
        Patcher(random_model).run(random_task(64), [[Patch.at("blocks.0.hook_resid_pre", "clean", h=[1])]])


# The fast path (circuitcheck.fastpath): reuse the base run before the first patched layer.

FAST_SWEEPS = ["resid_pre", "resid_mid", "head_out", "head_out_by_pos", "mlp_out", "attn_out", "head_v", "pattern"]


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("which", ["induction_2l", "random_model", "wide_gpt2"])
def test_fast_path_equals_the_general_path(which, direction, request):
    model = request.getfixturevalue(which)
    if which == "induction_2l":
        task = tasks.induction(model, n_prompts=6, seq_len=8)
        whats = ["resid_pre", "head_out", "head_out_by_pos", "attn_out", "pattern"]
    else:
        task = random_task(model.cfg.d_vocab, seed=9)
        whats = FAST_SWEEPS
    for what in whats:
        general = Patcher(model, max_batch=12, fast=False)
        fast = Patcher(model, max_batch=12, fast=True)
        expected = general.sweep(task, what, direction=direction).values
        got = fast.sweep(task, what, direction=direction).values
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        assert general.fast_passes == 0
        assert fast.fast_passes > 0, f"{what}: the fast path was never taken"


def test_fast_path_is_taken_for_later_layers_and_runs_only_later_blocks(random_model):
    task = random_task(64, seed=10)
    variants = [[Patch.at("blocks.1.hook_resid_pre", "clean", p=[pos])] for pos in range(task.seq_len)]
    patcher = Patcher(random_model, max_batch=10_000)
    expected = Patcher(random_model, max_batch=10_000, fast=False).run(task, variants, base="corrupt")
    torch.testing.assert_close(patcher.run(task, variants, base="corrupt"), expected, atol=ATOL, rtol=0)  # verifies, once
    calls = [0, 0]
    handles = [random_model.blocks[layer].register_forward_hook(lambda *a, layer=layer: calls.__setitem__(layer, calls[layer] + 1))
               for layer in range(2)]
    try:
        again = patcher.run(task, variants, base="corrupt")
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(again, expected, atol=ATOL, rtol=0)
    assert calls == [0, 1]  # one chunk: block 1 only, block 0 reused from the cached corrupted run
    assert patcher.fast_passes == 2 and patcher.forward_passes == 2


def test_fast_path_is_not_taken_for_layer_0_or_outside_the_blocks(random_model):
    task = random_task(64, seed=11)
    patcher = Patcher(random_model)
    layer_0 = Patch.at("blocks.0.attn.hook_z", "clean", h=[1])
    layer_1 = Patch.at("blocks.1.attn.hook_z", "clean", h=[1])
    patcher.run(task, [[layer_0], [layer_1, layer_0]])  # a variant starts at its first patched layer
    patcher.run(task, [[Patch.at("hook_embed", "clean", p=[2]), layer_1]])
    assert patcher.fast_passes == 0 and patcher.forward_passes == 2
    patcher.run(task, [[layer_0], [layer_1], [layer_0, layer_1]])  # chunks are cut where the start layer changes
    assert patcher.fast_passes == 1 and patcher.forward_passes == 4


def test_fast_path_falls_back_when_verification_fails(zoo_tokenizer_dir, monkeypatch, capsys):
    from conftest import build_native
    from circuitcheck import fastpath

    model = build_native(n_layers=3, n_heads=4, d_model=32, d_vocab=64, seed=3, tokenizer_dir=zoo_tokenizer_dir)
    task = random_task(64, seed=12)
    expected = Patcher(model, max_batch=12, fast=False).sweep(task, "resid_pre").values
    real = fastpath.later_blocks_logits

    def broken(*args, **kwargs):
        return real(*args, **kwargs) + 1.0  # a fast path that gets everything wrong

    monkeypatch.setattr(fastpath, "later_blocks_logits", broken)
    try:
        patcher = Patcher(model, max_batch=12)
        got = patcher.sweep(task, "resid_pre").values
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)  # the general path's results
        assert patcher.fast_passes == 0
        err = capsys.readouterr().err
        assert err.count("circuitcheck: fast path disabled for") == 1 and "differs by 1.00e+00" in err
        monkeypatch.setattr(fastpath, "later_blocks_logits", real)
        again = Patcher(model, max_batch=12)
        again.sweep(task, "resid_pre")
        assert again.fast_passes == 0  # off for this model for the rest of the session
        assert "fast path disabled" not in capsys.readouterr().err  # said once
    finally:
        fastpath.reset(model)
    fresh = Patcher(model, max_batch=12)
    torch.testing.assert_close(fresh.sweep(task, "resid_pre").values, expected, atol=ATOL, rtol=0)
    assert fresh.fast_passes > 0
