"""The web console's files. A regular package (not a namespace one) so that importlib.resources
finds them in every kind of install, also setuptools' editable ones."""
