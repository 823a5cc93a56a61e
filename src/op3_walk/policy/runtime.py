"""Torch-free policy runtime: evaluate an exported policy (``.npz``) with numpy alone.

Why a second implementation of the forward pass: the robot's own computer (a Raspberry Pi) runs the controller and
the policy, and torch is large, slow to import and unnecessary for a few matrix products.  ``op3_walk.policy.export``
(the torch side) walks the trained network and writes this file; :class:`NumpyPolicy` reads it back with
``allow_pickle=False``, so a policy file can hold arrays only and can never run code, and validates every entry
before the first action.  This module imports numpy and the standard library only; :func:`expected_interface`
imports the (torch-free) task code lazily, when asked to compare a policy with a robot and task.

File format (``FORMAT`` ``"op3_walk-policy"``, ``VERSION`` 1), the entries of one ``.npz``:

==================  ===============  ===========================================================================
entry               type             meaning
==================  ===============  ===========================================================================
``format``          str              ``"op3_walk-policy"``
``version``         int              format version (1); a newer file is refused with a clear message
``meta``            str              JSON object, see ``META_FIELDS`` (what the policy was trained on and for)
``activations``     str[L]           what follows layer ``i``: ``relu``, ``tanh`` or ``identity``
``w0`` ... ``wL-1`` float32 (in,out) weights of layer ``i`` (``x @ w + b``; the transpose of ``nn.Linear.weight``)
``b0`` ... ``bL-1`` float32 (out,)   biases of layer ``i``
``obs_mean``        float32 (obs,)   optional, with ``obs_std`` and ``obs_clip``: observation normalisation
``obs_std``         float32 (obs,)   ``x = clip((obs - obs_mean) / obs_std, -obs_clip, obs_clip)`` before layer 0
``obs_clip``        float64 ()       (``inf``: no clipping)
==================  ===============  ===========================================================================

Besides ``META_FIELDS``, ``export_policy`` records provenance in ``meta`` (optional for a reader): the agent's
``agent_config`` and the whole ``task_config`` (rewards included), ``training_git`` and ``export_git``
(``{"commit", "dirty"}`` of the code that trained and exported it; an empty commit where unknown), ``updates``,
``episodes``, ``source_sha256``, ``checkpoint_created`` and ``exported_at``.

A continuous policy's last activation is ``tanh`` (actions in [-1, 1], the controller's action units); a discrete
policy's last layer is ``identity`` and the action is the argmax of its outputs (the Q-values for DQN).
"""
import json
import math
import os
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

FORMAT = "op3_walk-policy"
VERSION = 1
ACTIVATIONS = ("relu", "tanh", "identity")
CONTINUOUS = "continuous"
DISCRETE = "discrete"
NORMALIZATION_KEYS = ("obs_mean", "obs_std", "obs_clip")

# meta field -> (accepted Python types after JSON decoding, meaning).  All are required.
META_FIELDS: Dict[str, Tuple[Tuple[type, ...], str]] = {
    "algo": ((str,), "learning algorithm that trained the policy (td3, ddpg, sac, dqn)"),
    "robot": ((str,), "robot name (config/robots/<robot>.yaml); empty for a gymnasium env"),
    "task": ((str,), "task config name or YAML path it was trained on; empty for a gymnasium env"),
    "env": ((str,), "gymnasium env id it was trained on; empty for the walking task"),
    "observation_names": ((list,), "names of the consecutive observation blocks"),
    "observation_sizes": ((list,), "sizes of those blocks (their sum is the observation size)"),
    "action_kind": ((str,), "'continuous' (a vector in [-1, 1]) or 'discrete' (one index)"),
    "action_size": ((int,), "continuous: the action vector's length; discrete: the number of actions"),
    "control_rate_hz": ((int, float), "control (policy) rate it was trained at, Hz; 0 = unknown (gymnasium env)"),
    "task_interface": ((dict, type(None)), "the task's action and observation sections (what the network's "
                                           "inputs and outputs mean); null for a gymnasium env"),
    "source_checkpoint": ((str,), "absolute path of the checkpoint it was exported from"),
    "env_steps": ((int,), "env steps the agent had trained for when that checkpoint was written"),
}

PathLike = Union[str, "os.PathLike[str]"]


