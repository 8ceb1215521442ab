"""Executable spec files (``*.circuit.yaml``): collection, running, validation errors, starter specs."""

from __future__ import annotations

import textwrap

import pytest

# Imported here, before any inner pytester run: modules first imported inside one are
# dropped from sys.modules afterwards, and a re-imported circuitcheck.model.tasks would make a
# second Task class.
import circuitcheck.claims.causal  # noqa: F401
import circuitcheck.model.tasks  # noqa: F401
from circuitcheck import CircuitCheckError
from circuitcheck.spec import SpecError, load_spec, new_spec_text, write_new_spec

HOOK = '''
def pytest_collect_file(file_path, parent):
    if file_path.name.endswith(".circuit.yaml"):
        from circuitcheck.spec import SpecFile
        return SpecFile.from_parent(parent, path=file_path)
'''

# A small induction task keeps the causal claims fast.
SMALL_TASK = """\
task:
  name: induction
  n_prompts: 8
  seq_len: 10
"""


def write_spec(pytester, text: str, name: str = "claims.circuit.yaml"):
    """Write a spec; register the collector through a conftest until the plugin has the hook itself."""
    import circuitcheck.pytest_plugin.plugin

    if not hasattr(circuitcheck.pytest_plugin.plugin, "pytest_collect_file") and not (pytester.path / "conftest.py").exists():
        pytester.makeconftest(HOOK)
    path = pytester.path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def spec_error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec("s.circuit.yaml", text=textwrap.dedent(text).lstrip())
    return str(info.value)


# Running ----------------------------------------------------------------------------------------


def test_a_spec_runs_one_item_per_claim(pytester):
    write_spec(
        pytester,
        "model: zoo:induction-2l\n" + SMALL_TASK + textwrap.dedent("""
        circuits:
          induction: L0H0 L0H2 L1H0 L1H2 L1H3
        claims:
          - kind: previous_token_head
            layer: 0
            head: 0
            min_score: 0.8
          - kind: induction_head
            layer: 0
            head: 1
            max_score: 0.3
          - kind: necessary
            circuit: induction
            min_drop: 0.5
          - kind: path
            sender: L0H0
            receiver: L1H0.k
            min_effect: 0.05
          - id: L1H1 is a previous-token head
            kind: previous_token_head
            layer: 1
            head: 1
            min_score: 0.5
            xfail: "L1H1 is an induction head"
        """),
    )
    result = pytester.runpytest("-v", "--circuitcheck-json=out.json")
    result.assert_outcomes(passed=4, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*claims.circuit.yaml::previous_token_head L0H0 PASSED*",
            "*claims.circuit.yaml::not induction_head L0H1 PASSED*",
            "*claims.circuit.yaml::necessary induction PASSED*",
            "*claims.circuit.yaml::path L0H0 -> L1H0.k PASSED*",  # the id's '.' is kept
            "*claims.circuit.yaml::L1H1 is a previous-token head XFAIL*",
        ]
    )
    import json

    tests = json.loads((pytester.path / "out.json").read_text())["tests"]
    claims = {test["nodeid"].split("::")[1]: test["claims"] for test in tests}
    assert claims["necessary induction"][0]["kind"] == "necessary"
    assert claims["necessary induction"][0]["n"] == 8  # the spec's task
    assert claims["previous_token_head L0H0"][0]["passed"] is True


