"""``replay_bag``: read an op3_walk session bag (``train.launch record:=true``, ``record.launch``) without ROS running.

Subcommands (``scripts/replay_bag --help``)::

    replay_bag info BAG [BAG ...] [--json]                  episodes, steps, returns, joints, duration
    replay_bag render BAG --episode N --out ep.gif          kinematic re-render in PyBullet (or --frames DIR)
    replay_bag plot BAG --episode N --out ep.png            joint positions and reward terms over time
    replay_bag buffer BAG --out transitions.npz             (obs, action, reward, next_obs, ...) for train --prefill

Several BAG files are read as one recording (the ``_0.bag, _1.bag, ...`` files of a split recording).

How a bag becomes episodes: every ``WalkerState`` is keyed by its ``(episode, step)``; a state seen twice (the
controller re-sends its state when an action is repeated) counts once. A controller that restarts numbers its
episodes from 1 again: a state whose episode number goes back, or a second reset state of an episode, starts a new
*segment*, so episodes of different controller runs never mix (``--segment`` picks one where needed). A
transition is ``WalkerState (e, k)`` + the ``WalkerAction (e, k)`` that answered it + ``WalkerState (e, k+1)``;
an action without both states (the recording started or stopped in between, or a message was lost) is skipped and
counted, as are malformed actions (the controller rejected them too) and actions sent after an episode ended.
``EpisodeStats`` (the learner's ``walker/episode``) are matched to the episode that ended just before them with
the same length, so their returns can be compared with the bag's own sums.

Topic names are matched by their ending (``walker/state``), whatever namespace they were recorded in; ``--ns``
chooses when a bag holds several sessions (e.g. ``actor_0`` and ``actor_1``).
"""
import argparse
import dataclasses
import glob
import json
import math
import os
import struct
import sys
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import genpy
import numpy as np
import rosbag

ROLES = OrderedDict([  # role -> (topic suffix, message type)
    ("state", ("walker/state", "op3_walk/WalkerState")),
    ("action", ("walker/action", "op3_walk/WalkerAction")),
    ("episode", ("walker/episode", "op3_walk/EpisodeStats")),
])
GIF_MIN_FRAME_S = 0.02    # browsers slow GIF frames shorter than 20 ms down to 100 ms: keep the default above this
GIF_TIME_UNIT_S = 0.01    # GIF frame durations are whole hundredths of a second
STATS_CLOCK_SLACK_S = 1.0  # s an EpisodeStats stamp may precede its episode's last state (clocks of two machines)


class BagError(ValueError):
    """A bag that cannot be used for what was asked: missing, unreadable, not an op3_walk session, no such episode."""


# -- opening ---------------------------------------------------------------------------------------------------
def open_bag(path: str) -> rosbag.Bag:
    """``rosbag.Bag(path)`` with one clear message for each way it can fail."""
    if not os.path.exists(path):
        if os.path.exists(path + ".active"):
            raise BagError("%s is still being recorded, or its recorder was killed (only %s.active exists; after a "
                           "kill: rosbag reindex %s.active)" % (path, path, path))
        candidates = sorted(glob.glob(glob.escape(os.path.splitext(path)[0]) + "_*.bag"))
        hint = " (split recording? give its files: %s)" % " ".join(candidates) if candidates else ""
        raise BagError("bag %s does not exist%s" % (path, hint))
    if path.endswith(".active"):
        raise BagError("%s is a bag still being written (or left by a killed recorder): wait for the recorder to "
                       "stop, or run rosbag reindex %s" % (path, path))
    try:
        return rosbag.Bag(path, "r")
    except rosbag.ROSBagUnindexedException:
        raise BagError("%s is not indexed (its recorder was killed?): run rosbag reindex %s" % (path, path)) from None
    except (rosbag.ROSBagException, rosbag.ROSBagFormatException, OSError, ValueError, KeyError) as exc:
        raise BagError("%s is not a readable bag: %s" % (path, exc or type(exc).__name__)) from None


def _namespace_of(topic: str, suffix: str) -> str:
    """``/actor_0/walker/state`` -> ``actor_0``; ``walker/state`` -> ``''``."""
    return topic.strip("/")[:-len(suffix)].strip("/")


def resolve_topics(topic_types: Dict[str, str], ns: Optional[str] = None) -> Dict[str, str]:
    """Role -> topic name in the bag (``state`` always; ``action`` and ``episode`` when recorded).

    Topics are matched by their ending, in any namespace. BagError when there is no state topic, when several
    namespaces hold one and ``ns`` does not pick one, or when a topic has an unexpected type.
    """
    want = None if ns is None else ns.strip("/")
    found: Dict[str, str] = {}
    for role, (suffix, msg_type) in ROLES.items():
        matches = [t for t in sorted(topic_types) if t.strip("/") == suffix or t.strip("/").endswith("/" + suffix)]
        if want is not None:
            in_ns = [t for t in matches if _namespace_of(t, suffix) == want]
            # the learner's walker/episode may live outside the actors' namespace: accept a single one anywhere
            matches = in_ns or (matches if role == "episode" and len(matches) == 1 else [])
        elif role != "state" and "state" in found:
            state_ns = _namespace_of(found["state"], ROLES["state"][0])
            matches = [t for t in matches if _namespace_of(t, suffix) == state_ns] or (
                matches if role == "episode" and len(matches) == 1 else [])
        if len(matches) > 1:
            spaces = ", ".join(repr(_namespace_of(t, suffix) or "/") for t in matches)
            raise BagError("the bag holds %s in several namespaces (%s): choose one with --ns" % (suffix, spaces))
        if not matches:
            if role != "state":
                continue
            elsewhere = [t for t in topic_types if t.strip("/") == suffix or t.strip("/").endswith("/" + suffix)]
            if want is not None and elsewhere:
                spaces = ", ".join(repr(_namespace_of(t, suffix) or "/") for t in sorted(elsewhere))
                raise BagError("no %s in namespace %r; the bag has it in %s (a recorder running in a namespace "
                               "stores names relative to it: then leave --ns out)" % (suffix, want, spaces))
            raise BagError("no %s topic in the bag (topics: %s): not an op3_walk session recording, or recorded "
                           "without it" % (suffix, ", ".join(sorted(topic_types)) or "none"))
        topic = matches[0]
        if topic_types[topic] != msg_type:
            raise BagError("topic %s has type %s, expected %s" % (topic, topic_types[topic], msg_type))
        found[role] = topic
    return found


