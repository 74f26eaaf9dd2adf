"""The script as its next engineer reads it: sections that say where you are, no name
that means two things, and no number of the business written twice."""

import ast
import re

import send_exec_reports as ser
from local_ses import SCRIPT

SOURCE = SCRIPT.read_text(encoding="utf-8")
BANNER = "#" * 79


def banner_titles():
    """The first line of each section banner, in order."""
    lines = SOURCE.splitlines()
    return [lines[number + 1][2:] for number, line in enumerate(lines[:-1])
            if line == BANNER and lines[number + 1].startswith("# ")]


def reading_order():
    """The section names the module docstring lists under "How this file reads"."""
    listed = ser.__doc__.split("How this file reads")[1].split("Where a constant lives")[0]
    return [re.split(r"\s{2,}", line.strip())[0] for line in listed.splitlines()
            if re.match(r" {4}\S", line)]  # deeper: the line above, continued


def test_the_docstring_lists_the_sections_in_the_order_the_banners_stand():
    titles = banner_titles()
    assert len(titles) == len(reading_order())
    for title, name in zip(titles, reading_order()):
        assert title.lower().startswith(name.lower()), (title, name)


def test_no_module_level_name_is_reused_for_a_local_or_a_parameter():
    tree = ast.parse(SOURCE)
    module_names = {node.name for node in tree.body
                    if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    reused = set()
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.Lambda)):
            continue
        arguments = function.args
        reused |= {a.arg for a in (*arguments.posonlyargs, *arguments.args,
                                   *arguments.kwonlyargs, arguments.vararg, arguments.kwarg)
                   if a and a.arg in module_names}
        reused |= {node.id for node in ast.walk(function)
                   if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
                   and node.id in module_names}
    assert not reused


def test_the_break_even_is_written_only_as_the_catalogue_target():
    target = ser.METRICS_BY_ID["charters_booked"].target
    for spec in ser.REPORTS:
        assert not re.search(rf"\b{target}[- ]charter", spec.template.template), spec.report_id
        assert not re.search(rf"/ {target}\b", spec.template.template), spec.report_id


# --- The documents beside it -----------------------------------------------------------

REPO = SCRIPT.parent
DOCUMENTS = [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "bench" / "README.md",
             *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)|<img[^>]*\bsrc=\"([^\"]+)\"|<a[^>]*\bhref=\"([^\"]+)\"")


def heading_anchors(path):
    """The #anchors GitHub makes of a Markdown file's headings."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_every_relative_link_in_the_documents_resolves():
    broken = []
    for document in DOCUMENTS:
        text = re.sub(r"```.*?```", "", document.read_text(encoding="utf-8"), flags=re.S)
        for match in LINK.finditer(text):
            target = next(group for group in match.groups() if group)
            if re.match(r"[a-z]+:", target):
                continue  # a web address: not checked here
            path, _, anchor = target.partition("#")
            destination = (document.parent / path).resolve() if path else document
            if not destination.exists() or REPO not in destination.parents or (
                    anchor and destination.suffix == ".md"
                    and anchor not in heading_anchors(destination)):
                broken.append(f"{document.relative_to(REPO)}: {target}")
    assert not broken


def test_the_readme_is_short_and_shows_the_two_commands_first():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250
    assert any("make demo" in line for line in lines[:40])
    assert any("make test" in line for line in lines[:40])


def test_contributing_lists_every_test_file():
    """A test file CONTRIBUTING's table leaves out is one a newcomer cannot find."""
    listed = set(re.findall(r"^\| `tests/(test_\w+\.py)` \|",
                            (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8"), re.M))
    assert listed == {path.name for path in (REPO / "tests").glob("test_*.py")}
