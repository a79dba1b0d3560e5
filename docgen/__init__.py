"""Tools for the documentation site (mkdocs.yml): its build hooks and the generated parts of its
pages. Not part of the installed package."""
