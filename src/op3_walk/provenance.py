"""Where a result came from: the repository's git commit (and whether the tree had uncommitted changes).

Recorded in training checkpoints (``git`` in their metadata, at the start of the session) and in exported policy
files (``training_git`` from the checkpoint, ``export_git`` at export).  Torch- and rospy-free.
"""
import os
import subprocess
from typing import Dict, Union

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def git_version(root: str = ROOT) -> Dict[str, Union[str, bool]]:
    """``{"commit": 40 hex digits, "dirty": uncommitted changes to tracked files}``; ``{"commit": "", "dirty":
    False}`` where there is no git or no repository (an installed package)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root] + list(args), capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "", "dirty": False}
    return {"commit": commit, "dirty": dirty}
