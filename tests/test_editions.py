"""What executives and operators see: HTML and text editions, routing, the A/B
variant, previews, the run summary, --quiet and --history."""

import email
import email.policy
import html
import re
import xml.etree.ElementTree as ElementTree

import pytest

import send_exec_reports as ser
from conftest import (BCC, FROM_NAME, RECIPIENT, SENDER, display_name, example_data,
                      section_heading, sha256)
from local_ses import EXAMPLE_FIGURES
from test_send import ConnectionCounter

CYCLE = "2026-11-29"
CONTEXT = {"cycle": CYCLE, "prepared_by": "Reports Desk", "generated_at": "2026-11-29 03:00 UTC"}
FIGURE = re.compile(r"[$~]?\d[\d,/-]*(?:\.\d+)?(?:K|/month)?")


def html_text(markup):
    """What a reader of the HTML part sees, as plain words: not the inbox preview line
    (hidden in the page), nor the numbers of numbered lists (the text numbers them too)."""
    seen = re.sub(r'<head>.*?</head>|<div style="display:none;.*?</div>', " ", markup,
                  flags=re.S)
    seen = re.sub(rf'<td[^>]*style="{re.escape(ser.HTML_STYLE["marker"])}">[^<]*</td>', " ",
                  seen)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", seen)).split())


def text_headings(body):
    """Headings of the text edition: the lines underlined with dashes."""
    lines = body.splitlines()
    return [line for line, under in zip(lines, lines[1:])
            if under and set(under) == {"-"} and len(under) == len(line)]


# --- Two editions from one source --------------------------------------------


@pytest.mark.parametrize("variant", ser.VARIANTS)
@pytest.mark.parametrize("spec", ser.REPORTS, ids=lambda spec: spec.report_id)
def test_text_and_html_have_the_same_headings_and_figures(spec, variant):
    report = ser.render_report(spec, variant=variant, **CONTEXT)
    h2 = [html.unescape(h) for h in re.findall(r"<h2[^>]*>(.*?)</h2>", report.html)]
    assert text_headings(report.body) == [h.upper() for h in h2]
    assert len(h2) >= 2
    prose = re.sub(r"(?m)^\s*\d+\. ", "", report.body)  # list numbers: not figures
    text_figures = set(FIGURE.findall(" ".join(prose.split())))
    html_figures = set(FIGURE.findall(html_text(report.html)))
    assert text_figures == html_figures


@pytest.mark.parametrize("spec", ser.REPORTS, ids=lambda spec: spec.report_id)
def test_the_html_is_well_formed_self_contained_and_inline_styled(spec):
    report = ser.render_report(spec, **CONTEXT)
    assert report.html.startswith("<!DOCTYPE html>")
    root = ElementTree.fromstring(report.html.split("\n", 1)[1])  # parses only if balanced
    tags_used = {element.tag for element in root.find("body").iter()}
    assert not tags_used & {"script", "style", "link", "img", "iframe"}
    assert "http" not in report.html  # nothing is loaded from the web
    for element in root.iter():
        if element.tag in {"h1", "h2", "p", "table", "th", "td"}:
            assert element.get("style"), element.tag
    # The head's one style is the dark palette: the look itself is inline.
    assert [s.text for s in root.find("head").iter("style")] == [ser.HTML_HEAD_STYLE]


def test_kpi_figures_are_tables_and_targets_are_bars():
    [cfo_spec] = ser.select_reports("cfo")
    cfo = ser.render_report(cfo_spec, data=example_data(CYCLE), **CONTEXT)
    assert cfo.html.count("<table") > 3
    assert "4/6" in cfo.html and "background:#2e7d32" in cfo.html
    assert "[########----] 4/6" in cfo.body  # the same bar in the text edition
    [ceo_spec] = ser.select_reports("ceo")
    data = example_data("2026-11-01")
    ceo = ser.render_report(ceo_spec, data=data, **CONTEXT)
    assert "[bar" not in ceo.html + ceo.body
    open_now = ser.open_items(ser.item_states(data, data.day, data.figures.snapshot), "ceo",
                              "shortfall")
    share = f"{sum(s.item.business == 'Portfolio' for s in open_now)}/{len(open_now)}"
    assert share in html_text(ceo.html) and f"] {share}" in ceo.body  # by business


