"""Deployment: a trained policy as a small numpy file, run without torch.

``op3_walk.policy.runtime`` (numpy and the standard library only) loads and runs an exported ``.npz``; it is what a
robot's small computer imports.  ``op3_walk.policy.export`` (torch) turns a training checkpoint into that file and is
never imported from here, so ``import op3_walk.policy`` stays torch-free.
"""
from op3_walk.policy.runtime import (FORMAT, VERSION, NumpyPolicy, PolicyFileError, PolicyInterface,
                                     PolicyMismatchError, expected_interface, load_policy)

__all__ = ["FORMAT", "VERSION", "NumpyPolicy", "PolicyFileError", "PolicyInterface", "PolicyMismatchError",
           "expected_interface", "load_policy"]
