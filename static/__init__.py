"""The web console's files (a package so that importlib.resources finds them when installed)."""
