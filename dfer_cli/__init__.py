"""dfer: audio-visual dynamic facial expression recognition with MMA-DFER."""

__version__ = "0.1.0"