def test_a_failing_claim_prints_the_lab_note_and_the_spec_line(pytester):
    write_spec(
        pytester,
        """
        model: zoo:induction-2l
        claims:
          - kind: induction_head
            layer: 1
            head: 3
            min_score: 0.95
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*induction_head L1H3 (claims[[]0[]])*",
            "claim failed: L1H3 is an induction head (model zoo:induction-2l)",
            "  measured: induction score 0.8*",
            "spec: claims.circuit.yaml:3: claims[[]0[]] (induction_head L1H3) on zoo:induction-2l",
            "FAILED claims.circuit.yaml::induction_head L1H3 - claim failed: L1H3*",
        ]
    )
    assert "Traceback" not in result.stdout.str() and "def runtest" not in result.stdout.str()


def test_checkpoints_give_one_item_per_claim_per_checkpoint(pytester):
    write_spec(
        pytester,
        """
        model: zoo:induction-2l
        checkpoints: [step0, step3000]
        claims:
          - kind: induction_head
            layer: 1
            head: 0
            min_score: 0.8
          - kind: induction_head
            layer: 0
            head: 1
            max_score: 0.3
        """,
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*::induction_head L1H0[[]step0[]] FAILED*",
            "*::not induction_head L0H1[[]step0[]] PASSED*",
            "*::induction_head L1H0[[]step3000[]] PASSED*",
            "*::not induction_head L0H1[[]step3000[]] PASSED*",
            "claim failed: L1H0 is an induction head (model zoo:induction-2l@step0)",
        ]
    )


def test_checkpoints_all_lists_the_zoo_checkpoints_and_is_an_error_elsewhere():
    from circuitcheck import zoo

    spec = load_spec("s.circuit.yaml", text="model: zoo:induction-2l\ncheckpoints: all\nclaims: []\n")
    assert spec.checkpoints == zoo.checkpoints("induction-2l")
    assert spec.model_specs()[0] == (f"zoo:induction-2l@{spec.checkpoints[0]}", spec.checkpoints[0])
    message = spec_error("model: gpt2\ncheckpoints: all\nclaims: []\n")
    assert "s.circuit.yaml:2: checkpoints 'all' is not available for model 'gpt2'" in message
    assert "s.circuit.yaml:2: checkpoints 'step9': zoo model 'induction-2l' has no such checkpoint" in spec_error(
        "model: zoo:induction-2l\ncheckpoints: [step0, step9]\nclaims: []\n"
    )


def test_the_task_is_built_once_per_model_and_task(pytester, monkeypatch):
    import circuitcheck.model.tasks

    built = []
    original = circuitcheck.model.tasks.induction

    def counting(model, **kwargs):
        built.append(kwargs)
        return original(model, **kwargs)

    monkeypatch.setattr(circuitcheck.model.tasks, "induction", counting)
    write_spec(
        pytester,
        "model: zoo:induction-2l\n" + SMALL_TASK + textwrap.dedent("""
        claims:
          - kind: sufficient
            circuit: L0H0 L0H2 L1H0 L1H2 L1H3
            min_recovery: 0.8
          - kind: necessary
            circuit: L0H0 L0H2 L1H0 L1H2 L1H3
            min_drop: 0.5
            seed: 3
        """),
    )
    pytester.runpytest("--circuitcheck-seed=5").assert_outcomes(passed=2)
    assert built == [{"n_prompts": 8, "seq_len": 10, "seed": 5}]  # the task's seed: the run's seed


def test_a_usage_error_while_running_points_to_the_spec_line(pytester):
    write_spec(
        pytester,
        """
        model: zoo:induction-2l
        task:
          clean: ["a b c a b"]
          corrupt: ["a b c d e"]
          answers: ["c d"]
          wrong_answers: [e]
        claims:
          - kind: necessary
            circuit: L1H0
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["error: answer 'c d' is 2 tokens; answers must be single tokens*", "spec: claims.circuit.yaml:3: task (necessary L1H0) on zoo:induction-2l"]
    )
    assert "Traceback" not in result.stdout.str()


def test_a_prompts_task_builds_with_from_prompts(induction_2l):
    spec = load_spec(
        "s.circuit.yaml",
        text=textwrap.dedent(
            """
            model: zoo:induction-2l
            task:
              name: copy
              clean: ["a b c d a b c", "x y z w x y z"]
              corrupt: ["a b c d e f g", "x y z w q r s"]
              answers: [d, w]
              wrong_answers: [e, q]
            claims: []
            """
        ),
    )
    task = spec.task.build(induction_2l, default_seed=0)
    assert (task.name, task.n_examples, task.seq_len) == ("copy", 2, 8)


# Validation errors: file, line and key, with what is allowed ---------------------------------------