# -- the recording as episodes ---------------------------------------------------------------------------------
@dataclasses.dataclass
class StateRecord:
    """One WalkerState, reduced to what the tools use (``detail`` fields only for episodes asked for)."""

    step: int
    stamp: float                 # s, header stamp (publication time)
    bag_time: float              # s, when the recorder received it
    sim_time: float              # s since the reset
    reward: float
    terminated: bool
    truncated: bool
    distance: float              # m
    obs: Optional[np.ndarray] = None            # float32 observation (buffer)
    joints: Optional[np.ndarray] = None         # rad, in the bag's joint order (render, plot)
    position: Optional[np.ndarray] = None       # m, torso in odom
    orientation: Optional[np.ndarray] = None    # quaternion x, y, z, w
    reward_terms: Optional[Dict[str, float]] = None


@dataclasses.dataclass
class Episode:
    segment: int                 # 0 unless the controller restarted during the recording
    episode: int                 # the controller's episode number (WalkerState.episode)
    states: Dict[int, StateRecord] = dataclasses.field(default_factory=dict)   # step -> first state received
    actions: Dict[int, Any] = dataclasses.field(default_factory=dict)   # step -> action (array or int; None: kept
    #                                                                       out of memory, only counted)
    stats: Optional[Dict[str, Any]] = None      # the matched EpisodeStats

    @property
    def label(self) -> str:
        return "%d" % self.episode if self.segment == 0 else "%d (segment %d)" % (self.episode, self.segment)

    @property
    def steps(self) -> List[int]:
        return sorted(self.states)

    @property
    def last(self) -> StateRecord:
        return self.states[max(self.states)]

    @property
    def end(self) -> str:
        """``fell`` (terminated), ``time_limit`` (truncated) or ``open`` (the bag has no end state)."""
        last = self.last
        return "fell" if last.terminated else "time_limit" if last.truncated else "open"

    @property
    def complete(self) -> bool:
        """Reset state, every step and an end state are in the bag."""
        steps = self.steps
        return steps[0] == 0 and steps[-1] == len(steps) - 1 and self.end != "open"

    @property
    def length(self) -> int:
        """Control steps the bag covers (the last step number minus the first)."""
        steps = self.steps
        return steps[-1] - steps[0]

    @property
    def episode_return(self) -> float:
        """Sum of the rewards of the states after the first one recorded (the whole return when complete)."""
        steps = self.steps
        total = 0.0
        for k in steps[1:]:
            total += self.states[k].reward
        return total


@dataclasses.dataclass
class Recording:
    """A bag (or the files of a split recording) read as episodes; see the module docstring."""

    paths: List[str]
    topics: Dict[str, str]                       # role -> topic
    topic_counts: Dict[str, Tuple[str, int]]     # every topic in the bag -> (type, messages)
    start: float                                 # s, bag time of the first message
    end: float
    size_bytes: int
    compression: str
    joint_names: List[str]
    observation_names: List[str]
    observation_sizes: List[int]
    foot_names: List[str]
    action_kind: str                             # continuous, discrete, or none (no action recorded)
    action_size: int                             # values per continuous action (0 for discrete)
    max_discrete_action: int                     # largest discrete action index seen (-1: none)
    episodes: "OrderedDict[Tuple[int, int], Episode]"
    counts: Dict[str, int]                       # duplicates, conflicts, malformed, unmatched ... (see read_recording)
    unmatched_stats: List[Dict[str, Any]]

    @property
    def namespace(self) -> str:
        return _namespace_of(self.topics["state"], ROLES["state"][0])

    def find(self, episode: int, segment: Optional[int] = None) -> Episode:
        """The episode numbered ``episode`` (in ``segment``, needed only when several segments have one)."""
        found = [e for (s, n), e in self.episodes.items()
                 if n == episode and e.states and (segment is None or s == segment)]
        if not found:
            known = [e.label for e in self.episodes.values() if e.states]
            shown = ", ".join(known[:8]) + (" ... %s" % known[-1] if len(known) > 8 else "")
            raise BagError("episode %d%s is not in the bag (it has %d episode(s): %s)"
                           % (episode, "" if segment is None else " of segment %d" % segment, len(known),
                              shown or "none"))
        if len(found) > 1:
            raise BagError("episode %d is in %d segments (%s): the controller restarted during the recording; choose "
                           "one with --segment" % (episode, len(found), ", ".join(str(e.segment) for e in found)))
        return found[0]


def _stamp(msg: Any) -> float:
    return msg.header.stamp.to_sec()


def _action_value(msg: Any) -> Any:
    """The action of a WalkerAction: an int for a discrete one, else a float32 array; None when malformed (both or
    neither, non-finite)."""
    values = np.asarray(msg.action, dtype=np.float32)
    if msg.discrete_action >= 0:
        return int(msg.discrete_action) if values.size == 0 else None
    if values.size == 0 or not np.all(np.isfinite(values)):
        return None
    return values


def _same_action(a: Any, b: Any) -> bool:
    if isinstance(a, int) or isinstance(b, int):
        return a == b
    return a.shape == b.shape and np.array_equal(a, b)


