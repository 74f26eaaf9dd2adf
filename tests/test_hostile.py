"""A hostile machine: symlinks, full disks, odd files, signals, hand-edited logs.

Each case ends in one clear line, its documented exit code, no traceback and no
damaged file; nothing SES confirmed is lost from view.
"""

import collections
import csv
import datetime
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import send_exec_reports as ser
from conftest import BCC, RECIPIENT, SENDER
from fault_proxy import PREFLIGHT_ACTIONS
from local_ses import SCRIPT

CYCLE = "2026-11-29"
REPORT_COUNT = len(ser.REPORTS)


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def lock_of(path):
    return path.with_name(path.name + ".lock")


def sent_record(report, cycle=CYCLE, **changes):
    """An audit record as the script writes one for a sent report."""
    record = {"ts": "2026-11-29T03:00:00.000+00:00", "run_id": "r1", "cycle": cycle,
              "variant": "a", "report": report, "subject": f"{report} | cycle {cycle}",
              "from": SENDER, "to": [RECIPIENT], "bcc": [BCC], "region": "us-east-1",
              "status": "sent", "message_id": f"m-{report}-{cycle}", "error": None}
    record.update(changes)
    return record


def write_log(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))


# --- The lock can never damage a file -----------------------------------------


@pytest.mark.parametrize("target", ["another file", "the audit log"])
def test_a_symlink_planted_as_the_lock_is_refused_and_its_target_untouched(
        run_script, ses, target):
    ses.verify(SENDER)
    victim = run_script.tmp_path / "precious.txt"
    victim.write_text("the owner's notes\n")
    if target == "the audit log":
        write_log(run_script.audit_log, [sent_record("ceo")])
        victim = run_script.audit_log
    before = victim.read_bytes()
    lock_of(run_script.audit_log).symlink_to(victim)
    result = run_script("--cycle", CYCLE)
    assert result.returncode == 73
    [line] = result.stderr.splitlines()
    assert "lock file" in line and "symbolic link" in line
    assert victim.read_bytes() == before
    assert ses.messages() == []


@pytest.mark.parametrize("plant", ["someone else's data", "a hard link"])
def test_a_lock_file_the_script_did_not_make_is_never_truncated(run_script, ses, plant):
    ses.verify(SENDER)
    lock = lock_of(run_script.audit_log)
    if plant == "a hard link":
        other = run_script.tmp_path / "other-name"
        other.write_text("4242\n")
        os.link(other, lock)
    else:
        lock.write_text("not a pid: data that must survive\n")
    before = lock.read_bytes()
    result = run_script("--cycle", CYCLE)
    assert result.returncode == 73
    [line] = result.stderr.splitlines()
    assert f"lock file {lock}" in line and "did not make it" in line
    assert lock.read_bytes() == before
    assert ses.messages() == []


