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
