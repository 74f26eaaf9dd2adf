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
            if line.startswith("    ")]


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