def test_one_lock_per_audit_log_whatever_name_reaches_it(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.2
    runner = run_via_proxy
    first = runner.start("--cycle", CYCLE, "--only", "ceo,cto,cmo")
    alias = runner.tmp_path / "alias.jsonl"
    alias.symlink_to(runner.audit_log)
    deadline = time.monotonic() + 30
    while not runner.audit_records() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = runner("--cycle", CYCLE, "--audit-log", str(alias))  # the later option wins
    assert second.returncode == 75, second.stderr
    assert f"another run (pid {first.pid})" in second.stderr
    proxy.clear()  # the second run was kept out: the first may finish at full speed
    assert first.wait(timeout=60) == 0
    assert len(ses.messages()) == 3
    assert len(runner.audit_records()) == 3  # the second run recorded nothing


# --- Full disks ------------------------------------------------------------------

# Runs the script with a cap on the size any file may reach: writing past it
# fails (EFBIG), the way a full disk fails a write (ENOSPC), on Linux and macOS.
FILE_SIZE_CAP = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
cap = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_with_file_size_cap(runner, cap, *args):
    return subprocess.run([sys.executable, "-c", FILE_SIZE_CAP, str(cap), str(SCRIPT),
                           *runner.argv(args)], env=runner.environment(None),
                          capture_output=True, text=True, timeout=60)


def test_a_full_disk_after_ses_accepted_a_report_loses_nothing_from_view(run_script, ses):
    ses.verify(SENDER)
    write_log(run_script.audit_log, [sent_record("ceo", cycle="2026-11-01")])
    before = run_script.audit_log.read_bytes()
    result = run_with_file_size_cap(run_script, len(before) + 100, "--cycle", CYCLE)
    assert result.returncode == 73, result.stderr
    assert "Traceback" not in result.stderr
    [line] = error_lines(result)
    [message] = ses.messages()  # SES took the first report; the run stopped there
    assert "cannot write audit log" in line
    assert f'"message_id": "{message["id"]}"' in line  # the outcome, for the person to add
    assert run_script.audit_log.read_bytes() == before  # no torn record left behind


def test_no_room_for_the_lock_file_is_one_line_and_exit_73(run_script, ses):
    ses.verify(SENDER)
    result = run_with_file_size_cap(run_script, 0, "--cycle", CYCLE)
    assert result.returncode == 73
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert "cannot write lock file" in line
    assert ses.messages() == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB filesystem of its own, where the platform lets a test mount one."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs",
                              str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root on Linux)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_nearly_full_disk_sends_nothing_it_could_not_record(run_script, ses, tiny_disk):
    ses.verify(SENDER)
    # Leave room for the lock file, less than the room a run wants for its records.
    (tiny_disk / "filler").write_bytes(b"x" * (256 - 16) * 1024)
    run_script.audit_log = tiny_disk / "audit.jsonl"
    result = run_script("--cycle", CYCLE)
    assert result.returncode == 73
    [line] = error_lines(result)
    assert "is full" in line and "nothing more was sent" in line
    assert ses.messages() == []


# --- --check exits by what it found -----------------------------------------------


def test_check_exits_75_when_ses_cannot_be_reached(run_script, ses):
    result = run_script("--check", env={"AWS_ENDPOINT_URL_SES": "http://127.0.0.1:9"})
    assert result.returncode == 75
    assert "could not be reached" in error_lines(result)[-1]


@pytest.mark.parametrize("code", ["InvalidClientTokenId", "SignatureDoesNotMatch"])
def test_check_exits_78_when_aws_refuses_the_credentials(run_via_proxy, proxy, ses, code):
    ses.verify(SENDER)
    for action in PREFLIGHT_ACTIONS:
        proxy.plan(action, then=(403, code, "The security token included in the request "
                                            "is invalid."))
    result = run_via_proxy("--check")
    assert result.returncode == 78
    assert "AWS refused the credentials" in error_lines(result)[-1]
    assert code in result.stderr


