"""MkDocs hooks: the pages generated at build time (``hooks:`` in ``mkdocs.yml``).

- ``algorithms/<name>.md``: one page per registered algorithm, from the registry
  (:data:`peergrad.algorithms.registry.ALGORITHMS`): paper, summary, the module docstring (the
  update rule, deviations from the paper), the class docstring and the options table made by
  :func:`peergrad.algorithms.docs.describe_options`, the same code as ``peergrad algorithms NAME``.
- ``cli.md``: every subcommand's ``--help``, from :func:`peergrad.cli.build_parser`.
- ``guide/elastic.md``: its table of every algorithm's behaviour on the elastic engine
  (:func:`elastic_table`, from each class's ``elastic`` / ``elastic_note`` and ``failures`` /
  ``failures_note``) is regenerated between its markers; a test keeps the checked-in copy equal.
- ``experiments/<study>/index.md``: each ``experiments/<study>/README.md`` with its plots
  (``experiments/<study>/results/**/*.png`` are copied into the site).
- math: ``pymdownx.arithmatex`` (generic mode) marks the TeX; :func:`on_page_content` turns it
  into MathML with ``latex2mathml`` at build time, so the built site shows formulas with no
  JavaScript and no network (every current browser renders MathML Core).

The page generators are plain functions of the repository (no MkDocs import), so
``tests/test_docs_pages.py`` calls them directly.
"""

from __future__ import annotations

import html
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
if str(ROOT / "src") not in sys.path:  # build from a checkout that was not pip-installed
    sys.path.insert(0, str(ROOT / "src"))


# ------------------------------------------------------------------------------------------------
# algorithm pages
# ------------------------------------------------------------------------------------------------
def _docstring_markdown(doc: str | None) -> str:
    """A docstring as Markdown: reST's ``::`` literal blocks become fenced code blocks, the
    ``Options:`` section is dropped (the options table replaces it)."""
    if not doc:
        return ""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "Options:":
            i += 1  # skip the section: entries and their continuation lines up to a blank line
            while i < len(lines) and not lines[i].strip():
                i += 1
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        if line.rstrip().endswith("::"):
            text = line.rstrip()[:-2].rstrip()
            out.append(text + ":" if text else "")
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i][4:])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```text", *block, "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip() + "\n"


def _cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return " ".join(str(text).split()).replace("|", "\\|")


def options_table(cls: type) -> str:
    """The options of algorithm class ``cls`` as a Markdown table (``peergrad algorithms NAME``)."""
    from peergrad.algorithms.docs import describe_options

    rows = [
        "| option | type | default | range | meaning |",
        "|---|---|---|---|---|",
    ]
    for o in describe_options(cls):
        rows.append(
            f"| `{o['name']}` | `{_cell(o['type'])}` | `{_cell(repr(o['default']))}` "
            f"| {_cell(o['range'])} | {_cell(o['meaning'])} |"
        )
    return "\n".join(rows) + "\n"


def algorithm_page(cls: type) -> str:
    """The Markdown page of one registered algorithm class."""
    module = sys.modules[cls.__module__]
    uses_topology = cls().uses_topology()
    communication = (
        "gossips over `--topology`" if uses_topology else "averages exactly; ignores `--topology`"
    )
    behaviour, note = elastic_behaviour(cls)
    elastic = f"{behaviour}: {note}" if note else behaviour
    parts = [
        f"# `{cls.name}`\n",
        f"{cls.summary[:1].upper()}{cls.summary[1:]}.\n",
        "| about | |\n|---|---|\n"
        f"| paper | {_cell(cls.paper)} |\n"
        f"| class | `{cls.__module__}.{cls.__qualname__}` |\n"
        f"| communication | {communication} |\n"
        f"| `--elastic` | {_cell(elastic)} ([when a worker dies](../guide/elastic.md)) |\n",
        "```bash\n"
        f"peergrad train --algorithm {cls.name}\n"
        f"peergrad algorithms {cls.name}        # this page's options table in the terminal\n"
        "```\n",
        "## Options\n",
        "Set with `--set KEY=VALUE` (`lr`, `momentum`, `weight_decay` also with `--lr`, "
        "`--momentum`, `--weight-decay`), or as keyword arguments of the class.\n",
        options_table(cls),
        f"## Method and update rule\n\nFrom the docstring of `{cls.__module__}`.\n",
        _docstring_markdown(module.__doc__),
    ]
    class_doc = _docstring_markdown(cls.__doc__)
    if class_doc.strip():
        parts += [f"## `{cls.__qualname__}`\n", class_doc]
    return "\n".join(parts)


