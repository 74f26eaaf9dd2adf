"""Recovering: a cycle is never lost and never sent twice, whatever SES or the laptop does."""

import collections
import json
import os
import signal
import subprocess
import time
from datetime import datetime

import pytest

import send_exec_reports as ser
from conftest import SENDER, ScriptRunner
from fault_proxy import FaultProxy
from local_ses import LocalSES

CYCLE = "2026-11-29"
ALL_IDS = [spec.report_id for spec in ser.REPORTS]


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


@pytest.mark.parametrize("fault", ["throttle", "503", "drop"])
def test_passing_faults_are_retried_and_every_report_goes_once(run_via_proxy, proxy, ses,
                                                              fault):
    ses.verify(SENDER)
    proxy.plan("SendEmail", fault, fault)
    result = run_via_proxy("--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)
    assert proxy.count("SendEmail") == 10  # the two faults plus eight sends
    assert all(r["status"] == "sent" for r in run_via_proxy.audit_records())


def test_slow_answers_within_the_timeout_are_waited_for(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 1.0
    result = run_via_proxy("--only", "ceo,cto")
    assert result.returncode == 0, result.stderr
    assert proxy.count("SendEmail") == 2
    assert len(ses.messages()) == 2


def test_a_failure_that_outlives_its_retries_exits_75_and_a_rerun_finishes(
        run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.plan("SendEmail", then="503")
    first = run_via_proxy("--cycle", CYCLE)
    assert first.returncode == 75
    assert proxy.count("SendEmail") == ser.SES_RETRIES["total_max_attempts"]
    records = run_via_proxy.audit_records()
    assert records[0]["status"] == "failed"
    assert records[0]["error"]["code"] == "ServiceUnavailable"
    assert [r["status"] for r in records[1:]] == ["skipped"] * 7
    assert "run again later" in first.stderr.splitlines()[-1]
    proxy.clear()
    second = run_via_proxy("--cycle", CYCLE)
    assert second.returncode == 0, second.stderr
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)


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
        ("ceo", "sent"), ("cto", "sent"), ("accounting", "sent"), ("cmo", "failed"),
        ("cfo", "skipped"), ("rental-3028", "skipped"), ("yacht-delivery", "skipped"),
        ("dc-portfolio", "skipped")]
    assert "Daily message quota exceeded" in first.stderr
    proxy.clear()  # the quota has reset
    second = run_via_proxy("--cycle", CYCLE)
    assert second.returncode == 0, second.stderr
    assert "5 of 8 reports sent" in second.stdout
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
    assert sum(r["status"] == "sent" for r in records) == 7
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: cto not sent: SES said MessageRejected: Illegal address")
    proxy.clear()
    rerun = run_via_proxy("--cycle", CYCLE)
    assert rerun.returncode == 0 and "1 of 8 reports sent" in rerun.stdout
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)


