"""What matters, first: every report opens with what needs the owner, computed from
the sheets alone, and states no fact the sheets do not give.

Three folders of our own, none of them the example: a business in trouble, one
thriving with every item done, and one of headers only.  What SES received is read
for each; the text edition's first screen through --dry-run, which prints it."""

import collections
import csv
import re
import shutil

import pytest

import send_exec_reports as ser
from conftest import FakeClock, section
from test_owner_data import TITLES, received, write_sheet

CYCLE = "2026-12-01"
FIRST_SCREEN = 40  # lines of the text edition a phone shows without scrolling, or near it
FIGURES = ser.csv_header().split(",")
ITEMS = ["as_of", "id", "status", "note", "reports", "kind", "text", "due"]
CLIENTS = ["client", "tier", "monthly_value", "billing_model", "contract_start",
           "renewal_date", "last_invoiced", "status", "ended"]
DELIVERIES = ["date", "vessel", "from", "to", "nautical_miles", "days", "price", "fuel",
              "crew", "travel", "other"]
RENTAL = ["date", "kind", "category", "amount", "note"]
TARGETS = ["metric", "month", "target"]


def figures_row(as_of, **figures):
    return [as_of if column == "as_of" else str(figures.get(column, "")) for column in FIGURES]


# --- The three folders -----------------------------------------------------------------


def trouble():
    """Runway 1.2 months, a Gold client ended, two deliveries sold below cost, two
    months of rent unpaid, a client not invoiced for 78 days, most items overdue."""
    return {
        "figures.csv": (FIGURES, [
            figures_row("2026-09-30", rent_due=2400, monthly_burn=9000, cash_on_hand=8000,
                        charters_booked=3, revenue_jada_qos=4000, revenue_qdn=1500,
                        note="made-up figures for a test"),
            figures_row("2026-11-29", charters_booked=2, revenue_jada_qos=3000,
                        revenue_qdn=1500, monthly_burn=9000, cash_on_hand=2280, rent_due=2400,
                        accounting_system_live="no", note="made-up figures for a test")]),
        "targets.csv": (TARGETS, [["revenue_jada_qos", "2026-11", "9000"]]),
        "clients.csv": (CLIENTS, [
            ["Harbor Lights Bistro", "Gold", "1400", "monthly retainer", "2025-01-15",
             "2027-01-15", "2026-10-15", "ended", "2026-11-10"],
            ["Mesa Dental Group", "Gold", "1200", "monthly retainer", "2024-12-20",
             "2027-05-01", "2026-09-14", "active", ""],
            ["Cedar", "Silver", "800", "monthly retainer", "2025-06-01", "2027-06-01",
             "2026-11-20", "active", ""],
            ["Dune", "Bronze", "600", "monthly retainer", "2025-12-15", "2026-12-15",
             "2026-11-25", "active", ""]]),
        "deliveries.csv": (DELIVERIES, [
            ["2026-11-10", "Gull", "San Diego", "Ensenada", "65", "1", "1500", "900", "1000",
             "", ""],
            ["2026-11-20", "Tern", "Newport Beach", "San Diego", "70", "1", "2000", "800",
             "1500", "300", ""]]),
        "rental.csv": (RENTAL, [["2026-08-01", "rent", "", "2400", ""],
                                ["2026-09-01", "rent", "", "2400", ""],
                                ["2026-10-05", "expense", "Plumbing", "300", ""]]),
        "items.csv": (ITEMS, [["2026-10-01", item, "open", "", "", "", "", ""]
                              for item in ("sergio-equity", "email-blast", "accounting-system",
                                           "cmo-day-30", "books-m2")]),
    }


