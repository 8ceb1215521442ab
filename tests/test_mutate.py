"""Weight mutations: each does what its name says, on a private copy restored exactly; the user's model is never touched.

What a mutation did is checked with plain TransformerLens (``run_with_cache``
and its hook names), not with circuitcheck's engine.
"""

from __future__ import annotations

import pytest
import torch

from circuitcheck import ComponentError
from circuitcheck.engine import mutate
from circuitcheck.engine.checksum import content_checksums
from circuitcheck.engine.session import session_of

from conftest import build_native

EVERY_KIND = [
    mutate.scramble_qk(1, 3, seed=0),
    mutate.zero_qk(1, 3),
    mutate.scramble_ov(0, 2, seed=0),
    mutate.zero_ov(0, 2),
    mutate.swap_heads(1, 0, 3),
    mutate.copy_head(0, 0, 1),
    mutate.copy_qk(0, 0, 1),
    mutate.copy_ov(0, 0, 1),
    mutate.shuffle_checkpoint(seed=0),
    mutate.combined("zero the outputs of L0H0 L1H3", "zero OV", [mutate.zero_ov(0, 0), mutate.zero_ov(1, 3)]),
]


@pytest.fixture(scope="module")
def mutator(induction_2l):
    return mutate.Mutator(induction_2l)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(3, 64, (3, 16), generator=torch.Generator().manual_seed(0))


def _run(model, tokens):
    with torch.no_grad():
        return model.run_with_cache(tokens)


def _pattern_is_uniform(pattern: torch.Tensor) -> bool:
    """``[batch, q, k]``: each query spreads its attention evenly over the positions it can see."""
    n = pattern.shape[-1]
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    return torch.allclose(pattern, uniform.expand_as(pattern), atol=1e-6)


@pytest.mark.parametrize("mutation", EVERY_KIND, ids=lambda m: m.name)
def test_a_mutation_changes_the_copy_and_is_undone_exactly(mutator, induction_2l, tokens, mutation):
    before_user = session_of(induction_2l).fingerprint()
    original = content_checksums(list(mutator.model.parameters()))
    clean_logits, _ = _run(mutator.model, tokens)
    with mutator.mutated(mutation) as mutant:
        assert mutant is mutator.model
        assert content_checksums(list(mutant.parameters())) != original
        mutated_logits, _ = _run(mutant, tokens)
    assert content_checksums(list(mutator.model.parameters())) == original  # every byte back
    assert torch.equal(_run(mutator.model, tokens)[0], clean_logits)
    assert session_of(induction_2l).fingerprint() == before_user  # the user's model: identity and content as before
    mutator.verify_source()
    if mutation.family != "swap heads":  # swapping two layer-1 induction heads leaves the output nearly as it was
        assert not torch.allclose(mutated_logits, clean_logits, atol=1e-4)


def test_the_copy_is_a_separate_model_with_a_session_of_its_own(mutator, induction_2l):
    assert mutator.model is not induction_2l
    assert session_of(mutator.model) is not session_of(induction_2l)
    assert not any(p.data_ptr() == q.data_ptr() for p in mutator.model.parameters() for q in induction_2l.parameters())
    assert not mutator.model.training


def test_zero_qk_makes_the_heads_attention_uniform_over_the_positions_it_sees(mutator, tokens):
    _, clean = _run(mutator.model, tokens)
    assert not _pattern_is_uniform(clean["blocks.1.attn.hook_pattern"][:, 3])
    with mutator.mutated(mutate.zero_qk(1, 3)) as mutant:
        _, cache = _run(mutant, tokens)
        assert float(mutant.blocks[1].attn.W_Q[3].abs().sum()) == 0.0
    assert _pattern_is_uniform(cache["blocks.1.attn.hook_pattern"][:, 3])
    for head in (0, 1, 2):  # the other heads of the layer attend as before
        torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"][:, head], clean["blocks.1.attn.hook_pattern"][:, head])


def test_swapping_two_heads_swaps_their_outputs(mutator, tokens):
    _, clean = _run(mutator.model, tokens)
    with mutator.mutated(mutate.swap_heads(1, 0, 3)) as mutant:
        _, cache = _run(mutant, tokens)
    z, z0 = cache["blocks.1.attn.hook_z"], clean["blocks.1.attn.hook_z"]
    torch.testing.assert_close(z[:, :, 0], z0[:, :, 3], atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, :, 3], z0[:, :, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, :, 1], z0[:, :, 1], atol=1e-5, rtol=0)


def test_copying_a_head_gives_the_target_the_sources_attention_and_output(mutator, tokens):
    _, clean = _run(mutator.model, tokens)
    with mutator.mutated(mutate.copy_head(0, 0, 1)) as mutant:
        _, cache = _run(mutant, tokens)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"][:, 1], clean["blocks.0.attn.hook_pattern"][:, 0])
    torch.testing.assert_close(cache["blocks.0.attn.hook_z"][:, :, 1], clean["blocks.0.attn.hook_z"][:, :, 0], atol=1e-5, rtol=0)