HEAD = "model: zoo:induction-2l\nclaims:\n  - kind: induction_head\n    layer: 1\n    head: 0\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param(
            "model: zoo:induction-2l\nclaims:\n  - kind: inductoin_head\n    layer: 1\n    head: 0\n",
            "s.circuit.yaml:3: claims[0].kind 'inductoin_head' is not valid (did you mean 'induction_head'?): valid kinds are previous_token_head, duplicate_token_head, induction_head, bos_head, pattern_head, necessary, sufficient, path, minimal, complete, faithful, logit_lens, direct_effect, top_direct_effects, copying_head, composition, probe",
            id="bad-kind",
        ),
        pytest.param(
            HEAD + "    min_scor: 0.8\n",
            "s.circuit.yaml:6: claims[0]: unknown key 'min_scor' (did you mean 'min_score'?): an induction_head claim takes kind, id, xfail, tolerance, layer, head, min_score, max_score,",
            id="unknown-key",
        ),
        pytest.param(
            "model: zoo:induction-2l\nclaims:\n  - kind: previous_token_head\n    layer: 0\n",
            "s.circuit.yaml:3: claims[0]: missing required key 'head': a previous_token_head claim needs layer, head",
            id="missing-key",
        ),
        pytest.param(HEAD + "    min_score: high\n", "s.circuit.yaml:6: claims[0].min_score must be a number, got 'high' (a string)", id="wrong-type"),
        pytest.param(
            "model: zoo:induction-2l\nclaims:\n  - kind: induction_head\n    layer: one\n    head: 0\n",
            "s.circuit.yaml:4: claims[0].layer must be an integer, got 'one' (a string)",
            id="wrong-type-int",
        ),
        pytest.param(
            "model: zoo:induction-2l\ntask: induction\ncircuits:\n  induction: L0H0 L1H0\nclaims:\n  - kind: necessary\n    circuit: inducton\n",
            "s.circuit.yaml:7: claims[0].circuit 'inducton' is neither a circuit of this spec (did you mean 'induction'?) nor a component string: circuits defined here are induction",
            id="unknown-circuit",
        ),
        pytest.param(
            "model: zoo:induction-2l\ncircuits:\n  induction: L0H0 L1Q0\nclaims: []\n",
            "s.circuit.yaml:3: circuits.induction cannot parse component 'L1Q0': valid forms: L{layer}H{head}",
            id="bad-component",
        ),
        pytest.param(
            "model: zoo:induction-2l\ntask: induction\nclaims:\n  - kind: path\n    sender: L0H0\n    receiver: L1H0.z\n",
            "s.circuit.yaml:6: claims[0].receiver bad head input 'z' in 'L1H0.z': a head's inputs are .q, .k and .v (or 'logits')",
            id="bad-receiver",
        ),
        pytest.param(
            "model: zoo:induction-2l\nclaims:\n  - kind: induction_head\n    layer: [1\n    head: 0\n",
            "s.circuit.yaml:5: invalid YAML (column 9): expected ',' or ']', but got ':' (while parsing a flow sequence on line 4)",
            id="yaml-syntax",
        ),
        pytest.param(
            "model: zoo:induction-2l\nclaims:\n  - kind: induction_head\n    layer: 2\n    head: 0\n",
            "s.circuit.yaml:4: claims[0]: layer 2 does not exist in L2H0: model zoo:induction-2l has layers 0-1",
            id="zoo-layer-out-of-range",
        ),
        pytest.param("model: zoo:induction-9l\nclaims: []\n", "s.circuit.yaml:1: model 'zoo:induction-9l': no zoo model named 'induction-9l'", id="unknown-zoo-model"),
        pytest.param("model: zoo:induction-2l\n", "s.circuit.yaml:1: missing required key 'claims': a spec needs model, claims", id="missing-claims"),
        pytest.param("model: zoo:induction-2l\nclaim: []\n", "s.circuit.yaml:2: unknown key 'claim' (did you mean 'claims'?)", id="unknown-top-key"),
        pytest.param(
            "model: zoo:induction-2l\nclaims:\n  - kind: necessary\n    circuit: L1H0\n",
            "s.circuit.yaml:3: claims[0]: a necessary claim needs the spec's task: add a top-level `task:`",
            id="no-task",
        ),
        pytest.param("model: zoo:induction-2l\ntask: inductoin\nclaims: []\n", "s.circuit.yaml:2: task 'inductoin' is not a built-in task (did you mean 'induction'?)", id="bad-task"),
        pytest.param(HEAD + "    xfail: true\n", "s.circuit.yaml:6: claims[0].xfail must be a non-empty string", id="xfail-not-a-reason"),
        pytest.param(HEAD + "    tolerance: {abs: 0.1, rell: 0.2}\n", "s.circuit.yaml:6: claims[0].tolerance must be a number or a mapping with abs and/or rel", id="bad-tolerance"),
        pytest.param(HEAD + "    min_score: 0.8\n    max_score: 0.5\n", "s.circuit.yaml:6: claims[0]: min_score=0.8 is above max_score=0.5", id="min-above-max"),
        pytest.param(HEAD + "    layer: 0\n", "s.circuit.yaml:6: duplicate key 'layer' (first given on line 4)", id="duplicate-key"),
        pytest.param(HEAD + "    id: x\n" + HEAD.split("claims:\n")[1] + "    id: x\n", "s.circuit.yaml:10: claims[1].id 'x' is already used by claims[0]", id="duplicate-id"),
        pytest.param(HEAD + "    id: a::b\n", "s.circuit.yaml:6: claims[0].id 'a::b' is not valid: an id is one line without '::'", id="bad-id"),
        pytest.param("- model\n", "s.circuit.yaml:1: a spec is a mapping with keys model,", id="not-a-mapping"),
        pytest.param("", "s.circuit.yaml:1: the spec is empty", id="empty"),
    ],
)
def test_validation_errors_name_file_line_and_key(text, expected):
    assert expected in spec_error(text)


