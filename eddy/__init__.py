"""Eddy: a Kafka-style streaming broker you talk to with curl and WebSockets.

The installed wheel has this one import package. The repository keeps the design's top-level
folders (app/, routers/, models/, storage/, broker/, static/, openapi/); pyproject.toml maps each
to `eddy.<folder>`, and the symbolic links beside this file give tools that read the source tree
(mypy, pytest, `python -m eddy` from a checkout) the same package layout as the wheel.
"""
