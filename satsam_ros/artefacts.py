"""Deployment artefacts as the runtime finds them: ONNX exports, TensorRT engines, their
metadata, and the cache they live in. Reading and locating only; making them is
:mod:`satsam_ros.deploy` (which writes into the same layout).

An ONNX export is the *patch model* in one graph (encoder + the baked-in prompt + mask
decoder): input ``pixel_values`` N x 3 x E x E float32 (SAM-normalised RGB patches,
the first axis ``patches`` dynamic), output ``logits`` N x m x m float32 (m = E / 4)
and, for a model with an object-score head (SAM 2, EdgeTAM), a second output
``object_score`` N float32: the presence logit of each patch (export format 2; SAM
exports and those of format 1 have ``logits`` only, and the backends take both kinds).
Its metadata (:class:`satsam_ros.model.SatsamMeta`) travels twice: as the ONNX model's
``metadata_props`` entry ``satsam`` (authoritative) and as a ``satsam.json`` beside it.

A TensorRT engine comes with a key record ``<engine>.json``: the ONNX file's sha256,
the TensorRT version, the GPU (name and compute capability), the precision and the
optimisation profile (:func:`engine_key`), plus the engine's own sha256. An engine
whose record is missing (foreign), does not match its bytes or names another TensorRT
or GPU (stale) is never loaded (:func:`engine_status`).

Caches live under ``$SATSAM_CACHE_DIR`` (default ``$XDG_CACHE_HOME/satsam_ros`` or
``~/.cache/satsam_ros``): ``onnx/<key>/model.onnx`` (+ ``satsam.json``) for exports
made on the fly, keyed by the model's content, S, E, opset and tool versions
(:func:`onnx_cache_key`); ``tensorrt/<key digest>.engine`` (+ ``.json``) for engines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .model import BUILTIN_DIR, META_FILE, SatsamMeta

LOG = logging.getLogger("satsam_ros.artefacts")

ONNX_INPUT = "pixel_values"
ONNX_OUTPUT = "logits"
ONNX_SCORE_OUTPUT = "object_score"  # second output of a model with presence: N object-score logits
BATCH_AXIS = "patches"
DEFAULT_OPSET = 17
META_KEY = "satsam"
EXPORT_FORMAT = 2  # bump when the exported graph changes meaning: invalidates caches (2: object_score)
CACHE_ENV = "SATSAM_CACHE_DIR"
ONNX_FILE = "model.onnx"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: precisions a TensorRT engine is built in (autocast precisions are core.backend's)
ENGINE_PRECISIONS = ("fp16", "fp32")
KEY_FORMAT = 1
ENV_FIELDS = ("tensorrt", "gpu", "compute_capability")

Shape = Tuple[int, int, int, int]


# --------------------------------------------------------------------------- cache


def cache_dir(kind: str) -> Path:
    """Directory for cached artefacts of one kind ("onnx", "tensorrt"), created on use.

    ``$SATSAM_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/satsam_ros`` or
    ``~/.cache/satsam_ros``.
    """
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "satsam_ros")
    path = Path(root).expanduser() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> Dict[str, str]:
    """Versions of the tools an export depends on (part of its cache key and provenance)."""
    import importlib

    from . import __version__

    out = {"satsam_ros": __version__}
    for name in ("torch", "transformers", "onnx"):
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            out[name] = "absent"
    return out


def patches_per_frame(size: int, patch_size: int = 256, overlap: int = 0) -> int:
    """How many P x P patches an S x S frame is cut into (4 / 16 / 64 at P = 256)."""
    from .core.tiling import PatchGrid, check_size

    return len(PatchGrid(check_size(size), int(patch_size), int(overlap)))


def model_fingerprint(spec: str) -> str:
    """Content hash of a model spec: the files of a checkpoint directory, else the spec.

    ``tiny`` and ``vit-b`` are seeded and so are identified by name (plus the
    transformers version, which the cache key adds).
    """
    digest = hashlib.sha256()
    path = BUILTIN_DIR if spec == "builtin" else Path(str(spec)).expanduser()
    if path.is_dir():
        for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            digest.update(f.name.encode())
            digest.update(sha256_file(f).encode())
    else:
        digest.update(f"spec:{spec}".encode())
    return digest.hexdigest()


def onnx_cache_key(spec: str, size: int, encoder_size: Optional[int], opset: int = DEFAULT_OPSET) -> str:
    """Cache key of an export: model content + S + E + opset + tool versions."""
    parts: Dict[str, Any] = {
        "model": model_fingerprint(spec),
        "size": int(size),
        "encoder_size": int(encoder_size) if encoder_size else "native",
        "opset": int(opset),
        "export_format": EXPORT_FORMAT,
    }
    parts.update(tool_versions())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def onnx_cache_entry(spec: str, size: int, encoder_size: Optional[int] = None, opset: int = DEFAULT_OPSET) -> Path:
    """The cache directory of an export (``cache_dir("onnx") / <key>``), present or not."""
    return cache_dir("onnx") / onnx_cache_key(spec, size, encoder_size, opset)


def cached_onnx(spec: str, size: int, encoder_size: Optional[int] = None,
                opset: int = DEFAULT_OPSET) -> Optional[Path]:
    """The cached export's ``model.onnx`` (with its ``satsam.json``), or None when not cached."""
    entry = onnx_cache_entry(spec, size, encoder_size, opset)
    if (entry / ONNX_FILE).is_file() and (entry / META_FILE).is_file():
        LOG.info("ONNX cache hit for %s: %s", spec, entry / ONNX_FILE)
        return entry / ONNX_FILE
    return None


