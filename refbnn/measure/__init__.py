"""Measuring one model: the `metrics` document (eqs. 1-6, Algorithm 1), certified accuracy
under bounded bit errors (`certify`), and `profile` (numbers, figures, page, paired test).

Nothing here imports `refbnn.oracle` or `refbnn.experiments`; the experiments build on
`metrics`."""
