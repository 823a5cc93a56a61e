"""``/diagnostics`` for the op3_walk nodes: ``diagnostic_msgs/DiagnosticArray`` published from a wall-clock thread.

rqt_robot_monitor and ``rostopic echo /diagnostics`` read it.  The publishing thread uses wall-clock time, not
``rospy.Timer``: with ``/use_sim_time`` and a paused simulator, ROS time stands still and a ROS timer would never fire.
"""
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence

import numpy as np
import rospy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

LEVELS = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR}


def status(name: str, level: int, message: str, hardware_id: str, values: Mapping[str, Any]) -> DiagnosticStatus:
    """One DiagnosticStatus; ``level`` 0 OK, 1 WARN, 2 ERROR; values shown as strings (floats with 4 digits)."""
    out = DiagnosticStatus(level=LEVELS[level], name=name, message=message, hardware_id=hardware_id)
    for key, value in values.items():
        text = ("%.4g" % value) if isinstance(value, float) else str(value)
        out.values.append(KeyValue(key=str(key), value=text))
    return out


def percentiles_ms(label: str, samples_s: Sequence[float]) -> Dict[str, str]:
    """``{"<label> median [ms]": ..., "<label> p99 [ms]": ...}`` of durations in seconds ("n/a" when empty)."""
    if not samples_s:
        return {"%s median [ms]" % label: "n/a", "%s p99 [ms]" % label: "n/a"}
    values = np.asarray(samples_s, dtype=float) * 1e3
    return {"%s median [ms]" % label: "%.3f" % float(np.median(values)),
            "%s p99 [ms]" % label: "%.3f" % float(np.percentile(values, 99))}


def synchronous_publisher(name: str, msg_class: Any, **kwargs: Any) -> rospy.Publisher:
    """A publisher whose ``publish`` writes to the sockets in the caller's thread (``queue_size=None``): no hand-off
    to a writer thread, the lowest latency for lockstep exchanges.  rospy warns about ``queue_size=None`` because
    a slow subscriber then blocks the publisher; the lockstep nodes want exactly that coupling."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return rospy.Publisher(name, msg_class, queue_size=None, **kwargs)


class DiagnosticsPublisher:
    """Calls ``collect(window_s, memory)`` every ``1 / rate_hz`` s of wall-clock time and publishes the statuses it
    returns on ``/diagnostics``.  ``memory`` is a dict kept between calls (for rates over the window).
    ``rate_hz = 0`` publishes nothing."""

    def __init__(self, rate_hz: float, collect: Callable[[float, Dict[str, float]], List[DiagnosticStatus]]):
        self.collect = collect
        self.period_s = 1.0 / rate_hz if rate_hz > 0 else 0.0
        self._stop = threading.Event()
        self._memory: Dict[str, float] = {}
        self._thread = None
        if self.period_s > 0:
            self.pub = rospy.Publisher("/diagnostics", DiagnosticArray, queue_size=10)
            self._thread = threading.Thread(target=self._run, name="diagnostics", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.period_s) and not rospy.is_shutdown():
            now = time.monotonic()
            try:
                statuses = self.collect(now - last, self._memory)
            except Exception as exc:  # diagnostics must never take a node down
                rospy.logwarn_throttle(30.0, "diagnostics: %s", exc)
                continue
            last = now
            msg = DiagnosticArray(status=statuses)
            msg.header.stamp = rospy.Time.now()
            try:
                self.pub.publish(msg)
            except rospy.ROSException:   # shutting down
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
