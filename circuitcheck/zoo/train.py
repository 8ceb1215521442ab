"""Train the zoo models and write their files, deterministically.

    python -m circuitcheck.zoo.train induction-2l      # one model
    python -m circuitcheck.zoo.train all               # every model
    python -m circuitcheck.zoo.train induction-2l --explore   # log scores every 50 steps, write nothing

The same command gives the same weights and the same card on the same
torch build: data come from a seeded ``torch.Generator``, initialisation from
``torch.manual_seed`` and the config seed, and torch runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

import torch

from . import CARD_DECIMALS, CARD_KINDS, MODELS_DIR, build, heads_above, measure_card_scores
from .cards import card_markdown
from .tokenizer import VOCAB, VOCAB_SIZE, save_tokenizer

N_ORDINARY_FIRST = 3  # ids 0-2 are <bos> <unk> <pad>; training draws from ids 3-63

DATA_DESCRIPTION = (
    "Sequences of {seq_len} tokens: <bos>, then uniform random ordinary tokens (ids 3-63, never a "
    "special token), into which a random segment of {min_seg}-{max_seg} tokens is written at a random "
    "start (so the prefix before it has a random length), then copied again after random gaps of "
    "0-{max_gap} tokens for as long as a whole copy fits (one or more repeats). Segment length, start "
    "and gaps are drawn anew for every sequence, so the only way to predict a repeated token is to "
    "look up what followed its earlier copy (no fixed offset to memorise). Next-token cross-entropy on "
    "every position except (mask_misleading) those where the current token is an accidental repeat of a "
    "filler token whose earlier copy was followed by a different token: there copying would be wrong, "
    "and leaving them in teaches the heads to copy timidly and to smear no-match attention off <bos>."
)

BASE_CONFIG = {
    "d_model": 64,
    "n_heads": 4,
    "d_head": 16,
    "n_ctx": 64,
    "d_vocab": VOCAB_SIZE,
    "d_vocab_out": VOCAB_SIZE,
    "attn_only": True,
    "normalization_type": "LN",
    "positional_embedding_type": "standard",
    "default_prepend_bos": True,
    "init_weights": True,
    "init_mode": "gpt2",
    "tokenizer_prepends_bos": True,
}

BASE_RECIPE = {
    "optimizer": "AdamW",
    "lr": 5e-3,
    "weight_decay": 0.0,
    "warmup_steps": 100,
    "min_lr_ratio": 0.1,
    "betas": [0.9, 0.99],
    "batch_size": 64,
    "seq_len": 48,
    "min_seg": 2,
    "max_seg": 20,
    "max_gap": 8,
    "distinct": False,
    "mask_misleading": True,
    "threads": 1,
}

SPECS: dict[str, dict] = {
    "induction-2l": {
        "description": (
            "Two-layer attention-only transformer trained on randomly repeated token segments. It forms "
            "the classic two-head induction circuit: a layer-0 previous-token head writes 'my previous "
            "token was X' into the residual stream, and a layer-1 induction head uses it (K-composition) "
            "to attend to the token after an earlier copy of the current token and copy it. Checkpoints "
            "span the induction phase change."
        ),
        "config": {"n_layers": 2, "seed": 0},
        "recipe": {"steps": 3000, "seed": 0, "checkpoint_steps": [0, 300, 500, 550, 600, 650, 700, 1000, 2400, 3000]},
        "circuits": True,
    },
    "induction-1l": {
        "description": (
            "One-layer attention-only transformer with the induction-2l data and recipe. With one layer "
            "there is no earlier head to compose with, so it cannot form induction heads: the negative "
            "control of induction-2l."
        ),
        "config": {"n_layers": 1, "seed": 0},
        "recipe": {"steps": 3000, "seed": 0, "checkpoint_steps": [0, 1000, 3000]},
        "circuits": False,
    },
}


# Data -------------------------------------------------------------------------


def make_batch(
    generator: torch.Generator, batch_size: int, seq_len: int, min_seg: int, max_seg: int, max_gap: int, distinct: bool = False
) -> torch.Tensor:
    """``[batch_size, seq_len]`` training tokens; see DATA_DESCRIPTION."""

    def rand(low: int, high: int) -> int:  # inclusive bounds
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    n_ordinary = VOCAB_SIZE - N_ORDINARY_FIRST
    if distinct:  # each row a random permutation of the ordinary tokens: no accidental repeats
        assert seq_len - 1 <= n_ordinary
        order = torch.rand(batch_size, n_ordinary, generator=generator).argsort(dim=1)[:, : seq_len - 1]
        tokens = torch.cat([torch.zeros(batch_size, 1, dtype=torch.long), order + N_ORDINARY_FIRST], dim=1)
    else:
        tokens = torch.randint(N_ORDINARY_FIRST, VOCAB_SIZE, (batch_size, seq_len), generator=generator)
    tokens[:, 0] = 0
    body = seq_len - 1
    for row in range(batch_size):
        seg = rand(min_seg, min(max_seg, body // 2))
        start = 1 + rand(0, body - 2 * seg)  # room for at least one more copy
        segment = tokens[row, start : start + seg].clone()
        pos = start + seg
        while True:
            pos += rand(0, max_gap)
            if pos + seg > seq_len:
                break
            tokens[row, pos : pos + seg] = segment
            pos += seg
    return tokens


def misleading_targets(tokens: torch.Tensor) -> torch.Tensor:
    """``[batch, seq-1]`` True where copying after an earlier copy of the current token would be wrong.

    Entry ``i`` is for predicting ``tokens[:, i + 1]`` from position ``i``: True when
    ``tokens[:, i]`` occurred before at some ``j < i`` whose next token differs from
    ``tokens[:, i + 1]`` (an accidental repeat of a random filler token).
    """
    n = tokens.shape[1] - 1
    query, target = tokens[:, :-1], tokens[:, 1:]
    same = query[:, :, None] == query[:, None, :]
    differs = target[:, :, None] != target[:, None, :]
    earlier = torch.ones(n, n, dtype=torch.bool).tril(diagonal=-1)
    return (same & differs & earlier).any(dim=-1)


# Training ---------------------------------------------------------------------


def _scores_line(model) -> str:
    from ..engine.heads import head_scores

    ind = head_scores(model, "induction").to_numpy()
    prev = head_scores(model, "previous_token").to_numpy()
    return (
        f"ind max per layer {[round(float(r.max()), 3) for r in ind]} | "
        f"prev max per layer {[round(float(r.max()), 3) for r in prev]}"
    )


def train(name: str, explore: bool = False, log_every: int = 50, overrides: dict | None = None) -> dict:
    """Train model ``name``; unless ``explore``, write its directory. Returns the card."""
    spec = SPECS[name]
    config = {**BASE_CONFIG, **spec["config"]}
    recipe = {**BASE_RECIPE, **spec["recipe"]}
    if overrides:  # exploration only: the shipped models use the recipes above
        assert explore, "--set is for --explore runs"
        recipe.update(overrides)
        recipe["checkpoint_steps"] = [recipe["steps"]]
    steps, seed = recipe["steps"], recipe["seed"]
    checkpoint_steps = sorted(set(recipe["checkpoint_steps"]))
    assert checkpoint_steps[-1] == steps, "the final weights must be the last checkpoint"

    torch.set_num_threads(recipe["threads"])
    torch.manual_seed(seed)
    data_generator = torch.Generator().manual_seed(seed)

    out_dir = MODELS_DIR / name
    staging = MODELS_DIR / f".{name}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "checkpoints").mkdir(parents=True)
    save_tokenizer(staging)
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    model = build(config, staging)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"], betas=tuple(recipe["betas"])
    )
    def lr_factor(step: int) -> float:  # linear warmup, then cosine decay to min_lr_ratio
        import math

        if step < recipe["warmup_steps"]:
            return (step + 1) / recipe["warmup_steps"]
        progress = (step - recipe["warmup_steps"]) / max(1, steps - recipe["warmup_steps"])
        return recipe["min_lr_ratio"] + (1 - recipe["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    saved: dict[int, dict[str, torch.Tensor]] = {}
    losses: dict[int, float] = {}
    recent: list[float] = []
    started = time.perf_counter()
    for step in range(steps + 1):
        if step in checkpoint_steps:
            saved[step] = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        if explore and step % log_every == 0:
            model.eval()
            print(f"step {step:5d} loss {recent[-1] if recent else float('nan'):.4f} {_scores_line(model)}", flush=True)
            model.train()
        if step == steps:
            break
        tokens = make_batch(
            data_generator, recipe["batch_size"], recipe["seq_len"], recipe["min_seg"], recipe["max_seg"], recipe["max_gap"],
            recipe["distinct"],
        )
        logits = model(tokens)
        per_token = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
        )
        if recipe["mask_misleading"]:
            keep = ~misleading_targets(tokens).reshape(-1)
            loss = per_token[keep].mean()
        else:
            loss = per_token.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        recent.append(float(loss.detach()))
        if step + 1 in checkpoint_steps:
            losses[step + 1] = float(loss.detach())
    elapsed = time.perf_counter() - started
    print(f"{name}: trained {steps} steps in {elapsed:.1f} s", flush=True)
    if explore:
        shutil.rmtree(staging)
        return {}

    from safetensors.torch import save_file

    model.eval()
    card_checkpoints = []
    for step in checkpoint_steps:
        save_file(saved[step], str(staging / "checkpoints" / f"step{step}.safetensors"))
        model.load_state_dict(saved[step], strict=True)
        card_checkpoints.append(
            {"name": f"step{step}", "step": step, "train_loss": _round(losses.get(step)), "scores": measure_card_scores(model)}
        )
    final = card_checkpoints[-1]
    last = recent[-100:]
    card = {
        "name": name,
        "description": spec["description"],
        "config": {
            "n_layers": config["n_layers"],
            "n_heads": config["n_heads"],
            "d_model": config["d_model"],
            "d_head": config["d_head"],
            "n_ctx": config["n_ctx"],
            "d_vocab": config["d_vocab"],
            "attn_only": config["attn_only"],
            "normalization_type": config["normalization_type"],
            "positional_embedding_type": config["positional_embedding_type"],
            "n_params": sum(p.numel() for p in model.parameters()),
        },
        "tokenizer": {
            "kind": "word-level, whitespace split; <bos> prepended once",
            "vocab_size": VOCAB_SIZE,
            "specials": {"<bos>": 0, "<unk>": 1, "<pad>": 2},
            "vocab": list(VOCAB),
        },
        "training": {
            **{k: recipe[k] for k in ("steps", "seed", "lr", "warmup_steps", "min_lr_ratio", "weight_decay", "betas", "batch_size", "seq_len", "threads", "optimizer")},
            "data": DATA_DESCRIPTION.format(**recipe),
            "data_params": {k: recipe[k] for k in ("min_seg", "max_seg", "max_gap", "distinct", "mask_misleading")},
            "torch_version": torch.__version__,
            "command": f"python -m circuitcheck.zoo.train {name}",
        },
        "final_checkpoint": final["name"],
        "final_train_loss": _round(recent[-1]),
        "final_train_loss_mean_last_100": _round(sum(last) / len(last)),
        "score_method": (
            "circuitcheck.heads.head_scores(model, kind) at its defaults: 16 seeded prompts <bos> r r, "
            "r of 20 random ordinary tokens, BOS column excluded except for kind 'bos'; "
            f"mean over prompts, rounded to {CARD_DECIMALS} decimals; [layer][head]"
        ),
        "score_kinds": list(CARD_KINDS),
        "scores": final["scores"],
        "checkpoints": card_checkpoints,
    }
    if spec["circuits"]:
        from .circuits import find_induction_circuit

        scores = final["scores"]
        heads = heads_above(scores["previous_token"], 0.5, layer=0) + heads_above(scores["induction"], 0.5, layer=1)
        model.eval()
        card.update(find_induction_circuit(model, heads))
    (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (staging / "CARD.md").write_text(card_markdown(card))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    print(f"{name}: wrote {out_dir}", flush=True)
    return card


def _round(value):
    return None if value is None else round(float(value), CARD_DECIMALS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m circuitcheck.zoo.train", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*SPECS, "all"])
    parser.add_argument("--explore", action="store_true", help="log scores every --log-every steps; write nothing")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (with --explore)")
    args = parser.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    for name in SPECS if args.name == "all" else [args.name]:
        train(name, explore=args.explore, log_every=args.log_every, overrides=overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
