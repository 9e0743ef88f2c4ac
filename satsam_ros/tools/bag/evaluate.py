"""Bag evaluation: replay a bag through the live node and report what it did.

:func:`run_bag_eval` starts the installed ``detect_node`` (or attaches to a running
one), publishes the bag's images over DDS with their recorded timing (or as fast as
possible, or in lock-step), records every output with its arrival time, matches outputs
to inputs by header stamp, scores them with :mod:`satsam_ros.core.metrics` (the one
metric implementation) and writes a report directory. The steps have modules of their
own: :mod:`.launch` (the node process), :mod:`.replay` (the DDS side), :mod:`.score`
(metrics and the summary) and :mod:`.report` (files and figures).
"""

from __future__ import annotations

import math
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from .io import (
    COMPRESSED_SUFFIX,
    COMPRESSED_TYPE,
    GROUND_TRUTH_TOPIC,
    IMAGE_TYPE,
    NS,
    STORAGES,
    BagError,
    bag_topics,
    cdr_stamp,
    cdr_with_stamp,
    check_topic_name,
    choose_image_topic,
    describe_topics,
    iter_raw,
    open_writer,
)
from .launch import MAX_DOMAIN_ID, NodeLauncher, find_node_executable, fresh_domain_id, node_environment
from .replay import Replayer, ReplayRun, first_valid_frame, idle, wait_baseline, warm_up

DEFAULT_NAMESPACE = "/satsam"
RATE_MODES = ("max", "step")
Say = Callable[[str], None]


def parse_rate(value: Union[str, float]) -> Union[float, str]:
    """``--rate``: a positive factor on the recorded timing, ``max`` or ``step``."""
    text = str(value).strip().lower()
    if text in RATE_MODES:
        return text
    try:
        rate = float(text)
    except ValueError:
        rate = float("nan")
    if not math.isfinite(rate) or rate <= 0:
        raise BagError(f"rate must be a positive number (1.0 = recorded speed), 'max' or 'step'; got {value!r}")
    return rate


def parse_node_params(items: Optional[Iterable[str]]) -> Dict[str, str]:
    """``NAME:=VALUE`` strings (as ``ros2 run ... -p``) -> {name: value}."""
    out: Dict[str, str] = {}
    for item in items or ():
        name, sep, value = str(item).partition(":=")
        if not sep or not name.strip() or not value.strip():
            raise BagError(f"node parameter must look like NAME:=VALUE (e.g. extra_latency_ms:=200); got {item!r}")
        out[name.strip()] = value.strip()
    return out


@dataclass
class EvalOptions:
    """Settings of :func:`run_bag_eval` (the ``satsam bag eval`` options).

    Node settings left None take the node's own defaults. ``rate``: a factor on the
    recorded timing (2.0 = twice as fast), ``"max"`` (flood: every frame published
    back to back without waiting; the node keeps only the newest waiting frame, so
    a slow node drops frames) or ``"step"`` (lock-step: the next frame is sent as soon
    as the previous one was answered, or after ``timeout`` seconds without answer).
    """

    topic: Optional[str] = None
    truth_topic: str = GROUND_TRUTH_TOPIC
    size: Optional[int] = 512
    model: Optional[str] = None
    backend: Optional[str] = None
    device: Optional[str] = None
    mode: Optional[str] = None
    threshold: Optional[float] = None
    cascade: Optional[str] = None  # the node's `cascade`, as satsam detect takes it (auto, off, on, 512, 1024)
    cascade_margin: Optional[int] = None  # the node's `cascade_margin` (input pixels; -1 = the checkpoint's)
    rate: Union[float, str] = 1.0
    attach: bool = False
    namespace: str = DEFAULT_NAMESPACE
    input_topic: Optional[str] = None  # where frames are published (default: the bag's topic; +/compressed)
    timeout: float = 30.0
    startup_timeout: float = 180.0
    warmup: int = 1
    node_params: Dict[str, str] = field(default_factory=dict)
    node_exe: Optional[str] = None
    restamp: bool = False
    storage: str = "mcap"
    examples: int = 6
    progress: bool = True
    domain_id: Optional[int] = None

    def validate(self) -> EvalOptions:
        self.rate = parse_rate(self.rate)
        if not self.timeout > 0 or not self.startup_timeout > 0:
            raise BagError(f"timeouts must be positive; got --timeout {self.timeout}, "
                           f"--startup-timeout {self.startup_timeout}")
        if int(self.warmup) < 0:
            raise BagError(f"warmup must be >= 0 frames; got {self.warmup}")
        if self.storage not in STORAGES:
            raise BagError(f"storage must be one of {', '.join(STORAGES)}; got {self.storage!r}")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise BagError(f"threshold must be in [0, 1]; got {self.threshold}")
        if self.cascade is not None:
            from ...core.detector import parse_cascade

            try:
                parse_cascade(self.cascade)
            except ValueError as exc:
                raise BagError(str(exc)) from exc
        if self.domain_id is not None and not 0 <= int(self.domain_id) <= MAX_DOMAIN_ID:
            raise BagError(f"domain id must be in [0, {MAX_DOMAIN_ID}]; got {self.domain_id}")
        if not self.namespace.startswith("/"):
            self.namespace = "/" + self.namespace
        if self.input_topic is not None:
            check_topic_name(self.input_topic, "input topic")
        return self

    def node_parameters(self) -> Dict[str, str]:
        """The ``-p`` parameters for a launched node (explicit node_params win)."""
        params: Dict[str, str] = {}
        for name in ("size", "model", "backend", "device", "mode"):
            value = getattr(self, name)
            if value is not None:
                params[name] = str(value)
        if self.threshold is not None:
            params["threshold"] = repr(float(self.threshold))  # always a double literal
        if self.cascade is not None:  # the node's integer: -1 the checkpoint's, 0 off, else the coarse size
            from ...core.detector import parse_cascade

            coarse = parse_cascade(self.cascade)
            params["cascade"] = str(-1 if coarse is None else coarse)
        if self.cascade_margin is not None:
            params["cascade_margin"] = str(int(self.cascade_margin))
        params.update(self.node_params)
        return params


