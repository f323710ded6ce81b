"""What reports share: figures (matplotlib, the `plots` extra) and provenance (versions,
portable commands, paths relative to an output folder)."""
