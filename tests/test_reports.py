"""The reports themselves: every template renders, with the seed document's figures."""

import io
import string
from datetime import date

import pytest

import send_exec_reports as ser
from conftest import section_heading, template_headings
from local_ses import EXAMPLE_FIGURES

CONTEXT = {"cycle": "2026-11-29", "prepared_by": "Reports Desk",
           "generated_at": "2026-11-29 03:00 UTC"}

# The figures and findings each report must carry, from shared/seed: its figures, and
# its items as --new-data writes them into items.csv (the source document's, open).
# Every heading of its template shows too (the test reads them from the template);
# here are the seed's counts in headings, and the cycle in the agenda's.
SEED_FACTS = {
    "ceo": [f"{section_heading('ceo', 'items_shortfall', edition='text')} (8)",
            "Sales pipeline below target",
            "Revenue tracking gaps", "Sergio equity risk", "OTA listings below target",
            "DC billing model absent", "QDN funnel breakage", "Carole transition risk",
            f"{section_heading('ceo', 'agenda', edition='text')} 2026-11-29",
            "Portfolio burn - $7,000-9,000"],
    "cto": ["Hardcoded Stripe keys", "Plaintext repos.env", "Google Apps Script",
            "Web Application Firewall",
            f"{section_heading('cto', 'items_security_gap', edition='text')} (6)",
            "AWS, this snapshot $50-84", "Target at most $59", "~$25/month",
            "availability calendar", "No CI/CD pipeline", "No staging environment",
            "automated rollback", "10. "],
    "accounting": ["No accounting system is live (figures as of 2026-10-01)", "M4"],
    "cmo": ["3,676", "$10K-50K", "Sailo first", "GetMyBoat second",
            "certificate of insurance"],
    "cfo": ["$7,000-9,000", "Monthly burn $7,000-9,000",
            "Charters booked, target at least 6",
            "Zero-cost initiatives", "Low-cost infrastructure",
            "Revenue-producing features", "No-deploy guardrails",
            "No hardcoded keys", "Audit trail on all expenses",
            "COI verification before charter acceptance"],
    "rental-3028": [],
    "yacht-delivery": [],
    "dc-portfolio": [],
}


def test_there_are_eight_reports_in_the_agreed_order():
    assert [spec.report_id for spec in ser.REPORTS] == [
        "ceo", "cto", "accounting", "cmo", "cfo", "rental-3028", "yacht-delivery",
        "dc-portfolio"]


def test_what_the_reports_declare_joins_the_owners_data_once():
    """A report's own metric, item or record rule may not take the name of another:
    the later one would silently stand for both."""
    for ids in ([m.metric_id for m in ser.METRICS], [i.item_id for i in ser.ITEMS],
                [r.item_id for spec in ser.REPORTS for r in spec.record_rules],
                list(ser.REPORT_IDS)):
        assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for spec in ser.REPORTS:  # what a report declares names it among its readers
        for declared in (*spec.metrics, *spec.items):
            assert spec.report_id in declared.reports, (spec.report_id, declared)
        for rule in spec.record_rules:
            assert rule.sheet in ser.RECORD_SHEETS, rule


def seed_figures(items=True):
    """The example figures file's first snapshot: the source document's own figures; and
    unless items is False, the source document's items as --new-data writes them into
    a new items.csv (open, to confirm or close)."""
    snapshots = ser.parse_figures(EXAMPLE_FIGURES.read_text(), "example")
    assert snapshots[0].note == "figures from the source document"
    rows = ser.parse_items(ser.new_sheets(date(2026, 11, 29))["items.csv"], "items.csv")
    return ser.cycle_data("2026-11-29", None, snapshots[:1], rows if items else ())


@pytest.mark.parametrize("report_id", SEED_FACTS)
def test_every_report_renders_with_its_seed_figures(report_id):
    [spec] = ser.select_reports(report_id)
    report = ser.render_report(spec, data=seed_figures(), **CONTEXT)  # KeyError if unknown
    assert spec.title in report.subject and "2026-11-29" in report.subject
    assert "prepared by Reports Desk" in report.body
    assert "${" not in report.body + report.html
    text = " ".join(report.body.split())  # facts may be wrapped across lines
    for fact in SEED_FACTS[report_id]:
        assert fact in text, fact
    for heading in template_headings(report_id, edition="text"):
        assert heading in text, heading
    # The items are no fact of the code's own: without items.csv's rows, none stands.
    bare = ser.render_report(spec, data=seed_figures(items=False), **CONTEXT)
    for item in ser.ITEMS:
        if report_id in item.reports:
            assert item.text not in " ".join(bare.body.split()), item.item_id


@pytest.mark.parametrize("spec", ser.REPORTS, ids=ser.REPORT_IDS)
@pytest.mark.parametrize("part", ["header", "body", "footer"])
def test_templates_name_only_placeholders_that_exist(spec, part):
    template = {"header": ser.HEADER_TEMPLATE, "body": spec.template,
                "footer": ser.FOOTER_TEMPLATE}[part]
    names = {m.group("braced") for m in template.pattern.finditer(template.template)
             if m.group("braced")}
    figures = set(ser.report_values(spec, ser.NO_DATA))
    assert names <= {"title", "cycle", "prepared_by", "generated_at", "version", "variant",
                     *figures}
    assert not [m for m in template.pattern.finditer(template.template) if m.group("invalid")]


def test_a_misspelled_placeholder_fails_at_render_time_not_silently():
    broken = ser.ReportSpec("broken", "Broken", ser.ReportTemplate("Cycle ${cycel}"))
    with pytest.raises(KeyError, match="cycel"):
        ser.render_report(broken, **CONTEXT)


