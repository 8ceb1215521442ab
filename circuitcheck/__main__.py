"""Command line: ``python -m circuitcheck report results.json -o report.html``, ``python -m circuitcheck power [pytest args]``,
``python -m circuitcheck discover MODEL --task TASK -o found.circuit.yaml``, ``python -m circuitcheck diff old.json new.json``,
``python -m circuitcheck baseline update results.json --baseline FILE``.

``discover`` finds a circuit (:mod:`circuitcheck.claims.discovery`), verifies
it with the exact checks and writes a spec whose claims hold at the measured
values with a stated margin (:mod:`circuitcheck.spec.discovered`); it loads
the model, so it imports torch. Exit status: 0 when the spec was written, 2 on
a usage error.

``report`` re-renders the HTML report from a ``--circuitcheck-json`` results
file, e.g. on a machine without the models; given several, it merges the
shards of one suite (several machines or CI jobs) into one report
(:func:`circuitcheck.report.merge`: each shard's environment listed, a test
in two shards refused), and ``--json`` also writes the merged document. Exit
status: 0 when the report was written, 2 on a usage error (bad arguments, a
missing or corrupt results file, shards that share a test, an output path
that is not a circuitcheck report).

``diff old.json new.json`` lists the claims whose verdict or value changed,
and the claims only one file has (:func:`circuitcheck.report.diff`). Exit
status: 0 when no verdict changed and no claim went missing, 1 when one did,
2 on a usage error.

``baseline update RESULTS... --baseline FILE [--prune]`` writes the claims of
results files (one run, or shards merged) into a baseline file as
``--circuitcheck-update-baseline`` would. Exit status: 0 when written, 2 on a
usage error (including results of an interrupted run).

``power`` runs pytest with ``--circuitcheck-power`` and the given arguments and
prints, per claim, its mutation score, killed/decided, the mutations it survived
and whether it cannot fail. Exit status: pytest's when that is not 0; else 1
when a claim cannot fail or scores below ``--min-score`` (default 0: only
claims that cannot fail count), 0 otherwise; 2 on a usage error.

Imports nothing heavy: no torch, no pandas (pytest only for ``power``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "power":  # its arguments are pytest's: argparse would take pytest's flags for its own
        return _power(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    return args.run(args, parser)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="python -m circuitcheck",
        description="circuitcheck: mechanistic-interpretability claims as pytest tests. "
        "Run the claims with pytest; use this to work with their results.",
    )
    parser.add_argument("--version", action="version", version=f"circuitcheck {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="render the HTML report from a JSON results file",
        description="Render the self-contained HTML report from a results file written by pytest --circuitcheck-json=PATH.",
        epilog="Exit status: 0 when written, 2 on a usage error (bad arguments, a missing or corrupt results file, "
        "or an output file that circuitcheck did not write, which is never overwritten).",
    )
    report.add_argument("results", type=Path, nargs="+",
                        help="the JSON results file (from --circuitcheck-json); several: the shards of one suite, merged into one report")
    report.add_argument("-o", "--output", type=Path, default=None,
                        help="the HTML file to write (default for one results file: RESULTS with the suffix .html; needed for several)")
    report.add_argument("--json", type=Path, default=None, dest="json_output",
                        help="also write the merged results document here (for baseline update or diff)")
    report.set_defaults(run=_report)

    diff = commands.add_parser(
        "diff",
        help="list the claims whose verdict or value changed between two results files",
        description="Compare two results files (from --circuitcheck-json, or merged by report --json): claims whose verdict "
        "(held, failed, regressed) or value changed, and claims only one of them has. Claims are matched by their "
        "baseline key: test id, claim text and checkpoint.",
        epilog="Exit status: 0 when no claim's verdict changed and none went missing (values may have moved; claims may "
        "have been added), 1 when a verdict changed or a claim went missing, 2 on a usage error.",
    )
    diff.add_argument("old", type=Path, help="the earlier results file")
    diff.add_argument("new", type=Path, help="the later results file")
    diff.add_argument("--tolerance", type=float, default=0.0,
                      help="ignore value changes of at most this much, absolute (default 0: every change at 6 decimals)")
    diff.set_defaults(run=_diff)

    baseline = commands.add_parser("baseline", help="regression baselines (--circuitcheck-baseline files)",
                                   description="Work with regression baseline files.")
    baseline_commands = baseline.add_subparsers(dest="baseline_command", metavar="BASELINE_COMMAND", required=True)
    update = baseline_commands.add_parser(
        "update",
        help="write the claims of results files (e.g. the shards of a CI run) into a baseline file",
        description="Write every claim of RESULTS (one results file, or the shards of one suite, merged) into the baseline "
        "file, as pytest --circuitcheck-update-baseline would: measured values replace stored ones, entries of tests "
        "the results do not hold are kept, and --prune removes entries of tests that ran to completion and no longer "
        "produced them.",
        epilog="Exit status: 0 when written, 2 on a usage error (a missing or corrupt file, tests in two shards, results of a "
        "run that was interrupted or is in progress, a read-only or locked baseline).",
    )
    update.add_argument("results", type=Path, nargs="+", help="results files (from --circuitcheck-json, or report --json)")
    update.add_argument("--baseline", type=Path, required=True, help="the baseline file to update (created when missing)")
    update.add_argument("--prune", action="store_true",
                        help="remove entries that tests which ran to completion no longer produce (as --circuitcheck-prune-baseline)")
    update.set_defaults(run=_baseline_update)

    spec = commands.add_parser("spec", help="executable spec files (*.circuit.yaml)", description="Work with executable spec files.")
    spec_commands = spec.add_subparsers(dest="spec_command", metavar="SPEC_COMMAND", required=True)
    new = spec_commands.add_parser(
        "new",
        help="write a commented starter spec for a model",
        description="Write a commented starter *.circuit.yaml for MODEL (for zoo models, pre-filled from the model card). "
        "An existing file is never overwritten.",
    )
    new.add_argument("model", help="a model spec, e.g. zoo:induction-2l")
    new.add_argument("path", nargs="?", type=Path, default=None, help="file (NAME.circuit.yaml) or directory to write into (default: .)")
    new.set_defaults(run=_spec_new)
    schema = spec_commands.add_parser(
        "schema",
        help="print the claim-kind tables of the spec schema (from the registry of claim kinds)",
        description="Print the spec schema's claim-kind tables, generated from the registry of claim kinds "
        "(plugins' kinds included). --write updates circuitcheck/spec/spec_schema.md with them.",
    )
    schema.add_argument("--write", action="store_true", help="update circuitcheck/spec/spec_schema.md in place")
    schema.set_defaults(run=_spec_schema)

    commands.add_parser(
        "power",
        help="measure test power: run pytest with --circuitcheck-power and list each claim's mutation score",
        description=POWER_USAGE,
        add_help=False,
    )
    discover = commands.add_parser(
        "discover",
        help="find a circuit (attribution or patching scores, cut where recovery stops rising, pruned), verify it, write a spec",
        description="Score every edge (or node) of MODEL on the task, keep the top ones up to where recovery stops rising, "
        "prune them with exact runs, verify the circuit with the exact checks and write a spec whose claims hold at the "
        "measured values with a stated margin. An existing output file is never overwritten.",
        epilog="Exit status: 0 when the spec was written, 2 on a usage error (bad arguments, a model or task that does not load, "
        "an output file that exists).",
    )
    discover.add_argument("model", help="a model spec, e.g. zoo:induction-2l, hf:gpt2 or a local directory")
    discover.add_argument("--task", required=True,
                          help="a built-in task (induction), a YAML mapping as a spec's task: writes it "
                          "(e.g. '{name: induction, n_prompts: 32, seq_len: 20}'), or a YAML file holding one (a spec file's task: is read)")
    discover.add_argument("--method", choices=["eap", "eap-ig", "patching"], default="eap",
                          help="how every edge or node is scored: edge attribution, EAP-IG, or exact patching (default eap)")
    discover.add_argument("--level", choices=["edges", "nodes"], default="edges", help="find an edge circuit or a node circuit (default edges)")
    discover.add_argument("--budget", type=int, default=None, help="the largest circuit considered (default 100, or the whole graph if smaller)")
    discover.add_argument("--tolerance", type=float, default=0.01,
                          help="how far below the best recovery on the curve the circuit may stay (default 0.01)")
    discover.add_argument("--steps", type=int, default=None, help="EAP-IG's interpolation points (default 5)")
    discover.add_argument("--ablation", default="resample", help="resample (default), mean, zero, ...")
    discover.add_argument("--seed", type=int, default=0, help="the seed of the task's inputs and the bootstrap (default 0)")
    discover.add_argument("--margin", type=float, default=0.05, help="how far outside the measured bound each threshold sits (default 0.05)")
    discover.add_argument("--no-prune", action="store_true", help="keep the top-n cut as it is")
    discover.add_argument("--device", default="cpu", help="where the model runs (default cpu)")
    discover.add_argument("-o", "--output", type=Path, required=True, help="the spec to write, NAME.circuit.yaml (never overwritten)")
    discover.set_defaults(run=_discover)
    models = commands.add_parser("models", help="list the model sources and the bundled zoo", description="List the installed model sources.")
    models.set_defaults(run=_models)
    return parser


def _spec_new(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .errors import CircuitCheckError
    from .spec.starter import write_new_spec

    try:
        path = write_new_spec(args.path or Path("."), args.model)
    except CircuitCheckError as error:
        print(f"circuitcheck spec new: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(f"circuitcheck: wrote {path}")
    return 0


def _spec_schema(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .spec import schema

    if not args.write:
        print(schema.kinds_markdown())
        return 0
    text = schema.SCHEMA_FILE.read_text(encoding="utf-8")
    schema.SCHEMA_FILE.write_text(schema.schema_document(text), encoding="utf-8")
    print(f"circuitcheck: wrote {schema.SCHEMA_FILE}")
    return 0


def _task_text(raw: str) -> str:
    """The task as a spec writes it, from --task: a built-in name, a YAML mapping, or a YAML file holding one."""
    import yaml

    from .spec.load import BUILTIN_TASKS

    text = raw.strip()
    if text in BUILTIN_TASKS:
        return text
    path = Path(raw)
    if not text.startswith("{") and path.suffix in (".yaml", ".yml") and path.is_file():
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "task" in data:
            data = data["task"]
    else:
        data = yaml.safe_load(text)
    if isinstance(data, str):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"--task {raw!r} is not a built-in task ({', '.join(BUILTIN_TASKS)}), a YAML mapping or a YAML file holding one")
    return yaml.safe_dump(data, default_flow_style=True, sort_keys=False, width=float("inf")).strip()


def _discover(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import shlex

    from .errors import CircuitCheckError

    def fail(message: str) -> int:
        print(f"circuitcheck discover: error: {message}", file=sys.stderr)
        return USAGE_ERROR

    if args.output.exists():
        return fail(f"{args.output} exists; circuitcheck never overwrites a spec: choose another -o path or move it away")
    try:
        task_yaml = _task_text(args.task)
    except (ValueError, OSError) as error:
        return fail(str(error))
    except Exception as error:  # a YAML syntax error
        return fail(f"--task {args.task!r} does not parse as YAML: {error}")
    from . import load_model
    from .claims.discovery import discover
    from .spec import load_spec
    from .spec.discovered import write_spec
    from .spec.load import SpecError

    try:
        task_spec = load_spec(args.output, text=f"model: {args.model}\ntask: {task_yaml}\nclaims: []\n", display="--task").task
    except SpecError as error:
        return fail(str(error))
    if args.seed != 0 and task_spec.prompts is None and task_spec.tokens is None and "seed" not in task_spec.params:
        # a built-in task draws its inputs at the run's seed: pin the one they were measured at
        import yaml

        pinned = {"name": task_spec.name, **task_spec.params, "seed": args.seed}
        task_yaml = yaml.safe_dump(pinned, default_flow_style=True, sort_keys=False, width=float("inf")).strip()
    try:
        model = load_model(args.model, device=args.device)
        task = task_spec.build(model, args.seed)
        print(f"circuitcheck discover: {args.model} on {task.describe()}")
        found = discover(model, task, method=args.method, level=args.level, budget=args.budget, tolerance=args.tolerance,
                         steps=args.steps, ablation=args.ablation, seed=args.seed, prune=not args.no_prune)
        command = "python -m circuitcheck discover " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["discover"] else None
        path = write_spec(found, args.output, task_yaml, margin=args.margin, command=command)
    except CircuitCheckError as error:
        return fail(str(error))
    for line in found.summary():
        print(line)
    card = _card_comparison(args.model, found)
    for line in card:
        print(line)
    print(f"circuitcheck: wrote {path}; run it: pytest {path}")
    return 0


def _card_comparison(model: str, found) -> list[str]:
    """For a zoo model: how the found circuit's heads and MLPs compare with the card's circuits."""
    from .spec.load import ZOO

    match = ZOO.match(model)
    if not match:
        return []
    from . import zoo
    from .model.circuit import Circuit

    circuits = (zoo.card(match["name"]).get("circuits") or {})
    nodes = {str(c) for c in found.nodes()}
    lines = []
    for name, text in circuits.items():
        members = {str(c) for c in Circuit.parse(text if isinstance(text, str) else " ".join(text)).components}
        if not members:
            continue
        same = "the same heads and MLPs" if members == nodes else (
            f"missing {' '.join(sorted(members - nodes)) or 'nothing'}, extra {' '.join(sorted(nodes - members)) or 'nothing'}")
        lines.append(f"card circuit {name!r} ({' '.join(sorted(members))}): {same}")
    return lines


def _models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .model import sources as registry
    from . import zoo

    print("model sources:")
    for line in registry.model_sources():
        print(f"  {line}")
    for name in zoo.names():
        print(f"zoo:{name}: checkpoints {', '.join(zoo.checkpoints(name))}")
    return 0


def _report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from jinja2 import TemplateError  # the report's template engine: a field of the wrong type can fail there

    from . import report
    from .errors import CircuitCheckError

    sources = list(args.results)
    if len(sources) > 1 and args.output is None:
        return _error(f"{len(sources)} results files are merged into one report: give its path with -o (e.g. -o merged.html)")
    output = args.output if args.output is not None else sources[0].with_suffix(".html")
    if len(sources) == 1 and output.resolve() == sources[0].resolve():
        return _error(f"the output {str(output)!r} is the results file itself: give another path with -o")
    for target in (output, args.json_output):
        if target is not None and any(target.resolve() == source.resolve() for source in sources):
            return _error(f"the output {str(target)!r} is one of the results files: give another path")
    if args.json_output is not None and args.json_output.resolve() == output.resolve():
        return _error(f"--json and -o name the same file {str(output)!r}: give two paths")
    shown = sources[0]
    try:
        documents = []
        for source in sources:
            shown = source
            documents.append(report.Results(report.read_json(source), source))
        shown = sources[0] if len(sources) == 1 else "the merged results"
        document = documents[0].document if len(documents) == 1 else report.merge(documents).document
        if args.json_output is not None:
            report.write_json(args.json_output, document)
        report.write_html(output, document)
    except CircuitCheckError as error:
        return _error(str(error))
    except OSError as error:
        return _error(f"cannot write {str(output)!r}: {error.strerror or error}")
    except (TypeError, AttributeError, KeyError, ValueError, IndexError, TemplateError) as error:
        # a hand-edited file whose fields have the wrong types: a usage error, never a traceback
        return _error(f"{str(shown)!r} is not a valid circuitcheck results file "
                      f"({type(error).__name__}: {error}): re-create it with pytest --circuitcheck-json=PATH")
    summary = report.summarize(document)
    incomplete = "" if document.get("complete") else " (incomplete run)"
    counts = f"{summary['claims']} claims, {summary['claims_passed']} held, {summary['claims_failed']} failed"
    if summary.get("claims_xfailed"):
        counts += f", {summary['claims_xfailed']} xfailed"
    merged = f" ({len(sources)} results files merged)" if len(sources) > 1 else ""
    if args.json_output is not None:
        print(f"circuitcheck: wrote {args.json_output}")
    print(f"circuitcheck: wrote {output}{merged}: {counts}{incomplete}")
    return 0


def _diff(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import report
    from .errors import CircuitCheckError

    try:
        changes = report.diff(report.load(args.old), report.load(args.new), tolerance=args.tolerance)
    except CircuitCheckError as error:
        print(f"circuitcheck diff: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    for line in changes.lines():
        print(line)
    if changes.failed:
        parts = [f"{len(changes.verdict_changed)} verdict{'s' if len(changes.verdict_changed) != 1 else ''} changed"] if changes.verdict_changed else []
        parts += [f"{len(changes.removed)} claim{'s' if len(changes.removed) != 1 else ''} missing from {args.new}"] if changes.removed else []
        print(f"exit status 1: {', '.join(parts)}")
        return 1
    return 0


def _baseline_update(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import report
    from .claims.baseline import BaselineError, update_from_tests
    from .errors import CircuitCheckError

    def fail(message: str) -> int:
        print(f"circuitcheck baseline update: error: {message}", file=sys.stderr)
        return USAGE_ERROR

    try:
        parts = [report.load(source) for source in args.results]
        results = parts[0] if len(parts) == 1 else report.merge(parts)
    except CircuitCheckError as error:
        return fail(str(error))
    unfinished = _unfinished(results.document, str(args.results[0]) if len(parts) == 1 else "")
    if unfinished:
        return fail("; ".join(unfinished) + ": its values are partial, so the baseline is left as it was; run the suite again to update it")
    try:
        _, lines = update_from_tests(args.baseline, results.document.get("tests") or [], prune=args.prune)
    except BaselineError as error:
        return fail(str(error))
    for line in lines:
        print(f"circuitcheck: {line}" if not line.startswith("  ") else line)
    return 0


def _unfinished(document: dict, name: str) -> list[str]:
    """Why a results document (or one of its shards) holds a run that was interrupted or had not finished: [] when neither.

    The pytest plugin never writes a baseline from such a run; nor does ``baseline update``.
    """
    why = []
    if document.get("in_progress") is True:
        why.append(f"{name or 'the results'} are of a run in progress, or killed before its end")
    why += [f"{name}: {reason}" if name else reason for reason in document.get("incomplete_reasons") or []
            if isinstance(reason, str) and reason.startswith("interrupted")]
    for shard in document.get("shards") or []:
        if isinstance(shard, dict):
            why += _unfinished(shard, str(shard.get("source") or "a shard"))
    return why


POWER_USAGE = """usage: python -m circuitcheck power [--min-score S] [PYTEST ARGS ...]

