"""Real models at scale in the engine: chunk size from free memory, path patching on
grouped-query models, and a fast-path tolerance that scales with the model's precision.

The models are tiny Hugging Face Llamas (RMSNorm, half-split rotary, SwiGLU, no
biases; 4 query heads over 2 key-value heads), saved locally and loaded through
``circuitcheck.load_model`` as a user would, in float32 and in bfloat16.
"""

from __future__ import annotations

import math

import pytest
import torch

import circuitcheck as cc
from circuitcheck import tasks
from circuitcheck.engine import edges, fastpath
from circuitcheck.engine import patcher as patcher_module
from circuitcheck.engine.patcher import Patch, Patcher, activation_bytes_per_row, available_memory, shared_patcher
from circuitcheck.errors import CircuitCheckError
from circuitcheck.zoo.tokenizer import build_tokenizer

ATOL = 1e-5


def save_llama(directory, n_kv: int = 2, dtype=torch.float32, seed: int = 3):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    # Weights 15x the usual initialisation, so that one head's path moves the metric visibly.
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=n_kv, hidden_size=32,
                         intermediate_size=64, vocab_size=64, max_position_embeddings=32, initializer_range=0.3,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    LlamaForCausalLM(config).to(dtype).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def llama_bf16_dir(tmp_path_factory):
    """A grouped-query Llama saved in bfloat16 (its float32 load has the same, bfloat16-representable, weights)."""
    return save_llama(tmp_path_factory.mktemp("llama-bf16"), dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def llama(llama_bf16_dir):
    return cc.load_model(llama_bf16_dir, device="cpu")


@pytest.fixture(scope="module")
def llama_bf16(llama_bf16_dir):
    return cc.load_model(f"{llama_bf16_dir}?dtype=bfloat16", device="cpu")


@pytest.fixture(scope="module")
def llama_mha(tmp_path_factory):
    """The same layout with one key-value head per query head (no grouping), to compare edge circuits with paths."""
    return cc.load_model(save_llama(tmp_path_factory.mktemp("llama-mha"), n_kv=4, seed=4), device="cpu")


def random_task(batch=4, seq=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean, corrupt = torch.randint(3, 64, (batch, seq), generator=g), torch.randint(3, 64, (batch, seq), generator=g)
    answers, wrong = torch.randint(3, 64, (batch,), generator=g), torch.randint(3, 64, (batch,), generator=g)
    return tasks.from_tokens(clean, corrupt, answers=answers, wrong_answers=wrong, d_vocab=64)


# Grouped-query attention, as TransformerLens 4.3 presents it ------------------------------------------------


def test_a_grouped_query_llama_has_one_key_and_value_per_key_value_head(llama):
    cfg = llama.cfg
    assert (cfg.n_heads, cfg.n_key_value_heads, cfg.d_head) == (4, 2, 8)
    assert tuple(llama.blocks[1].attn.W_K.shape) == (2, 32, 8) and llama.blocks[1].attn.b_K is None
    _, cache = llama.run_with_cache(random_task().clean)
    assert cache["blocks.1.attn.hook_q"].shape[2] == 4
    assert cache["blocks.1.attn.hook_k"].shape[2] == cache["blocks.1.attn.hook_v"].shape[2] == 2  # not expanded


# Path patching on a grouped-query model, against a hand-written forward --------------------------------------


def hand_path_patch(model, task, sender: tuple[int, int], receiver: tuple[int, int, str], direction: str, only_receiver=True):
    """The metric with the path sender -> receiver patched, from the Hugging Face weights and plain hooks.

    Only the receiver head's attention is recomputed, by hand (RMSNorm, its own
    projection, half-split rotary, causal softmax) and written into its
    ``attn.hook_z``; every other head keeps the base run's output.
    ``only_receiver=False``: every head of the receiver's key-value group reads the
    patched key or value (what patching ``hook_k`` alone would do).
    """
    hf = model.original_model
    cfg = model.cfg
    n_heads, n_kv, d_head, d_model = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_model
    (s_layer, s_head), (layer, head, port) = sender, receiver
    source_tokens, base_tokens = (task.clean, task.corrupt) if direction == "denoise" else (task.corrupt, task.clean)
    with torch.no_grad():
        _, source = model.run_with_cache(source_tokens)
        _, base = model.run_with_cache(base_tokens)
        W_O = hf.model.layers[s_layer].self_attn.o_proj.weight  # [d_model, n_heads * d_head]

        def write(cache):
            return cache[f"blocks.{s_layer}.attn.hook_z"][:, :, s_head] @ W_O[:, s_head * d_head:(s_head + 1) * d_head].T

        resid = base[f"blocks.{layer}.hook_resid_pre"] + write(source) - write(base)
        norm = hf.model.layers[layer].input_layernorm
        x = resid * torch.rsqrt(resid.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight
        attn = hf.model.layers[layer].self_attn
        group = n_heads // n_kv
        kv = head // group

        def project(linear, index):  # a Linear's rows for one head: [d_head, d_model]
            return x @ linear.weight.view(-1, d_head, d_model)[index].T

        P = x.shape[1]
        theta = hf.config.rope_parameters["rope_theta"]
        angles = torch.arange(P)[:, None] * (1.0 / theta ** (torch.arange(0, d_head, 2) / d_head))[None]
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)

        def rotate(t):
            return t * cos + torch.cat([-t[..., d_head // 2:], t[..., : d_head // 2]], -1) * sin

        def z_of(h, q=None, k=None, v=None):
            q = base[f"blocks.{layer}.attn.hook_q"][:, :, h] if q is None else q
            k = base[f"blocks.{layer}.attn.hook_k"][:, :, h // group] if k is None else k
            v = base[f"blocks.{layer}.attn.hook_v"][:, :, h // group] if v is None else v
            scores = rotate(q) @ rotate(k).transpose(-1, -2) / math.sqrt(d_head)
            scores = scores.masked_fill(torch.ones(P, P, dtype=torch.bool).triu(1), float("-inf"))
            return scores.softmax(-1) @ v

        # The hand-written attention reproduces the model's own heads (so what follows means what it says).
        for h in range(n_heads):
            torch.testing.assert_close(z_of(h), base[f"blocks.{layer}.attn.hook_z"][:, :, h], atol=1e-5, rtol=0)
        patched = {"q": dict(q=project(attn.q_proj, head)), "k": dict(k=project(attn.k_proj, kv)), "v": dict(v=project(attn.v_proj, kv))}[port]
        readers = [head] if only_receiver or port == "q" else list(range(kv * group, (kv + 1) * group))
        z = {h: z_of(h, **patched) for h in readers}

        def put(act, hook):
            act = act.clone()
            for h, value in z.items():
                act[:, :, h] = value
            return act

        logits = model.run_with_hooks(base_tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", put)])
    return task.metric(logits, task).float()


@pytest.mark.parametrize("fast", [None, False], ids=["fast", "general"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_path_patching_into_heads_of_a_grouped_query_model_equals_a_hand_computation(llama, direction, fast):
    task = random_task(seed=1)
    receivers = [(1, 2, "k"), (1, 1, "v"), (1, 3, "q"), (1, 0, "k")]  # heads 0-1 read key-value head 0, heads 2-3 head 1
    patcher = Patcher(llama, fast=fast)
    ours = patcher.path_patch(task, [cc.Component.parse("L0H1")], [f"L{l}H{h}.{p}" for l, h, p in receivers], direction)
    for row, receiver in zip(ours, receivers):
        expected = hand_path_patch(llama, task, (0, 1), receiver, direction)
        torch.testing.assert_close(row, expected, atol=ATOL, rtol=0)
    if fast is None:
        assert patcher.fast_passes > 0 and fastpath.state(llama).disabled is None


def test_a_grouped_query_path_reaches_only_the_receiver_not_its_key_value_group(llama):
    task = random_task(seed=2)
    ours = Patcher(llama).path_patch(task, [cc.Component.parse("L0H3")], ["L1H2.k", "L1H2.v"])
    for row, port in zip(ours, "kv"):
        alone = hand_path_patch(llama, task, (0, 3), (1, 2, port), "denoise")
        group = hand_path_patch(llama, task, (0, 3), (1, 2, port), "denoise", only_receiver=False)
        assert (alone - group).abs().max() > 100 * ATOL  # head 3 reading the path too would be measurably different
        torch.testing.assert_close(row, alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("port", ["k", "v"])
def test_a_path_sweep_into_keys_or_values_covers_every_query_head_of_a_grouped_query_model(llama, port):
    task = random_task(seed=13)
    sweep = Patcher(llama).path_sweep(task, "L0H2", port)
    assert sweep.axis_values == [[1], [0, 1, 2, 3]]  # per query head, though layer 1 has 2 key-value heads
    for head in range(4):
        expected = hand_path_patch(llama, task, (0, 2), (1, head, port), "denoise").mean()
        assert float(sweep.mean[0, head]) == pytest.approx(float(expected), abs=ATOL)


def test_path_patching_refuses_a_head_the_model_does_not_have(llama):
    with pytest.raises(cc.ComponentError, match="head 4 does not exist in L1H4.k: model .* has heads 0-3"):
        Patcher(llama).path_patch(random_task(), [cc.Component.parse("L0H0")], ["L1H4.k"])


# Edge circuits: grouped-query models are refused; bias-free models work ------------------------------------


def test_edge_circuits_refuse_a_grouped_query_model_with_a_clear_error(llama):
    task = random_task(seed=3)
    message = r"edge circuits cannot be built on model .*: it has grouped-query attention \(4 query heads share 2 key-value heads\)"
    with pytest.raises(CircuitCheckError, match=message):
        cc.check_sufficient("L0H1 -> L1H2.q", model=llama, task=task, min_recovery=0.5)
    with pytest.raises(CircuitCheckError, match=message):
        edges.all_edges(llama)


def test_edge_ablation_on_a_bias_free_llama_equals_path_patching(llama_mha):
    # Dropping the edge s -> r under resample ablation on the clean input: r reads the sender's
    # corrupted output, everything else its clean one. That is path patching in the "noise" direction.
    task = random_task(seed=4)
    graph = edges.Graph.of(llama_mha, task.seq_len)
    receivers = ["L1H2.q", "L1H0.k", "L1H3.v", "L1.mlp", "logits"]
    patcher = Patcher(llama_mha)
    dropped = patcher.run(task, [graph.drop([f"L0H1 -> {r}"]).patches() for r in receivers], base="clean", ablation="resample")
    paths = patcher.path_patch(task, [cc.Component.parse("L0H1")], receivers, direction="noise")
    assert (paths - patcher.runs(task).clean_metric).abs().max() > 100 * ATOL  # the paths matter
    torch.testing.assert_close(dropped, paths, atol=ATOL, rtol=0)


# Chunk size from free memory ------------------------------------------------------------------------------


def estimate_by_hand(cfg, seq_len: int, bytes_per_value: int, live: bool = False) -> int:
    """The documented per-row estimate, written out for the tiny Llama's config."""
    d, h, dh, m, L, V = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.n_layers, cfg.d_vocab
    one_block = 6 * d + 6 * h * dh + 3 * h * seq_len + 3 * m
    edge_captures = L * (3 * d + h * dh) + L * (h + 1) * d if live else 0
    return math.ceil(2.0 * seq_len * (one_block + V + edge_captures) * bytes_per_value)


def test_the_activation_estimate_counts_what_a_forward_holds(llama):
    cfg = llama.cfg
    assert cfg.d_mlp == 64 and cfg.d_vocab == 64
    for seq_len in (1, 7, 30):
        for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
            for live in (False, True):
                assert activation_bytes_per_row(cfg, seq_len, dtype, live=live) == estimate_by_hand(cfg, seq_len, size, live)
    # Attention scores grow with the square of the length: more than twice the bytes for twice the tokens.
    assert activation_bytes_per_row(cfg, 60) > 2 * activation_bytes_per_row(cfg, 30)


def test_without_max_batch_the_chunk_size_comes_from_free_memory(llama, monkeypatch):
    task = random_task(seed=5)
    per_row = activation_bytes_per_row(llama.cfg, task.seq_len, torch.float32)
    monkeypatch.setattr(patcher_module, "available_memory", lambda device: 64 * per_row)  # half of it: 32 rows
    patcher = Patcher(llama, fast=False)
    assert patcher.max_batch is None
    variants = [[Patch.at("blocks.1.attn.hook_z", "clean", h=[h], p=[p])] for h in range(4) for p in range(7)]  # 28
    values = patcher.run(task, variants, base="corrupt")
    assert (patcher.chunk.rows, patcher.chunk.variants, patcher.chunk.source) == (32, 8, "memory")
    assert patcher.forward_passes == math.ceil(28 / 8)
    assert str(patcher.chunk).startswith("32 rows per forward (8 variants x 4 examples), from memory: ")
    assert patcher.chunk.to_dict()["bytes_per_row"] == per_row and patcher.chunk.to_dict()["available"] == 64 * per_row
    expected = Patcher(llama, max_batch=10_000, fast=False).run(task, variants, base="corrupt")
    torch.testing.assert_close(values, expected, atol=ATOL, rtol=0)


def test_more_free_memory_gives_larger_chunks_up_to_a_cap(llama, monkeypatch):
    task = random_task(seed=5)
    per_row = activation_bytes_per_row(llama.cfg, task.seq_len, torch.float32)
    rows = {}
    for free in (2 * per_row, 1000 * per_row, 10**15):
        monkeypatch.setattr(patcher_module, "available_memory", lambda device, free=free: free)
        rows[free] = Patcher(llama).plan_chunk(task).rows
    assert rows == {2 * per_row: 4, 1000 * per_row: 500, 10**15: patcher_module.MAX_AUTO_ROWS}  # never under one variant


def test_a_bfloat16_model_fits_more_rows_in_the_same_memory(llama, llama_bf16, monkeypatch):
    task = random_task(seed=5)
    monkeypatch.setattr(patcher_module, "available_memory", lambda device: 4 * activation_bytes_per_row(llama.cfg, task.seq_len) * 100)
    wide, narrow = Patcher(llama).plan_chunk(task), Patcher(llama_bf16).plan_chunk(task)
    assert narrow.bytes_per_row < wide.bytes_per_row and narrow.rows > wide.rows


def test_max_batch_given_by_the_user_wins_over_free_memory(llama, monkeypatch):
    task = random_task(seed=5)
    monkeypatch.setattr(patcher_module, "available_memory", lambda device: 1)
    patcher = Patcher(llama, max_batch=12)
    patcher.sweep(task, "head_out")
    assert (patcher.chunk.rows, patcher.chunk.variants, patcher.chunk.source) == (12, 3, "max_batch")
    assert str(patcher.chunk) == "12 rows per forward (3 variants x 4 examples), the max_batch limit"


def test_unreadable_free_memory_uses_the_default_chunk(llama, monkeypatch):
    monkeypatch.setattr(patcher_module, "available_memory", lambda device: None)
    plan = Patcher(llama).plan_chunk(random_task())
    assert (plan.rows, plan.source) == (patcher_module.DEFAULT_MAX_BATCH, "default")


def test_edge_variants_are_planned_with_their_larger_footprint(llama_mha, monkeypatch):
    task = random_task(seed=6)
    free = 200 * activation_bytes_per_row(llama_mha.cfg, task.seq_len, live=True)
    monkeypatch.setattr(patcher_module, "available_memory", lambda device: free)
    patcher = Patcher(llama_mha)
    graph = edges.Graph.of(llama_mha, task.seq_len)
    patcher.run(task, [graph.keep(["L0H1 -> L1H2.q"]).patches()])
    assert patcher.chunk.bytes_per_row == activation_bytes_per_row(llama_mha.cfg, task.seq_len, live=True)
    assert patcher.chunk.rows == 100


def test_out_of_memory_still_halves_the_chunk_and_later_runs_start_there(llama, monkeypatch):
    task = random_task(seed=7)
    monkeypatch.setattr(patcher_module, "available_memory", lambda device: 10**12)
    patcher = Patcher(llama, fast=False)
    expected = Patcher(llama, fast=False).sweep(task, "head_out").values
    real = patcher._run_chunk
    sizes = []

    def flaky(runs, variants, *args):
        sizes.append(len(variants))
        if len(variants) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(runs, variants, *args)

    monkeypatch.setattr(patcher, "_run_chunk", flaky)
    torch.testing.assert_close(patcher.sweep(task, "head_out").values, expected)
    assert sizes[:3] == [8, 4, 2] and max(sizes[3:]) <= 2  # all 8 heads at once, then 4, then 2 at a time
    assert (patcher.chunk.rows, patcher.chunk.halved) == (8, 2) and "halved 2x after running out of memory" in str(patcher.chunk)
    sizes.clear()
    patcher.sweep(task, "head_out")
    assert max(sizes) == 2 and patcher.chunk.halved == 0  # the next run starts at the size that fitted


def test_free_memory_of_this_machine_is_read(llama):
    free = available_memory("cpu")
    total = __import__("os").sysconf("SC_PHYS_PAGES") * __import__("os").sysconf("SC_PAGE_SIZE")
    assert free is not None and 0 < free <= total
    assert available_memory("meta") is None


def test_the_shared_patcher_chooses_its_chunks_from_memory(llama):
    task = random_task(seed=8)
    patcher = shared_patcher(llama)
    assert patcher.max_batch is None and shared_patcher(llama, 64).max_batch == 64
    cc.check_necessary("L1H2", model=llama, task=task, min_drop=-10.0)
    assert patcher.chunk is not None and patcher.chunk.source == "memory" and patcher.chunk.bytes_per_row > 0


# The fast path's tolerance scales with the precision -----------------------------------------------------------


def test_the_tolerance_is_the_precisions_epsilon_times_a_stated_factor():
    eps32 = torch.finfo(torch.float32).eps
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        expected = fastpath.DTYPE_ROUNDINGS * torch.finfo(dtype).eps + fastpath.FLOAT32_ROUNDINGS * eps32
        assert fastpath.tolerance(dtype) == pytest.approx(expected, rel=1e-12)
    assert fastpath.tolerance(torch.float32) < 2e-5 < 1e-2 < fastpath.tolerance(torch.bfloat16)
    with pytest.raises(ValueError, match="torch.int64 is not a floating-point type"):
        fastpath.tolerance(torch.int64)


def bf16_sweeps(model, task):
    whats = ("resid_pre", "head_out", "head_v", "mlp_out", "pattern")
    return {what: Patcher(model, fast=False).sweep(task, what).values for what in whats}


def test_the_fast_path_runs_and_stays_on_for_a_bfloat16_llama(llama_bf16):
    assert next(llama_bf16.parameters()).dtype == torch.bfloat16
    fastpath.reset(llama_bf16)
    task = random_task(seed=9)
    for what, expected in bf16_sweeps(llama_bf16, task).items():
        patcher = Patcher(llama_bf16)
        got = patcher.sweep(task, what).values
        assert patcher.fast_passes > 0, f"{what}: {fastpath.state(llama_bf16).unsupported or fastpath.state(llama_bf16).disabled}"
        scale = max(1.0, float(patcher.runs(task).clean.logits.abs().max()))
        torch.testing.assert_close(got, expected, atol=fastpath.tolerance(torch.bfloat16) * scale, rtol=0)
    assert fastpath.state(llama_bf16).disabled is None


def nudged_forward(monkeypatch, relative: float, alternate: bool = True):
    """Make the kernel's logits differ from the model's by ``relative`` times their scale, at every logit.

    ``alternate``: up at even token ids, down at odd ones (a logit difference moves too);
    else every logit up alike (only the logits' check can see it, no metric of differences).
    """
    real = fastpath.forward

    def nudged(*args, **kwargs):
        logits = real(*args, **kwargs)
        scale = max(1.0, float(logits.abs().max()))
        signs = torch.ones(logits.shape[-1], dtype=logits.dtype)
        if alternate:
            signs[1::2] = -1
        return logits + (relative * scale) * signs

    monkeypatch.setattr(fastpath, "forward", nudged)


def test_rounding_level_differences_keep_the_fast_path_on_in_bfloat16(llama_bf16, monkeypatch):
    # Two roundings of bfloat16 (about 1.6% of the largest logit): the size of the difference between
    # any two bfloat16 implementations, and 150 times what a fixed 1e-4 tolerance allows.
    task = random_task(seed=10)
    fastpath.reset(llama_bf16)
    nudged_forward(monkeypatch, 2 * torch.finfo(torch.bfloat16).eps)
    try:
        patcher = Patcher(llama_bf16)
        patcher.sweep(task, "head_out")
        assert patcher.fast_passes > 0 and fastpath.state(llama_bf16).disabled is None
    finally:
        fastpath.reset(llama_bf16)


def test_a_real_difference_turns_the_fast_path_off_in_bfloat16(llama_bf16, monkeypatch, capsys):
    task = random_task(seed=10)
    fastpath.reset(llama_bf16)
    nudged_forward(monkeypatch, 0.2)
    try:
        patcher = Patcher(llama_bf16)
        patcher.sweep(task, "head_out")
        assert patcher.fast_passes == 0 and fastpath.state(llama_bf16).disabled is not None
        assert "circuitcheck: fast path disabled for" in capsys.readouterr().err
    finally:
        fastpath.reset(llama_bf16)


def test_float32_differences_a_fixed_1e4_would_hide_turn_the_fast_path_off(llama, monkeypatch, capsys):
    # 2e-5 of the largest logit, every logit alike: under the old fixed 1e-4 (and invisible to a
    # logit-difference metric), yet 170 float32 roundings, far more than two implementations differ by.
    task = random_task(seed=11)
    expected = Patcher(llama, fast=False).sweep(task, "head_out").values
    fastpath.reset(llama)
    nudged_forward(monkeypatch, 2e-5, alternate=False)
    try:
        patcher = Patcher(llama)
        got = patcher.sweep(task, "head_out").values
        assert patcher.fast_passes == 0 and fastpath.state(llama).disabled is not None
        assert "circuitcheck: fast path disabled for" in capsys.readouterr().err
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)  # the general path's results
    finally:
        fastpath.reset(llama)


def test_path_patching_on_a_bfloat16_llama_agrees_with_float32_on_the_same_weights(llama, llama_bf16):
    # The checkpoint is bfloat16, so both loads hold the same weights: only the arithmetic's precision differs.
    task = random_task(seed=12)
    receivers = ["L1H2.k", "L1H1.v", "L1H3.q", "L1.mlp", "logits"]
    sender = [cc.Component.parse("L0H1")]
    wide = Patcher(llama).path_patch(task, sender, receivers)
    narrow = Patcher(llama_bf16).path_patch(task, sender, receivers)
    with torch.no_grad():
        scale = max(1.0, float(llama(task.clean).abs().max()))
    assert (wide - Patcher(llama).runs(task).corrupt_metric).abs().max() > 0.05  # the paths move the metric
    torch.testing.assert_close(narrow, wide, atol=fastpath.tolerance(torch.bfloat16) * scale, rtol=0)
