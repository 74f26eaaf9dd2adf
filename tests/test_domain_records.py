"""The three domain reports from the owner's own records: clients.csv (the
DangerousCentaur portfolio), deliveries.csv (Expert Yacht Delivery) and rental.csv
(3028 51st St).  Asserted on what the SES server received."""

import csv
import json
import re

import pytest

import send_exec_reports as ser
from conftest import section
from test_owner_data import CYCLE, SENDER, add_rows, received, send, write_sheet

CLIENTS = ["client", "tier", "monthly_value", "billing_model", "contract_start",
           "renewal_date", "last_invoiced", "status", "owner's own column"]
DELIVERIES = ["date", "vessel", "from", "to", "nautical_miles", "days", "price", "fuel",
              "crew", "travel", "other"]
RENTAL = ["date", "kind", "category", "amount", "note"]


# --- DangerousCentaur: clients.csv --------------------------------------------------------


def write_clients(run_script):
    write_sheet(run_script.data / "clients.csv", CLIENTS, [
        # name, tier, value, model, start, renewal, last invoiced, status, extra
        ["Alder", "Gold", "2000", "retainer", "2025-01-01", "2027-02-20", "2026-11-20",
         "active", "x"],  # renews in 81 days: listed, not flagged
        ["Birch", "Gold", "1000.50", "retainer", "2025-01-01", "2026-12-10", "2026-10-01",
         "active", ""],  # in 9 days, not invoiced for 61: flagged, a gap, a risk
        ["Cedar", "Silver", "500", "", "2025-06-01", "2027-01-15", "2026-11-25", "active",
         ""],  # no billing model; renews in 45 days: flagged, a risk
        ["Dogwood", "silver tier", "700", "per project", "2025-06-01", "2027-06-01",
         "2026-11-28", "paused", ""],  # paused: a risk, not active
        ["Elm", "Bronze", "300", "retainer", "2024-01-01", "2026-11-15", "2026-11-15",
         "active", ""],  # its renewal date has passed: a risk
        ["Fir", "Bronze", "900", "retainer", "2024-01-01", "2025-01-01", "2024-12-01",
         "ended", ""],  # gone: in no list
    ])


def test_the_dc_portfolio_is_written_from_its_clients(run_script, ses):
    write_clients(run_script)
    text = send(run_script, ses, "dc-portfolio")["dc-portfolio"]
    calendar = section(text, "dc-portfolio", "renewal_calendar")
    assert re.search(r"2026-12-10 Birch Gold \$1,000.50 ▼ 9 days.*"
                     r"2027-01-15 Cedar Silver \$500 ▼ 45 days.*"
                     r"2027-02-20 Alder Gold \$2,000 81 days", calendar)
    assert "Elm" not in calendar and "Fir" not in calendar
    tiers = section(text, "dc-portfolio", "tier_revenue")
    assert "Gold 2 $3,000.50 79%" in tiers  # of $3,800.50 active
    assert "Silver 1 $500 13%" in tiers and "Bronze 1 $300 8%" in tiers
    assert "All tiers 4 $3,800.50 100%" in tiers
    gaps = section(text, "dc-portfolio", "billing_gaps", through="ended_clients")
    assert "Birch: not invoiced since 2026-10-01 (61 days)." in gaps
    assert "Cedar: on no billing model." in gaps
    assert "Alder" not in gaps and "Dogwood" not in gaps
    risks = section(text, "dc-portfolio", "churn_risks", through="other_items")
    assert "Birch: renews in 9 days with a billing gap (not invoiced since 2026-10-01" in risks
    assert "Cedar: renews in 45 days with a billing gap (on no billing model)." in risks
    assert "Dogwood: paused." in risks
    assert "Elm: its renewal date, 2026-11-15, has passed with no new one recorded." in risks
    assert "Alder" not in risks
    # The sheet's counts win over the figures sheet's in the glance.
    assert ("Active clients: 4 of 6; billed $3,300.50 a month, of their $3,800.50 monthly "
            "value (a client on no billing model is not billed).") in text
    assert re.search(r"DC active clients 4 ", text) and re.search(r"DC billed/month \$3,300.50",
                                                                   text)


# --- Expert Yacht Delivery: deliveries.csv -------------------------------------------------