def algorithm_pages() -> dict[str, str]:
    """``{docs path: Markdown}``: one page per registered algorithm, in registry order."""
    from peergrad.algorithms.registry import ALGORITHMS

    return {f"algorithms/{cls.name}.md": algorithm_page(cls) for cls in ALGORITHMS}


# ------------------------------------------------------------------------------------------------
# the elastic engine's table (guide/elastic.md)
# ------------------------------------------------------------------------------------------------
ELASTIC_PAGE = "guide/elastic.md"
ELASTIC_TABLE_START = "<!-- elastic-table: generated by docs/hooks.py from the registry -->"
ELASTIC_TABLE_END = "<!-- /elastic-table -->"


def elastic_behaviour(cls: type) -> tuple[str, str]:
    """``(behaviour, note)`` of algorithm class ``cls`` on the elastic engine, as
    :func:`peergrad.algorithms.check_elastic` reads them: ``elastic`` (``failures`` when None);
    the note is ``elastic_note``, or for a refusal ``failures_note`` when there is none (the
    reason). A supported method without an ``elastic_note`` gets no note: its ``failures_note``
    describes the simulated engine, where an absent worker comes back with its own state."""
    behaviour = cls.elastic if cls.elastic is not None else cls.failures
    note = cls.elastic_note or (cls.failures_note if behaviour == "refused" else "")
    return behaviour, note


def _elastic_exchange(cls: type) -> str:
    """How the default instance averages (``gossip=True`` noted where the class accepts it)."""
    if cls().uses_topology():
        return "gossip"
    try:
        gossip = cls(gossip=True).uses_topology()
    except (TypeError, ValueError):
        gossip = False
    return "exact average (gossip with `gossip=True`)" if gossip else "exact average"


def elastic_table() -> str:
    """Every registered algorithm's behaviour on the elastic engine, as a Markdown table."""
    from peergrad.algorithms.registry import ALGORITHMS

    rows = ["| algorithm | exchange | `--elastic` | note |", "|---|---|---|---|"]
    for cls in ALGORITHMS:
        behaviour, note = elastic_behaviour(cls)
        shown = f"**{behaviour}**" if behaviour == "refused" else behaviour
        rows.append(
            f"| [`{cls.name}`](../algorithms/{cls.name}.md) | {_elastic_exchange(cls)} "
            f"| {shown} | {_cell(note)} |"
        )
    return "\n".join(rows) + "\n"


def with_elastic_table(markdown: str) -> str:
    """``markdown`` with what lies between the elastic-table markers replaced by
    :func:`elastic_table` (``ValueError`` when the markers are missing)."""
    head, start, rest = markdown.partition(ELASTIC_TABLE_START)
    _, end, tail = rest.partition(ELASTIC_TABLE_END)
    if not start or not end:
        raise ValueError(
            f"{ELASTIC_PAGE} lacks the markers {ELASTIC_TABLE_START!r} ... {ELASTIC_TABLE_END!r}"
        )
    return f"{head}{start}\n{elastic_table()}{end}{tail}"


# ------------------------------------------------------------------------------------------------
# CLI reference
# ------------------------------------------------------------------------------------------------
def cli_page(width: int = 100) -> str:
    """Every subcommand's ``--help``, from the parser the ``peergrad`` command uses."""
    import argparse

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse wraps to the terminal: fix it for the docs
    try:
        from peergrad.cli import build_parser

        parser = build_parser()
        parts = [
            "# CLI reference\n",
            "Generated at build time from the parser of the `peergrad` command "
            "(`peergrad.cli.build_parser`): what `peergrad COMMAND --help` prints.\n",
            "```text\n" + parser.format_help().rstrip() + "\n```\n",
        ]
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, p in sub.choices.items():
            p.prog = f"peergrad {name}"
            parts += [f"## `peergrad {name}`\n", "```text\n" + p.format_help().rstrip() + "\n```\n"]
        return "\n".join(parts)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


