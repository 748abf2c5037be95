"""Training and inference transforms of the reference WSSS codebases, on numpy arrays.

:class:`TrainTransform` follows psa / IRN / SEAM: random resize of the long side,
horizontal flip, colour jitter, ImageNet normalisation, then a random crop that
pads small images (image with 0 after normalisation, i.e. the mean colour; mask
with 255). It also returns a validity mask that is ``False`` on padding, for the
``mask`` argument of seedkit's losses. All randomness comes from a
:class:`numpy.random.Generator` passed in, so a sample is reproducible from its
seed regardless of worker count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageEnhance

from seedkit.data.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from seedkit.errors import InvalidValueError, ShapeError

__all__ = ["InferenceTransform", "TrainTransform", "normalize_image"]

Sample = dict[str, np.ndarray | None]


def normalize_image(
    image: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Scale a ``uint8`` RGB image to [0, 1] and normalise it per channel.

    Args:
        image: ``(H, W, 3)`` ``uint8`` image.
        mean: Channel means.
        std: Channel standard deviations.

    Returns:
        ``float32`` array ``(3, H, W)``.

    Example:
        >>> import numpy as np
        >>> out = normalize_image(np.full((2, 3, 3), 255, np.uint8), (0.5,) * 3, (0.5,) * 3)
        >>> out.shape, float(out.max())
        ((3, 2, 3), 1.0)
    """
    _check_image(image)
    scaled = image.astype(np.float32) / 255.0
    scaled -= np.asarray(mean, dtype=np.float32)
    scaled /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(scaled.transpose(2, 0, 1))


def _check_image(image: object) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ShapeError("image", "(H, W, 3) uint8 array", shape)
    if image.dtype != np.uint8:
        raise InvalidValueError("image", "dtype uint8", str(image.dtype))


def _check_mask(mask: np.ndarray | None, image: np.ndarray) -> None:
    if mask is not None and (mask.ndim != 2 or mask.shape != image.shape[:2]):
        raise ShapeError("mask", f"(H, W) = {image.shape[:2]} to match the image", mask.shape)


class InferenceTransform:
    """Normalise only (no resizing, no cropping).

    Args:
        mean: Channel means.
        std: Channel standard deviations.

    Example:
        >>> import numpy as np
        >>> out = InferenceTransform()(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.uint8))
        >>> out["image"].shape, out["mask"].shape, bool(out["valid"].all())
        ((3, 4, 5), (4, 5), True)
    """

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> Sample:
        """Apply the transform.

        Args:
            image: ``(H, W, 3)`` ``uint8`` image.
            mask: Optional ``(H, W)`` class-id mask.
            rng: Unused; accepted so both transforms share one call signature.

        Returns:
            ``{"image": float32 (3, H, W), "mask": uint8 (H, W) or None, "valid": bool (H, W)}``.
        """
        _check_image(image)
        _check_mask(mask, image)
        return {
            "image": normalize_image(image, self.mean, self.std),
            "mask": None if mask is None else np.ascontiguousarray(mask, dtype=np.uint8),
            "valid": np.ones(image.shape[:2], dtype=bool),
        }

    def __repr__(self) -> str:
        return f"InferenceTransform(mean={self.mean}, std={self.std})"


