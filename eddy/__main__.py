"""`python -m eddy`: the same command as `eddy`."""

from eddy.app.cli import main

if __name__ == "__main__":  # importing it (the bench harness checks the package name) runs nothing
    main()
