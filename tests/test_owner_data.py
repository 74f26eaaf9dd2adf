"""The owner's data folder: the items and targets the owner keeps decide what the
reports say, not only their numbers.  Asserted on what the SES server received."""

import csv
import hashlib
import html
import json
import re
import shutil
from datetime import date, datetime, timedelta, timezone

import pytest

import send_exec_reports as ser
from conftest import SENDER, FakeClock, section, section_heading

CYCLE = "2026-12-01"  # the example folder's newest snapshot is 2026-11-29
TITLES = {spec.report_id: spec.title for spec in ser.REPORTS}
ITEMS_HEADER = ["as_of", "id", "status", "note", "reports", "kind", "text", "due"]


def write_sheet(path, header, rows, *, ending="\n"):
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file, lineterminator=ending).writerows([header, *rows])


def add_rows(path, rows):
    """Append rows to a sheet, as the owner adds a line to the spreadsheet."""
    with open(path, "a", newline="", encoding="utf-8") as file:
        csv.writer(file, lineterminator="\n").writerows(rows)


def words(markup):
    """What a reader sees of an HTML part: its words, one space apart."""
    body = re.sub(r"<head>.*?</head>|<wbr />", "", markup, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def received(ses, report_id):
    """The newest message SES received for a report, as its reader sees it."""
    return words([m for m in ses.messages()
                  if m["subject"].startswith(TITLES[report_id])][-1]["body"])


def send(run_script, ses, *reports, cycle=CYCLE):
    """Send these reports for the cycle (again, whatever the ledger says) and return
    what SES received for each."""
    ses.verify(SENDER)
    result = run_script("--only", ",".join(reports), "--cycle", cycle, "--force")
    assert result.returncode == 0, result.stderr
    return {report_id: received(ses, report_id) for report_id in reports}


# --- The example folder tells one story --------------------------------------------


def test_the_example_folder_contradicts_none_of_its_figures(run_script, ses):
    said = send(run_script, ses, *TITLES)
    agenda = section(said["ceo"], "ceo", "agenda", through="other_items")
    assert "accounting system" not in agenda.lower()  # it is live
    assert "Sailo" not in agenda  # two OTA listings: on track
    matrix = section(said["cmo"], "cmo", "channel_matrix")
    assert "not listed" not in matrix and "none" not in matrix
    assert "OTA marketplaces JADA / QOS 2 listed" in matrix
    assert "Analytics every site 3 site(s) measured" in matrix
    assert "Existing structure: none" not in said["accounting"]
    assert "Rent is not recorded in a ledger" not in said["rental-3028"]
    assert "Billing model: none yet" not in said["dc-portfolio"]
    # An active client on no billing model is a billing gap that needs attention; the
    # billing model itself (a rate card) is what items.csv says: done on 2026-11-20.
    assert "Old Town Tacos: on no billing model" in said["dc-portfolio"]
    assert "Billing gap: Old Town Tacos, $500 a month, on no billing model" in section(
        said["dc-portfolio"], "dc-portfolio", "attention")
    assert "clients.csv: 3 of 4 active clients are on a billing model." in said["dc-portfolio"]
    assert "goes unbilled" not in said["dc-portfolio"]
    assert "Set a DC billing model" not in said["dc-portfolio"]
    # Two security gaps open in the items, as the figures said before the items did.
    assert re.search(r"Open security gaps 2 no change at most 0 . behind", said["cto"])
    assert f"{section_heading('cto', 'items_security_gap')} (2)" in said["cto"]


# --- Each statement of state follows its datum ----------------------------------------

# (report, item, what the report says while it is open, what it says once done): an
# open state of the rental or the portfolio is its action; once done, it is news.
STATE_ITEMS = [
    ("rental-3028", "rental-valuation", "Obtain a current valuation of the property.",
     "Done: A current valuation is on file (marked done 2026-11-30"),
    ("rental-3028", "rental-rent-ledger", "Record every rent payment under Revenue - Rent.",
     "Done: Rent is recorded in the ledger, under Revenue - Rent (marked done 2026-11-30"),
    ("yacht-delivery", "yacht-shared-calendar",
     f"{section_heading('yacht-delivery', 'items_state')} 1. Deliveries and JADA charters "
     "do not share a calendar.",
     "Deliveries and JADA charters share one calendar (marked done"),
    ("yacht-delivery", "yacht-service-model", "quoted by hand and crewed ad hoc",
     "The delivery service model (quoting, crewing, scheduling) is written down"),
    ("dc-portfolio", "dc-billing-model", "Set a DC billing model: rate card, invoice schedule",
     "Done: DC has a billing model (marked done 2026-11-30)."),
    ("dc-portfolio", "dc-client-list", "List every client with start date, term and renewal "
     "date in clients.csv", "Every client is listed with start date, term and renewal date "
     "(marked done"),
    # Counts follow the items they count.
    ("cto", "waf", f"{section_heading('cto', 'items_security_gap')} (2)",
     f"{section_heading('cto', 'items_security_gap')} (1)"),
    ("cmo", "seo-profile", "Local search / SEO QDN 2 roadmap step(s) open",
     "Local search / SEO QDN 1 roadmap step(s) open"),
    ("accounting", "books-m2", f"{section_heading('accounting', 'items_milestone')} (3)",
     f"{section_heading('accounting', 'items_milestone')} (2)"),
]


def without_records(run_script):
    """The example folder with no record sheets and no valuation figure: what closes
    items by itself is gone, and only items.csv decides."""
    for records in ser.RECORD_SHEETS:
        (run_script.data / records).unlink()
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    position = rows[0].index("property_valuation")
    write_sheet(run_script.figures, rows[0], [row[:position] + [""] + row[position + 1:]
                                              for row in rows[1:]])


@pytest.mark.parametrize("report_id, item_id, while_open, once_done", STATE_ITEMS,
                         ids=[case[1] for case in STATE_ITEMS])
def test_a_statement_of_state_follows_its_item(run_script, ses, report_id, item_id,
                                               while_open, once_done):
    without_records(run_script)
    for status, shown, hidden in (("open", while_open, once_done),
                                  ("done", once_done, while_open)):
        add_rows(run_script.items, [["2026-11-30", item_id, status, "", "", "", "", ""]])
        text = send(run_script, ses, report_id)[report_id]
        assert shown in text and hidden not in text, status


# (report, metric column, [(its value in the cycle's snapshot, what the report says then,
# what it does not say then)])
STATE_METRICS = [
    ("accounting", "accounting_system_live", [
        ("yes", "An accounting system is live (figures as of 2026-11-29)", "No accounting"),
        ("no", "No accounting system is live (figures as of 2026-11-29)",
         "An accounting system is live"),
        ("", "Not measured: whether an accounting system is live goes in the figures sheet",
         "accounting system is live (")]),
    ("cmo", "ota_listings", [
        ("2", "OTA marketplaces JADA / QOS 2 listed", "not measured"),
        ("", "OTA marketplaces JADA / QOS not measured", "2 listed")]),
    ("cmo", "sites_with_analytics", [
        ("1", "Analytics every site 1 site(s) measured", "3 site(s)"),
        ("3", "Analytics every site 3 site(s) measured", "1 site(s)")]),
    ("yacht-delivery", "cost_per_delivery", [
        ("1180", "Cost per delivery $1,180", "Delivery costs are not recorded"),
        ("", f"{section_heading('yacht-delivery', 'items_state')} 1. Delivery costs are not "
         "recorded per delivery.", "Cost per delivery $1,180")]),
    ("cmo", "email_list_size", [
        ("3715", "The list: 3,715 people (figures as of 2026-11-29).", "not measured: add "
         "email_list_size"),
        ("", "The list's size is not measured: add email_list_size to the figures sheet.",
         "3,715 people")]),
]


@pytest.mark.parametrize("report_id, column, cases", STATE_METRICS,
                         ids=[case[1] for case in STATE_METRICS])
def test_a_statement_of_state_follows_its_figure(run_script, ses, report_id, column, cases):
    without_records(run_script)
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    position = rows[0].index(column)
    for figure, expected, not_said in cases:
        rows[-1][position] = figure
        write_sheet(run_script.figures, rows[0], rows[1:])
        text = send(run_script, ses, report_id)[report_id]
        assert expected in text and not_said not in text, figure


# --- Items: done, and the owner's own -------------------------------------------------


def test_an_item_marked_done_leaves_every_report_and_the_agenda(run_script, ses):
    before = send(run_script, ses, "ceo", "dc-portfolio")
    assert "Carole transition risk" in section(before["ceo"], "ceo", "items_shortfall")
    assert "Document Carole's handover" in section(before["ceo"], "ceo", "agenda",
                                                   through="other_items")
    assert "Document Carole's handover" in before["dc-portfolio"]
    for report in ("ceo", "dc-portfolio"):  # overdue since 2026-11-22
        assert "Overdue 9 days: Document Carole's handover (due 2026-11-22" in section(
            before[report], report, "attention"), report
    shortfalls = section_heading("ceo", "items_shortfall")
    count = int(re.search(rf"{re.escape(shortfalls)} \((\d+)\)", before["ceo"]).group(1))
    add_rows(run_script.items, [["2026-11-30", "carole-handover", "done",
                                 "handover written up", "", "", "", ""]])
    after = send(run_script, ses, "ceo", "dc-portfolio")
    assert f"{shortfalls} ({count - 1})" in after["ceo"]
    assert f"Share of {count - 1}" in section(after["ceo"], "ceo", "shortfall_split")
    assert "Carole" not in section(after["ceo"], "ceo", "items_shortfall")
    assert "Carole" not in section(after["ceo"], "ceo", "agenda", through="other_items")
    assert "Document Carole's handover" not in after["dc-portfolio"]
    for report in ("ceo", "dc-portfolio"):
        assert "Carole" not in section(after[report], report, "attention"), report
    since = section(after["ceo"], "ceo", "changes")
    assert ("Done: Carole transition risk (marked done 2026-11-30: handover written up)."
            in since)


def test_an_owners_new_item_appears_counted_in_the_reports_it_names(run_script, ses):
    before = send(run_script, ses, "ceo", "cto")
    ranked = section_heading("cto", "actions")
    actions = int(re.search(rf"{re.escape(ranked)} \((\d+)\)", before["cto"]).group(1))
    add_rows(run_script.items, [["2026-11-30", "board-pack", "open", "", "ceo, cto", "action",
                                 "Prepare the board pack.", "2026-12-04"]])
    after = send(run_script, ses, "ceo", "cto", "cfo")
    assert f"{ranked} ({actions + 1})" in after["cto"]
    assert "Prepare the board pack" in after["cto"]
    agenda = section(after["ceo"], "ceo", "agenda")
    assert re.search(r"\b1 [^|]*Prepare the board pack", agenda)  # due in week 1
    since = section(after["ceo"], "ceo", "changes")
    assert "Opened: Prepare the board pack." in since
    assert "Due: Prepare the board pack (due 2026-12-04)." in since
    assert "board pack" not in after["cfo"]  # a report it does not name


def test_an_overdue_item_is_said_and_heads_the_agenda(run_script, ses):
    add_rows(run_script.items, [["2026-11-02", "sergio-equity", "open", "", "", "", "",
                                 "2026-11-20"]])
    text = send(run_script, ses, "ceo")["ceo"]
    attention = section(text, "ceo", "attention")
    assert ("Overdue 11 days: Document the Sergio equity terms in a written agreement (due "
            "2026-11-20") in attention
    # Said once, in Needs attention: no longer a line of what changed.
    assert "Sergio" not in section(text, "ceo", "changes")
    agenda = section(text, "ceo", "agenda")
    assert agenda.index("Overdue") < agenda.index(" 2 ")


def test_a_row_dated_after_the_cycle_does_not_count_yet(run_script, ses):
    add_rows(run_script.items, [["2026-12-20", "sergio-equity", "done", "", "", "", "", ""]])
    assert "Sergio equity risk" in send(run_script, ses, "ceo")["ceo"]


def test_a_metric_meeting_its_target_closes_its_item(run_script, ses):
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    position = rows[0].index("qdn_jobs_booked")
    rows[-1][position] = "0"  # the funnel books nothing: the shortfall is open
    write_sheet(run_script.figures, rows[0], rows[1:])
    assert "QDN funnel breakage" in send(run_script, ses, "ceo")["ceo"]
    rows[-1][position] = "1"  # at least 1 a week: closed
    write_sheet(run_script.figures, rows[0], rows[1:])
    text = send(run_script, ses, "ceo")["ceo"]
    assert "QDN funnel breakage" not in section(text, "ceo", "items_shortfall",
                                                through="shortfall_split")


def test_open_security_gaps_are_counted_from_the_items_and_a_figure_that_differs_is_said(
        run_script, ses):
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    write_sheet(run_script.figures, [*rows[0], "open_security_gaps"],
                [[*row, "5"] for row in rows[1:]])
    ses.verify(SENDER)
    result = run_script("--only", "cto", "--cycle", CYCLE)
    assert result.returncode == 0
    assert "open_security_gaps 5 is not used: the items leave 2 open" in result.stderr
    text = received(ses, "cto")
    assert re.search(r"Open security gaps 2 no change at most 0 . behind", text)


# --- Targets and the figures that decide ----------------------------------------------

REVENUE_HEADER = ["as_of", "note", "revenue_jada_qos", "revenue_qdn", "revenue_dc",
                  "monthly_burn", "cash_on_hand", "pipeline_value"]


def test_the_cfo_sees_monthly_revenue_against_target_and_the_runway(run_script, ses):
    without_records(run_script)  # clients.csv would give DC's revenue itself
    write_sheet(run_script.figures, REVENUE_HEADER, [
        ["2026-10-20", "test", "8000", "2000", "3000", "15000", "30000", "0"],
        ["2026-11-20", "test", "9000", "2500", "3500", "20000", "20000", "500"],
    ])
    write_sheet(run_script.targets, ["metric", "month", "target"], [
        ["revenue_jada_qos", "2026-10", "8500"], ["revenue_jada_qos", "2026-11", "9000"],
        ["revenue_qdn", "2026-10", "2000"], ["revenue_qdn", "2026-11", "2000"],
        ["revenue_dc", "2026-10", "3000"], ["revenue_dc", "2026-11", "4000"],
        ["revenue_total", "2026-12", "16000"], ["revenue_jada_qos", "2027-01", "10000"],
    ])
    text = send(run_script, ses, "cfo")["cfo"]
    table = section(text, "cfo", "revenue_months")
    assert "2026-10 JADA/QOS $8,500 $8,000 ▼ behind, -$500" in table
    assert "2026-10 QDN $2,000 $2,000 ✓ on track, $0" in table
    assert "2026-10 Total $13,500 $13,000 ▼ behind, -$500" in table  # the sum of the three
    assert "2026-11 DC $4,000 $3,500 ▼ behind, -$500" in table
    assert "2026-11 JADA/QOS $9,000 $9,000 ✓ on track, $0" in table
    assert "2026-11 QDN $2,000 $2,500 ✓ on track, +$500" in table
    assert "2026-11 Total $15,000 $15,000 ✓ on track, $0" in table
    assert "2026-12 Total $16,000 - to come" in table  # the month is not over
    assert "2027-01 JADA/QOS $10,000 - to come" in table  # to the last month targeted
    assert "Q4 2026 JADA/QOS - - to come" in table  # no December target for it
    assert "Q4 2026 Total $44,500 - to come" in table  # December is still to come
    assert "Q1 2027 Total" in table
    glance = section(text, "cfo", "glance")
    # $20,000 of cash, $20,000 of burn against $15,000 of revenue: 4 months.
    assert "Runway 4.0 months now 4.0 months" in glance
    assert "Revenue/month, total $15,000 up $2,000" in glance
    assert "Revenue minus burn -$5,000 down $3,000" in glance
    assert "more than $0" in glance and not re.search(r"\$1(?![0-9,.])", text)


def test_runway_is_cash_over_burn_less_revenue_or_cash_flow_positive():
    header = ["as_of", *ser.REVENUE_METRICS, "monthly_burn", "cash_on_hand"]

    def runway(*row):
        [snapshot] = ser.parse_figures(
            "\n".join([",".join(header), ",".join(["2026-11-29", *row])]), "f")
        return ser.figure_text(ser.runway(snapshot), "months")

    assert runway("2000", "2000", "1000", "10000", "20000") == "4.0 months"
    assert runway("9000", "2000", "1000", "10000", "20000") == "cash-flow positive"
    # A range counts by its worse end: the higher burn.
    assert runway("2000", "2000", "1000", "9000-11000", "20000") == "3.3 months"


def test_a_months_target_wins_over_the_catalogue(run_script, ses):
    write_sheet(run_script.targets, ["metric", "month", "target"],
                [["charters_booked", "2026-11", "4"]])  # the snapshot's month
    text = send(run_script, ses, "ceo")["ceo"]
    assert re.search(r"Charters booked/month 5 up 1 at least 4 ✓ on track", text)
    metrics = run_script("--metrics")
    assert re.search(r"charters_booked +2026-11 +at least 4", metrics.stdout)
    assert str(run_script.targets) in metrics.stdout


# --- Seen at a glance ----------------------------------------------------------------


def test_a_status_is_a_symbol_and_a_colour_in_html_and_marked_in_text(run_script, ses):
    ses.verify(SENDER)
    result = run_script("--only", "ceo", "--cycle", CYCLE)
    assert result.returncode == 0
    [message] = ses.messages()
    assert (f'<span class="behind" style="{ser.HTML_STYLE["behind"]}">&#9660;&#160;behind'
            f'</span>') in message["body"]
    assert "font-weight:bold" in ser.HTML_STYLE["behind"]
    assert (f'<span class="ontrack" style="{ser.HTML_STYLE["ontrack"]}">&#10003;&#160;on '
            f'track</span>') in message["body"]
    dry = run_script("--dry-run", "--only", "ceo", "--cycle", CYCLE).stdout
    assert re.search(r"(?m)^Charters +5 .* ! behind$", dry)


def test_trend_bars_rise_from_zero():
    cash = ser.Trend((21000, 19500, 20400))  # a dip of 7%
    tallest = 19
    levels = cash.levels(tallest + 1)
    assert levels == [tallest, round(19500 / 21000 * tallest), round(20400 / 21000 * tallest)]
    assert levels[1] >= tallest - 2  # not drawn empty


# --- Bad rows ---------------------------------------------------------------------------

def items_sheet(item_id, status, **cells):
    """items.csv holding one row dated 2026-11-20: this id and status, these cells."""
    row = {"as_of": "2026-11-20", "id": item_id, "status": status, **cells}
    return "items.csv", ITEMS_HEADER, [[row.get(column, "") for column in ITEMS_HEADER]]


def targets_sheet(*rows):
    return "targets.csv", ["metric", "month", "target"], [list(row) for row in rows]


BAD_SHEETS = {
    "an unknown item without text": (
        items_sheet("sergio-equty", "done"),
        "items.csv:2: id: 'sergio-equty' is none of the source document's items (--items "
        "lists them)"),
    "an unknown status": (items_sheet("waf", "closed"),
                          "items.csv:2: status: 'closed' is not one of open, done, dropped"),
    "an item for no report": (items_sheet("mine", "open", reports="coo", text="Mine."),
                              "items.csv:2: reports: coo names no report"),
    "a due date that is no date": (items_sheet("waf", "open", due="next week"),
                                   "items.csv:2: due: 'next week' is not a date"),
    "an unknown metric": (targets_sheet(("charters", "2026-12", "6")),
                          "targets.csv:2: metric: 'charters' is no metric"),
    "a month that is not YYYY-MM": (targets_sheet(("charters_booked", "12/2026", "6")),
                                    "targets.csv:2: month: '12/2026' is not a month (YYYY-MM, from 1970 to 2200)"),
    "a month 13": (targets_sheet(("charters_booked", "2026-13", "6")),
                   "targets.csv:2: month: '2026-13' is not a month"),
    "a duplicate target": (
        targets_sheet(("charters_booked", "2026-12", "6"), ("charters_booked", "2026-12", "7")),
        "targets.csv:3: month: charters_booked has a target for 2026-12 already, on line 2"),
    "a target in the wrong unit": (
        targets_sheet(("ota_listings", "2026-12", "2.5")),
        "targets.csv:2: target: '2.5' is not one value in ota_listings's unit"),
    "a range as a target": (targets_sheet(("monthly_burn", "2026-12", "7-9")),
                            "targets.csv:2: target: '7-9' is not one value"),
    "a yes/no metric given a month's target": (
        targets_sheet(("accounting_system_live", "2026-11", "no")),
        "targets.csv:2: metric: accounting_system_live is yes or no"),
    "an owner's item whose first row has no text": (
        ("items.csv", ITEMS_HEADER, [["2026-11-20", "call-bank", "open", "", "", "", "", ""],
                                     ["2026-12-20", "call-bank", "open", "", "ceo", "action",
                                      "Call the bank.", ""]]),
        "items.csv:2: id: 'call-bank' is none of the source document's items"),
    "a column the sheet does not have": (
        ("items.csv", ["as_of", "id", "status", "owner"], [["2026-11-20", "waf", "done", "me"]]),
        "items.csv:1: owner: no such column"),
}


@pytest.mark.parametrize("case", BAD_SHEETS)
@pytest.mark.parametrize("mode", ["send", "--dry-run", "--check"])
def test_a_bad_row_stops_everything_naming_file_line_and_column(run_script, ses, case, mode):
    (sheet, header, rows), problem = BAD_SHEETS[case]
    write_sheet(run_script.data / sheet, header, rows)
    ses.verify(SENDER)
    result = run_script("--cycle", CYCLE, *([] if mode == "send" else [mode]))
    assert result.returncode == 65
    assert f"data error: {run_script.data / sheet}:" in result.stderr
    assert problem in result.stderr.replace(f"{run_script.data}/", "")
    assert "Traceback" not in result.stderr
    assert ses.messages() == [] and not run_script.audit_log.exists()


def test_a_source_document_item_given_text_kind_and_reports_takes_them(run_script, ses):
    """Once refused ("a catalogue item given text"): a row for one of the source
    document's items may now say its text, kind and reports, over the document's."""
    write_sheet(run_script.items, ITEMS_HEADER, [
        ["2026-11-20", "waf", "open", "", "ceo cto", "ux_gap",
         "Put Cloudflare in front of the booking site.", ""]])
    said = send(run_script, ses, "ceo", "cto")
    catalogue = ser.ITEMS_BY_ID["waf"]
    assert catalogue.reports == ("cto",) and catalogue.kind == "security_gap"
    ux_gaps = section(said["cto"], "cto", "items_ux_gap")
    assert ux_gaps.startswith(f"{section_heading('cto', 'items_ux_gap')} (1)")
    assert "1. Put Cloudflare in front of the booking site." in ux_gaps
    assert f"{section_heading('cto', 'items_security_gap')} (0)" in said["cto"]
    # No row of kind security_gap: the count is not measured, not 0.
    assert re.search(r"Open security gaps - - at most 0 not measured", said["cto"])
    assert "Opened: Put Cloudflare in front of the booking site." in section(
        said["ceo"], "ceo", "changes")  # its reports, not the document's
    for report in ("ceo", "cto"):
        assert catalogue.text not in said[report], report


def test_every_sheets_problems_are_said_at_once(run_script):
    write_sheet(run_script.items, ITEMS_HEADER, [["2026-11-20", "waf", "closed", "", "", "",
                                                  "", ""]])
    write_sheet(run_script.targets, ["metric", "month", "target"], [["nope", "2026-12", "1"]])
    result = run_script("--dry-run", "--cycle", CYCLE)
    assert result.returncode == 65
    assert "items.csv:2: status" in result.stderr and "targets.csv:2: metric" in result.stderr


def test_sheets_as_a_spreadsheet_exports_them_are_read(run_script, ses):
    """A byte-order mark, CRLF line ends, a quoted comma, capitals and spaces."""
    write_sheet(run_script.items, ITEMS_HEADER, [
        ["2026-11-01", "carole-handover", "open", "", "", "", "", ""],
        [" 2026-11-30 ", "Carole-Handover", " DONE ", "written up, signed", "", "", "", ""],
        ["2026-11-30", "my-item", "open", "", "CEO;cto", "Action", "Call the broker, then "
         "the bank.", ""],
    ], ending="\r\n")
    run_script.items.write_bytes(b"\xef\xbb\xbf" + run_script.items.read_bytes())
    text = send(run_script, ses, "ceo")["ceo"]
    assert "Carole transition risk" not in section(text, "ceo", "items_shortfall")
    assert "Done: Carole transition risk (marked done 2026-11-30: written up, signed)." in text
    assert "Call the broker, then the bank." in text


def test_a_missing_or_empty_sheet_is_no_error(run_script, ses):
    run_script.items.unlink()
    run_script.targets.write_text("metric,month,target\n")
    said = send(run_script, ses, "ceo", "cfo")
    # With no items.csv, no item is listed: the source document's are no fact until a
    # row says so.
    for item in ser.ITEMS:
        assert item.text not in said["ceo"], item.item_id
    assert (f"{section_heading('ceo', 'items_shortfall')} (0) items.csv has no row of this "
            "kind (shortfall) for this report") in said["ceo"]
    assert "No monthly revenue targets yet" in said["cfo"]


# --- The folder, the catalogue and the audit log ---------------------------------------


def new_item_rows(day):
    """The rows --new-data writes into items.csv on day: each of the source document's
    items, open, to confirm or close, its int due counted from day."""
    def due(item):
        if isinstance(item.due, int):
            return (day + timedelta(days=item.due)).isoformat()
        return item.due or ""

    return [[day.isoformat(), item.item_id, "open", "from the source document: confirm or "
             "close", " ".join(item.reports), item.kind, item.text, due(item)]
            for item in ser.ITEMS]


def test_new_data_writes_each_sheets_header_and_never_overwrites(run_script, tmp_path):
    folder = tmp_path / "mine"
    # 03:00 UTC on 2026-12-01 is still 2026-11-30 in REPORT_TIMEZONE: the items' day.
    clock = FakeClock(datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc))
    first = run_script("--new-data", str(folder), clock=clock,
                       env={"REPORT_TIMEZONE": "America/Los_Angeles"})
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(ser.SHEETS)
    written = list(csv.reader((folder / "items.csv").read_text().splitlines()))
    assert written == [ITEMS_HEADER, *new_item_rows(date(2026, 11, 30))]
    assert written[1][:3] == ["2026-11-30", "stripe-keys", "open"]
    assert (folder / "targets.csv").read_text() == "metric,month,target\n"
    assert (folder / "figures.csv").read_text().startswith("as_of,note,charters_booked,")
    assert oct((folder / "items.csv").stat().st_mode & 0o777) == "0o600"
    add_rows(folder / "items.csv", [["2026-11-30", "waf", "done", "", "", "", "", ""]])
    kept = (folder / "items.csv").read_text()
    again = run_script("--new-data", str(folder))
    assert again.returncode == 0 and "kept" in again.stdout
    assert (folder / "items.csv").read_text() == kept
    empty = run_script("--dry-run", "--data", str(folder), "--cycle", CYCLE)
    assert empty.returncode == 0, empty.stderr  # a new folder is valid as it is
    assert "has no rows yet" in empty.stderr
    # The source document's items stand, open, until the owner confirms or closes them.
    assert "Sergio equity risk" in " ".join(empty.stdout.split())


