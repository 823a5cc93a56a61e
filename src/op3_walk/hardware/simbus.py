"""Register-level simulation of the PLEN's I2C bus, so the real Adafruit drivers run without the robot.

- ``SimulatedI2CBus``: a ``busio.I2C`` stand-in (``try_lock``/``unlock``/``writeto``/``readfrom_into``/
  ``writeto_then_readfrom``/``scan``/``deinit``, context manager).  A missing or failed device raises
  ``OSError(EREMOTEIO)`` as Linux i2c-dev does on a NACK.  Every transaction costs bus time,
  (address bytes + data bytes) x 9 bits / ``frequency_hz`` (+ ``transaction_overhead_s``), really spent (by sleeping
  once more than 1 ms is owed: short transactions accumulate, nothing spins) so that loop timing measured against
  it is realistic; ``byte_time_s=0``
  (and no overhead) makes it free for fast unit tests.  It counts transactions, by address and by issuing thread.
- Chip models, each with ``address``, a write handler (register pointer + data), a read handler, the chip's exact
  byte order, and failure injection (``fail("nack")``: every transaction NACKs; ``fail("stretch")``: every
  transaction blocks until ``recover()`` or the bus' ``stretch_timeout_s`` (then ``ETIMEDOUT``); ADS1115 only:
  ``fail("hang")``: conversions never complete, so the driver's busy-wait would spin forever) and ``recover()``:
  ``PCA9685Sim``, ``ADS1115Sim``, ``BNO055Sim``.
- ``SimulatedPlen``: the bus with the PCA9685, four ADS1115 and the BNO055 of a ``PlenHardwareConfig``, coupled: each
  servo follows the pulse its channel outputs, each potentiometer voltage follows its joint.

Time: every device reads the bus clock (``clock``, default ``time.monotonic``).  It must advance with real time when
the real drivers run against the bus, because they wait in real time (the ADS1115 driver busy-waits on the
conversion, the BNO055 driver sleeps 0.7 s after its reset).

All device state is guarded by ``bus.state_lock`` (an ``RLock``): transactions hold it while a chip handles them, and
the setters used by tests and by the plant take it too, so a test thread may change inputs while an I/O thread
talks to the chips.
"""
import errno
import math
import struct
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from op3_walk.hardware.plen_config import PlenHardwareConfig, quat_conjugate, quat_matrix, quat_multiply

STANDARD_GRAVITY = 9.81  # m/s^2, as op3_walk.backends.base


def _nack(address: int, why: str) -> OSError:
    return OSError(errno.EREMOTEIO, "Remote I/O error: no ACK from I2C address 0x%02x (%s)" % (address, why))


def _buffer_slice(buf, start: int, end: Optional[int]):
    view = memoryview(buf)
    return view[start:len(view) if end is None else end]


