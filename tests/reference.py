"""Plain float64 reference implementations, written independently of seedkit's code."""

from __future__ import annotations

import math

import numpy as np


def softmax_rows(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Softmax over the last axis of a 1-D array, ignoring invalid positions."""
    out = np.zeros_like(values, dtype=np.float64)
    keep = np.ones(values.shape, bool) if valid is None else valid.astype(bool)
    kept = values[keep].astype(np.float64)
    kept = np.exp(kept - kept.max())
    out[keep] = kept / kept.sum()
    return out


def pool(cams: np.ndarray, temperature: float, mask: np.ndarray | None = None) -> np.ndarray:
    batch, classes = cams.shape[:2]
    result = np.zeros((batch, classes))
    for b in range(batch):
        valid = None if mask is None else mask[b].reshape(-1)
        for c in range(classes):
            values = cams[b, c].reshape(-1).astype(np.float64)
            alpha = softmax_rows(values / temperature, valid)
            result[b, c] = float((alpha * values).sum())
    return result


def bce_with_logits(score: float, target: float) -> float:
    # log(1 + exp(-|x|)) formulation for stability
    return max(score, 0.0) - score * target + math.log1p(math.exp(-abs(score)))


def generation_loss(cams: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scores = pool(cams, temperature)
    per_image = [
        np.mean([bce_with_logits(scores[b, c], labels[b, c]) for c in range(labels.shape[1])])
        for b in range(labels.shape[0])
    ]
    return float(np.mean(per_image))


def kl_consistency(
    student: np.ndarray,
    teacher: np.ndarray,
    labels: np.ndarray,
    temperature: float,
    teacher_temperature: float,
) -> float:
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for c in range(student.shape[1]):
            if labels[b, c] == 0:
                continue
            p = softmax_rows(student[b, c].reshape(-1) / temperature, None)
            q = softmax_rows(teacher[b, c].reshape(-1) / teacher_temperature, None)
            terms = [
                qi * (math.log(qi) - math.log(pi)) for qi, pi in zip(q, p, strict=True) if qi > 0
            ]
            total += sum(terms)
            count += 1
    return total / max(count, 1)
