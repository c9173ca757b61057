"""The README's config reference, generated from JobConfig so it cannot drift (a test compares them).

`python -m sft_ui.docs` prints it; `python -m sft_ui.docs --write` updates README.md in place.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .config import GROUPS, field_specs

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def _default(value: object) -> str:
    if value is None:
        return "*(empty)*"
    if value == "" or value == {} or value == []:
        return "*(empty)*" if value in ("", {}) else "`[]`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def config_reference() -> str:
    lines = ["| field | group | default | allowed | description |", "|---|---|---|---|---|"]
    for group in GROUPS:
        for spec in (s for s in field_specs() if s.group == group):
            allowed = ", ".join(f"`{c}`" for c in spec.choices) if spec.choices else (spec.rule or spec.kind)
            if spec.optional:
                allowed += " or empty"
            description = spec.description.replace("|", "\\|")
            lines.append(f"| `{spec.name}` | {group} | {_default(spec.default)} | {allowed} | {description} |")
    return "\n".join(lines)


def readme_with_reference(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{config_reference()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--write" in argv:
        README.write_text(readme_with_reference(README.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        sys.stdout.write(config_reference() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