def test_the_yacht_report_is_written_from_its_deliveries(run_script, ses):
    write_sheet(run_script.data / "deliveries.csv", DELIVERIES, [
        ["2026-08-20", "Old", "A", "B", "100", "1", "2000", "300", "700", "", "", ],
        ["2026-10-15", "Gull", "San Diego", "Ensenada", "65", "1", "1800", "320.50", "600",
         "150", "", ],
        ["2026-11-20", "Tern", "Newport", "San Diego", "70.5", "1", "1900", "300", "650",
         "180", "80"],
        ["2026-11-28", "Kite", "San Diego", "Cabo", "", "", "", "", "", "", ""],  # no costs
    ])
    text = send(run_script, ses, "yacht-delivery")["yacht-delivery"]
    figures = section(text, "yacht-delivery", "delivery_figures")
    assert "Deliveries, last 30 days 2" in figures and "Deliveries, last 90 days 3" in figures
    # Costs: 1,000; 1,070.50; 1,210 over three costed deliveries.
    assert "Cost per delivery (mean of 3 costed) $1,093.50" in figures
    # 3,280.50 of cost over 235.5 nautical miles.
    assert "Cost per nautical mile (3 with miles) $13.93" in figures
    # Margins: 1,000; 729.50; 690.
    assert "Margin per delivery (mean of 3 priced and costed) $806.50" in figures
    assert "Latest, 2026-11-20 Tern $1,210: $116.50 above the mean" in figures
    split = section(text, "yacht-delivery", "cost_split")
    assert "fuel $920.50 28% 3 of 4" in split and "crew $1,950 59% 3 of 4" in split
    assert "travel $330 10% 2 of 4" in split and "other $80 2% 1 of 4" in split
    model = section(text, "yacht-delivery", "items_state")
    assert "Delivery costs are not recorded" not in model  # the item, closed by them
    assert "Deliveries and JADA charters do not share a calendar." in model  # items.csv's
    # Each delivery, latest first: its price, cost and margin; none where not recorded.
    assert re.search(r"Date Vessel Price Cost Margin 2026-11-28 Kite - - - "
                     r"2026-11-20 Tern \$1,900 \$1,210 \$690 "
                     r"2026-10-15 Gull \$1,800 \$1,070.50 \$729.50 "
                     r"2026-08-20 Old \$2,000 \$1,000 \$1,000 ", figures)
    capacity = section(text, "yacht-delivery", "capacity")
    assert re.search(r"2026-11 2 3 .*2/3", capacity)  # the example figures: 3 a month


def test_a_cost_left_empty_is_not_recorded_which_is_not_zero(run_script, ses):
    write_sheet(run_script.data / "deliveries.csv", DELIVERIES, [
        ["2026-11-20", "Tern", "A", "B", "100", "1", "1000", "", "", "", ""],
    ])
    text = send(run_script, ses, "yacht-delivery")["yacht-delivery"]
    assert "Cost per delivery (mean of 0 costed) -" in text
    assert "Delivery costs are not recorded per delivery." in text


# --- 3028 51st St: rental.csv ----------------------------------------------------------------


def test_the_rental_report_is_written_from_its_ledger(run_script, ses):
    write_sheet(run_script.data / "rental.csv", RENTAL, [
        ["2026-10-01", "rent", "", "2400", "October"],
        ["2026-10-12", "expense", "Plumbing", "320", ""],
        ["2026-10-20", "expense", "HVAC", "480.25", ""],
        ["2026-11-01", "rent", "", "2000", "paid short"],
        ["2026-11-08", "expense", "plumbing", "550", "case aside: one category"],
        ["2026-12-01", "rent", "", "2400", ""],
        ["2026-12-01", "expense", "Landscaping", "150", ""],
    ])
    text = send(run_script, ses, "rental-3028")["rental-3028"]
    months = section(text, "rental-3028", "rent_months")
    assert "2026-10 $2,400 - $800.25 $1,599.75" in months  # no rent due known yet
    assert "2026-11 ▼ $2,000 $2,400 $550 $1,450" in months  # short of the rent due
    assert "2026-12 ✓ $2,400 $2,400 $150 $2,250" in months
    expenses = section(text, "rental-3028", "expenses")
    assert "Plumbing $0 $870" in expenses and "HVAC $0 $480.25" in expenses
    assert "Landscaping $150 $150" in expenses and "plumbing" not in expenses
    assert re.search(r"Net rent/month \$1,450 ", text)  # November's, from the ledger