# --------------------------------------------------------------------------- ONNX files


def is_onnx_spec(spec: str) -> bool:
    """True for a .onnx file or a directory holding .onnx files and no config.json."""
    p = Path(str(spec)).expanduser()
    if p.suffix == ".onnx":
        return True
    return p.is_dir() and not (p / "config.json").is_file() and any(p.glob("*.onnx"))


def is_engine_spec(spec: str) -> bool:
    """True for a serialized TensorRT engine file name (.engine, .plan, .trt)."""
    return Path(str(spec)).suffix in ENGINE_SUFFIXES


def resolve_onnx_file(path) -> Path:
    """A .onnx file, or a directory holding ``model.onnx`` or exactly one .onnx file."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix != ".onnx":
            raise ValueError(f"{p}: not an .onnx file")
        return p
    if p.is_dir():
        if (p / ONNX_FILE).is_file():
            return p / ONNX_FILE
        found = sorted(p.glob("*.onnx"))
        if len(found) == 1:
            return found[0]
        if found:
            raise ValueError(f"{p}: holds {len(found)} .onnx files ({', '.join(f.name for f in found)}); name one")
        raise FileNotFoundError(f"{p}: no .onnx file in this directory")
    raise FileNotFoundError(f"{p}: no such ONNX file or directory")


def meta_from_metadata(props: Dict[str, str], onnx_path, graph_input_size: int) -> SatsamMeta:
    """SatsamMeta from an ONNX model's metadata map, else the sidecar ``satsam.json``.

    ``graph_input_size`` is E as the graph declares it; a metadata document that says
    otherwise is an error (it belongs to another export). A graph with neither gets
    default metadata with that E (and a logged warning).
    """
    onnx_path = Path(onnx_path)
    if META_KEY in props:
        try:
            meta = SatsamMeta.from_dict(json.loads(props[META_KEY]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{onnx_path}: metadata entry {META_KEY!r} is not valid JSON ({exc})") from exc
        origin = "its metadata"
    elif (onnx_path.parent / META_FILE).is_file():
        meta = SatsamMeta.read(onnx_path.parent)
        origin = str(onnx_path.parent / META_FILE)
    else:
        LOG.warning("%s carries no satsam metadata and has no %s beside it: using defaults", onnx_path, META_FILE)
        return SatsamMeta(encoder_input_size=graph_input_size, provenance={"source": str(onnx_path)})
    if int(meta.encoder_input_size) != int(graph_input_size):
        raise ValueError(
            f"{onnx_path}: {origin} says encoder input {meta.encoder_input_size}, the graph takes {graph_input_size}"
        )
    return meta


def read_onnx_meta(path) -> SatsamMeta:
    """SatsamMeta of an exported .onnx (file or directory) without running it.

    Uses the ``onnx`` package (weights not loaded) when installed, else the sidecar.
    """
    path = resolve_onnx_file(path)
    try:
        import onnx
    except ImportError as exc:
        if not (path.parent / META_FILE).is_file():
            raise FileNotFoundError(
                f"{path}: the onnx package is not installed and there is no {META_FILE} beside it"
            ) from exc
        return SatsamMeta.read(path.parent)
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[2].dim_value:
        raise ValueError(f"{path}: input {model.graph.input[0].name} is not N x 3 x E x E with a fixed E")
    return meta_from_metadata(props, path, int(dims[2].dim_value))


def export_size(meta: SatsamMeta, default: int = 512) -> int:
    """The frame size S an export was made for (its provenance), else ``default``."""
    size = (meta.provenance.get("export") or {}).get("size")
    return int(size) if size else int(default)


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class ProfileShapes:
    """Optimisation profile of the ``pixel_values`` input: min / opt / max N x 3 x E x E."""

    min: Shape
    opt: Shape
    max: Shape

    def to_dict(self) -> Dict[str, List[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def profile_shapes(
    size: int, encoder_size: int, patch_size: int = 256, overlap: int = 0, max_batch: Optional[int] = None
) -> ProfileShapes:
    """Batch 1 .. patches per frame (4 / 16 / 64 for S = 512 / 1024 / 2048 at P = 256).

    ``opt`` = ``max``: the detector sends whole frames' worth of patches (up to its
    ``max_batch``). ``max_batch`` caps both, e.g. to save memory on a small Jetson.
    """
    e = int(encoder_size)
    if e <= 0 or e % 16:
        raise ValueError(f"encoder input size must be a positive multiple of 16; got {encoder_size}")
    n = patches_per_frame(size, patch_size, overlap)
    if max_batch is not None:
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        n = min(n, int(max_batch))
    return ProfileShapes((1, 3, e, e), (n, 3, e, e), (n, 3, e, e))


def engine_key(
    onnx_sha256: str,
    tensorrt_version: str,
    gpu: str,
    compute_capability: str,
    precision: str,
    profile: ProfileShapes,
) -> Dict[str, Any]:
    """Everything an engine depends on; engines are reused only on an exact match."""
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(ENGINE_PRECISIONS)}; got {precision!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", str(onnx_sha256)):
        raise ValueError(f"onnx_sha256 must be 64 hex digits; got {onnx_sha256!r}")
    return {
        "key_format": KEY_FORMAT,
        "onnx_sha256": str(onnx_sha256),
        "tensorrt": str(tensorrt_version),
        "gpu": str(gpu),
        "compute_capability": str(compute_capability),
        "precision": precision,
        "profile": profile.to_dict(),
    }


def key_digest(key: Dict[str, Any]) -> str:
    """Short stable name of a key (the cached engine's file name)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def key_path(engine_path) -> Path:
    """Where an engine's key record lives: ``<engine>.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_record(engine_path) -> Dict[str, Any]:
    """The key record beside an engine (ValueError / FileNotFoundError when unusable)."""
    kp = key_path(engine_path)
    try:
        record = json.loads(kp.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{kp}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
        raise ValueError(f"{kp}: no 'key' object")
    return record


def engine_status(engine_path, expected: Dict[str, Any]) -> Tuple[bool, str]:
    """Whether the engine at ``engine_path`` may be loaded for ``expected``, and why.

    ``expected`` is a full key (:func:`engine_key`) or any subset of its fields, e.g.
    only the environment (:data:`ENV_FIELDS`) when no ONNX is at hand. Returns
    ``(True, "current")`` or ``(False, reason)``: no engine, no key file (foreign),
    engine bytes not the ones the key file was written for, or fields that differ.
    """
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return False, "no engine file"
    if not key_path(engine_path).is_file():
        return False, f"no key file {key_path(engine_path).name} beside it (a foreign engine)"
    try:
        record = read_record(engine_path)
    except ValueError as exc:
        return False, f"unreadable key file ({exc})"
    if record.get("engine_sha256") != sha256_file(engine_path):
        return False, "the engine's bytes do not match its key file (replaced or corrupt)"
    key = record["key"]
    diffs = [f"{name} {key.get(name)!r} != {want!r}" for name, want in expected.items() if key.get(name) != want]
    if diffs:
        return False, "stale: built for " + "; ".join(diffs)
    return True, "current"


@dataclass
class EngineTarget:
    """The engine an ONNX export needs here: its key, where it lives, and the export's facts."""

    onnx_path: Path
    meta: SatsamMeta
    size: int
    key: Dict[str, Any]
    path: Path


def engine_target(onnx_path, precision: str, env: Dict[str, str], size: Optional[int] = None,
                  patch_size: Optional[int] = None, max_batch: Optional[int] = None, out=None) -> EngineTarget:
    """Key and path of the engine for ``onnx_path`` at ``precision`` on this machine.

    ``env`` is the machine's TensorRT version and GPU (:data:`ENV_FIELDS`); ``size`` S
    the frame size the profile is made for (default: the export's own S, else 512);
    ``out`` the engine path (default: the cache, ``<cache>/tensorrt/<key digest>.engine``).
    """
    onnx_path = resolve_onnx_file(onnx_path)
    meta = read_onnx_meta(onnx_path)
    size = int(size) if size else export_size(meta)
    profile = profile_shapes(size, meta.encoder_input_size, patch_size or meta.patch_size, 0, max_batch)
    key = engine_key(sha256_file(onnx_path), env["tensorrt"], env["gpu"], env["compute_capability"], precision,
                     profile)
    path = Path(out) if out else cache_dir("tensorrt") / f"{key_digest(key)}.engine"
    return EngineTarget(onnx_path, meta, size, key, path)


@dataclass
class EngineBuild:
    """An engine ready to run: where it is, its key, and whether it was built just now."""

    path: Path
    key: Dict[str, Any]
    built: bool
    reason: str
    validation: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""  # why this precision, when chosen automatically

    def summary(self) -> str:
        what = f"built in {self.seconds:.0f} s ({self.reason})" if self.built else "loaded from cache"
        text = f"engine {self.path.name}: {self.key['precision']}, {what}"
        if self.validation.get("mask_iou") is not None:
            text += f"; fp16 check vs {self.validation['reference']}: mask IoU {self.validation['mask_iou']:.3f}"
        return text + (f"; {self.note}" if self.note else "")


def current_engine(target: EngineTarget) -> Optional[EngineBuild]:
    """The engine at ``target.path`` when its record matches ``target.key`` exactly, else None."""
    ok, _why = engine_status(target.path, target.key)
    if not ok:
        return None
    return EngineBuild(target.path, target.key, False, "cache hit", read_record(target.path).get("validation") or {})