# ================================================================================================= the bus
class SimulatedI2CBus:
    """A ``busio.I2C``-compatible bus holding simulated devices.

    Args:
        frequency_hz: I2C clock; sets the default ``byte_time_s = 9 / frequency_hz`` (8 bits + ACK).
        byte_time_s: time per byte on the wire, s; 0 makes transactions free (fast unit tests).
        transaction_overhead_s: extra time per transaction (driver/software overhead of the robot's computer), s.
        clock: the devices' time source, s (must follow real time when real drivers are used).
        stretch_timeout_s: how long a ``fail("stretch")`` device holds a transaction before ``ETIMEDOUT``.
    """

    def __init__(self, frequency_hz: float = 400000.0, byte_time_s: Optional[float] = None,
                 transaction_overhead_s: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 stretch_timeout_s: float = 2.0):
        if frequency_hz <= 0.0:
            raise ValueError("frequency_hz must be positive")
        self.frequency_hz = float(frequency_hz)
        self.byte_time_s = 9.0 / self.frequency_hz if byte_time_s is None else float(byte_time_s)
        self.transaction_overhead_s = float(transaction_overhead_s)
        if self.byte_time_s < 0.0 or self.transaction_overhead_s < 0.0:
            raise ValueError("byte_time_s and transaction_overhead_s must be >= 0")
        self.clock = clock
        self.stretch_timeout_s = float(stretch_timeout_s)
        self.state_lock = threading.RLock()
        self._devices = {}          # type: Dict[int, SimDevice]
        self._hooks = []            # type: List[Callable[[float], None]]
        self._flag_lock = threading.Lock()
        self._locked = False
        self._lock_owner = None     # type: Optional[int]
        self._deinit = False
        # statistics (read them under state_lock if another thread is talking)
        self.transaction_count = 0
        self.transactions_by_address = {}   # type: Dict[int, int]
        self.transactions_by_thread = {}    # type: Dict[int, int]
        self.thread_names = {}              # type: Dict[int, str]
        self.unlocked_transactions = 0      # transactions issued without holding try_lock (drivers always lock)
        self.bus_time_s = 0.0               # total bus time charged
        self._busy_until = 0.0              # perf_counter time until which the bus is busy (bus time owed)

    # ------------------------------------------------------------------ devices
    def attach(self, device: "SimDevice") -> "SimDevice":
        """Connect ``device`` (at ``device.address``); returns it."""
        with self.state_lock:
            if device.address in self._devices:
                raise ValueError("address 0x%02x already taken by %s" % (device.address,
                                                                         self._devices[device.address].name))
            device.bus = self
            self._devices[device.address] = device
        return device

    def detach(self, address: int) -> None:
        with self.state_lock:
            dev = self._devices.pop(address)
            dev.bus = None

    def device(self, address: int) -> "SimDevice":
        """The device at ``address`` (KeyError if none)."""
        return self._devices[address]

    @property
    def devices(self) -> Dict[int, "SimDevice"]:
        return dict(self._devices)

    def add_hook(self, hook: Callable[[float], None]) -> None:
        """Call ``hook(now)`` (under ``state_lock``) before every transaction reaches a device (plant coupling)."""
        self._hooks.append(hook)

    def now(self) -> float:
        return self.clock()

    def reset_stats(self) -> None:
        with self.state_lock:
            self.transaction_count = 0
            self.transactions_by_address = {}
            self.transactions_by_thread = {}
            self.thread_names = {}
            self.unlocked_transactions = 0
            self.bus_time_s = 0.0

    # ------------------------------------------------------------------ busio.I2C API
    def try_lock(self) -> bool:
        with self._flag_lock:
            if self._locked:
                return False
            self._locked = True
            self._lock_owner = threading.get_ident()
            return True

    def unlock(self) -> None:
        with self._flag_lock:
            self._locked = False
            self._lock_owner = None

    def deinit(self) -> None:
        self._deinit = True

    def __enter__(self) -> "SimulatedI2CBus":
        return self

    def __exit__(self, *exc) -> bool:
        self.deinit()
        return False

    def scan(self) -> List[int]:
        """Addresses that ACK (as ``busio.I2C.scan``: probes 0x08..0x77)."""
        found = []
        for address in range(0x08, 0x78):
            try:
                self._transact(address, 1, lambda dev: None, probe=True)
                found.append(address)
            except OSError:
                pass
        return found

    def writeto(self, address: int, buffer, *, start: int = 0, end: Optional[int] = None) -> None:
        data = bytes(_buffer_slice(buffer, start, end))
        self._transact(address, 1 + len(data), lambda dev: dev.i2c_write(data))

    def readfrom_into(self, address: int, buffer, *, start: int = 0, end: Optional[int] = None) -> None:
        view = _buffer_slice(buffer, start, end)
        n = len(view)

        def op(dev):
            view[:] = dev.i2c_read(n)
        self._transact(address, 1 + n, op)

    def writeto_then_readfrom(self, address: int, buffer_out, buffer_in, *, out_start: int = 0,
                              out_end: Optional[int] = None, in_start: int = 0, in_end: Optional[int] = None) -> None:
        data = bytes(_buffer_slice(buffer_out, out_start, out_end))
        view = _buffer_slice(buffer_in, in_start, in_end)
        n = len(view)

        def op(dev):
            dev.i2c_write(data, stop=False)
            view[:] = dev.i2c_read(n)
        # repeated start: two address bytes
        self._transact(address, 2 + len(data) + n, op)

    # ------------------------------------------------------------------ internals
    def _transact(self, address: int, n_bytes: int, op: Callable[["SimDevice"], None], probe: bool = False) -> None:
        if self._deinit:
            raise OSError(errno.EBADF, "I2C bus deinitialised")
        ident = threading.get_ident()
        with self.state_lock:
            if not probe:
                self.transaction_count += 1
                self.transactions_by_address[address] = self.transactions_by_address.get(address, 0) + 1
                self.transactions_by_thread[ident] = self.transactions_by_thread.get(ident, 0) + 1
                if ident not in self.thread_names:
                    self.thread_names[ident] = threading.current_thread().name
                if self._lock_owner != ident:
                    self.unlocked_transactions += 1
            dev = self._devices.get(address)
            failure = None if dev is None else dev.failure
            answers = dev is not None and failure != "nack" and dev.acks()
        if not answers:
            self._spend(1)   # the address byte goes out, nobody ACKs it
            raise _nack(address, "no device" if dev is None else "%s %s" % (
                dev.name, "NACK injected" if failure == "nack" else "busy"))
        if failure == "stretch":
            self._stretch(dev)
        self._spend(n_bytes)
        with self.state_lock:
            if dev.failure == "nack" or self._devices.get(address) is not dev:
                raise _nack(address, "%s NACK injected" % dev.name)
            now = self.clock()
            for hook in self._hooks:
                hook(now)
            if not probe:
                op(dev)

    def _stretch(self, dev: "SimDevice") -> None:
        deadline = time.monotonic() + self.stretch_timeout_s
        while dev.failure == "stretch":
            if time.monotonic() >= deadline:
                raise OSError(errno.ETIMEDOUT, "I2C transaction timed out: %s at 0x%02x holds SCL low"
                              % (dev.name, dev.address))
            time.sleep(0.001)

    def _spend(self, n_bytes: int) -> None:
        t = n_bytes * self.byte_time_s + self.transaction_overhead_s
        if t <= 0.0:
            return
        now = time.perf_counter()
        with self.state_lock:
            self.bus_time_s += t
            # The bus is busy until _busy_until; the caller waits by sleeping once more than SLEEP_QUANTUM_S is owed,
            # so shorter transactions accumulate (timing lumpy by < 1 ms, the total exact) and no CPU is burnt
            # spinning: a real I2C transfer blocks in the kernel, it does not hold the interpreter.
            self._busy_until = max(self._busy_until, now) + t
            owed = self._busy_until - now
        if owed > SLEEP_QUANTUM_S:
            time.sleep(owed)


SLEEP_QUANTUM_S = 0.001   # bus time owed before a transaction actually sleeps (see SimulatedI2CBus._spend)


# ================================================================================================= devices
class SimDevice:
    """Base of the chip models: register pointer, failure injection, bus-facing read/write."""

    name = "I2C device"
    failure_modes = ("nack", "stretch")

    def __init__(self, address: int):
        self.address = int(address)
        self.bus = None             # type: Optional[SimulatedI2CBus]
        self.failure = None         # type: Optional[str]
        self.pointer = 0
        self._own_lock = threading.RLock()

    @property
    def lock(self):
        return self.bus.state_lock if self.bus is not None else self._own_lock

    def now(self) -> float:
        return self.bus.now() if self.bus is not None else time.monotonic()

    def fail(self, mode: str) -> None:
        """Inject a failure: one of ``failure_modes``."""
        if mode not in self.failure_modes:
            raise ValueError("%s: failure mode %r not one of %s" % (self.name, mode, ", ".join(self.failure_modes)))
        with self.lock:
            self.failure = mode

    def recover(self) -> None:
        with self.lock:
            self.failure = None

    def acks(self) -> bool:
        """False while the chip cannot answer (e.g. rebooting)."""
        return True

    # bus-facing -------------------------------------------------------------
    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        if not data:            # address-only probe
            return
        self.pointer = data[0]
        if len(data) > 1:
            self.write_registers(data[0], bytes(data[1:]))

    def i2c_read(self, n: int) -> bytes:
        return self.read_registers(n)

    # chip-specific ------------------------------------------------------------
    def write_registers(self, pointer: int, data: bytes) -> None:
        raise NotImplementedError

    def read_registers(self, n: int) -> bytes:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------- PCA9685
