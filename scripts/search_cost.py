"""What each model-search candidate costs, measured interleaved in one run.

usage: python scripts/search_cost.py [--rounds 6] [--steps 3] [--threads 2] [--json OUT] NAME=FIT_ARGS ...

For every candidate (its ``satsam-train fit`` model arguments: ``--base``,
``--base-config``, ``--encoder-size``, ``--presence-weight``) the script builds the
model exactly as ``fit`` does, then alternates between the candidates round by round:

* a training step (batch 8 of 256 x 256 patches, DiceCE (+ the presence BCE where the
  candidate trains it), backward, AdamW, gradient clipping): seconds per step, median
  over the rounds;
* one S = 512 frame through ONNX Runtime (its 4 patches exported with the candidate's
  random weights, CPU provider): milliseconds per frame, median, beside the shipped
  ``builtin`` measured in the same rounds.

Costs move with the machine's load, so only ratios within one run compare. The
printed table gives, per candidate, the steps that fit into a budget of minutes
(``--budget-minutes``) at the measured step time: the search gives every candidate
the same wall-clock budget as a fixed number of steps.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_candidate(text: str):
    name, _, args = text.partition("=")
    if not name or not args:
        raise SystemExit(f"candidate {text!r}: expected NAME=FIT_ARGS")
    return name, shlex.split(args)


def fit_config(args, out: str):
    """A FitConfig from a candidate's fit arguments (the parser of satsam-train fit)."""
    from satsam_training.cli import make_parser
    from satsam_training.train_commands import _fit_config

    parsed = make_parser().parse_args(["fit", "--patches", "unused", "--out", out] + list(args))
    parsed.command_line = None
    return _fit_config(parsed, ["unused"], out=out)


class Candidate:
    def __init__(self, name: str, args, gen):
        import torch
        from satsam_training.fit import build_model, make_loss
        from satsam_training.validation import patch_loss

        from satsam_ros.model import has_presence, make_patch_module

        self.name = name
        cfg = fit_config(args, tempfile.mkdtemp(prefix="cost-"))
        self.cfg = cfg.resolved() if hasattr(cfg, "resolved") else cfg
        self.model, self.meta = build_model(self.cfg)
        self.e = int(self.meta.encoder_input_size)
        weight = self.cfg.presence_weight
        self.presence = float(weight if weight is not None else (1.0 if has_presence(self.model) else 0.0))
        self.module = make_patch_module(self.model, "full_box", with_score=self.presence > 0).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.01)
        self.loss_fn = make_loss("dicece")
        self.patch_loss = patch_loss
        self.x = torch.randn(8, 3, self.e, self.e, generator=gen)
        self.y = (torch.rand(8, 1, 256, 256, generator=gen) > 0.9).float()
        self.y[::2] = 0.0  # half the patches empty, as the presence BCE sees them
        self.step_s, self.frame_ms = [], []
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.backend = None

    def step(self):
        import torch

        t0 = time.perf_counter()
        loss, _, _ = self.patch_loss(self.module(self.x), self.y, self.loss_fn, self.presence)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        return time.perf_counter() - t0


def onnx_backend(model, meta, directory: Path, threads: int):
    from satsam_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from satsam_ros.deploy.onnx_export import export_patch_model

    model = model.eval()
    exported = export_patch_model(model, meta, directory / "model.onnx", size=512, source="search candidate")
    return OnnxRuntimeBackend(exported.path, "cpu", threads=threads)


def frame_ms(backend, batch, repeats: int = 2) -> float:
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend.infer_scored(batch)
        best.append(time.perf_counter() - t0)
    return 1000.0 * min(best)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", nargs="+", metavar="NAME=FIT_ARGS")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3, help="training steps per candidate per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-minutes", type=float, default=30.0)
    ap.add_argument("--json", default=None, help="write the measurements here")
    opts = ap.parse_args(argv)

    import numpy as np
    import torch

    from satsam_ros.model import load_model

    torch.set_num_threads(opts.threads)
    gen = torch.Generator().manual_seed(0)
    cands = [Candidate(name, args, gen) for name, args in map(parse_candidate, opts.candidates)]
    work = Path(tempfile.mkdtemp(prefix="search-cost-"))
    builtin, builtin_meta = load_model("builtin")
    ref = onnx_backend(builtin, builtin_meta, work / "builtin", opts.threads)
    ref_ms = []
    for c in cands:
        c.backend = onnx_backend(c.model, c.meta, work / c.name, opts.threads)
        c.model.train()
    rng = np.random.default_rng(0)
    for r in range(opts.rounds):
        for c in cands:
            times = [c.step() for _ in range(opts.steps)]
            if r:  # the first round warms up (allocator, oneDNN primitive caches)
                c.step_s.extend(times)
            batch = rng.standard_normal((4, 3, c.e, c.e)).astype(np.float32)
            ms = frame_ms(c.backend, batch)
            if r:
                c.frame_ms.append(ms)
            ref_batch = rng.standard_normal((4, 3, 256, 256)).astype(np.float32)
            ms = frame_ms(ref, ref_batch)
            if r:
                ref_ms.append(ms)
        print(f"round {r + 1}/{opts.rounds} done", file=sys.stderr)
    base = statistics.median(ref_ms)
    rows = []
    print(f"| candidate | parameters | E | presence | s/step (batch 8) | steps in {opts.budget_minutes:g} min | "
          f"ORT ms per S = 512 frame (4 patches) | x builtin ({base:.1f} ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in cands:
        s = statistics.median(c.step_s)
        ms = statistics.median(c.frame_ms)
        steps = int(opts.budget_minutes * 60.0 / s)
        rows.append({"name": c.name, "parameters": c.parameters, "encoder_size": c.e, "presence_weight": c.presence,
                     "seconds_per_step": s, "steps_in_budget": steps, "ort_ms_per_frame": ms,
                     "builtin_ort_ms_per_frame": base, "vs_builtin": ms / base})
        print(f"| {c.name} | {c.parameters / 1e6:.2f} M | {c.e} | {c.presence:g} | {s:.3f} | {steps} | {ms:.1f} | "
              f"{ms / base:.2f} |")
    if opts.json:
        Path(opts.json).write_text(json.dumps({"threads": opts.threads, "rounds": opts.rounds, "steps": opts.steps,
                                               "budget_minutes": opts.budget_minutes, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