def thriving():
    """Every figure on target, every client billed and far from renewal, every delivery
    at a profit, the rent paid each month, every item of the source document done."""
    good = dict(charters_booked=8, revenue_jada_qos=12000, revenue_qdn=4000, monthly_burn=8000,
                cash_on_hand=60000, pipeline_value=20000, ota_listings=3, email_list_size=4000,
                email_open_rate=30, qdn_enquiries=15, qdn_jobs_booked=5, rental_occupancy=100,
                rent_due=2400, aws_monthly_cost=50, sites_with_analytics=3,
                accounting_system_live="yes", delivery_capacity=4,
                note="made-up figures for a test")
    return {
        "figures.csv": (FIGURES, [
            figures_row("2026-11-15", **{**good, "charters_booked": 7, "cash_on_hand": 50000}),
            figures_row("2026-11-29", **good, property_valuation=1300000)]),
        "targets.csv": (TARGETS, [["revenue_jada_qos", "2026-11", "10000"],
                                  ["revenue_qdn", "2026-11", "3000"],
                                  ["revenue_dc", "2026-11", "3000"]]),
        "clients.csv": (CLIENTS, [
            ["Alder", "Gold", "2000", "monthly retainer", "2025-01-01", "2027-06-01",
             "2026-11-20", "active", ""],
            ["Birch", "Silver", "1000", "monthly retainer", "2025-03-01", "2027-08-01",
             "2026-11-25", "active", ""],
            ["Cedar", "Bronze", "600", "monthly retainer", "2025-05-01", "2027-09-01",
             "2026-11-28", "active", ""]]),
        "deliveries.csv": (DELIVERIES, [
            ["2026-10-10", "Gull", "San Diego", "Ensenada", "65", "1", "3000", "500", "900",
             "100", ""],
            ["2026-11-05", "Tern", "Newport Beach", "San Diego", "70", "1", "2800", "400",
             "900", "100", ""],
            ["2026-11-22", "Skua", "San Diego", "Long Beach", "95", "1", "3200", "500", "1000",
             "100", ""]]),
        "rental.csv": (RENTAL, [[f"2026-{month:02d}-01", "rent", "", "2400", ""]
                                for month in range(6, 13)]
                       + [["2026-09-10", "expense", "HVAC", "200", ""]]),
        "items.csv": (ITEMS, [["2026-11-15", item.item_id, "done", "done", "", "", "", ""]
                              for item in ser.ITEMS]),
    }


def headers_only():
    """Every sheet's first line, and no row."""
    return {sheet: (header.splitlines()[0].split(","), [])
            for sheet, header in ser.new_sheets(ser.parse_date(CYCLE)).items()}


def lay_out(run_script, sheets):
    """The data folder holds these sheets and nothing else."""
    shutil.rmtree(run_script.data)
    run_script.data.mkdir()
    for name, (header, rows) in sheets.items():
        write_sheet(run_script.data / name, header, rows)


def sent(run_script, ses, sheets, *reports, cycle=CYCLE):
    """What SES received for these reports (all eight by default), read as a reader
    reads the HTML part."""
    lay_out(run_script, sheets)
    ses.verify("reports@example.com")
    args = ("--only", ",".join(reports)) if reports else ()
    result = run_script(*args, "--cycle", cycle, "--force")
    assert result.returncode == 0, result.stderr
    return {report_id: received(ses, report_id) for report_id in reports or TITLES}


def text_editions(run_script, cycle=CYCLE, *args):
    """{report id: the plain-text edition's lines}, as --dry-run prints them."""
    result = run_script("--dry-run", "--cycle", cycle, *args)
    assert result.returncode == 0, result.stderr
    editions = {}
    for message in result.stdout.split("=" * ser.TEXT_WIDTH):
        head, _, body = message.strip("\n").partition("\n\n")
        subject = next((line for line in head.splitlines() if line.startswith("Subject: ")),
                       None)
        if subject is None:
            continue  # the run's own lines, after the last report
        report_id = next(r for r, title in TITLES.items() if subject[9:].startswith(title))
        editions[report_id] = body.splitlines()
    assert len(editions) == len(TITLES)
    return editions


def data_error(run_script, sheets):
    """What a run says of these sheets, which it must refuse (exit 65)."""
    lay_out(run_script, sheets)
    result = run_script("--dry-run", "--cycle", CYCLE)
    assert result.returncode == 65, result.stderr
    return result.stderr


def attention(said, report_id):
    """What a report says needs attention, first in it; said is what SES received of
    each report."""
    return section(said[report_id], report_id, "attention")


# --- In trouble: each fact first, with its dollars, in the report it belongs to --------

