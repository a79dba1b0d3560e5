"""The documentation keeps up with the code: the configuration page lists every setting as
`Settings` defines it (its tables are generated and must be current), and the README's first two
commands are the ones CI relies on. The site itself is built and looked at in
tests/test_docs_site.py."""

from __future__ import annotations

import re

from docgen import configuration
from eddy.app.serve_options import default_text, env_name
from eddy.app.settings import Settings
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
CONFIGURATION = (REPO / "docs" / "configuration.md").read_text()


def test_the_configuration_page_is_generated_from_the_current_settings() -> None:
    assert configuration.render(CONFIGURATION) == CONFIGURATION, (
        "docs/configuration.md is stale: run `python -m docgen.configuration`"
    )


def test_every_setting_is_on_the_configuration_page_with_its_env_name_and_default() -> None:
    rows = {
        match[1]: line
        for line in CONFIGURATION.splitlines()
        if (match := re.match(r"\| `(--[a-z0-9-]+)`", line))
    }
    assert len(rows) == len(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        row = rows["--" + name.replace("_", "-")]
        assert f"`{env_name(name)}`" in row, name
        default = default_text(field)
        assert (f"`{default}`" if default is not None else "| none |") in row, name
        assert (field.description or "") in row.replace("\\|", "|"), name


def test_ci_runs_the_readme_test_command() -> None:
    first_blocks = README.split("```sh\n")[1:3]
    run_command = first_blocks[0].split("\n```")[0].strip()
    test_command = first_blocks[1].split("\n```")[0].strip()
    assert run_command.endswith("eddy serve")
    assert test_command == "./scripts/check"
    assert test_command in (REPO / ".ci" / "run").read_text()


def test_the_readme_links_to_every_page_of_the_site() -> None:
    pages = sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").rglob("*.md"))
    assert len(pages) >= 17
    for page in pages:
        assert f"]({page})" in README, page
