"""The EMA teacher of USAGE's activation shape regularisation."""

from seedkit.teacher.ema import EMATeacher

__all__ = ["EMATeacher"]
