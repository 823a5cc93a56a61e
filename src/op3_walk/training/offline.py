"""Recorded transitions for offline training and fine-tuning: one ``.npz`` format, its checks, and ``prefill``.

``replay_bag buffer`` (``op3_walk.ros.bag_tools``) writes the file from a bag; ``train --prefill FILE`` reads it.
The format lives here, without ROS, so anything (a simulator script, another recorder) can write it.

A transitions file is an uncompressed-or-compressed numpy ``.npz`` (no pickles) holding, for N transitions:

============  ==========================  ==========================================================================
key           shape, dtype                meaning
============  ==========================  ==========================================================================
obs           (N, obs_dim) float32        observation the action answered
actions       (N, act_dim) float32        continuous action in [-1, 1] ...
              or (N,) int64               ... or a discrete action index
rewards       (N,) float64                reward of the transition
next_obs      (N, obs_dim) float32        observation after the action
terminated    (N,) bool                   the episode ended by the task (a fall): no bootstrapping from next_obs
truncated     (N,) bool                   the episode ended by its time limit (bootstrapping goes on)
episode       (N,) int64                  episode number of the transition (optional; ends n-step sums when it
step          (N,) int64                  changes or the step is not the previous one + 1)
meta          () str                      JSON: format, version, and where known robot, task, discrete,
                                          observation_names / observation_sizes, source
============  ==========================  ==========================================================================

Transitions are stored in episode order, so ``prefill`` can rebuild n-step returns exactly as online training
would have.
"""
import json
import os
import tempfile
import zipfile
from typing import Any, Dict, Mapping, Optional

import numpy as np

FORMAT = "op3_walk.transitions"
VERSION = 1
ARRAY_KEYS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")
OPTIONAL_KEYS = ("episode", "step")


class TransitionsError(ValueError):
    """A transitions file or dict that cannot be used: missing, corrupt, inconsistent, or not for this agent."""


def check_transitions(t: Mapping[str, Any], where: str = "transitions") -> Dict[str, Any]:
    """``t`` with its arrays in the canonical dtypes, after checking keys, shapes and values.

    TransitionsError naming ``where`` and the offending key on the first problem: a missing key, rows that disagree,
    a non-finite number, a negative discrete action, or no transitions at all.
    """
    missing = [k for k in ARRAY_KEYS if k not in t]
    if missing:
        raise TransitionsError("%s lacks %s (has %s)" % (where, ", ".join(missing), ", ".join(sorted(t)) or "nothing"))
    out: Dict[str, Any] = {}
    obs = np.asarray(t["obs"])
    if obs.ndim != 2 or obs.shape[1] < 1 or obs.dtype.kind not in "fiu":
        raise TransitionsError("%s: obs must be a (N, obs_dim) number array, got shape %s dtype %s"
                               % (where, obs.shape, obs.dtype))
    n = obs.shape[0]
    if n == 0:
        raise TransitionsError("%s holds no transitions" % where)
    out["obs"] = obs.astype(np.float32)
    next_obs = np.asarray(t["next_obs"])
    if next_obs.shape != obs.shape or next_obs.dtype.kind not in "fiu":
        raise TransitionsError("%s: next_obs has shape %s, obs %s" % (where, next_obs.shape, obs.shape))
    out["next_obs"] = next_obs.astype(np.float32)
    actions = np.asarray(t["actions"])
    if actions.ndim == 1 and actions.dtype.kind in "iu":
        if actions.shape != (n,):
            raise TransitionsError("%s: %d discrete actions for %d transitions" % (where, actions.shape[0], n))
        if (actions < 0).any():
            raise TransitionsError("%s: negative discrete action %d" % (where, int(actions.min())))
        out["actions"] = actions.astype(np.int64)
    elif actions.ndim == 2 and actions.dtype.kind == "f":
        if actions.shape[0] != n or actions.shape[1] < 1:
            raise TransitionsError("%s: actions have shape %s for %d transitions" % (where, actions.shape, n))
        out["actions"] = actions.astype(np.float32)
    else:
        raise TransitionsError("%s: actions must be (N, act_dim) floats or (N,) integers, got shape %s dtype %s"
                               % (where, actions.shape, actions.dtype))
    rewards = np.asarray(t["rewards"])
    if rewards.shape != (n,) or rewards.dtype.kind not in "fiu":
        raise TransitionsError("%s: rewards have shape %s, expected (%d,)" % (where, rewards.shape, n))
    out["rewards"] = rewards.astype(np.float64)
    for key in ("terminated", "truncated"):
        flags = np.asarray(t[key])
        if flags.shape != (n,) or flags.dtype != np.bool_:
            raise TransitionsError("%s: %s must be (%d,) bool, got shape %s dtype %s"
                                   % (where, key, n, flags.shape, flags.dtype))
        out[key] = flags
    for key in OPTIONAL_KEYS:
        if key in t:
            values = np.asarray(t[key])
            if values.shape != (n,) or values.dtype.kind not in "iu":
                raise TransitionsError("%s: %s must be (%d,) integers, got shape %s dtype %s"
                                       % (where, key, n, values.shape, values.dtype))
            out[key] = values.astype(np.int64)
    for key in ("obs", "next_obs", "actions", "rewards"):
        values = out[key]
        if values.dtype.kind == "f":
            bad = ~np.isfinite(values)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise TransitionsError("%s: %s is not finite (NaN/inf or beyond float32) in transition %d"
                                       % (where, key, row))
    if np.any(np.abs(out["rewards"]) > np.finfo(np.float32).max):
        raise TransitionsError("%s: a reward exceeds float32 (the replay memory's type)" % where)
    meta = t.get("meta", {})
    if not isinstance(meta, Mapping):
        raise TransitionsError("%s: meta must be a dict, got %r" % (where, type(meta).__name__))
    out["meta"] = dict(meta)
    discrete = out["actions"].ndim == 1
    if "discrete" in meta and bool(meta["discrete"]) != discrete:
        raise TransitionsError("%s: meta says discrete=%s but the actions are %s"
                               % (where, meta["discrete"], "indices" if discrete else "vectors"))
    return out


