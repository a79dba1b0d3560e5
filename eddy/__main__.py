"""`python -m eddy`: the same command as `eddy`."""

from eddy.app.cli import main

main()