def test_check_exits_0_only_when_a_send_would_go_through(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    assert run_via_proxy("--check").returncode == 0
    # An IAM policy without the optional calls, v2's and then v1's as well.
    for action in ("GetAccount", "GetSuppressedDestination", "GetSendQuota"):
        proxy.plan(action, then="denied")
        assert run_via_proxy("--check").returncode == 0


# --- Records of the wrong shape ----------------------------------------------------

WRONG_SHAPES = {
    "report is a list": {**sent_record("cto"), "report": ["cto"]},
    "error is text": sent_record("cto", status="failed", error="text"),
    "ts is a number": sent_record("cto", ts=5),
    "to is null": sent_record("cto", to=None),
    "status is missing": {k: v for k, v in sent_record("cto").items() if k != "status"},
    "not an object": '["a", "list"]',
    "data_as_of is a number": sent_record("cto", data_as_of=20261209),
    "nested past Python's limit": "[" * 200_000,
}


@pytest.mark.parametrize("shape", WRONG_SHAPES)
def test_a_record_of_the_wrong_shape_is_skipped_with_one_warning(run_script, ses, shape):
    ses.verify(SENDER)
    write_log(run_script.audit_log, [sent_record("ceo"), WRONG_SHAPES[shape]])
    warning = f"audit log {run_script.audit_log} line 2 is not a"
    for args in (["--check", "--cycle", CYCLE], ["--cycle", CYCLE, "--only", "ceo,cto"]):
        result = run_script(*args)
        assert result.returncode == 0, result.stderr
        assert result.stderr.count(warning) == 1
    [message] = ses.messages()  # ceo was sent before; cto's odd record is no proof
    assert message["subject"].startswith("CTO")
    history = run_script("--history")
    assert history.returncode == 0 and "Traceback" not in history.stderr
    assert history.stderr.count("line 2 from the end") == 0  # the skip records came after
    assert len([x for x in history.stderr.splitlines() if "from the end" in x]) == 1
    assert "from the end" in history.stderr


def test_the_ledger_reads_a_long_log_in_chunks_and_misses_nothing(run_script, ses):
    ses.verify(SENDER)
    filler = [sent_record(spec.report_id, cycle=f"2026-10-{day:02d}", subject="x" * 400)
              for day in range(1, 29) for spec in ser.REPORTS] * 50
    half = len(filler) // 2
    torn_naming_the_cycle = '{"ts": "2026-11-29T03:00:01", "cycle": "2026-11-29", "rep'
    torn_at_the_end = '{"ts": "2026-1'  # where a crash leaves one: before the cycle
    records = [sent_record("ceo"), *filler[:half], torn_naming_the_cycle, *filler[half:],
               sent_record("dc-portfolio"), torn_at_the_end]
    write_log(run_script.audit_log, records)
    assert run_script.audit_log.stat().st_size > 3 * ser.LEDGER_CHUNK_BYTES
    result = run_script("--cycle", CYCLE)
    assert result.returncode == 0, result.stderr
    assert f"{REPORT_COUNT - 2} of {REPORT_COUNT} reports sent" in result.stdout
    assert result.stderr.count("is not a complete record") == 2
    assert f"line {2 + half} is not a complete record" in result.stderr
    assert f"line {len(records)} is not a complete record" in result.stderr


def test_history_reads_from_the_end(run_script, ses):
    old = [sent_record("ceo", cycle=f"2026-10-{day:02d}") for day in range(1, 29)]
    write_log(run_script.audit_log, ["garbage at the start", *old, sent_record("ceo")])
    result = run_script("--history", "2")
    assert result.returncode == 0
    assert "cycle 2026-10-28, variant a" in result.stdout
    assert f"cycle {CYCLE}, variant a" in result.stdout
    assert "2026-10-27" not in result.stdout
    assert result.stderr == ""  # the garbage line is never reached


# --- Settings are read as written ----------------------------------------------------


def test_settings_are_not_interpolated_so_no_secret_reaches_a_header(run_script, ses):
    ses.verify(SENDER)
    secret = "wJalrXUtnFEMI-interpolated-secret"
    run_script.settings(AWS_SES_FROM_NAME="Ops ${AWS_SECRET_ACCESS_KEY}")
    env = {"AWS_SECRET_ACCESS_KEY": secret}
    preview = run_script("--dry-run", "--only", "ceo", env=env)
    assert "From: Ops ${AWS_SECRET_ACCESS_KEY} <" in preview.stdout
    result = run_script("--only", "ceo", env=env)
    assert result.returncode == 0, result.stderr
    [message] = ses.messages()
    assert secret not in json.dumps(message)
    assert "${AWS_SECRET_ACCESS_KEY}" in message["body"]  # prepared by, in the HTML part


def test_a_byte_order_mark_in_the_env_file_is_ignored(run_script, ses):
    run_script.env_file.write_bytes(b"\xef\xbb\xbf" + run_script.env_file.read_bytes())
    result = run_script("--dry-run", "--only", "ceo")
    assert result.returncode == 0, result.stderr
    assert f"To: {RECIPIENT}" in result.stdout


@pytest.mark.parametrize("odd", ["a directory", "a FIFO"])
def test_an_env_file_that_is_not_a_regular_file_is_one_line_and_exit_78(run_script, ses, odd):
    run_script.env_file.unlink()
    if odd == "a directory":
        run_script.env_file.mkdir()
    else:
        os.mkfifo(run_script.env_file)
    result = run_script.subprocess("--dry-run", timeout=20)  # a FIFO must not hang
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert f"cannot read settings file {run_script.env_file}: not a regular file" \
        in result.stderr


def test_a_missing_ca_bundle_is_a_config_error_not_a_transient_one(run_script, ses):
    result = run_script(env={"AWS_CA_BUNDLE": str(run_script.tmp_path / "no-such-ca.pem")})
    assert result.returncode == 78
    assert "config error: AWS_CA_BUNDLE" in result.stderr
    assert ses.messages() == [] and run_script.audit_records() == []


def test_tls_that_cannot_be_verified_is_exit_78_not_75(run_via_proxy, proxy, ses):
    import certifi

    ses.verify(SENDER)
    tls_to_plain_http = proxy.url.replace("http://", "https://")
    result = run_via_proxy("--only", "ceo", env={"AWS_ENDPOINT_URL_SES": tls_to_plain_http,
                                                 "AWS_CA_BUNDLE": certifi.where()})
    assert result.returncode == 78
    [line] = error_lines(result)
    assert "AWS_CA_BUNDLE" in line and "retrying cannot help" in line
    [record] = run_via_proxy.audit_records()
    assert record["status"] == "failed" and record["error"]["code"] == "SSLError"


@pytest.mark.parametrize("endpoint", ["http://[::1", "http://127.0.0.1:99999"])
def test_an_endpoint_botocore_cannot_use_is_a_config_error(run_script, ses, endpoint):
    result = run_script(env={"AWS_ENDPOINT_URL_SES": endpoint})
    assert result.returncode == 78
    assert "config error: AWS_ENDPOINT_URL_SES" in result.stderr
    assert "Traceback" not in result.stderr


# --- Audit logs that are not regular files ------------------------------------------


@pytest.mark.parametrize("args", [["--cycle", CYCLE], ["--check"], ["--history"]])
def test_an_audit_log_that_is_a_fifo_is_refused_not_waited_on(run_script, ses, args):
    ses.verify(SENDER)
    os.mkfifo(run_script.audit_log)
    result = run_script.subprocess(*args, timeout=30)
    assert result.returncode == 73
    assert "Traceback" not in result.stderr
    assert f"audit log {run_script.audit_log} is not a regular file" in result.stderr
    assert ses.messages() == []


def test_an_audit_log_that_points_at_a_device_is_refused(run_script, ses):
    ses.verify(SENDER)
    run_script.audit_log.symlink_to("/dev/full")
    for args in (["--cycle", CYCLE], ["--history"]):
        result = run_script(*args)
        assert result.returncode == 73
        assert "is not a regular file" in result.stderr
    assert ses.messages() == []


@pytest.mark.parametrize("path", [".", "/", "~"])
def test_an_audit_log_that_is_a_folder_is_one_line_and_exit_73(run_script, ses, path):
    ses.verify(SENDER)
    home_lock = Path(os.path.expanduser("~") + ".lock")
    existed = home_lock.exists()
    result = run_script("--cycle", CYCLE, "--audit-log", path)
    assert result.returncode == 73
    [line] = result.stderr.splitlines()
    assert "is not a regular file" in line and "--audit-log" in line
    assert home_lock.exists() == existed
    assert ses.messages() == []


# --- Redaction and addresses ----------------------------------------------------------


def test_a_short_test_secret_does_not_mangle_the_output(run_script, ses):
    run_script.env_file.chmod(0o644)  # a warning full of the letter t
    result = run_script("--dry-run", "--only", "ceo", env={"AWS_SECRET_ACCESS_KEY": "t"})
    assert "readable by group or others" in result.stderr
    assert "[redac" not in result.stderr + result.stdout


def test_redaction_is_one_pass():
    key, secret = "AKIAABCDEFGHIJKLMNOP", "[redacted] with more of it"
    said = f"key {key} and secret {secret}"
    assert ser.redact(said, (key, secret)) == "key [redacted] and secret [redacted]"
    first = "abcdefghijklmnopqrst"
    assert ser.redact(f"{first} and more", (first, "[redacted] and mo")) == \
        "[redacted] and more"


def test_a_domain_verified_in_the_sandbox_covers_its_addresses(run_via_proxy, proxy, ses):
    ses.verify("example.com")  # the sender's and both recipients' domain
    proxy.account_status(production=False)
    result = run_via_proxy("--check")
    assert result.returncode == 0, result.stderr
    assert "sandbox" in result.stdout
    assert "must be verified too" not in result.stderr


def test_an_address_given_twice_or_also_as_bcc_is_sent_once(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    run_via_proxy.settings(REPORT_TO_CEO="cfo@example.com, CFO@Example.com, ceo@example.com",
                           AWS_RECIPIENT_EMAIL=f"{RECIPIENT}, {BCC.upper()}")
    result = run_via_proxy("--cycle", CYCLE, "--only", "ceo,cto")
    assert result.returncode == 0, result.stderr
    ceo, cto = ses.messages()
    assert ceo["destinations"] == {"ToAddresses": ["cfo@example.com", "ceo@example.com"],
                                   "BccAddresses": [BCC]}
    assert cto["destinations"] == {"ToAddresses": [RECIPIENT, BCC.upper()],
                                   "BccAddresses": []}
    assert "REPORT_TO_CEO names CFO@Example.com more than once" in result.stderr
    assert f"AWS_RECIPIENT_EMAIL names {BCC}, the BCC (AWS_BCC_EMAIL), too" in result.stderr


# --- Signals ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum, exit_code, said", [
    (signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGHUP, 129, "stopped by SIGHUP"),
    (signal.SIGINT, 130, "interrupted")])
