"""Deployment: export the patch model to ONNX, cache exports, open a backend by name.

The exported graph is the *patch model* of :mod:`satsam_ros.backends`, in one piece:
image encoder + the baked-in prompt (a box over the whole patch) + mask decoder.

* input ``pixel_values``: N x 3 x E x E float32, SAM-normalised RGB patches; the
  first axis (``patches``) is dynamic;
* output ``logits``: N x m x m float32 low-resolution mask logits (m = E / 4).

Why one graph and not encoder + decoder as two: the prompt is a constant, so the
prompt encoder folds to constants and the decoder is a small tail on the encoder; one
graph lets TensorRT fuse across the boundary and schedule one optimisation profile,
and the runtime makes one call per batch instead of two with an embedding round trip
through host code. Two graphs only pay off when prompts change per call (interactive
SAM), which this detector never does. The known risk sits inside the encoder either
way: SAM's attention softmax inputs and LayerNorm statistics can exceed the fp16
range, which is why FP16 TensorRT engines are validated against fp32
(:func:`satsam_ros.backends.tensorrt_backend.build_engine`).

Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript tracer), opset 17
(LayerNormalization is a native op from 17; ``--opset 14``, the lowest that exports
SAM's scaled-dot-product attention, decomposes LayerNorm for older TensorRT). The
dynamo exporter needs the ``onnxscript`` package, which the runtime does not carry;
the tracer exports this model exactly (fp32 difference to PyTorch ~1e-8).

Metadata travels twice: as the ONNX model's ``metadata_props`` entry ``satsam`` (the
authoritative copy, a :class:`satsam_ros.model.SatsamMeta` JSON document whose
``provenance.export`` block records size, opset and tool versions) and as a sidecar
``satsam.json`` in the same directory for people and tools that do not read ONNX.

Caches live under ``$SATSAM_CACHE_DIR`` (default ``~/.cache/satsam_ros``):
``onnx/<key>/model.onnx`` for exports made on the fly by
:func:`choose_backend`, keyed by the model's content, S, E, opset and tool versions.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..model import META_FILE, SatsamMeta

LOG = logging.getLogger("satsam_ros.export")

ONNX_INPUT = "pixel_values"
ONNX_OUTPUT = "logits"
BATCH_AXIS = "patches"
DEFAULT_OPSET = 17
VERIFY_TOLERANCE = 1e-3  # export fails when ORT and PyTorch logits differ by more than
VERIFY_RELATIVE = 1e-4  # ... max(VERIFY_TOLERANCE, VERIFY_RELATIVE * largest |logit|)
META_KEY = "satsam"
EXPORT_FORMAT = 1  # bump when the exported graph changes meaning: invalidates caches
CACHE_ENV = "SATSAM_CACHE_DIR"
ONNX_FILE = "model.onnx"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
TRT_PRECISION_ENV = "SATSAM_TRT_PRECISION"

#: Measured on the 2-core development machine (docs/deploy.md, "Choosing a backend"):
#: ONNX Runtime (CPU EP, graph optimisation ALL) against PyTorch 2.13 CPU, per patch.
CPU_CHOICE_NOTE = "onnxruntime measured faster than torch on the CPU (see docs/deploy.md)"


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


def patches_per_frame(size: int, patch_size: int = 256, overlap: int = 0) -> int:
    """How many P x P patches an S x S frame is cut into (4 / 16 / 64 at P = 256)."""
    from ..core.tiling import PatchGrid, check_size

    return len(PatchGrid(check_size(size), int(patch_size), int(overlap)))


# --------------------------------------------------------------------------- export


@dataclass
class OnnxExport:
    """An export's outcome: the file, its metadata and the parity check against torch.

    ``max_abs_diff``: largest |logit| difference between ONNX Runtime (CPU) and
    PyTorch on a random batch of two patches (NaN when not verified).
    """

    path: Path
    meta: SatsamMeta
    max_abs_diff: float
    sha256: str


def _versions() -> Dict[str, str]:
    import torch

    from .. import __version__

    out = {"torch": torch.__version__, "satsam_ros": __version__}
    for name in ("transformers", "onnx"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = "absent"
    return out


def _export_meta(meta: SatsamMeta, e: int, size: Optional[int], opset: int, source: Optional[str]) -> SatsamMeta:
    out = copy.deepcopy(meta)
    out.encoder_input_size = int(e)
    prov = dict(out.provenance)
    export: Dict[str, Any] = {
        "graph": "patch model (encoder + full-patch box prompt + mask decoder), one graph",
        "input": f"{ONNX_INPUT}: N x 3 x {e} x {e} float32, SAM-normalised RGB",
        "output": f"{ONNX_OUTPUT}: N x {e // 4} x {e // 4} float32 mask logits",
        "opset": int(opset),
        "exporter": "torch.onnx.export (TorchScript tracer, dynamo=False)",
        "export_format": EXPORT_FORMAT,
        "source_model": source,
        "size": int(size) if size else None,
        "patches_per_frame": patches_per_frame(size, out.patch_size) if size else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    export.update(_versions())
    prov["export"] = export
    out.provenance = prov
    return out.validate()


def _torch_export(module, dummy, path: Path, opset: int) -> None:
    import inspect

    import torch

    kwargs: Dict[str, Any] = dict(
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_axes={ONNX_INPUT: {0: BATCH_AXIS}, ONNX_OUTPUT: {0: BATCH_AXIS}},
        opset_version=int(opset),
        do_constant_folding=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        # The tracer warns about Python values it records as constants (SAM's
        # relative-position sizes, fixed for a given E) and about its own deprecation.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, (dummy,), str(path), **kwargs)


def make_export_module(sam, prompt_policy: str = "full_box"):
    """The patch model for export: ``pixel_values N x 3 x E x E -> logits N x m x m``.

    Computes what :func:`satsam_ros.backends.torch_backend.make_patch_module` computes,
    with the prompt's embeddings (and the image-wide positional embedding) evaluated
    once here and stored as constants: the prompt never changes, so the graph keeps
    only encoder and decoder and none of the prompt encoder's data-dependent ops
    (Where / ScatterND / OneHot over the batch), which TensorRT parses poorly. Every
    export checks the result against ``make_patch_module`` through ONNX Runtime.
    """
    import torch

    from ..backends.torch_backend import make_patch_module

    reference = make_patch_module(sam, prompt_policy).to(next(sam.parameters()).device)
    with torch.no_grad():
        sparse, dense = sam.get_prompt_embeddings(input_boxes=reference.box)
        positional = sam.get_image_wide_positional_embeddings()

    class SamPatchExport(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_encoder = sam.vision_encoder
            self.mask_decoder = sam.mask_decoder
            self.register_buffer("sparse", sparse.detach().clone(), persistent=False)
            self.register_buffer("dense", dense.detach().clone(), persistent=False)
            self.register_buffer("positional", positional.detach().clone(), persistent=False)

        def forward(self, pixel_values):
            n = pixel_values.shape[0]
            embeddings = self.vision_encoder(pixel_values)[0]
            low_res, _ = self.mask_decoder(
                image_embeddings=embeddings,
                image_positional_embeddings=self.positional.expand(n, -1, -1, -1),
                sparse_prompt_embeddings=self.sparse.expand(n, -1, -1, -1),
                dense_prompt_embeddings=self.dense.expand(n, -1, -1, -1),
                multimask_output=False,
            )
            return low_res[:, 0, 0]

    return SamPatchExport().eval(), reference.eval()


def export_patch_model(
    sam,
    meta: SatsamMeta,
    out,
    size: Optional[int] = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    source: Optional[str] = None,
) -> OnnxExport:
    """Export a loaded SamModel's patch model to ``out`` (a .onnx path), atomically.

    ``meta`` is the checkpoint's metadata (its prompt policy is baked in); ``size`` the
    frame size S the export is meant for (recorded, and used for TensorRT profiles).
    Writes ``out`` and ``satsam.json`` beside it; both appear complete or not at all.
    The graph is checked with ``onnx.checker.check_model(full_check=True)`` and, with
    ``verify``, compared with PyTorch on a random batch through ONNX Runtime (CPU).
    Raises ValueError naming the problem when the graph fails the check.
    """
    import onnx
    import torch

    from ..model import encoder_input_size

    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"ONNX export path must end in .onnx, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    e = encoder_input_size(sam)
    full_meta = _export_meta(meta, e, size, opset, source)
    module, reference = make_export_module(sam, full_meta.prompt_policy)
    device = next(sam.parameters()).device
    gen = torch.Generator().manual_seed(0)
    dummy = torch.randn(2, 3, e, e, generator=gen).to(device)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.tmp-", dir=str(out.parent)))
    try:
        raw = tmp / "raw.onnx"
        try:
            _torch_export(module, dummy, raw, opset)
        except (RuntimeError, ValueError) as exc:  # torch.onnx's errors derive from RuntimeError
            raise ValueError(f"torch.onnx.export failed for {source or 'model'} at opset {opset}: {exc}") from exc
        diff = float("nan")
        measured = _max_abs_diff(reference, raw, dummy) if verify else None
        if measured is not None:
            diff, scale = measured
            tolerance = max(VERIFY_TOLERANCE, VERIFY_RELATIVE * scale)
            if not diff <= tolerance:  # NaN fails too
                raise ValueError(
                    f"exported graph for {source or 'model'} disagrees with the PyTorch patch model: "
                    f"max |logit difference| {diff:.3g} > {tolerance:.3g}"
                )
            full_meta.provenance["export"]["verify_max_abs_diff"] = diff
        model = onnx.load(str(raw))
        _fix_output_shape(model, e // 4)
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = META_KEY, full_meta.to_json()
        model.doc_string = "satsam_ros patch model: pixel_values N x 3 x E x E -> logits N x E/4 x E/4"
        final_tmp = tmp / out.name
        big = model.ByteSize() > 1_800_000_000  # protobuf's 2 GiB limit: ViT-H needs external data
        onnx.save(model, str(final_tmp), save_as_external_data=big, location=out.name + ".data" if big else None)
        try:
            onnx.checker.check_model(str(final_tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ValueError(f"exported graph for {source or 'model'} fails the ONNX checker: {exc}") from exc
        (tmp / META_FILE).write_text(full_meta.to_json())
        if big:
            os.replace(tmp / (out.name + ".data"), out.parent / (out.name + ".data"))
        os.replace(final_tmp, out)
        os.replace(tmp / META_FILE, out.parent / META_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return OnnxExport(out, full_meta, diff, sha256_file(out))


def _fix_output_shape(model, m: int) -> None:
    """Declare the output as patches x m x m (the tracer leaves m symbolic)."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 3:
        raise ValueError(f"exported graph output has rank {len(dims)}, expected 3 (N x m x m)")
    dims[0].dim_param = BATCH_AXIS
    for d in (dims[1], dims[2]):
        d.dim_value = int(m)