def read_recording(paths: Sequence[str], ns: Optional[str] = None,
                   detail: Callable[[int, int], bool] = lambda segment, episode: False,
                   observations: bool = False) -> Recording:
    """Read the state, action and episode topics of ``paths`` (one recording, in time order) into episodes.

    ``detail(segment, episode)``: keep joints, torso pose and reward terms of that episode's states (render, plot).
    ``observations``: keep every state's observation and every action (buffer).  Otherwise only what ``info``
    needs is kept, so large bags stay small in memory.

    ``counts`` holds: ``duplicate_states`` (identical re-sends), ``conflicting_states`` (same (episode, step), other
    content: the first is kept), ``duplicate_actions``, ``conflicting_actions``, ``malformed_actions`` (the
    controller rejects them as well), ``segments``.
    """
    if not paths:
        raise BagError("no bag given")
    bags = [open_bag(p) for p in paths]
    try:
        bags.sort(key=lambda b: b.get_start_time() if b.get_message_count() else math.inf)
        topic_counts: Dict[str, Tuple[str, int]] = {}
        for bag in bags:
            for topic, info in bag.get_type_and_topic_info().topics.items():
                old = topic_counts.get(topic, (info.msg_type, 0))
                if old[0] != info.msg_type:
                    raise BagError("topic %s has type %s in one file and %s in another" % (topic, old[0],
                                                                                           info.msg_type))
                topic_counts[topic] = (info.msg_type, old[1] + info.message_count)
        topics = resolve_topics({t: v[0] for t, v in topic_counts.items()}, ns)
        counted = [b for b in bags if b.get_message_count()]
        start = min(b.get_start_time() for b in counted) if counted else 0.0
        end = max(b.get_end_time() for b in counted) if counted else 0.0
        compressions = sorted({b.get_compression_info().compression for b in bags})
        rec = Recording(paths=[os.path.abspath(b.filename) for b in bags], topics=topics, topic_counts=topic_counts,
                        start=start, end=end, size_bytes=sum(b.size for b in bags), compression="/".join(compressions),
                        joint_names=[], observation_names=[], observation_sizes=[], foot_names=[],
                        action_kind="none", action_size=0, max_discrete_action=-1, episodes=OrderedDict(),
                        counts=dict.fromkeys(("duplicate_states", "conflicting_states", "duplicate_actions",
                                              "conflicting_actions", "malformed_actions"), 0),
                        unmatched_stats=[])
        stats_msgs: List[Tuple[float, Any]] = []
        segment, max_episode = 0, 0
        names_by_role = {topic: role for role, topic in topics.items()}
        for bag in bags:
            try:
                for topic, msg, t in bag.read_messages(topics=list(topics.values())):
                    role = names_by_role[topic]
                    if role == "state":
                        segment, max_episode = _add_state(rec, msg, t.to_sec(), segment, max_episode, detail,
                                                          observations)
                    elif role == "action":
                        _add_action(rec, msg, segment, observations)
                    else:
                        stats_msgs.append((t.to_sec(), msg))
            except BagError:
                raise
            except (rosbag.ROSBagException, rosbag.ROSBagFormatException, genpy.DeserializationError, OSError,
                    ValueError, KeyError, RuntimeError, struct.error) as exc:
                # roslz4 raises plain RuntimeError/IOError on a damaged chunk
                raise BagError("%s: cannot read its messages (corrupt or truncated?): %s"
                               % (bag.filename, exc or type(exc).__name__)) from None
        rec.counts["segments"] = segment + 1 if rec.episodes else 0
        _match_stats(rec, stats_msgs)
        return rec
    finally:
        for bag in bags:
            bag.close()


def _add_state(rec: Recording, msg: Any, bag_time: float, segment: int, max_episode: int,
               detail: Callable[[int, int], bool], observations: bool) -> Tuple[int, int]:
    e, k = int(msg.episode), int(msg.step)
    if not rec.joint_names:
        rec.joint_names = list(msg.joint_names)
        rec.observation_names = list(msg.observation_names)
        rec.observation_sizes = [int(s) for s in msg.observation_sizes]
        rec.foot_names = list(msg.foot_names)
    # A controller restart numbers episodes from 1 again.
    existing = rec.episodes.get((segment, e))
    if e < max_episode or (k == 0 and existing is not None and 0 in existing.states
                           and existing.states[0].stamp != _stamp(msg)):
        segment, max_episode = segment + 1, 0
        existing = None
    max_episode = max(max_episode, e)
    ep = existing if existing is not None else rec.episodes.setdefault((segment, e), Episode(segment, e))
    old = ep.states.get(k)
    if old is not None:
        same = old.stamp == _stamp(msg) and old.reward == msg.reward
        rec.counts["duplicate_states" if same else "conflicting_states"] += 1
        return segment, max_episode
    record = StateRecord(step=k, stamp=_stamp(msg), bag_time=bag_time, sim_time=float(msg.sim_time),
                         reward=float(msg.reward), terminated=bool(msg.terminated), truncated=bool(msg.truncated),
                         distance=float(msg.distance))
    if observations:
        record.obs = np.asarray(msg.observation, dtype=np.float32)
    if detail(segment, e):
        record.joints = np.asarray(msg.joint_positions, dtype=np.float64)
        p, q = msg.torso_pose.position, msg.torso_pose.orientation
        record.position = np.array([p.x, p.y, p.z])
        record.orientation = np.array([q.x, q.y, q.z, q.w])
        record.reward_terms = dict(zip(msg.reward_term_names, (float(v) for v in msg.reward_terms)))
    ep.states[k] = record
    return segment, max_episode


