"""Writing report files: atomically, only over circuitcheck's own files, with errors that say what went wrong.

circuitcheck recognises a file it wrote by its structure, never by a substring
a user's file can carry by accident:

- a results document (JSON) is our own when the parsed top level is an object
  whose ``circuitcheck_report`` is the schema number (an int, not a bool) and
  that has ``created`` (string), ``complete`` (bool), ``environment`` (object)
  and ``tests`` (list);
- an HTML report is our own when its parsed ``<head>`` opens with the owner
  meta element :data:`OWNER_META` (``<meta name="circuitcheck-report"
  content="results schema N">``), before any other element of the head, any
  text and any closing tag: a comment, a script, a title or the body that
  mentions it does not count.

A file that cannot be written (a missing permission, a file where a directory
should be) is a :class:`ReportWriteError` naming the file and the cause.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from ..errors import CircuitCheckError

#: The meta element of the head that marks an HTML report as circuitcheck's own.
OWNER_META_NAME = "circuitcheck-report"
_OWNER_CONTENT = re.compile(r"results schema [1-9][0-9]*")
#: What the file kinds are called in messages.
WHAT = {"json": "results document", "html": "html report"}
_HTML_HEAD_BYTES = 64 * 1024  # the owner meta is in the first few hundred bytes of our reports


class ReportWriteError(CircuitCheckError):
    """A report file could not be written, or may not be: the message names the file and why."""


def owner_meta(schema: int) -> str:
    """The owner meta element of an HTML report of results schema ``schema``."""
    return f'<meta name="{OWNER_META_NAME}" content="results schema {int(schema)}">'


def write_text(path: Path, text: str, kind: str) -> Path:
    """Write ``text`` to ``path`` atomically unless the file there is not ours (``kind``: ``json`` or ``html``)."""
    check_writable(path, kind)
    try:
        atomic_write(path, text)
    except OSError as error:
        raise _write_error(path, kind, error) from None
    return path


def check_writable(path: Path, kind: str) -> None:
    """Raise :class:`ReportWriteError` unless ``path`` is absent or a file circuitcheck wrote, in a directory that can be made.

    Used at session start too, so that a path that cannot be written is refused before any test runs.
    """
    what = WHAT[kind]
    blocker = _file_among_parents(path)
    if blocker is not None:
        raise ReportWriteError(f"cannot write the {what} {str(path)!r}: {str(blocker)!r} is a file, not a directory")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise _write_error(path, kind, error) from None
    if stat.S_ISDIR(mode):
        raise ReportWriteError(f"the {what} path {str(path)!r} is a directory: give a file name")
    if not stat.S_ISREG(mode):
        raise ReportWriteError(f"refusing to overwrite {str(path)!r}: it exists and is not a regular file. Choose another path.")
    if not is_ours(path, kind):
        hint = f' (circuitcheck\'s own reports carry <meta name="{OWNER_META_NAME}"> in their head)' if kind == "html" else ""
        raise ReportWriteError(
            f"refusing to overwrite {str(path)!r}: it exists and is not a circuitcheck {what}{hint}. Choose another path or remove it."
        )


def is_ours(path: Path, kind: str) -> bool:
    """Whether the regular file at ``path`` is a results document (``json``) or HTML report (``html``) circuitcheck wrote."""
    try:
        if kind == "json":
            return is_results_document(path.read_bytes())
        with open(path, "rb") as handle:
            return has_owner_meta(handle.read(_HTML_HEAD_BYTES))
    except OSError:
        return False


def is_results_document(data: bytes) -> bool:
    """Whether ``data`` parses as a results document: the marker key with the schema number, and the keys every document has."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    if not isinstance(document, dict):
        return False
    schema = document.get("circuitcheck_report")
    return (
        type(schema) is int
        and schema >= 1
        and isinstance(document.get("created"), str)
        and isinstance(document.get("complete"), bool)
        and isinstance(document.get("environment"), dict)
        and isinstance(document.get("tests"), list)
    )


def has_owner_meta(head: bytes) -> bool:
    """Whether the HTML in ``head`` (its first bytes) opens its ``<head>`` with the owner meta element."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a cut multi-byte character is fine
    except UnicodeDecodeError:
        return False
    parser = _OwnerMetaFinder()
    parser.feed(text)
    return parser.found


class _OwnerMetaFinder(HTMLParser):
    """Reads start tags up to the owner meta: only ``<html>``, ``<head>`` and other metas may come before it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found = False
        self.done = False
        self.seen: set[str] = set()

    def handle_starttag(self, tag: str, attrs) -> None:
        if self.done:
            return
        if tag == "meta" and {"html", "head"} <= self.seen:
            values = dict(attrs)
            if values.get("name") == OWNER_META_NAME and _OWNER_CONTENT.fullmatch(values.get("content") or ""):
                self.found = self.done = True
            return
        if tag in ("html", "head") and tag not in self.seen and (tag == "html" or "html" in self.seen):
            self.seen.add(tag)
            return
        self.done = True

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        self.done = True

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.done = True


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to a temporary file beside ``path`` and move it into place.

    Readers see the old file or the new one, never half of one; a replaced
    file keeps its mode, a new one gets the usual mode (0666 less the umask).
    Raises ``OSError`` as the system reports it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)  # mkstemp creates the file 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_among_parents(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a directory (mkdir would fail on it)."""
    for parent in path.parents:
        try:
            mode = parent.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):  # missing, or under the file we are looking for
            continue
        except OSError:
            return None  # reported by the write itself
        return None if stat.S_ISDIR(mode) else parent
    return None


def _write_error(path: Path, kind: str, error: OSError) -> ReportWriteError:
    blocker = _file_among_parents(path)
    if blocker is not None:
        cause = f"{str(blocker)!r} is a file, not a directory"
    elif isinstance(error, PermissionError):
        cause = f"permission denied (the file or its directory {str(path.parent)!r} is not writable)"
    else:
        cause = error.strerror or type(error).__name__
    return ReportWriteError(f"cannot write the {WHAT[kind]} {str(path)!r}: {cause}")