def test_every_problem_of_a_file_is_reported_in_file_order():
    message = spec_error(
        "model: zoo:induction-2l\nclaims:\n  - kind: bogus\n  - kind: induction_head\n    layer: x\n    head: 0\n    extra: 1\n"
    )
    lines = message.splitlines()
    assert [line.split(":")[1] for line in lines] == ["3", "5", "7"]


def test_optional_keys_and_defaults_are_accepted():
    spec = load_spec(
        "s.circuit.yaml",
        text=textwrap.dedent(
            """
            model: zoo:induction-2l
            description: all the optional keys
            task: {name: induction, n_prompts: 4, seq_len: 6, seed: 2}
            circuits:
              induction: [L0H0, L1H0]
            claims:
              - kind: bos_head
                layer: 1
                head: 0
                max_score: 0.6
                tolerance: {abs: 0.02}
              - kind: sufficient
                circuit: induction
                min_recovery: 0.5
                ablation: noise(0.1)
                confidence: 0.9
                tolerance: 0.05
              - kind: path
                sender: [L0H0, L0H2]
                receiver: logits
                max_effect: 0.9
                direction: denoise
              - kind: sufficient
                circuit: induction
            """
        ),
    )
    assert [c.id for c in spec.claims] == ["not bos_head L1H0", "sufficient induction", "not path L0H0 + L0H2 -> logits", "sufficient induction #2"]
    assert spec.claims[0].tolerance == {"abs": 0.02} and spec.claims[1].tolerance == 0.05
    assert spec.claims[1].params == {"circuit": spec.circuits["induction"], "min_recovery": 0.5, "ablation": "noise(0.1)", "confidence": 0.9}
    assert spec.task.params == {"n_prompts": 4, "seq_len": 6, "seed": 2}


def test_a_collection_error_shows_the_problems_without_a_traceback(pytester):
    write_spec(pytester, "model: zoo:induction-2l\nclaims:\n  - kind: inductoin_head\n    layer: 1\n    head: 0\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting claims.circuit.yaml*",
            "claims.circuit.yaml:3: claims[[]0[]].kind 'inductoin_head' is not valid*",
            "ERROR claims.circuit.yaml - claims.circuit.yaml:3: claims*",
        ]
    )
    assert "Traceback" not in result.stdout.str() and "spec.py" not in result.stdout.str()


# Starter specs ---------------------------------------------------------------------------------------


def test_the_starter_spec_for_a_zoo_model_is_valid_and_passes(pytester):
    text = new_spec_text("zoo:induction-2l")
    spec = load_spec("new.circuit.yaml", text=text)
    kinds = [claim.kind for claim in spec.claims]
    assert {"previous_token_head", "induction_head", "necessary", "sufficient", "minimal"} <= set(kinds)
    assert "induction" in spec.circuits
    write_spec(pytester, text, name="new.circuit.yaml")
    result = pytester.runpytest()
    result.assert_outcomes(passed=len(spec.claims))