def test_a_stop_signal_mid_send_records_the_send_in_flight(run_via_proxy, proxy, ses, signum,
                                                           exit_code, said):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.3
    runner = run_via_proxy
    victim = runner.start("--cycle", CYCLE)
    deadline = time.monotonic() + 30
    while not runner.audit_records() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the second report is now in flight
    victim.send_signal(signum)
    stdout, stderr = victim.communicate(timeout=30)
    assert victim.returncode == exit_code
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1].startswith(f"{said}: the audit log holds every report")
    recorded = [r["message_id"] for r in runner.audit_records() if r["status"] == "sent"]
    assert len(recorded) >= 2  # the one in flight was answered and recorded too
    assert recorded == [m["id"] for m in ses.messages()]  # nothing SES took is unrecorded


@pytest.mark.parametrize("name, value, said", [
    ("AWS_SES_REGION", "us-east-\u0661", "is not an AWS region name"),  # an Arabic-Indic 1
    ("AWS_ENDPOINT_URL_SES", "http://-bad-/", "has no usable host name"),
    ("AWS_SES_FROM_NAME", "Reports \u202eevil", "right-to-left override"),
])
def test_values_botocore_or_a_reader_would_trip_on_are_config_errors(run_script, ses, name,
                                                                    value, said):
    result = run_script(env={name: value})
    assert result.returncode == 78
    assert f"config error: {name}" in result.stderr and said in result.stderr
    assert "Traceback" not in result.stderr and ses.messages() == []