Run pytest with --circuitcheck-power and PYTEST ARGS (test paths, -k, -n 2,
--circuitcheck-json=..., --circuitcheck-report=..., --circuitcheck-power-mutations=N, ...),
then list every claim's mutation score (the share of the mutations of its model
that make it fail), killed/decided, the mutations it survived, and the claims
that cannot fail (they survived every mutation).

options:
  --min-score S   also flag claims scoring below S (0 to 1; default 0: only claims that cannot fail)
  -h, --help      show this help (pytest's own help: python -m pytest --help)

exit status: pytest's when it is not 0 (a failed test, a usage error, ...); else 1 when a claim
cannot fail or scores below --min-score, 0 when none does; 2 on a usage error of this command."""


def _power(argv: list[str]) -> int:
    min_score = 0.0
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i + 1 :]
            break
        if arg in ("-h", "--help"):
            print(POWER_USAGE)
            return 0
        if arg == "--min-score" or arg.startswith("--min-score="):
            if arg == "--min-score":
                if i + 1 >= len(argv):
                    return _power_error("--min-score needs a number from 0 to 1")
                raw, i = argv[i + 1], i + 2
            else:
                raw, i = arg.split("=", 1)[1], i + 1
            try:
                min_score = float(raw)
            except ValueError:
                min_score = float("nan")
            if not 0.0 <= min_score <= 1.0:
                return _power_error(f"--min-score={raw!r} is not valid: it must be a number from 0 to 1")
            continue
        rest.append(arg)
        i += 1

    import pytest  # only this command needs it

    from .pytest_plugin.power import detailed_lines, weak_claims

    gathered = _Gathered()
    status = int(pytest.main([*rest, "--circuitcheck-power"], plugins=[gathered]))
    tests = gathered.tests
    print()
    print("circuitcheck power: mutation score per claim (killed/decided: mutations on which the claim failed, of those that could be measured)")
    lines = detailed_lines(tests, min_score)
    for line in lines or ["  no claims were recorded"]:
        print(line)
    weak = weak_claims(tests, min_score)
    cannot = sum(why == "cannot fail" for _, _, why in weak)
    below = len(weak) - cannot
    if status != 0:
        print(f"exit status {status}: pytest's (the run did not pass)")
        return status
    if weak:
        parts = [f"{cannot} claim{'s' if cannot != 1 else ''} cannot fail"] if cannot else []
        if below:
            parts.append(f"{below} claim{'s' if below != 1 else ''} score{'s' if below == 1 else ''} below --min-score {min_score:g}")
        print(f"exit status 1: {', '.join(parts)}")
        return 1
    return 0


class _Gathered:
    """A pytest plugin for the power command: the run's test records (with their claims), read at the session's end."""

    def __init__(self):
        self.tests: list[dict] = []

    def pytest_sessionfinish(self, session) -> None:
        collector = session.config.pluginmanager.get_plugin("circuitcheck-collect")
        if collector is not None and not collector.is_worker:
            self.tests = list(collector.tests)


def _power_error(message: str) -> int:
    print(f"circuitcheck power: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def _error(message: str) -> int:
    print(f"circuitcheck report: error: {message}", file=sys.stderr)
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
