"""Seed refinement: dense CRF with the reference parameters (extra ``seedkit[crf]``)."""

from seedkit.refine.crf import crf_refine_seeds, dense_crf

__all__ = ["crf_refine_seeds", "dense_crf"]
