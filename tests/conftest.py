"""Shared fixtures: small models built locally (no network)."""

from __future__ import annotations

import pytest

# pytester's in-process runs drop modules first imported inside them from
# sys.modules afterwards; torch's C extensions crash when imported a second
# time, so the heavy stack is imported once here, before any inner run.
import torch  # noqa: F401,E402
import transformer_lens.model_bridge.sources.native  # noqa: F401,E402
import transformers  # noqa: F401,E402
import pandas  # noqa: F401,E402

# Likewise circuitcheck's own modules: a class imported anew inside an inner run
# would not be the class the outer modules know (isinstance checks would fail).
import circuitcheck  # noqa: E402
import circuitcheck.claims.baseline  # noqa: F401,E402
import circuitcheck.claims.causal  # noqa: F401,E402
import circuitcheck.pytest_plugin.fixtures  # noqa: F401,E402
import circuitcheck.engine.patcher  # noqa: F401,E402
import circuitcheck.engine.probe  # noqa: F401,E402
import circuitcheck.report  # noqa: F401,E402
import circuitcheck.model.strategies  # noqa: F401,E402
import circuitcheck.model.tasks  # noqa: F401,E402
import circuitcheck.zoo.circuits  # noqa: F401,E402

import os  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist workers share the machine's cores: one torch thread each, or the workers' thread
    # pools oversubscribe the cores and small operations slow down by orders of magnitude.
    torch.set_num_threads(1)


def build_native(n_layers=2, n_heads=4, d_model=32, d_vocab=29, n_ctx=64, attn_only=False, seed=0, tokenizer_dir=None, **extra):
    """A randomly initialised TransformerLens-native model, in eval mode (``extra``: more config fields)."""
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        n_layers=n_layers,
        n_ctx=n_ctx,
        d_vocab=d_vocab,
        d_mlp=None if attn_only else 4 * d_model,
        attn_only=attn_only,
        seed=seed,
        **{"act_fn": "gelu", **extra},
    )
    tokenizer = None
    if tokenizer_dir is not None:
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    model = TransformerBridge.boot_native(cfg, tokenizer=tokenizer)
    model.eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def zoo_tokenizer_dir(tmp_path_factory):
    """The zoo's 64-word tokenizer, saved in a directory of its own."""
    from circuitcheck.zoo.tokenizer import save_tokenizer

    directory = tmp_path_factory.mktemp("zoo-tokenizer")
    save_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def random_model(zoo_tokenizer_dir):
    """2 layers with MLPs, random weights, the zoo's 64-word tokenizer."""
    return build_native(n_layers=2, n_heads=4, d_model=32, d_vocab=64, attn_only=False, tokenizer_dir=zoo_tokenizer_dir)


@pytest.fixture(scope="session")
def induction_2l():
    import circuitcheck

    return circuitcheck.load_model("zoo:induction-2l", device="cpu")


@pytest.fixture(scope="session")
def induction_1l():
    import circuitcheck

    return circuitcheck.load_model("zoo:induction-1l", device="cpu")
