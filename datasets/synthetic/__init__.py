"""Synthetic livestream generator writing the real LPR4M and MovingFashion layouts.

``generate(layout, out, seed=..., size=..., knobs=...)`` writes a dataset root; the registered
datasets ``lpr4m-synth`` and ``movingfashion-synth`` generate into a cache and load it with the real
loaders. ``calibration.color_histogram_r1`` is a colour-histogram nearest-neighbour baseline.
Modules: ``catalog`` (34 shape families), ``products`` (instances, sprites, shop images), ``scene``
(stage, host, clip rendering with the intent box), ``text`` (ASR, titles), ``plan`` / ``scale``
(the world: livestreams, products, clips), ``render`` / ``write_lpr4m`` / ``write_movingfashion``
(files), ``generate`` (orchestration, cache), ``knobs`` (difficulty knobs and sizes).
"""

from datasets.synthetic import loaders  # noqa: F401  (registers lpr4m-synth, movingfashion-synth)
from datasets.synthetic.generate import generate
from datasets.synthetic.knobs import SIZES, Knobs, SizeSpec

__all__ = ["generate", "Knobs", "SizeSpec", "SIZES"]
