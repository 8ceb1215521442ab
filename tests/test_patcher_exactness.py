"""Every batched result equals TransformerLens's one-forward-per-patch result (fp32, 1e-4)."""

import pytest
import torch
from transformer_lens import patching

import circuitcheck
from circuitcheck.engine import fastpath
from circuitcheck import tasks
from circuitcheck.model.components import Component
from circuitcheck.engine.patcher import Patch, Patcher
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
    assert ours.axis_values[0] == list(range(sender[0] + 1, wide_gpt2.cfg.n_layers))  # only the layers that read the sender
    assert ours.mean.abs().max() > 0.05  # the patch actually moves the metric
    torch.testing.assert_close(ours.mean, theirs[later].float(), atol=ATOL, rtol=0)


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
    patcher = Patcher(random_model, max_batch=64)
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
    assert fast.forward_passes == 1 and fast.fast_passes == 1  # every start layer and position in one ragged batch


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


# The fast path (circuitcheck.engine.fastpath): compute only what a patch can change.

FAST_SWEEPS = ["resid_pre", "resid_mid", "resid_post", "head_out", "head_out_by_pos", "mlp_out", "attn_out",
               "head_q", "head_k", "head_v", "pattern"]


@pytest.fixture(scope="module")
def rotary_model(zoo_tokenizer_dir):
    """Rotary + RMSNorm + grouped-query attention + gated (SwiGLU) MLP: the Llama layout, TransformerLens-native."""
    from conftest import build_native

    return build_native(n_layers=3, n_heads=4, d_model=32, d_vocab=64, seed=4, tokenizer_dir=zoo_tokenizer_dir,
                        act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary", gated_mlp=True,
                        final_rms=True, n_key_value_heads=2)


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory):
    """A Hugging Face Llama (rotary half-split, RMSNorm, grouped-query attention, SwiGLU), saved and loaded offline."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("hf-llama")
    torch.manual_seed(2)
    config = LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
                         intermediate_size=64, vocab_size=64, max_position_embeddings=32, rms_norm_eps=1e-6,
                         initializer_range=0.3)
    LlamaForCausalLM(config).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return circuitcheck.load_model(str(directory), device="cpu")


@pytest.fixture(scope="module")
def attn_only_model(zoo_tokenizer_dir):
    from conftest import build_native

    return build_native(n_layers=3, n_heads=4, d_model=32, d_vocab=64, attn_only=True, seed=5, tokenizer_dir=zoo_tokenizer_dir)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("which", ["induction_2l", "random_model", "wide_gpt2", "rotary_model", "hf_llama", "attn_only_model"])
def test_fast_path_equals_the_general_path(which, direction, request):
    model = request.getfixturevalue(which)
    if which == "induction_2l":
        task = tasks.induction(model, n_prompts=6, seq_len=8)  # a metric over several positions
        whats = ["resid_pre", "head_out", "head_out_by_pos", "attn_out", "pattern", "head_q"]
    else:
        task = random_task(model.cfg.d_vocab, seed=9)
        whats = [w for w in FAST_SWEEPS if not (model.cfg.attn_only and w in ("resid_mid", "mlp_out"))]
    for what in whats:
        general = Patcher(model, max_batch=12, fast=False)
        fast = Patcher(model, max_batch=12)
        expected = general.sweep(task, what, direction=direction).values
        got = fast.sweep(task, what, direction=direction).values
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        assert general.fast_passes == 0
        assert fast.fast_passes > 0, f"{what}: the fast path was never taken"


@pytest.mark.parametrize("which", ["wide_gpt2", "rotary_model", "hf_llama"])
def test_fast_path_handles_mixed_variants_and_every_patch_source(which, request):
    model = request.getfixturevalue(which)
    task = random_task(64, seed=13)
    explicit = torch.randn(task.n_examples, task.seq_len, model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    variants = [
        [Patch.at("blocks.2.hook_resid_pre", "clean", p=[5])],
        [Patch.at("blocks.0.attn.hook_z", "ablated", h=[1, 3], p=[2, 4])],
        [Patch.at("blocks.1.hook_mlp_out", explicit, p=[3]), Patch.at("blocks.2.attn.hook_v", "clean", h=[0])],
        [Patch.at("blocks.1.attn.hook_pattern", "clean", h=[2], q=[6], k=[1])],
        [Patch.at("blocks.2.mlp.hook_post", "ablated", p=[-1])],
        [Patch.at("blocks.1.mlp.hook_in", "clean")],
        [Patch.at("blocks.0.hook_resid_post", "corrupt", p=[0, 6]), Patch.at("blocks.2.hook_attn_out", "clean", p=[1])],
        [],
    ]
    for ablation in ("resample", "mean", "zero"):
        for base in ("clean", "corrupt"):
            assert_fast_equals_general(model, task, variants, base, ablation, max_batch=3)
    assert fastpath.state(model).disabled is None  # equal because the kernel is exact, not because it fell back


def assert_fast_equals_general(model, task, variants, base, ablation, max_batch):
    expected = Patcher(model, max_batch=max_batch, fast=False).run(task, variants, base=base, ablation=ablation)
    fast = Patcher(model, max_batch=max_batch)
    torch.testing.assert_close(fast.run(task, variants, base=base, ablation=ablation), expected, atol=ATOL, rtol=0)
    assert fast.fast_passes > 0


def test_fast_path_computes_only_later_layers_and_positions(random_model):
    task = random_task(64, seed=10)  # 4 examples x 7 tokens, 2 layers; logit difference at the last position
    patcher = Patcher(random_model, max_batch=10_000)
    patcher.sweep(task, "resid_pre")  # caches the clean and corrupted runs (and verifies, on first use)
    patcher.fast_work = dict.fromkeys(patcher.fast_work, 0)
    calls = [0, 0]
    handles = [random_model.blocks[layer].register_forward_hook(lambda *a, layer=layer: calls.__setitem__(layer, calls[layer] + 1))
               for layer in range(2)]
    try:
        sweep = patcher.sweep(task, "resid_pre")
    finally:
        for handle in handles:
            handle.remove()
    expected = Patcher(random_model, max_batch=10_000, fast=False).sweep(task, "resid_pre").values
    torch.testing.assert_close(sweep.values, expected, atol=ATOL, rtol=0)
    assert calls == [0, 0]  # the patched variants ran through none of the model's blocks
    # Variant (layer L, position p) computes 4 examples x (7 - p) positions in layer 0 if L = 0 ...
    in_layer_0 = 4 * sum(7 - p for p in range(7))
    # ... and in the last layer only position 6 in full (the metric reads only its logits),
    # the others from p on as keys and values: 14 variants.
    assert patcher.fast_work["token_layers"] == in_layer_0 + 14 * 4
    assert patcher.fast_work["kv_only"] == 2 * (in_layer_0 - 7 * 4)
    assert patcher.fast_work["unembedded"] == 14 * 4  # one logit row per example and variant


def test_fast_path_unembeds_every_position_a_metric_reads(random_model):
    from circuitcheck import metrics

    task = random_task(64, seed=14)
    task = tasks.from_tokens(task.clean, task.corrupt, metric=metrics.loss(slice(1, 4)), d_vocab=64)
    assert task.metric.reads(7) == [1, 2, 3]
    expected = Patcher(random_model, fast=False).sweep(task, "head_out").values
    patcher = Patcher(random_model)
    torch.testing.assert_close(patcher.sweep(task, "head_out").values, expected, atol=ATOL, rtol=0)
    assert patcher.fast_work["unembedded"] == 8 * 4 * 3
    # head_out: layer 0 heads compute layer 0 at every position; all 8 variants compute the last layer at 1-3
    assert patcher.fast_work["token_layers"] == 4 * 4 * 7 + 8 * 4 * 3
    custom = tasks.from_tokens(task.clean, task.corrupt, metric=lambda logits: logits[:, 2, 5] - logits[:, 6, 7], d_vocab=64)
    assert custom.metric.reads(7) is None  # a plain function may read anything: every position is unembedded
    expected = Patcher(random_model, fast=False).sweep(custom, "head_out").values
    patcher = Patcher(random_model)
    torch.testing.assert_close(patcher.sweep(custom, "head_out").values, expected, atol=ATOL, rtol=0)
    assert patcher.fast_work["unembedded"] == 8 * 4 * 7


def test_metric_positions():
    from circuitcheck import metrics

    assert metrics.logit_diff(-1).reads(9) == [8]
    assert metrics.answer_prob(2).reads(9) == [2]
    assert metrics.kl_to_clean(-3).reads(9) == [6]
    assert metrics.next_token_logprob(slice(4, None)).reads(9) == [4, 5, 6, 7]
    assert metrics.loss([0, -1]).reads(9) == [0, 7]
    with pytest.raises(ValueError, match="position 12 is out of range: the inputs have 9 positions"):
        metrics.logit_diff(12).reads(9)


def test_fast_path_does_not_take_hooks_it_does_not_know(random_model):
    task = random_task(64, seed=11)
    patcher = Patcher(random_model)
    layer_1 = Patch.at("blocks.1.attn.hook_z", "clean", h=[1])
    patcher.run(task, [[Patch.at("hook_embed", "clean", p=[2]), layer_1]])  # outside the blocks
    patcher.run(task, [[Patch.at("blocks.1.ln1.hook_normalized", "clean", p=[2])]])  # a hook point it does not patch
    assert patcher.fast_passes == 0 and patcher.forward_passes == 2
    patcher.run(task, [[Patch.at("blocks.0.attn.hook_z", "clean", h=[1])], [layer_1]])
    assert patcher.fast_passes == 1 and patcher.forward_passes == 3
    with pytest.raises(circuitcheck.CircuitCheckError, match="index 9 is out of range"):  # the same error either way
        patcher.run(task, [[Patch.at("blocks.1.attn.hook_z", "clean", h=[9])]])


def test_fast_path_is_not_taken_for_architectures_it_does_not_know(random_model, monkeypatch):
    from circuitcheck.engine import fastpath

    monkeypatch.setattr(fastpath, "KNOWN_BLOCKS", frozenset({"SomethingElse"}))
    fastpath.reset(random_model)
    try:
        task = random_task(64, seed=15)
        patcher = Patcher(random_model)
        patcher.sweep(task, "head_out")
        assert patcher.fast_passes == 0 and "block type NativeBlock" in fastpath.state(random_model).unsupported
        forced = Patcher(random_model, fast=True)  # fast=True tries any bridge it can read (still verified)
        forced.sweep(task, "head_out")
        assert forced.fast_passes > 0
    finally:
        fastpath.reset(random_model)


def test_start_position():
    from circuitcheck.engine.fastpath import start_position

    assert start_position([Patch.at("blocks.0.hook_resid_pre", p=[3, 5])], 7) == 3
    assert start_position([Patch.at("blocks.0.hook_resid_pre", p=[-2])], 7) == 5
    assert start_position([Patch.at("blocks.0.attn.hook_z", h=[1])], 7) == 0  # all positions
    assert start_position([Patch.at("blocks.0.attn.hook_pattern", q=[4], k=[0])], 7) == 4  # queries from 4
    assert start_position([Patch.at("blocks.0.attn.hook_pattern", k=[5])], 7) == 0
    assert start_position([Patch.at("blocks.1.hook_mlp_out", p=[6]), Patch.at("blocks.0.attn.hook_v", p=[2])], 7) == 2


@pytest.mark.parametrize("where", ["variants", "base run"])
def test_fast_path_falls_back_when_verification_fails(zoo_tokenizer_dir, monkeypatch, capsys, where):
    from conftest import build_native
    from circuitcheck.engine import fastpath

    model = build_native(n_layers=3, n_heads=4, d_model=32, d_vocab=64, seed=3, tokenizer_dir=zoo_tokenizer_dir)
    task = random_task(64, seed=12)
    expected = Patcher(model, max_batch=12, fast=False).sweep(task, "resid_pre").values
    real = fastpath.forward

    def broken(*args, **kwargs):  # a fast path that gets everything wrong
        wrong = (kwargs.get("record") is None) == (where == "variants")
        return real(*args, **kwargs) + (1.0 if wrong else 0.0)

    monkeypatch.setattr(fastpath, "forward", broken)
    try:
        patcher = Patcher(model, max_batch=12)
        got = patcher.sweep(task, "resid_pre").values
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)  # the general path's results
        assert patcher.fast_passes == 0
        err = capsys.readouterr().err
        assert err.count("circuitcheck: fast path disabled for") == 1 and "differs by 1.00e+00" in err
        monkeypatch.setattr(fastpath, "forward", real)
        again = Patcher(model, max_batch=12)
        again.sweep(task, "resid_pre")
        assert again.fast_passes == 0  # off for this model for the rest of the session
        assert "fast path disabled" not in capsys.readouterr().err  # said once
    finally:
        fastpath.reset(model)
    fresh = Patcher(model, max_batch=12)
    torch.testing.assert_close(fresh.sweep(task, "resid_pre").values, expected, atol=ATOL, rtol=0)
    assert fresh.fast_passes > 0


@pytest.mark.parametrize("declared", [[-1], [3, -1]])
def test_a_metric_that_misdeclares_its_positions_is_caught(random_model, capsys, declared):
    from circuitcheck.engine import fastpath
    from circuitcheck.model.metrics import Metric

    task = random_task(64, seed=16)
    Patcher(random_model).sweep(task, "head_out")  # the model's kernel is verified already
    lying = Metric("lying", lambda logits, task, clean: logits[:, -1, 5] - logits[:, 0, 7],  # reads position 0 too
                   positions=lambda n: declared)
    task = tasks.from_tokens(task.clean, task.corrupt, metric=lying, d_vocab=64)
    expected = Patcher(random_model, fast=False).sweep(task, "head_out").values
    patcher = Patcher(random_model)
    torch.testing.assert_close(patcher.sweep(task, "head_out").values, expected, atol=ATOL, rtol=0)
    assert "metric 'lying' reads logit positions it does not declare" in capsys.readouterr().err
    assert patcher.fast_passes > 0 and patcher.fast_work["unembedded"] == 8 * 4 * 7  # every position, still fast
    assert fastpath.state(random_model).disabled is None


def test_a_patch_that_changes_nothing_verifies_nothing(zoo_tokenizer_dir):
    from conftest import build_native
    from circuitcheck.engine import fastpath

    model = build_native(n_layers=2, n_heads=4, d_model=32, d_vocab=64, seed=8, tokenizer_dir=zoo_tokenizer_dir)
    task = random_task(64, seed=18)
    same = [[Patch.at("blocks.1.attn.hook_z", "clean", h=[h])] for h in range(4)]  # clean into the clean run
    Patcher(model).run(task, same, base="clean")
    assert "attn.hook_z" not in fastpath.state(model).verified
    Patcher(model).run(task, same, base="corrupt")
    assert "attn.hook_z" in fastpath.state(model).verified


def test_misspelt_layer_numbers_are_not_taken_for_others(random_model):
    task = random_task(64, seed=19)
    patcher = Patcher(random_model)
    value = torch.zeros(task.n_examples, task.seq_len, 4, 8)
    with pytest.raises(Exception, match="blocks.01.attn.hook_z"):  # as on the general path: no such hook
        patcher.run(task, [[Patch.at("blocks.1.attn.hook_z", "clean", h=[0]), Patch.at("blocks.01.attn.hook_z", value)]])
    assert patcher.fast_passes == 0


def test_half_precision_models_run_the_fast_path_verified_at_their_precision(zoo_tokenizer_dir):
    from conftest import build_native
    from circuitcheck.engine import fastpath

    model = build_native(n_layers=2, n_heads=4, d_model=32, d_vocab=64, seed=9, tokenizer_dir=zoo_tokenizer_dir)
    model.half()
    task = random_task(64, seed=20)
    expected = Patcher(model, fast=False).sweep(task, "head_out").values
    patcher = Patcher(model)
    got = patcher.sweep(task, "head_out").values
    assert patcher.fast_passes > 0 and fastpath.state(model).disabled is None
    scale = max(1.0, float(patcher.runs(task).clean.logits.abs().max()))
    torch.testing.assert_close(got, expected, atol=fastpath.tolerance(torch.float16) * scale, rtol=0)


def test_fast_path_follows_changed_weights(zoo_tokenizer_dir):
    from conftest import build_native
    from circuitcheck.engine import fastpath

    model = build_native(n_layers=2, n_heads=4, d_model=32, d_vocab=64, seed=6, tokenizer_dir=zoo_tokenizer_dir)
    task = random_task(64, seed=17)
    reused = Patcher(model)
    reused.sweep(task, "head_out")
    with torch.no_grad():
        for parameter in model.blocks[1].parameters():
            parameter.mul_(1.5)  # in place: same tensors, new values
    expected = Patcher(model, fast=False).sweep(task, "head_out").values
    for patcher in (Patcher(model), reused):  # a patcher made before the change drops its stale runs
        torch.testing.assert_close(patcher.sweep(task, "head_out").values, expected, atol=ATOL, rtol=0)
        assert patcher.fast_passes > 0
    assert fastpath.state(model).disabled is None


@pytest.mark.parametrize("which", ["random_model", "rotary_model"])
def test_fast_path_holds_no_copy_of_the_weights(which, request):
    from circuitcheck.engine import fastpath

    model = request.getfixturevalue(which)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    arch = fastpath.read_arch(model)
    for layer in arch.layers:
        for name in ("W_Q", "W_K", "W_V", "W_O", "W_gate", "W_in", "W_out"):
            weight = getattr(layer, name)
            assert weight is None or weight.untyped_storage().data_ptr() in storages, name
    assert arch.W_U.untyped_storage().data_ptr() in storages


@pytest.mark.parametrize("which", ["wide_gpt2", "rotary_model", "attn_only_model"])
def test_fast_path_equals_the_general_path_on_random_variants(which, request):
    """Seeded random variants: 0-3 patches each, any hook point the fast path patches, any indices and sources."""
    from circuitcheck.engine import fastpath
    from circuitcheck import metrics
    from circuitcheck.engine.patcher import index_dims

    model = request.getfixturevalue(which)
    cfg = model.cfg
    rng = torch.Generator().manual_seed(20)
    points = [p for p in fastpath.HOOKS if fastpath.hooks_supported(model, [f"blocks.0.{p}"])]
    seq = 7

    def pick(n, k):
        return sorted({int(i) - (n if torch.rand(1, generator=rng) < 0.2 else 0) for i in torch.randint(0, n, (k,), generator=rng)})

    def random_patch():
        layer = int(torch.randint(0, cfg.n_layers, (1,), generator=rng))
        point = points[int(torch.randint(0, len(points), (1,), generator=rng))]
        hook = f"blocks.{layer}.{point}"
        heads = cfg.n_key_value_heads if point in ("attn.hook_k", "attn.hook_v") and cfg.n_key_value_heads else cfg.n_heads
        index = {}
        for dim in index_dims(hook):
            if torch.rand(1, generator=rng) < 0.6:
                index[dim] = pick(heads if dim == "h" else seq, 1 + int(torch.randint(0, 2, (1,), generator=rng)))
        source = ["clean", "corrupt", "ablated"][int(torch.randint(0, 3, (1,), generator=rng))]
        return Patch.at(hook, source, **index)

    variants = [[random_patch() for _ in range(int(torch.randint(0, 4, (1,), generator=rng)))] for _ in range(40)]
    for metric in (None, metrics.loss([0, -1]), metrics.kl_to_clean(2)):
        task = random_task(cfg.d_vocab, seed=21)
        task = tasks.from_tokens(task.clean, task.corrupt, answers=task.answers, wrong_answers=task.wrong_answers,
                                 metric=metric, d_vocab=cfg.d_vocab)
        for base, ablation in (("corrupt", "resample"), ("clean", "mean")):
            assert_fast_equals_general(model, task, variants, base, ablation, max_batch=24)
    assert fastpath.state(model).disabled is None  # equal because the kernel is exact, not because it fell back


def test_fast_must_be_none_true_or_false(random_model):
    with pytest.raises(ValueError, match="fast='yes' is not valid: use None"):
        Patcher(random_model, fast="yes")
