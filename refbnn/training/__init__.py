"""The NumPy trainer (straight-through estimator, batch norm, Adam, bit flip training),
its architectures, offline data sets and the exact export to the integer model
(docs/training.md, docs/semantics.md §8)."""