def run_bag_eval(bag, out, options: Optional[EvalOptions] = None, log: Optional[Say] = None,
                 **overrides) -> Dict[str, Any]:
    """Replay ``bag`` through the detector node and write a report to ``out``.

    ``options`` (or keyword overrides of its fields) as :class:`EvalOptions`.
    Returns the summary dict (also ``out/metrics.json``). Files written in ``out``:

    * ``report.md``: the summary table, the drop breakdown, the metrics, the figures;
    * ``metrics.json``: the summary (counts, latency, throughput, accuracy);
    * ``per_frame.csv``: one row per sent frame (stamp, send time, latency, IoU, ...);
    * ``latency_histogram.png``, ``latency_over_time.png``, ``examples.png``;
    * ``outputs/``: a rosbag2 of the node's outputs (mask, detections_json, diagnostics);
    * ``node.log``: the launched node's output (not with ``attach``).

    Raises BagError (topic missing, node not starting, ...) with a message naming it.
    """
    from .report import write_report
    from .score import score_answers, summarise

    opts = _options(options, overrides)
    say = log or (lambda _text: None)
    bag, out = Path(bag), Path(out)
    topic, compressed, has_truth = _image_topic(bag, opts, say)
    index, send_stamps = _frame_stamps(bag, topic, opts)
    out.mkdir(parents=True, exist_ok=True)
    writer = _output_bag(out, opts.storage)
    run = ReplayRun(bag, topic, publish_topic(opts.input_topic or topic, compressed), opts.domain_id, index,
                    send_stamps, compressed=compressed)
    launcher: Optional[NodeLauncher] = None
    rep: Optional[Replayer] = None
    try:
        launcher = _start_node(opts, run, out, say)
        rep = Replayer(run.input_topic, opts.namespace, run.domain, writer, loopback=not opts.attach,
                       compressed=compressed)
        run.baseline = _get_ready(rep, launcher, opts, run, say)
        _send_frames(rep, launcher, opts, run)
        _collect(rep, run)
    finally:
        if rep is not None:
            rep.close()
        writer.close()
        status = launcher.stop() if launcher is not None else None
        if launcher is not None and status not in (0, None, -signal.SIGINT):
            say(f"note: detect_node exited with status {status}; see {launcher.log_path}")
    run.take_answers(rep)
    scored = score_answers(bag, opts.truth_topic, run) if has_truth else None
    summary = summarise(run, opts, scored)
    write_report(out, summary, run, opts, scored.records if scored is not None else {}, say)
    return summary