def _max_abs_diff(module, onnx_path: Path, dummy) -> Optional[Tuple[float, float]]:
    """(largest |torch - onnxruntime| logit difference, largest |torch logit|) on ``dummy``.

    ONNX Runtime's CPU provider; None when onnxruntime is not installed.
    """
    import numpy as np
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with torch.inference_mode():
        ref = module(dummy).float().cpu().numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run([ONNX_OUTPUT], {ONNX_INPUT: dummy.cpu().numpy()})[0]
    return float(np.max(np.abs(got - ref))), float(np.max(np.abs(ref)))


def export_model(
    spec: str,
    out,
    size: int = 512,
    encoder_size: Optional[int] = None,
    opset: int = DEFAULT_OPSET,
    device: str = "cpu",
    verify: bool = True,
) -> OnnxExport:
    """Load a model spec (see :func:`satsam_ros.model.load_model`) and export it.

    ``encoder_size`` E resizes the encoder first (:func:`satsam_ros.model.resize_encoder`;
    1024 for faithful mode); None keeps the checkpoint's own E.
    """
    from ..core.tiling import check_size
    from ..model import load_model, resize_encoder

    check_size(size)
    sam, meta = load_model(spec, device=device)
    if encoder_size is not None and int(encoder_size) != meta.encoder_input_size:
        sam = resize_encoder(sam, int(encoder_size))
    return export_patch_model(sam, meta, out, size=size, opset=opset, verify=verify, source=str(spec))


