"""What the commands compute, above the engines: the `metrics` result, certified
accuracy (`certify`), the claims checker (`verify`) and the hand-built example model.
The command line (`refbnn.cli`) only parses options, calls these and prints."""