def test_the_seasons_say_when_there_is_not_a_year_of_occupancy(run_script, ses):
    text = send(run_script, ses, "rental-3028")["rental-3028"]
    assert "Not enough data for a seasonal model: 1 month(s) of occupancy are recorded" in text
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    header = rows[0]
    year = []
    for month in range(1, 13):  # a year and a quarter of occupancy, two Januaries
        for year_number in ((2025, 2026) if month <= 3 else (2025,)):
            row = [""] * len(header)
            row[0] = f"{year_number}-{month:02d}-28"
            row[header.index("rental_occupancy")] = str(60 + month * 3 + (year_number - 2025)
                                                        * 10)
            year.append(row)
    write_sheet(run_script.figures, header, sorted(year) + rows[1:])
    text = send(run_script, ses, "rental-3028")["rental-3028"]
    seasons = section(text, "rental-3028", "seasons")
    assert "Not enough data" not in seasons
    assert "January 68% 2" in seasons  # 63% and 73%
    assert "July 81% 1" in seasons and "December 96% 1" in seasons


# --- Missing sheets and bad rows --------------------------------------------------------------


def test_a_missing_or_empty_record_sheet_is_one_line_in_its_report(run_script, ses):
    (run_script.data / "clients.csv").unlink()
    write_sheet(run_script.data / "deliveries.csv", DELIVERIES, [])
    write_sheet(run_script.data / "rental.csv", RENTAL, [["2027-01-05", "rent", "", "2400", ""]])
    said = send(run_script, ses, "dc-portfolio", "yacht-delivery", "rental-3028")
    # Said once, in the first section that needs the sheet, with what it means for the
    # sections below; they say nothing of it again.
    for report, sheet, line in (
            ("dc-portfolio", "clients.csv", "No clients.csv yet: run --new-data on the data "
             "folder (it writes the first line of each sheet not there, and keeps the rest), "
             "then add a row a client."),
            ("yacht-delivery", "deliveries.csv", "deliveries.csv has no rows dated on or "
             "before this cycle: add a row a delivery."),
            ("rental-3028", "rental.csv", "rental.csv has no rows dated on or before this "
             "cycle: add a row a rent payment or expense.")):
        assert said[report].count(line) == 1, report
        assert f"{line} The sections below that it fills stay empty until then." in \
            said[report], report
        assert said[report].count("run --new-data on") == (report == "dc-portfolio"), report
        assert f"Nothing to show until {sheet}" not in said[report], report


BAD_RECORDS = {
    "a renewal before the contract start": (
        "clients.csv", CLIENTS[:8],
        [["A", "Gold", "100", "retainer", "2026-06-01", "2026-05-01", "", "active"]],
        "clients.csv:2: renewal_date: 2026-05-01 is before the contract start"),
    "an unknown client status": (
        "clients.csv", CLIENTS[:8], [["A", "Gold", "100", "", "", "", "", "lapsed"]],
        "clients.csv:2: status: 'lapsed' is not one of active, paused, ended"),
    "a monthly value that is not dollars": (
        "clients.csv", CLIENTS[:8], [["A", "Gold", "lots", "", "", "", "", "active"]],
        "clients.csv:2: monthly_value: 'lots' is not an amount of dollars"),
    "a renewal date that is no date": (
        "clients.csv", CLIENTS[:8], [["A", "Gold", "100", "", "", "31/12/2026", "", "active"]],
        "clients.csv:2: renewal_date: '31/12/2026' is not a date"),
    "a delivery date that is no date": (
        "deliveries.csv", DELIVERIES, [["2026-11-31", "T", "A", "B", "1", "1", "1", "", "",
                                        "", ""]],
        "deliveries.csv:2: date: '2026-11-31' is not a date"),
    "a negative cost": (
        "deliveries.csv", DELIVERIES, [["2026-11-20", "T", "A", "B", "1", "1", "1", "-50", "",
                                        "", ""]],
        "deliveries.csv:2: fuel: '-50' is not an amount of dollars, 0 or more"),
    "miles that are not a number": (
        "deliveries.csv", DELIVERIES, [["2026-11-20", "T", "A", "B", "far", "", "", "", "", "",
                                        ""]],
        "deliveries.csv:2: nautical_miles: 'far' is not a number"),
    "an unknown rental kind": (
        "rental.csv", RENTAL, [["2026-11-01", "deposit", "", "100", ""]],
        "rental.csv:2: kind: 'deposit' is not one of rent, expense"),
    "a negative rental amount": (
        "rental.csv", RENTAL, [["2026-11-01", "expense", "HVAC", "-100", ""]],
        "rental.csv:2: amount: '-100' is not an amount of dollars"),
    "a rental row with no amount": (
        "rental.csv", RENTAL, [["2026-11-01", "rent", "", "", ""]],
        "rental.csv:2: amount: is empty"),
}


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_a_bad_record_stops_everything_naming_file_line_and_column(run_script, ses, case):
    sheet, header, rows, problem = BAD_RECORDS[case]
    write_sheet(run_script.data / sheet, header, rows)
    result = run_script("--cycle", CYCLE)
    assert result.returncode == 65, result.stderr
    assert problem in result.stderr.replace(f"{run_script.data}/", "")
    assert "Traceback" not in result.stderr and ses.messages() == []