def test_new_data_into_a_file_is_one_clear_error(run_script, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_script("--new-data", str(blocker))
    assert result.returncode == 73
    assert result.stderr.startswith("error: cannot write the data folder")
    assert "Traceback" not in result.stderr


def test_new_data_never_writes_through_a_link(run_script, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (folder / "items.csv").symlink_to(target)
    result = run_script("--new-data", str(folder))
    assert result.returncode == 0 and target.read_text() == "keep me"


def test_items_lists_the_catalogue_id_first(run_script):
    result = run_script("--items")
    assert result.returncode == 0
    starts = {line.split()[0] for line in result.stdout.splitlines()
              if line and not line.startswith(" ")}
    assert {item.item_id for item in ser.ITEMS} <= starts


def test_each_audit_record_carries_a_digest_of_every_sheet(run_script, ses):
    ses.verify(SENDER)
    assert run_script("--only", "ceo,cfo", "--cycle", CYCLE).returncode == 0
    expected = {sheet: hashlib.sha256((run_script.data / sheet).read_bytes()).hexdigest()
                for sheet in ser.SHEETS}
    records = [json.loads(line) for line in run_script.audit_log.read_text().splitlines()]
    assert [r["sheets"] for r in records] == [expected, expected]


def test_a_single_csv_is_still_the_figures_alone(run_script, ses, tmp_path):
    single = tmp_path / "report_data.csv"
    single.write_text(run_script.figures.read_text())
    text = run_script("--dry-run", "--only", "ceo", "--data", str(single), "--cycle", CYCLE)
    assert text.returncode == 0, text.stderr
    # No items.csv beside a single file: no item is listed.
    assert "Sergio equity risk" not in text.stdout
    assert "items.csv has no row of this kind (shortfall)" in " ".join(text.stdout.split())
    run_script.figures.parent.rename(tmp_path / "moved")  # no folder beside the env file:
    old_default = run_script("--dry-run", "--only", "ceo", "--cycle", CYCLE)  # the old file
    assert "figures as of 2026-11-29" in " ".join(old_default.stdout.split())


def test_the_catalogue_names_only_reports_kinds_and_metrics_that_exist():
    for item in ser.ITEMS:
        assert set(item.reports) <= set(ser.REPORT_IDS), item.item_id
        assert item.kind in ser.ITEM_KINDS, item.item_id
        assert all(m in ser.METRICS_BY_ID for m in (item.metric or "").split()), item.item_id
        assert item.with_item in (None, *ser.ITEMS_BY_ID), item.item_id
        assert ser.ITEM_ID_PATTERN.fullmatch(item.item_id)
    assert len(ser.ITEMS_BY_ID) == len(ser.ITEMS)


# --- What a hostile review found ---------------------------------------------------------


def test_the_glance_counts_the_security_gaps_the_list_shows(run_script, ses):
    add_rows(run_script.items, [["2026-11-30", "waf", "done", "WAF on", "", "", "", ""]])
    text = send(run_script, ses, "cto")["cto"]  # the snapshot is of 11-29, the row 11-30
    assert f"{section_heading('cto', 'items_security_gap')} (1)" in text
    assert re.search(r"Open security gaps 1 down 1 at most 0 ▼ behind", text)


OWNER_ITEMS = [  # (report, kind, text): each must show in its report, whatever the kind
    ("ceo", "milestone", "A milestone for the CEO."),
    ("rental-3028", "shortfall", "A shortfall of the rental."),
    ("cfo", "action", "A fourth action for the CFO."),
    ("yacht-delivery", "state", "The second boat is not yet sold."),
    ("dc-portfolio", "recognition_gap", "Retainers are booked on receipt."),
]


def test_an_owners_item_of_any_kind_shows_in_each_report_it_names(run_script, ses):
    add_rows(run_script.items, [["2026-11-10", f"mine-{n}", "open", "", report, kind, text, ""]
                                for n, (report, kind, text) in enumerate(OWNER_ITEMS)])
    said = send(run_script, ses, *{report for report, _, _ in OWNER_ITEMS})
    for report, _, text in OWNER_ITEMS:
        assert text in said[report], report
    assert re.search(rf"{re.escape(section_heading('cfo', 'other_items'))} \(\d\)",
                     said["cfo"])


def test_a_months_target_moves_a_status_never_the_plan(run_script, ses):
    write_sheet(run_script.targets, ["metric", "month", "target"],
                [["charters_booked", "2026-11", "4"]])
    text = send(run_script, ses, "cfo")["cfo"]
    assert "Charters booked/month 5 up 1 at least 4 ✓ on track" in text
    assert "Reach the break-even in charters a month." in text  # 5 is short of 6
    assert "Charters booked, target at least 4" in section(text, "cfo",
                                                           "burn_model")  # the status's
    plan = section(text, "cfo", "break_even")
    assert "Against the target (6)" in plan and "5/6" in plan  # the plan's break-even


def test_an_item_marked_done_that_its_figures_deny_is_said(run_script, ses):
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    position = rows[0].index("accounting_system_live")
    rows[-1][position] = "no"
    write_sheet(run_script.figures, rows[0], rows[1:])
    add_rows(run_script.items, [["2026-11-20", "accounting-system", "done", "", "", "", "",
                                 ""]])
    result = run_script("--dry-run", "--only", "accounting", "--cycle", CYCLE)
    assert ("items.csv marks accounting-system done, but the figures as of 2026-11-29 do not "
            "show accounting_system_live in order") in result.stderr


def test_a_label_is_a_phrase_never_a_word_cut_at_a_colon(run_script, ses):
    add_rows(run_script.items, [
        ["2026-11-30", "books-m2", "done", "", "", "", "", ""],
        ["2026-11-30", "see-bank", "open", "", "ceo", "action",
         "See https://bank.example/loan about the loan.", "2026-12-03"]])
    said = send(run_script, ses, "accounting", "ceo")
    assert "Done: M2: bank and Stripe feeds connected; every expense categorised by function" \
        in said["accounting"]
    assert "Due: See https://bank.example/loan about the loan (due 2026-12-03)." in said["ceo"]


def test_a_cycle_that_looks_like_a_date_must_be_one(run_script):
    for label in ("2026-02-30", "2026-12-1"):
        result = run_script("--dry-run", "--cycle", label)
        assert result.returncode == 64 and "looks like a date" in result.stderr, label


def test_a_cycle_that_is_not_a_date_reads_the_data_as_of_today(run_script, ses):
    add_rows(run_script.figures, [["2027-01-15", "future"] + [""] * 25])
    clock = FakeClock(datetime(2026, 12, 1, 7, 0, tzinfo=timezone.utc))
    result = run_script("--dry-run", "--only", "ceo", "--cycle", "weekly-7", clock=clock)
    assert result.returncode == 0, result.stderr
    assert "figures as of 2026-11-29" in " ".join(result.stdout.split())


def test_a_data_folder_named_but_not_there_stops_everything(run_script, ses, tmp_path):
    ses.verify(SENDER)
    result = run_script("--data", str(tmp_path / "report_dta"), "--cycle", CYCLE)
    assert result.returncode == 65 and "no such data folder or file" in result.stderr
    assert ses.messages() == []
    run_script.settings(REPORT_DATA_PATH="report_data (1).csv")
    assert run_script("--quiet", "--cycle", CYCLE).returncode == 65


def test_a_folder_without_items_csv_is_said(run_script, ses):
    run_script.items.unlink()
    result = run_script("--dry-run", "--only", "ceo", "--cycle", CYCLE)
    assert result.returncode == 0
    assert (f"warning: no items.csv in {run_script.data}: the reports list no items "
            f"(--new-data {run_script.data} writes one with the source document's items, to "
            "confirm or close)") in result.stderr
    assert "Sergio equity risk" not in result.stdout


@pytest.mark.parametrize("text, problem", [
    ("WAF on\u2028SECURITY GAPS", "has a line break"),
    ("done\u200b", "invisible formatting character"),
    ("soft\u00adhyphen", "invisible formatting character"),
    ("line one\nline two, with a comma", "has a line break (Alt+Enter"),
])
def test_free_text_that_would_hide_or_forge_lines_is_refused(run_script, text, problem):
    add_rows(run_script.items, [["2026-11-30", "waf", "done", text, "", "", "", ""]])
    result = run_script("--dry-run", "--cycle", CYCLE)
    assert result.returncode == 65 and "note: " in result.stderr and problem in result.stderr


def test_a_figures_note_is_bounded_like_any_text(run_script):
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    rows[-1][1] = "x" * (ser.MAX_ITEM_TEXT + 1)
    write_sheet(run_script.figures, rows[0], rows[1:])
    result = run_script("--dry-run", "--cycle", CYCLE)
    assert result.returncode == 65 and "note: is longer than 300 characters" in result.stderr


def test_a_first_line_in_capitals_is_read_and_a_semicolon_export_is_one_line(run_script):
    text = run_script.items.read_text()
    run_script.items.write_text(text.replace("as_of,id,status", " As_Of , ID ,Status", 1))
    assert run_script("--dry-run", "--cycle", CYCLE).returncode == 0
    run_script.figures.write_text(run_script.figures.read_text().replace(",", ";"))
    result = run_script("--dry-run", "--cycle", CYCLE)
    assert result.returncode == 65
    assert result.stderr.count("data error") == 1 and "separated by semicolons" in result.stderr


def test_a_computed_metric_as_a_column_is_said_to_be_computed(run_script):
    write_sheet(run_script.figures, ["as_of", "runway_months"], [["2026-11-29", "4"]])
    result = run_script("--dry-run", "--cycle", CYCLE)
    assert result.returncode == 65 and "runway_months: is computed, never a column" \
        in result.stderr


def test_metrics_shows_the_catalogue_whatever_targets_csv_holds(run_script):
    add_rows(run_script.targets, [["bogus", "2026-13", "abc"]])
    result = run_script("--metrics")
    assert result.returncode == 0 and "charters_booked" in result.stdout
    assert "warning:" in result.stderr and "metric: 'bogus' is no metric" in result.stderr


def test_a_target_years_ahead_does_not_swell_the_cfo_report(run_script, ses):
    add_rows(run_script.targets, [["revenue_dc", "2099-12", "1"]])
    text = send(run_script, ses, "cfo")["cfo"]
    table = section(text, "cfo", "revenue_months")
    assert "2027-09" in table and "2027-10" not in table
    assert "The targets after 2027-09 (up to 2099-12) are not shown" in table


def test_a_range_below_zero_reads_with_to():
    assert ser.figure_text((ser.Decimal(-3000), ser.Decimal(-1000)), "dollars") == \
        "-$3,000 to -$1,000"
    assert ser.figure_text((ser.Decimal(7000), ser.Decimal(9000)), "dollars") == "$7,000-9,000"


def test_empty_paths_and_links_in_the_data_options(run_script, tmp_path):
    assert run_script("--new-data", "").returncode == 64
    assert run_script("--dry-run", "--data", "").returncode == 64
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "items.csv").symlink_to(tmp_path / "nowhere.csv")
    result = run_script("--new-data", str(folder))
    assert result.returncode == 0 and "left" in result.stdout and "symbolic link" in result.stdout
    assert not (tmp_path / "nowhere.csv").exists()


def test_a_data_path_to_a_file_of_any_name_is_the_figures_alone(run_script, tmp_path):
    single = tmp_path / "figures.txt"
    single.write_text(run_script.figures.read_text())
    result = run_script("--dry-run", "--only", "ceo", "--data", str(single), "--cycle", CYCLE)
    assert result.returncode == 0, result.stderr


def test_a_report_gmail_would_clip_is_said(run_script):
    add_rows(run_script.items, [["2026-11-20", f"long-{n}", "open", "", "ceo", "action",
                                 "An owner's long item & <text> " * 9, ""] for n in range(200)])
    result = run_script("--preview-dir", str(run_script.tmp_path / "p"), "--only", "ceo",
                        "--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert re.search(r"warning: the HTML of ceo is \d+ KB: Gmail shows only its first 100 KB",
                     result.stderr)
    quiet = run_script("--dry-run", "--only", "cto", "--cycle", CYCLE)
    assert "Gmail" not in quiet.stderr


@pytest.mark.parametrize("case", ["no folder", "no figures file", "a header alone",
                                  "no row for the cycle"])
def test_a_cycle_with_no_figures_is_said_even_with_quiet(run_script, ses, case):
    ses.verify(SENDER)
    if case == "no folder":
        shutil.rmtree(run_script.data)
    elif case == "no figures file":
        run_script.figures.unlink()
    elif case == "a header alone":
        run_script.figures.write_text(run_script.figures.read_text().splitlines()[0] + "\n")
    result = run_script("--quiet", "--only", "ceo",
                        "--cycle", "2026-09-01" if case == "no row for the cycle" else CYCLE)
    assert result.returncode == 0
    assert "reads 'not measured'" in result.stderr
    assert ("has no rows yet" in result.stderr) == (case == "a header alone")
