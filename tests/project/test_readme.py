"""The README documents every error and every setting the code has."""

from __future__ import annotations

from conftest import KIT
from deploykey.core.errors import PROBLEMS, UserError
from deploykey.secrets.config import SETTINGS

README = (KIT / "README.md").read_text()


def test_every_error_has_its_section() -> None:
    for slug in PROBLEMS:
        anchor = slug.replace("::", "-")
        assert f'<a id="{anchor}"></a>**{slug}**' in README, slug
    assert UserError("usage", message="", command="").anchor == "README.md#usage"


def test_every_setting_is_in_the_table() -> None:
    for setting in SETTINGS:
        assert f"| `{setting.name}` | `{setting.default}` | {setting.meaning} |" in README, (
            setting.name
        )


def test_the_two_commands() -> None:
    assert "bash .ci/run " in README and "bash examples/demo " in README
    assert "python3 -m pytest" in (KIT / ".ci" / "run").read_text()


def test_security_md_names_tests_that_exist() -> None:
    """Each claim in SECURITY.md names the test that proves it; those tests must exist."""
    import re

    text = (KIT / "SECURITY.md").read_text()
    cited = re.findall(r"`(\w+/test_\w+\.py)(?:::(\w+)[^`]*)?`", text)
    assert len(cited) > 15
    for file, name in cited:
        source = (KIT / "tests" / file).read_text()
        if name:
            prefix = name.rstrip("*").rstrip("_") if name.endswith("*") else name
            assert f"def {prefix}" in source, f"{file}::{name}"
