"""The HTML edition on a phone, in Outlook for Windows and in dark mode.

What a test can see from the markup is checked here, on every report, both
variants, with and without figures: a fluid column, table roles and header
scopes, lang and dir, the preheader, Outlook-safe lists, bars and line heights,
the dark palette, the size Gmail clips at, and the previews' transfer encodings.
What only a browser can show (nothing cut off at 375 pixels) is checked by hand:
see docs/html-email.md, "Checking the HTML by hand".
"""

import email
import email.policy
import re
import xml.etree.ElementTree as ElementTree

import pytest

import send_exec_reports as ser
from conftest import example_data

CONTEXT = {"cycle": "2026-11-29", "prepared_by": "Reports Desk",
           "generated_at": "2026-11-29 03:00 UTC"}
EXAMPLE = example_data("2026-11-29")
GMAIL_CLIPS_AT = 100 * 1024  # bytes of HTML; Gmail hides the rest behind a link at ~102 KB
OUTLOOK_ONLY = re.compile(r"<!--\[if mso\]>.*?<!\[endif\]-->", re.S)


def every_report():
    """(id, rendered report) for each report, variant and figures file."""
    for spec in ser.REPORTS:
        for variant in ser.VARIANTS:
            for label, figures in (("figures", EXAMPLE), ("none", ser.NO_DATA)):
                yield (f"{spec.report_id}-{variant}-{label}",
                       ser.render_report(spec, variant=variant, data=figures, **CONTEXT))


REPORTS = dict(every_report())


def each_report(check):
    """Run a check on every report (one test, not 32: each costs pytest's own overhead);
    a failure names the report, variant and figures."""
    def test():
        for name, report in REPORTS.items():
            try:
                check(report)
            except AssertionError as failure:
                raise AssertionError(f"{name}: {failure}") from failure
    test.__name__, test.__doc__ = check.__name__, check.__doc__
    return test


def tree(report):
    """The page as elements (comments, where Outlook's own markup is, left out)."""
    return ElementTree.fromstring(report.html.split("\n", 1)[1])


def styles(element):
    return dict(rule.split(":", 1) for rule in (element.get("style") or "").split(";")
                if rule)


PHONE = 375  # pixels: nothing but Outlook's own table may be fixed wider than a phone


@each_report
def test_the_column_is_fluid_and_fixed_only_for_outlook(report):
    outlook = OUTLOOK_ONLY.findall(report.html)
    assert len(outlook) == 3  # its font, then its fixed table opened and closed
    assert 'width="640"' in outlook[1] and outlook[2] == \
        "<!--[if mso]></td></tr></table><![endif]-->"
    page = tree(report)
    [column] = [t for t in page.iter("table") if "max-width" in styles(t)]
    assert styles(column)["max-width"] == "640px" and styles(column)["width"] == "100%"
    for element in page.iter():  # nothing else is fixed wider than a phone
        width = element.get("width", "0")
        assert width.endswith("%") or int(width) <= PHONE, element.attrib
        rules = styles(element)
        assert "min-width" not in rules, element.attrib
        for name in ("width", "max-width"):
            if rules.get(name, "").endswith("px"):
                assert int(rules[name][:-2]) <= PHONE or element is column, element.attrib


@each_report
def test_layout_tables_are_presentation_and_data_tables_have_scoped_headers(report):
    tables = list(tree(report).iter("table"))
    data = [t for t in tables if t.find("tr/th") is not None]
    assert data, "every report has a table of figures"
    for table in tables:
        if table in data:
            assert table.get("role") is None
            header, *rows = table.findall("tr")
            assert [th.get("scope") for th in header] == ["col"] * len(header)
            for row in rows:
                first, *rest = list(row)
                assert first.tag == "th" and first.get("scope") == "row"
                assert all(cell.tag == "td" for cell in rest)
        else:
            assert table.get("role") == "presentation"


@each_report
def test_language_and_direction_are_on_a_wrapper_inside_the_body(report):
    body = tree(report).find("body")
    wrapper = body[0]
    assert wrapper.tag == "div" and wrapper.get("lang") == "en" and wrapper.get("dir") == "ltr"
    assert len(body) == 1  # everything is inside it: Gmail drops <html>'s attributes


@each_report
def test_a_hidden_preheader_leads_with_the_headline_numbers(report):
    preheader = tree(report).find("body/div/div")
    hidden = styles(preheader)
    assert hidden["display"] == "none" and hidden["mso-hide"] == "all"
    words = "".join(preheader.itertext()).replace("\u034f", "").split()
    assert words and " ".join(words) != report.subject
    first_table = next(t for t in tree(report).iter("table") if t.find("tr/th") is not None)
    label, value = ("".join(cell.itertext()) for cell in first_table.findall("tr")[1][:2])
    if value != "-":  # the first headline number; with none measured, the first words
        assert " ".join(words).startswith(f"{label}: {value}")
    assert ": -" not in " ".join(words)