def test_starter_specs_for_other_models_are_commented_templates():
    spec = load_spec("new.circuit.yaml", text=new_spec_text("gpt2"))
    assert spec.model == "gpt2" and spec.claims == []
    assert load_spec("new.circuit.yaml", text=new_spec_text("zoo:induction-1l")).claims  # "is not" claims for a control
    with pytest.raises(CircuitCheckError, match="no zoo model named 'nope'"):
        new_spec_text("zoo:nope")


def test_write_new_spec_never_overwrites(tmp_path):
    path = write_new_spec(tmp_path / "ind.circuit.yaml", "zoo:induction-2l")
    assert path.read_text() == new_spec_text("zoo:induction-2l")
    with pytest.raises(CircuitCheckError, match="already exists"):
        write_new_spec(path, "zoo:induction-1l")
    assert path.read_text() == new_spec_text("zoo:induction-2l")
    assert write_new_spec(tmp_path, "zoo:induction-1l") == tmp_path / "induction-1l.circuit.yaml"
    with pytest.raises(CircuitCheckError, match=r"does not end with \.circuit\.yaml"):
        write_new_spec(tmp_path / "spec.yaml", "zoo:induction-2l")


def test_the_example_suite_spec_is_valid():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "example_suites" / "induction-2l.circuit.yaml"
    spec = load_spec(path)
    assert spec.model == "zoo:induction-2l" and set(spec.circuits) == {"induction"}
    assert [c.kind for c in spec.claims].count("induction_head") == 3
    assert [c.id for c in spec.claims if c.xfail] == ["the backup head L1H1 belongs in the minimal circuit"]


# The schema comes from the registry ------------------------------------------------------------------


def test_the_shipped_schema_document_lists_every_kind_as_the_registry_declares_it():
    from circuitcheck.spec import schema

    text = schema.SCHEMA_FILE.read_text(encoding="utf-8")
    assert schema.schema_document(text) == text, "run `python -m circuitcheck spec schema --write`"
    assert "DESIGN.md" not in text


def test_every_parameter_type_of_the_registry_has_a_validator():
    from circuitcheck.claims import registry
    from circuitcheck.spec import schema

    assert set(schema.VALIDATORS) == set(registry.PARAM_TYPES)
    for kind in registry.kinds().values():
        assert all(param.type in schema.VALIDATORS for param in kind.params), kind.name


# Every kind is expressible: tokens tasks, references to module:function, lens, probes ---------------------

METRICS_MODULE = '''
import torch


def second_copy_logprob(logits, task):
    """Mean log-probability of the next token over the second half of each prompt."""
    half = task.clean.shape[1] // 2
    logprobs = logits[:, half:-1].log_softmax(-1)
    return logprobs.gather(-1, task.clean[:, half + 1:, None].to(logits.device))[..., 0].mean(-1)


def parity(tokens):
    """Labels: whether each token id is even."""
    return tokens % 2
'''


def test_a_tokens_task_with_a_metric_and_labels_from_modules_beside_the_spec_runs(pytester):
    from circuitcheck import tasks, zoo

    task = tasks.induction(zoo.load("induction-2l"), n_prompts=8, seq_len=10, seed=1)
    pytester.makepyfile(spec_helpers=METRICS_MODULE)
    (pytester.path / "spec_helpers.py").rename(pytester.path / "specs_helpers_mod.py")
    specs = pytester.mkdir("specs")
    (pytester.path / "specs_helpers_mod.py").rename(specs / "spec_helpers.py")  # beside the spec, not on sys.path
    write_spec(
        pytester,
        f"""
        model: zoo:induction-2l
        task:
          name: repeats
          clean: {task.clean.tolist()}
          corrupt: {task.corrupt.tolist()}
          metric: spec_helpers:second_copy_logprob
        claims:
          - kind: sufficient
            circuit: L0H0 L0H2 L1H0 L1H2 L1H3
            min_recovery: 0.7
          - kind: logit_lens
            layer: 0
            max_kl: 0.5
            xfail: "layer 0 does not predict the second copy yet"
          - kind: probe
            hook: hook_embed
            labels: spec_helpers:parity
            what: the parity of the token id
            min_accuracy: 0.5
        """,
        name="specs/tokens.circuit.yaml",
    )
    result = pytester.runpytest("-v", "specs")
    result.assert_outcomes(passed=2, xfailed=1)
    result.stdout.fnmatch_lines(["*::sufficient L0H0 L0H2 L1H0 L1H2 L1H3 PASSED*", "*::probe hook_embed spec_helpers:parity PASSED*"])


