"""The documentation site's generated pages (``docs/hooks.py``) cover the whole registry.

The page generators are plain functions, called here without MkDocs: the site cannot silently
drop an algorithm, and every page carries the options table of ``peergrad algorithms NAME``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from peergrad.algorithms.docs import describe_options
from peergrad.algorithms.registry import ALGORITHMS, REGISTRY

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("peergrad_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_registered_algorithm_has_a_page(hooks):
    pages = hooks.algorithm_pages()
    assert set(pages) == {f"algorithms/{name}.md" for name in REGISTRY}
    assert len(pages) == len(ALGORITHMS)


@pytest.mark.parametrize("cls", ALGORITHMS, ids=lambda c: c.name)
def test_algorithm_page_has_paper_rule_and_every_option(hooks, cls):
    page = hooks.algorithm_page(cls)
    assert page.startswith(f"# `{cls.name}`")
    assert hooks._cell(cls.paper) in page
    assert "## Method and update rule" in page
    for option in describe_options(cls):
        assert f"| `{option['name']}` |" in page
        assert "(undocumented)" not in page


def test_algorithms_section_of_the_nav_lists_every_page(hooks):
    config = {"nav": [{"Algorithms": ["algorithms/index.md"]}, {"Experiments": []}]}
    hooks.on_config(config)
    listed = [next(iter(e.values())) for e in config["nav"][0]["Algorithms"][1:]]
    assert listed == [f"algorithms/{cls.name}.md" for cls in ALGORITHMS]


def test_cli_page_has_every_subcommand(hooks):
    page = hooks.cli_page()
    for name in ("train", "compare", "topology", "system", "algorithms", "plot"):
        assert f"## `peergrad {name}`" in page


def test_list_indents_doubled_outside_fences(hooks):
    text = "- a\n  - b\n```\n  code\n```\n"
    assert hooks.double_list_indents(text) == "- a\n    - b\n```\n  code\n```\n"


# ------------------------------------------------------------------------------------------------
# README.md is the landing page: short, the two Quick-start commands, links that resolve
# ------------------------------------------------------------------------------------------------
README = ROOT / "README.md"
QUICK_START = (
    "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e . "
    "&& .venv/bin/peergrad train",
    # .ci/run runs this test command: keep the two in step
    "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e '.[dev,tensorboard]' "
    "&& .venv/bin/python -m pytest",
)


def _readme_outside_code() -> str:
    """README.md without its fenced code blocks (a link inside code is no link)."""
    import re

    return re.sub(r"^```.*?^```", "", README.read_text(encoding="utf-8"), flags=re.M | re.S)


def _github_slug(heading: str) -> str:
    import re

    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_is_a_landing_page_of_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the details into docs/"


def test_readme_has_both_quick_start_commands():
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start")[1].split("\n## ")[0]
    blocks = [b.strip() for b in quick.split("```bash")[1:]]
    commands = [b.split("```")[0].strip() for b in blocks]
    assert commands == list(QUICK_START)


def test_every_relative_link_in_the_readme_resolves():
    import re

    text = _readme_outside_code()
    anchors = {_github_slug(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)
    assert targets, "no links found"
    broken = []
    for target in targets:
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in anchors:
                broken.append(target)
        elif not (ROOT / path).exists():
            broken.append(target)
    assert not broken, f"README.md links to missing files or anchors: {broken}"
