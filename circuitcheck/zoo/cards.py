"""A zoo model's ``CARD.md``: its ``card.json`` written for people.

Used by training (``zoo.train``) and by refreshing a card's circuits
(``zoo.circuits``), so it lives below both.
"""

from __future__ import annotations


def _score_table(scores: list[list[float]]) -> list[str]:
    n_heads = len(scores[0])
    lines = ["| layer | " + " | ".join(f"H{h}" for h in range(n_heads)) + " |"]
    lines.append("|---" * (n_heads + 1) + "|")
    for layer, row in enumerate(scores):
        lines.append(f"| L{layer} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return lines


def card_markdown(card: dict) -> str:
    """The human-readable ``CARD.md`` of a card."""
    cfg, tr = card["config"], card["training"]
    lines = [f"# {card['name']}", "", card["description"], ""]
    lines += ["## Model", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in cfg.items()]
    lines += ["", f"Tokenizer: {card['tokenizer']['kind']}; {card['tokenizer']['vocab_size']} tokens: "
              + " ".join(f"`{t}`" for t in card["tokenizer"]["vocab"]), ""]
    lines += ["## Training", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {tr[k]} |" for k in ("optimizer", "steps", "lr", "warmup_steps", "min_lr_ratio", "weight_decay", "betas", "batch_size", "seq_len", "seed", "threads", "torch_version")]
    lines += [f"| data params | {tr['data_params']} |", f"| final train loss | {card['final_train_loss']} |",
              f"| mean train loss, last 100 steps | {card['final_train_loss_mean_last_100']} |", ""]
    lines += [tr["data"], "", f"Regenerate: `{tr['command']}`", ""]
    if "circuits" in card:
        lines += ["## Circuits", ""]
        lines += [f"- `{k}`: `{v}`" for k, v in card["circuits"].items()]
        lines += ["", f"Rule: {card['circuit_rule']}.", ""]
        if "circuit_evidence" in card:
            ev = card["circuit_evidence"]
            lines += [f"Evidence: recovery {ev['recovery']} (95% CI {ev['recovery_ci'][0]} to {ev['recovery_ci'][1]}), "
                      f"drop {ev['drop']} (95% CI {ev['drop_ci'][0]} to {ev['drop_ci'][1]}); "
                      f"dropped from the candidates: {', '.join(ev['dropped']) or 'none'}.", ""]
            if "incompleteness" in ev:
                lines += [f"Minimal by the {ev['minimality_method']} method (weakest {ev['weakest']}, 95% CI {ev['weakest_ci'][0]} to "
                          f"{ev['weakest_ci'][1]}); complete: incompleteness {ev['incompleteness']} (95% CI "
                          f"{ev['incompleteness_ci'][0]} to {ev['incompleteness_ci'][1]}, worst K = {{{ev['worst_k']}}}).", ""]
            for group in ev.get("redundancy", []):
                lines += [f"Backup heads: {group} (leave-one-out minimality therefore fails for them, and names them).", ""]
            for smaller, info in ev.get("without_backup", {}).items():
                verdict = "complete" if info["complete"] else "not complete: it misses the backup path"
                lines += [f"- without {info['without']} (`{smaller}`): recovery {info['recovery']}, incompleteness "
                          f"{info['incompleteness']} (95% CI {info['incompleteness_ci'][0]} to {info['incompleteness_ci'][1]}): {verdict}."]
            if ev.get("without_backup"):
                lines += [""]
    lines += [f"## Head scores of the final model ({card['final_checkpoint']})", "", card["score_method"] + ".", ""]
    for kind in card["score_kinds"]:
        lines += [f"### {kind}", ""] + _score_table(card["scores"][kind]) + [""]
    lines += ["## Checkpoints", "", "Best head per kind (max over heads) and per layer:", ""]
    n_layers = len(card["scores"]["induction"])
    header = ["checkpoint", "train loss"] + [f"{kind} max L{l}" for kind in ("previous_token", "induction") for l in range(n_layers)] + ["duplicate_token max", "bos max"]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for ck in card["checkpoints"]:
        s = ck["scores"]
        row = [ck["name"], "-" if ck["train_loss"] is None else f"{ck['train_loss']:.4f}"]
        row += [f"{max(s[kind][l]):.3f}" for kind in ("previous_token", "induction") for l in range(n_layers)]
        row += [f"{max(max(r) for r in s['duplicate_token']):.3f}", f"{max(max(r) for r in s['bos']):.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Every head's score at every checkpoint is in `card.json`.", ""]
    return "\n".join(lines)