class PolicyFileError(ValueError):
    """A policy file is missing, truncated, corrupt, of another format or version, or inconsistent."""


class PolicyMismatchError(ValueError):
    """A policy does not fit the robot, task or controller it is asked to drive."""


def _layout_text(names: Sequence[str], sizes: Sequence[int]) -> str:
    return "[%s] (%d values)" % (", ".join("%s:%d" % (n, s) for n, s in zip(names, sizes)), sum(sizes))


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples -> lists), so stored and computed interfaces compare equal."""
    return json.loads(json.dumps(value))


# -- what a robot + task expects ---------------------------------------------------------------------------------
class PolicyInterface:
    """What a policy must match to drive a robot on a task: observation layout, action space, control rate, and the
    task sections that give the inputs and outputs their meaning (action mapping, observation scaling).

    The reward, the termination and the randomisation are deliberately not part of it: they shape training, not
    what an action means, so a policy trained with one reward may be deployed on a task that only reports another.
    """

    def __init__(self, robot: str, task: str, observation_names: Sequence[str], observation_sizes: Sequence[int],
                 action_kind: str, action_size: int, control_rate_hz: float,
                 task_interface: Optional[Mapping[str, Any]]):
        self.robot = str(robot)
        self.task = str(task)
        self.observation_names = [str(n) for n in observation_names]
        self.observation_sizes = [int(s) for s in observation_sizes]
        self.action_kind = str(action_kind)
        self.action_size = int(action_size)
        self.control_rate_hz = float(control_rate_hz)
        self.task_interface = None if task_interface is None else _plain(dict(task_interface))

    @property
    def obs_dim(self) -> int:
        return sum(self.observation_sizes)

    def describe(self) -> str:
        return "robot %s, task %s: observation %s, %s action %d, %g Hz" % (
            self.robot or "-", self.task or "-", _layout_text(self.observation_names, self.observation_sizes),
            self.action_kind, self.action_size, self.control_rate_hz)


def expected_interface(robot_cfg: Any, task_cfg: Any, task_name: str = "") -> PolicyInterface:
    """The :class:`PolicyInterface` of the walking env for ``robot_cfg`` and ``task_cfg`` (configs, names or YAML
    paths), computed with ``observation_layout`` and ``make_spaces`` exactly as the controller does.

    Imports the task code here rather than at module level: that code is torch-free too, but it pulls in gymnasium
    and the robot configs, which a caller that only acts does not need.
    """
    from op3_walk.config import to_dict
    from op3_walk.envs.actions import make_action_map
    from op3_walk.envs.walk_env import load_reference_gait, load_task, make_spaces, observation_layout
    from op3_walk.robots.description import load_robot

    if not task_name and isinstance(task_cfg, str):
        task_name = task_cfg
    robot = load_robot(robot_cfg)
    task = load_task(task_cfg)
    action_map = make_action_map(robot, task.action, load_reference_gait(robot, task))
    layout = observation_layout(robot, task, action_map)
    _, action_space = make_spaces(robot, task, action_map)
    if hasattr(action_space, "n"):
        kind, size = DISCRETE, int(action_space.n)
    else:
        kind, size = CONTINUOUS, int(action_space.shape[0])
    return PolicyInterface(robot.name, task_name, [n for n, _ in layout], [s for _, s in layout], kind, size,
                           robot.control_rate_hz,
                           {"action": to_dict(task.action), "observation": to_dict(task.observation)})


# -- reading and checking a file ---------------------------------------------------------------------------------
def _scalar(arrays: Mapping[str, np.ndarray], key: str, kind: str, source: str) -> Any:
    value = arrays[key]
    if value.ndim != 0 or value.dtype.kind not in kind:
        raise PolicyFileError("%s: entry %r must be a scalar of kind %r, got %s %s"
                              % (source, key, kind, value.dtype, value.shape))
    return value[()].item() if hasattr(value[()], "item") else value[()]


def read_arrays(path: PathLike) -> Dict[str, np.ndarray]:
    """Every entry of the ``.npz`` at ``path``, read eagerly (a damaged member fails here, not at the first action).

    ``allow_pickle=False``: an object array (which would unpickle, i.e. run code) is refused.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PolicyFileError("policy file %s does not exist" % path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):
            raise PolicyFileError("%s is a single .npy array, not an op3_walk policy (.npz)" % path)
        with loaded as npz:
            return {key: npz[key] for key in npz.files}
    except PolicyFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
        raise PolicyFileError("policy file %s cannot be read (truncated, corrupt or not an .npz): %s"
                              % (path, exc)) from exc
    except Exception as exc:  # zlib.error and other decoder errors of a damaged member
        raise PolicyFileError("policy file %s cannot be read (corrupt): %s: %s"
                              % (path, type(exc).__name__, exc)) from exc


