"""Live figures: each cycle's reports carry that cycle's numbers, what changed and
what is off target, from the figures file the owner keeps."""

import csv
import io
import re

import pytest

import send_exec_reports as ser
from conftest import SENDER, example_data, section, section_heading

HEADER = ["as_of", "note", "charters_booked", "ota_listings", "monthly_burn",
          "email_open_rate", "accounting_system_live", "open_security_gaps"]
# Three snapshots: OTA listings reach their target of 2 in the last, the open
# rate is measured for the first time, the accounting system goes live.
THREE_SNAPSHOTS = [
    ["2026-11-01", "example", "2", "0", "8200", "", "no", "6"],
    ["2026-11-15", "example", "4", "1", "8000", "", "no", "4"],
    ["2026-11-29", "example", "5", "2", "7600", "27", "yes", "4"],
]


def write_figures(path, rows, header=HEADER):
    with open(path, "w", newline="") as file:
        csv.writer(file, lineterminator="\n").writerows([header, *rows])


def text_part(proxy, report_id):
    """The plain-text edition SES received for a report, read off the wire."""
    [text] = [request["text"] for request in proxy.sent()
              if request["tags"].get("report") == report_id]
    return text


def row_of(text, label, which=0):
    """The words of a table row in the text edition, by its first cell: the glance
    table's (which=0) or the trend table's (which=-1)."""
    lines = [line for line in text.splitlines() if line.startswith(label + "  ")]
    return lines[which][len(label):].split()


# --- What the reports say ------------------------------------------------------------


def test_every_report_carries_the_cycles_figures_changes_and_statuses(run_via_proxy, proxy,
                                                                      ses):
    ses.verify(SENDER)
    write_figures(run_via_proxy.figures, THREE_SNAPSHOTS)
    result = run_via_proxy("--cycle", "2026-11-30")
    assert result.returncode == 0, result.stderr
    ceo = text_part(proxy, "ceo")
    assert "figures as of 2026-11-29 (example)" in " ".join(ceo.split())
    # The label wraps in this table (its runway target widens it): its first line holds
    # the figures.
    assert row_of(ceo, "Charters") == ["5", "up", "1", "at", "least", "6", "!", "behind"]
    assert row_of(ceo, "OTA listings") == ["2", "up", "1", "at", "least", "2", "on", "track"]
    assert row_of(ceo, "Monthly burn") == ["$7,600", "down", "$400", "at", "most", "$9,000",
                                           "on", "track"]
    # The label wraps in this table: its first line holds the figures.
    assert re.search(r"(?m)^Accounting\b.*\s+yes\s+now yes\s+yes\s+on track$", ceo)
    assert row_of(ceo, "Pipeline value") == ["-", "-", "more", "than", "$0", "not", "measured"]
    since = section(ceo, "ceo", "changes", edition="text")
    assert "OTA listings: 1 to 2; reached its target (at least 2)." in " ".join(since.split())
    assert "Open security gaps" not in since  # it did not move
    cmo = text_part(proxy, "cmo")
    assert "Email open rate: measured for the first time, 27%." in " ".join(cmo.split())
    html = [m for m in ses.messages() if m["subject"].startswith("CEO")][0]["body"]
    assert "$7,600" in html and "down $400" in html and "on track" in html


