"""Fixtures: a real SES-compatible server on loopback and a way to run the script."""

import hashlib
import json
import subprocess
import sys
from email.policy import default as default_policy

import pytest

from local_ses import SCRIPT, LocalSES, script_environment

SENDER = "reports@example.com"
RECIPIENT = "owner@example.com"
BCC = "audit@example.com"
FROM_NAME = 'Ünï Reports, "Desk" 📈'

GOOD_SETTINGS = {
    "AWS_SES_REGION": "us-east-1",
    "AWS_SES_FROM_ADDRESS": SENDER,
    "AWS_SES_FROM_NAME": FROM_NAME,
    "AWS_RECIPIENT_EMAIL": RECIPIENT,
    "AWS_BCC_EMAIL": BCC,
}


@pytest.fixture(scope="session")
def ses_server():
    with LocalSES() as server:
        yield server


@pytest.fixture
def ses(ses_server):
    """The local SES server, emptied before each test."""
    ses_server.reset()
    return ses_server


def write_env_file(path, settings):
    """A repos.env with each value double-quoted and escaped as python-dotenv reads it."""
    lines = []
    for name, value in settings.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'{name}="{escaped}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)  # as the README says to
    return path


class ScriptRunner:
    """Runs send_exec_reports.py as a user does, in a child process."""

    def __init__(self, tmp_path, endpoint_url):
        self.tmp_path = tmp_path
        self.endpoint_url = endpoint_url
        self.env_file = tmp_path / "repos.env"
        self.audit_log = tmp_path / "audit.jsonl"
        write_env_file(self.env_file, GOOD_SETTINGS)

    def settings(self, **changes):
        """Rewrite repos.env with these changes; a value of None removes the variable."""
        settings = {**GOOD_SETTINGS, **changes}
        write_env_file(self.env_file, {k: v for k, v in settings.items() if v is not None})

    def __call__(self, *args, env=None, python_flags=(), timeout=120):
        """Run to the end; the CompletedProcess has stdout and stderr as text."""
        return subprocess.run(self._command(args, python_flags), env=self._environment(env),
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args):
        """Start a run in the background, for tests that kill it or overlap it."""
        return subprocess.Popen(self._command(args, ()), env=self._environment(None),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _command(self, args, python_flags):
        return [sys.executable, *python_flags, str(SCRIPT), "--env-file", str(self.env_file),
                "--audit-log", str(self.audit_log), *args]

    def _environment(self, env):
        environment = script_environment(self.endpoint_url, self.tmp_path)
        for name, value in (env or {}).items():  # None removes a variable
            environment.pop(name) if value is None else environment.update({name: value})
        return environment

    def audit_records(self):
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]


@pytest.fixture
def run_script(tmp_path, ses):
    return ScriptRunner(tmp_path, ses.url)


def display_name(source):
    """The From name as a mail client shows it, decoded from the Source header."""
    return default_policy.header_factory("from", source).addresses[0].display_name


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture
def proxy(ses):
    """A fault-injecting HTTP proxy in front of the local SES."""
    from fault_proxy import FaultProxy

    with FaultProxy(ses.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def run_via_proxy(tmp_path, proxy):
    """The script, reaching SES only through the fault proxy."""
    return ScriptRunner(tmp_path, proxy.url)
