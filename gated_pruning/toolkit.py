"""What the command-line tools share (`prune`, `evaluate`, `reports.sweep`, `reports.compare`): one-line errors
for a bad flag or file, flags checked against the config's rules, output written in a staged
folder that appears whole or not at all, and a body that ends with an exit status, never a
traceback. Torch-free: `run.py`'s checks use `fail` and `one_line` before torch is imported.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import sys
import tempfile

from gated_pruning.config.rules import show
from gated_pruning.errors import EXIT_CODES, UserError, stop_signals_raise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: run.py, conf/
CONF_DIR = os.path.join(ROOT, "conf")
# the errors of a write that cannot complete: the disk (or the quota) is full, or read-only
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def disk_full(e: BaseException | None) -> OSError | None:
    """The write that failed for want of space (or of a writable disk) behind `e`, or None. It may
    hide behind another error: torch's file writer, closing after the OSError, raises its own."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in FULL_DISK:
            return e
        e = e.__cause__ or e.__context__
    return None


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line `error: ...` for a bad flag (argparse prints usage first)."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)")


def arg(rule, flag: str):
    """An argparse `type` that reads a number (or text) and checks it against a config Rule."""
    def parse(text: str):
        value = text
        for convert in (int, float):
            try:
                value = convert(text)
                break
            except ValueError:
                pass
        problem = rule.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{flag} {show(value)} {problem}")
        return value

    parse.__name__ = rule.allowed()  # argparse names the type in "invalid <type> value"
    return parse


def _exists(path: str, name: str) -> bool:
    """Whether `path` exists; a one-line UserError where it cannot be looked at."""
    try:
        os.stat(path)
    except PermissionError:
        raise UserError(f"{name}: permission denied (a folder on the way cannot be searched)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{name} is a symbolic link that leads back to itself (a loop)") from None
        return False
    return True


def readable_file(path: str, what: str = "") -> str:
    """`path` if it is a file this process can read, else a one-line UserError saying which."""
    if not _exists(path, path):
        raise UserError(f"{path} not found{what}")
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not a file{what}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: permission denied (the file is not readable)")
    return path


def intact(path: str, what: str = "") -> str:
    """`path` if its zip archive (torch.save and torch.export files are zip archives) matches the
    checksums it carries, else a one-line UserError naming the file and the first damaged member.
    torch.load reads damaged bytes without a word; this catches them before they are used. A file
    that is not a zip archive (torch's legacy format) is left to its reader."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return path
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
        raise UserError(f"{path} is damaged: its archive cannot be read ({type(e).__name__}: "
                        f"{one_line(e, 120)}){what}") from None
    if bad is not None:
        raise UserError(f"{path} is damaged: {bad} does not match its checksum (the zip CRC){what}")
    return path


def readable_dir(path: str, what: str = "") -> str:
    """`path` if it is a folder this process can read, else a one-line UserError saying which."""
    name = f"{what} {path}" if what else path
    if not _exists(path, name):
        raise UserError(f"{name}: no such folder")
    if not os.path.isdir(path):
        raise UserError(f"{name} is a file, not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"{name}: permission denied (the folder is not readable)")
    return path


def _folder_mode() -> int:
    """The mode os.makedirs gives a new folder (0777 less the umask), as run folders get."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


@contextlib.contextmanager
def staged(out: str, flag: str = "--out", replace: bool = False):
    """Yield an empty temporary folder next to `out`, where a tool writes everything; it becomes
    `out` only when the tool succeeds, and is removed on any error or stop signal, so a failed
    tool leaves no partial output. `out` must not exist (`replace`: files in it are replaced).
    The folder gets the mode of a run folder (mkdtemp would leave it private, 0700)."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not (replace and os.path.isdir(out)):
        if replace:
            raise UserError(f"{flag} {out} is a file, not a folder")
        raise UserError(f"{out} exists already; pass another {flag} (nothing is overwritten)")
    parent, created = os.path.dirname(out), []
    probe = parent
    while not os.path.exists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
        os.chmod(tmp, _folder_mode())
    except OSError as e:
        for d in created:  # the folders made for it go too: a refused output leaves nothing behind
            with contextlib.suppress(OSError):
                os.rmdir(d)
        raise UserError(f"{flag} {out}: cannot write there ({e.strerror or e})") from None
    ok = False
    try:
        yield tmp
        if replace and os.path.isdir(out):
            for name in os.listdir(tmp):
                os.replace(os.path.join(tmp, name), os.path.join(out, name))
        else:
            try:
                os.rename(tmp, out)
            except OSError as e:
                raise UserError(f"{out}: cannot create it ({e.strerror or e}); nothing was written") from None
        ok = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for d in created:  # folders made for the output, outermost last
                with contextlib.suppress(OSError):
                    os.rmdir(d)


def run_tool(body, args) -> int:
    """A tool's body, with one `error:` line and exit 2 for a bad input, 1 for a full disk,
    130 (SIGINT) or 143 (SIGTERM) for a stop signal."""
    try:
        with stop_signals_raise():
            return body(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a full disk is one line; anything else is a bug, shown
        full = disk_full(e)
        if full is None:
            raise
        print(f"error: cannot write the output: {full.strerror or full}; nothing was written (free some "
              "space and run the command again)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        signame = getattr(e, "signame", "SIGINT")
        print(f"error: stopped by {signame}; nothing was written", file=sys.stderr)
        return EXIT_CODES.get(signame, 130)