def test_counted_findings_follow_the_data(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    write_figures(run_via_proxy.figures, THREE_SNAPSHOTS)
    for records in ser.RECORD_SHEETS:  # they would give figures of their own
        (run_via_proxy.data / records).unlink()
    before = run_via_proxy("--only", "ceo", "--cycle", "2026-11-15")
    after = run_via_proxy("--only", "ceo", "--cycle", "2026-11-29")
    assert before.returncode == after.returncode == 0
    earlier, later = (request["text"] for request in proxy.sent())
    lists = [section(text, "ceo", "items_shortfall", edition="text")
             for text in (earlier, later)]
    assert "OTA listings below target" in lists[0]
    assert "OTA listings below target" not in lists[1]  # the data says it is fixed
    assert "No accounting system deployed" in lists[0]
    assert "No accounting system deployed" not in lists[1]
    assert "Done: OTA listings below target (the figures show it)." in " ".join(later.split())
    # email_open_rate is empty on 2026-11-15; open_security_gaps is counted from the items
    measured = len(HEADER) - 2 - 2
    columns = len(ser.MEASURED_METRICS) - 1
    for text, missing in ((earlier, columns - measured), (later, columns - measured - 1)):
        listed = section(text, "ceo", "items_shortfall", edition="text")
        shortfalls = section_heading("ceo", "items_shortfall", edition="text")
        counted = re.match(rf"{re.escape(shortfalls)} \((\d+)\)", listed)
        assert int(counted.group(1)) == len(re.findall(r"(?m)^ +\d+\. ", listed))
        assert f"{section_heading('ceo', 'missing_kpis', edition='text')} ({missing})" in text


def test_an_action_the_figures_show_done_leaves_the_list(run_script, ses):
    write_figures(run_script.figures, THREE_SNAPSHOTS)
    texts = [run_script("--dry-run", "--only", "cmo", "--cycle", cycle).stdout
             for cycle in ("2026-11-15", "2026-11-29")]  # OTA listings: 1, then 2 of 2
    actions = [section(text, "cmo", "top_actions", edition="text") for text in texts]
    assert "List on Sailo first" in actions[0] and "List on Sailo first" not in actions[1]
    assert "  2. " in actions[0] and "until" not in actions[0]  # the mark never shows
    [cmo] = ser.select_reports("cmo")
    done = ser.render_report(cmo, cycle="c", prepared_by="p", generated_at="g",
                             data=ser.cycle_data("2026-11-29", None, ser.parse_figures(
                                 run_script.figures.read_text(), "f")))
    marker = f'style="{ser.HTML_STYLE["marker"]}">1.</td>'  # the list is still there
    assert marker in done.html and "[until" not in done.html + done.body


def test_a_trend_of_the_last_snapshots_in_both_editions(run_script, ses):
    write_figures(run_script.figures, THREE_SNAPSHOTS)
    result = run_script("--dry-run", "--only", "ceo", "--cycle", "2026-11-29")
    # From zero: 2, 4 and 5 charters are bars of 2, 4 and 5 fifths.
    assert row_of(result.stdout, "Charters booked/month", -1) == ["[-+#]", "2", "5"]
    assert row_of(result.stdout, "OTA listings", -1) == ["[.-#]", "0", "2"]
    [ceo] = ser.select_reports("ceo")
    data = ser.cycle_data("2026-11-29", None,
                          ser.parse_figures(run_script.figures.read_text(), "f"))
    html = ser.render_report(ceo, cycle="c", prepared_by="p", generated_at="g",
                             data=data).html
    assert html.count(f'style="{ser.HTML_STYLE["trend_column"]}') >= 3 * 2


def test_no_figures_file_is_a_warning_and_every_figure_reads_not_measured(run_script, ses):
    ses.verify(SENDER)
    run_script.figures.unlink()
    result = run_script("--only", "ceo", "--cycle", "2026-11-29")
    assert result.returncode == 0
    assert result.stderr.count(f"no figures file at {run_script.figures}") == 1
    [message] = ses.messages()
    assert "not measured" in message["body"] and "none for this cycle in the figures sheet" in message["body"]


def test_a_figures_file_saved_as_excel_csv_utf8_is_read(run_script):
    """Excel's "CSV UTF-8" starts the file with a byte-order mark."""
    run_script.figures.write_bytes(b"\xef\xbb\xbf" + run_script.figures.read_bytes())
    result = run_script("--dry-run", "--only", "ceo", "--cycle", "2026-11-29")
    assert result.returncode == 0, result.stderr
    assert "figures as of 2026-11-29" in " ".join(result.stdout.split())


@pytest.mark.parametrize("cycle, as_of", [("2026-11-20", "2026-11-15"),
                                          ("2026-11-15", "2026-11-15"),
                                          ("weekly-7", "2026-11-29")])
def test_a_cycle_uses_the_newest_snapshot_on_or_before_its_date(run_script, ses, cycle, as_of):
    write_figures(run_script.figures, THREE_SNAPSHOTS)
    result = run_script("--dry-run", "--only", "cfo", "--cycle", cycle)
    assert f"figures as of {as_of}" in " ".join(result.stdout.split())


def test_every_text_line_stays_within_72_columns(run_script):
    snapshots = ser.parse_figures(run_script.figures.read_text(), "example")  # the example
    for figures in (ser.NO_DATA, example_data("2026-11-29", snapshots)):
        for spec in ser.REPORTS:
            for variant in ser.VARIANTS:
                report = ser.render_report(spec, cycle="2026-11-29", variant=variant,
                                           prepared_by="Executive Reports, Example Holdings",
                                           generated_at="2026-11-29 03:00 UTC",
                                           data=figures)
                wide = [line for line in report.body.splitlines() if len(line) > 72]
                assert not wide, (spec.report_id, variant, wide)


# --- Bad and stale data -------------------------------------------------------------


BAD_FILES = {
    "an unknown column": (["as_of", "charters", "ota_listings"], [["2026-11-01", "2", "0"]],
                          "1: charters: no such metric"),
    "a column named twice": (["as_of", "ota_listings", "ota_listings"],
                             [["2026-11-01", "0", "0"]], "1: ota_listings: named twice"),
    "no as_of first": (["ota_listings", "as_of"], [["0", "2026-11-01"]],
                       "1: ota_listings: the first column must be as_of"),
    "a count that is not a number": (HEADER[:4], [["2026-11-01", "", "two", "0"]],
                                     "2: charters_booked: 'two' is not a whole number"),
    "a count with a fraction": (HEADER[:4], [["2026-11-01", "", "2.5", "0"]],
                                "2: charters_booked: '2.5' is not a whole number"),
    "a percent over 100": (["as_of", "email_open_rate"], [["2026-11-01", "140"]],
                           "2: email_open_rate: '140' is not a percentage"),
    "yes or no": (["as_of", "accounting_system_live"], [["2026-11-01", "maybe"]],
                  "2: accounting_system_live: 'maybe' is not yes or no"),
    "a date that is not one": (HEADER[:3], [["2026-13-01", "", "2"]],
                               "2: as_of: '2026-13-01' is not a date"),
    "a duplicate date": (HEADER[:3], [["2026-11-01", "", "2"], ["2026-11-01", "", "3"]],
                         "3: as_of: 2026-11-01 is not after 2026-11-01 (line 2)"),
    "dates out of order": (HEADER[:3], [["2026-11-15", "", "2"], ["2026-11-01", "", "3"]],
                           "3: as_of: 2026-11-01 is not after 2026-11-15"),
    "too many cells": (HEADER[:3], [["2026-11-01", "", "2", "9"]],
                       "2: (4 cells): more cells than the 3 columns"),
    "an exponent": (HEADER[:3], [["2026-11-01", "", "1e999999999"]],
                    "2: charters_booked: '1e999999999' is not a whole number"),
    "a negative count": (HEADER[:3], [["2026-11-01", "", "-2"]],
                         "2: charters_booked: '-2' is not a whole number"),
    "a range the wrong way round": (["as_of", "monthly_burn"], [["2026-11-01", "9000-7000"]],
                                    "2: monthly_burn: '9000-7000' is not dollars"),
    "not a number": (["as_of", "cash_on_hand"], [["2026-11-01", "NaN"]],
                     "2: cash_on_hand: 'NaN' is not dollars"),
}


@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("mode", [[], ["--dry-run"], ["--check"]])
def test_bad_figures_exit_65_naming_file_line_and_column(run_script, ses, case, mode):
    header, rows, problem = BAD_FILES[case]
    write_figures(run_script.figures, rows, header)
    result = run_script(*mode)
    assert result.returncode == 65
    assert f"data error: {run_script.figures}:{problem}" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert ses.messages() == [] and run_script.audit_records() == []


def test_a_stray_quote_is_an_error_not_a_swallowed_file(run_script, ses):
    run_script.figures.write_text('as_of,note,monthly_burn\n2026-11-01,"stray quote,8000\n'
                                  '2026-11-15,,7000\n2026-11-29,,6000\n')
    result = run_script("--dry-run", "--cycle", "2026-11-30")
    assert result.returncode == 65
    assert f"data error: {run_script.figures}:" in result.stderr
    assert "not CSV as a spreadsheet writes it" in result.stderr


def test_every_bad_cell_is_reported_at_once(run_script, ses):
    write_figures(run_script.figures, [["2026-11-01", "", "x", "y"], ["someday", "", "1", "1"]],
                  HEADER[:4])
    result = run_script("--dry-run")
    assert result.returncode == 65
    assert len([line for line in result.stderr.splitlines()
                if line.startswith("data error:")]) == 3


def test_old_figures_warn_and_fresh_ones_do_not(run_script, ses):
    write_figures(run_script.figures, THREE_SNAPSHOTS)
    old = run_script("--dry-run", "--cycle", "2027-01-15")
    assert "stale figures: the newest snapshot is as of 2026-11-29, 47 days before" in old.stderr
    fresh = run_script("--dry-run", "--cycle", "2026-12-01")
    assert "stale" not in fresh.stderr


def test_the_snapshot_the_last_cycle_sent_is_stale_news(run_script, ses):
    ses.verify(SENDER)
    write_figures(run_script.figures, THREE_SNAPSHOTS)
    assert run_script("--only", "ceo", "--cycle", "2026-11-30").returncode == 0
    again = run_script("--only", "ceo", "--cycle", "2026-12-01")
    assert again.returncode == 0
    assert ("stale figures: the snapshot as of 2026-11-29 is the one cycle 2026-11-30 "
            "already reported") in again.stderr


@pytest.mark.parametrize("stale_by", ["age", "repeat", "no figures"])
def test_requiring_fresh_figures_refuses_stale_ones_with_65(run_script, ses, stale_by):
    ses.verify(SENDER)
    write_figures(run_script.figures, THREE_SNAPSHOTS)
    if stale_by == "repeat":
        run_script("--only", "ceo", "--cycle", "2026-11-30")
    elif stale_by == "no figures":
        run_script.figures.unlink()
    sent_before = len(ses.messages())
    run_script.settings(REPORT_DATA_REQUIRE_FRESH="true")
    cycle = "2027-02-01" if stale_by == "age" else "2026-12-01"
    result = run_script("--cycle", cycle)
    assert result.returncode == 65
    assert len(ses.messages()) == sent_before
    refused = [r for r in run_script.audit_records() if r["cycle"] == cycle]
    assert len(refused) == len(ser.REPORTS)
    assert {(r["status"], r["error"]["code"]) for r in refused} == {("skipped", "StaleData")}
    assert "REPORT_DATA_REQUIRE_FRESH is set" in result.stderr
    assert run_script("--check", "--cycle", cycle).returncode == 65


@pytest.mark.parametrize("name, value", [("REPORT_DATA_MAX_AGE_DAYS", "0"),
                                         ("REPORT_DATA_MAX_AGE_DAYS", "a month"),
                                         ("REPORT_DATA_REQUIRE_FRESH", "maybe")])
def test_bad_freshness_settings_are_config_errors(run_script, ses, name, value):
    result = run_script("--dry-run", env={name: value})
    assert result.returncode == 78 and f"config error: {name}" in result.stderr


# --- The audit log and the catalogue -------------------------------------------------


def test_the_audit_log_records_which_figures_each_report_carried(run_script, ses):
    ses.verify(SENDER)
    write_figures(run_script.figures, THREE_SNAPSHOTS)
    run_script("--only", "ceo,cfo", "--cycle", "2026-11-29")
    records = run_script.audit_records()
    assert {r["data_as_of"] for r in records} == {"2026-11-29"}
    newest = ser.parse_figures(run_script.figures.read_text(), "f")[-1]
    assert {r["data_sha256"] for r in records} == {newest.sha256}
    # The same figures written as a spreadsheet exports them are the same snapshot.
    dressed = [["2026-11-29", "example", "5", "2", "$7,600", "27%", "TRUE", "4"]]
    write_figures(run_script.figures, dressed)
    assert ser.parse_figures(run_script.figures.read_text(), "f")[-1].sha256 == newest.sha256
    history = run_script("--history", "1")
    assert "figures" in history.stdout and "2026-11-29" in history.stdout


def test_the_data_option_and_setting_choose_the_file(run_script, ses, tmp_path):
    elsewhere = tmp_path / "elsewhere.csv"
    write_figures(elsewhere, THREE_SNAPSHOTS[:1])
    by_option = run_script("--dry-run", "--only", "cfo", "--data", str(elsewhere))
    assert "figures as of 2026-11-01" in " ".join(by_option.stdout.split())
    run_script.settings(REPORT_DATA_PATH="elsewhere.csv")  # relative to the env file
    by_setting = run_script("--dry-run", "--only", "cfo")
    assert "figures as of 2026-11-01" in " ".join(by_setting.stdout.split())


def test_metrics_lists_the_catalogue_and_prints_a_header_for_a_new_file(run_script):
    catalogue = run_script("--metrics")
    assert catalogue.returncode == 0
    for metric in ser.METRICS:
        assert metric.metric_id in catalogue.stdout and metric.label in catalogue.stdout
    header = run_script("--metrics", "--csv-header")
    columns = next(csv.reader(io.StringIO(header.stdout)))
    written = [m for m in ser.METRICS if not (m.formula or m.counts)]  # the rest are counted
    assert columns[0] == "as_of" and columns[2:] == [m.metric_id for m in written]
    run_script.figures.write_text(header.stdout)  # a new file with no rows yet is valid
    assert run_script("--dry-run").returncode == 0
    assert run_script("--csv-header").returncode == 64


def test_the_example_file_starts_with_the_source_documents_figures():
    snapshots = ser.parse_figures(
        (ser.SCRIPT_DIR / "report_data.example" / "figures.csv").read_text(), "example")
    first = snapshots[0]
    assert first.note == "figures from the source document"
    assert ser.figure_text(first.figures["monthly_burn"], "dollars") == "$7,000-9,000"
    assert ser.figure_text(first.figures["aws_monthly_cost"], "dollars") == "$50-84"
    assert first.figures["email_list_size"][0] == 3676
    assert first.figures["ota_listings"][0] == 0
    assert all("example" in snapshot.note for snapshot in snapshots[1:])


def test_stale_figures_reach_cron_even_with_quiet(run_script, ses):
    ses.verify(SENDER)
    write_figures(run_script.figures, THREE_SNAPSHOTS)
    result = run_script("--quiet", "--only", "ceo", "--cycle", "2027-01-15")
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr.startswith("warning: stale figures: the newest snapshot is as of")


# --- Figures as a spreadsheet writes them, and as the text edition shows them ---------


def test_wide_values_still_fit_72_columns(run_script):
    write_figures(run_script.figures, [
        ["2026-11-01", "", "", "", "27500-32500", "", "", ""],
        ["2026-11-29", "", "", "", "2500000-3000000.55", "", "", ""]])
    result = run_script("--dry-run", "--cycle", "2026-11-29")
    assert result.returncode == 0, result.stderr
    body = [line for line in result.stdout.splitlines() if not line.startswith("Subject: ")]
    assert max(map(len, body)) <= 72  # the headers above each report are not the edition
    assert "$2,500,000-" in result.stdout


def test_a_range_counts_by_its_worse_end_against_the_target(run_script):
    write_figures(run_script.figures, [["2026-11-29", "", "", "", "8500-9500", "", "", ""]])
    result = run_script("--dry-run", "--only", "cfo", "--cycle", "2026-11-29")
    assert row_of(result.stdout, "Monthly burn") == ["$8,500-9,500", "-", "at", "most",
                                                     "$9,000", "!", "behind"]


def test_negative_dollars_and_spreadsheet_spellings_are_read(run_script):
    header = ["as_of", "rental_net_income", "accounting_system_live", "email_open_rate"]
    write_figures(run_script.figures, [["2026-11-15", "1850", "FALSE", "24"],
                                       ["2026-11-29", "-$400", "TRUE", "27%"]], header)
    (run_script.data / "rental.csv").unlink()  # it would give the net rent itself
    rental = run_script("--dry-run", "--only", "rental-3028", "--cycle", "2026-11-29")
    assert rental.returncode == 0, rental.stderr
    assert row_of(rental.stdout, "Net rent/month")[:3] == ["-$400", "down", "$2,250"]
    cmo = run_script("--dry-run", "--only", "cmo", "--cycle", "2026-11-29")
    assert row_of(cmo.stdout, "Email open rate")[:4] == ["27%", "up", "3", "points"]


@pytest.mark.parametrize("column, cell", [
    ("monthly_burn", "7600,50"),  # a decimal comma: not $760,050
    ("monthly_burn", "20%"),  # a percent in a dollars column
    ("email_open_rate", "$24"),  # dollars in a percent column
    ("ota_listings", "1,5"),  # not 15
    ("monthly_burn", "7,60"),
])
def test_a_figure_in_the_wrong_unit_is_refused_not_misread(run_script, column, cell):
    write_figures(run_script.figures, [["2026-11-29", cell]], ["as_of", column])
    result = run_script("--dry-run", "--cycle", "2026-11-29")
    assert result.returncode == 65
    assert f"{column}: {cell!r} is not" in result.stderr


def test_figures_as_a_spreadsheet_formats_them_are_still_read(run_script):
    write_figures(run_script.figures, [["2026-11-29", "$8,000", "24%", "1,234", "7,000-9,500"]],
                  ["as_of", "cash_on_hand", "email_open_rate", "email_list_size",
                   "monthly_burn"])
    result = run_script("--dry-run", "--only", "cfo", "--cycle", "2026-11-29")
    assert result.returncode == 0, result.stderr
    assert "$7,000-9,500" in result.stdout and "$8,000" in result.stdout
