"""The two engines behind one protocol (`protocol.Engine`): the bitarray reference
interpreter, which defines what a model computes, and the fast exact NumPy engine,
which must give the very same numbers (docs/engine.md)."""