def _check_meta(text: str, source: str) -> Dict[str, Any]:
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise PolicyFileError("%s: entry 'meta' is not valid JSON: %s" % (source, exc)) from exc
    if not isinstance(meta, dict):
        raise PolicyFileError("%s: entry 'meta' must be a JSON object" % source)
    missing = [key for key in META_FIELDS if key not in meta]
    if missing:
        raise PolicyFileError("%s: metadata lacks %s" % (source, ", ".join(missing)))
    for key, (types, _) in META_FIELDS.items():
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise PolicyFileError("%s: metadata %r has the wrong type (%s)" % (source, key, type(value).__name__))
    names, sizes = meta["observation_names"], meta["observation_sizes"]
    if (len(names) != len(sizes) or not all(isinstance(n, str) for n in names)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)):
        raise PolicyFileError("%s: metadata observation_names/observation_sizes must be equally long lists of names "
                              "and positive sizes" % source)
    if meta["action_kind"] not in (CONTINUOUS, DISCRETE):
        raise PolicyFileError("%s: metadata action_kind must be %r or %r, got %r"
                              % (source, CONTINUOUS, DISCRETE, meta["action_kind"]))
    if meta["action_size"] < 1:
        raise PolicyFileError("%s: metadata action_size must be >= 1" % source)
    if not (math.isfinite(meta["control_rate_hz"]) and meta["control_rate_hz"] >= 0):
        raise PolicyFileError("%s: metadata control_rate_hz must be a finite number >= 0" % source)
    return meta