def test_a_column_of_the_owners_own_is_read_past(run_script, ses):
    write_clients(run_script)  # its header has one
    add_rows(run_script.data / "clients.csv", [["Gum", "Gold", "10", "x", "", "", "2026-11-30",
                                                "active", "anything, at all"]])
    assert "Active clients: 5 of 7;" in send(run_script, ses, "dc-portfolio")["dc-portfolio"]


def test_new_data_writes_the_record_sheets_too(run_script, tmp_path):
    folder = tmp_path / "new"
    assert run_script("--new-data", str(folder)).returncode == 0
    for sheet in ser.RECORD_SHEETS:
        assert (folder / sheet).read_text() == ",".join(ser.SHEETS[sheet].columns) + "\n"


def test_no_active_client_is_said_not_a_traceback(run_script, ses):
    write_sheet(run_script.data / "clients.csv", CLIENTS[:8],
                [["A", "Gold", "1000", "monthly", "2025-01-01", "2026-12-10", "", "ended"]])
    assert "No client is active." in send(run_script, ses, "dc-portfolio")["dc-portfolio"]


def test_a_record_sheet_with_no_rows_leaves_the_figures_in_place(run_script, ses):
    for sheet, header in (("clients.csv", CLIENTS[:8]), ("rental.csv", RENTAL)):
        write_sheet(run_script.data / sheet, header, [])
    said = send(run_script, ses, "dc-portfolio", "rental-3028")
    assert "DC active clients 5 " in said["dc-portfolio"]
    assert "Net rent/month $1,850 " in said["rental-3028"]


# --- The records win, and say what they cannot compare ---------------------------------------


def test_the_records_win_when_the_figures_sheet_has_no_row_for_the_cycle(run_script, ses):
    write_clients(run_script)
    header = run_script.figures.read_text().splitlines()[0]
    run_script.figures.write_text(header + "\n")
    text = send(run_script, ses, "dc-portfolio")["dc-portfolio"]
    assert "No figures sheet row for this cycle: only what the domain records give" in text
    assert re.search(r"DC active clients 4 ", text)
    assert re.search(r"DC billed/month \$3,300.50", text)
    assert "figures none for this cycle in the figures sheet; the domain records give" in text
    record = json.loads(run_script.audit_log.read_text().splitlines()[-1])
    assert record["data_as_of"] is None  # no row of the figures sheet was sent


def test_the_cfo_revenue_table_takes_the_dc_revenue_of_the_clients(run_script, ses):
    write_clients(run_script)
    text = send(run_script, ses, "cfo", cycle="2026-11-30")["cfo"]
    # November's DC row: clients.csv bills $3,300.50, not the figures sheet's $3,400.
    assert re.search(r"2026-11 DC \$3,400 \$3,300.50 ▼ behind, -\$99.50", text), text


