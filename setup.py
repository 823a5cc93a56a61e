"""Python package setup for catkin (``catkin_python_setup()``).

Not meant for ``pip install``: catkin calls this to put ``src/op3_walk`` on the workspace's PYTHONPATH (devel
space) and to install it into ``<prefix>/lib/python3/dist-packages`` (install space).  The sub-packages are found,
not listed, so a new one cannot be left out of the install space.
"""
from catkin_pkg.python_setup import generate_distutils_setup
from setuptools import find_packages, setup

setup(**generate_distutils_setup(packages=find_packages("src"), package_dir={"": "src"}))