def test_the_brief_is_one_screen_of_headline_numbers_and_top_actions():
    for spec in ser.REPORTS:
        full = ser.render_report(spec, data=example_data(CYCLE), **CONTEXT)
        brief = ser.render_report(spec, variant="b", data=example_data(CYCLE), **CONTEXT)
        headings = [section_heading(spec.report_id, slot, edition="text")
                    for slot in ("attention", "changes", "glance", "top_actions")]
        assert text_headings(brief.body) == headings
        # What needs attention, a bounded list: at most ATTENTION_SHOWN lines and one
        # that says how many more.
        lines = brief.body.splitlines()
        start, end = lines.index(headings[0]), lines.index(headings[1])
        attention = "\n".join(lines[start + 2:end])
        assert len(re.findall(r"(?m)^ *\d+\. ", attention)) <= ser.ATTENTION_SHOWN + 1
        # What changed, the figures (the CEO's with its cash figures), the top actions:
        # one screen besides what needs attention.
        assert len(lines) - (end - start) <= 70
        assert len(brief.body) < len(full.body)
        assert brief.subject.startswith("Brief: ")


def test_sent_messages_carry_both_parts_and_tags(run_via_proxy, proxy, ses):
    """The eight reports reach SES through v2's SendEmail (/v2/email/outbound-emails),
    each one raw MIME message of both editions, tagged and in the configuration set."""
    ses.verify(SENDER)
    run_via_proxy.settings(AWS_SES_CONFIGURATION_SET="exec-reports")
    result = run_via_proxy("--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    requests = proxy.sent()
    assert len(requests) == len(ser.REPORTS)
    records = run_via_proxy.audit_records()
    for spec, request, record in zip(ser.REPORTS, requests, records, strict=True):
        assert request["charsets"] == {"plain": "utf-8", "html": "utf-8"}
        assert sha256(request["text"]) == record["body_sha256"]
        assert sha256(request["html"]) == record["html_sha256"]
        assert request["tags"] == {"report": spec.report_id, "variant": "a", "cycle": CYCLE}
        assert request["ConfigurationSetName"] == "exec-reports"
        assert request["message"]["Subject"] == record["subject"]
        assert request["message"]["Bcc"] is None  # SES would show it to every recipient
        assert request["Destination"] == {"ToAddresses": [RECIPIENT], "BccAddresses": [BCC]}
        assert set(request["Content"]) == {"Raw"}  # the v2 API's JSON, not v1's form
    assert proxy.count("SendRawEmail") == 0


# --- Each stakeholder their own report ---------------------------------------


def test_reports_go_to_their_own_recipients(run_script, ses):
    ses.verify(SENDER)
    run_script.settings(REPORT_TO_CTO="cto@example.com, eng-lead@example.com",
                        REPORT_TO_RENTAL_3028="landlord@example.com",
                        AWS_RECIPIENT_EMAIL="owner@example.com,partner@example.com")
    result = run_script("--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    to = {m["subject"].split(" | ")[0]: m["destinations"]["ToAddresses"]
          for m in ses.messages()}
    assert to["CTO Report: stack, security and engineering actions"] == [
        "cto@example.com", "eng-lead@example.com"]
    assert to["3028 51st St Rental Audit"] == ["landlord@example.com"]
    assert to["CEO Report: portfolio health and 30-day agenda"] == [
        "owner@example.com", "partner@example.com"]
    assert all(m["destinations"]["BccAddresses"] == [BCC] for m in ses.messages())
    records = {r["report"]: r for r in run_script.audit_records()}
    assert records["cto"]["to"] == ["cto@example.com", "eng-lead@example.com"]


def test_fifty_recipients_is_the_limit_per_message(run_script, ses):
    ses.verify(SENDER)
    forty_nine = ",".join(f"person{n}@example.com" for n in range(49))
    run_script.settings(REPORT_TO_CFO=forty_nine)
    assert run_script("--only", "cfo").returncode == 0  # 49 To + 1 BCC = 50
    run_script.settings(REPORT_TO_CFO=forty_nine + ",one-more@example.com")
    result = run_script("--only", "cfo", "--force")
    assert result.returncode == 78
    assert "config error: report cfo has 51 recipients" in result.stderr
    assert "REPORT_TO_CFO" in result.stderr
    assert len(ses.messages()) == 1


def test_a_misnamed_report_setting_is_a_config_error(run_script, ses):
    run_script.settings(REPORT_TO_CEOO="ceo@example.com")
    result = run_script()
    assert result.returncode == 78
    assert "config error: REPORT_TO_CEOO names no report" in result.stderr
    assert "REPORT_TO_RENTAL_3028" in result.stderr


# --- The A/B variant -----------------------------------------------------------


def test_variant_b_sends_the_brief_to_its_own_list(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    run_via_proxy.settings(AWS_RECIPIENT_EMAIL_B="tester@example.com",
                           REPORT_TO_CTO_B="cto-b@example.com")
    result = run_via_proxy("--variant", "b", "--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    messages = ses.messages()
    assert {tuple(m["destinations"]["ToAddresses"]) for m in messages} == {
        ("tester@example.com",), ("cto-b@example.com",)}
    assert all(m["subject"].startswith("Brief: ") for m in messages)
    ceo = next(sent["text"] for sent in proxy.sent() if sent["tags"]["report"] == "ceo")
    assert section_heading("ceo", "glance", edition="text") in ceo
    assert section_heading("ceo", "summary", edition="text") not in ceo
    assert {request["tags"]["variant"] for request in proxy.sent()} == {"b"}
    assert {r["variant"] for r in run_via_proxy.audit_records()} == {"b"}


def test_the_ledger_keeps_the_variants_apart(run_script, ses):
    ses.verify(SENDER)
    run_script.settings(AWS_RECIPIENT_EMAIL_B="tester@example.com")
    count = len(ser.REPORTS)
    assert f"{count} of {count} reports sent" in run_script("--cycle", CYCLE).stdout
    assert f"{count} of {count} reports sent" in run_script("--cycle", CYCLE, "--variant",
                                                            "b").stdout
    assert f"0 of {count} reports sent" in run_script("--cycle", CYCLE).stdout
    assert f"0 of {count} reports sent" in run_script("--cycle", CYCLE, "--variant",
                                                      "b").stdout
    assert len(ses.messages()) == 2 * count


def test_variant_b_without_its_list_is_a_config_error(run_script, ses):
    result = run_script("--variant", "b")
    assert result.returncode == 78
    assert "config error: AWS_RECIPIENT_EMAIL_B is missing" in result.stderr
    assert run_script("--variant", "c").returncode == 64


# --- Previews ------------------------------------------------------------------


def test_previews_are_eml_files_a_mail_client_opens(run_script, ses, tmp_path):
    counter = ConnectionCounter()
    try:
        result = run_script("--preview-dir", str(tmp_path / "preview"), "--cycle", CYCLE,
                            env={"AWS_ENDPOINT_URL_SES": counter.url})
    finally:
        counter.close()
    assert result.returncode == 0, result.stderr
    assert counter.connections == 0 and not run_script.audit_log.exists()
    for spec in ser.REPORTS:
        raw = (tmp_path / "preview" / f"{spec.report_id}.eml").read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert display_name(str(message["From"])) == FROM_NAME
        assert message["From"].addresses[0].addr_spec == SENDER
        assert message["To"] == RECIPIENT and message["Bcc"] == BCC
        assert message["Subject"] == f"{spec.title} | cycle {CYCLE}"
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(("plain",)).get_content()
        page = message.get_body(("html",)).get_content()
        assert text.startswith(spec.title)
        page_file = (tmp_path / "preview" / f"{spec.report_id}.html").read_text()
        assert page.replace("\r\n", "\n") == page_file  # .eml lines end in CRLF, as on the wire


def test_an_unwritable_preview_dir_exits_73(run_script, ses, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_script("--preview-dir", str(blocker / "preview"))
    assert result.returncode == 73
    [line] = result.stderr.splitlines()
    assert "--preview-dir" in line


# --- A readable run ------------------------------------------------------------


def test_a_run_ends_with_a_summary_table(run_script, ses):
    ses.verify(SENDER)
    run_script.settings(REPORT_TO_CTO="cto@example.com, eng@example.com")
    result = run_script("--cycle", CYCLE)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["report", "to", "status", "SES", "message", "id"]
    rows = {line.split()[0]: line.split() for line in lines[2:2 + len(ser.REPORTS)]}
    ids = {r["report"]: r["message_id"] for r in run_script.audit_records()}
    assert rows["cto"][1:4] == ["cto@example.com", "+1", "sent"]
    assert rows["ceo"] == ["ceo", RECIPIENT, "sent", ids["ceo"]]
    count = len(ser.REPORTS)
    assert lines[-1].startswith(f"{count} of {count} reports sent for cycle 2026-11-29, "
                                "variant a")


def test_quiet_prints_nothing_when_all_went_out(run_script, ses):
    ses.verify(SENDER)
    run_script.env_file.chmod(0o644)  # a warning, held back while all is well
    result = run_script("--quiet")
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""
    again = run_script("--quiet")  # already sent is all well too
    assert again.returncode == 0 and again.stdout + again.stderr == ""


def test_quiet_prints_only_the_problems(run_script, ses):
    run_script.env_file.chmod(0o644)
    result = run_script("--quiet")  # the sender is not verified
    assert result.returncode == 1
    assert result.stdout == ""
    assert "readable by group or others" in result.stderr
    assert "error: ceo not sent: SES said MessageRejected" in result.stderr


def test_verbose_shows_each_step(run_script, ses):
    ses.verify(SENDER)
    result = run_script("--verbose", "--only", "ceo")
    assert result.returncode == 0
    for step in ("settings:", "ledger:", "credentials: found", "quota:", "sending ceo to",
                 "sent ceo:"):
        assert step in result.stderr, step
    assert "1 of 1 reports sent" in result.stdout


def test_history_shows_who_got_what_and_what_failed(run_script, ses):
    run_script("--cycle", "2026-11-27")  # rejected: the sender is not yet verified
    ses.verify(SENDER)
    run_script("--cycle", "2026-11-28", "--only", "ceo")
    run_script("--cycle", "2026-11-29")
    run_script("--cycle", "2026-11-29")  # skips only; history still shows the sends
    result = run_script("--history", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "cycle 2026-11-27" not in out
    assert "cycle 2026-11-28, variant a" in out and "cycle 2026-11-29, variant a" in out
    sent = [r for r in run_script.audit_records() if r["status"] == "sent"]
    assert all(r["message_id"] in out for r in sent)
    everything = run_script("--history", "10").stdout
    assert "failed" in everything and "MessageRejected" in everything
    assert "not attempted" in everything


def test_history_needs_no_valid_settings(run_script, ses):
    run_script.settings(AWS_SES_REGION=None)
    result = run_script("--history")
    assert result.returncode == 0
    assert "no records yet" in result.stdout
    assert run_script("--history", "0").returncode == 64


@pytest.mark.parametrize("argv", [["--dry-run", "--check"], ["--list", "--history"],
                                  ["--quiet", "--verbose"], ["--preview-dir", "x", "--dry-run"]])
def test_options_that_contradict_each_other_are_usage_errors(run_script, argv):
    result = run_script(*argv)
    assert result.returncode == 64
    assert "not allowed with" in result.stderr