def _add_action(rec: Recording, msg: Any, segment: int, keep: bool) -> None:
    value = _action_value(msg)
    if value is None:
        rec.counts["malformed_actions"] += 1
        return
    if isinstance(value, int):
        rec.action_kind = "discrete"
        rec.max_discrete_action = max(rec.max_discrete_action, value)
    else:
        rec.action_kind = "continuous"
        rec.action_size = rec.action_size or int(value.size)
    e, k = int(msg.episode), int(msg.step)
    ep = rec.episodes.setdefault((segment, e), Episode(segment, e))
    if k in ep.actions:
        old = ep.actions[k]
        same = old is None or _same_action(old, value)   # not kept: a repeat is by far the likely case
        rec.counts["duplicate_actions" if same else "conflicting_actions"] += 1
        return
    ep.actions[k] = value if keep else None


def _match_stats(rec: Recording, stats_msgs: List[Tuple[float, Any]]) -> None:
    """Give each EpisodeStats the episode it reports: one that ended (by its state's stamp) before the stats were
    published, with the same length, unmatched so far.  Receipt order in the bag cannot be used: the recorder gets
    each topic on its own connection, so a stats message can be stored just before the state that ended its
    episode.

    Two passes.  First every stats message takes an episode whose summed rewards are its return, exactly (a whole
    episode and its own stats always agree).  Only then do the rest (stats of an episode the recording joined
    midway, or of one that ended before it started) take the best remaining episode by ``_stats_fit``; a whole
    episode that gets one of those is a return mismatch in ``summary``.  One pass in arrival order let such stats
    take a whole episode of the same length before that episode's own stats came (a CI failure)."""
    ended = [ep for ep in rec.episodes.values() if ep.states and ep.end != "open"]
    ns = rec.namespace
    pending = []
    for _, msg in stats_msgs:
        actor = getattr(msg, "actor", "")
        if actor and actor.strip("/") != ns:
            continue   # another actor's episode (the learner serves several controllers)
        pending.append(({"episode": int(msg.episode), "return": float(msg.episode_return), "length": int(msg.length),
                         "fell": bool(msg.fell), "distance": float(msg.distance), "actor": actor}, _stamp(msg)))

    def candidates(stats: Dict[str, Any], published: float) -> List[Episode]:
        return [ep for ep in ended if ep.stats is None and ep.last.step == stats["length"]
                and ep.last.stamp <= published + STATS_CLOCK_SLACK_S]

    rest = []
    for stats, published in pending:
        exact = [ep for ep in candidates(stats, published) if _same_return(ep, stats)]
        if exact:
            max(exact, key=lambda ep: _stats_fit(ep, stats)).stats = stats
        else:
            rest.append((stats, published))
    for stats, published in rest:
        options = candidates(stats, published)
        if options:
            max(options, key=lambda ep: _stats_fit(ep, stats)).stats = stats
        else:
            rec.unmatched_stats.append(stats)


def _same_return(ep: Episode, stats: Dict[str, Any]) -> bool:
    return math.isclose(ep.episode_return, stats["return"], rel_tol=1e-9, abs_tol=1e-9)


def _stats_fit(ep: Episode, stats: Dict[str, Any]) -> Tuple[bool, bool, bool, float]:
    """How well an ended episode fits an EpisodeStats (larger: better): its summed rewards are the reported return;
    its end (fall, distance) is the reported one; it is partial (a recording that joined mid-episode cannot sum its
    return, so stats that match no whole episode's return are its, not a later whole one's that merely has the
    same length); the latest."""
    same_end = (ep.end == "fell") == stats["fell"] and math.isclose(ep.last.distance, stats["distance"],
                                                                       rel_tol=1e-6, abs_tol=1e-6)
    return _same_return(ep, stats), same_end, not ep.complete, ep.last.stamp


# -- transitions -----------------------------------------------------------------------------------------------
def transitions(rec: Recording) -> Tuple[Dict[str, np.ndarray], Dict[str, int]]:
    """Transitions ``(obs, action, reward, next_obs, terminated, truncated, episode, step)`` in episode order, and
    the counts of what was skipped (``no_state``, ``no_next_state``, ``after_end``: actions answering no state of
    the bag, whose result is not in the bag, or sent after the episode ended) plus ``open_states`` (non-final states
    the bag has no action for: where the recording or the run stopped).  Needs ``read_recording(observations=True)``.
    """
    rows: Dict[str, list] = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated",
                                               "episode", "step")}
    skipped = dict.fromkeys(("no_state", "no_next_state", "after_end", "open_states"), 0)
    for ep in rec.episodes.values():
        for k in sorted(ep.actions):
            state, following = ep.states.get(k), ep.states.get(k + 1)
            if state is None:
                skipped["no_state"] += 1
            elif state.terminated or state.truncated:
                skipped["after_end"] += 1
            elif following is None:
                skipped["no_next_state"] += 1
            else:
                if state.obs is None or ep.actions[k] is None:
                    raise RuntimeError("transitions() needs read_recording(..., observations=True)")
                rows["obs"].append(state.obs)
                rows["actions"].append(ep.actions[k])
                rows["rewards"].append(following.reward)
                rows["next_obs"].append(following.obs)
                rows["terminated"].append(following.terminated)
                rows["truncated"].append(following.truncated)
                rows["episode"].append(ep.episode)
                rows["step"].append(k)
        skipped["open_states"] += sum(1 for k, s in ep.states.items()
                                      if k not in ep.actions and not (s.terminated or s.truncated))
    discrete = rec.action_kind == "discrete"
    out = {
        "obs": np.array(rows["obs"], dtype=np.float32),
        "actions": np.array(rows["actions"], dtype=np.int64 if discrete else np.float32),
        "rewards": np.array(rows["rewards"], dtype=np.float64),
        "next_obs": np.array(rows["next_obs"], dtype=np.float32),
        "terminated": np.array(rows["terminated"], dtype=bool),
        "truncated": np.array(rows["truncated"], dtype=bool),
        "episode": np.array(rows["episode"], dtype=np.int64),
        "step": np.array(rows["step"], dtype=np.int64),
    }
    return out, skipped


