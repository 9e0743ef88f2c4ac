"""The node's worker thread: it takes frames from the latest-frame mailbox, decodes a
compressed one, runs the Detector (or the ROI tracker around it) and publishes through
the node's :class:`~satsam_ros.ros.outputs.Outputs`. Errors are counted and logged,
never raised: the node must never die from its input."""

from __future__ import annotations

import threading
from typing import Optional

from ..core.imaging import FrameError
from .mailbox import FrameItem, LatestFrameMailbox

REJECT_LOG_THROTTLE_S = 2.0


class FrameWorker:
    """The worker of one node. It reads the node's settings, detector, tracker and outputs
    for every frame, so live parameter changes apply from the next frame on."""

    def __init__(self, node, mailbox: LatestFrameMailbox, shutdown: threading.Event) -> None:
        self._node = node
        self._mailbox = mailbox
        self._shutdown = shutdown  # the process is ending: publish nothing more
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._extra_latency_s = 0.0

    def start(self) -> None:
        """Open the mailbox and start the thread that takes frames from it, detects and publishes."""
        self._extra_latency_s = int(self._node.settings["extra_latency_ms"]) / 1000.0
        self._stop = threading.Event()
        self._mailbox.open()
        self._thread = threading.Thread(target=self._work, args=(self._stop,), name="satsam-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the thread (a frame in inference is finished first; a waiting one is
        dropped) and wait for it; True when it ended within ``timeout``."""
        thread, self._thread = self._thread, None
        self._stop.set()
        self._mailbox.close()
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            self._node.get_logger().warning(f"worker still busy after {timeout:.0f} s; leaving it")
            return False
        return True

    def reject(self, header, exc: Exception) -> None:
        """Count a bad frame as rejected and log why (throttled)."""
        text = f"{exc}"
        self._node.stats.count("rejected", text)
        self._node.get_logger().warning(
            f"skipped a bad frame (frame_id {header.frame_id!r}, stamp "
            f"{header.stamp.sec}.{header.stamp.nanosec:09d}): {text}",
            throttle_duration_sec=REJECT_LOG_THROTTLE_S,
        )

    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            item = self._mailbox.take()
            if item is None:
                return
            try:
                self._process(item, stop)
            finally:
                self._mailbox.done()

    def _decode(self, item: FrameItem) -> Optional[FrameItem]:
        """The item with pixels: a compressed frame decoded (None, counted and logged
        as rejected, when it cannot be), a raw one as it is."""
        if item.frame is not None:
            return item
        from .convert import compressed_msg_to_array

        try:
            frame, order = compressed_msg_to_array(item.compressed, int(self._node.settings["max_decoded_pixels"]))
        except FrameError as exc:
            self.reject(item.header, exc)
            return None
        return FrameItem(item.header, frame, order, item.received)

    def _process(self, item: FrameItem, stop: threading.Event) -> None:
        """Detect on one frame and publish; errors are counted and logged, never raised."""
        if self._extra_latency_s > 0 and stop.wait(self._extra_latency_s):
            return
        item = self._decode(item)
        if item is None:
            return
        node = self._node
        tracker, detector = node._tracker, node._detector  # one read: a live change swaps the tracker whole
        try:
            result = (tracker or detector).detect(item.frame, item.order)
        except FrameError as exc:  # e.g. a frame the converter let through
            node.stats.count("rejected", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - the node must never die from input
            node.stats.count("errors", f"{type(exc).__name__}: {exc}")
            node.get_logger().error(f"detection failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=REJECT_LOG_THROTTLE_S)
            return
        if self._shutdown.is_set():
            return
        if getattr(result, "gated", 0):
            node.stats.add("gated", result.gated)
        node.stats.record_patches(getattr(result, "patches_run", result.patches), getattr(result, "cascade", None))
        try:
            node._outputs.publish(item, result, tracker.last_scan if tracker is not None else "full")
        except Exception as exc:  # noqa: BLE001 - e.g. during shutdown
            if self._shutdown.is_set():
                return
            node.stats.count("errors", f"publish: {exc}")
            node.get_logger().error(f"publishing failed: {exc}", throttle_duration_sec=REJECT_LOG_THROTTLE_S)
