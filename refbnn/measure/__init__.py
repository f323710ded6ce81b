"""Measuring one model: the `metrics` result (eqs. 1-6, Algorithm 1), certified accuracy
under bounded bit errors (`certify`), the demo, and the hand-built bars model of the examples.

Nothing here imports `refbnn.oracle` or `refbnn.experiments`; both build on `metrics`."""
