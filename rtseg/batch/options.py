"""The options of ``rtseg batch`` (one dataclass), checked when built."""
from __future__ import annotations

from dataclasses import dataclass, field

from rtseg.batch.crf import CRFParams
from rtseg.errors import RtsegError
from rtseg.pipeline.app import DEFAULT_MODEL
from rtseg.tta import TTAOptions
from rtseg.zoo import default_batch_model

OVERLAY_EXTS = ("jpg", "png")
# Frames per chunk: small enough that a long video spreads over many workers and the progress bar
# moves, large enough that seeking into a video and the per-chunk bookkeeping stay negligible.
DEFAULT_CHUNK_FRAMES = 16


@dataclass
class BatchOptions:
    """Everything ``rtseg batch`` accepts; see ``rtseg batch --help`` for each field.

    ``source`` is one source or a list of them (folders, globs, images, videos, ``.txt`` lists).
    ``overlap=None`` with a tile means a third of the tile's shorter side. ``backend=None`` and
    ``precision=None`` run the model as given (a torch model in torch, an exported file in its own
    runtime); either one set opens it as ``rtseg run`` does (``rtseg.resolve``), exporting
    once into the cache, with the accuracy gate for INT8. ``ray`` is None for a local run,
    ``"local"`` for a local Ray instance, else a cluster address.
    """

    source: str | list[str]
    out: str
    # The shipped batch model where it is installed: a run resumed from the CLI must pick the same.
    model: str = field(default_factory=lambda: default_batch_model(DEFAULT_MODEL))
    device: str | None = None
    batch_size: int = 4
    size: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    tile: tuple[int, int] | None = None
    overlap: int | None = None
    crf: CRFParams | None = None
    overlay: bool = True
    overlay_ext: str = "jpg"
    max_frames: int | None = None
    threads: int | None = None
    quiet: bool = False
    score_root: str | None = None
    score_split: str = "val"
    score_data: str = "camvid"
    backend: str | None = None
    precision: str | None = None
    calib: str | None = None
    engines_dir: str | None = None
    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    ray: str | None = None
    workers: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    tta: TTAOptions = field(init=False)

    def __post_init__(self):
        if self.batch_size < 1:
            raise RtsegError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.overlay_ext not in OVERLAY_EXTS:
            raise RtsegError(f"--overlay-ext must be one of {', '.join(OVERLAY_EXTS)}, got '{self.overlay_ext}'")
        if self.chunk_frames < 1:
            raise RtsegError(f"--chunk-frames must be >= 1, got {self.chunk_frames}")
        if self.workers < 1:
            raise RtsegError(f"--workers must be >= 1, got {self.workers}")
        if self.num_cpus < 0 or self.num_gpus < 0 or not (self.num_cpus or self.num_gpus):
            raise RtsegError("--num-cpus and --num-gpus must be >= 0, and a worker needs one of them")
        overlap = self.overlap
        if overlap is None:
            overlap = min(self.tile) // 3 if self.tile else 0
        self.tta = TTAOptions(self.size, tuple(self.scales), self.flip, self.tile, overlap)

    @property
    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)

    @property
    def exported(self) -> bool:
        """The model is opened through ``rtseg run``'s runtime selection (export, INT8 gate)."""
        return self.backend is not None or self.precision is not None

    def settings(self) -> dict:
        """What decides the masks; a resumed run must match it."""
        return {"model": self.model, **self.tta.to_dict(),
                "crf": self.crf.to_dict() if self.crf else None}


__all__ = ["BatchOptions", "DEFAULT_CHUNK_FRAMES", "OVERLAY_EXTS"]