def test_an_expired_sso_login_is_exit_78_not_75(run_script, ses):
    """A process of its own: botocore reads the AWS config file from the environment."""
    config = run_script.tmp_path / "aws-config"
    config.write_text("[profile reports]\nsso_start_url = https://example.com/start\n"
                      "sso_region = us-east-1\nsso_account_id = 123456789012\n"
                      "sso_role_name = Reports\nregion = us-east-1\n")
    result = run_script.subprocess("--only", "ceo", env={
        "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": "reports",
        "AWS_CONFIG_FILE": str(config)})
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    assert "aws sso login" in result.stderr
    assert ses.messages() == []


def test_a_huge_line_with_no_end_is_skipped_not_swallowed(run_script, ses):
    ses.verify(SENDER)
    write_log(run_script.audit_log, [sent_record("ceo")])
    with open(run_script.audit_log, "ab") as log:
        log.write(b"x" * (3 * ser.LEDGER_CHUNK_BYTES))  # junk, and no newline after it
    history = run_script("--history", "1")
    assert history.returncode == 0 and "Traceback" not in history.stderr
    assert "line 1 from the end is not a complete record" in history.stderr
    sent = run_script("--cycle", CYCLE)
    assert sent.returncode == 0 and "Traceback" not in sent.stderr
    assert f"{REPORT_COUNT - 1} of {REPORT_COUNT} reports sent" in sent.stdout


def test_a_stop_during_the_last_send_still_stops_the_run(run_via_proxy, proxy, ses):
    ses.verify(SENDER)
    proxy.delay["SendEmail"] = 0.6
    victim = run_via_proxy.start("--cycle", CYCLE, "--only", "ceo")
    deadline = time.monotonic() + 30
    while proxy.count("SendEmail") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGTERM)
    _, stderr = victim.communicate(timeout=30)
    assert victim.returncode == 143, stderr
    [record] = run_via_proxy.audit_records()
    assert record["status"] == "sent"  # the send in flight was answered and recorded


