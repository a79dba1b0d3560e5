"""The API documents (openapi.json, asyncapi.yaml) as package data, so an installed wheel has
them: app/openapi.py reads them with importlib.resources. A regular package rather than a
namespace one: Python 3.11's importlib.resources cannot read a namespace package that an
editable install also maps."""