def _options(options: Optional[EvalOptions], overrides: Dict[str, Any]) -> EvalOptions:
    opts = options or EvalOptions()
    for key, value in overrides.items():
        if not hasattr(opts, key):
            raise TypeError(f"unknown bag eval option {key!r}")
        setattr(opts, key, value)
    return opts.validate()


def publish_topic(topic: str, compressed: bool) -> str:
    """Where the frames are published: ``topic``; for compressed frames a topic ending
    in ``/compressed`` (appended when missing), since the node, told
    ``image_transport:=compressed``, reads ``<its image topic>/compressed``."""
    if compressed and not topic.endswith(COMPRESSED_SUFFIX):
        return topic + COMPRESSED_SUFFIX
    return topic


def node_image_topic(run: ReplayRun) -> str:
    """The node's ``image`` remapping: the published topic, without ``/compressed`` for
    compressed frames."""
    return run.input_topic[: -len(COMPRESSED_SUFFIX)] if run.compressed else run.input_topic


def _image_topic(bag: Path, opts: EvalOptions, say: Say) -> Tuple[str, bool, bool]:
    """(the camera topic to replay, whether it is CompressedImage, whether the bag has
    ground truth for it)."""
    topics = bag_topics(bag)
    topic = choose_image_topic(topics, opts.topic, opts.truth_topic, bag)
    if opts.truth_topic in topics and topics[opts.truth_topic].msgtype != IMAGE_TYPE:
        raise BagError(f"ground-truth topic {opts.truth_topic!r} carries {topics[opts.truth_topic].msgtype}, "
                       f"not {IMAGE_TYPE}; topics in {bag}:\n{describe_topics(topics)}")
    has_truth = opts.truth_topic in topics and topics[opts.truth_topic].count > 0
    say(f"bag {bag}:\n{describe_topics(topics)}")
    compressed = topics[topic].msgtype == COMPRESSED_TYPE
    say(f"replaying {topic} ({topics[topic].count} {'compressed ' if compressed else ''}frames); ground truth: "
        f"{opts.truth_topic if has_truth else 'none (timing figures only)'}")
    return topic, compressed, has_truth


def _frame_stamps(bag: Path, topic: str, opts: EvalOptions) -> Tuple[List[Tuple[int, int]], List[int]]:
    """Per frame (header stamp, bag time) and the stamp it is sent with (unique with restamp).

    Read without pixels: repeated stamps decide whether outputs can be matched to inputs.
    """
    index = [(cdr_stamp(raw), log_time) for _i, log_time, raw in iter_raw(bag, topic)]
    if not index:
        raise BagError(f"topic {topic!r} in {bag} has no messages")
    stamps = [s for s, _ in index]
    if not opts.restamp:
        if len(set(stamps)) != len(stamps):
            dup = len(stamps) - len(set(stamps))
            raise BagError(f"{dup} frame(s) on {topic} repeat another frame's header stamp, so outputs cannot be "
                           "matched to inputs by stamp; re-run with --restamp (frames are then sent with unique "
                           "stamps)")
        return index, stamps
    send_stamps, used = [], set()
    for _stamp, log_time in index:  # unique stamps: the bag time, nudged by 1 ns on collisions
        s = log_time
        while s in used:
            s += 1
        used.add(s)
        send_stamps.append(s)
    return index, send_stamps


def _output_bag(out: Path, storage: str):
    """An opened writer for ``out/outputs`` (an earlier run's output bag is replaced)."""
    out_bag = out / "outputs"
    if out_bag.exists():
        if not (out_bag / "metadata.yaml").is_file():
            raise BagError(f"{out_bag} exists and is not a bag from an earlier run; move it away")
        shutil.rmtree(out_bag)
    return open_writer(out_bag, storage)


def _start_node(opts: EvalOptions, run: ReplayRun, out: Path, say: Say) -> Optional[NodeLauncher]:
    """The launched node (None with ``attach``); sets the run's domain id."""
    if opts.attach:
        return None
    exe = find_node_executable(opts.node_exe)
    run.domain = opts.domain_id if opts.domain_id is not None else fresh_domain_id()
    params = opts.node_parameters()
    if run.compressed:
        params.setdefault("image_transport", "compressed")
    image = node_image_topic(run)
    say(f"starting {exe} on ROS_DOMAIN_ID {run.domain} (loopback), namespace {opts.namespace}, "
        f"image:={image}, " + " ".join(f"{k}:={v}" for k, v in params.items()))
    return NodeLauncher(exe, opts.namespace, image, params, node_environment(exe, run.domain),
                        out / "node.log")