# --------------------------------------------------------------------------- reading


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


# --------------------------------------------------------------------------- cache


def model_fingerprint(spec: str) -> str:
    """Content hash of a model spec: the files of a checkpoint directory, else the spec.

    ``tiny`` and ``vit-b`` are seeded and so are identified by name (plus the
    transformers version, which the cache key adds).
    """
    digest = hashlib.sha256()
    path = Path(str(spec)).expanduser()
    if spec == "builtin":
        from ..model import BUILTIN_DIR

        path = BUILTIN_DIR
    if path.is_dir():
        for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            digest.update(f.name.encode())
            digest.update(sha256_file(f).encode())
    else:
        digest.update(f"spec:{spec}".encode())
    return digest.hexdigest()


def onnx_cache_key(spec: str, size: int, encoder_size: Optional[int], opset: int = DEFAULT_OPSET) -> str:
    """Cache key of an export: model content + S + E + opset + tool versions."""
    parts = {
        "model": model_fingerprint(spec),
        "size": int(size),
        "encoder_size": int(encoder_size) if encoder_size else "native",
        "opset": int(opset),
        "export_format": EXPORT_FORMAT,
    }
    parts.update(_versions())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def cached_onnx(
    spec: str, size: int = 512, encoder_size: Optional[int] = None, opset: int = DEFAULT_OPSET
) -> Path:
    """The ONNX export of ``spec`` from the cache, exported (on the CPU) when missing.

    Lives in ``cache_dir("onnx") / <key> / model.onnx`` with its ``satsam.json``; a
    directory per key keeps each sidecar unambiguous. Concurrent callers may both
    export; the first rename wins and the other's copy is discarded.
    """
    key = onnx_cache_key(spec, size, encoder_size, opset)
    root = cache_dir("onnx")
    final = root / key
    if (final / ONNX_FILE).is_file() and (final / META_FILE).is_file():
        LOG.info("ONNX cache hit for %s: %s", spec, final / ONNX_FILE)
        return final / ONNX_FILE
    LOG.info("exporting %s to ONNX (S=%s, E=%s) into the cache %s", spec, size, encoder_size or "native", final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=str(root)))
    try:
        export_model(spec, tmp / ONNX_FILE, size=size, encoder_size=encoder_size, opset=opset)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache entry is readable like any file
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / ONNX_FILE).is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / ONNX_FILE


