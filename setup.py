"""Python package setup for catkin (``catkin_python_setup()``).

Not meant for ``pip install``: catkin calls this to put ``src/op3_walk`` on the workspace's PYTHONPATH.
"""
from catkin_pkg.python_setup import generate_distutils_setup
from setuptools import setup

setup(**generate_distutils_setup(packages=[
    "op3_walk",
    "op3_walk.agents",
    "op3_walk.backends",
    "op3_walk.envs",
    "op3_walk.robots",
    "op3_walk.ros",
    "op3_walk.training",
], package_dir={"": "src"}))
