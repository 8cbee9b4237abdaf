"""Dataset loaders (one module per on-disk format), the synthetic generator, sampling, transforms.

This package never imports ``methods``. A dataset registers a loader with
``@DATASETS.register(name)``; a loader is called as ``loader(data_root, size=..., seed=...)``
and returns a :class:`datasets.records.DatasetSplits`.
"""
