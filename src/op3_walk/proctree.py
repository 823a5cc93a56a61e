"""Linux process-tree helpers from /proc (no ROS, no third-party packages): the descendants of a process and
whether a pid is alive.  Used by the integration tests' harness and the soak tool to find every process a
roslaunch started and to check that none is left behind."""
import os
from typing import Dict, List, Set


def children_of(pid: int) -> Set[int]:
    """All descendants of ``pid`` (by parent pid, from /proc)."""
    parents: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found: Set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
