"""A small file system to fill up, for the disk-full tests.

Real where this machine lets us: a 48 MB ``tmpfs`` mounted on a temporary folder (needs root
and a kernel that allows it; this project's dev machines do), unmounted at teardown. A
"balloon" file takes all but ``n`` bytes of it, so the next write that needs more fails with
the kernel's own ``ENOSPC``, through torch, safetensors, pyarrow and Python's file objects.

Where ``mount`` is refused (an unprivileged CI container), or with ``MTB_FAKE_SMALL_DISK=1``
set, a fake stands in and says so: a
warning names the reason, and ``SmallDisk.real`` is False. The fake replaces ``os.fsync``
(every writer of :mod:`multitask_bert.atomic` fsyncs before it renames) with one that raises
``OSError(ENOSPC)`` once the files under the folder exceed the disk's capacity, counted at
that moment; in child processes through a ``sitecustomize`` module on ``PYTHONPATH``. It
shows the same guarantees (old files intact, nothing partial, the message); it cannot show
how torch and safetensors report a real ENOSPC, which only the real file system does.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

SIZE_MB = 48
BALLOON = ".balloon"

_FAKE_SITECUSTOMIZE = '''
import errno, os
_root, _capacity = os.environ["MTB_FAKE_DISK"], int(os.environ["MTB_FAKE_DISK_BYTES"])
_fsync = os.fsync

def _used():
    total = 0
    for root, _dirs, files in os.walk(_root):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total

def fsync(fd):
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        path = ""
    if path.startswith(_root) and _used() > _capacity:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return _fsync(fd)

os.fsync = fsync
'''


class SmallDisk:
    """A small file system at ``path``: :meth:`leave` fills it up, :meth:`free_up` empties
    the balloon again."""

    def __init__(self, path: Path, real: bool, why: str = "") -> None:
        self.path, self.real, self.why = path, real, why
        self._fake_dir = path.parent / "fake-site"

    def free(self) -> int:
        if self.real:
            stat = os.statvfs(self.path)
            return stat.f_bavail * stat.f_frsize
        return SIZE_MB * 1_000_000 - _tree_size(self.path)

    def leave(self, n: int) -> None:
        """Fill the disk so that about ``n`` bytes stay free."""
        self.free_up()
        size = max(0, self.free() - n)
        balloon = self.path / BALLOON
        with open(balloon, "wb") as handle:
            chunk = b"\0" * (1 << 20)
            while size > 0:
                handle.write(chunk[:min(size, len(chunk))])
                size -= len(chunk)

    def free_up(self) -> None:
        (self.path / BALLOON).unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        """Environment for a child process (the fake's ``sitecustomize``, when faked)."""
        if self.real:
            return {}
        self._fake_dir.mkdir(exist_ok=True)
        (self._fake_dir / "sitecustomize.py").write_text(_FAKE_SITECUSTOMIZE)
        return {"MTB_FAKE_DISK": str(self.path),
                "MTB_FAKE_DISK_BYTES": str(SIZE_MB * 1_000_000),
                "PYTHONPATH": str(self._fake_dir)}

    def patch_in_process(self, monkeypatch) -> None:
        if self.real:
            return
        namespace: dict = {}
        env = self.env()
        monkeypatch.setenv("MTB_FAKE_DISK", env["MTB_FAKE_DISK"])
        monkeypatch.setenv("MTB_FAKE_DISK_BYTES", env["MTB_FAKE_DISK_BYTES"])
        original = os.fsync
        exec(_FAKE_SITECUSTOMIZE, namespace)  # our own module text, above
        faked = os.fsync
        os.fsync = original  # the exec patched it for good; let monkeypatch own the patch
        monkeypatch.setattr(os, "fsync", faked)


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def mount_small_disk(parent: Path):
    """Yield a :class:`SmallDisk` under ``parent`` (a generator for a pytest fixture)."""
    path = parent / "small-disk"
    path.mkdir()
    why = ""
    if os.environ.get("MTB_FAKE_SMALL_DISK"):  # to exercise the fake where mount works
        why = "MTB_FAKE_SMALL_DISK is set"
    elif os.geteuid() != 0:
        why = "not root: cannot mount a tmpfs"
    else:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs",
                               str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            why = f"mount -t tmpfs refused: {proc.stderr.strip() or proc.returncode}"
    if why:
        warnings.warn(f"disk-full tests use a fake ENOSPC (os.fsync over {SIZE_MB} MB): {why}",
                      stacklevel=2)
        yield SmallDisk(path, real=False, why=why)
        return
    try:
        yield SmallDisk(path, real=True)
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
