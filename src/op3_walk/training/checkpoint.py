"""Checkpoints: atomic save, checked load.

A checkpoint is one ``torch.save`` file holding ``{"format": FORMAT, "version": VERSION, "meta": {...},
"payload": {...}}``.  ``meta`` says what the checkpoint is for (robot or gymnasium env id, algo, obs/act sizes,
progress, when) and is checked on load; ``payload`` holds the state (agent, trainer counters).  Both may contain
only types that ``torch.load(weights_only=True)`` accepts: tensors, ``None``, bool, int, float, str, and
lists/tuples/dicts of them.
Loading never unpickles arbitrary objects.

Saving is atomic: the file is written to a temporary name in the same directory, flushed and fsync'ed, then
renamed over the target (``os.replace``) and the directory is fsync'ed.  A crash or error mid-save leaves the
previous checkpoint intact and no temporary file behind.
"""
import os
import time
import uuid
from typing import Any, Dict, Optional, Tuple

import torch

FORMAT = "op3_walk-checkpoint"
VERSION = 1
REQUIRED_META = ("algo", "obs_dim", "act_dim", "env_steps", "episodes")
# ... and what it was trained on: a "robot" (the walking task) or a gymnasium "env" id (e.g. Pendulum-v1).
TRAINED_ON = ("robot", "env")

_SCALARS = (type(None), bool, int, float, str)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, read, or does not fit this run."""


def _check_safe(obj: Any, where: str) -> None:
    """Raise ``ValueError`` naming the key path of the first value ``weights_only`` loading would refuse."""
    if type(obj) in _SCALARS or isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_safe(item, "%s[%d]" % (where, i))
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise ValueError("%s: dict key %r of type %s is not allowed (use str or int keys)"
                                 % (where, key, type(key).__name__))
            _check_safe(value, "%s.%s" % (where, key))
        return
    raise ValueError("%s: a %s.%s cannot be stored in a checkpoint (use tensors, numbers, strings, lists, dicts)"
                     % (where, type(obj).__module__, type(obj).__qualname__))


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(directory: str, name: str) -> Tuple[int, str]:
    """A new hidden temp file next to the target, opened for writing with the usual umask-based permissions."""
    for _ in range(100):
        tmp_path = os.path.join(directory, ".%s.%d.%s.tmp" % (name, os.getpid(), uuid.uuid4().hex[:8]))
        try:
            return os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp_path
        except FileExistsError:
            continue
    raise OSError("no free temporary file name in %s" % directory)


def save_checkpoint(path: str, payload: Dict[str, Any], meta: Dict[str, Any]) -> str:
    """Atomically write ``payload`` and ``meta`` to ``path`` (parent folders created); returns ``path``.

    ``meta`` must hold ``REQUIRED_META`` and one of ``TRAINED_ON``; ``created`` (unix seconds) is added unless
    given.  Unsafe types raise ``ValueError`` before anything is written; a write failure raises
    ``CheckpointError`` and leaves an existing checkpoint at ``path`` untouched.
    """
    missing = [key for key in REQUIRED_META if key not in meta]
    if not any(key in meta for key in TRAINED_ON):
        missing.append(" or ".join(TRAINED_ON))
    if missing:
        raise ValueError("checkpoint meta for %s lacks %s" % (path, ", ".join(missing)))
    meta = dict(meta)
    meta.setdefault("created", time.time())
    _check_safe(meta, "meta")
    _check_safe(payload, "payload")
    blob = {"format": FORMAT, "version": VERSION, "meta": meta, "payload": payload}

    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp_path = _create_temp(directory, os.path.basename(path))
    except OSError as exc:
        raise CheckpointError("cannot write checkpoint %s: %s" % (path, exc)) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(blob, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        if isinstance(exc, Exception):
            raise CheckpointError("cannot write checkpoint %s: %s" % (path, exc)) from exc
        raise  # KeyboardInterrupt / SystemExit stay what they are
    _fsync_dir(directory)
    return path


def _read(path: str, mmap: bool = False) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(payload, meta)`` of a checked checkpoint file; CheckpointError otherwise."""
    if not os.path.isfile(path):
        raise CheckpointError("checkpoint %s does not exist" % path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated zip, random bytes, disallowed types, I/O errors
        raise CheckpointError("checkpoint %s cannot be read (truncated, corrupt or not a checkpoint): %s"
                              % (path, exc)) from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError("%s is not an op3_walk checkpoint (no %r format marker)" % (path, FORMAT))
    version = blob.get("version")
    if type(version) is not int or version < 1:
        raise CheckpointError("checkpoint %s has an invalid format version %r" % (path, version))
    if version > VERSION:
        raise CheckpointError("checkpoint %s has format version %d, newer than this code reads (%d); update op3_walk"
                              % (path, version, VERSION))
    meta, payload = blob.get("meta"), blob.get("payload")
    if not isinstance(meta, dict) or not isinstance(payload, dict):
        raise CheckpointError("checkpoint %s is malformed: meta or payload missing" % path)
    return payload, meta


def _check_expect(path: str, meta: Dict[str, Any], expect: Optional[Dict[str, Any]]) -> None:
    problems = []
    for key, wanted in (expect or {}).items():
        if key not in meta:
            problems.append("has no %r in its metadata (this run needs %r)" % (key, wanted))
        elif meta[key] != wanted:
            problems.append("was made for %s %r, this run uses %r" % (key, meta[key], wanted))
    if problems:
        raise CheckpointError("checkpoint %s %s" % (path, "; ".join(problems)))


def load_checkpoint(path: str, expect: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(payload, meta)`` from ``path``, tensors on the CPU.

    A missing, truncated or corrupt file, a file of another format or of a newer version, or a ``meta`` that
    differs from ``expect`` on any of its keys raises ``CheckpointError`` naming the file.
    """
    payload, meta = _read(path)
    _check_expect(path, meta, expect)
    return payload, meta


def read_meta(path: str, expect: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``meta`` of a checkpoint, with the same checks as :func:`load_checkpoint`.

    Tensors are memory-mapped rather than read, so this is cheap even when the checkpoint holds a replay memory.
    """
    _, meta = _read(path, mmap=True)
    _check_expect(path, meta, expect)
    return meta
