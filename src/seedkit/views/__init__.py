"""Network views: USAGE's self-adaptive network adjustment.

:class:`SelfAdaptiveView` wraps a model so that each call drops a random
contiguous channel segment in every residual branch (a strong view for the
student, a weak one for the teacher). :func:`find_adjustable_blocks` is the
structural search it relies on (timm, torchvision, psa / SEAM, MCTformer blocks),
or takes the layers from ``sites=``.
"""

from seedkit.views.self_adaptive import Segment, SelfAdaptiveView
from seedkit.views.sites import AdjustableBlock, Sites, find_adjustable_blocks

__all__ = ["AdjustableBlock", "Segment", "SelfAdaptiveView", "Sites", "find_adjustable_blocks"]
