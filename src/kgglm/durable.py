"""Durable writes: a file or a directory appears complete under its name, or not at all.

Every file kgglm writes for later (configs, vocabularies, checkpoints, corpora, exports, caches,
downloads) goes through this module, so that neither a kill nor a power cut leaves half of it:

1. the content goes to a temporary sibling (same directory, so the rename never crosses a file
   system), named ``.NAME.XXXXXXXX.tmp`` for a file and ``.NAME.tmp-XXXXXXXX`` for a directory;
2. it is flushed and ``fsync``-ed (for a directory: every file in it, then the directory);
3. it is renamed over the final name (``os.replace``, atomic on POSIX);
4. the parent directory is ``fsync``-ed, so the rename itself is on disk.

On failure the temporary sibling is removed and the old content, if any, is untouched.

Replacing an existing *directory* (``best/``) cannot be done with ``rename``: on Linux the new one
and the old one are swapped in one step with ``renameat2(RENAME_EXCHANGE)`` (called through
``ctypes``), so the final name never stops being a complete directory, and the old content is
removed afterwards. Where that call is missing or the file system refuses it (other systems, some
network file systems), the old directory is moved aside first: the name is then absent for the
moment between two renames, but never half-written.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def fsync_dir(directory: str | os.PathLike) -> None:
    """``fsync`` a directory (its entries: creations and renames); a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_temp(path: Path, binary: bool) -> tuple[Path, int]:
    """Create a fresh temporary sibling of ``path`` (mode 0666 less the umask, like a new file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) * binary
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO[Any]]:
    """Write ``path`` through a file object; it replaces ``path`` when the block ends without error.

    ``mode`` is ``"w"`` (text, with ``encoding`` and ``newline`` as for :func:`open`) or ``"wb"``.
    The parent directory must exist.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"open_atomic: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    binary = mode == "wb"
    tmp, fd = _open_temp(path, binary)
    try:
        if binary:
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", newline: str | None = None) -> Path:
    """Write ``text`` to ``path`` durably (see the module docstring); return the path."""
    with open_atomic(path, "w", encoding=encoding, newline=newline) as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` durably; return the path."""
    with open_atomic(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> Path:
    """Write ``json.dumps(obj, **dumps)`` to ``path`` durably; return the path."""
    return write_text(path, json.dumps(obj, **dumps))


def fsync_tree(directory: str | os.PathLike) -> None:
    """``fsync`` every file under ``directory``, then every directory, deepest first."""
    dirs = []
    for root, _, files in os.walk(directory):
        dirs.append(root)
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for root in reversed(dirs):
        fsync_dir(root)


def move(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move the complete file ``src`` over ``dst`` (same file system): fsync, rename, fsync the directory."""
    fd = os.open(src, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 / not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _libc_renameat2()


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the paths ``a`` and ``b`` atomically (Linux ``RENAME_EXCHANGE``); False where unsupported."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put the complete directory ``src`` in place of ``dst`` (which may exist) and fsync the parent.

    An existing ``dst`` is swapped out in one step where the system can (see the module
    docstring), else moved aside first; either way its old content is removed afterwards.
    """
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
    elif exchange(src, dst):
        shutil.rmtree(src, ignore_errors=True)  # src now holds the old content
    else:
        old = dst.parent / f".{dst.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dst.parent)


def temp_dir_prefix(path: str | os.PathLike, tag: str = "") -> str:
    """The name prefix of :func:`atomic_dir`'s temporary siblings of ``path`` (``tag`` included)."""
    return f".{Path(path).name}.tmp-{tag + '-' if tag else ''}"


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, tag: str = "") -> Iterator[Path]:
    """Fill a temporary sibling directory; it replaces ``path`` when the block ends without error.

    ``tag`` goes into the temporary name (``.NAME.tmp-TAG-XXXXXXXX``) so that an owner can find
    and remove its own leftovers after a kill (see :func:`remove_leftovers`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_dir_prefix(path, tag), dir=path.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(directory: str | os.PathLike, pattern: str) -> list[Path]:
    """Remove the entries of ``directory`` matching glob ``pattern`` (an interrupted write's); return them."""
    removed = []
    for path in sorted(Path(directory).glob(pattern)) if Path(directory).is_dir() else []:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed
