"""Command line: ``python -m circuitcheck report results.json -o report.html``.

Re-renders the HTML report from a ``--circuitcheck-json`` results file, e.g.
after merging runs or on a machine without the models. Exit status: 0 when
the report was written, 2 on a usage error (bad arguments, a missing or
corrupt results file, an output path that is not a circuitcheck report).
Imports nothing heavy: no torch, no pandas.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE_ERROR = 2


def main(argv: list[str] | None = None) -> int:
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


def _error(message: str) -> int:
    print(f"circuitcheck report: error: {message}", file=sys.stderr)
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
