"""The contract and the paper's definitions: the model, eqs. 1-6, Algorithm 1, Theorem 1.

Nothing here runs a network at data-set scale or imports an engine: the engines
(`refbnn.engines`) compute pre-activations and predictions, and call these
definitions on them. See docs/architecture.md for the import rule.
"""
