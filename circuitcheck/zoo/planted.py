"""Planted-circuit models: weights set by hand, so the true circuit is known.

    python -m circuitcheck.zoo.planted planted-4l     # write circuitcheck/zoo/models/planted-4l/
    python -m circuitcheck.zoo.planted all

A trained model's circuit is a finding; a planted model's circuit is a fact.
These models let circuitcheck measure the power of its own claims: the share of
true claims that hold and of false claims that fail, against a ground truth
that :mod:`circuitcheck.zoo.ground_truth` measures exhaustively with plain
TransformerLens hooks (never circuitcheck's engine).

**planted-4l** does induction (``tasks.induction``: ``BOS r r``, predict the
second copy) on the first 32 tokens of the zoo's vocabulary, with four layers
of four heads and an MLP per layer, no LayerNorm. Every activation lives in a
named block of the 184-dimensional residual stream (one coordinate per token
or position), so each head's job can be read off its weights:

========  =====================================================================
block     coordinates
========  =====================================================================
TOK       0-31: the current token, one-hot
POS       32-79: the position, one-hot (48 positions)
PREV      80-111: the previous token, one-hot (written by L0H0)
CODE      112-143: the token the induction head found (written by L2H2)
OUT       144-175: what the model predicts (the unembedding reads only this)
ONE       176: constant 1 at every position
JUNK      177-183: written by distractors, read by nothing
========  =====================================================================

The circuit: **L0H0** (previous-token head) writes PREV; **L2H2** (induction
head) matches the current token against PREV, attends to the token after its
earlier copy and writes it to CODE; **L3.mlp** turns CODE into OUT (+6 logits
for the found token, ReLU with a threshold of a quarter); **L3H0** is a
*backup* induction head: it attends like L2H2, except that a query term on
CODE takes 30 from the score of the position whose token CODE already holds,
so it stays on BOS while L2H2's answer is in CODE and takes over (+5 logits,
straight to OUT) when that answer is removed or replaced; **L3H3** is a *negative* head: it attends like L2H2 and writes -2
logits for the found token, so a circuit without it recovers more than the
model does. Distractors: **L1H1** attends like a previous-token head and
**L2H1** like an induction head, but both write only to JUNK. The other heads
attend to BOS, to themselves or uniformly and write nothing that matters,
except **L1H2**, which lowers the current token's logit by 1 (a small real
effect outside the circuit). The MLPs of layers 0-2 write only to JUNK.

**planted-redundant-2l** is the two-layer attention-only case of redundancy:
L0H0 writes PREV, and the induction heads L1H0 and L1H1 each add 12 logits for
the found token, so either alone nearly saturates the answer's probability and
neither matters while the other runs (see :data:`ROLES_2L`).

Everything here is deterministic and uses no randomness at all. Every weight
is a small multiple of a power of two, so the checkpoints are stored in
float16 and load exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys

import torch

from . import MODELS_DIR
from .tokenizer import BOS_ID, VOCAB, save_tokenizer

#: The planted models read the zoo vocabulary's first 32 tokens: <bos> <unk> <pad> a-z 0 1 2.
V = 32
PLANTED_VOCAB = VOCAB[:V]
N_CTX = 48
D_HEAD = 64  # sqrt(64) = 8 keeps every weight exact in float16, the stored precision
N_HEADS = 4
D_MLP = V

TOK, POS, PREV, CODE, OUT = 0, V, V + N_CTX, 2 * V + N_CTX, 3 * V + N_CTX
ONE = 4 * V + N_CTX
JUNK, N_JUNK = ONE + 1, 7
D_MODEL = JUNK + N_JUNK

#: Sharpness of every planted attention pattern, in logits before the softmax.
BETA = 20.0
#: Logits the circuit's parts add for (or, negative head, take from) the found token.
MAIN_LOGITS = 6.0
BACKUP_LOGITS = 5.0
NEGATIVE_LOGITS = 2.0
SELF_SUPPRESSION_LOGITS = 1.0
#: The MLP's ReLU threshold, as a share of a full CODE entry.
MLP_THRESHOLD = 0.25

BLOCKS = {
    "TOK": (TOK, V), "POS": (POS, N_CTX), "PREV": (PREV, V), "CODE": (CODE, V), "OUT": (OUT, V),
    "ONE": (ONE, 1), "JUNK": (JUNK, N_JUNK),
}

PLANTED_CONFIG = {
    "n_layers": 4,
    "n_heads": N_HEADS,
    "d_head": D_HEAD,
    "d_model": D_MODEL,
    "d_mlp": D_MLP,
    "act_fn": "relu",
    "n_ctx": N_CTX,
    "d_vocab": V,
    "d_vocab_out": V,
    "attn_only": False,
    "normalization_type": None,
    "positional_embedding_type": "standard",
    "default_prepend_bos": True,
    "init_weights": False,
    "seed": 0,
    "tokenizer_prepends_bos": True,
}

#: What every component does, for the card (component -> role).
ROLES_4L = {
    "L0H0": "previous-token head: attends i -> i-1, writes that token to PREV (the circuit's first step)",
    "L0H1": "inert: uniform attention, writes nothing",
    "L0H2": "BOS head: attends to BOS, writes nothing",
    "L0H3": "self-attention head, writes its token to JUNK",
    "L0.mlp": "reads TOK, writes to JUNK",
    "L1H0": "self-attention head, writes its token to JUNK",
    "L1H1": "distractor: a previous-token head by attention, writes only to JUNK",
    "L1H2": "self-attention head that lowers the current token's logit by 1 (a small effect outside the circuit)",
    "L1H3": "inert: uniform attention, writes nothing",
    "L1.mlp": "reads TOK, writes to JUNK",
    "L2H0": "BOS head: attends to BOS, writes nothing",
    "L2H1": "distractor: an induction head by attention (reads PREV), writes only to JUNK",
    "L2H2": "induction head: attends to the token after the earlier copy of the current token, writes it to CODE",
    "L2H3": "inert: uniform attention, writes nothing",
    "L2.mlp": "reads TOK, writes to JUNK",
    "L3H0": "backup induction head: sent to BOS while CODE holds a token; when L2H2 is removed it attends like it "
    f"and adds {BACKUP_LOGITS:g} logits for the found token",
    "L3H1": "self-attention head, writes its token to JUNK",
    "L3H2": "inert: uniform attention, writes nothing",
    "L3H3": f"negative head: attends like L2H2 and takes {NEGATIVE_LOGITS:g} logits from the found token",
    "L3.mlp": f"turns CODE into OUT: +{MAIN_LOGITS:g} logits for the token L2H2 found (ReLU, threshold {MLP_THRESHOLD:g})",
}

#: The planted circuit, and the named circuits whose claims the card and the benchmark test.
CIRCUITS_4L = {
    "planted": "L0H0 L2H2 L3H0 L3H3 L3.mlp",
    "without_negative": "L0H0 L2H2 L3H0 L3.mlp",
    "without_backup": "L0H0 L2H2 L3H3 L3.mlp",
    "main_path": "L0H0 L2H2 L3.mlp",
    "distractors": "L1H1 L2H1",
}


class _Weights:
    """The state dict of a planted model being written, in TransformerLens's W_Q / W_O conventions."""

    def __init__(self, n_layers: int, attn_only: bool = False):
        self.n_layers, self.attn_only = n_layers, attn_only
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float32)  # noqa: E731
        self.W_E, self.W_pos, self.W_U = z(V, D_MODEL), z(N_CTX, D_MODEL), z(D_MODEL, V)
        self.W_Q = [z(N_HEADS, D_MODEL, D_HEAD) for _ in range(n_layers)]
        self.W_K = [z(N_HEADS, D_MODEL, D_HEAD) for _ in range(n_layers)]
        self.W_V = [z(N_HEADS, D_MODEL, D_HEAD) for _ in range(n_layers)]
        self.W_O = [z(N_HEADS, D_HEAD, D_MODEL) for _ in range(n_layers)]
        self.W_in = [z(D_MODEL, D_MLP) for _ in range(n_layers)]
        self.b_in = [z(D_MLP) for _ in range(n_layers)]
        self.W_out = [z(D_MLP, D_MODEL) for _ in range(n_layers)]

    # Attention patterns (scores are divided by sqrt(d_head) in the model, so the query carries that factor).
    def _q(self, layer: int, head: int, row: int, col: int, value: float) -> None:
        self.W_Q[layer][head, row, col] += value * math.sqrt(D_HEAD)

    def previous_token(self, layer: int, head: int) -> None:
        for p in range(N_CTX):
            self._q(layer, head, POS + p, p, BETA)
        for p in range(N_CTX - 1):
            self.W_K[layer][head, POS + p, p + 1] = 1.0

    def self_attention(self, layer: int, head: int) -> None:
        for p in range(N_CTX):
            self._q(layer, head, POS + p, p, BETA)
            self.W_K[layer][head, POS + p, p] = 1.0

    def bos(self, layer: int, head: int) -> None:
        self._q(layer, head, ONE, 0, BETA)
        self.W_K[layer][head, TOK + BOS_ID, 0] = 1.0

    def induction(self, layer: int, head: int, gate: float = 0.0) -> None:
        """Attend to the position whose previous token is the current token; else to BOS (score BETA / 2).

        Head dimension 0 is the BOS sink; dimension t (1-63) matches token t.
        ``gate`` (dimensions 32 + t) takes ``gate`` from the score of every
        position whose token CODE already holds at the query, so a gated head
        stays on BOS while the induction head's answer is in CODE and attends
        like it when that answer is missing or wrong.
        """
        for t in range(V):
            if gate:
                self._q(layer, head, CODE + t, V + t, -gate)
                self.W_K[layer][head, TOK + t, V + t] = 1.0
            if t == BOS_ID:
                continue
            self._q(layer, head, TOK + t, t, BETA)
            self.W_K[layer][head, PREV + t, t] = 1.0
        self._q(layer, head, ONE, 0, BETA / 2)
        self.W_K[layer][head, TOK + BOS_ID, 0] = 1.0

    # What a head writes: the token it attends to, into a block.
    def copy(self, layer: int, head: int, block: int, scale: float = 1.0) -> None:
        for t in range(V):
            if t == BOS_ID:
                continue
            self.W_V[layer][head, TOK + t, t] = 1.0
            self.W_O[layer][head, t, block + t] = scale

    def copy_to_junk(self, layer: int, head: int) -> None:
        for t in range(V):
            if t == BOS_ID:
                continue
            self.W_V[layer][head, TOK + t, t] = 1.0
            self.W_O[layer][head, t, JUNK + t % N_JUNK] = 1.0

    def junk_mlp(self, layer: int) -> None:
        for t in range(D_MLP):
            self.W_in[layer][TOK + t, t] = 1.0
            self.W_out[layer][t, JUNK + t % N_JUNK] = 0.125

    def code_to_out_mlp(self, layer: int, logits: float, threshold: float) -> None:
        for t in range(V):
            self.W_in[layer][CODE + t, t] = 1.0
            self.b_in[layer][t] = -threshold
            self.W_out[layer][t, OUT + t] = logits / (1.0 - threshold)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Bridge state-dict keys (``blocks.L.attn.q.weight`` ...: Linear layout, heads stacked on the out side)."""
        sd = {"embed.weight": self.W_E, "pos_embed.weight": self.W_pos,
              "unembed.weight": self.W_U.T.contiguous(), "unembed.bias": torch.zeros(V)}
        for l in range(self.n_layers):
            for name, W in (("q", self.W_Q[l]), ("k", self.W_K[l]), ("v", self.W_V[l])):
                # W[h] is [d_model, d_head]; Linear weight rows h*d_head + c read W[h][:, c].
                sd[f"blocks.{l}.attn.{name}.weight"] = W.permute(0, 2, 1).reshape(N_HEADS * D_HEAD, D_MODEL).contiguous()
                sd[f"blocks.{l}.attn.{name}.bias"] = torch.zeros(N_HEADS * D_HEAD)
            sd[f"blocks.{l}.attn.o.weight"] = self.W_O[l].reshape(N_HEADS * D_HEAD, D_MODEL).T.contiguous()
            sd[f"blocks.{l}.attn.o.bias"] = torch.zeros(D_MODEL)
            if self.attn_only:
                continue
            sd[f"blocks.{l}.mlp.in.weight"] = self.W_in[l].T.contiguous()
            sd[f"blocks.{l}.mlp.in.bias"] = self.b_in[l].clone()
            sd[f"blocks.{l}.mlp.out.weight"] = self.W_out[l].T.contiguous()
            sd[f"blocks.{l}.mlp.out.bias"] = torch.zeros(D_MODEL)
        return sd


def _embeddings(w: _Weights) -> None:
    for t in range(V):
        w.W_E[t, TOK + t] = 1.0
        w.W_U[OUT + t, t] = 1.0
    for p in range(N_CTX):
        w.W_pos[p, POS + p] = 1.0
        w.W_pos[p, ONE] = 1.0


def planted_4l() -> dict[str, torch.Tensor]:
    """The weights of planted-4l (see the module docstring), as a bridge state dict."""
    w = _Weights(n_layers=4)
    _embeddings(w)
    # Layer 0
    w.previous_token(0, 0)
    w.copy(0, 0, PREV)
    w.bos(0, 2)
    w.self_attention(0, 3)
    w.copy_to_junk(0, 3)
    w.junk_mlp(0)
    # Layer 1
    w.self_attention(1, 0)
    w.copy_to_junk(1, 0)
    w.previous_token(1, 1)  # distractor
    w.copy_to_junk(1, 1)
    w.self_attention(1, 2)
    w.copy(1, 2, OUT, -SELF_SUPPRESSION_LOGITS)
    w.junk_mlp(1)
    # Layer 2
    w.bos(2, 0)
    w.induction(2, 1)  # distractor
    w.copy_to_junk(2, 1)
    w.induction(2, 2)
    w.copy(2, 2, CODE)
    w.junk_mlp(2)
    # Layer 3: CODE holding the matched token takes 1.5 BETA from the backup's score there (BETA - 1.5 BETA < BETA / 2 - 10).
    w.induction(3, 0, gate=1.5 * BETA)
    w.copy(3, 0, OUT, BACKUP_LOGITS)
    w.self_attention(3, 1)
    w.copy_to_junk(3, 1)
    w.induction(3, 3)
    w.copy(3, 3, OUT, -NEGATIVE_LOGITS)
    w.code_to_out_mlp(3, MAIN_LOGITS, MLP_THRESHOLD)
    return w.state_dict()


#: planted-redundant-2l: two induction heads that each alone nearly saturate the answer.
TWIN_LOGITS = 12.0


def planted_redundant_2l() -> dict[str, torch.Tensor]:
    """The weights of planted-redundant-2l (see :data:`ROLES_2L`), as a bridge state dict."""
    w = _Weights(n_layers=2, attn_only=True)
    _embeddings(w)
    w.previous_token(0, 0)
    w.copy(0, 0, PREV)
    w.previous_token(0, 1)  # distractor
    w.copy_to_junk(0, 1)
    w.bos(0, 2)
    w.self_attention(0, 3)
    w.copy_to_junk(0, 3)
    w.induction(1, 0)
    w.copy(1, 0, OUT, TWIN_LOGITS)
    w.induction(1, 1)
    w.copy(1, 1, OUT, TWIN_LOGITS)
    w.self_attention(1, 2)
    w.copy(1, 2, OUT, -SELF_SUPPRESSION_LOGITS)
    w.induction(1, 3)  # distractor
    w.copy_to_junk(1, 3)
    return w.state_dict()


ROLES_2L = {
    "L0H0": "previous-token head: attends i -> i-1, writes that token to PREV",
    "L0H1": "distractor: a previous-token head by attention, writes only to JUNK",
    "L0H2": "BOS head: attends to BOS, writes nothing",
    "L0H3": "self-attention head, writes its token to JUNK",
    "L1H0": f"induction head: adds {TWIN_LOGITS:g} logits for the token after the earlier copy of the current token",
    "L1H1": f"the same as L1H0 (its redundant twin): either alone nearly saturates the answer's probability",
    "L1H2": "self-attention head that lowers the current token's logit by 1 (a small effect outside the circuit)",
    "L1H3": "distractor: an induction head by attention (reads PREV), writes only to JUNK",
}

CIRCUITS_2L = {
    "planted": "L0H0 L1H0 L1H1",
    "one_twin": "L0H0 L1H0",
    "distractors": "L0H1 L1H3",
}

SPECS: dict[str, dict] = {
    "planted-4l": {
        "description": (
            "Planted-circuit model, weights set by hand: a four-layer, four-head induction model with a backup head, "
            "a negative head, a path through an MLP and two distractor heads (attention like the circuit's, output "
            "that nothing reads). The ground truth below was measured exhaustively with plain TransformerLens hooks."
        ),
        "config": PLANTED_CONFIG,
        "weights": planted_4l,
        "roles": ROLES_4L,
        "circuits": CIRCUITS_4L,
        "true_circuit": "planted",
    },
    "planted-redundant-2l": {
        "description": (
            "Planted-circuit model, weights set by hand: a two-layer attention-only induction model whose two "
            "induction heads are redundant twins (each alone nearly saturates the answer, so leave-one-out "
            "minimality sees neither), with a distractor head in each layer. The ground truth below was measured "
            "exhaustively with plain TransformerLens hooks."
        ),
        "config": {**PLANTED_CONFIG, "n_layers": 2, "attn_only": True, "d_mlp": None},
        "weights": planted_redundant_2l,
        "roles": ROLES_2L,
        "circuits": CIRCUITS_2L,
        "true_circuit": "planted",
    },
}


def write(name: str) -> dict:
    """Write model ``name``'s directory (config, tokenizer, weights, measured card). Returns the card."""
    from safetensors.torch import save_file

    from . import build
    from .cards import planted_card_markdown
    from .ground_truth import claims, measure

    spec = SPECS[name]
    out_dir = MODELS_DIR / name
    staging = MODELS_DIR / f".{name}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "checkpoints").mkdir(parents=True)
    save_tokenizer(staging, PLANTED_VOCAB)
    (staging / "config.json").write_text(json.dumps(spec["config"], indent=2, sort_keys=True) + "\n")
    state = spec["weights"]()
    stored = {k: v.to(torch.float16) for k, v in state.items()}
    assert all(torch.equal(stored[k].float(), v) for k, v in state.items()), "a planted weight is not exact in float16"
    save_file(stored, str(staging / "checkpoints" / "final.safetensors"))
    model = build(spec["config"], staging)
    model.load_state_dict(state, strict=True)
    model.eval()
    card = {
        "name": name,
        "planted": True,
        "description": spec["description"],
        "config": {k: spec["config"][k] for k in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "act_fn", "n_ctx",
                                                  "d_vocab", "attn_only", "normalization_type") if k in spec["config"] and not (k == "d_mlp" and spec["config"][k] is None)},
        "weights": {
            "how": "set by hand, no training and no randomness; stored in float16 (every value exact)",
            "command": f"python -m circuitcheck.zoo.planted {name}",
            "residual_blocks": {k: [start, start + size - 1] for k, (start, size) in BLOCKS.items()},
            "torch_version": torch.__version__,
        },
        "final_checkpoint": "final",
        "roles": spec["roles"],
        "circuits": spec["circuits"],
        "true_circuit": spec["circuits"][spec["true_circuit"]],
        "ground_truth": measure(model, spec["circuits"], true_circuit=spec["circuits"][spec["true_circuit"]]),
    }
    card["claims"] = claims(card["ground_truth"])
    (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (staging / "CARD.md").write_text(planted_card_markdown(card))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    print(f"{name}: wrote {out_dir}", flush=True)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m circuitcheck.zoo.planted", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*SPECS, "all"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in SPECS if args.name == "all" else [args.name]:
        write(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
