"""The settings of one benchmark run (the ``satsam bench`` flags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ...core import tiling

FORMAT = 1
DEFAULT_SIZES = (512, 1024, 2048)
DEFAULT_MODES = ("fast", "faithful")


@dataclass
class Options:
    """Settings of one benchmark run (the ``satsam bench`` flags)."""

    models: Sequence[str] = ("shipped", "vit-b", "sam2-hiera-tiny")
    reference_model: Optional[str] = "vit-b"  # every other model's rows get their speed-up against its rows
    sizes: Sequence[int] = DEFAULT_SIZES
    backends: Optional[Sequence[str]] = None  # None: every backend available
    modes: Sequence[str] = DEFAULT_MODES
    device: str = "auto"
    frames: int = 10
    warmup: int = 2
    budget: float = 900.0  # seconds per (model, size) group; frames are cut to fit
    ablation: bool = False
    include_slow: bool = False
    native_encoder: Optional[int] = 256  # E of the native-resolution rows (None: no such rows)
    roi: bool = True
    roi_frames: int = 30
    roi_sizes: Sequence[int] = (512, 1024, 2048)
    threads: Optional[int] = None  # torch intra-op threads (None: usable cores)
    seed: int = 0
    command: str = ""
    node: bool = True  # the live-node section (needs the colcon-installed detect_node)
    node_rates: Sequence[Any] = (10.0, 20.0, "max")
    node_frames: int = 100
    node_size: int = 512  # S of the live node
    node_cascade: Optional[str] = None  # the live node's `cascade` (None: its default, auto)
    cascade_section: bool = True  # S = 512, full tiling and the cascade at each larger S (tools/bench/cascade.py)
    cascade: str = "auto"  # the cascade rows' setting (auto: the checkpoint's, else 512 first)
    cascade_margin: Optional[int] = None  # input pixels (None: the checkpoint's, else 32)
    cascade_max_patches: Optional[int] = None  # cascade rows and node: most S patches a frame runs (None: checkpoint's)
    cascade_data: Sequence[str] = ()  # COCO datasets whose split is timed and scored (none: synthetic frames)
    cascade_split: str = "test"
    cascade_limit: Optional[int] = None  # frames per dataset (None: all)
    cascade_frames: int = 8  # synthetic frames when no dataset is given (every second one empty)

    def validate(self) -> Options:
        from ...core.detector import MODES

        for s in self.sizes:
            tiling.check_size(s)
        for s in self.roi_sizes:
            tiling.check_size(s)
        for m in self.modes:
            if m not in MODES:
                raise ValueError(f"modes: each must be one of {', '.join(MODES)}; got {m!r}")
        if int(self.frames) < 1 or int(self.warmup) < 0 or int(self.roi_frames) < 2:
            raise ValueError("frames must be >= 1, warmup >= 0 and roi_frames >= 2")
        if float(self.budget) <= 0:
            raise ValueError(f"budget must be > 0 seconds; got {self.budget}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1; got {self.threads}")
        from ...core.detector import parse_cascade

        parse_cascade(self.cascade)
        if self.node_cascade is not None:
            parse_cascade(self.node_cascade)
        if self.cascade_margin is not None and int(self.cascade_margin) < 0:
            raise ValueError(f"cascade margin must be >= 0 pixels; got {self.cascade_margin}")
        if self.cascade_max_patches is not None and int(self.cascade_max_patches) < 0:
            raise ValueError(f"cascade max patches must be >= 0 (0 = no cap); got {self.cascade_max_patches}")
        if int(self.cascade_frames) < 1 or (self.cascade_limit is not None and int(self.cascade_limit) < 1):
            raise ValueError("cascade frames and the cascade limit must be >= 1")
        if self.node:
            self.node_options().validate()
        return self

    def node_options(self):
        from .node import NodeBenchOptions

        return NodeBenchOptions(rates=self.node_rates, frames=int(self.node_frames), size=int(self.node_size),
                                device=None if self.device == "auto" else self.device,
                                cascade=self.node_cascade, cascade_max_patches=self.cascade_max_patches)
