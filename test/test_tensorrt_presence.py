"""TensorRT engines with the presence output (``object_score``), without TensorRT: both
execution APIs (8.x bindings, 10.x tensors) find the logits and the score by name or
rank, bind both, and the backend returns both per batch, split at the profile's
maximum like the logits (as test_tensorrt_backend.py does it, with fake modules that
have only the API of the version they pretend to be).
"""

import types

import numpy as np
import pytest
import torch

import satsam_ros.backends.tensorrt_backend as trtb


def fake_trt(version):
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    mod.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    mod.DataType = types.SimpleNamespace(FLOAT="float", HALF="half")
    return mod


class TensorEngine:
    """TensorRT >= 8.5: name-based I/O; ``names`` in engine order (the score may come first)."""

    def __init__(self, names=("pixel_values", "object_score", "logits"), ranks=None):
        self.names = list(names)
        self.ranks = ranks or {"pixel_values": 4, "logits": 3, "object_score": 1}
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "in" if name == "pixel_values" else "out"

    def get_tensor_dtype(self, name):
        return "half" if name == "object_score" else "float"

    def get_tensor_shape(self, name):
        return (-1,) + (64,) * (self.ranks[name] - 1)


class BindingEngine:
    """TensorRT 8.0 - 8.4: index-based bindings (score, input, logits)."""

    names = ["object_score", "pixel_values", "logits"]
    num_bindings = 3

    def binding_is_input(self, i):
        return i == 1

    def get_binding_name(self, i):
        return self.names[i]

    def get_binding_dtype(self, i):
        return "float"

    def get_binding_shape(self, i):
        return [(-1,), (-1, 3, 256, 256), (-1, 64, 64)][i]