@pytest.mark.parametrize("fault, code, advice", [
    ("paused", "AccountSendingPausedException", "reputation dashboard"),
    ("denied", "AccessDenied", "IAM policy in the README"),
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
    assert [r["status"] for r in run_via_proxy.audit_records()] == ["failed"] + ["skipped"] * 7


# --- The ledger: re-runs send exactly what is missing ------------------------


def test_endpoint_down_then_up_then_done(run_script, ses):
    ses.verify(SENDER)
    down = run_script("--cycle", CYCLE, env={"AWS_ENDPOINT_URL_SES": "http://127.0.0.1:9"})
    assert down.returncode == 75
    up = run_script("--cycle", CYCLE)
    assert up.returncode == 0 and "8 of 8 reports sent" in up.stdout
    done = run_script("--cycle", CYCLE)
    assert done.returncode == 0 and "0 of 8 reports sent" in done.stdout
    assert done.stdout.count("already sent") == 8
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
    assert sum(sends_per_report(ses).values()) == 9


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
    assert "7 of 8 reports sent" in result.stdout
    assert sends_per_report(ses)["ceo"] == 0
    again = run_script("--cycle", CYCLE)  # the torn line now sits mid-file, still ignored
    assert again.returncode == 0 and "0 of 8 reports sent" in again.stdout


def test_a_run_killed_mid_cycle_loses_nothing(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.4
    runner = run_via_proxy
    victim = runner.start("--cycle", CYCLE)
    wait_for(lambda: sum(r["status"] == "sent" for r in runner.audit_records()) >= 3)
    victim.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs
    victim.wait()
    proxy.clear()
    rerun = runner("--cycle", CYCLE)
    assert rerun.returncode == 0, rerun.stderr
    counts = sends_per_report(ses)
    assert all(counts[report] >= 1 for report in ALL_IDS)
    assert sum(counts.values()) <= 9  # at most the one send in flight went twice
    sent = {r["report"] for r in runner.audit_records() if r["status"] == "sent"}
    assert sent == set(ALL_IDS)


def test_overlapping_runs_send_once(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.3
    runner = run_via_proxy
    first = runner.start("--cycle", CYCLE)
    wait_for(lambda: runner.audit_records())
    second = runner("--cycle", CYCLE)
    assert first.poll() is None  # the second run did not wait for the first
    assert second.returncode == 75
    assert f"another run (pid {first.pid}) is sending" in second.stderr
    assert first.wait(timeout=60) == 0
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)
    assert len(runner.audit_records()) == 8  # the second run recorded nothing


# --- Preflight --------------------------------------------------------------


@pytest.fixture
def small_quota_ses():
    with LocalSES(max_24_hour_send=10) as server:
        server.verify(SENDER)
        yield server


def test_a_quota_too_small_for_the_cycle_sends_nothing(tmp_path, small_quota_ses):
    runner = ScriptRunner(tmp_path, small_quota_ses.url)
    result = runner("--cycle", CYCLE)
    assert result.returncode == 75
    assert small_quota_ses.messages() == []
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "10 messages left and this cycle needs 16" in line
    assert {(r["status"], r["error"]["code"]) for r in runner.audit_records()} == {
        ("skipped", "QuotaInsufficient")}
    # Two reports fit: a smaller selection goes out.
    assert runner("--cycle", CYCLE, "--only", "ceo,cto").returncode == 0


@pytest.mark.parametrize("action", ["GetSendQuota", "GetIdentityVerificationAttributes"])
@pytest.mark.parametrize("fault", ["denied", "unimplemented", "hang", "garbage"])
def test_a_preflight_that_cannot_ask_warns_and_goes_on(run_via_proxy, proxy, ses, fault,
                                                       action):
    ses.verify(SENDER)
    proxy.plan(action, then=fault)
    started = time.monotonic()
    result = run_via_proxy("--cycle", CYCLE, timeout=40)
    assert time.monotonic() - started < 30  # well inside the proxy's 60-second hang
    assert result.returncode == 0, result.stderr
    assert "warning: preflight" in result.stderr
    assert sends_per_report(ses) == dict.fromkeys(ALL_IDS, 1)


def test_check_reports_what_ses_says_and_sends_nothing(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    result = run_via_proxy("--check", "--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert "credentials: found (access keys from the environment)" in result.stdout
    assert f"sender: {SENDER} is verified" in result.stdout
    assert "quota: 0 of 50000 messages used" in result.stdout
    assert "cycle 2026-11-29, variant a: 0 already sent, 8 to send" in result.stdout
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


def test_check_sees_a_quota_too_small(tmp_path, small_quota_ses):
    result = ScriptRunner(tmp_path, small_quota_ses.url)("--check")
    assert result.returncode == 75
    assert "needs 16" in result.stderr


def test_the_sandbox_warns_about_unverified_recipients(tmp_path):
    with LocalSES(max_send_rate=1000, max_24_hour_send=200) as sandbox:
        sandbox.verify(SENDER)
        result = ScriptRunner(tmp_path, sandbox.url)("--check")
    assert "sandbox" in result.stdout
    assert "recipients must be verified too: owner@example.com, audit@example.com" \
        in result.stderr


def test_paced_sends_never_meet_a_rate_limit_and_unpaced_ones_do(tmp_path):
    rate = 4
    with LocalSES(max_send_rate=rate) as slow, FaultProxy(slow.url) as proxy:
        slow.verify(SENDER)
        proxy.limit_rate(rate)  # the proxy throttles the way SES does
        result = ScriptRunner(tmp_path, proxy.url)("--cycle", CYCLE)
        assert result.returncode == 0, result.stderr
        assert proxy.throttled == 0 and proxy.count("SendEmail") == 8
        # The same limit on a server that claims a high rate: botocore's retries
        # absorb the throttling, which shows the limit bites when pacing is off.
        fast = LocalSES()
        with fast, FaultProxy(fast.url) as unpaced:
            fast.verify(SENDER)
            unpaced.limit_rate(rate)
            (tmp_path / "fast").mkdir()
            again = ScriptRunner(tmp_path / "fast", unpaced.url)
            assert again("--cycle", CYCLE).returncode in (0, 75)
            assert unpaced.throttled > 0


def test_sends_are_paced_to_the_max_send_rate(tmp_path):
    rate = 4  # recipients a second; each report has two (To and BCC)
    with LocalSES(max_send_rate=rate) as slow:
        slow.verify(SENDER)
        runner = ScriptRunner(tmp_path, slow.url)
        result = runner("--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    times = [datetime.fromisoformat(r["ts"]) for r in runner.audit_records()]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert min(gaps) >= 2 / rate - 0.02  # records are written after each send returns


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