# ------------------------------------------------------------------------------------------------
# experiments
# ------------------------------------------------------------------------------------------------
def experiment_names() -> list[str]:
    """The studies under ``experiments/`` that have a README, sorted."""
    return sorted(p.parent.name for p in EXPERIMENTS.glob("*/README.md"))


def experiment_page(name: str) -> str:
    """``experiments/<name>/README.md`` as a site page (its image links are relative to the
    study folder, and the site keeps that layout)."""
    text = (EXPERIMENTS / name / "README.md").read_text(encoding="utf-8")
    source = f"`experiments/{name}/`"
    return f"{text.rstrip()}\n\n---\n\n*This page is the README of {source}.*\n"


def experiment_images(name: str) -> list[Path]:
    """The plots of one study: ``experiments/<name>/results/**/*.png``."""
    return sorted((EXPERIMENTS / name / "results").glob("**/*.png"))


# ------------------------------------------------------------------------------------------------
# MkDocs hooks
# ------------------------------------------------------------------------------------------------
def _add_to_nav(nav: list[Any], section: str, entries: list[dict[str, str]]) -> None:
    for item in nav:
        if isinstance(item, dict) and section in item:
            item[section].extend(e for e in entries if e not in item[section])
            return
    raise ValueError(f"mkdocs.yml nav has no section {section!r}")


def on_config(config: Any) -> Any:
    """Put the generated pages into the navigation, in registry / folder order."""
    from peergrad.algorithms.registry import ALGORITHMS

    _add_to_nav(
        config["nav"], "Algorithms", [{cls.name: f"algorithms/{cls.name}.md"} for cls in ALGORITHMS]
    )
    studies = [{name: f"experiments/{name}/index.md"} for name in experiment_names()]
    _add_to_nav(config["nav"], "Experiments", studies)
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages and the experiments' plots to the site."""
    from mkdocs.structure.files import File

    pages = dict(algorithm_pages())
    pages["cli.md"] = cli_page()
    for name in experiment_names():
        pages[f"experiments/{name}/index.md"] = experiment_page(name)
    for path, text in pages.items():
        files.append(File.generated(config, path, content=text))
    for name in experiment_names():
        for png in experiment_images(name):
            uri = png.relative_to(ROOT).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


_FENCE = re.compile(r"^\s*(```|~~~)")


def double_list_indents(markdown: str) -> str:
    """Double the leading spaces of every line outside fenced code blocks.

    README-style Markdown (GitHub's) nests lists and continues list items with 2 spaces;
    Python-Markdown needs 4. Doubling keeps every relative indentation and makes the pages read
    as they do on GitHub (an indented code block at 4 spaces stays one at 8)."""
    out = []
    fence: str | None = None
    for line in markdown.splitlines():
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match[1]
        elif fence is not None and match and match[1] == fence:
            fence = None
            out.append(line)
            continue
        if fence is None or match:
            stripped = line.lstrip(" ")
            line = " " * (2 * (len(line) - len(stripped))) + stripped
        out.append(line)
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """2-space list indentation (as in README.md and the experiments' READMEs) -> 4 spaces;
    the API pages (mkdocstrings' YAML options) are left alone; the elastic table regenerated."""
    if page.file.src_uri.startswith("api/"):
        return markdown
    if page.file.src_uri == ELASTIC_PAGE:
        markdown = with_elastic_table(markdown)
    return double_list_indents(markdown)


_MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">(?P<body>.*?)</(?P=tag)>', flags=re.DOTALL
)


def tex_to_mathml(tex: str, *, display: bool) -> str:
    from latex2mathml.converter import convert

    return convert(tex, display="block" if display else "inline")


def _math_replace(match: re.Match[str]) -> str:
    body = html.unescape(match["body"]).strip()
    display = match["tag"] == "div"
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if body.startswith(left) and body.endswith(right):
            body = body[len(left) : -len(right)]
    return tex_to_mathml(body.strip(), display=display)


def on_page_content(html_text: str, page: Any, config: Any, files: Any) -> str:
    """TeX marked by arithmatex -> MathML, at build time."""
    return _MATH.sub(_math_replace, html_text)