# -- robots ----------------------------------------------------------------------------------------------------
def guess_robot(joint_names: Sequence[str]) -> Optional[str]:
    """The robot config in ``config/robots/`` whose joints are the bag's (in that order), or None."""
    from op3_walk.robots import ROBOTS_DIR, load_robot
    for name in sorted(f[:-5] for f in os.listdir(ROBOTS_DIR) if f.endswith(".yaml")):
        try:
            if list(load_robot(name).joint_names) == list(joint_names):
                return name
        except ValueError:
            continue
    return None


def _robot_for(rec: Recording, robot: Optional[str]) -> Any:
    """The RobotConfig to use: ``robot`` if given (its joints must all be in the bag), else the one the bag's joint
    names identify."""
    from op3_walk.robots import load_robot
    joints = ", ".join(rec.joint_names[:6]) + (" ..." if len(rec.joint_names) > 6 else "")
    name = robot or guess_robot(rec.joint_names)
    if name is None:
        raise BagError("no robot in config/robots has the bag's joints (%s): pass --robot" % (joints or "none"))
    cfg = load_robot(name)
    missing = [j for j in cfg.joint_names if j not in rec.joint_names]
    if missing:
        raise BagError("robot %s has joints the bag lacks (%s): the bag is of another robot (its joints: %s)"
                       % (cfg.name, ", ".join(missing[:5]), joints or "none"))
    return cfg


# -- info ------------------------------------------------------------------------------------------------------
def summary(rec: Recording) -> Dict[str, Any]:
    """Everything ``info`` shows, as JSON-ready data."""
    episodes = []
    for ep in rec.episodes.values():
        if not ep.states:
            continue   # actions only: counted in the totals
        episodes.append({
            "segment": ep.segment, "episode": ep.episode, "steps": ep.length, "states": len(ep.states),
            "actions": len(ep.actions), "first_step": ep.steps[0], "last_step": ep.steps[-1],
            "return": ep.episode_return, "end": ep.end, "complete": ep.complete, "distance_m": ep.last.distance,
            "sim_time_s": ep.last.sim_time, "stats": ep.stats})
    stats_checked = [e for e in episodes if e["stats"] is not None and e["complete"]]
    return {
        "bags": rec.paths, "size_bytes": rec.size_bytes, "compression": rec.compression,
        "start": rec.start, "end": rec.end, "duration_s": rec.end - rec.start,
        "topics": {t: {"type": ty, "messages": n} for t, (ty, n) in sorted(rec.topic_counts.items())},
        "used_topics": rec.topics, "namespace": rec.namespace,
        "robot": guess_robot(rec.joint_names) if rec.joint_names else None,
        "joint_names": rec.joint_names, "foot_names": rec.foot_names,
        "observation": {"size": int(sum(rec.observation_sizes)),
                        "blocks": [[n, s] for n, s in zip(rec.observation_names, rec.observation_sizes)]},
        "action": {"kind": rec.action_kind, "size": rec.action_size,
                   "max_discrete_action": rec.max_discrete_action},
        "segments": rec.counts["segments"],
        "totals": {
            "episodes": len(episodes), "complete": sum(e["complete"] for e in episodes),
            "fell": sum(e["end"] == "fell" for e in episodes),
            "time_limit": sum(e["end"] == "time_limit" for e in episodes),
            "open": sum(e["end"] == "open" for e in episodes),
            "steps": sum(e["steps"] for e in episodes), "states": sum(e["states"] for e in episodes),
            "actions": sum(len(ep.actions) for ep in rec.episodes.values()),
            "return_of_complete": sum(e["return"] for e in episodes if e["complete"]),
            "stats_matched": sum(e["stats"] is not None for e in episodes),
            "stats_unmatched": len(rec.unmatched_stats),
            "stats_return_mismatches": sum(1 for e in stats_checked
                                           if not math.isclose(e["return"], e["stats"]["return"], rel_tol=1e-9,
                                                               abs_tol=1e-9)),
        },
        "counts": {k: v for k, v in rec.counts.items() if k != "segments"},
        "episodes": episodes,
    }


