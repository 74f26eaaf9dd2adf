"""Recovering: a cycle is never lost and never sent twice, whatever SES or the laptop does."""

import collections
import contextlib
import functools
import json
import re
import os
import signal
import subprocess
import time
from datetime import datetime

import pytest

import send_exec_reports as ser
from conftest import SENDER, FakeClock, shared_models
from fault_proxy import PREFLIGHT_ACTIONS, PREFLIGHT_V2_ACTIONS

CYCLE = "2026-11-29"
ALL_IDS = [spec.report_id for spec in ser.REPORTS]
REPORT_COUNT = len(ser.REPORTS)
RECIPIENTS_PER_REPORT = 2  # one To and the BCC, as in GOOD_SETTINGS


def sends_per_report(ses):
    """How many times SES accepted each report, by report title."""
    counts = collections.Counter(m["subject"].split(" | ")[0] for m in ses.messages())
    return {spec.report_id: counts[spec.title] for spec in ser.REPORTS}


def statuses(records):
    return [(r["report"], r["status"]) for r in records]


def wait_for(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


# --- Transient failures are retried by botocore, bounded ---------------------


@pytest.mark.parametrize("faults", [("throttle",), ("503",), ("drop",)], ids="-".join)
def test_passing_faults_are_retried_and_every_report_goes_once(run_via_proxy, proxy, ses,
                                                              faults):
    ses.verify(SENDER)
    proxy.plan("SendEmail", *faults)
    result = run_via_proxy("--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)
    assert proxy.count("SendEmail") == len(faults) + REPORT_COUNT  # the faults, then each once
    assert all(r["status"] == "sent" for r in run_via_proxy.audit_records())


def test_slow_answers_within_the_timeout_are_waited_for(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.3
    result = run_via_proxy("--only", "ceo")
    assert result.returncode == 0, result.stderr
    assert proxy.count("SendEmail") == 1
    assert len(ses.messages()) == 1


def test_a_failure_that_outlives_its_retries_exits_75_and_a_rerun_finishes(
        run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.plan("SendEmail", then="503")
    first = run_via_proxy("--cycle", CYCLE)
    assert first.returncode == 75
    assert proxy.count("SendEmail") == ser.DEFAULT_MAX_ATTEMPTS
    records = run_via_proxy.audit_records()
    assert records[0]["status"] == "failed"
    assert records[0]["error"]["code"] == "ServiceUnavailable"
    assert [r["status"] for r in records[1:]] == ["skipped"] * (REPORT_COUNT - 1)
    assert "run again later" in first.stderr.splitlines()[-1]
    proxy.clear()
    second = run_via_proxy("--cycle", CYCLE)
    assert second.returncode == 0, second.stderr
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)


@pytest.mark.parametrize("attempts", ["1", "2"])
def test_aws_max_attempts_wins_over_the_default(run_via_proxy, proxy, ses, attempts):
    ses.verify(SENDER)
    proxy.plan("SendEmail", then="503")
    result = run_via_proxy("--only", "ceo", env={"AWS_MAX_ATTEMPTS": attempts})
    assert result.returncode == 75
    assert proxy.count("SendEmail") == int(attempts)


def test_aws_retry_mode_and_max_attempts_from_the_env_file_are_used(run_via_proxy, proxy,
                                                                    ses):
    ses.verify(SENDER)
    run_via_proxy.settings(AWS_RETRY_MODE="legacy", AWS_MAX_ATTEMPTS="1")
    proxy.plan("SendEmail", then="throttle")
    result = run_via_proxy("--only", "ceo")
    assert result.returncode == 75
    assert proxy.count("SendEmail") == 1


@pytest.mark.parametrize("name, value", [("AWS_MAX_ATTEMPTS", "0"), ("AWS_MAX_ATTEMPTS", "many"),
                                         ("AWS_MAX_ATTEMPTS", "99"), ("AWS_RETRY_MODE", "eager")])
def test_bad_retry_settings_are_config_errors(run_script, ses, name, value):
    result = run_script(env={name: value})
    assert result.returncode == 78
    assert f"config error: {name}" in result.stderr
    assert ses.messages() == []


def test_garbage_from_the_endpoint_is_a_failure_not_a_traceback(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.plan("SendEmail", then="garbage")
    result = run_via_proxy()
    assert result.returncode == 75
    assert "Traceback" not in result.stderr
    [record, *rest] = run_via_proxy.audit_records()
    assert record["status"] == "failed" and record["error"]["code"] == "NotAnSesAnswer"
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "check AWS_ENDPOINT_URL_SES" in line
    assert {r["status"] for r in rest} == {"skipped"}


# --- Quota exhausted: stop at once, tomorrow's run sends the rest ------------


def test_an_exhausted_daily_quota_stops_the_run_without_retrying(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.plan("SendEmail", "pass", "pass", "pass", then="quota")
    first = run_via_proxy("--cycle", CYCLE)
    assert first.returncode == 75
    assert proxy.count("SendEmail") == 4  # the quota error was not retried
    assert statuses(run_via_proxy.audit_records()) == [
        *((report, "sent") for report in ALL_IDS[:3]), (ALL_IDS[3], "failed"),
        *((report, "skipped") for report in ALL_IDS[4:])]
    assert "Daily message quota exceeded" in first.stderr
    assert "24-hour sending quota is used up" in first.stderr
    proxy.clear()  # the quota has reset
    second = run_via_proxy("--cycle", CYCLE)
    assert second.returncode == 0, second.stderr
    assert f"{REPORT_COUNT - 3} of {REPORT_COUNT} reports sent" in second.stdout
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)


# --- Permanent failures: audited with SES's code, one line, exit 1 -----------


def test_a_rejected_report_is_audited_and_the_others_still_go(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.plan("SendEmail", "pass", "reject")
    result = run_via_proxy("--cycle", CYCLE)
    assert result.returncode == 1
    records = run_via_proxy.audit_records()
    assert records[1]["report"] == "cto" and records[1]["status"] == "failed"
    assert records[1]["error"] == {"code": "MessageRejected", "message": "Illegal address"}
    assert sum(r["status"] == "sent" for r in records) == REPORT_COUNT - 1
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: cto not sent: SES said MessageRejected: Illegal address")
    proxy.clear()
    rerun = run_via_proxy("--cycle", CYCLE)
    assert rerun.returncode == 0 and f"1 of {REPORT_COUNT} reports sent" in rerun.stdout
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)


@pytest.mark.parametrize("fault, code, advice", [
    ("paused", "SendingPausedException", "reputation dashboard"),  # as v2 words it
    ("denied", "AccessDenied", "IAM policy in docs/iam.md"),
])
def test_an_account_wide_refusal_stops_the_run_instead_of_repeating_it(
        run_via_proxy, proxy, ses, fault, code, advice):
    ses.verify(SENDER)
    proxy.plan("SendEmail", then=fault)
    result = run_via_proxy()
    assert result.returncode == 1
    assert proxy.count("SendEmail") == 1
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert code in line and advice in line
    assert [r["status"] for r in run_via_proxy.audit_records()] == (
        ["failed"] + ["skipped"] * (REPORT_COUNT - 1))


# --- The ledger: re-runs send exactly what is missing ------------------------


def test_endpoint_down_then_up_then_done(run_script, ses):
    ses.verify(SENDER)
    down = run_script("--cycle", CYCLE, env={"AWS_ENDPOINT_URL_SES": "http://127.0.0.1:9"})
    assert down.returncode == 75
    up = run_script("--cycle", CYCLE)
    assert up.returncode == 0 and f"{REPORT_COUNT} of {REPORT_COUNT} reports sent" in up.stdout
    done = run_script("--cycle", CYCLE)
    assert done.returncode == 0 and f"0 of {REPORT_COUNT} reports sent" in done.stdout
    assert done.stdout.count("already sent") == REPORT_COUNT
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)


def test_each_cycle_is_its_own(run_script, ses):
    ses.verify(SENDER)
    run_script("--cycle", "2026-11-28", "--only", "ceo")
    result = run_script("--cycle", "2026-11-29", "--only", "ceo")
    assert "1 of 1 reports sent" in result.stdout
    assert len(ses.messages()) == 2


def test_force_sends_again_what_was_already_sent(run_script, ses):
    ses.verify(SENDER)
    run_script("--cycle", CYCLE)
    skipped = run_script("--cycle", CYCLE, "--only", "ceo")
    assert "0 of 1 reports sent" in skipped.stdout
    forced = run_script("--cycle", CYCLE, "--only", "ceo", "--force")
    assert forced.returncode == 0 and "1 of 1 reports sent" in forced.stdout
    assert sends_per_report(ses)["ceo"] == 2
    assert sum(sends_per_report(ses).values()) == REPORT_COUNT + 1


def test_a_torn_last_line_is_tolerated_and_never_rewritten(run_script, ses):
    ses.verify(SENDER)
    sent_ceo = {"ts": "2026-11-29T03:00:00.000+00:00", "run_id": "r1", "cycle": CYCLE,
                "report": "ceo", "status": "sent", "message_id": "m-ceo"}
    before = (json.dumps(sent_ceo) + "\n" + '{"ts": "2026-11-29T03:00:01', "utf-8")
    run_script.audit_log.write_bytes(before[0].encode())
    result = run_script("--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert "line 2 is not a complete record" in result.stderr
    assert run_script.audit_log.read_bytes().startswith(before[0].encode())
    assert f"{REPORT_COUNT - 1} of {REPORT_COUNT} reports sent" in result.stdout
    assert sends_per_report(ses)["ceo"] == 0
    again = run_script("--cycle", CYCLE)  # the torn line now sits mid-file, still ignored
    assert again.returncode == 0 and f"0 of {REPORT_COUNT} reports sent" in again.stdout


def test_a_run_killed_mid_cycle_loses_nothing(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.2
    runner = run_via_proxy
    victim = runner.start("--cycle", CYCLE)
    wait_for(lambda: sum(r["status"] == "sent" for r in runner.audit_records()) >= 2)
    victim.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs
    victim.wait()
    proxy.clear()
    rerun = runner("--cycle", CYCLE)
    assert rerun.returncode == 0, rerun.stderr
    counts = sends_per_report(ses)
    assert all(counts[report] >= 1 for report in ALL_IDS)
    assert sum(counts.values()) <= REPORT_COUNT + 1  # at most the one in flight went twice
    sent = {r["report"] for r in runner.audit_records() if r["status"] == "sent"}
    assert sent == set(ALL_IDS)


def test_overlapping_runs_send_once(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.2
    runner = run_via_proxy
    first = runner.start("--cycle", CYCLE, "--only", "ceo,cto,cmo")
    wait_for(lambda: runner.audit_records())
    second = runner("--cycle", CYCLE)
    assert first.poll() is None  # the second run did not wait for the first
    assert second.returncode == 75
    assert f"another run (pid {first.pid}) is sending" in second.stderr
    proxy.clear()  # the second run was kept out: the first may finish at full speed
    assert first.wait(timeout=60) == 0
    assert sends_per_report(ses) == {r: int(r in ("ceo", "cto", "cmo")) for r in ALL_IDS}
    assert len(runner.audit_records()) == 3  # the second run recorded nothing


# --- Preflight --------------------------------------------------------------


NEEDED = REPORT_COUNT * RECIPIENTS_PER_REPORT  # what a whole cycle counts against the quota


@pytest.mark.parametrize("max_24_hour_send, sent_last_24_hours, exit_code, code, said", [
    (50000, 50000 - 10, 75, "QuotaInsufficient", "quota has 10 messages left and"),
    (10, 0, 1, "QuotaTooSmall", "quota is 10 and"),
])
def test_a_quota_that_cannot_take_the_cycle_sends_nothing(
        run_via_proxy, proxy, ses, max_24_hour_send, sent_last_24_hours, exit_code, code, said):
    ses.verify(SENDER)
    proxy.account_quota(max_24_hour_send, sent_last_24_hours)
    result = run_via_proxy("--cycle", CYCLE)
    assert result.returncode == exit_code  # 75: it frees up by itself; 1: ask AWS for more
    assert ses.messages() == []
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert f"{said} this cycle needs {NEEDED}" in line
    assert ser.FAILURE_POLICY[code].advice in line
    assert {(r["status"], r["error"]["code"]) for r in run_via_proxy.audit_records()} == {
        ("skipped", code)}
    # Two reports fit: a smaller selection goes out.
    assert run_via_proxy("--cycle", CYCLE, "--only", "ceo,cto").returncode == 0


# Each v2 question denied, not implemented (404) and hanging, and all of them
# answering garbage; v1's questions, asked one after another where v2 is
# silent, meet the faults through one loop.
V2_ALL = "+".join(PREFLIGHT_V2_ACTIONS)


@pytest.mark.parametrize("actions, fault", [
    *((action, fault) for fault in ("denied", "unimplemented", "hang")
      for action in PREFLIGHT_V2_ACTIONS),
    (V2_ALL, "garbage"),
    *(("GetSendQuota", fault) for fault in ("denied", "hang", "garbage")),
    ("GetIdentityVerificationAttributes", "denied")])  # asked in the same loop as the quota
def test_a_preflight_that_cannot_ask_warns_and_goes_on(run_via_proxy, proxy, ses, fault,
                                                       actions):
    ses.verify(SENDER)
    if actions not in PREFLIGHT_V2_ACTIONS and actions != V2_ALL:  # v1: v2 must be silent
        proxy.plan("GetAccount", then="unimplemented")
        proxy.plan("GetEmailIdentity", then="unimplemented")
    for action in actions.split("+"):
        proxy.plan(action, then=fault)
    started = time.monotonic()
    patience = 0.3  # the preflight's own read timeout, shortened; see the next test
    result = run_via_proxy("--cycle", CYCLE, "--only", "ceo", ses_factory=functools.partial(
        shared_models, preflight_read_timeout=patience))
    assert time.monotonic() - started < patience + 5  # the proxy hangs for a minute
    assert result.returncode == 0, result.stderr
    assert "warning: preflight" in result.stderr
    assert len(ses.messages()) == 1  # the report went out all the same


def test_the_preflight_gives_up_after_one_short_attempt_by_default():
    settings = {"AWS_SES_REGION": "us-east-1", "AWS_SES_FROM_ADDRESS": SENDER,
                "AWS_SES_FROM_NAME": "Reports", "AWS_RECIPIENT_EMAIL": "owner@example.com",
                "AWS_BCC_EMAIL": "audit@example.com", "AWS_ACCESS_KEY_ID": "local-demo-key",
                "AWS_SECRET_ACCESS_KEY": "local-demo-secret"}
    clients = ser.connect_ses(ser.parse_config(settings, audit_log_path=None))
    with contextlib.closing(clients):
        preflight, send = clients.preflight.meta.config, clients.send.meta.config
        preflight_v2 = clients.preflight_v2.meta.config
        notice, sqs = clients.notice.meta.config, clients.sqs.meta.config
    assert preflight.read_timeout == preflight_v2.read_timeout == \
        ser.PREFLIGHT_READ_TIMEOUT_SECONDS == 3
    assert preflight.retries["total_max_attempts"] == 1
    assert preflight_v2.retries["total_max_attempts"] == 1
    assert send.read_timeout == ser.SES_READ_TIMEOUT_SECONDS
    assert send.retries == {"mode": "standard", "total_max_attempts": 4}
    # The failure notice and the events queue must not hold up a run that has failed,
    # or one that is about to send: one try each, and short waits.
    assert (notice.retries, notice.read_timeout) == (
        {"mode": "standard", "total_max_attempts": 1}, ser.NOTICE_READ_TIMEOUT_SECONDS)
    assert (sqs.retries, sqs.read_timeout) == (
        {"mode": "standard", "total_max_attempts": 1}, ser.EVENTS_READ_TIMEOUT_SECONDS)


def test_check_reports_what_ses_says_and_sends_nothing(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    result = run_via_proxy("--check", "--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert "credentials: found (access keys from the environment)" in result.stdout
    assert f"sender: {SENDER} is verified" in result.stdout
    assert "quota: 0 of 50000 messages used" in result.stdout
    assert f"cycle 2026-11-29, variant a: 0 already sent, {REPORT_COUNT} to send" \
        in result.stdout
    assert proxy.count("SendEmail") == 0
    assert not run_via_proxy.audit_log.exists()


def test_check_names_the_credential_source_without_the_keys(run_script, ses):
    ses.verify(SENDER)
    run_script.settings(AWS_ACCESS_KEY_ID="AKIAFROMTHEFILE00001",
                        AWS_SECRET_ACCESS_KEY="secret-from-the-file")
    result = run_script("--check", env={"AWS_ACCESS_KEY_ID": None,
                                        "AWS_SECRET_ACCESS_KEY": None})
    assert result.returncode == 0, result.stderr
    assert f"access keys from {run_script.env_file}" in result.stdout
    assert "FROMTHEFILE" not in result.stdout + result.stderr
    assert "secret-from-the-file" not in result.stdout + result.stderr


def test_check_fails_for_an_unverified_sender(run_script, ses):
    result = run_script("--check")
    assert result.returncode == 1
    assert "is a verified SES identity" in result.stderr


@pytest.mark.parametrize("max_24_hour_send, sent_last_24_hours, exit_code", [
    (50000, 50000 - 10, 75), (10, 0, 1)])
def test_check_sees_a_quota_that_cannot_take_the_cycle(run_via_proxy, proxy, ses,
                                                       max_24_hour_send, sent_last_24_hours,
                                                       exit_code):
    ses.verify(SENDER)
    proxy.account_quota(max_24_hour_send, sent_last_24_hours)
    result = run_via_proxy("--check")
    assert result.returncode == exit_code
    assert f"this cycle needs {NEEDED}" in result.stderr


def test_the_sandbox_warns_about_unverified_recipients(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.account_status(production=False)
    result = run_via_proxy("--check")
    assert result.returncode == 1  # SES would refuse every report in the sandbox
    assert "sandbox" in result.stdout
    assert ("recipients must be verified too; not verified: owner@example.com, "
            "audit@example.com") in result.stderr


def test_paced_sends_never_meet_a_rate_limit_and_unpaced_ones_do(run_via_proxy, proxy, ses):
    rate, burst = 40, 2 * RECIPIENTS_PER_REPORT  # two reports at once, then throttling
    ses.verify(SENDER)
    proxy.account_quota(max_send_rate=rate)
    proxy.limit_rate(rate, burst)  # the proxy throttles the way SES does, in real time
    result = run_via_proxy("--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert proxy.throttled == 0 and proxy.count("SendEmail") == REPORT_COUNT
    # The same limit on an account that claims a high rate, so the pacer does
    # not wait: the limit bites (one attempt, so that no backoff hides it).
    proxy.account_quota(max_send_rate=1000)
    proxy.limit_rate(rate, burst)
    again = run_via_proxy("--cycle", "unpaced", env={"AWS_MAX_ATTEMPTS": "1"})
    assert again.returncode == 75 and "TooManyRequestsException" in again.stderr  # v2's
    assert proxy.throttled > 0


def test_sends_are_paced_to_the_max_send_rate(run_via_proxy, proxy, ses):
    rate = 4  # recipients a second; each report has two (To and BCC)
    ses.verify(SENDER)
    proxy.account_quota(max_send_rate=rate)
    clock = FakeClock()
    result = run_via_proxy("--cycle", CYCLE, clock=clock)
    assert result.returncode == 0, result.stderr
    times = [datetime.fromisoformat(r["ts"]) for r in run_via_proxy.audit_records()]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    paced = rate * 0.95  # a margin under SES's rate: 95% of it (PACING_SHARE)
    # The records' times are to the millisecond.
    assert gaps == [pytest.approx(RECIPIENTS_PER_REPORT / paced, abs=1e-3)] * (REPORT_COUNT - 1)
    assert sum(clock.sleeps) == pytest.approx(
        (REPORT_COUNT - 1) * RECIPIENTS_PER_REPORT / paced)


# --- Hygiene ----------------------------------------------------------------


def test_a_readable_env_file_is_warned_about_once(run_script, ses):
    run_script.env_file.chmod(0o644)
    result = run_script("--dry-run")
    assert result.returncode == 0
    assert result.stderr.count("readable by group or others") == 1
    assert f"chmod 600 {run_script.env_file}" in result.stderr


def test_an_env_file_tracked_by_git_is_warned_about(run_script, ses):
    git = ["git", "-C", str(run_script.tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "repos.env"], check=True)
    ses.verify(SENDER)
    for args in (["--check"], ["--only", "ceo"]):  # the runs that use the credentials
        result = run_script(*args)
        assert result.stderr.count("tracked by git") == 1
        assert "git rm --cached repos.env" in result.stderr


def test_no_secret_leaks_whatever_goes_wrong(run_via_proxy, proxy, ses):
    secret = "wJalrXUtnFEMI-K7MDENG-secret"
    env = {"AWS_SECRET_ACCESS_KEY": secret}
    proxy.plan("GetSendQuota", then="denied")
    proxy.plan("SendEmail", "reject", "quota")
    outputs = [run_via_proxy(env=env), run_via_proxy("--check", env=env)]
    for result in outputs:
        assert secret not in result.stdout + result.stderr
    assert secret not in run_via_proxy.audit_log.read_text()
    lock = run_via_proxy.audit_log.with_name(run_via_proxy.audit_log.name + ".lock")
    assert secret not in lock.read_text()
    assert os.stat(lock).st_mode & 0o077 == 0


def test_a_secret_that_ses_echoes_back_is_redacted_everywhere(run_via_proxy, proxy, ses):
    key_id, secret = "AKIAECHOEDKEYID00042", "wJalrXUtnFEMI/K7MDENG+echoed-secret"
    env = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    echo = f"Credential {key_id} (secret {secret}) may not do this; again: {secret}"
    for action in PREFLIGHT_ACTIONS:
        proxy.plan(action, then=(403, "AccessDenied", echo))
    proxy.plan("SendEmail", (400, "MessageRejected", echo), then=(403, "AccessDenied", echo))
    outputs = [run_via_proxy("--verbose", env=env), run_via_proxy("--check", env=env)]
    assert [result.returncode for result in outputs] == [1, 0]
    audit_log = run_via_proxy.audit_log.read_text()
    lock = run_via_proxy.audit_log.with_name(run_via_proxy.audit_log.name + ".lock")
    for text in (*(r.stdout + r.stderr for r in outputs), audit_log, lock.read_text()):
        assert key_id not in text and secret not in text
    # SES's words did reach every place, with the secrets taken out.
    assert "Credential [redacted] (secret [redacted])" in outputs[0].stderr
    assert "Credential [redacted] (secret [redacted])" in outputs[1].stderr
    assert "Credential [redacted] (secret [redacted])" in audit_log


# --- One failure policy --------------------------------------------------------

# What each SES error code must do, written out here rather than read from the
# script's table, so that a changed entry there is a failing test: (exit code,
# whether the run stops at it).
EXPECTED_HANDLING = {
    "InternalFailure": (75, True), "RequestTimeout": (75, True),
    "ServiceUnavailable": (75, True), "Throttling": (75, True),
    "ThrottlingException": (75, True), "TooManyRequestsException": (75, True),
    "MessageRejected": (1, False),
    "AccessDenied": (1, True), "AccessDeniedException": (1, True),
    "AccountSendingPausedException": (1, True), "ConfigurationSetDoesNotExist": (1, True),
    "ConfigurationSetSendingPausedException": (1, True),
    "MailFromDomainNotVerifiedException": (1, True), "InvalidClientTokenId": (78, True),
    "SignatureDoesNotMatch": (78, True), "ExpiredToken": (78, True),
    "UnrecognizedClientException": (78, True),
    # The v2 API's own words (the reports go through its SendEmail).
    "LimitExceededException": (75, True), "SendingPausedException": (1, True),
    "AccountSuspendedException": (1, True), "NotFoundException": (1, True),
    "BadRequestException": (1, False),
}


def test_the_failure_table_knows_exactly_the_codes_expected_here():
    assert set(ser.FAILURE_POLICY) - ser.FAILURE_CONDITIONS == set(EXPECTED_HANDLING)
    assert {policy.outcome for policy in ser.FAILURE_POLICY.values()} <= set(ser.EXIT_CODES)


@pytest.mark.parametrize("code", EXPECTED_HANDLING)
def test_each_ses_error_code_is_handled_as_the_failure_table_says(run_via_proxy, proxy, ses,
                                                                  code):
    ses.verify(SENDER)
    exit_code, stops = EXPECTED_HANDLING[code]
    proxy.plan("SendEmail", (400, code, "as SES words it"))
    result = run_via_proxy("--only", "ceo,cto", env={"AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == exit_code
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    advice = ser.FAILURE_POLICY[code].advice
    assert line == f"error: ceo not sent: SES said {code}: as SES words it; {advice}"
    second = run_via_proxy.audit_records()[1]
    if stops:
        assert second["status"] == "skipped" and second["error"]["code"] == "NotAttempted"
        assert proxy.count("SendEmail") == 1
    else:
        assert second["status"] == "sent"


@pytest.mark.parametrize("fault", ["unimplemented", (503, "", "no code at all"),
                                   (503, "Unreachable", "a code that names a condition")])
def test_a_server_error_without_a_known_code_is_transient_and_stops(run_via_proxy, proxy, ses,
                                                                    fault):
    ses.verify(SENDER)
    proxy.plan("SendEmail", then=fault)
    result = run_via_proxy("--cycle", CYCLE, env={"AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == 75
    assert proxy.count("SendEmail") == 1
    assert "run again" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("code", ["MessageRejected", "Throttling", ""])
def test_an_error_answer_with_an_empty_message_is_one_line(run_via_proxy, proxy, ses, code):
    ses.verify(SENDER)
    proxy.plan("SendEmail", then=(400, code, ""))
    result = run_via_proxy("--only", "ceo", env={"AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode in (1, 75)
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: ceo not sent: SES said {code or 'Unknown'}")


def test_exit_code_refuses_an_outcome_it_does_not_know():
    with pytest.raises(ValueError):
        ser.exit_code({"rejectd"})


@pytest.mark.parametrize("code, message, status, kind", [
    ("Throttling", "Daily message quota exceeded.", 400, "DailyQuotaExceeded"),
    ("Throttling", "Maximum sending rate exceeded.", 400, "Throttling"),
    ("MessageRejected", "Email address is not verified. The following identities failed "
     "the check in region US-EAST-1: reports@example.com", 400, "SenderRejected"),
    ("MessageRejected", "Illegal address", 400, "MessageRejected"),
    ("SomethingNew", "a code this script has never seen", 500, "ServerError"),
    ("SomethingNew", "a code this script has never seen", 400, "Unknown"),
])
def test_conditions_that_are_not_codes_are_told_apart(code, message, status, kind):
    assert ser.failure_kind(code, message, status, SENDER) == kind
    assert kind in ser.FAILURE_POLICY


def test_a_rejection_and_a_transient_failure_in_one_run_exit_1(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.plan("SendEmail", "reject", "503")
    result = run_via_proxy("--only", "ceo,cto,cmo", env={"AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == 1  # a person must act before a re-run can help
    assert statuses(run_via_proxy.audit_records()) == [
        ("ceo", "failed"), ("cto", "failed"), ("cmo", "skipped")]


def test_what_ses_said_is_one_clean_short_line_in_the_history(run_script):
    forged = "Rejected\ncfo      sent   2026-12-01 00:00  forged row \u202eevil" + "x" * 5000
    record = {"ts": "2026-12-01T07:00:00.000+00:00", "cycle": "2026-12-01", "variant": "a",
              "report": "ceo", "status": "failed", "to": ["owner@example.com"], "bcc": [],
              "error": {"code": "MessageRejected", "message": forged}}
    run_script.audit_log.write_text(json.dumps(record) + "\n")
    result = run_script("--history")
    assert result.returncode == 0
    [row] = [line for line in result.stdout.splitlines() if line.startswith("ceo")]
    assert "\u202e" not in result.stdout and "forged row" in row
    assert len(row) < 400 and "more characters in the log" in row


def test_history_shows_each_variant_of_a_cycle_sent_in_turns(run_script, ses):
    ses.verify(SENDER)
    run_script.settings(AWS_RECIPIENT_EMAIL_B="b@example.com")
    for args in (["--only", "ceo,cto"], ["--variant", "b", "--only", "ceo"], ["--only", "cfo"]):
        assert run_script(*args, "--cycle", "2026-12-01").returncode == 0
    table = run_script("--history", "1").stdout
    variant_a = table[table.index("variant a"):]
    assert all(re.search(rf"(?m)^{report} +sent ", variant_a) for report in ("ceo", "cto", "cfo"))
    assert "variant b" in table


# --- The log's file, whatever its names (issue 21) ----------------------------


def test_two_names_for_one_log_do_not_admit_two_runs(run_via_proxy, proxy, ses, tmp_path):
    """A hard link is the same file: the lock follows the file, not its name."""
    ses.verify(SENDER)
    run_via_proxy.audit_log.write_text("")
    other_name = tmp_path / "same-log.jsonl"
    os.link(run_via_proxy.audit_log, other_name)
    proxy.delay["SendEmail"] = 0.2
    first = run_via_proxy.start("--cycle", CYCLE)
    wait_for(lambda: run_via_proxy.audit_records())
    second = run_via_proxy("--cycle", CYCLE, "--audit-log", str(other_name))
    assert second.returncode == 75, second.stderr
    assert "another run" in second.stderr and "Traceback" not in second.stderr
    proxy.clear()  # the second run was kept out: the first may finish at full speed
    assert first.wait(timeout=60) == 0
    assert sends_per_report(ses) == {r: 1 for r in ALL_IDS}


@pytest.mark.parametrize("replace", ["copy and rename", "remove"])
def test_a_log_replaced_while_sending_stops_the_run_and_keeps_its_records(
        run_via_proxy, proxy, ses, replace):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.3
    log = run_via_proxy.audit_log
    first = run_via_proxy.start("--cycle", CYCLE)
    wait_for(lambda: len(run_via_proxy.audit_records()) >= 2)
    if replace == "remove":
        log.unlink()
    else:  # a rotation, or an editor's save: a new file with the old content
        copy = log.with_name("copy.jsonl")
        copy.write_bytes(log.read_bytes())
        os.replace(copy, log)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 73, stderr
    assert f"audit log {log.resolve()} was replaced or removed while this run was sending" \
        in stderr and "Traceback" not in stderr
    records = run_via_proxy.audit_records()
    sent = [r["report"] for r in records if r["status"] == "sent"]
    assert len(sent) == len(set(sent)) >= 2  # every send SES confirmed, each once
    assert len(ses.messages()) == len(sent)
    proxy.clear()  # the delay was to stop the first run mid-cycle: the rerun needs none
    rerun = run_via_proxy("--cycle", CYCLE)
    assert rerun.returncode == 0, rerun.stderr
    assert sends_per_report(ses) == {r: 1 for r in ALL_IDS}  # the rest, and nothing twice


# --- A quota no real account has (issue 21, items 12 and 13) ------------------


@pytest.mark.parametrize("api", ["v2", "v1"])
@pytest.mark.parametrize("rate", [1e-300, 1e-9, 0.01])
def test_a_send_rate_no_account_has_is_paced_at_one_a_second(run_via_proxy, proxy, ses,
                                                              api, rate):
    ses.verify(SENDER)
    proxy.account_quota(max_send_rate=rate)
    for action in PREFLIGHT_V2_ACTIONS if api == "v1" else ():
        proxy.plan(action, then="unimplemented")
    clock = FakeClock()
    result = run_via_proxy("--cycle", CYCLE, clock=clock)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("is not one a real account gives: pacing at 1 message a "
                               "second") == 1
    assert "Traceback" not in result.stderr
    # A wait for each report after the first, of two recipients at one a second: no
    # days of sleep.
    slowest = ser.PACING_SHARE  # 95% of one a second
    assert max(clock.sleeps) <= 2.0 / slowest + 1e-6
    assert sum(clock.sleeps) <= 2.0 * (len(ser.REPORTS) - 1) / slowest + 1e-6
    assert sends_per_report(ses) == {r: 1 for r in ALL_IDS}


@pytest.mark.parametrize("field", ["max_24_hour_send", "sent_last_24_hours", "max_send_rate"])
def test_a_nan_quota_from_v1_is_not_a_quota(run_via_proxy, proxy, ses, field):
    ses.verify(SENDER)
    proxy.account_quota(**{field: float("nan")})
    for action in PREFLIGHT_V2_ACTIONS:
        proxy.plan(action, then="unimplemented")
    result = run_via_proxy("--cycle", CYCLE, clock=FakeClock())
    assert result.returncode == 0, result.stderr
    assert "messages left" not in result.stderr
    assert "is not one a real account gives" in result.stderr
    assert sends_per_report(ses) == {r: 1 for r in ALL_IDS}


def test_the_pacers_wait_is_bounded_whatever_it_is_given():
    clock = FakeClock()
    pacer = ser.SendPacer(1e-300, clock)
    pacer.wait_to_send(2)
    pacer.wait_to_send(2)
    assert clock.sleeps == [ser.MAX_PACING_WAIT_SECONDS]


def test_an_odd_rate_keeps_the_rest_of_the_quota(run_via_proxy, proxy, ses):
    """A sandbox account with 5 messages left and a rate of 0.5: the rate is floored,
    the quota still refuses a cycle of 16."""
    ses.verify(SENDER)
    proxy.account_status(production=False)
    proxy.account_quota(200, 195, 0.5)
    result = run_via_proxy("--check")
    assert result.returncode != 0
    assert "quota has 5 messages left" in result.stderr
    assert "MaxSendRate 0.5" in result.stderr and "24-hour quota unchecked" not in result.stderr


def test_records_that_cannot_be_put_back_are_printed_to_add_by_hand(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.3
    log = run_via_proxy.audit_log
    first = run_via_proxy.start("--cycle", CYCLE)
    wait_for(lambda: len(run_via_proxy.audit_records()) >= 2)
    os.replace(log, log.with_name("old.jsonl"))
    log.mkdir()  # nowhere to put them back
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 73, stderr
    assert "could not be put back" in stderr and "add these lines to the log by hand" in stderr
    printed = [json.loads(chunk) for chunk in re.findall(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}",
                                                         stderr.split("by hand: ")[1])]
    sent = {m["subject"].split(" | ")[0] for m in ses.messages()}
    assert len([r for r in printed if r["status"] == "sent"]) == len(sent)  # every send
