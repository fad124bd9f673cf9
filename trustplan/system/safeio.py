"""Files the way trustplan must touch them: only regular files read, folders private, errors named.

    read_regular(path, source, what)   the bytes of a regular file (never a FIFO, device or folder),
                                       at most `limit` bytes; InputError naming the path otherwise
    ensure_dir(path)                   create a folder and its missing parents with mode 0700,
                                       whatever the umask; FilesystemError naming the path
    describe(exc)                      a short reason for an OSError ("Permission denied")

A FIFO is opened non-blocking (a plain open() would wait forever for a writer), /dev/zero and other
devices are refused before reading, and a huge file is refused after `limit` bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from trustplan.errors import FilesystemError, InputError

#: The most trustplan reads from one input file (plans, configs, certificates, keys).
MAX_FILE_BYTES = 16 * 1024 * 1024


def describe(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__


def read_regular(path: Path, source: str | None = None, what: str = "file", limit: int = MAX_FILE_BYTES,
                 *, hint: str | None = None) -> bytes:
    """Read a regular file; InputError (naming `source`, default the path) for anything else."""
    source = source or str(path)
    name = what if source == str(path) else f"{what} {path}"
    try:  # a FIFO or a device is refused before it is opened (the check after opening stays: a race)
        before = os.stat(path)
    except (OSError, ValueError):
        pass  # open() below names the problem
    else:
        _refuse_special(before, source, name, hint)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise InputError(source, f"{name} not found", hint=hint) from None
    except IsADirectoryError:
        raise InputError(source, f"{name} is a directory, not a file", hint=hint) from None
    except OSError as exc:
        raise InputError(source, f"cannot read {name}: {describe(exc)}", hint=hint) from None
    except ValueError:  # a NUL byte in the path
        raise InputError(source, f"invalid path for {what}: {str(path)!r}", hint=hint) from None
    try:
        st = os.fstat(fd)
        _refuse_special(st, source, name, hint)
        if st.st_size > limit:
            raise InputError(source, f"{name} is {st.st_size} bytes; the limit is {limit} bytes", hint=hint)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise InputError(source, f"{name} is larger than the limit of {limit} bytes", hint=hint)
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(source, f"cannot read {name}: {describe(exc)}", hint=hint) from None
    finally:
        os.close(fd)


def _refuse_special(st: os.stat_result, source: str, name: str, hint: str | None) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise InputError(source, f"{name} is a directory, not a file", hint=hint)
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(
            st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
        raise InputError(source, f"{name} is {kind}; only regular files are read", hint=hint)


def ensure_dir(path: Path) -> None:
    """Create `path` and any missing parents as 0700 folders (an existing folder keeps its mode)."""
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        if p.exists() or p.is_symlink():
            raise FilesystemError(f"{p}: exists and is not a folder", hint=f"cannot create files under {path}")
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
            os.chmod(d, 0o700)  # mkdir's mode is masked by the umask
        except FileExistsError:
            if not d.is_dir():
                raise FilesystemError(f"{d}: exists and is not a folder") from None
        except OSError as exc:
            raise FilesystemError(f"{d}: cannot create folder: {describe(exc)}",
                                  hint="check the path and its permissions") from None


def check_writable(path: Path, what: str = "file") -> None:
    """Refuse, before any work, a file path trustplan could not write: a folder, or under a file or
    an unwritable folder. FilesystemError naming the path."""
    if path.is_dir():
        raise FilesystemError(f"{path}: {what} is a directory; give a file path")
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise FilesystemError(f"{path}: cannot write {what}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FilesystemError(f"{path}: cannot write {what}: {parent} is not writable")
