"""`python -m refbnn.cli`: the same as the `refbnn` command."""
from . import main

main()
