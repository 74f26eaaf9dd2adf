"""No silent failures: cycles that fall due on a schedule, missed ones, the failure
notice by email, the heartbeat, and --status.  Dates are read through the injected
clock in a stated zone; the notice is seen on the SES server; the heartbeat on a
real HTTP server on loopback."""

import http.server
import json
import socket
import threading
import time
from datetime import date, datetime, timezone

import pytest

import send_exec_reports as ser
from conftest import BCC, SENDER, FakeClock
from fault_proxy import serve_in_background

COUNT = len(ser.REPORTS)  # however many reports there are
from test_recover import wait_for

LA = "America/Los_Angeles"
SCHEDULED = {"REPORT_SCHEDULE": "1,15", "REPORT_TIMEZONE": LA}
NOTICE_SUBJECT = "Reports not sent"


def at(text):
    """A clock stopped at a UTC moment, "2026-12-03 18:00"."""
    return FakeClock(datetime.fromisoformat(text).replace(tzinfo=timezone.utc))


def reports_received(ses):
    return [m for m in ses.messages() if not m["subject"].startswith(NOTICE_SUBJECT)]


def notices_received(ses):
    return [m for m in ses.messages() if m["subject"].startswith(NOTICE_SUBJECT)]


def cycles_sent(run_script):
    return sorted({r["cycle"] for r in run_script.audit_records() if r["status"] == "sent"})


# --- The arithmetic of due dates ---------------------------------------------------------


@pytest.mark.parametrize("schedule, today, due", [
    ((1, 15), date(2026, 12, 3), date(2026, 12, 1)),
    ((1, 15), date(2026, 12, 15), date(2026, 12, 15)),
    ((1, 15), date(2026, 12, 14), date(2026, 12, 1)),
    ((1, 15), date(2027, 1, 1), date(2027, 1, 1)),
    ((15,), date(2027, 1, 3), date(2026, 12, 15)),  # across the year's end
    ((31,), date(2026, 4, 30), date(2026, 4, 30)),  # 31 in a 30-day month is the 30th
    ((31,), date(2026, 4, 29), date(2026, 3, 31)),
    ((30,), date(2027, 3, 1), date(2027, 2, 28)),  # February
    ((29, 30), date(2028, 2, 29), date(2028, 2, 29)),  # a leap year: one due date, not two
    ((30,), date(2028, 3, 29), date(2028, 2, 29)),
])
def test_the_cycle_due_is_the_latest_due_date_on_or_before_today(schedule, today, due):
    assert ser.due_on_or_before(schedule, today) == due


@pytest.mark.parametrize("schedule, today, following", [
    ((1, 15), date(2026, 12, 1), date(2026, 12, 15)),
    ((1, 15), date(2026, 12, 20), date(2027, 1, 1)),
    ((31,), date(2027, 1, 31), date(2027, 2, 28)),
    ((31,), date(2028, 1, 31), date(2028, 2, 29)),
])
def test_the_next_due_date(schedule, today, following):
    assert ser.due_after(schedule, today) == following


