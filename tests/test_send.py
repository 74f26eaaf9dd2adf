"""Sending: all eight reports through a real SES API, every outcome in the audit log."""

import html
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

import send_exec_reports as ser
from conftest import BCC, FROM_NAME, RECIPIENT, SENDER, display_name, sha256


def test_every_report_reaches_ses_with_to_bcc_and_from(run_script, ses):
    ses.verify(SENDER)
    result = run_script("--cycle", "2026-11-29")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    messages = ses.messages()
    assert len(messages) == len(ser.REPORTS)
    for spec, message in zip(ser.REPORTS, messages, strict=True):
        assert message["destinations"] == {"ToAddresses": [RECIPIENT], "BccAddresses": [BCC]}
        assert display_name(message["source"]) == FROM_NAME
        assert message["subject"] == f"{spec.title} | cycle 2026-11-29"
        assert html.escape(f"prepared by {FROM_NAME}") in message["body"]  # the HTML part
    assert f"{len(messages)} of {len(messages)} reports sent for cycle 2026-11-29" \
        in result.stdout
    assert str(run_script.audit_log) in result.stdout


def test_the_audit_log_proves_what_was_sent(run_script, ses):
    ses.verify(SENDER)
    result = run_script("--cycle", "2026-11-29")
    assert result.returncode == 0, result.stderr
    records = run_script.audit_records()
    messages = ses.messages()
    assert [r["report"] for r in records] == [s.report_id for s in ser.REPORTS]
    assert [r["message_id"] for r in records] == [m["id"] for m in messages]
    assert len({r["run_id"] for r in records}) == 1
    for record, message in zip(records, messages, strict=True):
        assert record["status"] == "sent" and record["error"] is None
        assert record["cycle"] == "2026-11-29"
        assert record["to"] == [RECIPIENT] and record["bcc"] == [BCC]
        assert record["subject"] == message["subject"]
        assert record["html_sha256"] == sha256(message["body"])  # moto keeps the HTML part
        assert record["variant"] == "a"
        assert record["ts"].endswith("+00:00")
        assert record["message_id"] in result.stdout
    assert stat.S_IMODE(os.stat(run_script.audit_log).st_mode) == 0o600


def test_runs_append_to_the_audit_log(run_script, ses):
    ses.verify(SENDER)
    run_script("--only", "ceo")
    run_script("--only", "cto")
    assert [r["report"] for r in run_script.audit_records()] == ["ceo", "cto"]


def test_an_unverified_sender_is_audited_explained_and_exits_1(run_script, ses):
    result = run_script()
    assert result.returncode == 1
    assert ses.messages() == []
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: ceo not sent: SES said MessageRejected")
    assert "warning: neither reports@example.com nor example.com is a verified" in result.stderr
    assert "verified" in line and "AWS_SES_FROM_ADDRESS" in line
    records = run_script.audit_records()
    assert records[0]["status"] == "failed"
    assert records[0]["error"]["code"] == "MessageRejected"
    assert SENDER in records[0]["error"]["message"]
    # Every other report would hit the same wall: they are skipped, not tried seven times.
    assert [r["status"] for r in records[1:]] == ["skipped"] * (len(ser.REPORTS) - 1)
    assert {r["error"]["code"] for r in records[1:]} == {"NotAttempted"}


def test_only_sends_the_named_reports(run_script, ses):
    ses.verify(SENDER)
    result = run_script("--only", "cfo,rental-3028")
    assert result.returncode == 0, result.stderr
    subjects = [m["subject"] for m in ses.messages()]
    assert len(subjects) == 2
    assert subjects[0].startswith("CFO Report") and subjects[1].startswith("3028 51st St")
    assert [r["report"] for r in run_script.audit_records()] == ["cfo", "rental-3028"]


def test_an_unknown_only_id_sends_nothing(run_script, ses):
    ses.verify(SENDER)
    result = run_script("--only", "ceo,cfoo")
    assert result.returncode == 64
    assert "cfoo" in result.stderr and "dc-portfolio" in result.stderr
    assert ses.messages() == []


