"""The two custom losses, one per module, as sentence-transformers losses."""

from shopsearch.training.losses.false_negative_masked_contrastive import (
    FalseNegativeMaskedContrastiveLoss,
)
from shopsearch.training.losses.roar import ROARLoss

__all__ = ["FalseNegativeMaskedContrastiveLoss", "ROARLoss"]
