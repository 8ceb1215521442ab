"""Command line: ``python -m circuitcheck report results.json -o report.html``, ``python -m circuitcheck power [pytest args]``.

``report`` re-renders the HTML report from a ``--circuitcheck-json`` results
file, e.g. after merging runs or on a machine without the models. Exit status:
0 when the report was written, 2 on a usage error (bad arguments, a missing or
corrupt results file, an output path that is not a circuitcheck report).

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
    report.add_argument("results", type=Path, help="the JSON results file (from --circuitcheck-json)")
    report.add_argument("-o", "--output", type=Path, default=None, help="the HTML file to write (default: RESULTS with the suffix .html)")
    report.set_defaults(run=_report)

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

    output = args.output if args.output is not None else args.results.with_suffix(".html")
    if output.resolve() == args.results.resolve():
        return _error(f"the output {str(output)!r} is the results file itself: give another path with -o")
    try:
        document = report.read_json(args.results)
        report.write_html(output, document)
    except CircuitCheckError as error:
        return _error(str(error))
    except OSError as error:
        return _error(f"cannot write {str(output)!r}: {error.strerror or error}")
    except (TypeError, AttributeError, KeyError, ValueError, IndexError, TemplateError) as error:
        # a hand-edited file whose fields have the wrong types: a usage error, never a traceback
        return _error(f"{str(args.results)!r} is not a valid circuitcheck results file "
                      f"({type(error).__name__}: {error}): re-create it with pytest --circuitcheck-json=PATH")
    summary = report.summarize(document)
    incomplete = "" if document.get("complete") else " (incomplete run)"
    counts = f"{summary['claims']} claims, {summary['claims_passed']} held, {summary['claims_failed']} failed"
    print(f"circuitcheck: wrote {output}: {counts}{incomplete}")
    return 0


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