def test_a_count_from_the_records_is_not_set_against_the_sheets_last_number(run_script, ses):
    write_clients(run_script)  # 4 active; the figures sheet said 5 last time
    write_sheet(run_script.data / "deliveries.csv", DELIVERIES, [
        ["2026-11-10", "Gull", "A", "B", "60", "1", "1800", "300", "600", "", ""],
        ["2026-11-20", "Tern", "A", "B", "60", "1", "1800", "300", "600", "", ""],
        ["2026-11-30", "Wren", "A", "B", "60", "1", "1800", "300", "600", "", ""],
    ])
    said = send(run_script, ses, "dc-portfolio", "yacht-delivery")
    changes = section(said["dc-portfolio"], "dc-portfolio", "changes")
    assert "DC active clients: 5 to 4" not in changes  # no move: a change of source
    assert ("From another sheet than last time, so no change is computed: DC billed/month "
            "$3,300.50 now, from the domain records, $3,400 last time, from the figures "
            "sheet; DC active clients 4 now, from the domain records, 5 last time, from the "
            "figures sheet.") in changes
    assert re.search(r"DC active clients 4 - ", said["dc-portfolio"])
    # Deliveries are dated, so the last snapshot's date has its count from the sheet too:
    # 1 in the 30 days to the last snapshot (2026-11-15), 3 in the 30 days to the cycle.
    changes = section(said["yacht-delivery"], "yacht-delivery", "changes")
    assert "Deliveries/month: 1 to 3." in changes


def test_the_expense_year_is_the_rent_tables_twelve_months(run_script, ses):
    write_sheet(run_script.data / "rental.csv", RENTAL, [
        ["2026-01-31", "expense", "Roof", "999", "the month before the twelve"],
        ["2026-02-01", "expense", "HVAC", "100", "the first of the twelve"],
        ["2027-01-05", "rent", "", "1000", ""],
    ])
    text = send(run_script, ses, "rental-3028", cycle="2027-01-31")["rental-3028"]
    months = section(text, "rental-3028", "rent_months")
    assert "2026-02 $0 - $100 -$100" in months and "2026-01" not in months
    assert "2026-06 $0 - $0 -" in months  # no entry that month: no net income to show
    expenses = section(text, "rental-3028", "expenses")
    assert "HVAC $0 $100" in expenses and "Roof" not in expenses


def test_the_rent_of_a_month_not_over_is_not_yet_late(run_script, ses):
    write_sheet(run_script.data / "rental.csv", RENTAL, [
        ["2026-11-01", "rent", "", "2000", "paid short"],
        ["2026-12-01", "rent", "", "1000", "due today, half paid so far"]])
    months = section(send(run_script, ses, "rental-3028")["rental-3028"], "rental-3028",
                     "rent_months")
    assert "2026-11 ▼ $2,000 $2,400" in months  # November is over: short
    assert "2026-12 $1,000 so far $2,400 $0 $1,000" in months


def test_a_record_dated_far_past_the_cycle_is_warned_of(run_script, ses):
    write_sheet(run_script.data / "rental.csv", RENTAL, [
        ["2026-11-01", "rent", "", "2400", ""], ["2062-11-03", "expense", "HVAC", "80", ""]])
    ses.verify(SENDER)
    result = run_script("--only", "rental-3028", "--cycle", CYCLE)
    assert result.returncode == 0
    assert (f"warning: {run_script.data / 'rental.csv'} line 3: dated 2062-11-03, more than a "
            "year after the cycle") in result.stderr


def test_a_record_sheets_columns_come_in_any_order(run_script, ses):
    order = [4, 0, 1, 2, 3]  # note first, date in the middle
    write_sheet(run_script.data / "rental.csv", [RENTAL[i] for i in order],
                [[row[i] for i in order] for row in [
                    ["2026-11-01", "rent", "", "2400", "November"],
                    ["2026-11-08", "expense", "HVAC", "80", ""]]])
    text = send(run_script, ses, "rental-3028")["rental-3028"]
    assert "2026-11 ✓ $2,400 $2,400 $80 $2,320" in text


def test_a_client_listed_twice_is_a_bad_row(run_script, ses):
    write_sheet(run_script.data / "clients.csv", CLIENTS[:8], [
        ["Alder", "Gold", "2000", "retainer", "", "", "2026-11-20", "active"],
        ["alder ", "Gold", "2000", "retainer", "", "", "2026-11-20", "active"]])
    result = run_script("--only", "dc-portfolio", "--cycle", CYCLE)
    assert result.returncode == 65
    assert (f"{run_script.data / 'clients.csv'}:3: client: 'alder' is listed already, on "
            "line 2: one row a client") in result.stderr
    assert not ses.messages()