TROUBLE_FACTS = {
    "Runway 1.2 months, under 3.0 months: cash $2,280, $1,900 a month more out than in":
        ("ceo", "cfo"),
    "Revenue minus burn -$1,900 a month": ("ceo", "cfo"),
    "JADA/QOS revenue/month $3,000: $6,000 under the 2026-11 target of $9,000":
        ("ceo", "cfo", "accounting"),
    "Client ended 2026-11-10: Harbor Lights Bistro (Gold), $1,400 a month lost":
        ("ceo", "dc-portfolio"),
    "Delivery at a loss, $600: 2026-11-20, Tern, Newport Beach to San Diego":
        ("ceo", "yacht-delivery"),
    "Delivery at a loss, $400: 2026-11-10, Gull": ("ceo", "yacht-delivery"),
    "Deliveries' mean margin -$500": ("ceo", "yacht-delivery"),
    "Rent unpaid since 2026-10: $4,800 owed (2026-10 $2,400; 2026-11 $2,400)":
        ("ceo", "rental-3028"),
    "Billing gap: Mesa Dental Group, $1,200 a month, not invoiced since 2026-09-14 (78 days)":
        ("ceo", "dc-portfolio"),
    "Renewal in 14 days, on 2026-12-15: Dune, $600 a month": ("ceo", "dc-portfolio"),
    "Overdue 54 days: Send the email blast": ("cmo",),
    "Overdue 61 days: Deploy an accounting system": ("accounting",),
}


def test_in_trouble_each_fact_opens_the_report_it_belongs_to(run_script, ses):
    said = sent(run_script, ses, trouble())
    for fact, reports in TROUBLE_FACTS.items():
        for report_id in reports:
            assert fact in attention(said, report_id), (report_id, fact)
    editions = text_editions(run_script)
    for fact, reports in TROUBLE_FACTS.items():
        for report_id in reports:
            first_screen = " ".join(" ".join(editions[report_id][:FIRST_SCREEN]).split())
            assert fact in first_screen, (report_id, fact)


def test_the_most_money_comes_first_then_the_longest_overdue(run_script, ses):
    ceo = attention(sent(run_script, ses, trouble(), "ceo"), "ceo")
    order = ["$6,000 under", "$4,800 owed", "Runway 1.2", "$1,400 a month lost",
             "$1,200 a month", "mean margin", "Delivery at a loss, $600",
             "Delivery at a loss, $400"]
    positions = [ceo.index(words) for words in order]
    assert positions == sorted(positions)
    # Past the first ten: how many more, and where they are.
    assert re.search(r"And \d+ more", ceo)


def test_the_ceo_summary_is_computed_from_the_attention_list(run_script, ses):
    ceo = sent(run_script, ses, trouble(), "ceo")["ceo"]
    summary = section(ceo, "ceo", "summary")
    assert "need attention" in summary and "JADA/QOS revenue $6,000 under target" in summary
    assert "Worse since" not in summary and "Worse: Charters booked/month 3 to 2" in summary
    assert "operating rhythm" not in ceo


def test_the_ceo_p_and_l_shows_each_business_and_a_total(run_script, ses):
    ceo = sent(run_script, ses, trouble(), "ceo")["ceo"]
    pnl = section(ceo, "ceo", "pnl")
    assert "JADA / QOS $3,000" in pnl and "QDN $1,500" in pnl and "DC $2,600" in pnl
    assert "Yacht deliveries $3,500 $4,500 ▼ -$1,000" in pnl  # both, within 30 days
    assert "Portfolio burn - $9,000 -" in pnl
    assert "Total $10,600 $13,500 ▼ -$2,900" in pnl


def test_the_domain_reports_show_the_analyses_in_numbers(run_script, ses):
    said = sent(run_script, ses, trouble(), "yacht-delivery", "dc-portfolio", "accounting")
    deliveries = said["yacht-delivery"]
    assert "2026-11-20 Tern $2,000 $2,600 ▼ -$600 loss" in deliveries
    assert "2026-11-10 Gull $1,500 $1,900 ▼ -$400 loss" in deliveries
    ended = section(said["dc-portfolio"], "dc-portfolio", "ended_clients")
    assert "2026-11-10 Harbor Lights Bistro Gold $1,400" in ended
    functions = section(said["accounting"], "accounting", "expense_functions")
    assert "Operations (deliveries) deliveries.csv $0 $4,500" in functions
    assert "Property (3028 51st St) rental.csv $0 $300" in functions


# --- Thriving: no alarm anywhere -------------------------------------------------------


def test_a_thriving_business_raises_no_alarm_in_any_report(run_script, ses):
    said = sent(run_script, ses, thriving())
    for report_id, text in said.items():
        assert "Nothing needs attention by the rules" in attention(said, report_id), report_id
        for word in ("behind", "overdue", "at a loss", "unpaid", "▼"):
            assert word not in text.lower(), (report_id, word)
    editions = text_editions(run_script)
    for report_id, lines in editions.items():
        assert not [line for line in lines if "! " in line], report_id  # no status flagged