def format_summary(s: Dict[str, Any]) -> str:
    """``summary`` as text: a header, then one row per episode."""
    t = s["totals"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["start"])) if s["start"] else "-"
    lines = ["bag:          %s" % " ".join(s["bags"]),
             "size:         %.1f MB, compression %s" % (s["size_bytes"] / 1e6, s["compression"] or "none"),
             "recorded:     %s, %.1f s" % (when, s["duration_s"]),
             "topics:       %s" % ", ".join("%s (%d)" % (name, v["messages"]) for name, v in s["topics"].items()),
             "namespace:    %s" % (s["namespace"] or "/ (or relative names)")]
    robot = s["robot"] or "unknown (no config/robots file has these joints)"
    lines.append("robot:        %s, %d joints: %s" % (robot, len(s["joint_names"]), " ".join(s["joint_names"])))
    lines.append("observation:  %d values: %s" % (s["observation"]["size"],
                                                 ", ".join("%s %d" % (n, k) for n, k in s["observation"]["blocks"])))
    a = s["action"]
    lines.append("action:       %s" % {"continuous": "continuous, %d values" % a["size"],
                                       "discrete": "discrete (largest index seen %d)" % a["max_discrete_action"],
                                       "none": "none recorded"}[a["kind"]])
    lines.append("episodes:     %d (%d complete; ends: %d fell, %d time limit, %d open)%s"
                 % (t["episodes"], t["complete"], t["fell"], t["time_limit"], t["open"],
                    "; %d controller runs (segments)" % s["segments"] if s["segments"] > 1 else ""))
    lines.append("steps:        %d (%d states, %d actions)" % (t["steps"], t["states"], t["actions"]))
    returns = [e["return"] for e in s["episodes"] if e["complete"]]
    if returns:
        lines.append("returns:      mean %.3f, min %.3f, max %.3f over complete episodes; sum %.3f"
                     % (float(np.mean(returns)), min(returns), max(returns), t["return_of_complete"]))
    lines.append("EpisodeStats: %d matched, %d unmatched, %d with another return than the bag's states"
                 % (t["stats_matched"], t["stats_unmatched"], t["stats_return_mismatches"]))
    c = s["counts"]
    lines.append("re-sent:      %d states, %d actions (counted once); conflicting: %d states, %d actions; "
                 "malformed actions: %d" % (c["duplicate_states"], c["duplicate_actions"], c["conflicting_states"],
                                            c["conflicting_actions"], c["malformed_actions"]))
    lines.append("")
    segmented = s["segments"] > 1
    header = "%s%8s %6s %12s %-10s %10s %9s %14s" % ("segment " if segmented else "", "episode", "steps", "return",
                                                      "end", "distance_m", "sim_s", "learner_return")
    lines.append(header)
    for e in s["episodes"]:
        stats = "%.6g" % e["stats"]["return"] if e["stats"] else "-"
        steps = "%d" % e["steps"] if e["complete"] else "%d-%d" % (e["first_step"], e["last_step"])
        lines.append("%s%8d %6s %12.4f %-10s %10.3f %9.2f %14s" % (
            "%7d " % e["segment"] if segmented else "", e["episode"], steps, e["return"], e["end"], e["distance_m"],
            e["sim_time_s"], stats))
    return "\n".join(lines)


# -- render ----------------------------------------------------------------------------------------------------
def default_stride(control_rate_hz: float, gif: bool) -> int:
    """Every state for PNG frames; for a GIF every k-th state, k the smallest keeping frames >= 20 ms."""
    return max(1, int(math.ceil(GIF_MIN_FRAME_S * control_rate_hz - 1e-9))) if gif else 1


def gif_durations_ms(times_s: Sequence[float]) -> List[int]:
    """Per-frame durations (ms, multiples of 10) that keep frame ``i`` on screen at ``times_s[i]``: rounding is
    carried over, so a long GIF does not drift. The last frame lasts as long as the mean frame."""
    times = np.asarray(times_s, dtype=float) - float(times_s[0])
    if len(times) > 1:
        times = np.append(times, times[-1] + (times[-1] / (len(times) - 1)))
    else:
        times = np.array([0.0, 0.1])
    ticks = np.round(times / GIF_TIME_UNIT_S).astype(int)
    return [int(max(d, 1) * GIF_TIME_UNIT_S * 1000) for d in np.diff(ticks)]


def _caption(image: np.ndarray, text: str, progress: float) -> Any:
    """The frame as a PIL image with ``text`` on a dark band at the top and a progress bar at the bottom (this also
    keeps consecutive frames distinct: Pillow would merge identical GIF frames)."""
    from PIL import Image, ImageDraw
    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    w, h = img.size
    draw.rectangle((0, 0, w, 13), fill=(20, 20, 20))
    draw.text((3, 1), text, fill=(255, 255, 255))
    draw.rectangle((0, h - 3, int(round(progress * (w - 1))), h - 1), fill=(230, 120, 20))
    return img


@dataclasses.dataclass
class RenderResult:
    frames: int
    stride: int
    seconds: float     # wall time spent drawing
    path: str


def render_episode(rec: Recording, ep: Episode, robot: Any, gif: str = "", frames_dir: str = "", width: int = 320,
                   height: int = 240, fps: Optional[float] = None, stride: Optional[int] = None) -> RenderResult:
    """Draw every ``stride``-th recorded state of ``ep`` (from its first): set the torso pose and joint positions
    in PyBullet (DIRECT, no physics), render with TinyRenderer, caption, and write an animated GIF (``gif``) or
    ``frames_dir/frame_00000.png ...``.  The GIF plays in recorded time unless ``fps`` is given."""
    from op3_walk.backends.pybullet_backend import PyBulletBackend
    if bool(gif) == bool(frames_dir):
        raise ValueError("give exactly one of gif and frames_dir")
    if width < 16 or height < 16:
        raise ValueError("width and height must be >= 16 px, got %d x %d" % (width, height))
    if fps is not None and not fps > 0:
        raise ValueError("fps must be > 0, got %r" % fps)
    stride = default_stride(robot.control_rate_hz, bool(gif)) if stride is None else int(stride)
    if stride < 1:
        raise ValueError("stride must be >= 1, got %d" % stride)
    if any(ep.states[k].joints is None for k in ep.states):
        raise RuntimeError("render_episode needs read_recording(detail=...) for this episode")
    order = [rec.joint_names.index(j) for j in robot.joint_names]
    steps = ep.steps[::stride]
    backend = PyBulletBackend(robot)
    start = time.monotonic()
    images = []
    try:
        if frames_dir:
            os.makedirs(frames_dir, exist_ok=True)
        for i, k in enumerate(steps):
            s = ep.states[k]
            try:
                backend.set_pose(s.joints[order], s.position, s.orientation)
            except ValueError as exc:   # e.g. a NaN or an all-zero quaternion in the recorded pose
                raise BagError("episode %s step %d: cannot pose the robot as recorded: %s"
                               % (ep.label, k, exc)) from None
            caption = "ep %d  step %d/%d  t %.2f s  x %.2f m" % (ep.episode, k, ep.steps[-1], s.sim_time, s.distance)
            img = _caption(backend.render_rgb(width, height), caption, (i + 1) / len(steps))
            if frames_dir:
                img.save(os.path.join(frames_dir, "frame_%05d.png" % i))
            else:
                images.append(img.convert("P", palette=_adaptive()))   # 1 byte a pixel while collecting
    finally:
        backend.close()
    drawn = time.monotonic() - start
    if gif:
        times = [ep.states[k].sim_time for k in steps] if fps is None else [i / fps for i in range(len(steps))]
        folder = os.path.dirname(os.path.abspath(gif))
        os.makedirs(folder, exist_ok=True)
        images[0].save(gif, format="GIF", save_all=True, append_images=images[1:], loop=0,
                       duration=gif_durations_ms(times), disposal=1)
    return RenderResult(frames=len(steps), stride=stride, seconds=drawn, path=gif or frames_dir)


