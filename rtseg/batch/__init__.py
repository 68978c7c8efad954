"""Offline inference for heavy models (``rtseg batch``): test-time augmentation and tiles over a
backend (``tta``), fully-connected CRF refinement (``crf``), inputs cut into chunks (``inputs``),
one chunk on one model replica (``work``), the resumable job writing masks, overlays and a summary
(``runner``), the same chunks on a Ray cluster (``ray_pool``), and scoring of written masks
(``score``)."""
from rtseg.batch.crf import CRFParams, dense_crf
from rtseg.batch.options import BatchOptions
from rtseg.batch.runner import format_summary, run_batch
from rtseg.batch.score import score_masks
from rtseg.tta import TTAOptions, predict_scores, scores_to_probs, tile_windows
from rtseg.pipeline.app import DEFAULT_MODEL

__all__ = ["BatchOptions", "CRFParams", "DEFAULT_MODEL", "TTAOptions", "dense_crf", "format_summary",
           "predict_scores", "run_batch", "score_masks", "scores_to_probs", "tile_windows"]
