"""Where the reports write, and nowhere else: an output folder staged whole (a temporary folder
that becomes the output only when the report is complete), which replaces an existing folder only
when this tool wrote it (its marker file); report names that stay inside the folder given; and the
generated section of a docs page, rewritten atomically (temp file and rename), so a full disk
leaves the page as it was."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile

from gated_pruning.toolkit import ArgumentParser, staged
from gated_pruning.reports.records import ReportError

MARKER = ".gated_pruning-report"  # in every folder a report writes: the next report may replace it


def check_name(name: str) -> str:
    """A report's NAME: one plain folder name, so OUT/NAME stays inside OUT."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ReportError(f"NAME {name!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
                          "no '/', no leading '.', not absolute): the report is written to OUT/NAME")
    return name


def _owned(out: str, tool: str, legacy) -> bool:
    """Whether `out` is this tool's own earlier output (or an empty folder): its marker file, or,
    from before markers, `legacy(out, names)` recognising the files the tool wrote then."""
    try:
        names = os.listdir(out)
    except OSError as e:
        raise ReportError(f"{out}: cannot read it ({e.strerror or e})") from None
    if not names:
        return True
    marker = os.path.join(out, MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            return f.read().split("\n", 1)[0] == tool
    return legacy is not None and legacy(out, set(names))


@contextlib.contextmanager
def staged_folder(out: str, tool: str, legacy=None, flag: str = "--out"):
    """Yield an empty temporary folder; when the block succeeds it becomes `out`, with a marker
    naming `tool`. An existing `out` is replaced only when `tool` wrote it; any other existing
    file or folder is refused before any work. On error or stop signal nothing changes."""
    out = os.path.abspath(out)
    replace = os.path.lexists(out)
    if replace and (os.path.islink(out) or not os.path.isdir(out)):
        raise ReportError(f"{flag} {out} is a file, not a folder")
    if replace and not _owned(out, tool, legacy):
        raise ReportError(f"{flag} {out} exists and holds files this tool did not write; pass another {flag} "
                          "(nothing is overwritten)")
    target = f"{out}.new-{os.getpid()}" if replace else out
    with staged(target, flag) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # like any folder the user makes, not mkdtemp's 0700
        yield tmp
        write_text(os.path.join(tmp, MARKER), f"{tool}\nWritten by {tool}; the next report of that tool "
                    "replaces this folder whole.\n")
    if replace:
        _swap(target, out)


def _swap(new: str, out: str) -> None:
    """Put the complete folder `new` where `out` is; `out` stays as it was if that fails."""
    old = f"{out}.old-{os.getpid()}"
    os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(old, out)
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: str, text: str) -> None:
    """Every text file a report writes goes through here (one place a test can fill the disk)."""
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- a docs page's generated sections

def _section_match(text: str, name: str):
    """The section of `name`: its markers alone on their lines, so prose may quote them."""
    n = re.escape(name)
    return re.search(rf"^<!-- results:{n} -->\n(.*?)^<!-- /results:{n} -->$", text, re.S | re.M)


def section_names(text: str) -> list[str]:
    """The names of every generated section of a page, in order."""
    return re.findall(r"^<!-- results:(\S+) -->$", text, re.M)


def section(text: str, name: str) -> str | None:
    """The text between the page's markers for `name`, or None."""
    m = _section_match(text, name)
    return None if m is None else m.group(1).strip()


def read_page(page: str, name: str) -> str:
    """The page's text, after checking it has the section `name` (before a report does any work)."""
    try:
        with open(page) as f:
            text = f.read()
    except OSError as e:
        raise ReportError(f"cannot read {page}: {e.strerror or e}") from None
    if _section_match(text, name) is None:
        raise ReportError(f"{page} has no section <!-- results:{name} --> ... <!-- /results:{name} --> "
                          "(each marker alone on its line)")
    return text


def stage_page(page: str, text: str, name: str, body: str) -> str:
    """Write the page with `body` as the section `name` to a temporary file beside it; returns its
    path, for `commit_page`. A failed write (a full disk) removes it and leaves the page as it was."""
    m = _section_match(text, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(page)}.tmp-", dir=os.path.dirname(os.path.abspath(page)))
    os.close(fd)
    try:
        shutil.copymode(page, tmp)
        write_text(tmp, text[:m.start(1)] + body + "\n" + text[m.end(1):])
    except BaseException as e:
        os.remove(tmp)
        if isinstance(e, OSError):
            raise ReportError(f"cannot write {page}: {e.strerror or e}; it is unchanged and nothing was written") \
                from None
        raise
    return tmp


def commit_page(tmp: str, page: str) -> None:
    """Replace the page by its staged version in one rename."""
    os.replace(tmp, page)


def publish(name: str, out: str, page: str | None, tool: str, section: str, writers: dict, legacy=None) -> None:
    """Write the report folder OUT/NAME (each file by `writers[file](path)`, staged: all or nothing)
    and, with `page`, that page's section NAME (`section`), renamed into place only once the folder
    is complete. The page's section was checked before any work (`read_page`)."""
    text = read_page(page, name) if page is not None else None
    staged = None
    try:
        with staged_folder(os.path.join(out, name), tool, legacy) as tmp:
            for file, write in writers.items():
                write(os.path.join(tmp, file))
            if page is not None:  # a full disk fails here, and nothing is written
                staged = stage_page(page, text, name, section)
        if staged:
            commit_page(staged, page)
            staged = None
    finally:
        if staged:
            os.remove(staged)


def report_parser(tool: str, description: str):
    """The command line every view over several run folders shares: NAME, DIRs, --out, --page."""
    p = ArgumentParser(prog=tool, description=description)
    p.add_argument("name", help="the report's name: its folder under --out, and its section of --page")
    p.add_argument("dirs", nargs="+", help="folders with results.json files below them")
    p.add_argument("--out", default=os.path.join("docs", "results"), help="where NAME/ goes (default: docs/results)")
    p.add_argument("--page", help="also replace this docs page's <!-- results:NAME --> section (e.g. docs/results.md)")
    return p