# --- Headers only: nothing of the source document's ------------------------------------


def test_a_folder_of_headers_only_names_none_of_the_source_documents_items(run_script, ses):
    said = sent(run_script, ses, headers_only())
    for report_id, text in said.items():
        for item in ser.ITEMS:
            for words in filter(None, (item.text, item.todo, item.done_text,
                                       ser.item_label(item))):
                assert words not in text, (report_id, item.item_id, words)
        assert "Nothing can be judged yet" in attention(said, report_id)
    assert "No accounting system is currently deployed" not in said["accounting"]
    assert "Not measured: whether an accounting system is live" in said["accounting"]
    assert "items.csv has no row of this kind" in said["cto"]


def test_a_count_of_items_items_csv_has_no_row_of_is_not_measured(run_script, ses):
    cto = sent(run_script, ses, trouble(), "cto")["cto"]  # figures, but no security gap row
    assert "Open security gaps - - at most 0 not measured" in cto


# --- Each rule appears and disappears with its datum -----------------------------------


def with_row(sheet, row):
    def change(sheets):
        header, rows = sheets[sheet]
        sheets[sheet] = (header, [*rows, row])
    return change


def replacing(sheet, index, column, value):
    def change(sheets):
        header, rows = sheets[sheet]
        rows = [list(row) for row in rows]
        rows[index][header.index(column)] = value
        sheets[sheet] = (header, rows)
    return change


def without_row(sheet, index):
    def change(sheets):
        header, rows = sheets[sheet]
        sheets[sheet] = (header, [row for n, row in enumerate(rows) if n != index])
    return change


def both(*changes):
    def change(sheets):
        for one in changes:
            one(sheets)
    return change


# Each rule, the change of the thriving folder that sets it off, and the line it says.
FLIPS = {
    "runway": (both(replacing("figures.csv", 1, "monthly_burn", "21000"),
                    replacing("figures.csv", 1, "cash_on_hand", "2800")),
               "Runway 2.0 months, under 3.0 months: cash $2,800, $1,400 a month more out "
               "than in"),
    "losing-money": (replacing("figures.csv", 1, "monthly_burn", "20000"),
                     "Revenue minus burn -$400 a month: revenue $19,600, burn $20,000"),
    "revenue-short": (replacing("targets.csv", 1, "target", "5000"),
                      "QDN revenue/month $4,000: $1,000 under the 2026-11 target of $5,000"),
    "delivery-loss": (with_row("deliveries.csv", ["2026-11-25", "Wren", "", "", "", "", "1000",
                                                  "700", "800", "", ""]),
                      "Delivery at a loss, $500: 2026-11-25, Wren, priced $1,000, cost $1,500"),
    "delivery-margin": (with_row("deliveries.csv", ["2026-11-26", "Loon", "", "", "", "",
                                                    "1000", "3000", "4000", "", ""]),
                        "Deliveries' mean margin -$375 over the last 90 days (4 priced and "
                        "costed)"),
    "rent-unpaid": (without_row("rental.csv", 5),  # November's rent
                    "Rent unpaid since 2026-11: $2,400 owed (2026-11 $2,400)"),
    "client-ended": (with_row("clients.csv", ["Elm", "Gold", "1500", "monthly retainer",
                                              "2025-01-01", "2027-01-01", "2026-10-20",
                                              "ended", "2026-11-20"]),
                     "Client ended 2026-11-20: Elm (Gold), $1,500 a month lost"),
    "billing-gap": (replacing("clients.csv", 1, "last_invoiced", "2026-10-27"),
                    "Billing gap: Birch, $1,000 a month, not invoiced since 2026-10-27 "
                    "(35 days)"),
    "renewal": (replacing("clients.csv", 2, "renewal_date", "2026-12-31"),
                "Renewal in 30 days, on 2026-12-31: Cedar, $600 a month"),
    "overdue": (with_row("items.csv", ["2026-11-01", "insurance-renewal", "open", "", "ceo",
                                       "action", "Renew the boat insurance.", "2026-11-20"]),
                "Overdue 11 days: Renew the boat insurance (due 2026-11-20)"),
}


def test_every_rule_has_a_flip_test():
    assert set(FLIPS) == {rule.rule_id for rule in ser.ATTENTION_RULES}