def test_tiers_are_grouped_without_regard_to_case(run_script, ses):
    write_sheet(run_script.data / "clients.csv", CLIENTS[:8], [
        ["Alder", "Gold", "2000", "retainer", "", "", "2026-11-20", "active"],
        ["Birch", "gold", "1000", "retainer", "", "", "2026-11-20", "active"]])
    text = send(run_script, ses, "dc-portfolio")["dc-portfolio"]
    tiers = section(text, "dc-portfolio", "tier_revenue")
    assert "Gold 2 $3,000 100%" in tiers and "gold" not in tiers


def test_the_records_decide_the_items_they_list(run_script, ses):
    """The client list is done while every active client has its dates, the rent ledger
    once rent is recorded (each an item items.csv has a row for); a record that denies
    what items.csv marks done keeps the item open, and says so.  The billing model is no
    longer the records' to decide: a client on none is a billing gap, and the item
    stays as items.csv leaves it."""
    write_sheet(run_script.data / "clients.csv", CLIENTS[:8], [
        ["Alder", "Gold", "2000", "retainer", "2025-01-01", "2027-01-01", "2026-11-20",
         "active"]])
    write_sheet(run_script.data / "rental.csv", RENTAL, [["2026-11-08", "expense", "HVAC",
                                                          "80", ""]])
    said = send(run_script, ses, "dc-portfolio", "rental-3028")  # items.csv: the list open
    assert "List every client with start date, term and renewal date" not in said[
        "dc-portfolio"]  # done: clients.csv shows it
    assert "clients.csv: 1 of 1 active clients have a contract start and a renewal date." \
        in said["dc-portfolio"]
    # items.csv marks the ledger done; an expense alone denies it.
    assert "Record every rent payment under Revenue - Rent." in said["rental-3028"]
    assert "rental.csv records expenses but no rent payment up to this cycle." in said[
        "rental-3028"]
    add_rows(run_script.data / "clients.csv",
             [["Birch", "Silver", "500", "", "", "", "", "active"]])
    add_rows(run_script.items, [["2026-11-30", "dc-client-list", "done", "", "", "", "", ""]])
    ses.verify(SENDER)
    result = run_script("--only", "dc-portfolio", "--cycle", CYCLE, "--force")
    assert result.returncode == 0
    assert ("warning: items.csv marks dc-client-list done, but clients.csv does not show it "
            "(closed while clients.csv gives every active client a contract start and a "
            "renewal date); the records win, so it stays open") in result.stderr
    assert "dc-billing-model" not in result.stderr
    text = received(ses, "dc-portfolio")
    assert "List every client with start date, term and renewal date in clients.csv" in text
    assert "clients.csv: 1 of 2 active clients have a contract start and a renewal date." \
        in text
    # Birch has no model: a billing gap; the billing model, done in items.csv, stays done.
    assert "Birch: on no billing model." in text
    assert "Set a DC billing model" not in text and "goes unbilled" not in text


def test_the_seasons_need_a_year_not_every_month(run_script, ses):
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    header, kept = rows[0], []
    for month in [f"2025-{m:02d}" for m in range(9, 13)] + [f"2026-{m:02d}"
                                                             for m in range(1, 11) if m != 3]:
        row = [""] * len(header)
        row[0], row[header.index("rental_occupancy")] = f"{month}-28", "70"
        kept.append(row)
    write_sheet(run_script.figures, header, kept + rows[2:])
    text = send(run_script, ses, "rental-3028")["rental-3028"]
    seasons = section(text, "rental-3028", "seasons")
    assert "Not enough data" not in seasons
    assert "No occupancy is recorded for March: those months have no mean yet." in seasons


# --- From the hostile review of the records --------------------------------------------------


def test_a_trend_never_joins_the_sheets_numbers_to_the_records(run_script, ses):
    write_sheet(run_script.data / "deliveries.csv", DELIVERIES, [
        ["2026-11-20", "A", "x", "y", "10", "1", "6000", "5000", "", "", ""]])
    write_clients(run_script)
    said = send(run_script, ses, "yacht-delivery", "dc-portfolio")
    yacht = section(said["yacht-delivery"], "yacht-delivery", "trends")
    # The records gave the cost as of each snapshot since 2026-11-20 only: the one
    # before it, from the sheet, is left out rather than drawn as a change.
    assert "Cost per delivery" not in yacht
    changes = section(said["yacht-delivery"], "yacht-delivery", "changes")
    assert ("From another sheet than last time, so no change is computed: Deliveries/month 1 "
            "now, from the domain records, 2 last time, from the figures sheet; Cost per "
            "delivery $5,000 now, from the domain records, $1,250 last time, from the figures "
            "sheet.") in changes
    assert "Cost per delivery: $1,250 to $5,000" not in changes
    assert changes.count("From another sheet") == 1  # one line for all of them
    dc = section(said["dc-portfolio"], "dc-portfolio", "trends")
    assert "DC billed/month" not in dc and "DC active clients" not in dc


