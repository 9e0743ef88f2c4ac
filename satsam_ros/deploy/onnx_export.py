"""ONNX export of the patch model: one graph, checked, with its metadata.

The exported graph is the *patch model* of :func:`satsam_ros.model.make_patch_module`,
in one piece: image encoder + the baked-in prompt (a box over the whole patch) + mask
decoder; its input and outputs are described in :mod:`satsam_ros.artefacts`. A model
with an object-score head (SAM 2, EdgeTAM) gets a second output, ``object_score`` (N
presence logits, what ``make_patch_module(..., with_score=True)`` gives), checked
against PyTorch like the logits; SAM's graph has the logits only.

Why one graph and not encoder + decoder as two: the prompt is a constant, so the
prompt encoder folds to constants and the decoder is a small tail on the encoder; one
graph lets TensorRT fuse across the boundary and schedule one optimisation profile,
and the runtime makes one call per batch instead of two with an embedding round trip
through host code. Two graphs only pay off when prompts change per call (interactive
SAM), which this detector never does. The known risk sits inside the encoder either
way: SAM's attention softmax inputs and LayerNorm statistics can exceed the fp16
range, which is why FP16 TensorRT engines are validated against fp32
(:func:`satsam_ros.deploy.tensorrt_build.build_engine`).

Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript tracer), opset 17
(LayerNormalization is a native op from 17; ``--opset 14``, the lowest that exports
SAM's scaled-dot-product attention, decomposes LayerNorm for older TensorRT). The
dynamo exporter needs the ``onnxscript`` package, which the runtime does not carry;
the tracer exports this model exactly (fp32 difference to PyTorch 1e-6 to 1e-4, summation
order; bounded by :func:`satsam_ros.core.parity.logit_tolerance`).

Metadata travels twice: as the ONNX model's ``metadata_props`` entry ``satsam`` (the
authoritative copy, a :class:`satsam_ros.model.SatsamMeta` JSON document whose
``provenance.export`` block records size, opset and tool versions) and as a sidecar
``satsam.json`` in the same directory for people and tools that do not read ONNX.
:func:`export_into_cache` writes an export into the cache layout of
:mod:`satsam_ros.artefacts`, where the runtime looks first.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..artefacts import (
    BATCH_AXIS,
    DEFAULT_OPSET,
    EXPORT_FORMAT,
    META_KEY,
    ONNX_FILE,
    ONNX_INPUT,
    ONNX_OUTPUT,
    ONNX_SCORE_OUTPUT,
    onnx_cache_entry,
    patches_per_frame,
    sha256_file,
    tool_versions,
)
from ..core.parity import logit_tolerance
from ..model import META_FILE, SatsamMeta

LOG = logging.getLogger("satsam_ros.deploy.onnx")

# The export fails when ORT and PyTorch logits differ by more than
# satsam_ros.core.parity.logit_tolerance: 1e-3 x max(1, largest |torch logit|), the float32
# bound every engine comparison uses (derived in that module's docstring).


# --------------------------------------------------------------------------- export


@dataclass
class OnnxExport:
    """An export's outcome: the file, its metadata and the parity check against torch.

    ``max_abs_diff``: largest |logit| difference between ONNX Runtime (CPU) and
    PyTorch on a random batch of two patches (NaN when not verified);
    ``max_score_diff`` the same for the object-score logits (NaN when not verified or
    the graph has no ``object_score`` output: ``has_score`` False).
    """

    path: Path
    meta: SatsamMeta
    max_abs_diff: float
    sha256: str
    max_score_diff: float = float("nan")
    has_score: bool = False


def _export_meta(meta: SatsamMeta, e: int, size: Optional[int], opset: int, source: Optional[str],
                 with_score: bool = False) -> SatsamMeta:
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
    if with_score:
        export["score_output"] = (f"{ONNX_SCORE_OUTPUT}: N float32 object-score logits (presence: a patch "
                                  "whose sigmoid is under min_object_score publishes nothing)")
    export["outputs"] = [ONNX_OUTPUT, ONNX_SCORE_OUTPUT] if with_score else [ONNX_OUTPUT]
    export.update(tool_versions())
    prov["export"] = export
    out.provenance = prov
    return out.validate()


def _torch_export(module, dummy, path: Path, opset: int, with_score: bool = False) -> None:
    import inspect

    import torch

    outputs = [ONNX_OUTPUT, ONNX_SCORE_OUTPUT] if with_score else [ONNX_OUTPUT]
    kwargs: Dict[str, Any] = dict(
        input_names=[ONNX_INPUT],
        output_names=outputs,
        dynamic_axes={ONNX_INPUT: {0: BATCH_AXIS}, **{name: {0: BATCH_AXIS} for name in outputs}},
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
    """(export module, reference patch module) of a loaded model, both
    ``pixel_values N x 3 x E x E -> logits N x m x m``, or for a model with presence
    (:func:`satsam_ros.model.has_presence`) both ``-> (logits, object-score logits N)``.

    The export module (:func:`satsam_ros.model.make_export_module`, the family's) holds
    the prompt's embeddings and whatever else does not depend on the pixels as
    constants: the prompt never changes, so the graph keeps only encoder and decoder,
    none of the prompt encoder's data-dependent ops (Where / ScatterND / OneHot over
    the batch) that TensorRT parses poorly, and for SAM 2 no bicubic resampling of
    Hiera's position embedding. Every export checks it against the reference,
    :func:`satsam_ros.model.make_patch_module`, through ONNX Runtime.
    """
    from ..model import has_presence, make_patch_module
    from ..model import make_export_module as family_export_module

    reference = make_patch_module(sam, prompt_policy, with_score=has_presence(sam))
    reference = reference.to(next(sam.parameters()).device)
    return family_export_module(sam, prompt_policy), reference.eval()


def export_patch_model(
    sam,
    meta: SatsamMeta,
    out,
    size: Optional[int] = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    source: Optional[str] = None,
) -> OnnxExport:
    """Export a loaded model's patch model (SAM or SAM 2) to ``out`` (a .onnx path), atomically.

    ``meta`` is the checkpoint's metadata (its prompt policy is baked in); ``size`` the
    frame size S the export is meant for (recorded, and used for TensorRT profiles).
    Writes ``out`` and ``satsam.json`` beside it; both appear complete or not at all.
    The graph is checked with ``onnx.checker.check_model(full_check=True)`` and, with
    ``verify``, compared with PyTorch on a random batch through ONNX Runtime (CPU).
    Raises ValueError naming the problem when the graph fails the check.
    """
    import onnx
    import torch

    from ..model import encoder_input_size, has_presence

    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"ONNX export path must end in .onnx, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    e = encoder_input_size(sam)
    with_score = has_presence(sam)
    full_meta = _export_meta(meta, e, size, opset, source, with_score)
    module, reference = make_export_module(sam, full_meta.prompt_policy)
    device = next(sam.parameters()).device
    gen = torch.Generator().manual_seed(0)
    dummy = torch.randn(2, 3, e, e, generator=gen).to(device)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.tmp-", dir=str(out.parent)))
    try:
        raw = tmp / "raw.onnx"
        try:
            _torch_export(module, dummy, raw, opset, with_score)
        except (RuntimeError, ValueError) as exc:  # torch.onnx's errors derive from RuntimeError
            raise ValueError(f"torch.onnx.export failed for {source or 'model'} at opset {opset}: {exc}") from exc
        diff = score_diff = float("nan")
        measured = _max_abs_diff(reference, raw, dummy) if verify else None
        if measured is not None:
            diff, scale = measured[:2]
            tolerance = logit_tolerance(scale)
            if not diff <= tolerance:  # NaN fails too
                raise ValueError(
                    f"exported graph for {source or 'model'} disagrees with the PyTorch patch model: "
                    f"max |logit difference| {diff:.3g} > {tolerance:.3g}"
                )
            full_meta.provenance["export"]["verify_max_abs_diff"] = diff
            score_diff = _check_score_parity(measured, source)
            if with_score:
                full_meta.provenance["export"]["verify_max_score_diff"] = score_diff
        model = onnx.load(str(raw))
        _fix_output_shape(model, e // 4, with_score)
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = META_KEY, full_meta.to_json()
        model.doc_string = "satsam_ros patch model: pixel_values N x 3 x E x E -> logits N x E/4 x E/4" + (
            f", {ONNX_SCORE_OUTPUT} N (object-score logits)" if with_score else "")
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
    return OnnxExport(out, full_meta, diff, sha256_file(out), score_diff, with_score)


def _fix_output_shape(model, m: int, with_score: bool = False) -> None:
    """Declare the outputs as patches x m x m and (``with_score``) patches (the tracer
    leaves m symbolic)."""
    outputs = model.graph.output
    if len(outputs) != (2 if with_score else 1):
        raise ValueError(f"exported graph has outputs {[o.name for o in outputs]}, expected "
                         f"{[ONNX_OUTPUT, ONNX_SCORE_OUTPUT] if with_score else [ONNX_OUTPUT]}")
    dims = outputs[0].type.tensor_type.shape.dim
    if len(dims) != 3:
        raise ValueError(f"exported graph output has rank {len(dims)}, expected 3 (N x m x m)")
    dims[0].dim_param = BATCH_AXIS
    for d in (dims[1], dims[2]):
        d.dim_value = int(m)
    if with_score:
        score = outputs[1].type.tensor_type.shape.dim
        if len(score) != 1:
            raise ValueError(f"exported graph output {outputs[1].name} has rank {len(score)}, expected 1 (N)")
        score[0].dim_param = BATCH_AXIS


def _check_score_parity(measured: Tuple[Optional[float], ...], source: Optional[str]) -> float:
    """The object-score part of :func:`_max_abs_diff`'s measurement, checked with the
    logits' bound (:func:`satsam_ros.core.parity.logit_tolerance` of the largest |torch
    score logit|): its largest difference, NaN when the model has no score output.
    Raises ValueError when ONNX Runtime and PyTorch disagree."""
    score_diff, score_scale = (tuple(measured) + (None, None))[2:4]
    if score_diff is None:
        return float("nan")
    tolerance = logit_tolerance(score_scale)
    if not score_diff <= tolerance:  # NaN fails too
        raise ValueError(f"exported graph for {source or 'model'} disagrees with the PyTorch patch model: "
                         f"max |object-score logit difference| {score_diff:.3g} > {tolerance:.3g}")
    return float(score_diff)


def _max_abs_diff(module, onnx_path: Path, dummy) -> Optional[Tuple[Any, ...]]:
    """(largest |torch - onnxruntime| logit difference, largest |torch logit|, the same two
    for the object-score logits or None, None) on ``dummy``; a ``module`` with presence
    returns (logits, scores) and the graph has both outputs.

    ONNX Runtime's CPU provider; None when onnxruntime is not installed.
    """
    import numpy as np
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with torch.inference_mode():
        ref = module(dummy)
    refs = [t.float().cpu().numpy() for t in (ref if isinstance(ref, (tuple, list)) else (ref,))]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [ONNX_OUTPUT, ONNX_SCORE_OUTPUT][:len(refs)]
    got = sess.run(names, {ONNX_INPUT: dummy.cpu().numpy()})
    out: list = [float(np.max(np.abs(got[0] - refs[0]))), float(np.max(np.abs(refs[0])))]
    if len(refs) > 1:
        out += [float(np.max(np.abs(got[1] - refs[1]))), float(np.max(np.abs(refs[1])))]
    else:
        out += [None, None]
    return tuple(out)


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




def export_into_cache(spec: str, size: int = 512, encoder_size: Optional[int] = None,
                      opset: int = DEFAULT_OPSET) -> Path:
    """Export ``spec`` (on the CPU) into its ONNX cache entry and return its ``model.onnx``.

    The entry is :func:`satsam_ros.artefacts.onnx_cache_entry`, a directory per key so
    each sidecar ``satsam.json`` is unambiguous. Concurrent callers may both export;
    the first rename wins and the other's copy is discarded.
    """
    final = onnx_cache_entry(spec, size, encoder_size, opset)
    LOG.info("exporting %s to ONNX (S=%s, E=%s) into the cache %s", spec, size, encoder_size or "native", final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=str(final.parent)))
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
