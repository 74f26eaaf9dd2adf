"""Fixtures: a real SES-compatible server on loopback and a way to run the script."""

import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from email.policy import default as default_policy
from typing import NamedTuple

import pytest

import send_exec_reports as ser
from local_ses import EXAMPLE_DATA, EXAMPLE_FIGURES, SCRIPT, LocalSES, script_environment

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


# What every run gets unless a test says otherwise: the date of a cycle is read in
# one stated zone, never the machine's; and the failure notice, which would add a
# message to what SES receives in every failing run, is off (tests/test_alarms.py
# turns it on).
RUN_DEFAULTS = {"REPORT_TIMEZONE": "UTC", "REPORT_ALERT_EMAIL": "none"}


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(scope="session", autouse=True)
def no_real_aws(tmp_path_factory):
    """This process's own environment reaches no AWS account and no instance metadata.

    Runs in this process get their settings from the environment main() is
    given; what botocore still reads from the process (its credential chain,
    where no keys are set, and proxy variables) must find nothing here: not a
    developer's keys, profile, ~/.aws or proxy.
    """
    nowhere = tmp_path_factory.mktemp("no-aws")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            # botocore also reads proxies from here: none, so nothing leaves loopback.
            if name.startswith("AWS_") or name.lower() in PROXY_VARIABLES:
                patch.delenv(name)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_CONFIG_FILE", str(nowhere / "config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere / "credentials"))
        yield


@pytest.fixture(scope="session")
def ses_server():
    with LocalSES() as server:
        yield server


@pytest.fixture
def ses(ses_server):
    """The local SES server, emptied before each test."""
    ses_server.reset()
    return ses_server


def example_data(cycle="2026-11-29", snapshots=None, *, sheets=True):
    """The example data folder as a report of this cycle reads it: its figures (or these
    snapshots) and, unless sheets is False, its items and targets."""
    if snapshots is None:
        snapshots = ser.parse_figures(EXAMPLE_FIGURES.read_text(), "figures.csv")
    items = ser.parse_items((EXAMPLE_DATA / "items.csv").read_text(), "items.csv")
    targets = ser.parse_targets((EXAMPLE_DATA / "targets.csv").read_text(), "targets.csv")
    return ser.cycle_data(cycle, ser.parse_date(cycle), snapshots,
                          items if sheets else (), targets if sheets else {})


def write_env_file(path, settings):
    """A repos.env with each value double-quoted and escaped as python-dotenv reads it."""
    lines = []
    for name, value in settings.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'{name}="{escaped}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)  # as the README says to
    return path


class Result(NamedTuple):
    """What a run left: its exit code and what it printed, as subprocess.run reports them."""

    returncode: int
    stdout: str
    stderr: str


class FakeClock:
    """A clock for main() on which sleeping takes no time: it only moves the clock on."""

    def __init__(self, start=datetime(2026, 11, 29, 7, 0, tzinfo=timezone.utc)):
        self.start = start
        self.elapsed = 0.0
        self.sleeps = []

    def now(self):
        return self.start + timedelta(seconds=self.elapsed)

    def monotonic(self):
        return self.elapsed

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.elapsed += seconds


def shared_models(config, **options):
    """connect_ses, with botocore's service descriptions loaded once for all runs."""
    global MODELS
    if MODELS is None:
        import botocore.loaders

        MODELS = botocore.loaders.create_loader()
    return ser.connect_ses(config, models=MODELS, **options)


MODELS = None  # a cache of files botocore reads, never changed by a run


class ScriptRunner:
    """Runs send_exec_reports as a user does: main([...]) in this process by default.

    The run gets its own environment, streams and, if given, clock; SES is the
    real local server (or the fault proxy in front of it) over loopback.
    `subprocess` and `start` run the script as a child process instead, for the
    tests where a process is the point.
    """

    def __init__(self, tmp_path, endpoint_url, v2_url=None):
        self.tmp_path = tmp_path
        self.endpoint_url = endpoint_url
        self.v2_url = v2_url
        self.env_file = tmp_path / "repos.env"
        self.audit_log = tmp_path / "audit.jsonl"
        self.data = tmp_path / "report_data"  # where the script looks by default
        self.figures = self.data / "figures.csv"
        self.items = self.data / "items.csv"
        self.targets = self.data / "targets.csv"
        write_env_file(self.env_file, GOOD_SETTINGS)
        shutil.copytree(EXAMPLE_DATA, self.data)

    def settings(self, **changes):
        """Rewrite repos.env with these changes; a value of None removes the variable."""
        settings = {**GOOD_SETTINGS, **changes}
        write_env_file(self.env_file, {k: v for k, v in settings.items() if v is not None})

    def __call__(self, *args, env=None, clock=None, ses_factory=None):
        """Run main() to the end with captured streams.

        The SES clients come from the real factory, connect_ses, sharing one
        botocore loader across runs so that SES's model is read once per session.
        """
        stdout, stderr = io.StringIO(), io.StringIO()
        code = ser.main(self.argv(args), environ=self.environment(env), stdout=stdout,
                        stderr=stderr, clock=clock, ses_factory=ses_factory or shared_models)
        return Result(code, stdout.getvalue(), stderr.getvalue())

    def subprocess(self, *args, env=None, python_flags=(), timeout=120):
        """Run the script as a child process; the CompletedProcess has text output."""
        return subprocess.run([sys.executable, *python_flags, str(SCRIPT), *self.argv(args)],
                              env=self.environment(env), capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *args):
        """Start a child process in the background, for tests that kill it or overlap it."""
        return subprocess.Popen([sys.executable, str(SCRIPT), *self.argv(args)],
                                env=self.environment(None), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def argv(self, args):
        """The command line after the script's name."""
        return ["--env-file", str(self.env_file), "--audit-log", str(self.audit_log), *args]

    def environment(self, env):
        environment = script_environment(self.endpoint_url, self.tmp_path, self.v2_url,
                                         **RUN_DEFAULTS)
        if "AWS_ENDPOINT_URL_SES" in (env or {}) and "AWS_ENDPOINT_URL_SESV2" not in env:
            del environment["AWS_ENDPOINT_URL_SESV2"]  # v2 follows v1, as for a user
        for name, value in (env or {}).items():  # None removes a variable
            environment.pop(name) if value is None else environment.update({name: value})
        return environment

    def audit_records(self):
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]


