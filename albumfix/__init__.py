"""albumfix: batch photo-album face restoration guided by the same person's own photos."""

__version__ = "0.2.0"
