"""ONNX export of the patch model: graph shape, checker, metadata, sidecar, CLI."""

import json
import re

import numpy as np
import onnx
import pytest
from numerics import export_check_scale

from satsam_ros.artefacts import (
    BATCH_AXIS,
    META_KEY,
    ONNX_INPUT,
    ONNX_OUTPUT,
    meta_from_metadata,
    onnx_cache_key,
    read_onnx_meta,
    resolve_onnx_file,
)
from satsam_ros.core.parity import logit_tolerance
from satsam_ros.deploy.onnx_export import export_model
from satsam_ros.model import META_FILE, SatsamMeta


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return export_model("tiny", out, size=1024)


def test_graph_has_dynamic_patch_axis_and_fixed_patch_shape(tiny_export):
    model = onnx.load(str(tiny_export.path))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (ONNX_INPUT, ONNX_OUTPUT)
    in_dims = inp.type.tensor_type.shape.dim
    out_dims = out.type.tensor_type.shape.dim
    assert in_dims[0].dim_param == BATCH_AXIS and [d.dim_value for d in in_dims[1:]] == [3, 256, 256]
    assert out_dims[0].dim_param == BATCH_AXIS and [d.dim_value for d in out_dims[1:]] == [64, 64]
    assert model.opset_import[0].version == 17


def test_metadata_embedded_and_sidecar_agree(tiny_export):
    model = onnx.load(str(tiny_export.path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    embedded = json.loads(props[META_KEY])
    sidecar = json.loads((tiny_export.path.parent / META_FILE).read_text())
    assert embedded == sidecar
    meta = SatsamMeta.from_dict(embedded)
    assert meta.encoder_input_size == 256 and meta.patch_size == 256 and meta.prompt_policy == "full_box"
    assert meta.threshold == pytest.approx(0.65)
    assert meta.normalization["mean"] == pytest.approx([123.675, 116.28, 103.53])
    export = meta.provenance["export"]
    assert export["size"] == 1024 and export["patches_per_frame"] == 16 and export["opset"] == 17
    assert export["source_model"] == "tiny" and export["torch"].startswith("2.")
    assert "tiny random config" in meta.provenance["source"]
    # the export checked itself against PyTorch through onnxruntime, on its own random
    # batch (2 patches, torch seed 0): within the float32 bound of satsam_ros.core.parity,
    # 1e-3 of that batch's largest |logit| (measured 7.7e-5 against a bound of 1.8e-3;
    # the two engines sum in different orders, so a few 1e-6 to 1e-4, never 0, is expected)
    from satsam_ros.model import load_model

    scale = export_check_scale(load_model("tiny")[0])
    assert export["verify_max_abs_diff"] == tiny_export.max_abs_diff <= logit_tolerance(scale)


def test_read_meta_back(tiny_export):
    meta = read_onnx_meta(tiny_export.path.parent)  # the directory works as well as the file
    assert meta == tiny_export.meta


def test_meta_disagreeing_with_graph_is_refused(tiny_export):
    props = {META_KEY: tiny_export.meta.to_json()}
    with pytest.raises(ValueError, match="encoder input 256, the graph takes 1024"):
        meta_from_metadata(props, tiny_export.path, 1024)


def test_bad_output_name_and_ambiguous_directory(tmp_path):
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_model("tiny", tmp_path / "model.bin")
    (tmp_path / "a.onnx").write_bytes(b"")
    (tmp_path / "b.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="holds 2 .onnx files"):
        resolve_onnx_file(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such ONNX"):
        resolve_onnx_file(tmp_path / "missing.onnx")


def test_cache_key_depends_on_size_encoder_and_model_content(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    base = onnx_cache_key(str(ckpt), 512, None)
    assert onnx_cache_key(str(ckpt), 512, None) == base
    assert onnx_cache_key(str(ckpt), 1024, None) != base
    assert onnx_cache_key(str(ckpt), 512, 1024) != base
    (ckpt / "config.json").write_text('{"changed": 1}')
    assert onnx_cache_key(str(ckpt), 512, None) != base
    assert onnx_cache_key("tiny", 512, None) != onnx_cache_key("vit-b", 512, None)


def test_cli_export_onnx(tmp_path, capsys):
    from satsam_ros.tools.cli import main

    out = tmp_path / "cli" / "patch.onnx"
    assert main(["export", "onnx", "--model", "tiny", "--size", "512", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 patches per frame" in text and "onnx checker: ok" in text
    assert out.is_file() and (out.parent / META_FILE).is_file()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "the atomic export must not leave temporary files"
    with pytest.raises(SystemExit, match="no such directory"):
        main(["export", "onnx", "--model", str(tmp_path / "nope"), "--out", str(out)])


def test_export_batch_axis_really_is_dynamic(tiny_export):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny_export.path), providers=["CPUExecutionProvider"])
    for n in (1, 3, 16):
        x = np.zeros((n, 3, 256, 256), np.float32)
        assert sess.run(None, {ONNX_INPUT: x})[0].shape == (n, 64, 64)


def test_export_that_disagrees_with_torch_is_not_written(tmp_path, monkeypatch):
    """The bound is satsam_ros.core.parity's: 1e-3 x max(1, largest |torch logit|), so
    0.003 for logits up to 3: a difference of 0.5 is refused, one just under the bound
    is written."""
    import satsam_ros.deploy.onnx_export as export

    tolerance = logit_tolerance(3.0)
    assert f"{tolerance:.3g}" == "0.003"
    monkeypatch.setattr(export, "_max_abs_diff", lambda module, path, dummy: (0.5, 3.0))
    out = tmp_path / "bad" / "m.onnx"
    with pytest.raises(ValueError, match=r"disagrees with the PyTorch patch model: .* 0\.5 > " + re.escape("0.003")):
        export_model("tiny", out)
    assert list(out.parent.iterdir()) == [], "nothing may be left behind"
    monkeypatch.setattr(export, "_max_abs_diff", lambda module, path, dummy: (0.99 * tolerance, 3.0))
    assert export_model("tiny", out).max_abs_diff == pytest.approx(0.99 * tolerance)


def test_unexportable_opset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="torch.onnx.export failed for tiny at opset 13"):
        export_model("tiny", tmp_path / "m.onnx", opset=13)
    assert not (tmp_path / "m.onnx").exists()