def _get_ready(rep: Replayer, launcher: Optional[NodeLauncher], opts: EvalOptions, run: ReplayRun,
               say: Say) -> Optional[Dict[str, int]]:
    """Wait for the node, warm it up, and read its idle counters (the baseline)."""
    t_ready = time.monotonic()
    rep.wait_ready(opts.startup_timeout, launcher)
    say(f"node ready after {time.monotonic() - t_ready:.1f} s")
    warm_end = time.monotonic()
    if opts.warmup:
        warm_end = warm_up(rep, first_valid_frame(run.bag, run.topic), int(opts.warmup), max(opts.timeout, 10.0),
                           set(run.send_stamps), launcher)
    baseline = wait_baseline(rep, warm_end + 0.05)
    rep.record = True
    return baseline


def _check_alive(launcher: Optional[NodeLauncher], when: str) -> None:
    if launcher is not None and not launcher.alive():
        raise BagError(f"detect_node exited (status {launcher.proc.returncode}) {when}; "
                       f"its log ({launcher.log_path}):\n{launcher.log_tail()}")


def _send_frames(rep: Replayer, launcher: Optional[NodeLauncher], opts: EvalOptions, run: ReplayRun) -> None:
    """Publish every frame at the chosen rate, then wait for the answers to drain."""
    from tqdm import tqdm

    run.sends = [None] * len(run.index)
    log0 = run.index[0][1]
    t0 = time.monotonic()
    bar = tqdm(total=len(run.index), desc="bag eval", unit="frame", disable=not opts.progress)
    try:
        for i, log_time, raw in iter_raw(run.bag, run.topic):
            _pace(rep, opts, run, i, t0 + (log_time - log0) / NS / opts.rate if isinstance(opts.rate, float)
                  else None)
            _check_alive(launcher, "during the replay")
            payload = cdr_with_stamp(raw, run.send_stamps[i]) if opts.restamp else raw
            with rep.cond:
                rep.sent[run.send_stamps[i]] = i
            run.sends[i] = time.monotonic()
            rep.publish(payload)
            bar.update(1)
            if i % 5 == 0:
                bar.set_postfix(answered=len(rep.answers))
        bar.set_postfix(answered=_drain(rep, opts, run, time.monotonic()))
    finally:
        bar.close()


def _pace(rep: Replayer, opts: EvalOptions, run: ReplayRun, i: int, due: Optional[float]) -> None:
    """Wait before frame ``i``: until ``due`` (its recorded time scaled by the rate, on
    the monotonic clock), until the previous frame is answered (``step``), or not at
    all (``max``)."""
    if due is not None:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elif opts.rate == "step" and i > 0:
        deadline = run.sends[i - 1] + opts.timeout
        with rep.cond:
            while (i - 1) not in rep.answers and time.monotonic() < deadline:
                rep.cond.wait(min(0.1, max(deadline - time.monotonic(), 0.001)))


def _drain(rep: Replayer, opts: EvalOptions, run: ReplayRun, last_send: float) -> int:
    """Wait until every frame is answered, the node is idle, or nothing arrives for a
    while (a few latencies, at most ``timeout``); returns the number answered."""
    while True:
        with rep.cond:
            answered = len(rep.answers)
            last_arrival = rep.last_arrival
            lat = [a.arrival - run.sends[k] for k, a in rep.answers.items()]
        if answered == len(run.index):
            return answered
        counters = rep.latest_diag(last_send + 0.5)
        base = run.baseline
        if (base is not None and counters is not None and idle(counters, base)
                and counters["frames_processed"] - base["frames_processed"] <= answered):
            return answered
        quiet = min(opts.timeout, max(2.0, 3.0 * max(lat))) if lat else opts.timeout
        if time.monotonic() - max(last_send, last_arrival) > quiet:
            return answered
        time.sleep(0.05)


def _collect(rep: Replayer, run: ReplayRun) -> None:
    """The node's final counters (from its diagnostics), settings and the problems seen."""
    end = time.monotonic()
    final = rep.latest_diag(end) if run.baseline is not None else None
    deadline = end + 2.5
    while run.baseline is not None and final is None and time.monotonic() < deadline:
        time.sleep(0.05)
        final = rep.latest_diag(end)
    run.final = final
    run.node_settings = rep.settings_from_diag()
    run.problems = list(rep.errors)