@pytest.mark.parametrize("rule_id", FLIPS)
def test_each_rule_appears_and_disappears_with_its_datum(run_script, ses, rule_id):
    change, line = FLIPS[rule_id]
    calm = attention(sent(run_script, ses, thriving(), "ceo"), "ceo")
    assert line not in calm and "Nothing needs attention" in calm
    sheets = thriving()
    change(sheets)
    troubled = attention(sent(run_script, ses, sheets, "ceo"), "ceo")
    assert line in troubled, troubled


def test_targets_csv_sets_a_rules_level_for_every_month_or_one(run_script, ses):
    sheets = thriving()
    replacing("clients.csv", 1, "last_invoiced", "2026-10-27")(sheets)  # 35 days
    with_row("targets.csv", ["invoice_gap_days", "", "60"])(sheets)
    with_row("targets.csv", ["runway_months", "2026-11", "900"])(sheets)  # 60,000 / -11,600
    text = attention(sent(run_script, ses, sheets, "ceo"), "ceo")
    assert "Billing gap" not in text
    assert "Runway" not in text  # cash-flow positive meets any level
    with_row("targets.csv", ["invoice_gap_days", "2026-12", "30"])(sheets)  # the month wins
    text = attention(sent(run_script, ses, sheets, "ceo"), "ceo")
    assert "Billing gap: Birch" in text


def test_rules_lists_each_rule_with_its_level_and_where_it_was_set(run_script):
    sheets = thriving()
    with_row("targets.csv", ["renewal_days", "", "45"])(sheets)
    lay_out(run_script, sheets)
    result = run_script("--rules")
    assert result.returncode == 0, result.stderr
    for rule in ser.ATTENTION_RULES:
        assert rule.rule_id in result.stdout
    assert "renewal_days (days ahead a renewal needs attention): 30 by default; " \
           "targets.csv: every month 45" in " ".join(result.stdout.split())
    assert "targets.csv" in result.stdout


def test_a_rule_level_that_is_not_a_number_is_a_data_error(run_script, ses):
    sheets = thriving()
    with_row("targets.csv", ["renewal_days", "", "soon"])(sheets)
    assert "targets.csv:5: target: 'soon'" in data_error(run_script, sheets)


# --- Plans keep their dates; items start from --new-data -------------------------------


def test_a_plan_keeps_its_dates_two_weeks_apart(run_script, ses):
    sheets = trouble()
    sheets["items.csv"] = (ITEMS, [["2026-11-01", item, "open", "", "", "", "", ""]
                                   for item in ("cmo-day-30", "cmo-day-60", "cmo-day-90")])
    plans = [section(sent(run_script, ses, sheets, "cmo", cycle=cycle)["cmo"], "cmo",
                     "items_milestone")
             for cycle in ("2026-11-20", "2026-12-04")]
    for plan in plans:
        assert "Day 30: email blast sent" in plan and "(due 2026-12-01)" in plan
        assert "(due 2026-12-31)" in plan and "(due 2027-01-30)" in plan
    assert "Overdue 3 days: Day 30" in attention(
        sent(run_script, ses, sheets, "cmo", cycle="2026-12-04"), "cmo")