class NumpyPolicy:
    """An exported policy, evaluated with numpy: ``act(obs)`` gives what the agent's ``act(obs, explore=False)``
    gave (within float32 rounding), without torch.

    ``NumpyPolicy(path)`` reads and validates a file; :meth:`from_arrays` validates arrays in memory (the exporter
    checks what it is about to write that way).  Any problem raises :class:`PolicyFileError` (a ``ValueError``).
    The object is immutable after construction, so one instance can serve several threads; to switch policies,
    build a new one and swap the reference.
    """

    def __init__(self, path: PathLike):
        path = os.path.abspath(os.fspath(path))
        self._init(read_arrays(path), path)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], source: str = "<arrays>") -> "NumpyPolicy":
        """A policy from the entries of a policy file (as :func:`read_arrays` returns them), validated."""
        policy = cls.__new__(cls)
        policy._init({k: np.asarray(v) for k, v in arrays.items()}, source)
        return policy

    # ------------------------------------------------------------------ validation
    def _init(self, arrays: Dict[str, np.ndarray], source: str) -> None:
        self.path = source
        if "format" not in arrays or arrays["format"].ndim != 0 or arrays["format"].dtype.kind != "U" \
                or str(arrays["format"][()]) != FORMAT:
            raise PolicyFileError("%s is not an op3_walk policy file (no %r format marker)" % (source, FORMAT))
        if "version" not in arrays:
            raise PolicyFileError("%s has no format version" % source)
        version = _scalar(arrays, "version", "iu", source)
        if version > VERSION:
            raise PolicyFileError("%s has policy format version %d, newer than this code reads (%d); update op3_walk "
                                  "on this machine" % (source, version, VERSION))
        if version != VERSION:
            raise PolicyFileError("%s has an unsupported policy format version %r (this code reads %d)"
                                  % (source, version, VERSION))
        for key in ("meta", "activations"):
            if key not in arrays:
                raise PolicyFileError("%s lacks the entry %r" % (source, key))
        meta = _check_meta(str(_scalar(arrays, "meta", "U", source)), source)

        activations = arrays["activations"]
        if activations.ndim != 1 or activations.dtype.kind != "U" or activations.size == 0:
            raise PolicyFileError("%s: 'activations' must be a non-empty list of names" % source)
        activations = [str(a) for a in activations]
        unknown = sorted(set(activations) - set(ACTIVATIONS))
        if unknown:
            raise PolicyFileError("%s: unknown activation(s) %s (known: %s)" % (source, ", ".join(unknown),
                                                                              ", ".join(ACTIVATIONS)))
        n_layers = len(activations)
        layer_keys = {"w%d" % i for i in range(n_layers)} | {"b%d" % i for i in range(n_layers)}
        missing = sorted(layer_keys - set(arrays), key=lambda k: (int(k[1:]), k[0]))
        if missing:
            raise PolicyFileError("%s: %d layers announced but %s missing" % (source, n_layers, ", ".join(missing)))
        has_norm = [key in arrays for key in NORMALIZATION_KEYS]
        if any(has_norm) and not all(has_norm):
            raise PolicyFileError("%s: observation normalisation needs all of %s" % (source,
                                                                                     ", ".join(NORMALIZATION_KEYS)))
        known = {"format", "version", "meta", "activations"} | layer_keys | (set(NORMALIZATION_KEYS)
                                                                            if all(has_norm) else set())
        extra = sorted(set(arrays) - known)
        if extra:
            raise PolicyFileError("%s: unexpected entries %s (written by a newer exporter?)" % (source,
                                                                                               ", ".join(extra)))

        obs_dim = sum(meta["observation_sizes"])
        weights: List[np.ndarray] = []
        biases: List[np.ndarray] = []
        width = obs_dim
        for i in range(n_layers):
            w, b = arrays["w%d" % i], arrays["b%d" % i]
            if w.dtype.kind != "f" or b.dtype.kind != "f" or w.ndim != 2 or b.ndim != 1:
                raise PolicyFileError("%s: layer %d must be a float matrix and a float vector, got %s %s and %s %s"
                                      % (source, i, w.dtype, w.shape, b.dtype, b.shape))
            if w.shape[0] != width or b.shape[0] != w.shape[1]:
                raise PolicyFileError("%s: layer %d has weights %s and bias %s; expected %d inputs (%s) and a bias "
                                      "as long as the outputs" % (source, i, w.shape, b.shape, width,
                                                                  "the observation size" if i == 0
                                                                  else "layer %d's outputs" % (i - 1)))
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise PolicyFileError("%s: layer %d has non-finite weights" % (source, i))
            weights.append(np.ascontiguousarray(w, dtype=np.float32))
            biases.append(np.ascontiguousarray(b, dtype=np.float32))
            width = w.shape[1]
        if width != meta["action_size"]:
            raise PolicyFileError("%s: the network has %d outputs but the metadata says action_size %d"
                                  % (source, width, meta["action_size"]))
        if meta["action_kind"] == CONTINUOUS and activations[-1] != "tanh":
            raise PolicyFileError("%s: a continuous policy must end in tanh (actions in [-1, 1]), it ends in %s"
                                  % (source, activations[-1]))
        if meta["action_kind"] == DISCRETE and activations[-1] != "identity":
            raise PolicyFileError("%s: a discrete policy's last layer must be identity (argmax of its outputs), "
                                  "it is %s" % (source, activations[-1]))

        self._mean = self._inv_std = None
        self._clip = math.inf
        if all(has_norm):
            mean, std = arrays["obs_mean"], arrays["obs_std"]
            clip = _scalar(arrays, "obs_clip", "f", source)
            if mean.shape != (obs_dim,) or std.shape != (obs_dim,) or mean.dtype.kind != "f" or std.dtype.kind != "f":
                raise PolicyFileError("%s: obs_mean and obs_std must be float vectors of the observation size %d"
                                      % (source, obs_dim))
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
                raise PolicyFileError("%s: obs_mean must be finite and obs_std finite and > 0" % source)
            if not clip > 0:   # NaN fails too
                raise PolicyFileError("%s: obs_clip must be > 0 (inf: no clipping), got %r" % (source, clip))
            self._mean = mean.astype(np.float32)
            self._inv_std = (1.0 / std.astype(np.float64)).astype(np.float32)
            self._clip = float(clip)

        self._weights = weights
        self._biases = biases
        self._activations = activations
        self._meta = meta
        self.obs_dim = obs_dim
        self.discrete = meta["action_kind"] == DISCRETE

    # ------------------------------------------------------------------ metadata
    @property
    def meta(self) -> Dict[str, Any]:
        """A copy of the file's metadata (``META_FIELDS`` plus any provenance the exporter added)."""
        return _plain(self._meta)

    algo = property(lambda self: self._meta["algo"], doc="algorithm that trained the policy")
    robot = property(lambda self: self._meta["robot"], doc="robot name ('' for a gymnasium env)")
    task = property(lambda self: self._meta["task"], doc="task it was trained on ('' for a gymnasium env)")
    env = property(lambda self: self._meta["env"], doc="gymnasium env id ('' for the walking task)")
    action_kind = property(lambda self: self._meta["action_kind"], doc="'continuous' or 'discrete'")
    action_size = property(lambda self: self._meta["action_size"],
                           doc="continuous: action vector length; discrete: number of actions")
    control_rate_hz = property(lambda self: float(self._meta["control_rate_hz"]), doc="control rate, Hz (0: unknown)")
    env_steps = property(lambda self: self._meta["env_steps"], doc="env steps trained when exported")
    source_checkpoint = property(lambda self: self._meta["source_checkpoint"], doc="checkpoint it came from")
    normalizes_observations = property(lambda self: self._mean is not None,
                                       doc="whether observations are normalised before the first layer")

    @property
    def observation_layout(self) -> List[Tuple[str, int]]:
        """``[(block name, size), ...]`` in observation order, as ``observation_layout()`` gave it at export."""
        return list(zip(self._meta["observation_names"], self._meta["observation_sizes"]))

    @property
    def layer_sizes(self) -> List[int]:
        """Widths from input to output, e.g. ``[62, 256, 256, 18]``."""
        return [self.obs_dim] + [w.shape[1] for w in self._weights]

    def interface(self) -> PolicyInterface:
        m = self._meta
        return PolicyInterface(m["robot"], m["task"], m["observation_names"], m["observation_sizes"],
                               m["action_kind"], m["action_size"], m["control_rate_hz"], m["task_interface"])

    def describe(self) -> str:
        """One line for logs: what, trained how long, for what, from where."""
        what = ("robot %s, task %s" % (self.robot, self.task)) if self.robot else ("env %s" % self.env)
        return "%s policy for %s (%s, %s action %d, %s), %d env steps, from %s" % (
            self.algo, what, "observation %d" % self.obs_dim, self.action_kind, self.action_size,
            "-".join(str(s) for s in self.layer_sizes), self.env_steps, self.source_checkpoint or self.path)

    # ------------------------------------------------------------------ compatibility
    def check_interface(self, expected: PolicyInterface, what: str = "") -> None:
        """:class:`PolicyMismatchError` listing every difference between this policy and ``expected``."""
        mine = self.interface()
        problems = []
        if not mine.robot:
            problems.append("the policy was trained on gymnasium env %r, not on a walking robot" % self.env)
        elif mine.robot != expected.robot:
            problems.append("it was trained for robot %s, not %s" % (mine.robot, expected.robot))
        if (mine.observation_names, mine.observation_sizes) != (expected.observation_names,
                                                                expected.observation_sizes):
            problems.append("observation layout differs: policy %s, expected %s"
                            % (_layout_text(mine.observation_names, mine.observation_sizes),
                               _layout_text(expected.observation_names, expected.observation_sizes)))
        if (mine.action_kind, mine.action_size) != (expected.action_kind, expected.action_size):
            problems.append("action differs: policy %s %d, expected %s %d" % (
                mine.action_kind, mine.action_size, expected.action_kind, expected.action_size))
        if mine.robot and not math.isclose(mine.control_rate_hz, expected.control_rate_hz, rel_tol=1e-9):
            problems.append("control rate differs: policy %g Hz, expected %g Hz"
                            % (mine.control_rate_hz, expected.control_rate_hz))
        if mine.robot and mine.task_interface is not None and expected.task_interface is not None:
            for section in sorted(set(mine.task_interface) | set(expected.task_interface)):
                a, b = mine.task_interface.get(section), expected.task_interface.get(section)
                if a != b:
                    keys = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k))
                    problems.append("task %s settings differ: %s" % (section, ", ".join(
                        "%s policy %r, expected %r" % (k, (a or {}).get(k), (b or {}).get(k)) for k in keys)))
        if problems:
            raise PolicyMismatchError("policy %s (%s, robot %s, task %s) does not fit %s: %s" % (
                self.path, self.algo, mine.robot or "-", mine.task or "-",
                what or "robot %s, task %s" % (expected.robot, expected.task or "-"), "; ".join(problems)))

    def check_compatible(self, robot_cfg: Any, task_cfg: Any) -> None:
        """:class:`PolicyMismatchError` unless this policy can drive ``robot_cfg`` on ``task_cfg`` (configs, names or
        YAML paths): same robot, the observation layout and action space that ``make_spaces``/``observation_layout``
        give, the same control rate and the same action mapping and observation settings."""
        self.check_interface(expected_interface(robot_cfg, task_cfg))

    def check_layout(self, names: Sequence[str], sizes: Sequence[int], what: str = "the observation") -> None:
        """:class:`PolicyMismatchError` unless ``names``/``sizes`` (e.g. a WalkerState's) are this policy's layout."""
        names, sizes = [str(n) for n in names], [int(s) for s in sizes]
        if (names, sizes) != (list(self._meta["observation_names"]), list(self._meta["observation_sizes"])):
            raise PolicyMismatchError("%s has layout %s, the policy %s expects %s" % (
                what, _layout_text(names, sizes), self.path,
                _layout_text(self._meta["observation_names"], self._meta["observation_sizes"])))

    # ------------------------------------------------------------------ acting
    def _check_obs(self, obs: Any) -> np.ndarray:
        try:
            x = np.asarray(obs, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError("observation is not a vector of numbers: %s" % exc) from None
        if x.shape != (self.obs_dim,):
            raise ValueError("observation has shape %s, this policy takes (%d,) (%s)"
                             % (x.shape, self.obs_dim, _layout_text(self._meta["observation_names"],
                                                                    self._meta["observation_sizes"])))
        if not np.all(np.isfinite(x)):
            raise ValueError("observation has non-finite values at indices %s"
                             % np.flatnonzero(~np.isfinite(x)).tolist()[:10])
        return x

    def _run(self, x: np.ndarray) -> np.ndarray:
        """The network on ``x`` (``(obs_dim,)`` or ``(B, obs_dim)`` float32), in float32 like the torch original."""
        if self._mean is not None:
            x = (x - self._mean) * self._inv_std
            if math.isfinite(self._clip):
                x = np.clip(x, -self._clip, self._clip)
        for w, b, activation in zip(self._weights, self._biases, self._activations):
            x = x @ w
            x += b
            if activation == "relu":
                np.maximum(x, 0.0, out=x)
            elif activation == "tanh":
                np.tanh(x, out=x)
        return x

    def forward(self, obs_batch: Any) -> np.ndarray:
        """Raw network outputs for a batch ``(B, obs_dim)``: actions in [-1, 1], or Q-values (discrete).

        Rows are checked like :meth:`act`'s observation (shape, finiteness): ValueError otherwise.
        """
        x = np.asarray(obs_batch, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError("observation batch has shape %s, expected (B, %d)" % (x.shape, self.obs_dim))
        if not np.all(np.isfinite(x)):
            raise ValueError("observation batch has non-finite values")
        return self._run(x)

    def act(self, obs: Any) -> Union[np.ndarray, int]:
        """The action for one observation: a float32 vector in [-1, 1] (continuous) or an int index (discrete).

        A wrong-size or non-finite observation raises ``ValueError``: a policy must never act on garbage.
        """
        out = self._run(self._check_obs(obs))
        if self.discrete:
            return int(np.argmax(out))
        return out

    def __repr__(self) -> str:
        return "NumpyPolicy(%s)" % self.describe()


def load_policy(path: PathLike) -> NumpyPolicy:
    """:class:`NumpyPolicy` from ``path`` (``PolicyFileError`` if it cannot be used)."""
    return NumpyPolicy(path)