def test_a_short_secret_is_not_redacted_out_of_what_ses_says(run_via_proxy, proxy, ses):
    proxy.plan("SendEmail", then=(400, "MessageRejected", "the t-shirt list is not verified"))
    result = run_via_proxy("--only", "ceo", env={"AWS_SECRET_ACCESS_KEY": "t"})
    assert result.returncode == 1
    assert "SES said MessageRejected: the t-shirt list is not verified" in result.stderr
    [record] = run_via_proxy.audit_records()
    assert record["error"]["message"] == "the t-shirt list is not verified"


# --- A reader that goes away, a terminal that cannot show a character ------------------


def test_a_closed_output_pipe_is_no_traceback(run_script):
    """`--dry-run | head -1`: the reader goes after one line."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *run_script.argv(["--dry-run", "--cycle", "2026-12-01"])],
        env=run_script.environment(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    assert b"Traceback" not in errors and b"Exception ignored" not in errors


def test_a_closed_stdout_never_stops_a_send(run_script, ses):
    ses.verify(SENDER)
    reader, writer = os.pipe()
    os.close(reader)  # nobody will ever read what the run prints
    try:
        result = subprocess.run(
            [sys.executable, str(SCRIPT), *run_script.argv(["--cycle", "2026-12-01"])],
            env=run_script.environment(None), stdout=writer, stderr=subprocess.PIPE,
            timeout=120)
    finally:
        os.close(writer)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    sent = [r for r in run_script.audit_records() if r["status"] == "sent"]
    assert len(sent) == len(ser.REPORTS) == len(ses.messages())


def test_a_terminal_that_cannot_show_a_character_shows_a_question_mark(run_script):
    result = run_script.subprocess("--dry-run", "--only", "ceo", "--cycle", "2026-12-01",
                                   env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "From: ?n? Reports" in result.stdout  # the From name is not ASCII


def test_a_secret_is_redacted_in_its_escaped_form_too():
    token = "IQoJb3JpZ2luX2Vj\nEFoaCXVzLWVhc3Qt"
    said = f"Invalid header value b'{token.encode('unicode_escape').decode()}'"
    assert ser.redact(said, (token,)) == "Invalid header value b'[redacted]'"


# --- Previews are the owner's financials (issue 21, item 4) -------------------


def test_a_preview_is_never_written_through_a_link_in_its_folder(run_script, tmp_path):
    folder = tmp_path / "preview"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (folder / "ceo.html").symlink_to(victim)
    result = run_script("--preview-dir", str(folder), "--only", "ceo")
    assert result.returncode == 73
    assert f"cannot write preview {folder / 'ceo.html'}: it is a symbolic link" in result.stderr
    assert victim.read_text() == "keep me"


def test_previews_are_readable_by_their_owner_only(run_script, tmp_path):
    folder = tmp_path / "new" / "preview"
    old = tmp_path / "new"
    result = run_script("--preview-dir", str(folder), "--only", "ceo,cfo")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for made in folder.iterdir():
        assert stat.S_IMODE(made.stat().st_mode) == 0o600, made
    (folder / "ceo.eml").chmod(0o644)  # left readable by something else
    assert run_script("--preview-dir", str(folder), "--only", "ceo").returncode == 0
    assert stat.S_IMODE((folder / "ceo.eml").stat().st_mode) == 0o600
    assert old.exists()


# --- A figures sheet of 80,000 rows (issue 21, item 19) -----------------------

PEAK_RSS = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as done:
    code = done.code
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak * (1 if sys.platform == "darwin" else 1024), file=sys.stderr)
sys.exit(code)
"""


