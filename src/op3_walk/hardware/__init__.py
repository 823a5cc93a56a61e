"""Real-hardware layer of the PLEN biped (Raspberry Pi + PCA9685 + 4 x ADS1115 + BNO055 on one I2C bus).

- ``plen_config``: typed configuration of the chips and of every joint's servo channel and feedback channel
  (``config/hardware/plen.yaml``).
- ``plen_io``: ``PlenIO``, the chip layer: the real, unmodified Adafruit CircuitPython drivers on one dedicated I/O
  thread, radians in and out, every failure a ``HardwareError`` naming the chip.
- ``simbus``: a register-level simulator of the bus and the three chip types plus ``SimulatedPlen``, a plant that
  couples them, so the drivers and ``PlenIO`` run without the robot (tests, ``make bench-hardware``, desk runs).

Nothing here imports rospy or torch.
"""
