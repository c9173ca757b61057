"""README stays true: its config reference is the generated one, and its commands are the ones CI runs."""

from pathlib import Path

from sft_ui.docs import END, START, config_reference

REPO = Path(__file__).resolve().parents[2]


def test_readme_config_reference_is_generated_from_jobconfig() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert section == config_reference(), "run: python -m sft_ui.docs --write"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in readme and "<!-- test-command -->" in ci
    assert "torch==2.13.0" in ci.split("requirements-dev.txt")[0], "torch must be installed before the rest"