class ConnectionCounter:
    """A loopback listener that counts every connection made to it."""

    def __init__(self):
        self.connections = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self):
        self._socket.close()


def test_dry_run_prints_every_report_without_network(run_script, ses):
    counter = ConnectionCounter()
    try:
        result = run_script("--dry-run", env={"AWS_ENDPOINT_URL_SES": counter.url})
    finally:
        counter.close()
    assert result.returncode == 0
    assert counter.connections == 0
    for spec in ser.REPORTS:
        assert spec.title in result.stdout
    assert f"To: {RECIPIENT}" in result.stdout and f"Bcc: {BCC}" in result.stdout
    assert not run_script.audit_log.exists()


def test_dry_run_never_imports_boto3(run_script):
    """A process of its own: what a fresh interpreter imports is the point."""
    result = run_script.subprocess("--dry-run", python_flags=("-X", "importtime"))
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "dotenv" in imported  # the import log works...
    assert not {"boto3", "botocore"} & imported  # ...and boto3 was never loaded


@pytest.mark.parametrize("make_unwritable", ["missing directory", "directory", "read-only"])
def test_an_unwritable_audit_log_means_nothing_is_sent(run_script, ses, make_unwritable):
    ses.verify(SENDER)
    if make_unwritable == "missing directory":
        run_script.audit_log = run_script.tmp_path / "no" / "such" / "audit.jsonl"
    elif make_unwritable == "directory":
        run_script.audit_log.mkdir()
    else:
        run_script.audit_log.write_text("")
        run_script.audit_log.chmod(0o400)
        if os.access(run_script.audit_log, os.W_OK):
            pytest.skip("running as root: a read-only file is still writable")
    result = run_script()
    assert result.returncode == 73
    [line] = result.stderr.splitlines()
    assert "audit log" in line and str(run_script.audit_log) in line
    assert ses.messages() == []


def test_ses_unreachable_exits_75_and_is_audited(run_script, ses):
    closed = ConnectionCounter()
    closed.close()  # nothing listens there any more
    result = run_script(env={"AWS_ENDPOINT_URL_SES": closed.url})
    assert result.returncode == 75
    warning, line = result.stderr.splitlines()
    assert warning.startswith("warning: preflight stopped, SES did not answer")
    assert line.startswith("error: ceo not sent") and "run again later" in line
    records = run_script.audit_records()
    assert records[0]["status"] == "failed"
    assert records[0]["error"]["code"] == "EndpointConnectionError"
    assert [r["status"] for r in records[1:]] == ["skipped"] * (len(ser.REPORTS) - 1)


def test_no_credentials_is_a_config_error(run_script, ses):
    result = run_script(env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    assert result.returncode == 78
    assert "no AWS credentials found" in result.stderr
    assert ses.messages() == []


def test_secrets_never_appear_in_output_or_audit_log(run_script, ses):
    secret = "wJalrXUtnFEMI-very-secret-value"
    env = {"AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": "token-" + secret}
    outputs = [run_script(env=env), run_script("--dry-run", env=env)]  # rejected, preview
    ses.verify(SENDER)
    outputs.append(run_script(env=env))  # sent
    assert [r.returncode for r in outputs] == [1, 0, 0]
    for result in outputs:
        assert secret not in result.stdout + result.stderr
    assert secret not in run_script.audit_log.read_text()


def test_help_documents_every_exit_code(run_script):
    result = run_script("--help")
    assert result.returncode == 0 and result.stderr == ""
    help_text = " ".join(result.stdout.split())
    for code, meaning in ser.EXIT_CODES.values():
        assert f"{code} {meaning}" in help_text


def test_help_and_version_as_a_user_types_them(run_script):
    for option in ("--help", "--version"):
        result = run_script.subprocess(option)
        assert result.returncode == 0 and result.stderr == ""
    assert "exit codes:" in run_script.subprocess("--help").stdout
    assert ser.VERSION in result.stdout


def test_every_exit_code_is_in_the_readme_table():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for code, _ in ser.EXIT_CODES.values():
        assert f"\n| {code} | " in readme, code
