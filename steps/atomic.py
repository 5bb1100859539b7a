"""Outputs appear whole or not at all; a damaged or unwritable file is named with what to do.

- `atomic_output`: write to a temporary sibling, rename onto the real name on success;
- `save_torch`, `write_png`: model files, checkpoints and images through it; a full disk is an
  error that names the path and its size (not torch's "unexpected pos 163968 vs 163856");
- `load_torch`: every model file and checkpoint is read through it; a truncated or otherwise
  damaged file is a `DamagedFile` error naming the file and the way on (`remedy`).
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DamagedFile(RuntimeError):
    """A model file or checkpoint that cannot be read; the message names it and says what to do."""

    def __init__(self, path, remedy: str, cause: BaseException):
        self.path = Path(path)
        why = str(cause).splitlines()[0].split(". ")[0][:160] if str(cause) else type(cause).__name__
        super().__init__(f"{path} is not a readable file of this project (damaged, incomplete, or another kind "
                         f"of file: {why}); {remedy}")


@contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary sibling of `path` (same suffix) to write; on success it is renamed onto
    `path`, on any failure deleted, so no half-written output is ever left under the real name
    (nor an empty folder this call made for it)."""
    path = Path(path)
    made = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if made and not any(path.parent.iterdir()):
            path.parent.rmdir()
        raise


class NoSpace(OSError):
    """A write that ran out of disk space, naming the path."""


def no_space(path, e: OSError) -> NoSpace:
    """The error for a write that ran out of disk space: the path, and what to free."""
    return NoSpace(e.errno, f"no space left on the device to write {path}: free some disk space "
                            f"(old checkpoints, results/ of other runs) and rerun; nothing was written there")


def disk_full(e: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT error in an exception's chain (torch wraps it in its own RuntimeError)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e
        e = e.__cause__ or e.__context__
    return None


def torch_to_file(obj, f, path) -> None:
    """torch.save into an open binary file; `path` names the destination in the error of a full
    disk. Python's file writes raise OSError(ENOSPC) when the disk is full, which is told apart
    from the RuntimeError torch then raises ("unexpected pos 163968 vs 163856")."""
    import torch

    try:
        torch.save(obj, f)
        f.flush()
    except (OSError, RuntimeError) as e:
        full = disk_full(e)
        if full is None:
            raise
        raise no_space(path, full) from e


def save_torch(path, obj) -> Path:
    with atomic_output(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                torch_to_file(obj, f, path)
        except NoSpace:
            raise
        except OSError as e:  # close() flushes the last buffer, and may be what finds the disk full
            if e.errno in NO_SPACE:
                raise no_space(path, e) from e
            raise
    return Path(path)


def load_torch(path, remedy: str, mmap: bool = False) -> dict:
    """torch.load(weights_only=True) of one of the project's files. A missing file is
    FileNotFoundError naming it; a file torch cannot read (truncated, overwritten, not a
    checkpoint) is DamagedFile with `remedy`, e.g. "rerun train_generator (delete it first)"."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {remedy}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (PermissionError, IsADirectoryError, MemoryError):
        raise
    # torch's readers fail in many ways on a file that is not theirs (a text file: IndexError from
    # the legacy unpickler; truncated: RuntimeError from the zip reader, OSError from mmap): all
    # of them mean the same to the user
    except Exception as e:
        raise DamagedFile(path, remedy, e) from e
    if not isinstance(ck, dict):
        raise DamagedFile(path, remedy, TypeError(f"it holds a {type(ck).__name__}, not this project's dict"))
    return ck


def write_png(path, rgb) -> None:
    import cv2

    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path} (is the disk full?)")