def test_a_month_with_no_ledger_entry_is_not_a_net_rent_of_zero(run_script, ses):
    write_sheet(run_script.data / "rental.csv", RENTAL, [
        ["2026-10-01", "rent", "", "2400", ""]])  # nothing in November
    text = send(run_script, ses, "rental-3028")["rental-3028"]
    assert re.search(r"Net rent/month \$1,850 ", text)  # the figures sheet's, not $0
    assert "to $0" not in text


def test_the_cfo_table_puts_the_clients_revenue_in_the_cycles_month(run_script, ses):
    write_clients(run_script)  # bills $3,300.50 as of the cycle
    text = send(run_script, ses, "cfo", cycle="2026-12-10")["cfo"]
    assert re.search(r"2026-11 DC \$3,400 \$3,400 ", text)  # November: the sheet's
    assert re.search(r"2026-12 DC \$3,400 \$3,300.50 ", text)


def test_the_reports_that_show_a_record_figure_say_where_it_comes_from(run_script, ses):
    write_clients(run_script)
    said = send(run_script, ses, "ceo", "dc-portfolio")
    assert ("Taken from the domain records, which win over the figures sheet: DC "
            "billed/month, Revenue/month, total, Revenue minus burn, Runway from "
            "clients.csv; deliveries") not in said["ceo"]
    assert re.search(r"Taken from the domain records, which win over the figures sheet: "
                     r"[^.]*DC billed/month[^.]*from clients.csv", said["ceo"])
    assert "clients.csv keeps no history" in said["dc-portfolio"]


def test_no_active_client_decides_no_item(run_script, ses):
    write_sheet(run_script.data / "clients.csv", CLIENTS[:8], [
        ["A", "", "100", "", "", "", "", "ended"], ["B", "", "200", "", "", "", "", "paused"]])
    text = send(run_script, ses, "dc-portfolio")["dc-portfolio"]
    assert "clients.csv records it" not in text
    # The list stays open, as items.csv leaves it.
    assert "List every client with start date, term and renewal date in clients.csv" in text


def test_a_client_dated_far_past_the_cycle_is_warned_of(run_script, ses):
    write_sheet(run_script.data / "clients.csv", CLIENTS[:8], [
        ["A", "Gold", "100", "retainer", "2025-01-01", "2027-06-01", "2062-11-20", "active"]])
    ses.verify(SENDER)
    result = run_script("--only", "dc-portfolio", "--cycle", CYCLE)
    assert (f"{run_script.data / 'clients.csv'} line 2: dated 2062-11-20, more than a year "
            "after the cycle") in result.stderr


def test_a_record_a_year_and_a_day_ahead_is_warned_of(run_script, ses):
    write_sheet(run_script.data / "deliveries.csv", DELIVERIES, [
        ["2026-11-20", "A", "x", "y", "10", "1", "1000", "100", "", "", ""],
        ["2027-12-02", "B", "x", "y", "10", "1", "1000", "100", "", "", ""]])
    ses.verify(SENDER)
    result = run_script("--only", "yacht-delivery", "--cycle", CYCLE)
    assert "line 3: dated 2027-12-02, more than a year after the cycle" in result.stderr


def test_the_rent_ledger_closing_is_news_in_the_next_report(run_script, ses):
    rows = [row for row in run_script.items.read_text().splitlines()
            if "rental-rent-ledger" not in row]
    run_script.items.write_text("\n".join(rows) + "\n")
    write_sheet(run_script.data / "rental.csv", RENTAL, [
        ["2026-10-05", "expense", "Plumbing", "100", ""], ["2026-11-20", "rent", "", "2400", ""]])
    # An item with no row in items.csv is in no report: rental.csv decides nothing of it.
    text = send(run_script, ses, "rental-3028")["rental-3028"]  # last snapshot 2026-11-15
    assert "Rent is recorded in the ledger" not in text
    assert "Record every rent payment" not in text
    add_rows(run_script.items, [["2026-11-01", "rental-rent-ledger", "open", "", "", "", "",
                                 ""]])
    text = send(run_script, ses, "rental-3028")["rental-3028"]
    changes = section(text, "rental-3028", "changes")
    assert "Done: Rent is recorded in the ledger, under Revenue - Rent (rental.csv records " \
           "it)." in changes


