"""The node's parameters: one table, used for declaring, validating and documenting.

Every parameter of ``satsam_detector`` is one :class:`ParamSpec` in :data:`PARAMS`:
its default (the run-time defaults come from :mod:`satsam_ros.runtime`), description,
allowed values or range, and whether it may change while the node runs. The node
declares them with :func:`descriptor`, validates every value with
:func:`check_parameter` (and the combination with :func:`check_combination`), the
launch file takes its choices from here, and docs/node.md lists them.

Pure Python: importable without rclpy (``descriptor`` imports rcl_interfaces when called).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..core.compressed import DEFAULT_MAX_PIXELS
from ..core.detector import DEFAULT_COARSE_SIZE, MODES, DetectorConfig
from ..core.tiling import ALLOWED_SIZES
from ..runtime import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEFAULT_MODEL, DEVICES

NODE_NAME = "satsam_detector"
RELIABILITIES = ("best_effort", "reliable")
#: the node's `cascade` values: -1 the checkpoint's, 0 off, else the coarse size (an integer, so
#: that YAML files and `-p cascade:=0` give the declared type: YAML reads off / on as booleans)
CASCADE_SIZES = (-1, 0, 512, 1024)
TRANSPORTS = ("raw", "compressed")
INT32_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    ``choices``: allowed values (checked in the on-set callback, listed in the
    description). ``int_range`` / ``float_range``: (from, to, step) for the
    descriptor. ``live``: may change while the node runs (else read-only).
    """

    name: str
    default: Any
    description: str
    choices: Tuple[Any, ...] = ()
    int_range: Optional[Tuple[int, int, int]] = None
    float_range: Optional[Tuple[float, float, float]] = None
    live: bool = False


PARAMS: Tuple[ParamSpec, ...] = (
    ParamSpec("size", 512, "Frames are resized to size x size before tiling (S).",
              choices=ALLOWED_SIZES),
    ParamSpec("model", DEFAULT_MODEL, "Model: 'builtin' (the shipped model, trained on synthetic frames), "
              "'tiny' / 'tiny-sam2' / 'tiny-edgetam' (small random SAM / SAM 2 / EdgeTAM for tests: their output "
              "means nothing), "
              "'vit-b' / 'sam2-hiera-tiny' (architectures with random weights, for speed), a checkpoint or "
              "transformers SAM / SAM 2 directory, or a hub id (needs network)."),
    ParamSpec("backend", DEFAULT_BACKEND,
              "Inference engine ('auto' picks TensorRT, ONNX Runtime or torch and logs why).", choices=BACKENDS),
    ParamSpec("device", DEFAULT_DEVICE, "Where the model runs ('auto': cuda when available, else cpu).",
              choices=DEVICES),
    ParamSpec("threshold", -1.0, "Mask threshold on the probability: -1 = the checkpoint's "
              "tuned value, else 0..1.", float_range=(-1.0, 1.0, 0.0), live=True),
    ParamSpec("patch_size", 256, "Patch side P in resized pixels (multiple of 16, <= size).",
              int_range=(16, 2048, 16)),
    ParamSpec("overlap", 0, "Patch overlap in resized pixels (blended), 0..patch_size/2.",
              int_range=(0, 1024, 1)),
    ParamSpec("mode", "fast", "fast: batched patches at the model's own input size; faithful: "
              "one patch per pass at 1024 as the reference pipeline (slow).", choices=MODES),
    ParamSpec("cascade", -1, "Coarse to fine for size above the coarse size: run the coarse grid first (its "
              "checkpoint post-processing) and only the size x size patches under the objects it publishes (and the "
              "patches it scores present) grown by cascade_margin; a frame it finds empty costs the coarse pass only. "
              "-1: the checkpoint's setting for this size (else off); 0: off (full tiling); "
              f"{DEFAULT_COARSE_SIZE} or 1024: that coarse size first.", choices=CASCADE_SIZES),
    ParamSpec("cascade_margin", -1, "Cascade: input pixels added on every side of each coarse proposal; -1 = the "
              "checkpoint's tuned value for this size (else 32).", int_range=(-1, 100000, 1)),
    ParamSpec("cascade_max_patches", -1, "Cascade: the most size x size patches one frame runs, those under the "
              "strongest coarse proposals first (bounds a frame's latency); 0 = no cap; -1 = the checkpoint's "
              "value for this size (else no cap).", int_range=(-1, 65536, 1)),
    ParamSpec("min_area", -1, "Drop connected components smaller than this (input pixels); -1 = the "
              "checkpoint's tuned value.", int_range=(-1, INT32_MAX, 1), live=True),
    ParamSpec("max_objects", -1, "Keep only this many objects, best score first (0 = all); -1 = the "
              "checkpoint's tuned value for this size.", int_range=(-1, 1000, 1), live=True),
    ParamSpec("min_score", -1.0, "Drop objects whose mean probability is under this; -1 = the checkpoint's "
              "tuned value for this size, else 0..1.", float_range=(-1.0, 1.0, 0.0), live=True),
    ParamSpec("group_gap", -1, "Components closer than this (input pixels) are one object with one box; -1 = "
              "the checkpoint's tuned value for this size.", int_range=(-1, 100000, 1), live=True),
    ParamSpec("min_object_score", -1.0, "Presence gate (models with an object-score head: SAM 2, EdgeTAM): a patch "
              "whose presence probability is under this publishes nothing; 0 = off; -1 = the checkpoint's tuned "
              "value for this size, else 0..1.", float_range=(-1.0, 1.0, 0.0), live=True),
    ParamSpec("publish_probability", True, "Publish the 32FC1 probability image.", live=True),
    ParamSpec("publish_overlay", False, "Publish a bgr8 overlay (frame, mask, boxes).", live=True),
    ParamSpec("image_transport", "raw", "Input transport, as image_transport names it: raw subscribes to 'image' "
              "(sensor_msgs/Image); compressed subscribes to '<resolved image topic>/compressed' "
              "(sensor_msgs/CompressedImage, JPEG or PNG).", choices=TRANSPORTS),
    ParamSpec("max_decoded_pixels", DEFAULT_MAX_PIXELS, "Compressed input: frames whose header says "
              "width x height is over this are rejected before decoding (guards against decompression bombs).",
              int_range=(1, INT32_MAX, 1), live=True),
    ParamSpec("autostart", True, "Configure and activate the lifecycle node at start-up (a plain launch runs at "
              "once); false: stay unconfigured until a lifecycle manager requests the transitions."),
    ParamSpec("qos_reliability", "best_effort", "Reliability of the image subscription.",
              choices=RELIABILITIES),
    ParamSpec("qos_depth", 1, "Keep-last depth of the image subscription.",
              int_range=(1, 100, 1)),
    ParamSpec("roi_tracking", False, "Stream ROI tracking: after a detection, run only the patches "
              "near the last box (roi_margin) and scan in full every roi_full_scan_every frames or when "
              "the target is lost. Off by default: it trades recall on new objects for speed.", live=True),
    ParamSpec("roi_margin", 48, "ROI tracking: input pixels added on every side of the last box.",
              int_range=(0, 100000, 1), live=True),
    ParamSpec("roi_full_scan_every", 10, "ROI tracking: a full scan at least every this many frames.",
              int_range=(1, 100000, 1), live=True),
    ParamSpec("extra_latency_ms", 0, "Testing aid: sleep this long per frame in the worker "
              "(simulates a slow backend). Keep 0 in production.",
              int_range=(0, 60000, 1)),
)
PARAM_SPECS: Dict[str, ParamSpec] = {p.name: p for p in PARAMS}
# the Detector's post-processing settings (satsam_ros.core.postprocess.PostConfig); -1 = the checkpoint's
POST_PARAMS = ("threshold", "min_area", "max_objects", "min_score", "group_gap", "min_object_score")
#: post-processing parameters that are probabilities: -1 or in [0, 1]
UNIT_PARAMS = ("threshold", "min_score", "min_object_score")


