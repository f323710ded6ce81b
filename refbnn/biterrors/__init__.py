"""Bit errors (paper section II-C, docs/semantics.md §6): keyed masks and mask files
(`masks`), accuracy under errors and its summary (`sweep`), and the exact flip
probability of a hidden neuron (`flipprob`)."""
