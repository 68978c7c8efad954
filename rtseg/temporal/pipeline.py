"""What ``rtseg run --smooth / --flicker`` adds to the pipeline, and to its summary."""
from __future__ import annotations

from rtseg.temporal.metrics import FlickerMeter
from rtseg.temporal.smooth import Smoother


def temporal_parts(opts, num_classes: int, live: bool) -> tuple[Smoother | None, FlickerMeter | None]:
    """The smoother (postprocess thread) and the flicker meter (a sink) a run's options ask for.

    The meter is on with ``opts.flicker``, and by default whenever smoothing is: a smoothed run
    should show what it bought.
    """
    smoother = None
    if opts.smooth != "off":
        smoother = Smoother(opts.smooth, opts.smooth_alpha, num_classes, live, hold=opts.smooth_hold)
    on = opts.flicker if opts.flicker is not None else smoother is not None
    return smoother, (FlickerMeter(defer=opts.flicker_defer) if on else None)


def temporal_summary(opts, smoother: Smoother | None, meter: FlickerMeter | None) -> dict:
    """Summary fields: ``smooth`` (mode, alpha, hold, resets) and ``flicker`` (pairs, tc %, changed %)."""
    out: dict = {"smooth": {"mode": opts.smooth, "alpha": opts.smooth_alpha if smoother else None,
                            "hold": opts.smooth_hold if smoother else None,
                            "resets": smoother.resets if smoother else 0}}
    if meter is not None:
        out["flicker"] = meter.summary()
    return out