def _adaptive() -> int:
    from PIL import Image
    return Image.Palette.ADAPTIVE if hasattr(Image, "Palette") else Image.ADAPTIVE


# -- plot ------------------------------------------------------------------------------------------------------
def plot_episode(rec: Recording, ep: Episode, out: str) -> str:
    """Joint positions, reward terms (and their sum) and torso height / distance against sim time, one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = ep.steps
    states = [ep.states[k] for k in steps]
    t = np.array([s.sim_time for s in states])
    joints = np.array([s.joints for s in states])
    fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]})
    ax = axes[0]
    colors = plt.get_cmap("tab20").colors   # 20 distinct colours: every joint of both robots its own
    for j, name in enumerate(rec.joint_names):
        ax.plot(t, joints[:, j], label=name, linewidth=1, color=colors[j % len(colors)],
                linestyle="-" if j < len(colors) else "--")
    ax.set_ylabel("joint position [rad]")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="x-small", ncol=1 + len(rec.joint_names) // 12)
    ax = axes[1]
    rewarded = states[1:] if steps[0] == 0 else states   # the reset state has no reward
    tr = np.array([s.sim_time for s in rewarded])
    names: List[str] = []
    for s in rewarded:
        names += [n for n in s.reward_terms if n not in names]
    for name in names:
        ax.plot(tr, [s.reward_terms.get(name, np.nan) for s in rewarded], label=name, linewidth=1)
    ax.plot(tr, [s.reward for s in rewarded], color="black", linestyle="--", linewidth=1.2, label="reward (sum)")
    ax.set_ylabel("reward per step")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="x-small")
    ax = axes[2]
    ax.plot(t, [s.position[2] for s in states], label="torso height [m]")
    ax.plot(t, [s.distance for s in states], label="distance walked [m]")
    ax.set_ylabel("m")
    ax.set_xlabel("sim time since reset [s]")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="x-small")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    end = {"fell": "fell", "time_limit": "time limit", "open": "not ended in the bag"}[ep.end]
    axes[0].set_title("episode %s: steps %d-%d, return %.3f, %s" % (ep.label, steps[0], steps[-1], ep.episode_return,
                                                                   end))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# -- buffer ----------------------------------------------------------------------------------------------------
def check_sizes(rec: Recording, robot: Any, task_name: str) -> Tuple[Any, Any]:
    """The task's (observation_space, action_space) after checking the bag against them: BagError naming both
    layouts when the observation blocks or the action kind/size differ."""
    from gymnasium import spaces
    from op3_walk.envs.walk_env import load_task, make_spaces, observation_layout
    task = load_task(task_name)
    obs_space, act_space = make_spaces(robot, task)
    layout = observation_layout(robot, task)
    bag_layout = list(zip(rec.observation_names, rec.observation_sizes))
    if [(n, int(s)) for n, s in layout] != bag_layout or int(obs_space.shape[0]) != sum(rec.observation_sizes):
        raise BagError("the bag's observations (%d values: %s) are not those of robot %s with task %s (%d: %s): "
                       "pass the --robot/--task it was recorded with"
                       % (sum(rec.observation_sizes), ", ".join("%s %d" % b for b in bag_layout), robot.name,
                          task_name, obs_space.shape[0], ", ".join("%s %d" % b for b in layout)))
    if isinstance(act_space, spaces.Discrete):
        if rec.action_kind == "continuous":
            raise BagError("task %s takes discrete actions; the bag holds continuous ones (%d values): pass the "
                           "--task it was recorded with" % (task_name, rec.action_size))
        if rec.max_discrete_action >= act_space.n:
            raise BagError("the bag holds discrete action %d; task %s has %d actions"
                           % (rec.max_discrete_action, task_name, act_space.n))
    else:
        if rec.action_kind == "discrete":
            raise BagError("task %s takes %d-value continuous actions; the bag holds discrete ones: pass the --task "
                           "it was recorded with" % (task_name, act_space.shape[0]))
        if rec.action_kind == "continuous" and rec.action_size != act_space.shape[0]:
            raise BagError("the bag's actions have %d values; task %s takes %d"
                           % (rec.action_size, task_name, act_space.shape[0]))
    return obs_space, act_space


def write_buffer(rec: Recording, robot: Any, task_name: str, out: str) -> Tuple[Dict[str, np.ndarray], Dict[str, int]]:
    """Check the bag against ``robot``/``task_name``, pair its transitions and save them (see
    ``op3_walk.training.offline``); returns the transitions and the skip counts."""
    from op3_walk.training.offline import save_transitions
    if rec.action_kind == "none":
        raise BagError("the bag has no walker/action messages: transitions need the actions (record walker/action)")
    check_sizes(rec, robot, task_name)
    t, skipped = transitions(rec)
    if len(t["rewards"]) == 0:
        raise BagError("no complete transition (state, action, next state) in the bag; skipped: %s"
                       % ", ".join("%s %d" % kv for kv in skipped.items()))
    meta = {"robot": robot.name, "task": task_name, "discrete": rec.action_kind == "discrete",
            "observation_names": rec.observation_names, "observation_sizes": rec.observation_sizes,
            "joint_names": rec.joint_names, "source": rec.paths, "namespace": rec.namespace,
            "segments": rec.counts["segments"], "skipped": skipped, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    save_transitions(out, t, meta)
    return t, skipped


# -- command line ----------------------------------------------------------------------------------------------
def _episode_detail(args: argparse.Namespace) -> Callable[[int, int], bool]:
    return lambda segment, episode: episode == args.episode and (args.segment is None or segment == args.segment)


def _cmd_info(args: argparse.Namespace) -> int:
    rec = read_recording(args.bags, ns=args.ns)
    s = summary(rec)
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    if args.out and not args.out.lower().endswith(".gif"):
        raise BagError("--out must name a .gif file (or use --frames DIR for PNG frames), got %s" % args.out)
    rec = read_recording(args.bags, ns=args.ns, detail=_episode_detail(args))
    ep = rec.find(args.episode, args.segment)
    robot = _robot_for(rec, args.robot)
    result = render_episode(rec, ep, robot, gif=args.out or "", frames_dir=args.frames or "", width=args.width,
                            height=args.height, fps=args.fps, stride=args.stride)
    print("%s: %d frames (every %d of %d states of episode %s), drawn in %.1f s (%.0f frames/s)"
          % (result.path, result.frames, result.stride, len(ep.states), ep.label, result.seconds,
             result.frames / result.seconds if result.seconds > 0 else float("inf")))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    rec = read_recording(args.bags, ns=args.ns, detail=_episode_detail(args))
    ep = rec.find(args.episode, args.segment)
    print(plot_episode(rec, ep, args.out))
    return 0


def _cmd_buffer(args: argparse.Namespace) -> int:
    rec = read_recording(args.bags, ns=args.ns, observations=True)
    robot = _robot_for(rec, args.robot)
    t, skipped = write_buffer(rec, robot, args.task, args.out)
    e, k = t["episode"], t["step"]
    episodes = 1 + int(np.count_nonzero((e[1:] != e[:-1]) | (k[1:] <= k[:-1])))
    print("%s: %d transitions from %d episode(s) (%d terminated, %d truncated); skipped: %s"
          % (args.out, len(t["rewards"]), episodes, int(t["terminated"].sum()), int(t["truncated"].sum()),
             ", ".join("%s %d" % kv for kv in skipped.items())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replay_bag", description="Read an op3_walk session bag: list its episodes, re-render or plot one, or "
                                       "turn it into transitions for train --prefill.",
        epilog="Exit status: 0 done, 1 the bag or the data does not allow it (message on stderr), 2 usage error.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("bags", nargs="+", metavar="BAG", help="bag file(s); the files of a split recording together")
        p.add_argument("--ns", default=None, help="namespace of the session when the bag holds several "
                                                  "(e.g. actor_0); default: the only one")

    def episode(p: argparse.ArgumentParser) -> None:
        p.add_argument("--episode", type=int, required=True, metavar="N", help="episode number (WalkerState.episode)")
        p.add_argument("--segment", type=int, default=None, metavar="S",
                       help="controller run, when the controller restarted during the recording (see info)")

    p = sub.add_parser("info", help="episodes, steps, returns, joints, duration")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("render", help="kinematic re-render of an episode in PyBullet (GIF or PNG frames)",
                       description="Set each recorded state's torso pose and joint positions in PyBullet (no "
                                   "physics) and draw it with TinyRenderer: one frame per recorded state of the "
                                   "episode, or every --stride-th.")
    common(p)
    episode(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", default="", metavar="FILE.gif", help="animated GIF to write")
    target.add_argument("--frames", default="", metavar="DIR", help="folder for frame_00000.png, ...")
    p.add_argument("--robot", default=None, help="robot config (default: the one with the bag's joint names)")
    p.add_argument("--width", type=int, default=320, help="px (default 320)")
    p.add_argument("--height", type=int, default=240, help="px (default 240)")
    p.add_argument("--fps", type=float, default=None,
                   help="GIF frames per second (default: recorded time; GIF timing has 10 ms steps)")
    p.add_argument("--stride", type=int, default=None, metavar="K",
                   help="draw every K-th state (default: 1 for PNG frames; for a GIF the smallest K giving frames "
                        ">= 20 ms: 2 for PLEN at 60 Hz, 1 for OP3 at 50 Hz)")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("plot", help="joint positions and reward terms of an episode over time (PNG)")
    common(p)
    episode(p)
    p.add_argument("--out", required=True, metavar="FILE.png", help="image to write")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("buffer", help="transitions for train --prefill (.npz)",
                       description="Pair WalkerState (e, k) + WalkerAction (e, k) + WalkerState (e, k+1) into "
                                   "transitions, checked against the robot and task's observation and action sizes.")
    common(p)
    p.add_argument("--out", required=True, metavar="FILE.npz", help="transitions file to write")
    p.add_argument("--robot", default=None, help="robot config (default: the one with the bag's joint names)")
    p.add_argument("--task", default="walk", help="task config the session ran (default walk)")
    p.set_defaults(func=_cmd_buffer)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from op3_walk.config import ConfigError
    from op3_walk.training.offline import TransitionsError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:   # e.g. `replay_bag info BAG | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (BagError, ConfigError, TransitionsError, OSError) as exc:
        print("replay_bag: error: %s" % exc, file=sys.stderr)
        return 1
    except ValueError as exc:   # a bad option value (size, fps, stride)
        print("replay_bag: error: %s" % exc, file=sys.stderr)
        return 2
