"""Compare two circuitcheck results JSON files, ignoring what differs between any two runs.

    python tests/compare_results.py before.json after.json

Ignored: the creation time, each test's duration, the environment's git commit,
the wall time of each claim's power measurement (``power.seconds``), and absolute
paths (replaced by their file name). Everything else (every claim,
value, interval, evidence table and note, in order) must be equal. Exits 0 when
the files agree, 1 with the first differences otherwise. Used to show that a
refactoring changed no number (issue 11: `make demo` before and after).
"""

from __future__ import annotations

import json
import os
import re
import sys

VOLATILE_TOP = ("created",)
VOLATILE_TEST = ("duration",)
VOLATILE_POWER = ("seconds",)
VOLATILE_ENVIRONMENT = ("git commit",)
_ABSOLUTE = re.compile(r"(/[^\s'\",:]+)+/([^\s/'\",:]+)")


def normalised(document: dict) -> dict:
    document = json.loads(json.dumps(document))
    for key in VOLATILE_TOP:
        document.pop(key, None)
    for key in VOLATILE_ENVIRONMENT:
        (document.get("environment") or {}).pop(key, None)
    for test in document.get("tests") or []:
        for key in VOLATILE_TEST:
            test.pop(key, None)
        for claim in test.get("claims") or []:
            for key in VOLATILE_POWER:
                (claim.get("power") or {}).pop(key, None)
    return _paths(document)


def _paths(value):
    if isinstance(value, dict):
        return {key: _paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_paths(item) for item in value]
    if isinstance(value, str) and os.sep in value:
        return _ABSOLUTE.sub(r"\2", value)
    return value


def differences(a, b, where: str = "$", limit: int = 20) -> list[str]:
    found: list[str] = []

    def walk(x, y, at):
        if len(found) >= limit:
            return
        if type(x) is not type(y):
            found.append(f"{at}: {type(x).__name__} {x!r:.80} != {type(y).__name__} {y!r:.80}")
        elif isinstance(x, dict):
            for key in sorted(set(x) | set(y)):
                if key not in x or key not in y:
                    found.append(f"{at}.{key}: only in {'the second' if key in y else 'the first'}")
                else:
                    walk(x[key], y[key], f"{at}.{key}")
        elif isinstance(x, list):
            if len(x) != len(y):
                found.append(f"{at}: {len(x)} items != {len(y)} items")
            for index, (p, q) in enumerate(zip(x, y)):
                walk(p, q, f"{at}[{index}]")
        elif x != y:
            found.append(f"{at}: {x!r:.80} != {y!r:.80}")

    walk(a, b, where)
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as first, open(argv[1], encoding="utf-8") as second:
        found = differences(normalised(json.load(first)), normalised(json.load(second)))
    if found:
        print("the results differ:\n" + "\n".join(f"  {line}" for line in found))
        return 1
    print("the results agree (ignoring created, durations, power timings, git commit and absolute paths)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