class PCA9685Sim(SimDevice):
    """NXP PCA9685 16-channel, 12-bit PWM controller.

    Registers: MODE1 (0x00; RESTART bit 7, AI bit 5, SLEEP bit 4; power-on 0x11), MODE2 (0x01), LEDn_ON_L/H and
    LEDn_OFF_L/H at 0x06 + 4n (little-endian 12-bit counts, bit 4 of the high byte = full on / full off; power-on:
    full off), ALL_LED_* (0xFA..0xFD, write-only: writes every channel), PRE_SCALE (0xFE, power-on 0x1E, writable only
    while SLEEP is set, values below 3 read as 3).  With AI clear, successive bytes of a transfer all go to the
    same register.  Outputs run when awake and 500 us after wake-up (oscillator start).
    """

    name = "PCA9685"
    MODE1, MODE2, LED0, ALL_LED, PRE_SCALE = 0x00, 0x01, 0x06, 0xFA, 0xFE
    RESTART, AI, SLEEP = 0x80, 0x20, 0x10

    def __init__(self, address: int = 0x40, oscillator_hz: float = 25e6):
        super().__init__(address)
        self.oscillator_hz = float(oscillator_hz)
        self.power_on()

    def power_on(self) -> None:
        """Reset the register file to its power-on state."""
        with self.lock:
            self.regs = bytearray(256)
            self.regs[self.MODE1] = 0x11
            self.regs[self.MODE2] = 0x04
            self.regs[0x02:0x06] = bytes([0xE2, 0xE4, 0xE8, 0xE0])
            for ch in range(16):
                self.regs[self.LED0 + 4 * ch + 3] = 0x10   # LEDn_OFF_H: full off
            self.regs[self.PRE_SCALE] = 0x1E
            self._restart_pending = False
            self._osc_ready_at = -math.inf
            self.pointer = 0

    # ---------------------------------------------------------------- handlers
    def _next(self, reg: int) -> int:
        if not self.regs[self.MODE1] & self.AI:
            return reg
        return 0x00 if reg in (0x45, 0xFF) else reg + 1

    def write_registers(self, pointer: int, data: bytes) -> None:
        reg = pointer
        for b in data:
            self._write(reg, b)
            reg = self._next(reg)
        self.pointer = reg

    def _write(self, reg: int, b: int) -> None:
        if reg == self.MODE1:
            old = self.regs[self.MODE1]
            if b & self.RESTART:
                self._restart_pending = False
            if b & self.SLEEP and not old & self.SLEEP and any(self._active(ch) for ch in range(16)):
                self._restart_pending = True
            if old & self.SLEEP and not b & self.SLEEP:
                self._osc_ready_at = self.now() + 500e-6
            self.regs[self.MODE1] = b & 0x7F
        elif reg == self.PRE_SCALE:
            if self.regs[self.MODE1] & self.SLEEP:
                self.regs[self.PRE_SCALE] = max(3, b)
        elif self.ALL_LED <= reg <= self.ALL_LED + 3:
            k = reg - self.ALL_LED
            for ch in range(16):
                self.regs[self.LED0 + 4 * ch + k] = b
        elif reg == 0xFF or 0x46 <= reg < self.ALL_LED:
            pass            # test mode / reserved
        else:
            self.regs[reg] = b

    def read_registers(self, n: int) -> bytes:
        out = bytearray()
        reg = self.pointer
        for _ in range(n):
            if reg == self.MODE1:
                out.append(self.regs[reg] | (self.RESTART if self._restart_pending else 0))
            elif self.ALL_LED <= reg <= self.ALL_LED + 3 or 0x46 <= reg < self.ALL_LED:
                out.append(0)
            else:
                out.append(self.regs[reg])
            reg = self._next(reg)
        self.pointer = reg
        return bytes(out)

    # ---------------------------------------------------------------- outputs
    def _counts(self, ch: int):
        base = self.LED0 + 4 * ch
        on = self.regs[base] | self.regs[base + 1] << 8
        off = self.regs[base + 2] | self.regs[base + 3] << 8
        return on, off

    def _active(self, ch: int) -> bool:
        on, off = self._counts(ch)
        return not off & 0x1000 and (on & 0x1000 or (on & 0xFFF) != (off & 0xFFF))

    @property
    def prescale(self) -> int:
        return self.regs[self.PRE_SCALE]

    @property
    def frequency_hz(self) -> float:
        """PWM frame rate the chip produces, Hz."""
        return self.oscillator_hz / (4096.0 * (self.prescale + 1))

    @property
    def period_us(self) -> float:
        return 1e6 / self.frequency_hz

    @property
    def count_us(self) -> float:
        """Length of one of the 4096 counts of a frame, us."""
        return self.period_us / 4096.0

    def running(self) -> bool:
        """Oscillator on: awake and settled."""
        return not self.regs[self.MODE1] & self.SLEEP and self.now() >= self._osc_ready_at

    def pulse_width_us(self, channel: int) -> Optional[float]:
        """High time per frame on ``channel``, us; None when the output produces no pulses (asleep, full off,
        ON == OFF).  Full on gives the whole period."""
        if not 0 <= channel < 16:
            raise ValueError("channel %d outside 0..15" % channel)
        with self.lock:
            if not self.running():
                return None
            on, off = self._counts(channel)
            if off & 0x1000:
                return None
            if on & 0x1000:
                return self.period_us
            width = ((off & 0xFFF) - (on & 0xFFF)) % 4096
            return width * self.count_us if width else None

    def pulse_widths_us(self) -> List[Optional[float]]:
        return [self.pulse_width_us(ch) for ch in range(16)]

    def poke(self, reg: int, value: int) -> None:
        """Set a register behind the driver's back (test set-up; no side effects)."""
        with self.lock:
            self.regs[reg] = value & 0xFF

    def set_channel_counts(self, channel: int, on: int, off: int) -> None:
        """Test set-up: raw ON/OFF counts (13 bits each, bit 12 = full on/off) of ``channel``."""
        with self.lock:
            struct.pack_into("<HH", self.regs, self.LED0 + 4 * channel, on & 0x1FFF, off & 0x1FFF)


