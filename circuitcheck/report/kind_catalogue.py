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
        "definition": "drop(C) = (m(M) − m(M\\C)) / (m(M) − m(∅)): the share of the task's performance lost when C is ablated. A node circuit: M\\C ablates C's head and MLP outputs, ∅ every head and MLP output. An edge circuit: M\\C ablates only C's edges (through an edge of C the receiver reads the sender's ablated output, through every other edge the live one), ∅ ablates every edge, the embeddings' too. A claim holds when the lower bound of its interval clears the threshold."
    },
    "sufficient": {
        "section": "sufficiency",
        "definition": "recovery(C) = (m(C) − m(∅)) / (m(M) − m(∅)): the share of performance the circuit recovers on its own (faithfulness as in the IOI paper and MIB). A node circuit keeps its components and ablates every other head and MLP output. An edge circuit keeps only its edges: every receiver's input (each head's q, k and v, each MLP's input, the logits) is rebuilt from its kept senders' live outputs and every other sender's ablated output; ∅ ablates every edge, the embeddings' too (under resample ablation: the corrupted run)."
    },
    "path": {
        "section": "paths",
        "definition": "Path patching: the share of the clean-corrupt gap carried by the direct path from sender to receiver."
    },
    "complete": {
        "section": "completeness",
        "definition": "incompleteness(C) = max over K ⊆ C of |recovery(C \\ K) − recovery(M \\ K)| (the IOI paper's completeness): knocking out K should hurt the circuit as much as it hurts the model; a circuit that misses a parallel path does worse than the model once K removes the path it has. For an edge circuit K is a set of its edges: recovery(C \\ K) keeps C's other edges (every other edge ablated, as in sufficiency), recovery(M \\ K) ablates only K's edges. Exhaustive over K up to 12 members, greedy beyond; the worst K is reported and the claim is decided on the upper bound of the maximum."
    },
    "faithfulness_curve": {
        "section": "curves",
        "definition": "Faithfulness curve: recovery(C_n) of the circuit C_n of the top n nodes or edges by a score, for a range of n (MIB's fractions 0.1% to 100% of the graph by default). CPR is the area under it and CMD the area under |1 − recovery(C_n)| (trapezoids over the fraction kept, as MIB); CPR is decided on its lower bound, CMD on its upper bound."
    },
    "faithful": {
        "section": "completeness",
        "definition": "faithfulness error(C) = |1 − recovery(C)|: recovery below 1 misses performance, recovery above 1 means the circuit leaves out components that work against the task (MIB's CMD idea). recovery as in sufficiency: a node circuit keeps its components, an edge circuit only its edges (every receiver's input rebuilt from its kept senders). Decided on the upper bound."
    },
    "previous_token_head": {
        "section": "attention",
        "definition": "previous-token score: attention from each position i to i-1 (mean over positions and prompts, BOS excluded unless asked; TransformerLens head_detector's \"mul\" measure); decided on its bootstrap interval over prompts."
    },
    "duplicate_token_head": {
        "section": "attention",
        "definition": "duplicate-token score: attention to earlier copies of the same token (mean over positions and prompts, BOS excluded unless asked; TransformerLens head_detector's \"mul\" measure); decided on its bootstrap interval over prompts."
    },
    "induction_head": {
        "section": "attention",
        "definition": "induction score: on repeated random tokens, attention from the second copy of a token to the position after its first copy (mean over positions and prompts, BOS excluded unless asked; TransformerLens head_detector's \"mul\" measure); decided on its bootstrap interval over prompts."
    },
    "bos_head": {
        "section": "attention",
        "definition": "BOS score: attention to the first (BOS) token (mean over positions and prompts, BOS excluded unless asked; TransformerLens head_detector's \"mul\" measure); decided on its bootstrap interval over prompts."
    },
    "pattern_head": {
        "section": "attention",
        "definition": "pattern score: the share of attention on a user-given pattern (mean over positions and prompts, BOS excluded unless asked); decided on its bootstrap interval over prompts."
    },
    "logit_lens": {
        "section": "lens",
        "definition": "Logit lens: KL(final ‖ lens) of each layer's residual stream read through the unembedding, and how often its top token is the model's; converged from a layer on when every later layer's KL upper bound and agreement lower bound meet the thresholds."
    },
    "minimal": {
        "section": "minimality",
        "definition": "Every member v of C must contribute: leave-one-out (default) contribution(v) = recovery(C) − recovery(C \\ {v}); IOI-style: max over K ⊆ C \\ {v} of recovery(C \\ K) − recovery(C \\ (K ∪ {v})), K reported; Shapley: v's Shapley value for the game recovery(S) over subsets S of C. For an edge circuit the members v are its edges and recovery(S) keeps only the edges in S (every other edge ablated, as in sufficiency). The circuit is minimal when every member's lower bound clears the threshold. Members are sorted, weakest first; a failing leave-one-out claim names the members that back each other up."
    },
    "probe": {
        "section": "probe",
        "definition": "Probes: test accuracy of a linear probe next to the majority class and a probe trained on shuffled labels."
    }
}