def test_money_rounds_half_a_cent_up(run_script, ses):
    write_sheet(run_script.data / "deliveries.csv", DELIVERIES, [
        ["2026-11-10", "A", "x", "y", "10", "1", "1000", "100.02", "", "", ""],
        ["2026-11-20", "B", "x", "y", "10", "1", "1000", "100.03", "", "", ""]])
    text = send(run_script, ses, "yacht-delivery")["yacht-delivery"]
    assert "Cost per delivery (mean of 2 costed) $100.03" in text  # 100.025, half up


def test_deliveries_past_capacity_are_flagged(run_script, ses):
    write_sheet(run_script.data / "deliveries.csv", DELIVERIES, [
        [f"2026-11-{day:02d}", "A", "x", "y", "10", "1", "1000", "100", "", "", ""]
        for day in (2, 6, 10, 14, 18)])
    text = send(run_script, ses, "yacht-delivery")["yacht-delivery"]
    assert "2026-11 5 3 ▼ 5/3, over capacity" in text


def test_a_ledger_with_no_rows_for_the_cycle_decides_nothing(run_script, ses):
    """Was: ...keeps the ledger item open.  A record sheet with no rows for the cycle
    has nothing to judge: the item stands as items.csv leaves it, done or open."""
    write_sheet(run_script.data / "rental.csv", RENTAL, [["2026-12-05", "rent", "", "2400", ""]])
    ses.verify(SENDER)
    result = run_script("--only", "rental-3028", "--cycle", CYCLE)  # items.csv: done
    assert result.returncode == 0, result.stderr
    assert "rental-rent-ledger" not in result.stderr  # no record denies it
    text = received(ses, "rental-3028")
    assert "rental.csv records no rent payment up to this cycle." in text
    assert "Record every rent payment under Revenue - Rent." not in text
    add_rows(run_script.items, [["2026-11-30", "rental-rent-ledger", "open", "", "", "", "",
                                 ""]])
    text = send(run_script, ses, "rental-3028")["rental-3028"]
    assert "Record every rent payment under Revenue - Rent." in text


def test_a_client_listed_twice_is_said_with_the_other_bad_rows(run_script, ses):
    write_sheet(run_script.data / "clients.csv", CLIENTS[:8], [
        ["Acme", "", "100", "", "", "", "", "active"], ["acme", "", "100", "", "", "", "", "active"],
        ["Bravo", "", "100", "", "2025-13-01", "", "", "active"]])
    result = run_script("--only", "dc-portfolio", "--cycle", CYCLE)
    assert result.returncode == 65
    assert "clients.csv:3: client: 'acme' is listed already" in result.stderr
    assert "clients.csv:4: contract_start" in result.stderr


def test_a_cost_never_recorded_is_not_a_cost_of_zero(run_script, ses):
    write_sheet(run_script.data / "deliveries.csv", DELIVERIES, [
        ["2026-11-20", "A", "x", "y", "10", "1", "1000", "100", "200", "", ""]])
    text = send(run_script, ses, "yacht-delivery")["yacht-delivery"]
    split = section(text, "yacht-delivery", "cost_split")
    assert "travel - - 0 of 1" in split and "fuel $100 33% 1 of 1" in split
    assert "2026-11-20 A $1,000 $300 $700" in text  # its cost: what was recorded
    assert "Delivery costs are not recorded" not in text  # closed by deliveries.csv


def test_an_open_shortfall_is_labelled_by_what_is_wrong(run_script, ses):
    add_rows(run_script.items, [["2026-11-30", "dc-billing-model", "open",
                                 "the rate card is not used yet", "", "", "", ""]])
    text = send(run_script, ses, "ceo")["ceo"]  # reopened after its done row
    shortfalls = section(text, "ceo", "shortfall_split", through="missing_kpis")
    assert "DC billing model absent" in shortfalls
    assert "DC has a billing model" not in shortfalls