def test_a_figures_sheet_of_80000_rows_stays_in_a_modest_memory(run_script):
    """Each repeated value is one object, and rows are read as they are parsed: 80,000
    daily rows (two centuries, all a sheet's dates can span) took 574 MiB before, and
    take about 160 MiB."""
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    last = rows[-1]
    with open(run_script.figures, "w", newline="") as sheet:
        writer = csv.writer(sheet)
        writer.writerow(rows[0])
        start = datetime.date(ser.FIRST_YEAR, 1, 1)
        for day in range(80000):
            last[0] = (start + datetime.timedelta(days=day)).isoformat()
            last[1] = f"row {day}"
            writer.writerow(last)
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(SCRIPT),
                             *run_script.argv(["--dry-run", "--only", "ceo", "--cycle",
                                               f"{ser.LAST_YEAR}-12-31"])],
                            env=run_script.environment(None), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-500:]
    peak = int(result.stderr.strip().splitlines()[-1])
    assert peak < 250 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_a_preview_never_overwrites_a_file_with_other_names(run_script, tmp_path):
    folder = tmp_path / "preview"
    folder.mkdir()
    kept = tmp_path / "keep.txt"
    kept.write_text("keep me")
    os.link(kept, folder / "ceo.eml")
    result = run_script("--preview-dir", str(folder), "--only", "ceo")
    assert result.returncode == 73 and "has other names (hard links)" in result.stderr
    assert kept.read_text() == "keep me"


def test_check_refuses_a_lock_file_a_send_would_refuse(run_script, ses):
    ses.verify(SENDER)
    run_script.audit_log.with_name(run_script.audit_log.name + ".lock").write_text("not a pid")
    check = run_script("--check")
    send = run_script("--cycle", CYCLE)
    assert (check.returncode, send.returncode) == (73, 73)
    assert "holds something other than a process id" in check.stderr


