"""Checkpoints: atomic save, checked load.

A checkpoint is one ``torch.save`` file holding ``{"format": FORMAT, "version": VERSION, "meta": {...},
"payload": {...}}``.  ``meta`` says what the checkpoint is for (robot or gymnasium env id, algo, obs/act sizes,
progress, when) and is checked on load; ``payload`` holds the state (agent, trainer counters).  Both may contain
only types that ``torch.load(weights_only=True)`` accepts: tensors, ``None``, bool, int, float, str, and
lists/tuples/dicts of them.
Loading never unpickles arbitrary objects.

Networks must be finite: a payload whose weights or optimiser state hold a NaN or an infinity is neither saved
(a diverged learner must not overwrite the last good checkpoint) nor loaded.  The replay memory (any ``memory``
entry) is data, not a network, and is not checked.

Saving is atomic: the file is written to a temporary name in the same directory, flushed and fsync'ed, then
renamed over the target (``os.replace``) and the directory is fsync'ed.  A crash or error mid-save leaves the
previous checkpoint intact and no temporary file behind.
"""
import errno
import inspect
import os
import shutil
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


def first_non_finite(obj: Any, where: str = "payload") -> Optional[str]:
    """Key path of the first floating-point tensor in ``obj`` holding a NaN or an infinity (``memory`` entries,
    the replay data, are skipped); None when all are finite."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and obj.numel() and not bool(torch.isfinite(obj).all()):
            return where
        return None
    if isinstance(obj, dict):
        items = ((k, v) for k, v in obj.items() if k != "memory")
        items = (("%s.%s" % (where, k), v) for k, v in items)
    elif isinstance(obj, (list, tuple)):
        items = (("%s[%d]" % (where, i), v) for i, v in enumerate(obj))
    else:
        return None
    for path, value in items:
        found = first_non_finite(value, path)
        if found:
            return found
    return None


class _WriteErrors:
    """A binary file that remembers the first ``OSError`` of a write: torch's zip writer swallows it and reports
    ``[enforce fail at inline_container.cc] . unexpected pos``, which says nothing of a full disk."""

    def __init__(self, fh: Any):
        self.fh = fh
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            if self.error is None:
                self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def _write_failure(path: str, directory: str, exc: BaseException, writer: Optional[_WriteErrors]) -> str:
    """A one-line reason for a failed write, naming a full disk as such."""
    cause: BaseException = writer.error if writer is not None and writer.error is not None else exc
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            free = -1
        return ("cannot write checkpoint %s: no space left on device (%s; %s free in %s); the previous checkpoint "
                "is kept" % (path, cause.strerror or cause, "%.1f MB" % (free / 1e6) if free >= 0 else "?",
                             directory))
    return "cannot write checkpoint %s: %s" % (path, cause)


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
    bad = first_non_finite(payload)
    if bad:
        raise CheckpointError("not saving checkpoint %s: %s holds non-finite values (NaN or inf; the learner diverged); "
                              "the previous checkpoint is kept" % (path, bad))
    blob = {"format": FORMAT, "version": VERSION, "meta": meta, "payload": payload}

    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp_path = _create_temp(directory, os.path.basename(path))
    except OSError as exc:
        raise CheckpointError(_write_failure(path, directory, exc, None)) from exc
    writer = None
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = _WriteErrors(fh)
            torch.save(blob, writer)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        if isinstance(exc, Exception):
            raise CheckpointError(_write_failure(path, directory, exc, writer)) from exc
        raise  # KeyboardInterrupt / SystemExit stay what they are
    _fsync_dir(directory)
    return path


def _load_kwargs(mmap: bool) -> Dict[str, Any]:
    """Keyword arguments of ``torch.load`` for a checked load, by what this torch names in its signature.

    ``weights_only`` (torch >= 1.13) is required: without it loading would unpickle arbitrary objects.  ``mmap``
    (torch >= 2.1) is only an optimisation: an older torch hands an unknown keyword on to the unpickler
    (``**pickle_load_args``), whose TypeError would otherwise read as a corrupt file, so it is passed only where
    ``torch.load`` names it.
    """
    params = inspect.signature(torch.load).parameters
    if "weights_only" not in params:
        raise CheckpointError("torch %s cannot load checkpoints safely (torch.load has no weights_only); op3_walk "
                              "needs torch >= 2.1 (requirements.txt)" % getattr(torch, "__version__", "?"))
    kwargs: Dict[str, Any] = {"map_location": "cpu", "weights_only": True}
    if mmap and "mmap" in params:
        kwargs["mmap"] = True
    return kwargs


def _read(path: str, mmap: bool = False) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(payload, meta)`` of a checked checkpoint file; CheckpointError otherwise."""
    if not os.path.isfile(path):
        raise CheckpointError("checkpoint %s does not exist" % path)
    kwargs = _load_kwargs(mmap)   # outside the try: an API mismatch is not a corrupt file
    try:
        blob = torch.load(path, **kwargs)
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

    A missing, truncated or corrupt file, a file of another format or of a newer version, a ``meta`` that
    differs from ``expect`` on any of its keys, or networks holding NaN or inf raise ``CheckpointError`` naming
    the file.
    """
    payload, meta = _read(path)
    _check_expect(path, meta, expect)
    bad = first_non_finite(payload)
    if bad:
        raise CheckpointError("checkpoint %s is unusable: %s holds non-finite values (NaN or inf)" % (path, bad))
    return payload, meta


def read_meta(path: str, expect: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``meta`` of a checkpoint, with the same checks as :func:`load_checkpoint`.

    Tensors are memory-mapped rather than read (torch >= 2.1), so this is cheap even when the checkpoint holds a
    replay memory.
    """
    _, meta = _read(path, mmap=True)
    _check_expect(path, meta, expect)
    return meta
