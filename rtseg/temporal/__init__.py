"""Temporal behaviour of per-frame segmentation on video: how much the masks flicker
(:mod:`rtseg.temporal.metrics`) and smoothing that reduces it (:mod:`rtseg.temporal.smooth`)."""
from rtseg.temporal.metrics import FlickerMeter, changed_share, flicker, temporal_consistency
from rtseg.temporal.smooth import SMOOTH_MODES, Smoother

__all__ = ["FlickerMeter", "SMOOTH_MODES", "Smoother", "changed_share", "flicker", "temporal_consistency"]
