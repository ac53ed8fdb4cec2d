"""Pixels for people: preview decoding (modality LUT, VOI LUT, windows) and terminal encoders.

Owns: `preview.py` (a stored file to an 8-bit image) and `encoders.py` (sixel, kitty, half-cell
blocks, ASCII). May import: the leaves (storage.status, storage.uids); pydicom and numpy.
"""