def test_the_ceo_preheader_reads_the_figures_or_else_its_first_words():
    [ceo] = ser.select_reports("ceo")
    report = ser.render_report(ceo, data=EXAMPLE, **CONTEXT)
    assert ("Charters booked/month: 5 · JADA/QOS revenue/month: $9,600 · "
            "QDN revenue/month: $3,100") in report.html
    unmeasured = ser.render_report(ceo, data=ser.NO_DATA, **CONTEXT)
    preheader = "".join(tree(unmeasured).find("body/div/div").itertext()).replace("\u034f", "")
    assert preheader.strip() and ": -" not in preheader
    assert "Cycle" not in preheader  # not the header's words again


@each_report
def test_lists_bars_and_line_heights_hold_in_outlook(report):
    assert not re.search(r"<(ul|ol|li|hr)\b", report.html)  # Word drops list padding
    assert "inline-table" not in report.html and "nowrap" not in report.html
    for element in tree(report).iter():
        rules = styles(element)
        if "line-height" in rules and element.tag != "div":  # the hidden preheader aside
            assert rules.get("mso-line-height-rule") == "exactly", element.attrib
            assert rules["line-height"].endswith("px")
        for name in ("background", "background-color"):
            if name in rules and element.tag != "div":  # the wrapper: its table has bgcolor
                assert element.tag in ("body", "table", "td", "th"), element.attrib
                assert element.get("bgcolor") == rules[name], element.attrib
        if rules.get("padding", "0") != "0" and element.tag not in ("td", "th"):
            raise AssertionError(f"padding on a <{element.tag}>: Word ignores it")


@each_report
def test_the_page_says_it_has_a_dark_palette(report):
    head = tree(report).find("head")
    metas = {m.get("name"): m.get("content") for m in head.iter("meta")}
    assert metas["color-scheme"] == metas["supported-color-schemes"] == "light dark"
    [style] = head.findall("style")
    assert style.text == ser.HTML_HEAD_STYLE and "prefers-color-scheme:dark" in style.text
    used = {name for element in tree(report).iter()
            for name in (element.get("class") or "").split()}
    assert used <= set(re.findall(r"\.([a-z]+)[ {]", ser.HTML_HEAD_STYLE))  # each is styled
    assert {"page", "card", "ink", "header", "data", "inner"} <= used


def luminance(color):
    """WCAG's relative luminance of #rrggbb."""
    def channel(value):
        value /= 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(int(color[i:i + 2], 16)) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one, other):
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_both_palettes_are_readable():
    dark = re.search(r"prefers-color-scheme:dark\)\{(.*)\}\}", ser.HTML_HEAD_STYLE).group(1)

    def rule(selector, name):
        return re.search(rf"(?:^|}}){re.escape(selector)}\{{(?:[^}}]*;)?{name}:"
                         rf"(#[0-9a-f]{{6}})", dark).group(1)

    card, ink = rule(".card", "background"), rule(".ink", "color")
    for text, ground in ((ink, card), (rule(".heading", "color"), card),
                         (rule(".data td,.data th", "color"), card),
                         (rule(".header", "color"), rule(".header", "background"))):
        assert contrast(text, ground) >= 4.5, (text, ground)  # WCAG AA for body text
    for status in ("ontrack", "behind"):  # a status's colour, on the dark card
        assert contrast(rule(f".data .{status}", "color"), card) >= 4.5, status
    light = ser.HTML_COLOR
    for text, ground in (("ink", "card"), ("heading", "card"), ("header_ink", "header"),
                         ("good", "card"), ("bad", "card")):
        assert contrast(light[text], light[ground]) >= 4.5, (text, ground)


def test_a_word_too_long_for_a_phone_breaks_in_prose_not_in_tables():
    [ceo] = ser.select_reports("ceo")
    long_name = "Reports" + "x" * 150
    report = ser.render_report(ceo, data=EXAMPLE, **{**CONTEXT, "prepared_by": long_name})
    [paragraph] = [p for p in tree(report).iter("p") if long_name in "".join(p.itertext())]
    assert styles(paragraph)["overflow-wrap"] == "anywhere"  # a browser shows the rest:
    for cell in tree(report).iter("td"):                      # see docs/html_check.py
        assert "overflow-wrap" not in styles(cell) or cell.find("table") is None


@each_report
def test_every_message_is_well_under_what_gmail_clips(report):
    assert len(report.html.encode("utf-8")) < GMAIL_CLIPS_AT
    assert max(map(len, report.body.splitlines())) <= ser.TEXT_WIDTH


@pytest.mark.parametrize("variant", ser.VARIANTS)
def test_previews_are_never_base64(run_script, tmp_path, variant):
    run_script.settings(AWS_RECIPIENT_EMAIL_B="brief@example.com")
    result = run_script("--preview-dir", str(tmp_path / "p"), "--variant", variant)
    assert result.returncode == 0, result.stderr
    seen = set()
    for eml in (tmp_path / "p").glob("*.eml"):
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        for part in message.iter_parts():
            seen.add(part["Content-Transfer-Encoding"])
            assert part.get_content()  # and it decodes
    # The From name is not ASCII (conftest), so the text needs quoted-printable too.
    assert seen == {"quoted-printable"} or seen <= {"7bit", "quoted-printable"}
    assert "quoted-printable" in seen


def test_ascii_text_with_short_lines_goes_as_7bit():
    assert ser.transfer_encoding("plain\nlines\n") == "7bit"
    assert ser.transfer_encoding("x" * 79) == "quoted-printable"
    assert ser.transfer_encoding("Ünï") == "quoted-printable"