def _fmt(values) -> str:
    return ", ".join(str(v) for v in values)


def allowed_values(spec: ParamSpec) -> str:
    """Human text of a parameter's allowed values ("one of 512, 1024, 2048", ...)."""
    if spec.choices:
        return f"one of {_fmt(spec.choices)}"
    if spec.name in UNIT_PARAMS:
        return "-1 (from the checkpoint) or in [0, 1]"
    if spec.name == "min_area":
        return f"-1 (from the checkpoint) or an integer in [0, {INT32_MAX}]"
    if spec.name in ("cascade_margin", "cascade_max_patches"):
        return f"-1 (from the checkpoint) or an integer in [0, {spec.int_range[1]}]"
    if spec.name == "model":
        return "tiny, tiny-sam2, tiny-edgetam, builtin, vit-b, a checkpoint directory or a hub id"
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        return f"an integer in [{lo}, {hi}]" + (f" in steps of {step}" if step > 1 else "")
    if isinstance(spec.default, bool):
        return "true or false"
    return f"a {type(spec.default).__name__}"


def check_parameter(name: str, value: Any) -> Optional[str]:
    """Validate one parameter value; return None when fine, else the reason.

    The reason names the parameter and the allowed values, e.g.
    ``"parameter 'size' must be one of 512, 1024, 2048; got 300"``. Names that are
    not the node's own (use_sim_time, ...) are not checked here.
    """
    spec = PARAM_SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"parameter '{name}' must be {allowed_values(spec)}; got {value!r}"
    if name == "model" and not str(value).strip():
        return f"parameter 'model' must be {allowed_values(spec)}; got an empty string"
    if name in UNIT_PARAMS and value != -1.0 and not 0.0 <= value <= 1.0:
        return f"parameter '{name}' must be {allowed_values(spec)}; got {value}"
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        if not lo <= value <= hi or (step > 1 and (value - lo) % step):
            return f"parameter '{name}' must be {allowed_values(spec)}; got {value}"
    return None


def check_combination(values: Dict[str, Any]) -> Optional[str]:
    """None when size, patch_size, overlap, mode and cascade fit together, else the reason."""
    from ..core.detector import parse_cascade

    cfg = DetectorConfig(size=values["size"], patch_size=values["patch_size"],
                         overlap=values["overlap"], mode=values["mode"],
                         cascade=parse_cascade(values.get("cascade", -1)))
    try:
        cfg.validate()
    except ValueError as exc:
        return f"parameters size/patch_size/overlap/mode/cascade do not fit together: {exc}"
    return None


def description(spec: ParamSpec) -> str:
    """The descriptor's text: the table's description, the allowed values, live or read-only."""
    text = spec.description
    if spec.choices:
        text += f" Allowed: {_fmt(spec.choices)}."
    return text + (" Changeable at run time." if spec.live else " Read-only (set at start-up).")


def descriptor(spec: ParamSpec):
    """The rcl_interfaces ParameterDescriptor of one parameter (description, allowed
    values, range, read_only)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    desc = ParameterDescriptor(name=spec.name, description=description(spec), read_only=not spec.live)
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=step)]
    if spec.float_range is not None:
        lo, hi, step = spec.float_range
        desc.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=step)]
    if spec.choices:
        desc.additional_constraints = f"one of {_fmt(spec.choices)}"
    return desc
