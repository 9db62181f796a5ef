"""The engine: distributions, blending, sampling, the vocabulary bridge, cursors, methods, the decode loop, prompts. Pure Python and NumPy over a model interface; no backend, no shell."""
