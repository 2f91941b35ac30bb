"""Atomic writes: build a temporary file or folder beside the target, fsync it, rename it
into place.

A reader sees the old file (folder) or the new one, never a torn one; a failed write leaves
the old one as it was and no temporary one behind. Every writer of the run folder and of the
cache goes through here: checkpoints, ``best/``, the cache's entries, ``metrics.json``,
``evaluation.json`` and ``config.yaml``.

A write that runs out of space (``ENOSPC``; ``EDQUOT`` for a quota) becomes a
:class:`~multitask_bert.errors.DiskFullError` naming the target, about how much it needs and
what is free on which mount, measured after the temporary copy is gone. torch and safetensors
hide the ``OSError`` (``RuntimeError: unexpected pos``, ``SafetensorError: ... os error
28``): :func:`torch_save` records it on the way, :func:`is_disk_full` reads safetensors'.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from multitask_bert.errors import DiskFullError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_WRAPPED_ERRNO = re.compile(r"os error (\d+)|\[errno (\d+)\]", re.IGNORECASE)


# -- recognising and reporting a full disk ----------------------------------------------------
def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a write that ran out of space."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        match = _WRAPPED_ERRNO.search(str(current))  # safetensors: "... (os error 28)"
        if match and int(match.group(1) or match.group(2)) in DISK_FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def free_space(path: str | Path) -> tuple[int, Path]:
    """Bytes free (for an unprivileged user) on the file system of ``path`` (or of its
    nearest existing parent), and that file system's mount point."""
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    stat = os.statvfs(existing)
    mount = existing
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return stat.f_bavail * stat.f_frsize, mount


def disk_full_error(path: str | Path, needed_bytes: int, setting: str = "output_dir",
                    cause: BaseException | None = None) -> DiskFullError:
    """The error for a write of about ``needed_bytes`` to ``path`` that found no space. The
    free space is measured where the write failed (the ``OSError``'s file name in ``cause``:
    e.g. a library's staging folder in the system temp), else at ``path``."""
    failed_at = _failed_file(cause) or path
    free, mount = free_space(failed_at)
    return DiskFullError(str(path), needed_bytes, free, str(mount), setting)


def _failed_file(exc: BaseException | None) -> str | None:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS and exc.filename:
            return str(exc.filename)
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def disk_full_as_error(path: str | Path, needed_bytes: int = 0,
                       setting: str = "output_dir") -> Iterator[None]:
    """Turn running out of space inside the block into a
    :class:`~multitask_bert.errors.DiskFullError` for ``path`` (for writers that clean up
    after themselves, e.g. a library's)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, needed_bytes, setting, exc) from exc
        raise


def tree_size(path: str | Path) -> int:
    """Bytes in the files under ``path`` (a file's own size; 0 when it is gone)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


# -- fsync --------------------------------------------------------------------------------------
def fsync_dir(folder: str | Path) -> None:
    """Make the entries of ``folder`` (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under ``folder``, then the folders themselves."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(root)


# -- files ------------------------------------------------------------------------------------
class _RecordingFile:
    """A binary file that remembers the ``OSError`` of a failed write: torch's zip writer
    turns it into ``RuntimeError: unexpected pos``, losing the errno."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that raises the ``OSError`` (ENOSPC, ...) of a failed write
    rather than torch's errno-less ``RuntimeError``. Not atomic by itself: use it inside
    :func:`building_dir` or :func:`write_file_atomic`."""
    import torch

    with open(path, "wb") as handle:
        recording = _RecordingFile(handle)
        try:
            torch.save(obj, recording)  # type: ignore[arg-type]
        except RuntimeError as exc:
            if recording.error is not None:
                raise recording.error from exc
            raise


def write_file_atomic(path: str | Path, write: Callable[[IO[bytes]], Any], *,
                      expected_bytes: int = 0, setting: str = "output_dir") -> Path:
    """Replace ``path`` with what ``write(handle)`` writes into a binary file, atomically.

    Raises:
        DiskFullError: out of space; ``path`` is unchanged and no temporary file is left.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        written = tree_size(tmp)
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise disk_full_error(path, max(expected_bytes, written), setting, exc) from exc
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes, *, setting: str = "output_dir") -> Path:
    """Replace ``path`` with ``data`` atomically."""
    return write_file_atomic(path, lambda handle: handle.write(data),
                             expected_bytes=len(data), setting=setting)


def write_text_atomic(path: str | Path, text: str, *, setting: str = "output_dir") -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), setting=setting)


def write_json_atomic(path: str | Path, data: Any, *, setting: str = "output_dir") -> Path:
    """Replace ``path`` with ``data`` as indented JSON atomically (numpy floats as floats)."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=float), setting=setting)


# -- folders ------------------------------------------------------------------------------------
@dataclass
class Building:
    """A folder being built beside its final place (see :func:`building_dir`)."""

    path: Path
    """The temporary folder: write the files here."""
    final: Path
    """Where it goes."""
    expected_bytes: int = 0
    """About how much the finished folder holds (raise it as you learn): what a disk-full
    error says the write needs, when more than what was written before the failure."""

    def commit(self) -> Path:
        """fsync the folder and move it into place, replacing an existing one."""
        fsync_tree(self.path)
        replace_dir(self.path, self.final)
        fsync_dir(self.final.parent)
        return self.final


@contextmanager
def building_dir(final: str | Path, *, prefix: str | None = None, expected_bytes: int = 0,
                 setting: str = "output_dir") -> Iterator[Building]:
    """A temporary folder beside ``final`` (same file system, so the rename is atomic),
    removed when the block fails; call :meth:`Building.commit` at the end of the block.

    Raises:
        DiskFullError: the block ran out of space; ``final`` is unchanged.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{final.name}.tmp-", dir=final.parent))
    building = Building(tmp, final, expected_bytes)
    try:
        yield building
    except BaseException as exc:
        written = tree_size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise disk_full_error(final, max(building.expected_bytes, written), setting,
                                  exc) from exc
        raise


def replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing an existing folder with at most a brief gap (the old
    one is renamed aside first, then removed)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)
