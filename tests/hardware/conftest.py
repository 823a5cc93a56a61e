"""Shared fixtures for the hardware tests: the real Adafruit drivers against op3_walk.hardware.simbus."""
import pytest

from op3_walk.hardware.plen_config import load_hardware_config
from op3_walk.robots import load_robot


@pytest.fixture(scope="session")
def robot():
    return load_robot("plen")


@pytest.fixture(scope="session")
def hw_config():
    return load_hardware_config()
