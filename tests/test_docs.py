"""The README documents every setting, and its first two commands are the ones CI relies on."""

from __future__ import annotations

from eddy.app.settings import Settings
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        flag = "--" + name.replace("_", "-")
        assert f"`EDDY_{name.upper()}`" in README, name
        assert flag in README, flag


def test_ci_runs_the_readme_test_command() -> None:
    first_blocks = README.split("```sh\n")[1:3]
    run_command = first_blocks[0].split("\n```")[0].strip()
    test_command = first_blocks[1].split("\n```")[0].strip()
    assert run_command.endswith("eddy serve")
    assert test_command == "./scripts/check"
    assert test_command in (REPO / ".ci" / "run").read_text()
