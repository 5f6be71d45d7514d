"""SuperPoint and SuperGlue with the behaviour and state-dict layout of the original release."""
from .superglue import SuperGlue
from .superpoint import SuperPoint

__all__ = ['SuperGlue', 'SuperPoint']