def test_dollar_amounts_are_text_not_placeholders():
    template = ser.ReportTemplate("Burn $7-9K, $cycle stays, ${cycle} is filled")
    assert template.substitute(cycle="C1") == "Burn $7-9K, $cycle stays, C1 is filled"
    assert isinstance(template, string.Template)


def test_list_prints_ids_and_titles_without_reading_settings(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = ser.main(["--list", "--env-file", str(tmp_path / "absent.env")],
                    environ={}, stdout=out, stderr=err)
    assert code == 0 and err.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == [s.report_id for s in ser.REPORTS]
    assert "rental-3028     3028 51st St Rental Audit" in lines


@pytest.mark.parametrize("only", ["ceo,nope", "nope", ",", "CEO"])
def test_an_unknown_report_id_is_a_usage_error_naming_it(only):
    out, err = io.StringIO(), io.StringIO()
    assert ser.main(["--only", only], environ={}, stdout=out, stderr=err) == 64
    assert "valid ids: ceo, cto, accounting" in err.getvalue()
    assert out.getvalue() == ""


@pytest.mark.parametrize("argv", [["--bogus"], ["--cycle", "2026 11 29"],
                                  ["--cycle", "x\nSubject: y"], ["--only"]])
def test_usage_errors_exit_64_with_one_line(argv):
    out, err = io.StringIO(), io.StringIO()
    assert ser.main(argv, environ={}, stdout=out, stderr=err) == 64
    assert len(err.getvalue().strip().splitlines()) == 1


def test_select_reports_keeps_the_standard_order():
    chosen = ser.select_reports("cfo, ceo,cfo")
    assert [spec.report_id for spec in chosen] == ["ceo", "cfo"]


# --- The template markup is strict: one reading per line -----------------------

AMBIGUOUS_TEMPLATES = {
    "a list item continues a paragraph": (
        "## Costs\nThe burn is high, and the\n- first thing to cut is dockage.\n", 3,
        "bullets line right after paragraph"),
    "a numbered item continues a paragraph": (
        "## Plan\nWe ship in\n6. weeks, not sooner.\n", 3, "numbered line right after"),
    "a table row continues a paragraph": (
        "## Plan\nSee the table below:\n| a | b |\n| 1 | 2 |\n", 3, "table line right after"),
    "paragraph text right after a list": (
        "## Plan\n- one\ntwo, meant as part of one\n", 3, "paragraph line right after"),
    "a row with another number of cells": (
        "## Plan\n| Month | Target |\n| Oct | 4 | extra |\n", 3, "a row of 3 cells"),
    "items numbered out of order": ("## Plan\n1. one\n3. three\n", 3, "item 3 where item 2"),
    "a list that does not start at 1": ("## Plan\n2. two\n", 2, "item 2 where item 1"),
    "an unknown marker": ("## Plan\n| a | b |\n| x | [bars 4/6] |\n", 3, "marker [bars 4/6]"),
    "a misspelled brief marker": ("## At a glance [brif]\n", 1, "marker [brif]"),
    "a bar outside a table": ("## Plan\nProgress [bar 4/6] so far.\n", 2, "marker [bar 4/6]"),
    "a bar past its total": ("## Plan\n| a | b |\n| x | [bar 7/6] |\n", 3, "bar '[bar 7/6]'"),
    "a marker in capitals": ("## At a glance [Brief]\n", 1, "marker [Brief]"),
    "a bar with no space": ("## Plan\n| a | b |\n| x | [bar4/6] |\n", 3, "marker [bar4/6]"),
    "a brief marker twice": ("## At a glance [brief] [brief]\n", 1, "marker [brief]"),
    "an indented line after a heading": ("## Plan\n  more of the heading?\n", 2,
                                         "indented line after a heading"),
    # Items, not a mark, now say what is done: [until] is no marker.
    "an until at an item's start": ("## Plan\n1. [until ota_listings] List on Sailo\n", 2,
                                    "marker [until ota_listings]"),
}


@pytest.mark.parametrize("case", AMBIGUOUS_TEMPLATES)
def test_an_ambiguous_template_line_is_an_error_naming_template_and_line(case):
    source, line, problem = AMBIGUOUS_TEMPLATES[case]
    broken = ser.ReportSpec("broken", "Broken", ser.ReportTemplate(source))
    with pytest.raises(ser.TemplateError, match="template broken, line") as raised:
        ser.render_report(broken, **CONTEXT)
    assert f"template broken, line {line} " in str(raised.value)
    assert problem in str(raised.value)


@pytest.mark.parametrize("variant", ser.VARIANTS)
@pytest.mark.parametrize("spec", ser.REPORTS, ids=lambda spec: spec.report_id)
def test_every_shipped_template_reads_one_way_in_both_editions(spec, variant):
    report = ser.render_report(spec, variant=variant, **CONTEXT)  # TemplateError if not
    assert report.body and report.html


def test_values_are_text_never_markup():
    """A value that looks like markup, even at a line's start or in a cell, stays text."""
    odd = "- 1. | [bar 1/2] | ## x"
    spec = ser.ReportSpec("values", "Values", ser.ReportTemplate(
        "## At a glance [brief]\n${prepared_by}\n\n| Who | Value |\n| By | ${prepared_by} |\n"))
    report = ser.render_report(spec, **{**CONTEXT, "prepared_by": odd})
    assert f"\n{odd}\n" in report.body  # a paragraph, not a list, table or heading
    assert f"By   {odd}" in report.body  # one cell, not four
    # Two column headers and one row header; and no list.
    assert report.html.count("<th") == 3 and ser.HTML_STYLE["marker"] not in report.html
    for real in ser.REPORTS:  # and in the shipped reports' header
        assert f"prepared by {odd}" in " ".join(ser.render_report(
            real, **{**CONTEXT, "prepared_by": odd}).body.split())