# --------------------------------------------------------------------------- choosing


@dataclass
class BackendChoice:
    """What :func:`choose_backend` decided.

    ``backend`` None means "the torch backend": the Detector builds it on its own path.
    ``reason`` is one line for the node's log: which engine, on what, and why.
    """

    backend: Any
    meta: Optional[SatsamMeta]
    reason: str


def is_onnx_spec(spec: str) -> bool:
    """True for a .onnx file or a directory holding .onnx files and no config.json."""
    p = Path(str(spec)).expanduser()
    if p.suffix == ".onnx":
        return True
    return p.is_dir() and not (p / "config.json").is_file() and any(p.glob("*.onnx"))


def is_engine_spec(spec: str) -> bool:
    """True for a serialized TensorRT engine file name (.engine, .plan, .trt)."""
    return Path(str(spec)).suffix in ENGINE_SUFFIXES


def _onnx_for(spec: str, size: int, mode: str, encoder_size: Optional[int] = None) -> Path:
    from ..core.detector import FAITHFUL_ENCODER_SIZE

    if is_engine_spec(spec):
        raise ValueError(f"model {spec!r} is a TensorRT engine; only the tensorrt backend on a GPU can run it")
    if is_onnx_spec(spec):
        return resolve_onnx_file(spec)
    return cached_onnx(spec, size, FAITHFUL_ENCODER_SIZE if mode == "faithful" else encoder_size)