def cycle_of(run_script, clock, env):
    result = run_script("--dry-run", "--only", "ceo", clock=clock, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("| cycle ")[1].split()[0]


@pytest.mark.parametrize("moment, cycle", [
    ("2026-12-15 07:59", "2026-12-14"),  # 23:59 on the 14th in Los Angeles
    ("2026-12-15 08:00", "2026-12-15"),  # midnight there
    ("2027-03-14 07:59", "2027-03-07"),  # the night daylight saving starts (PST, -8)
    ("2027-03-14 08:00", "2027-03-14"),
    ("2027-11-07 06:59", "2027-11-01"),  # the night it ends: midnight is still PDT (-7)
    ("2027-11-07 07:00", "2027-11-07"),
])
def test_the_cycle_turns_at_midnight_in_the_schedules_zone(run_script, moment, cycle):
    env = {"REPORT_SCHEDULE": "1,7,14,15", "REPORT_TIMEZONE": LA}
    assert cycle_of(run_script, at(moment), env) == cycle


def test_report_timezone_wins_over_the_machines_zone(run_script, monkeypatch):
    """At one instant Kiritimati (+14) and Pago Pago (-11) are on different dates."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    try:
        clock = at("2026-11-30 21:32")  # 2026-12-01 11:32 in Kiritimati
        assert cycle_of(run_script, clock, {"REPORT_TIMEZONE": None}) == "2026-12-01"
        assert cycle_of(run_script, clock, {"REPORT_TIMEZONE": "Pacific/Pago_Pago"}
                        ) == "2026-11-30"
        result = run_script("--dry-run", "--only", "ceo", clock=clock,
                            env={"REPORT_TIMEZONE": "Pacific/Pago_Pago"})
        # The cycle's date and the time it was generated are read in one zone.
        assert "Cycle 2026-11-30 | prepared by" in result.stdout
        assert "generated 2026-11-30 10:32 SST" in " ".join(result.stdout.split())
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("name, value, said", [
    ("REPORT_SCHEDULE", "1,32", "REPORT_SCHEDULE '1,32' is not days of the month"),
    ("REPORT_SCHEDULE", "first", "REPORT_SCHEDULE 'first' is not days of the month"),
    ("REPORT_TIMEZONE", "Pacific/Atlantis", "REPORT_TIMEZONE 'Pacific/Atlantis' is not an IANA"),
    ("REPORT_TIMEZONE", "../../etc/passwd", "is not an IANA time zone"),
    ("REPORT_OVERDUE_HOURS", "0", "REPORT_OVERDUE_HOURS '0' is not a number of hours"),
    ("REPORT_ALERT_EMAIL", "owner-at-example.com", "REPORT_ALERT_EMAIL 'owner-at-example.com'"),
    ("REPORT_HEARTBEAT_URL", "http://hc.example.com/ping/secret-uuid-1234567890",
     "REPORT_HEARTBEAT_URL must be an https:// URL (http only to a loopback address)"),
])
def test_a_bad_schedule_or_alarm_setting_is_one_line_and_exit_78(run_script, name, value, said):
    result = run_script("--dry-run", env={name: value})
    assert result.returncode == 78
    assert said in result.stderr and "Traceback" not in result.stderr
    if name == "REPORT_HEARTBEAT_URL":
        assert "secret-uuid" not in result.stderr


# --- Cycles that fall due, sent once each -----------------------------------------------


@pytest.mark.parametrize("later_record", [
    {"status": "event", "event": "delivery", "message_id": "m", "matched": True,
     "recipient": BCC, "event_time": "2026-12-02T10:00:00.000Z", "event_id": "e:0"},
    {"status": "notice", "message_id": "m", "error": {"code": "x", "message": "y"}},
])
def test_a_delivery_event_or_a_notice_does_not_hide_a_missed_cycle(run_script, ses,
                                                                   later_record):
    """They are written into a cycle after its run, under no schedule: the cycle is
    still one sent under REPORT_SCHEDULE, and a miss after it is still seen."""
    ses.verify(SENDER)
    assert run_script("--quiet", clock=at("2026-12-03 18:00"), env=SCHEDULED).returncode == 0
    with run_script.audit_log.open("a") as log:
        log.write(json.dumps({"ts": "2026-12-03T19:00:00.000+00:00", "cycle": "2026-12-01",
                              "variant": "a", "report": "ceo", **later_record}) + "\n")

    late = run_script("--quiet", clock=at("2027-01-03 18:00"), env=SCHEDULED)

    assert "missed cycle(s) 2026-12-15" in late.stderr, late.stderr


def test_each_due_cycle_is_sent_once_and_a_missed_one_is_recorded(run_script, ses):
    ses.verify(SENDER)

    def run(moment, *args):
        return run_script("--quiet", *args, clock=at(moment), env=SCHEDULED)

    first = run("2026-12-03 18:00")  # the 3rd: cycle 2026-12-01 falls due on the 1st
    assert first.returncode == 0, first.stderr
    assert cycles_sent(run_script) == ["2026-12-01"] and len(reports_received(ses)) == COUNT
    records = len(run_script.audit_records())
    again = run("2026-12-10 18:00")  # nothing falls due between the 1st and the 15th
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert len(run_script.audit_records()) == records  # nothing due writes nothing
    assert len(reports_received(ses)) == COUNT
    third = run("2026-12-16 18:00")
    assert third.returncode == 0, third.stderr
    assert cycles_sent(run_script) == ["2026-12-01", "2026-12-15"]
    # A month asleep: 2027-01-01 and 2027-01-15 fell due; only the latest is sent.
    late = run("2027-01-20 18:00")
    assert late.returncode == 0
    assert cycles_sent(run_script) == ["2026-12-01", "2026-12-15", "2027-01-15"]
    assert late.stderr.count("warning: missed cycle(s) 2027-01-01: they fell due") == 1
    missed = [r for r in run_script.audit_records() if r["status"] == "missed"]
    assert [(r["cycle"], r["report"]) for r in missed] == [("2027-01-01", ser.MISSED_REPORT)]
    assert missed[0]["error"]["message"].endswith(f"fell due: {', '.join(ser.REPORT_IDS)}")
    assert len(reports_received(ses)) == 3 * COUNT
    # Said once: the next run knows the miss from the log.
    later = run("2027-01-21 18:00")
    assert (later.returncode, later.stdout, later.stderr) == (0, "", "")
    history = run_script("--history", "2")
    assert "(cycle)  missed" in history.stdout


def test_a_cycle_sent_in_part_is_finished_by_the_next_run(run_script, ses):
    ses.verify(SENDER)
    first = run_script("--only", "ceo,cto", clock=at("2026-12-03 18:00"), env=SCHEDULED)
    assert first.returncode == 0
    second = run_script(clock=at("2026-12-03 19:00"), env=SCHEDULED)
    assert second.returncode == 0
    assert len(reports_received(ses)) == COUNT
    assert "nothing due: cycle 2026-12-01 is sent; the next falls due 2026-12-15" in \
        run_script(clock=at("2026-12-04 19:00"), env=SCHEDULED).stdout


def test_the_cycle_option_still_names_a_cycle_of_its_own(run_script, ses):
    ses.verify(SENDER)
    result = run_script("--only", "ceo", "--cycle", "2026-11-20", clock=at("2026-12-03 18:00"),
                        env=SCHEDULED)
    assert result.returncode == 0
    assert cycles_sent(run_script) == ["2026-11-20"]


# --- The failure notice ---------------------------------------------------------------------


def rejecting(proxy):
    proxy.plan("SendEmail", (400, "MessageRejected", "Email address is not verified."))


def test_a_rejected_report_sends_one_notice_per_cycle_and_reason(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    env = {"REPORT_ALERT_EMAIL": None, "AWS_MAX_ATTEMPTS": "1"}  # the default: the BCC
    rejecting(proxy)
    first = run_via_proxy("--quiet", "--cycle", "2026-12-01", env=env)
    assert first.returncode == 1
    [notice] = notices_received(ses)
    assert notice["destinations"]["ToAddresses"] == [BCC]
    assert notice["subject"] == f"Reports not sent: cycle 2026-12-01 (1 of {COUNT})"
    assert f"Not sent (1 of {COUNT}): ceo" in notice["body"]
    assert "Why: error: ceo not sent: SES said MessageRejected" in notice["body"]
    assert "Exit code: 1" in notice["body"]
    [record] = [r for r in run_via_proxy.audit_records() if r["status"] == "notice"]
    assert record["report"] == ser.NOTICE_REPORT and record["to"] == [BCC]
    assert record["error"]["code"] == "MessageRejected"
    rejecting(proxy)
    second = run_via_proxy("--quiet", "--cycle", "2026-12-01", env=env)
    assert second.returncode == 1
    assert len(notices_received(ses)) == 1  # the same cycle and reason: none again
    assert second.stdout == "" and "failure notice" not in second.stderr


def test_bad_data_sends_a_notice_to_the_alert_address(run_script, ses):
    ses.verify(SENDER)
    (run_script.data / "items.csv").write_text("as_of,id,status\n2026-11-30,waf,finished\n")
    result = run_script("--quiet", "--cycle", "2026-12-01",
                        env={"REPORT_ALERT_EMAIL": "alarm@example.net"})
    assert result.returncode == 65
    [notice] = notices_received(ses)
    assert notice["destinations"]["ToAddresses"] == ["alarm@example.net"]
    assert f"Not sent ({COUNT} of {COUNT})" in notice["body"]
    assert "items.csv:2: status" in notice["body"]
    assert not reports_received(ses)


def test_a_notice_that_cannot_be_sent_changes_nothing(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.plan("SendEmail", then=(400, "MessageRejected", "rejected, every one"))
    result = run_via_proxy("--only", "ceo", "--cycle", "2026-12-01",
                           env={"REPORT_ALERT_EMAIL": None, "AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == 1  # the report's failure, not the notice's
    assert f"warning: the failure notice to {BCC} could not be sent" in result.stderr
    assert "Traceback" not in result.stderr
    statuses = [r["status"] for r in run_via_proxy.audit_records()]
    assert statuses == ["failed"]  # no notice recorded: the next run tries again


def test_a_run_locked_out_by_another_sends_no_notice(run_via_proxy, proxy, ses):
    """The run that holds the lock is sending: it, not the one it kept out, tells."""
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.2
    first = run_via_proxy.start("--cycle", "2026-12-01", "--only", "ceo,cto,cmo")
    wait_for(lambda: run_via_proxy.audit_records())
    second = run_via_proxy("--cycle", "2026-12-01", env={"REPORT_ALERT_EMAIL": None})
    assert second.returncode == 75
    proxy.clear()  # the second run was kept out: the first may finish at full speed
    assert first.wait(timeout=60) == 0
    assert not notices_received(ses)


# --- The heartbeat --------------------------------------------------------------------------


class Monitor:
    """A dead-man's switch on loopback: it records each ping's path."""

    def __init__(self, answer=200):
        self.paths = []
        monitor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                monitor.paths.append(self.path)
                self.send_response(answer)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/ping/{SECRET}"

    def __enter__(self):
        serve_in_background(self.server)
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()


SECRET = "0f8c2b4e-5d1a-4c7e-9b3f-2a6d8e1c4b7a"


def test_the_heartbeat_pings_start_success_and_failure(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    with Monitor() as monitor:
        env = {"REPORT_HEARTBEAT_URL": monitor.url, "AWS_MAX_ATTEMPTS": "1"}
        ok = run_via_proxy("--only", "ceo", "--cycle", "2026-12-01", env=env)
        rejecting(proxy)
        failed = run_via_proxy("--only", "cto", "--cycle", "2026-12-01", env=env)
        bad_data = run_via_proxy("--cycle", "2026-12-01", "--data", "no-such-folder", env=env)
    assert (ok.returncode, failed.returncode, bad_data.returncode) == (0, 1, 65)
    assert monitor.paths == [f"/ping/{SECRET}/start", f"/ping/{SECRET}",
                             f"/ping/{SECRET}/start", f"/ping/{SECRET}/1",
                             f"/ping/{SECRET}/start", f"/ping/{SECRET}/65"]


def test_nothing_due_is_a_success_ping(run_script, ses):
    ses.verify(SENDER)
    with Monitor() as monitor:
        env = {**SCHEDULED, "REPORT_HEARTBEAT_URL": monitor.url}
        run_script("--quiet", clock=at("2026-12-03 18:00"), env=env)
        result = run_script("--quiet", clock=at("2026-12-04 18:00"), env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert monitor.paths[-2:] == [f"/ping/{SECRET}/start", f"/ping/{SECRET}"]


def test_the_heartbeats_secret_is_never_shown(run_via_proxy, proxy, ses):
    """A monitor that answers 404 is warned of, without the URL; the audit log and the
    summary never hold it."""
    ses.verify(SENDER)
    rejecting(proxy)
    with Monitor(answer=404) as monitor:
        result = run_via_proxy("--verbose", "--cycle", "2026-12-01", env={
            "REPORT_HEARTBEAT_URL": monitor.url, "AWS_MAX_ATTEMPTS": "1",
            "REPORT_ALERT_EMAIL": None})
    assert result.returncode == 1
    assert "warning: the heartbeat (REPORT_HEARTBEAT_URL) could not be reached: HTTP 404" in \
        result.stderr
    log = run_via_proxy.audit_log.read_text()
    for said in (result.stdout, result.stderr, log, json.dumps(ses.messages())):
        assert SECRET not in said and "/ping/" not in said


def test_a_heartbeat_that_never_answers_costs_the_run_at_most_its_timeout(run_script, ses):
    ses.verify(SENDER)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are taken and never answered
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/ping/{SECRET}"
    try:
        started = time.monotonic()
        result = run_script("--only", "ceo", "--cycle", "2026-12-01",
                            env={"REPORT_HEARTBEAT_URL": url})
        took = time.monotonic() - started
    finally:
        silent.close()
    assert result.returncode == 0
    assert len(reports_received(ses)) == 1
    assert "did not answer in 5 s; no more pings this run" in result.stderr
    # One timeout, then no more pings: the start's 5 s, not the end's too.
    assert took < ser.HEARTBEAT_TIMEOUT_SECONDS + 4


# --- --status ---------------------------------------------------------------------------------


def status(run_script, moment, env=SCHEDULED):
    return run_script("--status", clock=at(moment), env=env)


def test_status_on_time_overdue_and_never_sent(run_script, ses):
    ses.verify(SENDER)
    never = status(run_script, "2026-12-02 07:59")  # the 1st fell due 23:59 hours ago
    assert never.returncode == 0, never.stderr
    assert "last sent: nothing yet" in never.stdout
    assert f"due: cycle 2026-12-01, variant a: 0 of {COUNT} reports sent, 23 hour(s) after it " \
           "fell due" in never.stdout
    overdue = status(run_script, "2026-12-02 08:00")
    assert overdue.returncode == 1
    assert (f"overdue: cycle 2026-12-01 fell due 24 hours ago and {COUNT} of {COUNT} reports "
            "are not sent (REPORT_OVERDUE_HOURS is 24)") in overdue.stderr
    assert run_script(clock=at("2026-12-02 09:00"), env=SCHEDULED).returncode == 0
    on_time = status(run_script, "2026-12-10 09:00")
    assert on_time.returncode == 0
    assert f"last sent: cycle 2026-12-01, variant a: {len(ser.REPORTS)} report(s), the last at " \
        "2026-12-02 01:00 PST" in on_time.stdout
    assert "next due 2026-12-15" in on_time.stdout
    assert status(run_script, "2026-12-16 09:00").returncode == 1  # the 15th, a day later


def test_status_counts_real_hours_across_a_daylight_saving_change(run_script):
    env = {"REPORT_SCHEDULE": "14", "REPORT_TIMEZONE": LA}
    # The 14th fell due at 00:00 PST (08:00 UTC); the clocks went forward at 02:00.
    assert status(run_script, "2027-03-15 07:59", env).returncode == 0  # 23 h 59 min
    assert status(run_script, "2027-03-15 08:00", env).returncode == 1


def test_status_without_a_schedule_is_never_overdue(run_script):
    result = status(run_script, "2026-12-20 09:00", env={})
    assert result.returncode == 0
    assert "no cycle falls due by itself" in result.stdout


def test_status_overdue_hours_are_a_setting(run_script):
    env = {**SCHEDULED, "REPORT_OVERDUE_HOURS": "48"}
    assert status(run_script, "2026-12-02 09:00", env).returncode == 0
    assert status(run_script, "2026-12-03 08:00", env).returncode == 1


# --- From the hostile review of the alarms -------------------------------------------------


def test_an_unusable_audit_log_does_not_hide_the_runs_own_failure(run_script, ses):
    ses.verify(SENDER)
    run_script.audit_log.mkdir()  # the log's path is a folder
    (run_script.data / "items.csv").write_text("as_of,id,status\n2026-11-30,waf,finished\n")
    with Monitor() as monitor:
        result = run_script("--cycle", "2026-12-01", env={
            "REPORT_ALERT_EMAIL": None, "REPORT_HEARTBEAT_URL": monitor.url})
    assert result.returncode == 65  # the data's failure, not the log's
    assert "items.csv:2: status" in result.stderr and "Traceback" not in result.stderr
    assert len(notices_received(ses)) == 1  # nowhere to record it, so it goes all the same
    assert monitor.paths[-1] == f"/ping/{SECRET}/65"


def test_a_lock_file_that_is_not_ours_still_allows_one_notice_per_cycle(run_script, ses):
    ses.verify(SENDER)
    run_script.audit_log.with_name(run_script.audit_log.name + ".lock").write_text("not a pid")
    for _ in range(3):
        result = run_script("--quiet", clock=at("2026-12-03 18:00"),
                            env={**SCHEDULED, "REPORT_ALERT_EMAIL": None})
        assert result.returncode == 73
    assert len(notices_received(ses)) == 1


@pytest.mark.parametrize("url, said", [
    ("https://monitor:Pa55w0rdPa55w0rd@hc.example.com/ping/abc", "carries a user name"),
    ("https://monitor:Pa55w0rdPa55w0rd@hc.example.com:443/ping/abc", "carries a user name"),
])
def test_a_heartbeat_url_with_a_password_is_refused_without_showing_it(run_script, url, said):
    result = run_script("--dry-run", env={"REPORT_HEARTBEAT_URL": url})
    assert result.returncode == 78 and said in result.stderr
    assert "Pa55w0rd" not in result.stderr + result.stdout


class RawServer:
    """A loopback server that answers every request with these bytes, then closes."""

    def __init__(self, answer):
        self.answer = answer
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/ping/{SECRET}/"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(self.answer)


@pytest.mark.parametrize("answer, said", [
    (b"HELLO THERE\r\n\r\n", "BadStatusLine"),
    (b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2/elsewhere\r\nContent-Length: 0"
     b"\r\n\r\n", "HTTP 302 (a redirect, not followed"),
])
def test_a_strange_heartbeat_answer_is_one_warning_not_a_traceback(run_script, ses, capfd,
                                                                   answer, said):
    ses.verify(SENDER)
    server = RawServer(answer)
    try:
        result = run_script("--only", "ceo", "--cycle", "2026-12-01",
                            env={"REPORT_HEARTBEAT_URL": server.url})
    finally:
        server.socket.close()
    assert result.returncode == 0
    assert f"warning: the heartbeat (REPORT_HEARTBEAT_URL) could not be reached: " in \
        result.stderr and said in result.stderr
    thread_output = capfd.readouterr()  # what a dying thread would print past the Console
    assert "Traceback" not in thread_output.err + result.stderr
    assert SECRET not in thread_output.err + result.stderr


def test_a_ping_keeps_the_monitors_trailing_slash_and_query_in_place(run_script, ses):
    ses.verify(SENDER)
    with Monitor() as monitor:
        run_script("--only", "ceo", "--cycle", "2026-12-01",
                   env={"REPORT_HEARTBEAT_URL": monitor.url + "/?rid=7"})
    assert monitor.paths == [f"/ping/{SECRET}/start?rid=7", f"/ping/{SECRET}/?rid=7"]


def test_a_run_locked_out_sends_no_failure_ping(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.2
    with Monitor() as monitor:
        first = run_via_proxy.start("--cycle", "2026-12-01", "--only", "ceo,cto,cmo")
        wait_for(lambda: run_via_proxy.audit_records())
        second = run_via_proxy("--cycle", "2026-12-01",
                               env={"REPORT_HEARTBEAT_URL": monitor.url})
        proxy.clear()  # the second run was kept out: the first may finish at full speed
        assert first.wait(timeout=60) == 0
    assert second.returncode == 75
    assert monitor.paths == [f"/ping/{SECRET}/start"]


def test_a_stray_old_cycle_in_the_log_makes_no_flood_of_misses(run_script, ses):
    ses.verify(SENDER)
    assert run_script("--only", "ceo", "--cycle", "1976-12-01").returncode == 0
    result = run_script("--quiet", clock=at("2026-12-03 18:00"), env=SCHEDULED)
    assert result.returncode == 0
    assert not [r for r in run_script.audit_records() if r["status"] == "missed"]


def test_a_cycle_sent_in_part_is_recorded_missed_for_what_it_lacks(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    rejecting(proxy)  # ceo is rejected on the 1st; the other seven go
    env = {**SCHEDULED, "AWS_MAX_ATTEMPTS": "1"}
    assert run_via_proxy(clock=at("2026-12-03 18:00"), env=env).returncode == 1
    later = run_via_proxy("--quiet", clock=at("2026-12-16 18:00"), env=env)
    assert later.returncode == 0
    [missed] = [r for r in run_via_proxy.audit_records() if r["status"] == "missed"]
    assert missed["cycle"] == "2026-12-01" and missed["error"]["message"].endswith(": ceo")
    assert "missed cycle(s) 2026-12-01" in later.stderr


def test_status_follows_the_scheduled_jobs_variant_and_reports(run_script, ses):
    ses.verify(SENDER)
    env = {**SCHEDULED, "AWS_RECIPIENT_EMAIL_B": "brief@example.com"}
    assert run_script("--variant", "b", "--only", "ceo,cfo", clock=at("2026-12-03 18:00"),
                      env=env).returncode == 0
    ok = run_script("--status", "--variant", "b", "--only", "ceo,cfo",
                    clock=at("2026-12-10 18:00"), env=env)
    assert ok.returncode == 0 and "variant b: 2 of 2 reports sent" in ok.stdout
    assert run_script("--status", clock=at("2026-12-10 18:00"), env=env).returncode == 1


def test_status_survives_a_timestamp_out_of_range(run_script):
    run_script.audit_log.write_text(json.dumps({
        "cycle": "2026-12-01", "report": "ceo", "status": "sent", "variant": "a",
        "ts": "9999-12-31T23:00:00+00:00"}) + "\n")
    result = status(run_script, "2026-12-03 18:00",
                    env={"REPORT_SCHEDULE": "1", "REPORT_TIMEZONE": "Pacific/Kiritimati"})
    assert "Traceback" not in result.stderr and result.returncode in (0, 1)
    assert "last sent: cycle 2026-12-01" in result.stdout


def test_a_skipped_midnight_in_the_machines_zone_is_the_first_moment_of_the_day(
        run_script, monkeypatch):
    """Santiago skips from 00:00 to 01:00 on 2026-09-06: the day starts at 01:00 -03."""
    monkeypatch.setenv("TZ", "America/Santiago")
    time.tzset()
    try:
        env = {"REPORT_SCHEDULE": "6", "REPORT_TIMEZONE": None}
        # 2026-09-06 04:00 UTC is 01:00 there; 23 h 30 min later it is not overdue.
        assert status(run_script, "2026-09-07 03:30", env).returncode == 0
        assert status(run_script, "2026-09-07 04:00", env).returncode == 1
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# --- A fault in the script itself (issue 26, item 1) ---------------------------------------


def test_a_fault_in_the_script_still_sends_the_notice_and_the_failure_ping(run_script, ses):
    """An error the script does not know (here, from the SES client factory the run is
    given: the first client it makes) ends in exit 70 and a traceback, after the
    failure notice and the heartbeat's /70, like any other failure."""
    ses.verify(SENDER)
    made = []

    def faulty_factory(config, **options):
        made.append(config)
        if len(made) == 1:
            raise RuntimeError("a fault nobody planned for")
        return ser.connect_ses(config, **options)

    with Monitor() as monitor:
        result = run_script("--cycle", "2026-12-01", ses_factory=faulty_factory,
                            env={"REPORT_HEARTBEAT_URL": monitor.url,
                                 "REPORT_ALERT_EMAIL": None})
    assert result.returncode == 70
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: a fault in send_exec_reports: RuntimeError in ")
    assert "Traceback (most recent call last):" in result.stderr
    assert monitor.paths == [f"/ping/{SECRET}/start", f"/ping/{SECRET}/70"]
    [notice] = notices_received(ses)
    assert "Exit code: 70" in notice["body"] and "RuntimeError" in notice["body"]
    assert "a fault nobody planned for" not in notice["body"]  # a message may hold anything
    assert not reports_received(ses)


# --- False misses (issue 26, item 5) ------------------------------------------------------


def missed_days(run_script):
    return [r["cycle"] for r in run_script.audit_records() if r["status"] == "missed"]


def test_cycles_sent_by_hand_before_a_schedule_are_never_missed(run_script, ses):
    """As the README says: send by hand first, then set REPORT_SCHEDULE."""
    ses.verify(SENDER)
    assert run_script("--cycle", "2026-11-10", clock=at("2026-11-10 18:00")).returncode == 0
    result = run_script("--quiet", clock=at("2026-12-03 18:00"), env=SCHEDULED)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert missed_days(run_script) == [] and "2026-12-01" in cycles_sent(run_script)


def test_a_changed_schedule_is_one_line_and_no_list_of_misses(run_script, ses):
    ses.verify(SENDER)
    for moment in ("2026-10-01 18:00", "2026-10-15 18:00", "2026-11-01 18:00",
                   "2026-11-15 18:00"):
        assert run_script("--quiet", clock=at(moment), env=SCHEDULED).returncode == 0
    changed = {**SCHEDULED, "REPORT_SCHEDULE": "5,20"}
    result = run_script(clock=at("2026-12-06 18:00"), env=changed)
    assert result.returncode == 0, result.stderr
    assert missed_days(run_script) == [] and "2026-12-05" in cycles_sent(run_script)
    [line] = [x for x in result.stderr.splitlines() if "REPORT_SCHEDULE" in x]
    assert "REPORT_SCHEDULE is now 5,20 (cycle 2026-11-15 went under 1,15)" in line
    assert "missed cycle" not in result.stderr
    # From the new schedule's first cycle on, a due date that passes unsent is a miss.
    later = run_script("--quiet", clock=at("2027-01-06 18:00"), env=changed)
    assert later.returncode == 0, later.stderr
    assert missed_days(run_script) == ["2026-12-20"]
    assert "REPORT_SCHEDULE is now" not in later.stderr


def test_a_schedule_changed_back_misses_nothing_of_the_one_between(run_script, ses):
    ses.verify(SENDER)
    other = {**SCHEDULED, "REPORT_SCHEDULE": "5,20"}
    for moment, env in (("2026-10-01 18:00", SCHEDULED), ("2026-10-15 18:00", SCHEDULED),
                        ("2026-10-20 18:00", other), ("2026-11-05 18:00", other),
                        ("2026-11-20 18:00", other), ("2026-12-01 18:00", SCHEDULED)):
        assert run_script("--quiet", clock=at(moment), env=env).returncode == 0
    assert missed_days(run_script) == []  # 11-01 and 11-15 fell due under 5,20


def test_a_schedule_field_that_is_no_text_forgets_no_send(run_script, ses):
    ses.verify(SENDER)
    assert run_script("--quiet", clock=at("2026-12-01 18:00"), env=SCHEDULED).returncode == 0
    lines = run_script.audit_log.read_text().splitlines()
    edited = [json.dumps({**json.loads(line), "schedule": None}) for line in lines]
    run_script.audit_log.write_text("\n".join(edited) + "\n")
    again = run_script("--quiet", clock=at("2026-12-02 18:00"), env=SCHEDULED)
    assert again.returncode == 0, again.stderr
    assert len(reports_received(ses)) == len(ser.REPORTS)  # nothing sent twice
