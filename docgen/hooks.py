"""MkDocs hooks (mkdocs.yml `hooks:`): put the API documents and the AsyncAPI renderer into the
site from where the server keeps them, so the site shows the very files the server serves and
works without a network.

- `api/openapi.json` and `api/asyncapi.yaml`: openapi/ (the checked-in documents; CI checks
  that openapi.json is what the server generates).
- `assets/asyncapi-react/`: the standalone bundle of @asyncapi/react-component vendored under
  static/vendor/ (the server's `/asyncapi` page uses it too).
- A page whose front matter names `asyncapi: <document>` gets the renderer's stylesheet and
  scripts, with URLs relative to the page (only that page loads the 2 MB bundle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from mkdocs.utils import get_relative_url

REPO = Path(__file__).resolve().parent.parent
RENDERER = "assets/asyncapi-react"
COPIED = {
    "api/openapi.json": REPO / "openapi" / "openapi.json",
    "api/asyncapi.yaml": REPO / "openapi" / "asyncapi.yaml",
    f"{RENDERER}/index.js": REPO / "static" / "vendor" / "asyncapi-react" / "index.js",
    f"{RENDERER}/default.min.css": REPO
    / "static"
    / "vendor"
    / "asyncapi-react"
    / "default.min.css",
    f"{RENDERER}/LICENSE": REPO / "static" / "vendor" / "asyncapi-react" / "LICENSE",
}


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    for uri, source in COPIED.items():
        files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files


def on_page_content(
    html: str, page: Page, config: MkDocsConfig, files: Files, **kwargs: Any
) -> str:
    document = page.meta.get("asyncapi")
    if not document:
        return html
    here = page.url

    def url(uri: str) -> str:
        return get_relative_url(uri, here)

    return html + (
        f'<link rel="stylesheet" href="{url(RENDERER + "/default.min.css")}">\n'
        f'<script src="{url(RENDERER + "/index.js")}" defer></script>\n'
        f'<script src="{url("assets/asyncapi-page.js")}" defer></script>\n'
        f'<div id="asyncapi" class="asyncapi-page" data-document="{url(document)}">'
        "Loading the AsyncAPI document...</div>\n"
    )