def test_copying_a_heads_qk_gives_the_target_the_sources_attention_and_keeps_its_values(mutator, tokens):
    _, clean = _run(mutator.model, tokens)
    with mutator.mutated(mutate.copy_qk(0, 0, 1)) as mutant:
        _, cache = _run(mutant, tokens)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"][:, 1], clean["blocks.0.attn.hook_pattern"][:, 0])
    torch.testing.assert_close(cache["blocks.0.attn.hook_v"][:, :, 1], clean["blocks.0.attn.hook_v"][:, :, 1])  # its own W_V
    assert not torch.allclose(cache["blocks.0.attn.hook_pattern"][:, 1], clean["blocks.0.attn.hook_pattern"][:, 1])


def test_copying_a_heads_ov_gives_the_target_the_sources_values_and_keeps_its_attention(mutator, tokens):
    _, clean = _run(mutator.model, tokens)
    with mutator.mutated(mutate.copy_ov(0, 0, 1)) as mutant:
        _, cache = _run(mutant, tokens)
    torch.testing.assert_close(cache["blocks.0.attn.hook_v"][:, :, 1], clean["blocks.0.attn.hook_v"][:, :, 0])
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"][:, 1], clean["blocks.0.attn.hook_pattern"][:, 1])


def test_zero_ov_silences_the_head(mutator, tokens):
    with mutator.mutated(mutate.zero_ov(0, 2)) as mutant:
        _, cache = _run(mutant, tokens)
        W_O = mutant.blocks[0].attn.W_O[2].clone()  # a view: read it before the restore
    assert float(cache["blocks.0.attn.hook_z"][:, :, 2].abs().max()) == 0.0
    assert float(W_O.abs().max()) == 0.0


def test_scrambling_permutes_the_heads_entries_keeping_their_norm(mutator):
    attn = mutator.model.blocks[1].attn
    before = {name: getattr(attn, name)[3].clone() for name in ("W_Q", "W_K", "W_V", "W_O")}
    with mutator.mutated(mutate.scramble_qk(1, 3, seed=5)):
        after = {name: getattr(attn, name)[3].clone() for name in ("W_Q", "W_K", "W_V", "W_O")}
    for name in ("W_Q", "W_K"):
        assert not torch.equal(after[name], before[name])
        assert torch.equal(after[name].flatten().sort().values, before[name].flatten().sort().values)  # the same numbers
    for name in ("W_V", "W_O"):
        assert torch.equal(after[name], before[name])


def test_mutations_are_seeded(mutator):
    def weights(mutation):
        with mutator.mutated(mutation) as mutant:
            return [p.detach().clone() for p in mutant.parameters()]

    for build in (lambda seed: mutate.scramble_ov(0, 1, seed), mutate.shuffle_checkpoint):
        first, again, other = weights(build(3)), weights(build(3)), weights(build(4))
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_the_shuffle_permutes_every_weight_matrix(mutator):
    before = [p.detach().clone() for p in mutator.model.parameters()]
    with mutator.mutated(mutate.shuffle_checkpoint(seed=0)) as mutant:
        after = [p.detach().clone() for p in mutant.parameters()]
    for old, new in zip(before, after):
        if old.dim() >= 2:
            assert not torch.equal(old, new)
            assert torch.equal(old.flatten().sort().values, new.flatten().sort().values)
        else:
            assert torch.equal(old, new)  # LayerNorm weights and biases stay


def test_mlp_outputs_are_zeroed_and_scrambled():
    model = build_native(n_layers=2, n_heads=4, d_model=32, d_vocab=29, attn_only=False)
    mutator = mutate.Mutator(model)
    tokens = torch.randint(0, 29, (2, 12), generator=torch.Generator().manual_seed(1))
    _, clean = _run(mutator.model, tokens)
    with mutator.mutated(mutate.zero_mlp(1)) as mutant:
        _, cache = _run(mutant, tokens)
    assert float(cache["blocks.1.hook_mlp_out"].abs().max()) == 0.0
    torch.testing.assert_close(cache["blocks.0.hook_mlp_out"], clean["blocks.0.hook_mlp_out"])
    with mutator.mutated(mutate.scramble_mlp(0, seed=1)) as mutant:
        _, cache = _run(mutant, tokens)
    assert not torch.allclose(cache["blocks.0.hook_mlp_out"], clean["blocks.0.hook_mlp_out"])
    mutator.verify_source()


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A tiny GPT-2 through Hugging Face: its q, k and v weights are views into the fused c_attn (Conv1D)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import circuitcheck
    from circuitcheck.zoo.tokenizer import build_tokenizer

    directory = tmp_path_factory.mktemp("tiny-gpt2-mutate")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=64, bos_token_id=0, eos_token_id=0,
                        initializer_range=0.5)
    GPT2LMHeadModel(config).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return circuitcheck.load_model(str(directory), device="cpu")


