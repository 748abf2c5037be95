"""The background-threshold sweep, computed for every threshold in one pass."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seedkit.checks import check_num_labels, check_number
from seedkit.data import class_names_for
from seedkit.errors import InvalidValueError, NonFiniteError, ShapeError
from seedkit.metrics.confusion import check_mean_over, fp_fn_rates

__all__ = ["SweepResult", "ThresholdSweep", "as_seed_maps", "default_thresholds", "seed_labels"]


#: The most thresholds :func:`default_thresholds` returns (0.001 apart over [0, 1]).
MAX_THRESHOLDS = 1001

#: The most memory the sweep's count table, ``(T + 1) x K x K`` int64, may take (2 GiB):
#: 2,097 classes at the default 60 thresholds, far above VOC's 21 and COCO's 81.
MAX_TABLE_BYTES = 2**31


def default_thresholds(max_threshold: float = 0.59, step: float = 0.01) -> np.ndarray:
    """Return the thresholds ``0, step, 2*step, ..., max_threshold`` as exact decimals.

    Each value is the float64 nearest to the decimal ``i * step`` (``7 / 100``,
    not ``7 * 0.01``), as the ``for i in range(60): t = i / 100`` loops of
    psa / SEAM / MCTformer produce.

    Args:
        max_threshold: the last threshold (inclusive), ``>= 0``.
        step: the spacing, ``> 0``, giving at most 1001 thresholds.

    Returns:
        float64 array of thresholds.

    Example:
        >>> from seedkit.metrics import default_thresholds
        >>> t = default_thresholds()
        >>> len(t), t[7] == 0.07, t[-1]
        (60, np.True_, np.float64(0.59))
    """
    max_threshold = check_number("max_threshold", max_threshold, 0)
    step = check_number("step", step, 0, strict_minimum=True)
    count = math.floor(max_threshold / step + 1e-9) + 1
    if count > MAX_THRESHOLDS:
        # Every threshold costs a pass over every pixel (and a confusion matrix).
        raise InvalidValueError(
            "step",
            f"a spacing that gives at most {MAX_THRESHOLDS} thresholds up to "
            f"max_threshold={max_threshold}",
            step,
        )
    return np.array([round(i * step, 12) for i in range(count)], dtype=np.float64)


@dataclass
class SweepResult:
    """Outcome of a background-threshold sweep.

    All scores are percentages. Per class, ``iou + fp_rate + fn_rate = 100``
    (see :func:`seedkit.metrics.fp_fn_rates`) where the class's union is
    non-empty. The means run over the classes ``mean_over`` selects (see
    :class:`ThresholdSweep`): a class in the mean whose union is empty at a
    threshold counts 0 there, a class left out of the mean is NaN. When no
    class in the mean is empty, ``best_miou + fp_rate + fn_rate = 100``.

    Attributes:
        thresholds: the swept thresholds, float64, ascending.
        miou_curve: mIoU (percent) at every threshold.
        best_index: index of the best threshold (the lowest one on ties).
        confusion: confusion matrix ``[gt, pred]`` at the best threshold.
        iou: per-class IoU at the best threshold (percent, NaN if empty).
        fp_rate_per_class: per-class ``FP / (TP + FP + FN)`` (percent).
        fn_rate_per_class: per-class ``FN / (TP + FP + FN)`` (percent).
        fp_rate: mean of ``fp_rate_per_class`` over the classes in the mean.
        fn_rate: mean of ``fn_rate_per_class`` over the classes in the mean.
        num_images: number of images accumulated.
        warnings: messages about the sweep, e.g. a best threshold at an edge.
        class_names: display names, index = class id.
        confusions: confusion matrices at every threshold ``(T, K, K)``.
        mean_over: ``"present"`` or ``"all"``: which classes the means run over.
        mean_classes: how many classes the means divide by.
        zero_images: images whose seed maps were all zero.
    """

    thresholds: np.ndarray
    miou_curve: np.ndarray
    best_index: int
    confusion: np.ndarray
    iou: np.ndarray
    fp_rate_per_class: np.ndarray
    fn_rate_per_class: np.ndarray
    fp_rate: float
    fn_rate: float
    num_images: int
    warnings: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    confusions: np.ndarray | None = field(default=None, repr=False)
    mean_over: str = "present"
    mean_classes: int = 0
    zero_images: int = 0

    @property
    def best_threshold(self) -> float:
        """The threshold with the highest mIoU."""
        return float(self.thresholds[self.best_index])

    @property
    def best_miou(self) -> float:
        """The highest mIoU, in percent."""
        return float(self.miou_curve[self.best_index])

    @property
    def at_edge(self) -> bool:
        """Whether the best threshold is the largest of a sweep of several thresholds."""
        return self.thresholds.size > 1 and self.best_index == self.thresholds.size - 1

    @property
    def activation_state(self) -> str | None:
        """``"over"``, ``"balanced"`` or ``"under"`` from FP and FN at the best threshold.

        See :func:`seedkit.losses.activation_state`; ``None`` for perfect seeds.
        Read off a truncated curve when :attr:`at_edge` is true.
        """
        from seedkit.losses import activation_state

        if not (self.fp_rate > 0 or self.fn_rate > 0):
            return None
        return activation_state(self.fp_rate, self.fn_rate)

    @property
    def curve(self) -> list[tuple[float, float]]:
        """``[(threshold, mIoU percent), ...]``."""
        return [(float(t), float(m)) for t, m in zip(self.thresholds, self.miou_curve, strict=True)]

    def early_stopped_best(self) -> tuple[float, float]:
        """The best that MCTformer's ``evaluation.py --curve True`` prints, from this curve.

        MCTformer's loop starts at ``(threshold 0.0, mIoU 0.0)``, walks the
        thresholds upwards and stops at the first one whose mIoU is not strictly
        higher than the best so far; it prints the last improving threshold as
        "Best". On a curve with several local maxima that is the first one, not
        :attr:`best_threshold`. With ``mean_over="all"`` (MCTformer's mean over
        every class) and the sweep starting at 0.00, the pair equals the one
        MCTformer prints on the same seeds.

        Returns:
            ``(threshold, mIoU percent)``; ``(0.0, 0.0)`` when the first mIoU is
            not above 0 (MCTformer's initial values).

        Example:
            >>> import numpy as np
            >>> from seedkit.metrics import ThresholdSweep
            >>> sweep = ThresholdSweep(num_labels=2, thresholds=[0.0, 0.1, 0.2, 0.3, 0.4])
            >>> seed = np.array([[[0.45, 0.05, 0.25, 0.35, 0.15]]], np.float32)
            >>> sweep.update(seed, np.array([[1, 0, 0, 0, 1]]))
            >>> result = sweep.result()
            >>> [round(miou, 1) for _, miou in result.curve]  # a dip at 0.2, the best at 0.4
            [20.0, 41.7, 25.0, 41.7, 62.5]
            >>> threshold, miou = result.early_stopped_best()  # MCTformer stops at 0.2
            >>> threshold, round(miou, 1), result.best_threshold, round(result.best_miou, 1)
            (0.1, 41.7, 0.4, 62.5)
        """
        best_threshold, best_miou = 0.0, 0.0
        for threshold, miou in self.curve:
            if not miou > best_miou:  # a NaN mean stops the walk too
                break
            best_threshold, best_miou = threshold, miou
        return best_threshold, best_miou

    def to_json_dict(self) -> dict[str, Any]:
        """Return the ``seedkit eval-seeds --json`` document (NaN becomes ``null``).

        Keys: ``best`` (``threshold``, ``miou``, ``iou``), ``curve``,
        ``fp_rate`` and ``fn_rate`` (means, percent), ``mean_over`` (``"all"``
        or ``"present"``: the classes every mean runs over) and ``mean_classes``
        (how many), ``fp_rate_per_class``, ``fn_rate_per_class``,
        ``fp_pixels``, ``fn_pixels``, ``class_names``, ``num_images``,
        ``zero_images``, ``warnings`` and ``activation`` (``state``: a reading of FP
        against FN, not a tuned recommendation, and ``at_edge``: the best threshold
        is the sweep's largest, so the state was read off a truncated curve).
        """
        cm = self.confusion
        tp = np.diag(cm)
        return {
            "best": {
                "threshold": _round(self.best_threshold),
                "miou": _num(self.best_miou),
                "iou": _nums(self.iou),
            },
            "curve": [[_round(t), _num(m)] for t, m in self.curve],
            "fp_rate": _num(self.fp_rate),
            "fn_rate": _num(self.fn_rate),
            "mean_over": self.mean_over,
            "mean_classes": int(self.mean_classes),
            "fp_rate_per_class": _nums(self.fp_rate_per_class),
            "fn_rate_per_class": _nums(self.fn_rate_per_class),
            "fp_pixels": [int(v) for v in cm.sum(axis=0) - tp],
            "fn_pixels": [int(v) for v in cm.sum(axis=1) - tp],
            "class_names": list(self.class_names),
            "num_images": int(self.num_images),
            "zero_images": int(self.zero_images),
            "warnings": list(self.warnings),
            "activation": {
                "state": self.activation_state,
                "at_edge": self.at_edge,
            },
        }

    def format_table(self) -> str:
        """Return a readable report: per-class table at the best threshold and the curve."""
        lines = [f"{'class':<16}{'IoU':>8}{'FP':>8}{'FN':>8}"]
        for index, name in enumerate(self.class_names):
            lines.append(
                f"{name:<16}{_fmt(self.iou[index]):>8}{_fmt(self.fp_rate_per_class[index]):>8}"
                f"{_fmt(self.fn_rate_per_class[index]):>8}"
            )
        lines.append(
            f"{'mean':<16}{_fmt(self.best_miou):>8}{_fmt(self.fp_rate):>8}{_fmt(self.fn_rate):>8}"
        )
        lines.append(f"(mean {self.mean_description()})")
        lines.append("")
        lines.append("threshold  mIoU")
        row: list[str] = []
        for t, m in self.curve:
            row.append(f"{t:.2f} {_fmt(m):>6}")
            if len(row) == 6:
                lines.append("   ".join(row))
                row = []
        if row:
            lines.append("   ".join(row))
        lines.append("")
        lines.append(
            f"best threshold {self.best_threshold:.2f}: mIoU {_fmt(self.best_miou)} "
            f"(FP {_fmt(self.fp_rate)}, FN {_fmt(self.fn_rate)}; {self.num_images} images; "
            f"mean over {self.mean_over})"
        )
        if self.activation_state is not None:
            note = (
                " (read at the edge of the sweep: widen --max-threshold first)"
                if self.at_edge
                else ""
            )
            lines.append(
                f"activation: {self.activation_state}-activated seeds{note} "
                f"(FP {_fmt(self.fp_rate)} against FN {_fmt(self.fn_rate)}; a reading, "
                "not a temperature recommendation: the family presets are the measured ones)"
            )
        return "\n".join(lines)

    def mean_description(self) -> str:
        """Say in words which classes the means run over, e.g. for a table footer."""
        total = len(self.iou)
        if self.mean_over == "all":
            return (
                f"over all {total} classes, a class with no pixel counting 0: "
                "--mean-over all, as SEAM / MCTformer / psa"
            )
        return (
            f"over the {self.mean_classes} of {total} classes present in the ground truth "
            "or the prediction: --mean-over present, as IRN"
        )


def _round(value: float) -> float:
    return round(float(value), 10)


def _num(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _nums(values: np.ndarray) -> list[float | None]:
    return [_num(v) for v in values]


def _fmt(value: float) -> str:
    return "-" if math.isnan(float(value)) else f"{float(value):.2f}"


class ThresholdSweep:
    """Accumulate seed maps and ground truth; score every background threshold at once.

    The prediction at threshold ``t`` is ``argmax([t, map_1, ..., map_C])`` (:func:`seed_labels`)
    with ties going to the lower index (background wins a tie), exactly as the
    evaluation scripts of psa / SEAM / MCTformer compute it, including their
    arithmetic: maps and threshold are compared in float32 (they copy the maps
    into a float32 array whose background plane holds the threshold).

    One pass suffices because a pixel's prediction as a function of ``t`` is
    the foreground argmax ``k*`` (lowest index on ties) while
    ``v* = max_c map_c > t`` and background once ``v* <= t``. So every pixel
    adds one count to a histogram over (number of thresholds below ``v*``,
    ground truth, ``k*``), and a cumulative sum over thresholds yields the
    confusion matrix of every threshold; the result is identical to running
    the argmax once per threshold.

    Which classes an mIoU averages over (``mean_over``):

    - ``"all"``: every one of the ``num_labels``, a class with no pixel in the
      ground truth or the prediction counting 0, as SEAM's and MCTformer's
      ``evaluation.py`` (and psa's numbers) compute it;
    - ``"present"``: the classes with pixels in the ground truth or in the
      prediction, as IRN's ``nanmean``. The set is fixed for the whole sweep:
      a class counts at every threshold once it occurs in the ground truth or
      is predicted at *some* threshold. A class that the seeds hold but no
      mask has (labels and masks disagree) is predicted at low thresholds
      only; it then counts 0 at every threshold instead of dropping out of the
      mean where it stops being predicted, which would raise the mean there
      and move the best threshold. Where every predicted class is in the
      ground truth, the curve equals IRN's ``nanmean`` at every threshold.

    On full VOC (every class present) both give the same numbers.

    Args:
        num_labels: number of mask labels, background included (21 for VOC, the
            default; ``num_classes + 1`` for a CAM model of ``num_classes``).
        thresholds: explicit ascending thresholds; by default
            :func:`default_thresholds` of ``max_threshold`` and ``step``.
        max_threshold: the last default threshold (0.59 like the reference code).
        step: the default threshold spacing.
        ignore_index: ground-truth value to ignore.
        class_names: display names (``num_labels`` or ``num_labels - 1``
            foreground names); VOC names by default when ``num_labels == 21``.
        mean_over: ``"present"`` or ``"all"`` (see above).
        num_classes: deprecated name of ``num_labels`` (the same count, background
            included; a ``DeprecationWarning`` says so).

    Example:
        >>> import numpy as np
        >>> from seedkit.metrics import ThresholdSweep
        >>> sweep = ThresholdSweep(num_labels=3)
        >>> maps = np.zeros((2, 2, 2), np.float32); maps[0, 0] = 0.8; maps[1, 1, 1] = 0.4
        >>> sweep.update(maps, np.array([[1, 1], [0, 2]]))
        >>> result = sweep.result()
        >>> round(result.best_threshold, 2), round(result.best_miou, 1)
        (0.0, 100.0)
        >>> round(dict(result.curve)[0.5], 1)  # class 2 (0.4) falls to background
        50.0
    """

    def __init__(
        self,
        num_labels: int | None = None,
        thresholds: Sequence[float] | np.ndarray | None = None,
        max_threshold: float = 0.59,
        step: float = 0.01,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        mean_over: str = "present",
        *,
        num_classes: int | None = None,
    ) -> None:
        self.num_labels = check_num_labels(
            "seedkit.metrics.ThresholdSweep", num_labels, num_classes, default=21
        )
        self.mean_over = check_mean_over(mean_over)
        if thresholds is None:
            self.thresholds = default_thresholds(max_threshold, step)
        else:
            values = np.asarray(thresholds, dtype=np.float64)
            if values.ndim != 1 or values.size == 0:
                raise ShapeError("thresholds", "(T,) with T >= 1", values.shape)
            if not np.isfinite(values).all():
                raise InvalidValueError("thresholds", "finite values", values.tolist())
            if values.size > 1 and not (np.diff(values) > 0).all():
                raise InvalidValueError("thresholds", "strictly increasing values", values.tolist())
            self.thresholds = values
        self._thresholds32 = self.thresholds.astype(np.float32)
        table_bytes = (self.thresholds.size + 1) * self.num_labels**2 * 8
        if table_bytes > MAX_TABLE_BYTES:
            most = math.isqrt(MAX_TABLE_BYTES // (8 * (self.thresholds.size + 1)))
            raise InvalidValueError(
                "num_labels",
                f"at most {most} labels for {self.thresholds.size} thresholds (the sweep "
                f"counts (thresholds + 1) x labels x labels pixel pairs in memory, at most "
                f"{MAX_TABLE_BYTES / 2**30:g} GiB; {table_bytes / 2**30:.3g} GiB here)",
                self.num_labels,
            )
        self.ignore_index = int(ignore_index)
        if class_names is not None and len(class_names) not in (
            self.num_labels,
            self.num_labels - 1,
        ):
            raise InvalidValueError(
                "class_names",
                f"{self.num_labels} or {self.num_labels - 1} names",
                f"{len(class_names)} names",
            )
        self.class_names = class_names_for(self.num_labels - 1, class_names)
        self.reset()

    @property
    def num_classes(self) -> int:
        """Deprecated name of :attr:`num_labels` (the same count, background included)."""
        warnings.warn(
            "ThresholdSweep.num_classes is deprecated: it is num_labels (the same count, "
            "background included)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.num_labels

    def reset(self) -> None:
        """Forget every accumulated image."""
        size = self.thresholds.size + 1
        self._hist = np.zeros((size, self.num_labels, self.num_labels), dtype=np.int64)
        self.num_images = 0
        self.zero_images = 0

    def update(self, cam_stack: np.ndarray, gt: np.ndarray) -> None:
        """Add one image given the maps of all foreground classes.

        Args:
            cam_stack: one map per foreground class, zeros for absent classes
                (numpy array or torch tensor; compared in float32).
            gt: ground-truth class ids, ``ignore_index`` to ignore.

        Shape:
            - cam_stack: :math:`(K - 1, H, W)`
            - gt: :math:`(H, W)`
        """
        if hasattr(cam_stack, "detach"):
            cam_stack = cam_stack.detach().cpu().numpy()  # type: ignore[union-attr]
        stack = np.asarray(cam_stack)
        expected = self.num_labels - 1
        if stack.ndim != 3 or stack.shape[0] != expected:
            raise ShapeError("cam_stack", f"({expected}, H, W)", stack.shape)
        stack = stack.astype(np.float32, copy=False)
        _check_finite("cam_stack", stack)
        value, klass = _max_argmax(list(stack), list(range(expected)))
        self._accumulate(value, klass, gt, stack.shape[1:])

    def update_maps(self, maps: Mapping[int, np.ndarray], gt: np.ndarray) -> None:
        """Add one image given only the maps of present classes (psa dict form).

        Equivalent to :meth:`update` with zeros for the classes not in
        ``maps``, without building the full stack.

        Args:
            maps: ``{foreground class index (0-based): HxW map}``.
            gt: ground-truth class ids.
        """
        gt = np.asarray(gt)
        if gt.ndim != 2:
            raise ShapeError("gt", "(H, W)", gt.shape)
        expected = self.num_labels - 1
        keys = sorted(int(k) for k in maps)
        for key in keys:
            if not 0 <= key < expected:
                raise InvalidValueError("maps", f"class indices in [0, {expected})", key)
        shape = gt.shape
        arrays = []
        for key in keys:
            array = np.asarray(maps[key], dtype=np.float32)
            if array.shape != shape:
                raise ShapeError(f"maps[{key}]", f"the ground-truth size {shape}", array.shape)
            _check_finite(f"maps[{key}]", array)
            arrays.append(array)
        absent = [c for c in range(expected) if c not in set(keys)]
        if not keys:
            value = np.zeros(shape, np.float32)
            klass = np.ones(shape, np.intp)
        else:
            value, klass = _max_argmax(arrays, keys)
            if absent:
                first_absent = absent[0] + 1
                # The zero maps of absent classes win where the present maximum
                # is negative, and tie (lowest index wins) where it is zero.
                negative = value < 0
                if negative.any():
                    value = np.where(negative, np.float32(0.0), value)
                    np.copyto(klass, first_absent, where=negative)
                zero = value == 0
                if zero.any():
                    np.copyto(klass, np.minimum(klass, first_absent), where=zero)
        self._accumulate(value, klass, gt, shape)

    def _accumulate(
        self, value: np.ndarray, klass: np.ndarray, gt: np.ndarray, shape: tuple[int, ...]
    ) -> None:
        gt = np.asarray(gt)
        if gt.shape != tuple(shape):
            raise ShapeError("gt", f"the map size {tuple(shape)}", gt.shape)
        if gt.dtype.kind not in "iub":
            raise InvalidValueError("gt", "an integer class-id array", str(gt.dtype))
        k = self.num_labels
        if gt.dtype == np.uint8:
            counts = np.bincount(gt.ravel(), minlength=256)
            ids = np.nonzero(counts)[0]
        else:
            ids = np.unique(gt)
        bad = ids[((ids < 0) | (ids >= k)) & (ids != self.ignore_index)]
        if bad.size:
            raise InvalidValueError(
                "gt", f"class ids in [0, {k}) or {self.ignore_index}", f"ids {bad[:5].tolist()}"
            )
        if not (value > 0).any():  # nothing can be foreground at any threshold >= 0
            self.zero_images += 1
        # Ignored pixels go to an extra ground-truth row K that is dropped below.
        g = gt.astype(np.intp)
        if self.ignore_index in ids:
            g[gt == self.ignore_index] = k
        # Number of thresholds strictly below v*: foreground at threshold j iff j < bin.
        bins = np.searchsorted(self._thresholds32, value.ravel(), side="left")
        flat = (bins * (k + 1) + g.ravel()) * k + klass.ravel()
        size = self._hist.shape[0] * (k + 1) * k
        counts = np.bincount(flat, minlength=size).reshape(self._hist.shape[0], k + 1, k)
        self._hist += counts[:, :k, :]
        self.num_images += 1

    def confusion_matrices(self) -> np.ndarray:
        """Return the confusion matrix ``[gt, pred]`` at every threshold, ``(T, K, K)``."""
        hist = self._hist
        # above[j] = counts of pixels whose bin > j, i.e. foreground at threshold j.
        from_top = np.cumsum(hist[::-1], axis=0)[::-1]
        above = from_top[1:].copy()
        per_gt = hist.sum(axis=(0, 2))
        above[:, :, 0] = per_gt[None, :] - above[:, :, 1:].sum(axis=2)
        return above

    def to_json_dict(self) -> dict[str, Any]:
        """Shortcut for ``self.result().to_json_dict()``."""
        return self.result().to_json_dict()

    def result(self) -> SweepResult:
        """Score every threshold and pick the best (lowest threshold on ties)."""
        if self.num_images == 0:
            raise InvalidValueError("ThresholdSweep", "at least one update before result()", "none")
        confusions = self.confusions_checked()
        tp = np.diagonal(confusions, axis1=1, axis2=2).astype(np.float64)
        union = confusions.sum(axis=1) + confusions.sum(axis=2) - tp  # (T, K)
        seen = (union > 0).any(axis=0)
        counted = seen if self.mean_over == "present" else np.ones(self.num_labels, bool)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.where(union > 0, tp / union, 0.0)
        scores[:, ~counted] = np.nan
        curve = np.array([row[counted].mean() for row in scores]) * 100.0
        best = int(np.argmax(curve))  # the first maximum: the lowest threshold on ties
        cm = confusions[best]
        fp, fn = fp_fn_rates(cm)
        fp, fn = np.nan_to_num(fp), np.nan_to_num(fn)
        fp[~counted] = np.nan
        fn[~counted] = np.nan
        return SweepResult(
            thresholds=self.thresholds.copy(),
            miou_curve=curve,
            best_index=best,
            confusion=cm,
            iou=scores[best] * 100.0,
            fp_rate_per_class=fp * 100.0,
            fn_rate_per_class=fn * 100.0,
            fp_rate=float(fp[counted].mean() * 100.0),
            fn_rate=float(fn[counted].mean() * 100.0),
            num_images=self.num_images,
            warnings=self._warnings(curve, best, seen),
            class_names=list(self.class_names),
            confusions=confusions,
            mean_over=self.mean_over,
            mean_classes=int(counted.sum()),
            zero_images=self.zero_images,
        )

    def confusions_checked(self) -> np.ndarray:
        """Return :meth:`confusion_matrices`, raising when no pixel was scored."""
        confusions = self.confusion_matrices()
        if confusions[0].sum() == 0:
            raise InvalidValueError(
                "ground truth", "at least one pixel that is not ignored", "none"
            )
        return confusions

    def _warnings(self, curve: np.ndarray, best: int, seen: np.ndarray) -> list[str]:
        warnings: list[str] = []
        thresholds = self.thresholds
        if self.zero_images == self.num_images:
            warnings.append(
                f"every seed map of the {self.num_images} images is zero: nothing is "
                "foreground at any threshold, so these seeds are useless (did the model "
                "predict no positive activation, or were the maps written before training?)"
            )
        elif thresholds.size > 1:
            if best == thresholds.size - 1:
                warnings.append(
                    f"the best threshold {thresholds[best]:.2f} is the largest of the sweep: "
                    "the maps look over-activated and a larger threshold may score higher; "
                    "widen the sweep (--max-threshold, e.g. 0.99)"
                )
            elif best == 0 and thresholds[0] > 0:
                warnings.append(
                    f"the best threshold {thresholds[0]:.2f} is the smallest of the sweep: "
                    "a smaller threshold may score higher"
                )
            elif best == 0 and curve[1] < curve[0]:
                warnings.append(
                    f"the best threshold {thresholds[0]:.2f} is the lowest of the sweep "
                    f"({thresholds[1]:.2f} already scores less): the seeds score best where any "
                    "activation above zero counts as foreground, so they say little about "
                    "where objects end (an untrained model, or CAMs that collapsed?)"
                )
        gt_pixels = self._hist.sum(axis=(0, 2))
        stray = [c for c in range(1, self.num_labels) if gt_pixels[c] == 0 and seen[c]]
        if stray:
            names = ", ".join(self.class_names[c] for c in stray[:5])
            warnings.append(
                f"{len(stray)} class(es) ({names}) are predicted but absent from every "
                "ground-truth mask (do the image labels and the masks disagree?); they count "
                "as IoU 0 at every threshold"
            )
        if self.mean_over == "all" and not seen.all():
            missing = int((~seen).sum())
            warnings.append(
                f"{missing} of {self.num_labels} classes have no pixel in the ground truth "
                "or the prediction: the mean over all classes counts them as IoU 0, as "
                "SEAM / MCTformer / psa do; --mean-over present leaves them out"
            )
        return warnings


def as_seed_maps(
    maps: Mapping[int, np.ndarray] | np.ndarray, argument: str = "maps"
) -> dict[int, np.ndarray]:
    """Return seed maps as a psa dict ``{fg class index: float32 HxW map}``.

    Args:
        maps: a psa dict, or a ``(C_fg, H, W)`` stack whose all-zero maps
            (absent classes) are left out.
        argument: the name a shape error gives the maps.

    Returns:
        The dict, keys as given.
    """
    if isinstance(maps, Mapping):
        return {int(k): np.asarray(v, dtype=np.float32) for k, v in maps.items()}
    stack = np.asarray(maps, dtype=np.float32)
    if stack.ndim != 3:
        raise ShapeError(argument, "(C_fg, H, W) or a dict {class_index: HxW map}", stack.shape)
    return {index: stack[index] for index in range(stack.shape[0]) if np.any(stack[index] != 0)}


def seed_labels(
    maps: Mapping[int, np.ndarray] | np.ndarray, threshold: float, shape: tuple[int, int]
) -> np.ndarray:
    """Return the seed label map ``argmax([t, map_1, ..., map_C])`` (background wins ties).

    The one seeds-to-labels rule of seedkit: :class:`ThresholdSweep` scores it
    at every threshold at once, the ``"threshold"`` pseudo masks and the
    overlays of :mod:`seedkit.viz` draw it.

    Args:
        maps: psa dict ``{fg class index: HxW}`` or a ``(C_fg, H, W)`` stack.
        threshold: background threshold ``t``.
        shape: ``(H, W)``, used when ``maps`` is empty.

    Returns:
        ``(H, W)`` int32 class ids (0 = background, ``c + 1`` for fg index ``c``).

    Example:
        >>> import numpy as np
        >>> from seedkit.metrics import seed_labels
        >>> seed_labels({2: np.array([[0.2, 0.5]])}, 0.3, (1, 2)).tolist()
        [[0, 3]]
    """
    maps = as_seed_maps(maps)
    keys = sorted(maps)
    label = np.zeros(shape, dtype=np.int32)
    if not keys:
        return label
    stack = np.stack([maps[k] for k in keys]).astype(np.float32)
    winner = stack.argmax(axis=0)
    foreground = stack.max(axis=0) > np.float32(threshold)
    label[foreground] = np.asarray(keys, dtype=np.int32)[winner[foreground]] + 1
    return label


def _max_argmax(arrays: list[np.ndarray], keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(max, 1 + key of the argmax)`` over maps given in ascending key order.

    A strict ``>`` keeps the earlier (lower) key on ties, as ``np.argmax`` does,
    and costs one comparison per map instead of a strided argmax over a stack.
    """
    value = arrays[0].copy()
    klass = np.full(value.shape, keys[0] + 1, dtype=np.intp)
    for array, key in zip(arrays[1:], keys[1:], strict=True):
        greater = array > value
        np.copyto(value, array, where=greater)
        np.copyto(klass, key + 1, where=greater)
    return value, klass


def _check_finite(argument: str, array: np.ndarray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        raise NonFiniteError(argument, int((~finite).sum()), array.size)