def save_transitions(path: str, transitions: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None) -> str:
    """Check ``transitions`` and write them (compressed) to ``path`` atomically; returns the path written.

    ``meta`` (JSON-serialisable) is merged over ``transitions.get("meta")``; format and version are added.
    """
    merged = dict(transitions.get("meta", {}))
    merged.update(meta or {})
    merged.update(format=FORMAT, version=VERSION)
    checked = check_transitions(dict(transitions, meta=merged), where="transitions for %s" % path)
    arrays = {k: v for k, v in checked.items() if k != "meta"}
    arrays["meta"] = np.array(json.dumps(merged, sort_keys=True))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".transitions-", suffix=".npz", dir=folder)
    try:
        os.chmod(tmp, 0o644)   # mkstemp makes it private (0600); the file is ordinary data
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_transitions(path: str) -> Dict[str, Any]:
    """The transitions of a file written by :func:`save_transitions` (e.g. ``replay_bag buffer``), checked.

    Returns ``{"obs", "actions", "rewards", "next_obs", "terminated", "truncated"[, "episode", "step"]}`` as numpy
    arrays plus ``"meta"`` (a dict).  TransitionsError for a missing, truncated or corrupt file, or content that
    fails :func:`check_transitions`.
    """
    if not os.path.isfile(path):
        raise TransitionsError("transitions file %s does not exist" % path)
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {key: data[key] for key in data.files}   # reading every member checks its CRC
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise TransitionsError("%s is not a readable transitions file (truncated or corrupt .npz?): %s"
                               % (path, exc)) from None
    if "meta" not in raw:
        raise TransitionsError("%s has no meta entry: not written by op3_walk (replay_bag buffer)" % path)
    try:
        meta = json.loads(str(raw.pop("meta")))
    except ValueError as exc:
        raise TransitionsError("%s: meta is not valid JSON: %s" % (path, exc)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TransitionsError("%s is not an op3_walk transitions file (format %r)"
                               % (path, meta.get("format") if isinstance(meta, dict) else meta))
    if int(meta.get("version", 0)) > VERSION:
        raise TransitionsError("%s has format version %s; this op3_walk reads up to %d"
                               % (path, meta.get("version"), VERSION))
    raw["meta"] = meta
    return check_transitions(raw, where=path)


def _same_config_name(a: Any, b: Any) -> bool:
    """Robot/task names given as a name or a YAML path compare by their base name (``walk`` == ``.../walk.yaml``)."""
    def base(x: Any) -> str:
        return os.path.splitext(os.path.basename(str(x)))[0]
    return base(a) == base(b)


def check_fit(agent: Any, transitions: Mapping[str, Any], expect: Optional[Mapping[str, Any]] = None
              ) -> Dict[str, Any]:
    """The checked ``transitions`` if they fit ``agent`` (see :func:`prefill`), else TransitionsError."""
    from op3_walk.agents import DISCRETE_ALGOS

    t = check_transitions(transitions)
    meta = t["meta"]
    expect = dict(expect or {})
    if expect.get("env") and "env" not in meta and meta.get("robot"):
        raise TransitionsError("transitions were recorded on the walking env (robot %r); this run trains on %r"
                               % (meta["robot"], expect["env"]))
    for key, wanted in expect.items():
        if wanted is not None and key in meta and meta[key] is not None and not _same_config_name(meta[key], wanted):
            raise TransitionsError("transitions were recorded with %s %r; this run uses %r" % (key, meta[key], wanted))
    obs_dim = t["obs"].shape[1]
    if obs_dim != agent.obs_dim:
        raise TransitionsError("transitions have %d-value observations; the agent expects %d (another robot or "
                               "task?)" % (obs_dim, agent.obs_dim))
    discrete_agent = getattr(agent, "algo", "") in DISCRETE_ALGOS
    actions = t["actions"]
    if discrete_agent != (actions.ndim == 1):
        raise TransitionsError("transitions hold %s actions; %s needs %s ones"
                               % ("discrete" if actions.ndim == 1 else "continuous", agent.algo,
                                  "discrete" if discrete_agent else "continuous"))
    if discrete_agent and int(actions.max()) >= agent.act_dim:
        raise TransitionsError("transitions hold discrete action %d; the agent has %d actions"
                               % (int(actions.max()), agent.act_dim))
    if not discrete_agent and actions.shape[1] != agent.act_dim:
        raise TransitionsError("transitions have %d-value actions; the agent expects %d"
                               % (actions.shape[1], agent.act_dim))
    return t


def prefill(agent: Any, transitions: Mapping[str, Any], expect: Optional[Mapping[str, Any]] = None) -> int:
    """Push ``transitions`` into ``agent``'s replay memory; returns how many were pushed.

    They go through ``agent.action_row`` and ``agent.memory.add`` in file order, exactly as ``agent.observe``
    stores online transitions, so n-step returns (summed within each episode; an episode ends at a ``terminated``
    or ``truncated`` flag, an episode/step discontinuity or a gap in the observations) and prioritised replay
    (new transitions get the highest priority) work as online.  Unlike ``observe`` they do not count as env steps:
    the agent's ``env_steps`` (step budget, ``learning_starts`` warm-up, exploration schedules) is about its own
    interaction.  A memory smaller than the file keeps the newest transitions.

    ``expect`` (e.g. ``{"robot": "plen", "task": "walk"}``) is compared with the file's meta where both name a
    value.  Everything is checked first (:func:`check_fit`): TransitionsError, and an unchanged memory, on a size
    that does not fit the agent (observation size, action size or count of discrete actions), continuous actions for
    a discrete agent or the reverse, or an ``expect`` mismatch.
    """
    t = check_fit(agent, transitions, expect)
    actions = t["actions"]
    memory = agent.memory
    memory.flush()   # whatever online episode was pending ends here
    episode, step = t.get("episode"), t.get("step")
    for i in range(len(t["rewards"])):
        if episode is not None and step is not None and i > 0 and (
                episode[i] != episode[i - 1] or step[i] != step[i - 1] + 1):
            memory.flush()
        memory.add(t["obs"][i], agent.action_row(actions[i]), float(t["rewards"][i]), t["next_obs"][i],
                   bool(t["terminated"][i]), bool(t["truncated"][i]))
    memory.flush()
    return len(t["rewards"])


def offline_updates(agent: Any, updates: int) -> Dict[str, float]:
    """``updates`` gradient updates from the replay memory, with no env steps (e.g. after :func:`prefill`).

    Returns the mean of each value ``agent.update()`` reports.  TransitionsError when the memory holds fewer
    transitions than one batch (prefill more, or lower ``batch_size``).
    """
    if updates < 0:
        raise ValueError("offline updates must be >= 0, got %d" % updates)
    if updates and len(agent.memory) < agent.config.batch_size:
        raise TransitionsError("%d offline updates need at least one batch (%d transitions) in the replay memory; "
                               "it holds %d" % (updates, agent.config.batch_size, len(agent.memory)))
    sums: Dict[str, float] = {}
    for _ in range(updates):
        for key, value in agent.update().items():
            sums[key] = sums.get(key, 0.0) + float(value)
    return {key: value / updates for key, value in sums.items()} if updates else {}