# ------------------------------------------------------------------------------------------------- ADS1115
class ADS1115Sim(SimDevice):
    """TI ADS1115 16-bit delta-sigma ADC with PGA and 4-input MUX.

    Pointer register (2 bits) selects conversion (0, read-only), config (1), lo_thresh (2), hi_thresh (3); 16-bit
    registers are big-endian.  Config (power-on 0x8583): OS bit 15 (write 1 in single-shot power-down: start a
    conversion; reads 0 while converting, 1 when idle), MUX bits 14:12 (0..3 differential AIN0-AIN1, AIN0-AIN3,
    AIN1-AIN3, AIN2-AIN3; 4..7 AINx against GND), PGA bits 11:9 (+-6.144, 4.096, 2.048, 1.024, 0.512, 0.256 V),
    MODE bit 8 (1 single-shot, 0 continuous), DR bits 7:5 (8..860 SPS).  A single-shot conversion completes
    ``1/rate`` s after it starts (``rate_error`` stretches it like the +-10 % internal oscillator); its result is
    the input at completion, clipped to 0..VDD per pin and to the PGA range.  The conversion register is a signed
    16-bit code, V = code * FS / 32768.  ``fail("hang")``: conversions never complete.
    """

    name = "ADS1115"
    failure_modes = ("nack", "stretch", "hang")
    CONVERSION, CONFIG, LO_THRESH, HI_THRESH = 0, 1, 2, 3
    FULL_SCALE = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)
    RATES = (8, 16, 32, 64, 128, 250, 475, 860)

    def __init__(self, address: int = 0x48, supply_v: float = 3.3, rate_error: float = 0.0):
        super().__init__(address)
        self.supply_v = float(supply_v)
        self.rate_error = float(rate_error)
        self.voltages = [0.0, 0.0, 0.0, 0.0]
        self.regs = [0x0000, 0x8583, 0x8000, 0x7FFF]
        self.conversions = 0            # completed conversions (statistics)
        self._busy_until = None         # type: Optional[float]   single-shot in progress
        self._conv_mux_pga = (4, 2)
        self._continuous_since = None   # type: Optional[float]

    # ---------------------------------------------------------------- inputs
    def set_voltage(self, channel: int, volts: float) -> None:
        """Voltage on input AIN``channel`` against GND, V (clipped to 0..VDD at conversion)."""
        if not 0 <= channel <= 3:
            raise ValueError("ADS1115 channel %d outside 0..3" % channel)
        with self.lock:
            self.voltages[channel] = float(volts)

    def _pin(self, ch: int) -> float:
        return min(max(self.voltages[ch], 0.0), self.supply_v)

    def _code(self, mux: int, pga: int) -> int:
        if mux >= 4:
            v = self._pin(mux - 4)
        else:
            p, n = ((0, 1), (0, 3), (1, 3), (2, 3))[mux]
            v = self._pin(p) - self._pin(n)
        fs = self.FULL_SCALE[pga]
        return int(min(max(round(v / fs * 32768.0), -32768), 32767))

    def conversion_time_s(self, config: Optional[int] = None) -> float:
        dr = ((self.regs[self.CONFIG] if config is None else config) >> 5) & 0x7
        return (1.0 + self.rate_error) / self.RATES[dr]

    # ---------------------------------------------------------------- state
    def _update(self) -> None:
        now = self.now()
        if self.failure == "hang":
            return
        if self._busy_until is not None and now >= self._busy_until:
            self.regs[self.CONVERSION] = self._code(*self._conv_mux_pga) & 0xFFFF
            self._busy_until = None
            self.conversions += 1
        cfg = self.regs[self.CONFIG]
        if self._continuous_since is not None and now >= self._continuous_since + self.conversion_time_s():
            self.regs[self.CONVERSION] = self._code((cfg >> 12) & 0x7, (cfg >> 9) & 0x7) & 0xFFFF
            self.conversions += 1

    def converting(self) -> bool:
        with self.lock:
            self._update()
            return self._busy_until is not None

    def write_registers(self, pointer: int, data: bytes) -> None:
        reg = pointer & 0x3
        self.pointer = reg
        if len(data) < 2:
            return              # a register needs both bytes; the chip ignores a partial write
        value = data[0] << 8 | data[1]
        self._update()
        if reg == self.CONVERSION:
            return              # read-only
        if reg != self.CONFIG:
            self.regs[reg] = value
            return
        self.regs[self.CONFIG] = value & 0x7FFF
        if value & 0x0100:      # single-shot / power-down
            self._continuous_since = None
            if value & 0x8000 and self._busy_until is None:
                self._conv_mux_pga = ((value >> 12) & 0x7, (value >> 9) & 0x7)
                self._busy_until = self.now() + self.conversion_time_s(value)
        else:                   # continuous conversion
            self._busy_until = None
            self._continuous_since = self.now()

    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        if not data:
            return
        self.write_registers(data[0], bytes(data[1:]))

    def read_registers(self, n: int) -> bytes:
        self._update()
        value = self.regs[self.pointer]
        if self.pointer == self.CONFIG:
            value = (value & 0x7FFF) | (0 if self._busy_until is not None else 0x8000)
        two = bytes([value >> 8 & 0xFF, value & 0xFF])
        return (two * (n // 2 + 1))[:n]


# ------------------------------------------------------------------------------------------------- BNO055
class BNO055Sim(SimDevice):
    """Bosch BNO055 9-axis IMU with sensor fusion (the registers the Adafruit driver uses, page 0 and page 1).

    Page 0: CHIP_ID 0xA0 at 0x00, PAGE_ID 0x07, data 0x08..0x33 (int16 little-endian: ACC m/s^2 x100 or mg, MAG
    uT x16, GYR dps x16 or rad/s x900, EUL heading/roll/pitch deg x16 or rad x900, QUA w,x,y,z x2^14, LIA and GRV like
    ACC), TEMP 0x34 (int8 deg C), CALIB_STAT 0x35, ST_RESULT 0x36, SYS_STATUS 0x39, SYS_ERR 0x3A, UNIT_SEL 0x3B,
    OPR_MODE 0x3D, PWR_MODE 0x3E, SYS_TRIGGER 0x3F (bit 5: reset -> power-on registers, no ACK for ``reset_time_s``),
    AXIS_MAP 0x41/0x42, calibration profile 0x55..0x6A (below).  Page 1: ACC_Config 0x08, MAG_Config 0x09,
    GYR_Config_0/1 0x0A/0x0B.
    Configuration registers only take writes in CONFIG mode, as on the chip.  CONFIG mode outputs zeros; non-fusion
    modes output zeros in the fusion registers (QUA, EUL, LIA, GRV).

    Calibration profile (0x55..0x6A: ACC_OFFSET x, y, z, MAG_OFFSET x, y, z, GYR_OFFSET x, y, z, ACC_RADIUS,
    MAG_RADIUS; 11 int16, little-endian, LSB first): zero after power-on and after a reset; written only in CONFIG
    mode (other writes are ignored, so a write the mode switch did not precede shows up as a read-back mismatch);
    read back as stored in any mode (the data sheet says to read it in CONFIG mode; outside it the chip's behaviour
    is not specified).  ``profile()`` returns the 11 values.  The chip's own calibration routine overwrites a sensor's
    part of the profile when it has calibrated that sensor; modelled as: when ``set_calibration`` raises the gyro,
    accel or mag level to 3 while a fusion mode using that sensor runs, that sensor's offsets (and radius) become
    its part of ``learned_profile`` (what this simulated chip "finds"; IMUPLUS never touches the magnetometer part).

    ``calibration`` (the CALIB_STAT levels) is a test input: it survives a reset and does NOT change when a profile
    is written.  Bosch's data sheet (reuse of the calibration profile) only says the orientation is right
    right after a restored profile; it does not say CALIB_STAT reports 3, and users report the levels (sys and mag
    above all) staying low until the chip has seen some motion.  So nothing here lets a restored profile pass for a
    calibrated status; tests set the levels they want.

    The state is in the SENSOR frame: ``set_state(quaternion_wxyz, gyro_rad_s, accel_m_s2)``, with the quaternion
    rotating sensor-frame vectors into the world frame and the acceleration the specific force incl. gravity.
    """

    name = "BNO055"
    CHIP_ID = 0xA0
    PAGE_ID, UNIT_SEL, OPR_MODE, PWR_MODE, SYS_TRIGGER = 0x07, 0x3B, 0x3D, 0x3E, 0x3F
    CALIB_STAT, SYS_STATUS, SYS_ERR, TEMP = 0x35, 0x39, 0x3A, 0x34
    CONFIG_MODE = 0x00
    FUSION_MODES = (0x08, 0x09, 0x0A, 0x0B, 0x0C)
    ACC_MODES = (0x01, 0x04, 0x05, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C)
    GYR_MODES = (0x03, 0x05, 0x06, 0x07, 0x08, 0x0B, 0x0C)
    MAG_MODES = (0x02, 0x04, 0x06, 0x07, 0x09, 0x0A, 0x0B, 0x0C)
    _CONFIG_ONLY_P0 = tuple([0x3B, 0x40, 0x41, 0x42] + list(range(0x55, 0x6B)))
    PROFILE, PROFILE_BYTES = 0x55, 22
    #: register value index ranges of each sensor's part of the profile (11 int16 values, register order)
    _PROFILE_PARTS = {"accel": (0, 1, 2, 9), "mag": (3, 4, 5, 10), "gyro": (6, 7, 8)}
    #: plausible values a real chip's calibration reaches (accel 0.01 m/s^2, mag 1/16 uT, gyro 1/16 dps, radii LSB)
    DEFAULT_LEARNED_PROFILE = (-21, 13, -30, -183, 96, 411, -2, 1, 0, 1000, 711)

    def __init__(self, address: int = 0x28, reset_time_s: float = 0.65,
                 learned_profile: Sequence[int] = DEFAULT_LEARNED_PROFILE):
        super().__init__(address)
        self.reset_time_s = float(reset_time_s)
        self.learned_profile = self._check_profile(learned_profile)
        self._ready_at = -math.inf
        self.quaternion_wxyz = np.array([1.0, 0.0, 0.0, 0.0])
        self.gyro = np.zeros(3)
        self.accel = np.array([0.0, 0.0, STANDARD_GRAVITY])
        self.magnetic = np.array([20.0, 0.0, -40.0])
        self.temperature_c = 25.0
        self.calibration = (3, 3, 3, 3)
        self.resets = 0
        self._power_on()

    def _power_on(self) -> None:
        self.page = 0
        self.p0 = bytearray(128)
        self.p1 = bytearray(128)
        self.p0[0x00:0x07] = bytes([0xA0, 0xFB, 0x32, 0x0F, 0x11, 0x03, 0x15])
        self.p0[0x36] = 0x0F            # self test passed
        self.p0[self.UNIT_SEL] = 0x80   # Android orientation, m/s^2, dps, deg, deg C
        self.p0[0x41] = 0x24            # axis map: identity
        self.p1[0x08] = 0x0D            # ACC_Config: 4 g, 62.5 Hz, normal
        self.p1[0x09] = 0x6D            # MAG_Config
        self.p1[0x0A] = 0x38            # GYR_Config_0: 2000 dps, 32 Hz
        self.pointer = 0

    # ---------------------------------------------------------------- state (sensor frame)
    def set_state(self, quaternion_wxyz: Sequence[float] = (1.0, 0.0, 0.0, 0.0),
                  gyro_rad_s: Sequence[float] = (0.0, 0.0, 0.0),
                  accel_m_s2: Optional[Sequence[float]] = None) -> None:
        """Orientation (sensor -> world, w, x, y, z), angular velocity (rad/s, sensor frame) and specific force
        (m/s^2, sensor frame, incl. gravity; None: at rest, gravity only)."""
        q = np.asarray(quaternion_wxyz, dtype=np.float64)
        q = q / np.linalg.norm(q)
        with self.lock:
            self.quaternion_wxyz = q
            self.gyro = np.asarray(gyro_rad_s, dtype=np.float64).copy()
            self.accel = self.gravity_sensor() if accel_m_s2 is None else np.asarray(accel_m_s2, np.float64).copy()

    def set_calibration(self, sys: int, gyro: int, accel: int, mag: int) -> None:
        """Calibration levels 0..3 reported in CALIB_STAT.  A sensor reaching 3 in a fusion mode that uses it gets
        its part of ``learned_profile`` in the profile registers (the chip's routine found its offsets)."""
        for v in (sys, gyro, accel, mag):
            if not 0 <= v <= 3:
                raise ValueError("calibration levels are 0..3")
        with self.lock:
            mode = self.mode
            old = dict(zip(("sys", "gyro", "accel", "mag"), self.calibration))
            new = {"gyro": gyro, "accel": accel, "mag": mag}
            uses = {"gyro": self.GYR_MODES, "accel": self.ACC_MODES, "mag": self.MAG_MODES}
            if mode in self.FUSION_MODES:
                values = list(self.profile())
                for sensor, level in new.items():
                    if level == 3 and old[sensor] < 3 and mode in uses[sensor]:
                        for k in self._PROFILE_PARTS[sensor]:
                            values[k] = self.learned_profile[k]
                self.p0[self.PROFILE:self.PROFILE + self.PROFILE_BYTES] = struct.pack("<11h", *values)
            self.calibration = (sys, gyro, accel, mag)

    def profile(self) -> Tuple[int, ...]:
        """The calibration profile registers 0x55..0x6A as 11 int16 (accel xyz, mag xyz, gyro xyz, radii)."""
        with self.lock:
            return struct.unpack("<11h", bytes(self.p0[self.PROFILE:self.PROFILE + self.PROFILE_BYTES]))

    @staticmethod
    def _check_profile(values: Sequence[int]) -> Tuple[int, ...]:
        out = tuple(int(v) for v in values)
        if len(out) != 11 or not all(-32768 <= v <= 32767 for v in out):
            raise ValueError("a BNO055 calibration profile is 11 int16 values, got %r" % (values,))
        return out

    def set_temperature(self, celsius: float) -> None:
        with self.lock:
            self.temperature_c = float(celsius)

    def gravity_sensor(self) -> np.ndarray:
        """Gravity's specific-force reaction (+g up in the world) seen in the sensor frame, m/s^2."""
        w, x, y, z = self.quaternion_wxyz
        return quat_matrix((x, y, z, w)).T @ np.array([0.0, 0.0, STANDARD_GRAVITY])

    @property
    def mode(self) -> int:
        return self.p0[self.OPR_MODE] & 0x0F

    # ---------------------------------------------------------------- bus
    def acks(self) -> bool:
        return self.now() >= self._ready_at

    def _page(self) -> bytearray:
        return self.p1 if self.page == 1 else self.p0

    def write_registers(self, pointer: int, data: bytes) -> None:
        reg = pointer
        for b in data:
            self._write(reg, b)
            reg = (reg + 1) & 0x7F
        self.pointer = reg

    def _write(self, reg: int, b: int) -> None:
        config = self.mode == self.CONFIG_MODE
        if reg == self.PAGE_ID:
            self.page = b & 0x01
            return
        if self.page == 1:
            if config and 0x08 <= reg <= 0x1F:
                self.p1[reg] = b
            return
        if reg == self.OPR_MODE:
            self.p0[reg] = b & 0x0F
        elif reg == self.PWR_MODE:
            self.p0[reg] = b & 0x03
        elif reg == self.SYS_TRIGGER:
            if b & 0x20:
                self._reset()
                return
            self.p0[reg] = b & 0x80         # CLK_SEL stays; self-test / interrupt reset self-clear
        elif reg in self._CONFIG_ONLY_P0:
            if config:
                self.p0[reg] = b
        # everything else (ids, data, status) is read-only

    def _reset(self) -> None:
        self.resets += 1
        self._power_on()
        self._ready_at = self.now() + self.reset_time_s

    def read_registers(self, n: int) -> bytes:
        page = self._page()
        data = self._data_block() if self.page == 0 else None
        out = bytearray()
        reg = self.pointer
        for _ in range(n):
            if data is not None and 0x08 <= reg <= 0x3A:
                out.append(data[reg - 0x08])
            elif reg == self.PAGE_ID:
                out.append(self.page)
            else:
                out.append(page[reg])
            reg = (reg + 1) & 0x7F
        self.pointer = reg
        return bytes(out)

    def _data_block(self) -> bytes:
        """Registers 0x08..0x3A computed from the state, one consistent snapshot per read (as the chip's
        shadowing of multi-byte data)."""
        mode = self.mode
        unit = self.p0[self.UNIT_SEL]
        block = bytearray(0x3A - 0x08 + 1)

        def put(reg, fmt, values):
            struct.pack_into(fmt, block, reg - 0x08, *[int(min(max(round(v), -32768), 32767)) for v in values])

        acc_scale = 1000.0 / STANDARD_GRAVITY if unit & 0x01 else 100.0     # mg or m/s^2 x100
        gyr_scale = 900.0 if unit & 0x02 else 16.0 * 180.0 / math.pi      # rad/s x900 or dps x16
        eul_scale = 900.0 if unit & 0x04 else 16.0 * 180.0 / math.pi
        if mode in self.ACC_MODES:
            put(0x08, "<hhh", self.accel * acc_scale)
        if mode in self.MAG_MODES:
            put(0x0E, "<hhh", self.magnetic * 16.0)
        if mode in self.GYR_MODES:
            put(0x14, "<hhh", self.gyro * gyr_scale)
        if mode in self.FUSION_MODES:
            w, x, y, z = self.quaternion_wxyz
            roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
            pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
            yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
            heading = (-yaw) % (2 * math.pi)            # clockwise from north, 0..360 deg
            put(0x1A, "<hhh", np.array([heading, roll, pitch]) * eul_scale)
            put(0x20, "<hhhh", self.quaternion_wxyz * (1 << 14))
            grav = self.gravity_sensor()
            put(0x28, "<hhh", (self.accel - grav) * acc_scale)
            put(0x2E, "<hhh", grav * acc_scale)
        temp = self.temperature_c * (2.0 if unit & 0x10 else 1.0) + (32.0 if unit & 0x10 else 0.0)
        block[self.TEMP - 0x08] = struct.pack("<b", int(min(max(round(temp), -128), 127)))[0]
        s, g, a, m = self.calibration
        block[self.CALIB_STAT - 0x08] = (s << 6) | (g << 4) | (a << 2) | m
        block[0x36 - 0x08] = 0x0F
        block[self.SYS_STATUS - 0x08] = 0 if mode == self.CONFIG_MODE else (5 if mode in self.FUSION_MODES else 6)
        block[self.SYS_ERR - 0x08] = 0
        return bytes(block)


# ================================================================================================= plant
class SimulatedPlen:
    """The PLEN's I2C bus with its six chips, coupled to a servo/potentiometer/IMU plant.

    Built from a ``PlenHardwareConfig``: a ``PCA9685Sim`` at ``pwm.address``, an ``ADS1115Sim`` per
    ``adc.addresses``, a ``BNO055Sim`` at ``imu.address``, on ``self.bus`` (hand that to ``PlenIO`` as ``i2c``).

    - Servos: each servo joint moves toward the angle its PCA9685 channel commands (pulse decoded with the config's
      pulse -> angle map) at up to its speed (the robot's joint velocity, 8 rad/s for PLEN); a channel that outputs
      no pulses leaves its joint limp where it is.  Passive joints (elbows) stay at their stance.
    - Feedback: each feedback joint's input voltage is ``true_curves[joint](q)`` (default: the inverse of the
      configured calibration polynomial over 0..VDD, so a perfect calibration reads back ``q``), plus Gaussian
      noise of ``adc_noise_v``.  Give other ``true_curves`` to test calibration.
    - IMU: ``set_imu`` takes the torso state (REP 103) and hands the BNO055 its sensor-frame equivalent through the
      configured mounting rotation; default upright at rest (+9.81 m/s^2 on the torso z axis).  ``tilt(angle)``
      tilts the torso at rest (to try the safety layer's fall and reset checks); it stays so until changed.

    Time: with ``time_driven=True`` (default) the plant follows the bus clock: before every transaction it
    integrates the servos up to the current time (so a loop against it behaves like the robot in real time).  With
    ``time_driven=False`` nothing moves until ``advance(dt_s)`` is called (deterministic tests); the ADS1115
    conversion timing still follows the bus clock.
    """

    def __init__(self, config: PlenHardwareConfig, robot=None, *, byte_time_s: Optional[float] = None,
                 frequency_hz: Optional[float] = None, transaction_overhead_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, time_driven: bool = True,
                 true_curves: Optional[Mapping[str, Callable[[float], float]]] = None,
                 initial_positions: Optional[Mapping[str, float]] = None, adc_noise_v: float = 0.0,
                 oscillator_hz: float = 25e6, adc_rate_error: float = 0.0, bno_reset_time_s: float = 0.65,
                 seed: int = 0):
        from op3_walk.robots.description import load_robot
        self.config = config
        self.robot = load_robot(config.robot) if robot is None else robot
        self.bus = SimulatedI2CBus(frequency_hz=config.bus.frequency_hz if frequency_hz is None else frequency_hz,
                                   byte_time_s=byte_time_s, transaction_overhead_s=transaction_overhead_s,
                                   clock=clock)
        self.pca = self.bus.attach(PCA9685Sim(config.pwm.address, oscillator_hz=oscillator_hz))
        self.adcs = {a: self.bus.attach(ADS1115Sim(a, supply_v=config.adc.supply_v, rate_error=adc_rate_error))
                     for a in config.adc.addresses}     # type: Dict[int, ADS1115Sim]
        self.imu = self.bus.attach(BNO055Sim(config.imu.address, reset_time_s=bno_reset_time_s))
        self.time_driven = bool(time_driven)
        self.adc_noise_v = float(adc_noise_v)
        self._rng = np.random.default_rng(seed)
        names = list(self.robot.joint_names)
        self._names = names
        self.positions = self.robot.stance.copy()
        for name, q in (initial_positions or {}).items():
            self.positions[self.robot.joint_index(name)] = float(q)
        self._servos = [(names.index(s.joint), s) for s in config.servos]
        self._speed = self.robot.velocity
        self._curves = {}       # type: Dict[str, Callable[[float], float]]
        for fb in config.feedback:
            self._curves[fb.joint] = self._inverse_poly(fb)
        for joint, fn in (true_curves or {}).items():
            self.set_true_curve(joint, fn)
        self._last_t = self.bus.now()
        self.set_imu()
        self._update_voltages()
        self.bus.add_hook(self._hook)

    # ---------------------------------------------------------------- curves
    def _inverse_poly(self, fb) -> Callable[[float], float]:
        v = np.linspace(0.0, self.config.adc.supply_v, 4001)
        q = fb.angle_for(v)
        d = np.diff(q)
        if not (np.all(d > 0) or np.all(d < 0)):
            def not_invertible(_q, joint=fb.joint):
                raise ValueError("calibration polynomial of %s is not monotonic over 0..VDD: give SimulatedPlen a "
                                 "true_curves entry for it" % joint)
            return not_invertible
        if d[0] < 0:
            v, q = v[::-1], q[::-1]
        return lambda angle: float(np.interp(angle, q, v))

    def set_true_curve(self, joint: str, volts_of_angle: Optional[Callable[[float], float]]) -> None:
        """The joint's real potentiometer curve, rad -> V (None: back to the inverse calibration polynomial)."""
        fb = self.config.feedback_for(joint)
        with self.bus.state_lock:
            self._curves[joint] = self._inverse_poly(fb) if volts_of_angle is None else volts_of_angle
            self._update_voltages()

    def volts(self, joint: str) -> float:
        """Potentiometer voltage of ``joint`` now (no noise), V."""
        with self.bus.state_lock:
            return float(self._curves[joint](self.positions[self.robot.joint_index(joint)]))

    # ---------------------------------------------------------------- servos
    def commanded(self, joint: str) -> Optional[float]:
        """Angle the joint's servo is being told to hold (rad), None when its channel is off."""
        for i, servo in self._servos:
            if servo.joint == joint:
                with self.bus.state_lock:
                    pulse = self.pca.pulse_width_us(servo.channel)
                return None if pulse is None else servo.angle_for(pulse)
        return None

    def _targets(self) -> List[Optional[float]]:
        out = []
        for _, servo in self._servos:
            pulse = self.pca.pulse_width_us(servo.channel)
            out.append(None if pulse is None else servo.angle_for(pulse))
        return out

    def _integrate(self, dt: float) -> None:
        if dt <= 0.0:
            return
        for (i, _), target in zip(self._servos, self._targets()):
            if target is None:
                continue
            err = target - self.positions[i]
            step = self._speed[i] * dt
            self.positions[i] = target if abs(err) <= step else self.positions[i] + math.copysign(step, err)

    def _update_voltages(self) -> None:
        for fb in self.config.feedback:
            v = self._curves[fb.joint](self.positions[self._names.index(fb.joint)])
            if self.adc_noise_v > 0.0:
                v += float(self._rng.normal(0.0, self.adc_noise_v))
            self.adcs[fb.address].voltages[fb.channel] = float(v)

    def _hook(self, now: float) -> None:
        if not self.time_driven:
            return
        dt = now - self._last_t
        if dt < 2e-4:
            return
        self._integrate(dt)
        self._last_t = now
        self._update_voltages()

    def advance(self, dt_s: float) -> None:
        """Move the servos ``dt_s`` seconds further (in ``time_driven=False`` mode; also fine otherwise)."""
        with self.bus.state_lock:
            self._integrate(float(dt_s))
            self._last_t = self.bus.now()
            self._update_voltages()

    def sync(self) -> None:
        """Time-driven mode: bring the plant up to the bus clock now."""
        with self.bus.state_lock:
            if self.time_driven:
                self._hook(self.bus.now())

    def set_positions(self, positions: Mapping[str, float]) -> None:
        """Move joints by hand (e.g. a limp joint pushed by the user), rad."""
        with self.bus.state_lock:
            for name, q in positions.items():
                self.positions[self.robot.joint_index(name)] = float(q)
            self._update_voltages()

    def position(self, joint: str) -> float:
        with self.bus.state_lock:
            return float(self.positions[self.robot.joint_index(joint)])

    # ---------------------------------------------------------------- IMU
    def set_imu(self, orientation_xyzw: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
                angular_velocity: Sequence[float] = (0.0, 0.0, 0.0),
                linear_acceleration: Optional[Sequence[float]] = None,
                calibration: Optional[Sequence[int]] = None) -> None:
        """Torso state, REP 103: orientation torso -> world (x, y, z, w), angular velocity (rad/s, torso frame),
        specific force (m/s^2, torso frame, incl. gravity; None: at rest).  Mapped into the sensor frame through
        ``imu.mounting_xyzw`` (sensor -> torso) for the BNO055."""
        q_wt = np.asarray(orientation_xyzw, dtype=np.float64)
        q_wt = q_wt / np.linalg.norm(q_wt)
        q_ts = self.config.imu.mounting
        r_st = quat_matrix(quat_conjugate(q_ts))          # torso -> sensor
        q_ws = quat_multiply(q_wt, q_ts)                   # sensor -> world
        if linear_acceleration is None:
            accel_t = quat_matrix(q_wt).T @ np.array([0.0, 0.0, STANDARD_GRAVITY])
        else:
            accel_t = np.asarray(linear_acceleration, dtype=np.float64)
        with self.bus.state_lock:
            self.imu.set_state((q_ws[3], q_ws[0], q_ws[1], q_ws[2]),
                               r_st @ np.asarray(angular_velocity, dtype=np.float64), r_st @ accel_t)
            if calibration is not None:
                self.imu.set_calibration(*calibration)

    def tilt(self, angle_rad: float, axis: Sequence[float] = (1.0, 0.0, 0.0)) -> Tuple[float, float, float, float]:
        """Tilt the torso at rest by ``angle_rad`` about the horizontal ``axis`` (world frame; default x: a roll),
        e.g. the robot lying on its side or held at an angle; 0 = upright.  Returns the orientation (x, y, z, w)
        handed to ``set_imu``: the BNO055 reports it (through the mounting) from its next reading on."""
        a = np.asarray(axis, dtype=np.float64)
        if a.shape != (3,) or abs(a[2]) > 1e-9 or not np.linalg.norm(a) > 0.0:
            raise ValueError("axis must be a horizontal 3-vector (z = 0), got %r" % (axis,))
        a = a / np.linalg.norm(a)
        half = 0.5 * float(angle_rad)
        q = (a[0] * math.sin(half), a[1] * math.sin(half), 0.0, math.cos(half))
        self.set_imu(q)
        return q

    # ---------------------------------------------------------------- helpers
    def pulse_width_us(self, joint: str) -> Optional[float]:
        """Pulse the joint's channel outputs now, us (None: off)."""
        return self.pca.pulse_width_us(self.config.servo(joint).channel)

    def adc_of(self, joint: str) -> ADS1115Sim:
        return self.adcs[self.config.feedback_for(joint).address]

    def all_outputs_off(self) -> bool:
        return all(p is None for p in self.pca.pulse_widths_us())