@pytest.fixture
def run_script(tmp_path, ses):
    return ScriptRunner(tmp_path, ses.url, ses.v2_url)


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


# --- A report's sections, found by what they hold ------------------------------------
#
# A test reads a section of a rendered report by the placeholder its template puts
# there (${billing_gaps}), never by its heading's words: the template gives the words,
# so that renaming a heading breaks no test that is not about headings.

REPORT_SPECS = {spec.report_id: spec for spec in ser.REPORTS}
# The one slot the script fills with a section of its own, under a heading in its own
# words: a reader sees it as the section after the template's last.
SCRIPT_HEADED_SLOT = "other_items"


@functools.cache
def other_items_heading():
    """The heading the script gives a report's open items that no section lists: read off
    what it makes of the example folder's items as if the CEO's template listed none."""
    data = example_data()
    states = ser.item_states(data, data.day, data.figures.snapshot)
    first = ser.other_items(states, "ceo", used=set())[0]  # the example has open items
    assert first.kind == "heading", first.kind
    return bare_heading(first.items[0])


def bare_heading(written):
    """A heading as far as its template decides the words: without its [brief] mark, its
    count mark (#) (a number shows there) or what a placeholder in it fills in."""
    words = written.removesuffix(ser.BRIEF_MARK).rstrip().removesuffix(ser.COUNT_MARK)
    return words.split("${")[0].rstrip()


@functools.cache
def report_sections(report_id):
    """(heading, the placeholders under it) of each section of a report, in order."""
    sections = []
    for line in REPORT_SPECS[report_id].template.template.splitlines():
        if line.startswith("## "):
            sections.append((bare_heading(line[3:]), set()))
        elif line.strip() == "${%s}" % SCRIPT_HEADED_SLOT:
            sections.append((other_items_heading(), set()))
        sections[-1][1].update(ser.SLOT_PATTERN.findall(line))
    return tuple((heading, frozenset(slots)) for heading, slots in sections)


def template_headings(report_id, *, edition="html"):
    """The headings a report's template writes, in order, as section() finds them."""
    return [shown_heading(heading, edition) for heading, slots in report_sections(report_id)
            if SCRIPT_HEADED_SLOT not in slots]


def section_number(report_id, slot):
    """Which of a report's sections holds ${slot}: exactly one must."""
    holding = [n for n, (_, slots) in enumerate(report_sections(report_id)) if slot in slots]
    if len(holding) != 1:
        raise LookupError(f"{len(holding)} sections of {report_id} hold ${{{slot}}}")
    return holding[0]


def section_heading(report_id, slot, *, edition="html"):
    """The words of the heading over ${slot}, as the template writes them, or with
    edition="text" as the plain-text edition shows them: in capitals."""
    return shown_heading(report_sections(report_id)[section_number(report_id, slot)][0],
                         edition)


def shown_heading(heading, edition):
    """A heading's words as an edition of a report shows them."""
    if edition not in ("html", "text"):
        raise ValueError(f"edition {edition!r}: html or text")
    return heading.upper() if edition == "text" else heading


def footer_opening():
    """The footer's first words a reader sees, after its rule."""
    first = next(line for line in ser.FOOTER_TEMPLATE.template.splitlines() if line.strip("-"))
    return first.split("${")[0].strip()


def section(rendered, report_id, slot, *, edition="html", through=None):
    """The part of a rendered report from the heading over ${slot} to the next heading it
    shows, or to its footer; with through, to the end of that later slot's section.

    rendered is what a reader sees of the HTML part (test_owner_data's words), or, with
    edition="text", the plain-text edition, whose headings are capitals (its whitespace
    collapsed or not).  A heading the report leaves out (the brief leaves most) is passed
    over.
    """
    headings = [shown_heading(heading, edition) for heading, _ in report_sections(report_id)]
    first = section_number(report_id, slot)
    last = first if through is None else section_number(report_id, through)
    if last < first:
        raise ValueError(f"${{{through}}} comes before ${{{slot}}} in {report_id}")
    start = rendered.index(headings[first])
    for following in [*headings[last + 1:], footer_opening()]:
        end = rendered.find(following, start + len(headings[first]))
        if end >= 0:
            return rendered[start:end]
    raise ValueError(f"no heading or footer after {headings[first]!r} in {report_id}")