def test_a_symlinked_log_replaced_by_a_file_still_stops_the_run(run_via_proxy, proxy, ses,
                                                                tmp_path):
    """sed -i on a symlink replaces the link by a file: the log the settings name is
    then another file, and the run's records must reach it."""
    ses.verify(SENDER)
    real = tmp_path / "real.jsonl"
    real.write_text("")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    proxy.delay["SendEmail"] = 0.3
    first = run_via_proxy.start("--cycle", CYCLE, "--audit-log", str(link))
    deadline = time.monotonic() + 30
    while len(real.read_text().splitlines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(real.read_bytes())
    os.replace(copy, link)  # the link is now a file of its own
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 73, stderr
    proxy.clear()  # the delay was to stop the first run mid-cycle: the rerun needs none
    rerun = run_via_proxy("--cycle", CYCLE, "--audit-log", str(link))
    assert rerun.returncode == 0, rerun.stderr
    sent = collections.Counter(m["subject"].split(" | ")[0] for m in ses.messages())
    assert set(sent.values()) == {1} and len(sent) == len(ser.REPORTS)


# --- Extreme dates (issue 26, item 6) ------------------------------------------------------


@pytest.mark.parametrize("written", ["0001-01-01", "9999-12-31", "1969-12-31", "2201-01-01"])
def test_a_date_no_business_has_is_one_line_naming_its_cell(run_script, written):
    """Go's zero time and .NET's MinValue export an empty date as 0001-01-01: exit 65
    naming the cell, never an overflow."""
    rows = list(csv.reader(run_script.figures.read_text().splitlines()))
    rows.insert(1, [written] + [""] * (len(rows[0]) - 1))
    with open(run_script.figures, "w", newline="") as sheet:
        csv.writer(sheet).writerows(rows)
    result = run_script("--dry-run", "--cycle", "2026-12-01")
    assert result.returncode == 65, result.stderr
    assert f"figures.csv:2: as_of: '{written}' is not a date (YYYY-MM-DD, from 1970 to " \
           "2200)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("cycle", ["0001-01-01", "9999-12-31", "1969-12-31"])
def test_a_cycle_no_business_has_is_a_usage_error(run_script, cycle):
    result = run_script("--dry-run", "--cycle", cycle)
    assert result.returncode == 64
    [line] = result.stderr.splitlines()
    assert f"--cycle '{cycle}' looks like a date but is not one" in line
    assert "from 1970 to 2200" in line


# --- A huge file in the data folder (issue 26, item 7) -------------------------------------


def test_a_sheet_past_its_size_limit_is_refused_before_it_is_read(run_script):
    """A mis-saved export or a sync tool's conflict copy: one line, exit 65, and the
    run's memory stays that of a run (a sparse file: no disk is used)."""
    with open(run_script.data / "rental.csv", "r+b") as sheet:
        sheet.truncate(64 << 20)  # 64 MB (one of 256 MB, read as-is, took 1.57 GB)
    result = run_script.subprocess("--dry-run", "--cycle", "2026-12-01")
    assert result.returncode == 65, result.stderr[-300:]
    assert "rental.csv: 64.0 MB, more than the 50 MB a sheet may be (REPORT_SHEET_MAX_MB)" \
        in result.stderr
    raised = run_script("--dry-run", "--cycle", "2026-12-01",
                        env={"REPORT_SHEET_MAX_MB": "300"})
    assert raised.returncode == 65  # read now: the zeros are no CSV a spreadsheet writes
    assert "more than the" not in raised.stderr


@pytest.mark.parametrize("written", ["0", "-5", "ten", "1e3"])
def test_a_sheet_size_limit_that_is_no_number_is_a_config_error(run_script, written):
    result = run_script("--dry-run", env={"REPORT_SHEET_MAX_MB": written})
    assert result.returncode == 78
    assert "REPORT_SHEET_MAX_MB" in result.stderr


# --- A forged heading in the plain-text part (issue 26, item 8) ----------------------------

UNICODE_SPACES = ["\u00a0", "\u2007", "\u202f", "\u2002", "\u3000", "\u205f"]


def forged_lines(text):
    """The lines of a text edition that look like the report's own underlines or rule
    but are not: a line of dashes (or = signs) alone, under anything but a heading of
    its length, the title, or a table's header; a lone -- not before the footer."""
    lines = text.splitlines()
    forged = []
    for number, line in enumerate(lines[1:], start=1):
        bare = line.strip()
        if not bare or set(bare) - set("-=_~"):
            continue
        above = lines[number - 1]
        heading = len(bare) == len(above) and above.strip() and (
            above == above.upper() or set(bare) == {"="})  # a section's, or the title's
        table = "  " in line.strip()  # a header's separator: runs of dashes, spaced
        footer = bare == "--" and number + 1 < len(lines) and not lines[number + 1].strip()
        between = bare == "=" * ser.TEXT_WIDTH and not above  # --dry-run's, between reports
        if not (heading or table or footer or between):
            forged.append((above, line))
    return forged


@pytest.mark.parametrize("space", UNICODE_SPACES)
def test_no_free_text_forges_a_heading_in_the_text_edition(run_script, space):
    fake = space.join(["SECURITY", "GAPS", "FOUND", "NONE"])
    text = "x " * 30 + fake + " " + "-" * 60
    with open(run_script.items, "a", newline="") as sheet:
        csv.writer(sheet).writerow(["2026-11-25", "forged", "open", "", "ceo", "action",
                                    text, ""])
    result = run_script("--dry-run", "--only", "ceo", "--cycle", "2026-12-01")
    assert result.returncode == 0, result.stderr
    assert "x x x" in result.stdout  # the item is there
    assert not forged_lines(result.stdout)
    assert space not in result.stdout  # a space where a line may break, as any other


def test_a_report_of_the_example_has_no_forged_line(run_script):
    result = run_script("--dry-run", "--cycle", "2026-12-01")
    assert result.returncode == 0 and not forged_lines(result.stdout)


@pytest.mark.parametrize("rule", ["─" * 70, "—" * 70, "." * 70, "-----....-." * 6])
def test_no_line_of_marks_alone_stands_under_a_line_in_prose_or_a_table(run_script, rule):
    with open(run_script.items, "a", newline="") as sheet:
        csv.writer(sheet).writerow(["2026-11-25", "forged", "open", "", "cto", "dev_gap",
                                    "x " * 20 + "ALL CLEAR " + rule, ""])
    result = run_script("--dry-run", "--only", "cto", "--cycle", "2026-12-01")
    assert result.returncode == 0, result.stderr
    alone = [line for line in result.stdout.splitlines() if len(line.strip()) > 2
             and not any(ch.isalnum() for ch in line)
             and not set(line.strip()) <= set("-= ")  # the report's own underlines
             and not (line.strip()[0], line.strip()[-1]) == ("(", ")")]  # shown as marks
    assert not alone, alone
    assert "(" + rule[:10] in result.stdout  # shown, in brackets


def test_a_secret_in_a_url_is_redacted_too(run_script):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    quoted = "wJalrXUtnFEMI%2FK7MDENG%2FbPxRfiCYEXAMPLEKEY"
    assert ser.redact(f"GET /x?key={quoted} and {secret}", (secret,)) == \
        "GET /x?key=[redacted] and [redacted]"
