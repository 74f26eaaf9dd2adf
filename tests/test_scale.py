"""As the sheets and the logs grow (issue 27): the reports go through SES v2 as one
raw message each, a list that grows with a sheet shows what matters and counts the
rest, and a message larger than SES takes is refused before anything is sent."""

import csv
import http.server
import json
import re

import pytest

import send_exec_reports as ser
from conftest import BCC, RECIPIENT, SENDER, section
from fault_proxy import PREFLIGHT_V2_ACTIONS, serve_in_background
from test_domain_records import CLIENTS
from test_owner_data import CYCLE, write_sheet

ALL_IDS = [spec.report_id for spec in ser.REPORTS]


# --- SES v2, and v1 where v2 is missing ------------------------------------------------


def test_where_the_endpoint_has_no_v2_api_the_same_messages_go_through_v1(run_via_proxy,
                                                                           proxy, ses):
    ses.verify(SENDER)
    for action in PREFLIGHT_V2_ACTIONS:
        proxy.plan(action, then="unimplemented")
    result = run_via_proxy("--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert proxy.count("SendEmail") == 0 and proxy.count("SendRawEmail") == len(ALL_IDS)
    for request, report_id in zip(proxy.sent("SendRawEmail"), ALL_IDS, strict=True):
        assert request["Tags.member.1.Value"] == report_id
        assert [request["Destinations.member.1"], request["Destinations.member.2"]] == [
            RECIPIENT, BCC]
    messages = ses.messages()
    assert [m["id"] for m in messages] == [
        r["message_id"] for r in run_via_proxy.audit_records()]
    assert all(m["destinations"] == {"ToAddresses": [RECIPIENT], "BccAddresses": [BCC]}
               and "Bcc:" not in m["raw"] for m in messages)


def test_through_v1_too_a_used_up_daily_quota_is_never_retried(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    for action in PREFLIGHT_V2_ACTIONS:
        proxy.plan(action, then="unimplemented")
    proxy.plan("SendRawEmail", "pass", then="quota")
    result = run_via_proxy("--cycle", CYCLE)
    assert result.returncode == 75, result.stderr
    assert proxy.count("SendRawEmail") == 2  # one sent, one refused: no retry
    assert "24-hour sending quota is used up" in result.stderr


def test_a_message_over_what_ses_takes_is_refused_before_any_send(run_script, ses,
                                                                  monkeypatch):
    """The limit is SES's 10 MB; lowered here so that only the example's largest report
    passes it (the lists that grow with a sheet are capped: see below)."""
    ses.verify(SENDER)
    sizes = {}
    result = run_script("--cycle", CYCLE, "--preview-dir", str(run_script.tmp_path / "p"))
    assert result.returncode == 0, result.stderr
    for report_id in ALL_IDS:  # as SES counts them: base64 (the preview's Bcc aside)
        eml = (run_script.tmp_path / "p" / f"{report_id}.eml").read_bytes()
        sizes[report_id] = ser.encoded_size(eml)
    largest, second = sorted(sizes, key=sizes.get, reverse=True)[:2]
    assert sizes[largest] - sizes[second] > 1000
    monkeypatch.setattr(ser, "SES_MESSAGE_MAX_BYTES", (sizes[largest] + sizes[second]) // 2)
    check = run_script("--check", "--cycle", CYCLE)  # --check and previews find it too
    assert check.returncode == 65 and f"data error: {largest}: its message is" in check.stderr
    result = run_script("--cycle", CYCLE)
    assert result.returncode == 65
    errors = [line for line in result.stderr.splitlines() if line.startswith("data error:")]
    assert len(errors) == 1 and errors[0].startswith(f"data error: {largest}: its message is ")
    assert "as SES counts it, over the" in errors[0] and "Traceback" not in result.stderr
    assert ses.messages() == []  # not the others either: the run is refused whole
    assert not [r for r in run_script.audit_records() if r["status"] == "sent"]


# --- Lists that grow with a sheet ------------------------------------------------------


def many_clients(count):
    """count active clients, each renewing soon and never invoiced: in every list."""
    return [[f"Client {n:05}", "Gold", str(100 + n % 1000), "", "2025-01-01", "2026-12-15",
             "", "active", ""] for n in range(count)]


def test_fifty_thousand_clients_make_a_dc_report_ses_takes(run_script, ses):
    ses.verify(SENDER)
    write_sheet(run_script.data / "clients.csv", CLIENTS, many_clients(50_000))
    result = run_script("--only", "dc-portfolio", "--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    [message] = ses.messages()
    assert len(message["raw"]) < ser.SES_MESSAGE_MAX_BYTES
    assert len(message["body"].encode()) < ser.GMAIL_CLIPS_AT  # nor is it clipped
    text = " ".join(message["text"].split())
    gaps = section(text, "dc-portfolio", "billing_gaps", edition="text")
    more = (f"And {50_000 - ser.LIST_SHOWN} more in clients.csv; those shown are the most "
            "monthly value first.")
    assert more in gaps
    assert gaps.count("Client ") == ser.LIST_SHOWN
    # The most money first: the clients worth $1,099 a month lead each list.
    assert "Client 00999: on no billing model." in gaps and "Client 00000" not in gaps
    risks = section(text, "dc-portfolio", "churn_risks", edition="text").partition(
        "those shown are")[0]
    assert risks.count("Client ") == ser.LIST_SHOWN and "Client 00999: renews" in risks


@pytest.mark.parametrize("count", [ser.LIST_SHOWN, ser.LIST_SHOWN + 1])
def test_a_list_one_longer_than_the_limit_says_one_more_and_is_counted_whole(count):
    lines = [f"line {n}" for n in range(count)]
    blocks = ser.fill_blocks([ser.Block("heading", ["Open items (#)"]),
                              *ser.list_at_most(lines, "items.csv")], {})
    assert blocks[0].items == [f"Open items ({count})"]  # the heading counts them all
    assert blocks[1].items == lines[:ser.LIST_SHOWN]
    assert [b.items for b in blocks[2:]] == ([] if count == ser.LIST_SHOWN else [
        ["And 1 more in items.csv."]])


def test_every_table_that_grows_with_a_sheet_is_capped(run_script, ses):
    """A tier a client and a category an expense: the tables stay LIST_SHOWN rows long,
    with their totals, and the messages well within what SES takes."""
    ses.verify(SENDER)
    count = 20_000
    write_sheet(run_script.data / "clients.csv", CLIENTS, [
        [f"Client {n:05}", f"Tier {n:05}", str(100 + n % 1000), "retainer", "2025-01-01",
         "2027-06-01", "2026-11-20", "active", ""] for n in range(count)])
    write_sheet(run_script.data / "rental.csv", ["date", "kind", "category", "amount", "note"],
                [["2026-11-02", "expense", f"Category {n:05}", str(10 + n % 500), "example"]
                 for n in range(count)])
    result = run_script("--only", "dc-portfolio,rental-3028", "--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    for message in ses.messages():
        assert ser.encoded_size(message["raw"].encode()) < ser.SES_MESSAGE_MAX_BYTES / 50
        assert message["text"].count(" more in ") >= 1
    text = " ".join(next(m["text"] for m in ses.messages()
                         if m["subject"].startswith("DangerousCentaur")).split())
    tiers = section(text, "dc-portfolio", "tier_revenue", edition="text").partition(
        "those shown are")[0]
    assert len(re.findall(r"Tier \d{5}", tiers)) == ser.LIST_SHOWN
    assert f"All tiers {count} " in tiers


@pytest.fixture
def error_pages():
    """An HTTP server on loopback that answers every request with one error page, as a
    proxy or a server without SES's v2 API does: no SES error code in it."""
    class Pages(http.server.BaseHTTPRequestHandler):
        def answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            page = b"<html><body>Not here</body></html>"
            self.send_response(self.server.status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    serve_in_background(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [None, 200, 403, 404, 502])
def test_where_v2_does_not_answer_as_ses_the_sends_go_through_v1(run_script, ses, error_pages,
                                                                 status):
    ses.verify(SENDER)
    error_pages.status = status
    v2 = f"http://127.0.0.1:{error_pages.server_address[1]}" if status else \
        "http://127.0.0.1:9"  # nothing listens there
    result = run_script("--cycle", CYCLE, env={"AWS_ENDPOINT_URL_SESV2": v2})
    assert result.returncode == 0, result.stderr
    assert "warning: preflight" in result.stderr
    assert len(ses.messages()) == len(ALL_IDS)


def test_a_table_cell_names_five_items_then_counts_the_rest(run_script, ses):
    ses.verify(SENDER)
    with open(run_script.items, "a", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(
            [["2026-11-20", f"gap-{n}", "open", "", "ceo", "shortfall", f"Shortfall {n}.", ""]
             for n in range(30)])
    result = run_script("--only", "ceo", "--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    [message] = ses.messages()
    text = " ".join(message["text"].split())
    split = section(text, "ceo", "shortfall_split", edition="text")
    total = int(re.search(r"Share of (\d+)", split).group(1))
    assert total >= 30 and f"; and {total - ser.CELL_SHOWN} more in items.csv" in split
    assert len(re.findall(r"Shortfall \d+", split)) <= ser.CELL_SHOWN


def test_the_drain_keeps_at_most_so_many_sends_however_far_it_reads(tmp_path, monkeypatch):
    """An event for an id the log lacks reads the whole log back; what it keeps of the
    sends it passes stays bounded (their few fields, the newest KEPT_SENDS)."""
    monkeypatch.setattr(ser, "KEPT_SENDS", 3)
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps({
        "cycle": "2026-12-01", "report": "ceo", "status": "sent", "message_id": f"id-{n}",
        "to": [RECIPIENT], "bcc": [BCC], "subject": "x" * 100}) + "\n" for n in range(10)))
    book = ser.EventBook(log)
    try:
        assert book.sends({"never-sent"}) == {}
        assert book.sends({"id-9", "id-7"}) == {  # kept on the way: the newest three
            f"id-{n}": {"cycle": "2026-12-01", "report": "ceo", "to": [RECIPIENT],
                        "bcc": [BCC]} for n in (9, 7)}
        assert book.sends({"id-0"}) == {}  # passed, and not kept: no send that old has events
        assert len(book._sends) == 3
    finally:
        book.close()
