"""The worker's inbox and counters: plain Python, no rclpy.

The subscription callback puts each validated frame in a :class:`LatestFrameMailbox`
(one slot: a frame still waiting is replaced and counted as dropped, so the newest
frame always wins and latency stays bounded under overload); the worker thread takes
it from there. :class:`Stats` counts what happened and keeps the latency windows the
diagnostics report.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any, Deque, Dict, Optional

import numpy as np

LATENCY_WINDOW = 200  # frames kept for the latency percentiles


class LatestFrameMailbox:
    """A one-slot mailbox between the subscription callback and the worker.

    ``put`` stores an item; an item still waiting is replaced and counted in
    ``dropped``. ``take`` blocks until an item is there (returns it, empties the slot
    and marks the taker busy until ``done``) or the mailbox is closed (returns None).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self._busy = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; True when it replaced a waiting one. While closed, ``item``
        itself is dropped (counted) and False returned."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return False
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: Optional[float] = None) -> Any:
        """The waiting item (slot emptied), or None when closed or after ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            if self._closed or self._item is None:
                return None
            item, self._item = self._item, None
            self._busy = True
            return item

    def done(self) -> None:
        """The taken item is finished (published, rejected or failed)."""
        with self._cond:
            self._busy = False

    def pending(self) -> int:
        """Items waiting in the slot (0 or 1)."""
        with self._cond:
            return 0 if self._item is None else 1

    def in_progress(self) -> int:
        """Items taken and not yet done (0 or 1)."""
        with self._cond:
            return 1 if self._busy else 0

    def close(self) -> None:
        """Wake the worker and make ``take`` return None until :meth:`open`; a waiting
        item is discarded and counted in ``dropped``."""
        with self._cond:
            self._closed = True
            if self._item is not None:
                self._item = None
                self.dropped += 1
            self._cond.notify_all()

    def open(self) -> None:
        """Accept and hand out items again after :meth:`close` (a lifecycle node's
        next activation); ``dropped`` keeps counting."""
        with self._cond:
            self._closed = False


class Stats:
    """Thread-safe counters and latency windows of the node."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.rejected = 0
        self.errors = 0
        self.gated = 0  # patches the presence gate (min_object_score) silenced
        self.cascade_frames = 0  # frames the cascade ran on
        self.cascade_stopped = 0  # ... of which stopped at the coarse pass (no S patch ran)
        self.cascade_capped = 0  # ... of which cascade_max_patches left proposed S patches out
        self.last_problem = ""
        self.latency: Deque[float] = collections.deque(maxlen=window)  # receive -> publish, s
        self.stamp_age: Deque[float] = collections.deque(maxlen=window)  # stamp -> publish, s
        self.inference: Deque[float] = collections.deque(maxlen=window)  # detect() total, s
        self.patches: Deque[int] = collections.deque(maxlen=window)  # patches run per frame (coarse ones included)

    def count(self, field: str, problem: str = "") -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)
            if problem:
                self.last_problem = problem

    def add(self, field: str, amount: int) -> None:
        """Add ``amount`` to a counter (e.g. ``gated``: the patches of one frame)."""
        with self.lock:
            setattr(self, field, getattr(self, field) + int(amount))

    def record_patches(self, patches: int, cascade: Optional[str] = None) -> None:
        """One frame's cost in patches (``Result.patches_run``) and its cascade outcome
        (``Result.cascade``: None, "stopped", "refined" or "capped")."""
        with self.lock:
            self.patches.append(int(patches))
            if cascade is not None:
                self.cascade_frames += 1
                self.cascade_stopped += int(cascade == "stopped")
                self.cascade_capped += int(cascade == "capped")

    def record(self, latency: float, stamp_age: float, inference: float) -> None:
        with self.lock:
            self.processed += 1
            self.latency.append(latency)
            self.stamp_age.append(stamp_age)
            self.inference.append(inference)

    def snapshot(self) -> Dict[str, Any]:
        with self.lock:
            return {
                "received": self.received,
                "processed": self.processed,
                "rejected": self.rejected,
                "errors": self.errors,
                "gated": self.gated,
                "cascade_frames": self.cascade_frames,
                "cascade_stopped": self.cascade_stopped,
                "cascade_capped": self.cascade_capped,
                "patches": list(self.patches),
                "last_problem": self.last_problem,
                "latency": list(self.latency),
                "stamp_age": list(self.stamp_age),
                "inference": list(self.inference),
            }


@dataclass
class FrameItem:
    """A frame waiting for the worker: validated pixels (``frame``, ``order``), or a
    compressed message (``compressed``; ``frame`` None) that the worker decodes, so a
    frame replaced while waiting is never decoded."""

    header: Any
    frame: Optional[np.ndarray]
    order: str
    received: float  # time.monotonic() in the callback
    compressed: Any = None  # sensor_msgs/CompressedImage