@pytest.mark.parametrize("which", ["zoo", "gpt2"])
def test_a_bridges_weight_views_read_back_the_edit_and_the_forward_uses_it(which, induction_2l, tiny_gpt2, tokens):
    model = induction_2l if which == "zoo" else tiny_gpt2
    mutator = mutate.Mutator(model)
    attn = mutator.model.blocks[1].attn
    _, clean = _run(mutator.model, tokens)
    new_q = torch.linspace(-1, 1, attn.W_Q[2].numel()).view_as(attn.W_Q[2])
    by_hand = mutate.Mutation("write W_Q and W_O of L1H2 by hand", "scramble QK", ())  # no edits: the block writes
    with mutator.mutated(by_hand) as mutant:
        with torch.no_grad():
            mutant.blocks[1].attn.W_Q[2].copy_(new_q)
            mutant.blocks[1].attn.W_O[2].zero_()
        torch.testing.assert_close(mutant.blocks[1].attn.W_Q[2], new_q)  # read back through a fresh view
        assert float(mutant.blocks[1].attn.W_O[2].abs().max()) == 0.0
        _, cache = _run(mutant, tokens)
    assert not torch.allclose(cache["blocks.1.attn.hook_pattern"][:, 2], clean["blocks.1.attn.hook_pattern"][:, 2])
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"][:, 0], clean["blocks.1.attn.hook_pattern"][:, 0])
    # and the module's own head edits go through the same views
    with mutator.mutated(mutate.zero_qk(1, 2)) as mutant:
        _, cache = _run(mutant, tokens)
    assert _pattern_is_uniform(cache["blocks.1.attn.hook_pattern"][:, 2])
    assert torch.equal(_run(mutator.model, tokens)[0], _run(model, tokens)[0])  # restored: the copy computes what the model does
    mutator.verify_source()


def test_the_reference_copy_is_never_mutated_and_holds_the_weights_each_mutation_is_undone_to(induction_2l, tokens):
    mutator = mutate.Mutator(induction_2l)
    reference = mutator.reference
    assert reference is not mutator.model and reference is not induction_2l
    assert session_of(reference) is not session_of(mutator.model)
    before = content_checksums(list(reference.parameters()))
    for mutation in EVERY_KIND:
        with mutator.mutated(mutation):
            assert content_checksums(list(reference.parameters())) == before  # the mutation went to the other copy
    assert torch.equal(_run(reference, tokens)[0], _run(induction_2l, tokens)[0])
    # no third copy: the saved weights are the reference's own parameters
    assert all(s.data_ptr() == p.data_ptr() for s, p in zip(mutator._saved, reference.parameters()))
    mutator.verify_source()
    with torch.no_grad():
        reference.blocks[0].attn.W_V[0].add_(1.0)
    with pytest.raises(mutate.MutationError, match="the reference copy of zoo:induction-2l .* changed: something wrote to it"):
        mutator.verify_source()


def test_a_copy_that_cannot_be_restored_is_an_error(induction_2l):
    mutator = mutate.Mutator(induction_2l)
    mutator._saved[0].add_(1.0)  # the saved embedding no longer holds the original weights
    with pytest.raises(mutate.MutationError, match="could not be restored to its original weights"):
        with mutator.mutated(mutate.shuffle_checkpoint(seed=0)):  # writes the embedding, so restoring it reads the bad copy
            pass


def test_the_users_model_edited_while_mutations_ran_is_an_error():
    model = build_native(n_layers=1, n_heads=2, d_model=8, d_vocab=11, attn_only=True)
    mutator = mutate.Mutator(model)
    with torch.no_grad():
        model.blocks[0].attn.W_V[0].add_(1.0)
    assert not mutator.source_unchanged(model)
    with pytest.raises(mutate.MutationError, match="changed while its mutations ran"):
        mutator.verify_source()


def test_bad_edits_name_the_value_and_what_is_valid(induction_2l):
    with pytest.raises(mutate.MutationError, match="edit 'scramble' is not valid: valid edits are scramble_qk, zero_qk"):
        mutate.Edit("scramble", 0, (1,))
    with pytest.raises(mutate.MutationError, match="needs two different heads, got L1H2 twice"):
        mutate.swap_heads(1, 2, 2)
    mutator = mutate.Mutator(induction_2l)
    with pytest.raises(ComponentError, match="model zoo:induction-2l has layers 0-1"):
        with mutator.mutated(mutate.zero_qk(5, 0)):
            pass
    with pytest.raises(ComponentError, match="head 9"):
        with mutator.mutated(mutate.swap_heads(1, 0, 9)):
            pass
    with pytest.raises(ComponentError, match="attention-only and has no MLPs"):
        with mutator.mutated(mutate.zero_mlp(0)):
            pass
    mutator.verify_source()  # failed edits leave nothing behind
