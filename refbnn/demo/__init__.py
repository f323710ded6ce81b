"""The demo: `refbnn demo` (train two small BNNs on the digits and measure them, `run`) and
the bars example model and data that docstrings, tests and the docs use (`bars`)."""
