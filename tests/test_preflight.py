"""The preflight asks SES v2 what would stop or silently drop a report, before any send.

The tests' proxy answers GetAccount and GetSuppressedDestination as SES documents
them (moto's server lacks both); GetEmailIdentity is moto's own answer.
"""

import functools
import os
import signal
import threading
import time

import pytest

import send_exec_reports as ser
from conftest import BCC, RECIPIENT, SENDER, shared_models
from fault_proxy import PREFLIGHT_V2_ACTIONS

CYCLE = "2026-11-29"
# Two reports show what each report gets; sending all eight would only be slower.
SEND = ("--cycle", CYCLE, "--only", "ceo,cfo")
SENT = 2


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def warning_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def codes(records):
    return {(r["status"], (r["error"] or {}).get("code")) for r in records}


# --- The account ---------------------------------------------------------------


def test_a_production_account_is_asked_once_through_v2(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    result = run_via_proxy("--check")
    assert result.returncode == 0, result.stderr
    assert "account: production access in us-east-1; sending enabled; enforcement " \
           "status HEALTHY" in result.stdout
    assert "quota: 0 of 50000 messages used" in result.stdout
    assert result.stderr == ""
    assert proxy.count("GetAccount") == 1
    assert proxy.count("GetSendQuota") == proxy.count("GetIdentityVerificationAttributes") == 0
    assert sorted(p["subject"] for p in proxy.sent("GetSuppressedDestination")) == \
        sorted([RECIPIENT, BCC])  # each distinct address once
    assert sorted(p["subject"] for p in proxy.sent("GetEmailIdentity")) == \
        sorted([SENDER, "example.com"])


def test_the_preflight_asks_its_questions_at_once(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.latency = 0.1  # every answer is slow, so that overlapping questions overlap
    assert run_via_proxy("--check").returncode == 0
    asked = sum(proxy.count(action) for action in PREFLIGHT_V2_ACTIONS)
    assert asked == 5  # the account, two identities, two recipients
    assert proxy.most_in_flight == asked


def test_a_production_account_with_a_sandbox_sized_quota_is_not_the_sandbox(
        run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.account_quota(max_24_hour_send=200, max_send_rate=1000)
    result = run_via_proxy(*SEND)
    assert result.returncode == 0, result.stderr
    assert "sandbox" not in result.stderr
    assert len(ses.messages()) == SENT


def test_the_sandbox_is_what_v2_says_whatever_the_quota(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.account_status(production=False)  # with the default quota of 50,000 a day
    result = run_via_proxy("--check")
    assert result.returncode == 1
    assert "account: in the SES sandbox" in result.stdout
    assert "recipients must be verified too" in result.stderr


@pytest.mark.parametrize("status, code, said", [
    ({"sending": False}, "SendingDisabled", "sending disabled for this SES account in "
                                            "us-east-1 (SendingEnabled false)"),
    ({"enforcement": "SHUTDOWN"}, "AccountShutdown", "sending SHUT DOWN for this SES account "
                                                     "in us-east-1 (EnforcementStatus SHUTDOWN)"),
])
def test_an_account_aws_has_stopped_sends_nothing_and_exits_1(run_via_proxy, proxy, ses,
                                                              status, code, said):
    ses.verify(SENDER)
    proxy.account_status(**status)
    result = run_via_proxy(*SEND)
    assert result.returncode == 1
    assert ses.messages() == [] and proxy.count("SendEmail") == 0
    [line] = error_lines(result)
    assert said in line and ser.FAILURE_POLICY[code].advice in line
    assert codes(run_via_proxy.audit_records()) == {("skipped", code)}
    check = run_via_proxy("--check")
    assert check.returncode == 1
    assert said in check.stderr


def test_probation_warns_on_every_run_and_sends(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.account_status(enforcement="PROBATION")
    for args in (["--check"], SEND, ["--cycle", "next", "--only", "ceo,cfo", "--quiet"]):
        result = run_via_proxy(*args)
        assert result.returncode == 0, result.stderr
        # Said once, --quiet too: cron must mail it.
        assert result.stderr.count("on probation (EnforcementStatus PROBATION)") == 1
    assert len(ses.messages()) == 2 * SENT


# --- The suppression list --------------------------------------------------------


@pytest.mark.parametrize("address, field", [(RECIPIENT, "to"), (BCC, "bcc")])
def test_a_suppressed_recipient_is_named_audited_and_exits_1(run_via_proxy, proxy, ses,
                                                             address, field):
    ses.verify(SENDER)
    proxy.suppress(address, reason="BOUNCE", when=1764400000.0)  # 2025-11-29
    result = run_via_proxy(*SEND)
    assert result.returncode == 1
    # Sent all the same: SES drops only that address, and the other one reads it.
    assert len(ses.messages()) == SENT
    records = run_via_proxy.audit_records()
    assert {r["status"] for r in records} == {"sent"}
    assert all(r["suppressed"] == [address] and address in r[field] for r in records)
    [line] = error_lines(result)  # one line per address, not per report
    assert f"error: {address} is on the account's suppression list (BOUNCE since " \
           f"2025-11-29)" in line
    assert f"aws sesv2 delete-suppressed-destination --email-address {address}" in line
    assert result.stdout.count(f"suppressed, not delivered: {address}") == SENT
    check = run_via_proxy("--check", "--cycle", "next")
    assert check.returncode == 1
    assert f"{address} is on the account's suppression list" in check.stderr
    history = run_via_proxy("--history")
    assert f"suppressed, not delivered: {address}" in history.stdout


def test_a_report_whose_every_recipient_is_suppressed_is_not_sent(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.suppress(RECIPIENT)
    proxy.suppress(BCC, reason="COMPLAINT")
    result = run_via_proxy(*SEND)
    assert result.returncode == 1
    assert ses.messages() == []
    records = run_via_proxy.audit_records()
    assert codes(records) == {("skipped", "RecipientSuppressed")}
    assert all(r["suppressed"] == [RECIPIENT, BCC] for r in records)
    assert len(error_lines(result)) == 2
    assert "(COMPLAINT since" in result.stderr


def test_a_suppression_list_that_cannot_be_read_is_a_warning(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.plan("GetSuppressedDestination", then="denied")
    result = run_via_proxy(*SEND)
    assert result.returncode == 0, result.stderr
    [warning] = warning_lines(result)
    assert "AccessDeniedException" in warning
    assert (f"the suppression list was not checked for 2 address(es): {RECIPIENT}, {BCC}"
            in warning)
    assert len(ses.messages()) == SENT


# --- The sender's identity --------------------------------------------------------


def test_dkim_not_yet_signing_is_a_warning_with_the_fix(run_via_proxy, proxy, ses):
    ses.verify("example.com")
    proxy.identity_status("example.com", dkim="PENDING")
    result = run_via_proxy(*SEND)
    assert result.returncode == 0, result.stderr
    [warning] = warning_lines(result)
    assert "DKIM for example.com is PENDING" in warning
    assert "Identities > example.com > Authentication" in warning
    assert len(ses.messages()) == SENT
    assert run_via_proxy("--check", "--cycle", "next").returncode == 0


def test_a_signing_domain_and_an_address_only_sender_are_noted(run_via_proxy, proxy, ses):
    ses.verify("example.com")
    check = run_via_proxy("--check")
    assert "dkim: example.com signs the reports (DKIM SUCCESS)" in check.stdout
    assert check.stderr == ""
    ses.reset()
    ses.verify(SENDER)
    check = run_via_proxy("--check")
    assert "dkim: example.com is not an SES identity" in check.stdout
    assert check.returncode == 0 and check.stderr == ""


def test_a_custom_mail_from_not_yet_working_is_a_warning(run_via_proxy, proxy, ses):
    ses.verify("example.com")
    proxy.identity_status("example.com", mail_from=("bounce.example.com", "PENDING"))
    result = run_via_proxy("--check")
    assert result.returncode == 0
    [warning] = warning_lines(result)
    assert "custom MAIL FROM domain bounce.example.com of example.com is PENDING" in warning


def test_an_unverified_sender_is_an_error_as_before(run_via_proxy, proxy, ses):
    result = run_via_proxy("--check")
    assert result.returncode == 1
    assert "is a verified SES identity" in result.stderr
    proxy.identity_status(SENDER, verified=False)
    ses.verify(SENDER)
    assert run_via_proxy("--check").returncode == 1  # VerificationStatus PENDING


# --- When v2 does not answer -------------------------------------------------------


@pytest.mark.parametrize("fault", ["denied"])  # the other faults: test_recover.py
def test_v2_silent_falls_back_to_v1_with_one_warning(run_via_proxy, proxy, ses, fault):
    ses.verify(SENDER)
    for action in PREFLIGHT_V2_ACTIONS:
        proxy.plan(action, then=fault)
    proxy.account_status(sending=False)  # v2 would refuse; v1 cannot see it
    proxy.account_quota(max_24_hour_send=200, max_send_rate=1000)
    factory = functools.partial(shared_models, preflight_read_timeout=0.3)
    check = run_via_proxy("--check", ses_factory=factory)
    # v1 guesses the sandbox from the quota, as before: the recipients are not verified.
    assert check.returncode == 1
    assert "looks like it is in the sandbox" in check.stdout
    assert proxy.count("GetSendQuota") == 1
    ses.verify("example.com")  # now v1 sees the recipients' domain verified
    result = run_via_proxy(*SEND, ses_factory=factory)
    assert result.returncode == 0, result.stderr
    [warning] = warning_lines(result)
    assert "SES API v2 did not answer" in warning and "the v1 API stood in" in warning
    assert len(ses.messages()) == SENT


@pytest.mark.parametrize("setup, exit_code", [
    ({}, 0),
    ({"account": {"production": False}}, 1),
    ({"account": {"sending": False}}, 1),
    ({"account": {"enforcement": "SHUTDOWN"}}, 1),
    ({"account": {"enforcement": "PROBATION"}}, 0),
    ({"suppress": RECIPIENT}, 1),
    ({"suppress": BCC}, 1),
    ({"dkim": "PENDING"}, 0),
    ({"plan": "denied"}, 0),
    ({"plan": "unimplemented"}, 0),
], ids=["healthy", "sandbox", "disabled", "shutdown", "probation", "suppressed-to",
        "suppressed-bcc", "dkim-pending", "v2-denied", "v2-404"])
def test_check_exit_codes(run_via_proxy, proxy, ses, setup, exit_code):
    ses.verify(SENDER)
    if "dkim" in setup:
        ses.verify("example.com")
        proxy.identity_status("example.com", dkim=setup["dkim"])
    proxy.account_status(**setup.get("account", {}))
    if "suppress" in setup:
        proxy.suppress(setup["suppress"])
    for action in PREFLIGHT_V2_ACTIONS if "plan" in setup else ():
        proxy.plan(action, then=setup["plan"])
    result = run_via_proxy("--check")
    assert result.returncode == exit_code, result.stderr
    assert proxy.count("SendEmail") == 0


def test_the_v2_endpoint_has_a_setting_of_its_own(run_script, proxy, ses):
    ses.verify(SENDER)
    proxy.suppress(RECIPIENT)
    plain = run_script("--check")  # v2 at the local SES's healthy v2 endpoint
    assert plain.returncode == 0, plain.stderr
    routed = run_script("--check", env={"AWS_ENDPOINT_URL_SESV2": proxy.url})
    assert routed.returncode == 1
    assert proxy.count("GetAccount") == 1 and proxy.count("SendEmail") == 0
    # Without a v2 endpoint of its own, v2 goes where v1 goes, never to AWS.
    alone = run_script("--check", env={"AWS_ENDPOINT_URL_SES": proxy.url,
                                       "AWS_ENDPOINT_URL_SESV2": None})
    assert alone.returncode == 1
    assert proxy.count("GetAccount") == 2 and proxy.count("GetSendQuota") == 0


# --- Answers no SES would give -------------------------------------------------------


def v2_answer(status, body, code=None):
    """A fault the proxy answers as v2 does: (status, error code, message) or a raw body."""
    return (status, code, body) if code else {"status": status, "body": body}


@pytest.mark.parametrize("answer", [
    (404, "NotFoundException", "Account not found."),  # NotFound answers only the others
    {"SendQuota": {"Max24HourSend": 50000, "SentLast24Hours": 0}},  # no MaxSendRate
    {"SendQuota": {"Max24HourSend": float("nan"), "SentLast24Hours": 0, "MaxSendRate": 1}},
    {"SendQuota": {"Max24HourSend": "50000", "SentLast24Hours": 0, "MaxSendRate": 1}},
    {"SendQuota": None, "ProductionAccessEnabled": True},
], ids=["not-found", "no-rate", "nan", "text", "null"])
def test_an_account_answer_no_ses_would_give_falls_back_to_v1(run_via_proxy, proxy, ses,
                                                               answer):
    ses.verify(SENDER)
    proxy.plan("GetAccount", then=answer if isinstance(answer, tuple) else {"body": answer})
    result = run_via_proxy(*SEND)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    [warning] = warning_lines(result)
    assert "the v1 API stood in" in warning
    assert proxy.count("GetSendQuota") == 1 and len(ses.messages()) == SENT


def test_what_ses_says_is_redacted_and_kept_to_one_line(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    token = "FwoGZXIvYXdzEXAMPLE-session-token-0123456789"
    proxy.suppress(RECIPIENT, reason=f"BOUNCE {token}\nerror: all is well\x1b[2J")
    proxy.account_status(enforcement=f"SUSPENDED {token}")
    for args in (["--check"], ["--cycle", CYCLE, "--verbose"]):
        result = run_via_proxy(*args, env={"AWS_SESSION_TOKEN": token})
        assert result.returncode == 1
        out = result.stdout + result.stderr
        assert token not in out and "\x1b" not in out
        assert "error: all is well" not in out.splitlines()  # no line of its own
        assert f"{RECIPIENT} is on the account's suppression list (BOUNCE [redacted]?" in out
        assert "enforcement status SUSPENDED [redacted] for this SES account in us-east-1, " \
               "which this script does not know" in out


def test_a_refused_question_does_not_hide_the_answers_of_the_others(run_via_proxy, proxy,
                                                                       ses):
    ses.verify(SENDER)
    proxy.account_status(enforcement="SHUTDOWN")
    proxy.plan("GetSuppressedDestination", (403, "UnrecognizedClientException", "no"))
    result = run_via_proxy(*SEND)
    assert result.returncode == 1
    assert ses.messages() == []
    assert codes(run_via_proxy.audit_records()) == {("skipped", "AccountShutdown")}


def test_a_custom_mail_from_without_a_status_says_so(run_via_proxy, proxy, ses):
    ses.verify("example.com")
    proxy.identity_status("example.com", mail_from=("bounce.example.com", None))
    [warning] = warning_lines(run_via_proxy("--check"))
    assert "bounce.example.com of example.com is not reported" in warning


def test_the_preflight_gives_up_on_what_is_unasked_at_its_deadline():
    release = threading.Event()
    calls = []

    def slow():
        calls.append(1)
        release.wait(5)
        return {}

    questions = {("suppressed", f"p{n}@example.com"): (slow, {}) for n in range(30)}
    started = time.monotonic()
    answers = ser.ask_at_once(questions, deadline=0.1)
    release.set()
    assert time.monotonic() - started < 2
    time.sleep(0.1)  # the questions in flight end; nothing left queued is asked after
    assert len(calls) == ser.PREFLIGHT_CONCURRENCY
    assert len(answers) == 30
    unasked = [a for a in answers.values() if isinstance(a, ser.NotAsked)]
    assert len(unasked) >= 30 - ser.PREFLIGHT_CONCURRENCY
    failure = ser.v2_silence(("suppressed", "p0@example.com"), unasked[0])
    assert failure.code == "NotAsked"


def test_a_stop_during_a_long_preflight_exits_at_once(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    many = ",".join(f"person{n}@example.com" for n in range(48))
    run_via_proxy.settings(AWS_RECIPIENT_EMAIL=many)
    proxy.latency = 0.5  # 50 suppression lookups, ten at a time: seconds of preflight
    victim = run_via_proxy.start("--cycle", CYCLE)
    deadline = time.monotonic() + 30
    while proxy.count("GetSuppressedDestination") < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    stdout, stderr = victim.communicate(timeout=30)
    assert victim.returncode == 130
    assert time.monotonic() - stopped < 1.5  # not after every queued question
    assert "Traceback" not in stderr
    assert proxy.count("GetSuppressedDestination") < 30
    assert ses.messages() == []


# --- --check says go only where a send would go (issue 21, item 17) -----------


def test_check_is_not_go_where_suppressions_went_unanswered(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.plan("GetSuppressedDestination", then="drop")  # no answer at all
    result = run_via_proxy("--check")
    assert result.returncode == 75, result.stderr
    [warning] = warning_lines(result)
    assert "the suppression list was not checked for 2 address(es)" in warning
    assert "iam.md" not in warning and "gave no answer within" in warning
    assert "did not answer every question in time" in result.stderr
    assert proxy.count("SendEmail") == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: a read-only folder is "
                                                "still writable")
def test_check_is_not_go_where_the_audit_log_cannot_be_written(run_via_proxy, ses, tmp_path):
    ses.verify(SENDER)
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    log = folder / "audit.jsonl"
    try:
        result = run_via_proxy("--check", "--audit-log", str(log))
        send = run_via_proxy("--audit-log", str(log))
    finally:
        folder.chmod(0o700)
    assert result.returncode == 73
    assert f"cannot create audit log {log}: its folder" in result.stderr
    assert "the audit log could not be written" in result.stderr
    assert send.returncode == 73  # as --check said


def test_check_and_a_send_agree_on_a_log_folder_that_is_not_there(run_via_proxy, ses,
                                                                  tmp_path):
    ses.verify(SENDER)
    missing = tmp_path / "no-such-folder" / "audit.jsonl"
    for args in (("--check",), ()):
        result = run_via_proxy(*args, "--audit-log", str(missing))
        assert result.returncode == 73 and "no-such-folder does not exist" in result.stderr


def test_checks_verdict_names_the_quota_not_the_network(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.account_quota(50000, 50000)  # today's quota used up
    result = run_via_proxy("--check")
    assert result.returncode == 75
    assert "QuotaInsufficient" in result.stderr or "quota has 0 messages left" in result.stderr
    assert "could not be reached" not in result.stderr


@pytest.mark.parametrize("fault", ["throttle", "503"])
def test_check_is_not_go_where_suppressions_were_throttled_or_failed(run_via_proxy, proxy,
                                                                    ses, fault):
    ses.verify(SENDER)
    proxy.plan("GetSuppressedDestination", then=fault)
    result = run_via_proxy("--check", env={"AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == 75, result.stderr
    assert "SES was busy or failing" in result.stderr