def module_available(name: str) -> bool:
    """True when ``import name`` would find the module (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _ort_has_cuda() -> bool:
    if not module_available("onnxruntime"):
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _trt_precision() -> str:
    value = os.environ.get(TRT_PRECISION_ENV, "auto")
    if value not in ("auto", "fp16", "fp32"):
        raise ValueError(f"{TRT_PRECISION_ENV} must be auto, fp16 or fp32; got {value!r}")
    return value


def choose_backend(
    model: str,
    backend: str,
    device: str,
    size: int = 512,
    mode: str = "fast",
    patch_size: int = 256,
    encoder_size: Optional[int] = None,
) -> BackendChoice:
    """Open the engine for ``backend`` ("onnxruntime", "tensorrt" or "auto").

    ``device`` is already resolved ("cpu" or "cuda"). ``model`` is a model spec, a
    .onnx file (or a directory with one) or, for TensorRT, an .engine file. Specs are
    exported to the ONNX cache first, with the encoder resized to ``encoder_size``
    when given (faithful mode: 1024; an .onnx file keeps its own E). ``auto`` picks, in order: TensorRT when it
    imports, the device is a GPU and an engine builds or loads; ONNX Runtime with
    its CUDA provider on a GPU; torch on a GPU; on the CPU, ONNX Runtime when
    installed (measured faster than torch there), else torch. Errors of an
    explicitly requested backend propagate; ``auto`` records them in the reason and
    moves on.
    """
    if backend == "onnxruntime":
        from ..backends.onnxruntime_backend import OnnxRuntimeBackend

        be = OnnxRuntimeBackend(_onnx_for(model, size, mode, encoder_size), device=device)
        return BackendChoice(be, be.meta, f"onnxruntime requested: {be.describe()}")
    if backend == "tensorrt":
        if device != "cuda":
            raise ValueError("backend 'tensorrt' needs a CUDA GPU; device resolved to 'cpu' (torch sees no GPU)")
        return _open_tensorrt(model, size, mode, patch_size, "tensorrt requested", encoder_size)
    if backend != "auto":
        raise ValueError(f"choose_backend handles onnxruntime, tensorrt and auto; got {backend!r}")

    notes = []
    if device == "cuda":
        if module_available("tensorrt"):
            try:
                return _open_tensorrt(model, size, mode, patch_size, "auto: TensorRT imports and a GPU is present",
                                      encoder_size)
            except Exception as exc:  # noqa: BLE001 - auto moves on, naming the failure
                notes.append(f"TensorRT failed ({type(exc).__name__}: {exc})")
        else:
            notes.append("tensorrt is not installed")
        if _ort_has_cuda():
            from ..backends import onnxruntime_backend

            try:
                be = onnxruntime_backend.OnnxRuntimeBackend(_onnx_for(model, size, mode, encoder_size), device="cuda")
                return BackendChoice(be, be.meta, f"auto: {be.describe()} ({'; '.join(notes)})")
            except (ValueError, RuntimeError, OSError) as exc:  # e.g. CUDA/cuDNN libraries not found
                notes.append(f"onnxruntime CUDA failed ({exc})")
        else:
            notes.append("onnxruntime has no CUDA provider")
        return _torch_choice(model, "cuda", notes)
    if module_available("onnxruntime"):
        from ..backends.onnxruntime_backend import OnnxRuntimeBackend

        be = OnnxRuntimeBackend(_onnx_for(model, size, mode, encoder_size), device="cpu")
        return BackendChoice(be, be.meta, f"auto: {be.describe()}: no GPU; {CPU_CHOICE_NOTE}")
    notes.append("no GPU and onnxruntime is not installed")
    return _torch_choice(model, "cpu", notes)


def _torch_choice(model: str, device: str, notes) -> BackendChoice:
    if is_onnx_spec(model) or is_engine_spec(model):
        raise ValueError(
            f"backend auto fell back to torch ({'; '.join(notes)}), which cannot run {model!r}: "
            "give a checkpoint or install onnxruntime"
        )
    return BackendChoice(None, None, f"auto: torch on {device} ({'; '.join(notes)})")


def _open_tensorrt(model: str, size: int, mode: str, patch_size: int, why: str,
                   encoder_size: Optional[int] = None) -> BackendChoice:
    from ..backends import tensorrt_backend as trtb

    if is_engine_spec(model):
        be = trtb.TensorRTBackend(model)
        return BackendChoice(be, be.meta, f"{why}: {be.describe()} (given engine)")
    onnx_path = _onnx_for(model, size, mode, encoder_size)
    build = trtb.ensure_engine(onnx_path, precision=_trt_precision(), size=size, patch_size=patch_size)
    be = trtb.TensorRTBackend(build.path)
    return BackendChoice(be, be.meta, f"{why}: {be.describe()}; {build.summary()}")