def test_a_reference_that_cannot_be_imported_is_an_error_at_the_claims_line(pytester):
    write_spec(
        pytester,
        """
        model: zoo:induction-2l
        claims:
          - kind: head_matches_pattern
            layer: 1
            head: 0
            pattern: no_such_module:pattern
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["error: cannot import 'no_such_module' for 'no_such_module:pattern'*", "spec: claims.circuit.yaml:3: claims[[]0[]]*"])


@pytest.mark.parametrize(
    "claim, expected",
    [
        pytest.param("kind: probe\n    hook: hook_embed\n    labels: previous_tokens\n    min_accuracy: 0.5",
                     "5: claims[0].labels 'previous_tokens' is not valid (did you mean 'previous_token'?): give one of previous_token, "
                     "current_token, position, or a reference 'module:function'", id="bad-labeller"),
        pytest.param("kind: logit_lens\n    layer: 1\n    positions: one", "5: claims[0].positions must be a position", id="bad-positions"),
        pytest.param("kind: logit_lens\n    layer: 1\n    lens: tunde", "5: claims[0].lens 'tunde' is not valid: valid values are logit, tuned",
                     id="bad-choice"),
        pytest.param("kind: logit_lens_converges_by\n    layer: 1", "3: claims[0]: a logit_lens claim needs the spec's task: add a top-level "
                     "`task:` (e.g. `task: induction`), or give prompt", id="lens-without-task-or-prompt"),
        pytest.param("kind: composition\n    sender: L0H0\n    receiver: L1H0.z\n    min_score: 0.1", "5: claims[0].receiver bad head input 'z'",
                     id="bad-component"),
        pytest.param("kind: copying_head\n    layer: 1\n    head: 7", "4: claims[0]: head 7 does not exist", id="zoo-head-out-of-range"),
    ],
)
def test_the_new_kinds_are_validated_with_file_line_and_key(claim, expected):
    assert f"s.circuit.yaml:{expected}" in spec_error(f"model: zoo:induction-2l\nclaims:\n  - {claim}\n")


def test_a_tokens_task_is_checked_for_shape_and_answers():
    assert "s.circuit.yaml:4: task.corrupt must have the clean inputs' shape 2 x 3, got 1 x 3" in spec_error(
        "model: zoo:induction-2l\ntask:\n  clean: [[0, 1, 2], [0, 2, 3]]\n  corrupt: [[0, 1, 1]]\n  answers: [1, 2]\n  wrong_answers: [3, 4]\nclaims: []\n"
    )
    assert "a tokens task needs answers and wrong_answers" in spec_error(
        "model: zoo:induction-2l\ntask:\n  clean: [[0, 1, 2]]\n  corrupt: [[0, 1, 1]]\nclaims: []\n"
    )


def test_the_every_kind_example_spec_uses_every_built_in_kind():
    from pathlib import Path

    from circuitcheck.claims import registry

    path = Path(__file__).resolve().parents[1] / "example_suites" / "induction-2l-every-kind.circuit.yaml"
    spec = load_spec(path)
    builtin = {kind.name for kind in registry.kinds().values() if kind.source == "circuitcheck"}
    assert {claim.kind for claim in spec.claims} == builtin
    assert {claim.params.get("lens", "logit") for claim in spec.claims if claim.kind == "logit_lens"} == {"logit", "tuned"}


# Hostile files: refused fast, with the line ------------------------------------------------------


def _alias_bomb(levels: int) -> str:
    """A few hundred bytes whose aliases expand to 9**levels strings."""
    anchors = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    anchors += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return ("anchors:\n" + "".join(f"  {line}\n" for line in anchors)
            + f"model: zoo:induction-2l\nclaims:\n  - kind: induction_head\n    layer: *a{levels - 1}\n    head: 0\n")


@pytest.mark.parametrize("levels", [7, 9])
def test_an_alias_bomb_is_refused_fast_with_its_line(levels):
    import time

    text = _alias_bomb(levels)
    assert len(text) < 600
    start = time.perf_counter()
    with pytest.raises(SpecError) as error:
        load_spec("bomb.circuit.yaml", text=text)
    assert time.perf_counter() - start < 0.5
    message = str(error.value)
    line = int(message.split(":")[1])
    assert 2 <= line <= levels + 1  # an anchor's line
    assert message.startswith(f"bomb.circuit.yaml:{line}: aliases expand the spec by ")
    assert "at most 10,000 values may come from aliases" in message


def test_aliases_that_reuse_a_circuit_are_still_allowed():
    spec = load_spec("ok.circuit.yaml", text=textwrap.dedent("""\
        model: zoo:induction-2l
        task: induction
        claims:
          - kind: necessary
            circuit: &heads [L1H0, L1H2]
            min_drop: 0.1
          - kind: sufficient
            circuit: *heads
            min_recovery: 0.1
        """))
    assert len(spec.claims) == 2


def test_recursive_aliases_and_deep_nesting_are_refused_with_the_line():
    with pytest.raises(SpecError, match=r"^r.circuit.yaml:2: a recursive alias"):
        load_spec("r.circuit.yaml", text="model: zoo:induction-2l\nloop: &loop [1, *loop]\nclaims: []\n")
    with pytest.raises(SpecError, match=r"^d.circuit.yaml:\d+: lists and mappings are nested too deeply: at most 100 levels"):
        load_spec("d.circuit.yaml", text="model: zoo:induction-2l\nclaims: " + "[" * 150 + "]" * 150 + "\n")


def test_an_oversized_or_non_utf8_spec_file_is_an_error_naming_it(tmp_path, monkeypatch):
    import circuitcheck.spec.yaml as spec_yaml

    monkeypatch.setattr(spec_yaml, "MAX_SPEC_BYTES", 1000)
    monkeypatch.setattr("circuitcheck.spec.load.MAX_SPEC_BYTES", 1000)
    big = tmp_path / "big.circuit.yaml"
    big.write_text("model: zoo:induction-2l\nclaims: []\n" + "# padding\n" * 200)
    with pytest.raises(SpecError, match=r"big.circuit.yaml:1: the spec is 2,035 bytes: spec files are at most 1,000 bytes"):
        load_spec(big)
    latin = tmp_path / "latin.circuit.yaml"
    latin.write_bytes(b"model: zoo:induction-2l\ndescription: caf\xe9\nclaims: []\n")
    with pytest.raises(SpecError, match=r"latin.circuit.yaml:2: the byte b'\\xe9' is not UTF-8 text"):
        load_spec(latin)


def test_derived_ids_of_20000_claims_are_made_unique_in_linear_time():
    import time

    from circuitcheck.spec.load import Claim, unique_ids
    from circuitcheck.spec.schema import Problems

    n = 20_000
    claims = [Claim(i, "induction_head", "L1H0 is an induction head", i + 1, {}) for i in range(n)]
    claims.append(Claim(n, "induction_head", "L1H0 is an induction head #3", n + 1, {}))  # an explicit id in the way
    problems = Problems("many.circuit.yaml")
    start = time.perf_counter()
    kept = unique_ids(claims, {n}, problems, {n: n + 1})
    assert time.perf_counter() - start < 0.5
    ids = [claim.id for claim in kept]
    assert ids[:3] == ["L1H0 is an induction head", "L1H0 is an induction head #2", "L1H0 is an induction head #3"]
    assert len(set(ids)) == len(ids) == n
    assert problems.problems == [
        f"many.circuit.yaml:{n + 1}: claims[{n}].id 'L1H0 is an induction head #3' is already used by claims[2]: ids must be unique"]


HOSTILE_MODEL_NAMES = [
    "models/a # b", "models/a#b", "models/x: y", "models/x\ninjected: 1", "models/x\nclaims: [{kind: bos_head}]",
    "- item", "'quoted'", '"double"', "true", "1.5", "null", "@at", "&anchor", "*alias", "a\u2028b", "a\rb", "tab\there",
    "%percent", "{flow}", "[flow]", "!tag", "|block", ">fold", "?key", "x,y", "caf\u00e9", "a\\b", "a\x85b",
]


@pytest.mark.parametrize("model", HOSTILE_MODEL_NAMES)
def test_a_starter_spec_loads_back_the_same_model_string(model, tmp_path):
    path = write_new_spec(tmp_path, model)
    spec = load_spec(path)
    assert spec.model == model
    assert [line for line in path.read_text().splitlines() if line.startswith("model:")] == [
        line for line in path.read_text().split("\n") if line.startswith("model:")]
    assert "injected" not in (spec.circuits or {}) and not spec.claims


# Small things a new user hit (issue 16) -------------------------------------------------------


def test_a_word_is_suggested_only_where_it_is_a_typo_or_a_shortening():
    from circuitcheck.claims import registry
    from circuitcheck.spec.schema import suggest

    kinds = list(registry.kinds())
    without_copying = [kind for kind in kinds if kind != "copying_head"]
    # sharing the word "head" does not make bos_head a guess for copying_head (or for other heads' names)
    for word in ("copying_head", "mover_head", "backup_head", "name_mover_head", "head"):
        assert suggest(word, without_copying) == "", word
    for word, meant in [("copyng_head", "copying_head"), ("copy_head", "copying_head"), ("inductoin_head", "induction_head"),
                        ("induction", "induction_head"), ("previous_head", "previous_token_head"), ("sufficiency", "sufficient")]:
        assert suggest(word, kinds) == f" (did you mean {meant!r}?)", word
    steps = ["step0", "step300", "step700", "step1000"]
    assert suggest("step800", steps) == " (did you mean 'step700'?)"  # the nearest of the equally close


def test_an_unknown_kind_sharing_only_head_with_the_known_ones_gets_no_wrong_guess():
    text = spec_error("model: zoo:induction-2l\nclaims:\n  - kind: mover_head\n    layer: 1\n    head: 0\n")
    assert "claims[0].kind 'mover_head' is not valid: valid kinds are previous_token_head" in text
    assert "did you mean" not in text


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        pytest.param("model: zoo:induction-2l\ntask:\n  clean: [a b on]\n  corrupt: [a b c]\n  answers: [on]\n  wrong_answers: [c]\n"
                     "claims: []\n", "task.answers must be a non-empty list of strings, got [True] (a list)", id="answers"),
        pytest.param("model: zoo:induction-2l\nclaims:\n  - kind: logit_lens\n    layer: 0\n    prompt: yes\n",
                     "claims[0].prompt must be a string or a non-empty list of strings, got True (true/false)", id="prompt"),
        pytest.param("model: zoo:induction-2l\nclaims:\n  - kind: logit_lens\n    layer: 0\n    prompt: a b\n    lens: off\n",
                     "claims[0].lens False is not valid: valid values are logit, tuned", id="choice"),
    ],
)
def test_an_unquoted_yaml_on_off_yes_no_gets_a_hint_to_quote_it(spec, where):
    text = spec_error(spec)
    assert where in text
    word = "off, no or false as false: quote it, e.g. 'off'" if "off" in spec else "on, yes or true as true: quote it, e.g. 'on'"
    assert f"(YAML reads an unquoted {word}, to write the word)" in text


def test_a_string_given_as_a_string_gets_no_yaml_hint():
    assert "YAML reads" not in spec_error("model: zoo:induction-2l\nclaims:\n  - kind: logit_lens\n    layer: 0\n    prompt: 7\n")


def test_the_shipped_documents_name_only_documents_the_project_has():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shipped = {path.name for path in root.rglob("*.md") if ".venv" not in path.parts}
    for document in ("circuitcheck/spec/spec_schema.md", "circuitcheck/report/SCHEMA.md", "README.md", "example_suites/README.md"):
        named = set(re.findall(r"([A-Za-z0-9_-]+\.md)\b", (root / document).read_text()))
        assert named <= shipped, f"{document} names {sorted(named - shipped)}, which the project does not have"


def test_the_readme_shows_boolean_options_at_their_defaults():
    # `above_random=True` in the assertion table read as if it were the default; it is False
    import inspect
    import re
    from pathlib import Path

    import circuitcheck as cc

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `(?:cc\.)?(assert_\w+)\((.*?)\)`", readme, re.M)
    assert any(name == "assert_composition" for name, _ in rows)
    for name, arguments in rows:
        twin = "check_" + name.removeprefix("assert_")  # assert_* often passes **kwargs on to its check_* twin
        parameters = inspect.signature(getattr(cc, twin) if twin in cc.__all__ else getattr(cc, name)).parameters
        for key, value in re.findall(r"(\w+)=(True|False)\b", arguments):
            assert key in parameters and parameters[key].default is (value == "True"), f"README shows {name}({key}={value})"