def test_new_data_writes_the_source_documents_items_to_confirm_or_close(run_script, tmp_path):
    folder = tmp_path / "new"
    clock = FakeClock(ser.datetime(2026, 12, 7, 3, 0, tzinfo=ser.timezone.utc))
    result = run_script("--new-data", str(folder), clock=clock,
                        env={"REPORT_TIMEZONE": "America/Los_Angeles"})
    assert result.returncode == 0, result.stderr
    with open(folder / "items.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["id"] for row in rows] == [item.item_id for item in ser.ITEMS]
    assert {row["as_of"] for row in rows} == {"2026-12-06"}  # still the 6th in California
    assert {row["status"] for row in rows} == {"open"}
    assert {row["note"] for row in rows} == {ser.NEW_ITEM_NOTE}
    email_blast = next(row for row in rows if row["id"] == "email-blast")
    assert email_blast["due"] == "2026-12-13" and email_blast["text"].startswith("Send the")
    # The folder it starts reads back: the items are there, open, each dated.
    editions = text_editions(run_script, "2026-12-07", "--data", str(folder))
    assert any("Rotate the Stripe keys" in line for line in editions["cto"])


# --- Said once --------------------------------------------------------------------------


def sentence_endings(lines):
    """The last four words of each sentence of a text edition."""
    text = " ".join(" ".join(lines).split())
    return [" ".join(sentence.split()[-4:]).lower()
            for sentence in re.split(r"(?<=[.!?])\s", text) if len(sentence.split()) >= 4]


@pytest.mark.parametrize("folder", ["trouble", "thriving", "headers_only", "example"])
def test_no_sentence_ending_is_said_more_than_three_times(run_script, ses, folder):
    if folder != "example":
        lay_out(run_script, globals()[folder]())
    for report_id, lines in text_editions(run_script).items():
        common = collections.Counter(sentence_endings(lines)).most_common(1)
        assert common[0][1] <= 3, (report_id, common)


# --- From the hostile review -----------------------------------------------------------


def test_a_margin_under_a_level_above_zero_is_not_called_a_loss(run_script, ses):
    sheets = thriving()
    with_row("targets.csv", ["delivery_margin", "", "1600"])(sheets)
    text = attention(sent(run_script, ses, sheets, "yacht-delivery"), "yacht-delivery")
    assert ("Delivery margin $1,400, under the $1,600 level: 2026-11-05, Tern, Newport Beach "
            "to San Diego, priced $2,800, cost $1,400.") in text
    assert "at a loss" not in text and "-$" not in text
    assert "Deliveries' mean margin $1,500 over the last 90 days (3 priced and costed), " \
           "under the $1,600 level." in text


def test_the_burn_model_never_says_a_charter_that_brings_nothing_covers_the_burn(
        run_script, ses):
    sheets = trouble()
    replacing("figures.csv", 1, "revenue_jada_qos", "0")(sheets)
    cfo = sent(run_script, ses, sheets, "cfo")["cfo"]
    model = section(cfo, "cfo", "burn_model")
    assert "JADA/QOS revenue per charter $0" in model
    assert "Charters a month that cover the burn no number" in model


def test_the_source_documents_items_say_they_are_not_yet_confirmed(run_script, tmp_path):
    folder = tmp_path / "new"
    clock = FakeClock(ser.datetime(2026, 12, 7, 3, 0, tzinfo=ser.timezone.utc))
    assert run_script("--new-data", str(folder), clock=clock).returncode == 0
    cto = " ".join(text_editions(run_script, "2026-12-07", "--data", str(folder))["cto"])
    gaps = section(" ".join(cto.split()), "cto", "items_security_gap", edition="text")
    assert "Hardcoded Stripe keys in the codebase. (due 2026-12-07) (unconfirmed)" in gaps
    assert gaps.count("Unconfirmed: --new-data wrote it from the source document") == 1


def test_a_client_cannot_end_before_its_contract_starts(run_script, ses):
    sheets = trouble()
    replacing("clients.csv", 0, "ended", "2024-01-01")(sheets)
    assert "clients.csv:2: ended: 2024-01-01 is before the contract start" in \
        data_error(run_script, sheets)


def test_rent_paid_late_settles_the_oldest_month_and_is_not_owed_twice(run_script, ses):
    sheets = thriving()
    without_row("rental.csv", 3)(sheets)  # September's rent, on the 1st: not then
    with_row("rental.csv", ["2026-10-02", "rent", "", "1000", "part of September"])(sheets)
    with_row("figures.csv", figures_row("2026-08-31", rent_due=2400))(sheets)
    header, rows = sheets["figures.csv"]
    sheets["figures.csv"] = (header, sorted(rows))  # oldest first, as the sheet must be
    text = attention(sent(run_script, ses, sheets, "rental-3028"), "rental-3028")
    assert "Rent unpaid since 2026-11: $1,400 owed (2026-11 $1,400)." in text
    # Paid up: the late payment settles it, and December's rent paid on the 1st is
    # no credit against a past month.
    with_row("rental.csv", ["2026-11-20", "rent", "", "1400", "the rest"])(sheets)
    text = attention(sent(run_script, ses, sheets, "rental-3028"), "rental-3028")
    assert "Rent unpaid" not in text


def test_an_item_due_more_than_a_year_ago_is_warned_of(run_script, ses):
    sheets = thriving()
    with_row("items.csv", ["2026-11-01", "insurance-renewal", "open", "", "ceo", "action",
                           "Renew the boat insurance.", "1990-01-01"])(sheets)
    lay_out(run_script, sheets)
    result = run_script("--dry-run", "--only", "ceo", "--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert "insurance-renewal is open and was due 1990-01-01, more than a year before the " \
           "cycle (a typo?)" in result.stderr
