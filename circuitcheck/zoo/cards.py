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


def _claims_line(truth: dict) -> str:
    ioi = ", ".join(f"{v} {d['contribution']:.3f} (K = {{{d['K']}}})" for v, d in truth["ioi"].items())
    return (f"recovery {truth['recovery']:.4f}, drop {truth['drop']:.4f}, incompleteness {truth['incompleteness']:.4f} "
            f"(worst K = {{{truth['worst_k']}}}); leave-one-out "
            + ", ".join(f"{v} {x:.3f}" for v, x in truth["leave_one_out"].items())
            + f"; IOI {ioi}; Shapley " + ", ".join(f"{v} {x:.3f}" for v, x in truth["shapley"].items()))


def planted_card_markdown(card: dict) -> str:
    """The human-readable ``CARD.md`` of a planted-circuit model (``zoo.planted``)."""
    cfg, gt = card["config"], card["ground_truth"]
    lines = [f"# {card['name']}", "", card["description"], ""]
    lines += ["## Model", "", "| field | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in cfg.items()]
    lines += ["", f"Weights: {card['weights']['how']}; regenerate with `{card['weights']['command']}` "
              f"(torch {card['weights']['torch_version']}). Residual-stream blocks (coordinates): "
              + ", ".join(f"{k} {a}-{b}" for k, (a, b) in card["weights"]["residual_blocks"].items()) + ".", ""]
    lines += ["## What each component does", "", "| component | role |", "|---|---|"]
    lines += [f"| {c} | {role} |" for c, role in card["roles"].items()]
    lines += ["", "## Ground truth", "", f"Measured on {gt['task']} with {gt['method']}: m(M) = {gt['m_full']}, "
              f"m(∅) = {gt['m_empty']}.", "", f"True circuit: `{card['true_circuit']}`.", ""]
    lines += ["### Necessity of every component (drop when it alone is ablated)", "", "| component | drop |", "|---|---|"]
    lines += [f"| {c} | {d:.4f} |" for c, d in gt["necessity"].items()]
    lines += ["", "### Named circuits", ""]
    for name, truth in gt["circuits"].items():
        lines += [f"- `{name}` = `{truth['components']}`: {_claims_line(truth)}."]
    swaps = gt["one_swap_recovery"]
    ordered = sorted(swaps.items(), key=lambda kv: -kv[1])
    lines += ["", f"### Recovery of the {len(swaps)} circuits one swap from the true circuit", "",
              "Highest: " + ", ".join(f"{k} {v:.4f}" for k, v in ordered[:5]) + "; lowest: "
              + ", ".join(f"{k} {v:.4f}" for k, v in ordered[-5:]) + ". Every one is in `card.json`.", ""]
    lines += ["### Head scores (TransformerLens head_detector, 'mul', BOS excluded)", ""]
    for kind, table in gt["head_scores"].items():
        lines += [f"#### {kind}", ""] + _score_table(table) + [""]
    if "claims" in card:
        heads = [c for c in card["claims"] if c["kind"].endswith("_head")]
        lines += ["## Claims and whether they are true", "",
                  "At circuitcheck's default thresholds; *borderline*: the true value is within 0.03 of the threshold (0.02 for minimality contributions). "
                  f"Head claims: {sum(c['true'] for c in heads)} of {len(heads)} are true, these:", ""]
        lines += ["- " + ", ".join(f"{c['claim']} ({c['value']:.3f})" for c in heads if c["true"]), ""]
        lines += ["| claim | true value | threshold | true |", "|---|---|---|---|"]
        lines += [f"| {c['claim']} | {c['value']:.4f} | {c['threshold']} | {'yes' if c['true'] else 'no'}"
                  f"{' (borderline)' if c['borderline'] else ''} |" for c in card["claims"] if not c["kind"].endswith("_head")]
        lines += [""]
    return "\n".join(lines)