class TrainTransform:
    """Random resize (long side), flip, colour jitter, normalise and random crop.

    The order and the crop follow psa's ``RandomResizeLong`` / ``RandomCrop`` and
    IRN's ``random_resize_long`` / ``random_crop``: the crop window and the image
    are placed at random offsets inside a ``crop_size`` canvas, so images smaller
    than the crop are padded (image 0 after normalisation, mask 255, valid
    ``False``). The references use ``resize_long=(448, 768)``, crop 448 (psa,
    SEAM) and ``(320, 640)``, crop 512 (IRN); MCTformer uses 224 crops.

    Args:
        crop_size: Output size, an int (square) or ``(height, width)``.
        resize_long: ``(low, high)`` range of the long side after resizing,
            sampled uniformly as an integer; ``None`` keeps the size.
        flip: Random horizontal flip with probability 0.5.
        color_jitter: ``(brightness, contrast, saturation, hue)`` strengths as in
            torchvision's ``ColorJitter`` (factors in ``[1 - s, 1 + s]``, hue
            shift in ``[-h, h]`` of a full turn, applied in random order);
            ``None`` or all zeros disables it. psa uses ``(0.3, 0.3, 0.3, 0.1)``.
        normalize: Normalise with ``mean``/``std``. ``False`` returns the crop
            as ``float32`` in [0, 255] (padding 0), useful for inspection.
        mean: Channel means.
        std: Channel standard deviations.

    Example:
        >>> import numpy as np
        >>> t = TrainTransform(32, resize_long=(20, 40))
        >>> out = t(np.zeros((30, 40, 3), np.uint8), np.ones((30, 40), np.uint8),
        ...         rng=np.random.default_rng(0))
        >>> out["image"].shape, out["mask"].shape, out["valid"].shape
        ((3, 32, 32), (32, 32), (32, 32))
        >>> bool((out["mask"][~out["valid"]] == 255).all())
        True
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        resize_long: Sequence[int] | None = None,
        flip: bool = True,
        color_jitter: Sequence[float] | None = (0.3, 0.3, 0.3, 0.1),
        normalize: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if isinstance(crop_size, (int, np.integer)):
            crop = (int(crop_size), int(crop_size))
        else:
            crop = tuple(int(v) for v in crop_size)
        if len(crop) != 2 or min(crop) < 1:
            raise InvalidValueError("crop_size", "a positive int or (height, width)", crop_size)
        self.crop_size: tuple[int, int] = crop  # type: ignore[assignment]
        if resize_long is not None:
            low, high = (int(v) for v in resize_long)
            if low < 1 or high < low:
                raise InvalidValueError(
                    "resize_long", "(low, high) with 1 <= low <= high", resize_long
                )
            self.resize_long: tuple[int, int] | None = (low, high)
        else:
            self.resize_long = None
        self.flip = bool(flip)
        jitter = tuple(float(v) for v in color_jitter) if color_jitter is not None else (0.0,) * 4
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5 or max(jitter[:3]) > 1:
            raise InvalidValueError(
                "color_jitter",
                "(brightness, contrast, saturation, hue) in [0, 1]^3 x [0, 0.5]",
                color_jitter,
            )
        self.color_jitter = jitter
        self.normalize = bool(normalize)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> Sample:
        """Apply the transform.

        Args:
            image: ``(H, W, 3)`` ``uint8`` image.
            mask: Optional ``(H, W)`` class-id mask, transformed with the image
                (nearest-neighbour resizing).
            rng: A :class:`numpy.random.Generator` or an int seed; ``None`` draws
                fresh entropy (not reproducible).

        Returns:
            ``{"image": float32 (3, h, w), "mask": uint8 (h, w) or None,
            "valid": bool (h, w)}`` with ``(h, w) = crop_size``.
        """
        _check_image(image)
        _check_mask(mask, image)
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        pil_image = Image.fromarray(image)
        pil_mask = (
            None if mask is None else Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
        )

        if self.resize_long is not None:
            target = int(generator.integers(self.resize_long[0], self.resize_long[1] + 1))
            width, height = pil_image.size
            scale = target / max(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            if size != (width, height):
                pil_image = pil_image.resize(size, Image.Resampling.BILINEAR)
                if pil_mask is not None:
                    pil_mask = pil_mask.resize(size, Image.Resampling.NEAREST)

        if self.flip and generator.random() < 0.5:
            pil_image = pil_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if pil_mask is not None:
                pil_mask = pil_mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

        if any(self.color_jitter):
            pil_image = self._jitter(pil_image, generator)

        array = np.asarray(pil_image)
        if self.normalize:
            chw = normalize_image(array, self.mean, self.std)
        else:
            chw = np.ascontiguousarray(array.astype(np.float32).transpose(2, 0, 1))
        mask_array = None if pil_mask is None else np.asarray(pil_mask)
        return self._crop(chw, mask_array, generator)

    def _jitter(self, image: Image.Image, generator: np.random.Generator) -> Image.Image:
        brightness, contrast, saturation, hue = self.color_jitter
        order = generator.permutation(4)
        factors = [
            generator.uniform(max(0.0, 1 - s), 1 + s) if s > 0 else None
            for s in (brightness, contrast, saturation)
        ]
        shift = generator.uniform(-hue, hue) if hue > 0 else None
        for op in order.tolist():
            if op == 0 and factors[0] is not None:
                image = ImageEnhance.Brightness(image).enhance(factors[0])
            elif op == 1 and factors[1] is not None:
                image = ImageEnhance.Contrast(image).enhance(factors[1])
            elif op == 2 and factors[2] is not None:
                image = ImageEnhance.Color(image).enhance(factors[2])
            elif op == 3 and shift is not None:
                hsv = np.array(image.convert("HSV"))
                hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(shift * 255)) % 256
                image = Image.fromarray(hsv, "HSV").convert("RGB")
        return image

    def _crop(
        self, chw: np.ndarray, mask: np.ndarray | None, generator: np.random.Generator
    ) -> Sample:
        crop_h, crop_w = self.crop_size
        _, height, width = chw.shape
        src_top, dst_top, span_h = _offsets(height, crop_h, generator)
        src_left, dst_left, span_w = _offsets(width, crop_w, generator)
        image_out = np.zeros((3, crop_h, crop_w), dtype=np.float32)
        valid = np.zeros((crop_h, crop_w), dtype=bool)
        dst = (slice(dst_top, dst_top + span_h), slice(dst_left, dst_left + span_w))
        src = (slice(src_top, src_top + span_h), slice(src_left, src_left + span_w))
        image_out[(slice(None), *dst)] = chw[(slice(None), *src)]
        valid[dst] = True
        mask_out = None
        if mask is not None:
            mask_out = np.full((crop_h, crop_w), IGNORE_INDEX, dtype=np.uint8)
            mask_out[dst] = mask[src]
        return {"image": image_out, "mask": mask_out, "valid": valid}

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, resize_long={self.resize_long}, "
            f"flip={self.flip}, color_jitter={self.color_jitter}, normalize={self.normalize})"
        )


def _offsets(size: int, crop: int, generator: np.random.Generator) -> tuple[int, int, int]:
    """Return (source start, destination start, span) along one axis, as psa's RandomCrop."""
    space = size - crop
    if space > 0:
        return int(generator.integers(0, space + 1)), 0, crop
    return 0, int(generator.integers(0, -space + 1)), size
