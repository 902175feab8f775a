"""The two custom losses, one per module, as sentence-transformers losses.

`functional` holds the masked InfoNCE that both compute (stage 1's loss, ROAR's anchor).
"""

from shopsearch.training.losses.false_negative_masked_contrastive import (
    FalseNegativeMaskedContrastiveLoss,
)
from shopsearch.training.losses.roar import ROARLoss

__all__ = ["FalseNegativeMaskedContrastiveLoss", "ROARLoss"]
