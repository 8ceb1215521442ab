"""Linear-probe claims about zoo:induction-2l: what layer 0 writes into the residual stream.

Layer 0's previous-token heads (L0H0, L0H2) copy each token into the next
position's residual stream; that is what layer 1's induction heads read. So the
previous token is linearly decodable from layer 0's output, and not from the
token embedding, which carries only the current token.
"""

import circuitcheck as cc

SEQ_LEN = 16
POSITIONS = list(range(2, SEQ_LEN + 1))  # positions whose previous token is an ordinary token (not BOS)


def previous_token_data(model, seed=0, n_prompts=128):
    """Seeded random prompts ``BOS t1 .. t16``, and per position the token before it."""
    tokens = cc.inputs.with_bos(model, cc.inputs.random_tokens(model, n_prompts, SEQ_LEN, seed=seed))
    previous = tokens.roll(1, dims=1)  # previous[:, p] = tokens[:, p - 1]
    return tokens, previous


def test_layer_0_output_encodes_the_previous_token(model, probe):
    tokens, previous = previous_token_data(model, seed=probe.seed)
    probe.assert_accuracy(
        "blocks.0.hook_resid_post",
        previous,
        tokens,
        positions=POSITIONS,
        min_accuracy=0.9,
        min_selectivity=0.8,  # accuracy minus the accuracy of the same probe on shuffled labels
        what="the previous token",
    )


def test_the_token_embedding_does_not_encode_the_previous_token(model, probe):
    tokens, previous = previous_token_data(model, seed=probe.seed)
    # chance is 1/61: the embedding at position p only knows the token at p
    probe.assert_accuracy("hook_embed", previous, tokens, positions=POSITIONS, max_accuracy=0.1, what="the previous token")


def test_probe_results_are_data(model, probe):
    tokens, previous = previous_token_data(model, seed=probe.seed)
    result = probe.fit("blocks.0.hook_resid_post", tokens, previous, positions=POSITIONS)
    assert result.accuracy > result.majority_accuracy + 0.5
    assert result.per_class["accuracy"].min() > 0.5  # every previous token is decoded, not just frequent ones