class Context:
    """Records calls; derives output shapes from the input shape (score: N)."""

    def __init__(self):
        self.calls = []
        self.shape = None
        self.addresses = {}

    def set_input_shape(self, name, shape):
        self.calls.append(("set_input_shape", name, shape))
        self.shape = shape
        return True

    def set_binding_shape(self, index, shape):
        self.calls.append(("set_binding_shape", index, shape))
        self.shape = shape
        return True

    def get_tensor_shape(self, name):
        n = self.shape[0]
        return (n,) if name == "object_score" else (n, self.shape[2] // 4, self.shape[3] // 4)

    def get_binding_shape(self, index):
        return self.get_tensor_shape({0: "object_score", 2: "logits"}[index])

    def set_tensor_address(self, name, ptr):
        self.calls.append(("set_tensor_address", name, ptr))
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        self.calls.append(("execute_async_v3", stream))
        return True

    def execute_async_v2(self, bindings, stream_handle):
        self.calls.append(("execute_async_v2", list(bindings), stream_handle))
        return True


def test_tensor_api_finds_and_binds_both_outputs():
    runner = trtb.make_runner(fake_trt("10.3.0"), TensorEngine())
    assert (runner.io.input, runner.io.output, runner.io.score) == ("pixel_values", "logits", "object_score")
    assert (runner.io.output_dtype, runner.io.score_dtype) == ("float", "half")
    ctx = Context()
    assert runner.set_batch(ctx, (4, 3, 256, 256)) == (4, 64, 64)
    assert runner.score_shape(ctx) == (4,)
    runner.execute(ctx, 1000, 2000, 77, 3000)
    assert ctx.calls[1:] == [("set_tensor_address", "pixel_values", 1000), ("set_tensor_address", "logits", 2000),
                             ("set_tensor_address", "object_score", 3000), ("execute_async_v3", 77)]
    with pytest.raises(ValueError, match="object_score output needs a buffer"):
        runner.execute(Context(), 1000, 2000, 77)


def test_binding_api_finds_and_binds_both_outputs():
    runner = trtb.make_runner(fake_trt("8.2.1.8"), BindingEngine())
    io = runner.io
    assert (io.input_index, io.output_index, io.score_index, io.num_bindings) == (1, 2, 0, 3)
    ctx = Context()
    assert runner.set_batch(ctx, (16, 3, 256, 256)) == (16, 64, 64) and runner.score_shape(ctx) == (16,)
    runner.execute(ctx, 1000, 2000, 77, 3000)
    assert ctx.calls[-1] == ("execute_async_v2", [3000, 1000, 2000], 77)


def test_outputs_are_told_apart_by_rank_when_named_otherwise():
    engine = TensorEngine(("input", "mask", "presence"), {"input": 4, "mask": 3, "presence": 1})
    engine.get_tensor_mode = lambda name: "in" if name == "input" else "out"
    runner = trtb.make_runner(fake_trt("10.3.0"), engine)
    assert (runner.io.output, runner.io.score) == ("mask", "presence")
    one = trtb.make_runner(fake_trt("10.3.0"), TensorEngine(("pixel_values", "logits")))
    assert one.io.score is None  # an engine of a SAM export (or an older one): logits only
    with pytest.raises(ValueError, match="expected logits .N x m x m. and optionally object_score"):
        trtb.make_runner(fake_trt("10.3.0"), TensorEngine(("pixel_values", "a", "b"),
                                                          {"pixel_values": 4, "a": 3, "b": 3}))


class FakeStream:
    cuda_stream = 77

    def synchronize(self):
        pass


class FakeRunner(trtb.TensorApiRunner):
    """The tensor-API runner over a Context that writes known values into the buffers."""

    def __init__(self, with_score=True):
        self.io = trtb.IoNames("pixel_values", "logits", score="object_score" if with_score else None)
        self.batches = []

    def execute(self, context, input_ptr, output_ptr, stream_handle, score_ptr=None):
        super().execute(context, input_ptr, output_ptr, stream_handle, score_ptr)
        n = context.shape[0]
        self.batches.append(n)
        # logits: the batch index; score: 10 + its index within the whole call
        start = sum(self.batches[:-1])
        logits = torch.from_numpy(np.repeat(np.arange(start, start + n, dtype=np.float32), 64 * 64).reshape(n, 64, 64))
        _write(output_ptr, logits)
        if score_ptr is not None:
            _write(score_ptr, torch.arange(start, start + n, dtype=torch.float32) + 10.0)


_BUFFERS = {}


def _write(ptr, values):
    _BUFFERS[ptr].copy_(values)


def backend_on_the_cpu(with_score=True, max_batch=3):
    """A TensorRTBackend whose buffers are CPU tensors (no GPU, no TensorRT): its batching
    and both outputs, with FakeRunner standing in for the engine."""
    backend = object.__new__(trtb.TensorRTBackend)
    backend.path, backend.max_batch, backend.input_size, backend.low_res_size = "fake.engine", max_batch, 256, 64
    backend.device, backend.closed = "cuda", False
    backend._torch, backend._cuda, backend._stream = torch, "cpu", FakeStream()
    backend.runner, backend.context = FakeRunner(with_score), Context()
    backend.has_presence = with_score
    backend._out_dtype = backend._score_dtype = torch.float32
    real_empty = torch.empty

    def empty(shape, dtype, device):  # remember every buffer by its address
        t = real_empty(shape, dtype=dtype, device=device)
        _BUFFERS[t.data_ptr()] = t
        return t

    backend._empty = empty
    return backend


def test_backend_returns_logits_and_scores_across_split_batches(monkeypatch):
    backend = backend_on_the_cpu()
    monkeypatch.setattr(torch, "empty", backend._empty)
    batch = np.zeros((7, 3, 256, 256), np.float32)
    logits, scores = backend.infer_scored(batch)
    assert backend.runner.batches == [3, 3, 1]  # split at the profile's maximum
    assert logits.shape == (7, 64, 64) and scores.shape == (7,) and scores.dtype == np.float32
    np.testing.assert_array_equal(logits[:, 0, 0], np.arange(7))
    np.testing.assert_array_equal(scores, np.arange(7) + 10.0)
    backend.runner.batches = []
    np.testing.assert_array_equal(backend.infer(batch), logits)  # infer: the logits alone, score still bound
    assert [c[1] for c in backend.context.calls if c[0] == "set_tensor_address"][-1] == "object_score"


def test_backend_without_the_score_output(monkeypatch):
    backend = backend_on_the_cpu(with_score=False)
    monkeypatch.setattr(torch, "empty", backend._empty)
    logits, scores = backend.infer_scored(np.zeros((2, 3, 256, 256), np.float32))
    assert scores is None and logits.shape == (2, 64, 64)
    assert not any(c[0] == "set_tensor_address" and c[1] == "object_score" for c in backend.context.calls)
