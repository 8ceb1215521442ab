"""The report's copy of each built-in claim kind's ``section`` and ``definition``, in registry order.

Generated from :mod:`circuitcheck.claims.registry` by ``python -m circuitcheck.report.kinds``:
do not edit; change the record beside the check and regenerate (see :mod:`circuitcheck.report.kinds`).
"""

KINDS = {
    "direct_effect": {
        "section": "direct",
        "definition": "Direct effects: each component's mean direct logit attribution (red raises the answer, blue lowers it)."
    },
    "top_direct_effects": {
        "section": "direct",
        "definition": "Direct effects: each component's mean direct logit attribution (red raises the answer, blue lowers it)."
    },
    "copying_head": {
        "section": "copying",
        "definition": "Copying: the OV circuit's copying score of every head (−1..1)."
    },
    "composition": {
        "section": "composition",
        "definition": "Composition: how much of a receiver head's query, key or value input a sender head's output can reach, next to random matrices of the same shapes."
    },
    "necessary": {
        "section": "necessity",
        "definition": "drop(C) = (m(M) − m(M\\C)) / (m(M) − m(∅)): the share of the task's performance lost when C is ablated. A claim holds when the lower bound of its interval clears the threshold."
    },
    "sufficient": {
        "section": "sufficiency",
        "definition": "recovery(C) = (m(C) − m(∅)) / (m(M) − m(∅)): the share of performance the circuit recovers on its own (every other head and MLP output ablated; faithfulness as in the IOI paper and MIB)."
    },
    "minimal": {
        "section": "minimality",
        "definition": "contribution(v) = recovery(C) − recovery(C \\ {v}) for every component v; the circuit is minimal when every component's lower bound clears the threshold. Components are sorted, weakest first."
    },
    "path": {
        "section": "paths",
        "definition": "Path patching: the share of the clean-corrupt gap carried by the direct path from sender to receiver."
    },
    "previous_token_head": {
        "section": "attention",
        "definition": "previous-token score: attention from each position i to i-1 (mean over positions and prompts, BOS excluded unless asked; TransformerLens head_detector's \"mul\" measure)."
    },
    "duplicate_token_head": {
        "section": "attention",
        "definition": "duplicate-token score: attention to earlier copies of the same token (mean over positions and prompts, BOS excluded unless asked; TransformerLens head_detector's \"mul\" measure)."
    },
    "induction_head": {
        "section": "attention",
        "definition": "induction score: on repeated random tokens, attention from the second copy of a token to the position after its first copy (mean over positions and prompts, BOS excluded unless asked; TransformerLens head_detector's \"mul\" measure)."
    },
    "bos_head": {
        "section": "attention",
        "definition": "BOS score: attention to the first (BOS) token (mean over positions and prompts, BOS excluded unless asked; TransformerLens head_detector's \"mul\" measure)."
    },
    "pattern_head": {
        "section": "attention",
        "definition": "pattern score: the share of attention on a user-given pattern (mean over positions and prompts, BOS excluded unless asked)."
    },
    "logit_lens": {
        "section": "lens",
        "definition": "Logit lens: KL(final ‖ lens) of each layer's residual stream read through the unembedding, and how often its top token is the model's."
    },
    "probe": {
        "section": "probe",
        "definition": "Probes: test accuracy of a linear probe next to the majority class and a probe trained on shuffled labels."
    }
}
