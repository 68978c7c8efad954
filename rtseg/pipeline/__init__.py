"""The real-time pipeline behind ``rtseg run``: sources -> stages on threads -> overlay -> sinks.

``run(RunOptions(source=...))`` is the whole application as a library call; ``Pipeline`` is the
threaded engine it drives, ``open_source`` the input side, ``Renderer`` the drawing.
"""
from rtseg.pipeline.app import DEFAULT_MODEL, RunOptions, run
from rtseg.pipeline.overlay import Renderer, Style
from rtseg.pipeline.runner import Pipeline, PipelineError
from rtseg.pipeline.sinks import SinkError
from rtseg.pipeline.sources import Frame, Source, SourceError, open_source
from rtseg.pipeline.stats import format_summary

__all__ = ["DEFAULT_MODEL", "RunOptions", "run", "Renderer", "Style", "Pipeline", "PipelineError",
           "SinkError", "Frame", "Source", "SourceError", "open_source", "format_summary"]
