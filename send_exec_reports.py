#!/usr/bin/env python3
"""Send the executive reports through Amazon SES.

Usage:
    python3 send_exec_reports.py                 # send what today's cycle still lacks
    python3 send_exec_reports.py --only ceo,cfo  # send some of them
    python3 send_exec_reports.py --dry-run       # print them, send nothing
    python3 send_exec_reports.py --check         # ask SES if a run would go through
    python3 send_exec_reports.py --preview-dir preview   # .eml and .html files
    python3 send_exec_reports.py --variant b     # the one-screen brief, to list B
    python3 send_exec_reports.py --history       # what the last cycles sent
    python3 send_exec_reports.py --ab            # variant a against b: opens, clicks
    python3 send_exec_reports.py --status        # the last cycle sent; is one overdue?
    python3 send_exec_reports.py --setup-events  # SES's delivery events, to a queue
    python3 send_exec_reports.py --events        # read them into the audit log
    python3 send_exec_reports.py --quiet         # for cron: silent unless a problem
    python3 send_exec_reports.py --list          # the report ids and titles
    python3 send_exec_reports.py --metrics       # the figures file's columns
    python3 send_exec_reports.py --rules         # what puts a line in "Needs attention"
    python3 send_exec_reports.py --deploy-aws    # run hourly in AWS Lambda (docs/aws.md)

Settings come from repos.env beside this script (or --env-file PATH); variables
already set in the environment win over the file.  Every setting is checked
before the first network call.  Each report goes To AWS_RECIPIENT_EMAIL (or
its own REPORT_TO_<ID>) and BCC AWS_BCC_EMAIL, as an HTML message with a
plain-text part, and every outcome is appended to a JSON Lines audit log.
The reports are written from the owner's data folder (report_data/ beside the
settings, or REPORT_DATA_DIR, or --data): CSV sheets of figures, items, targets,
clients, deliveries and the rental's ledger (docs/data.md).

The audit log is also the ledger: a report it shows as sent in this cycle is
skipped, so a re-run after a failure sends exactly what is missing.  One run
at a time holds a lock beside the log; in S3 (AUDIT_LOG_PATH=s3://...), where
this file also runs as a Lambda function (lambda_handler), each report is
claimed by a conditional write instead.  A send SES confirmed is never repeated;
one it had not yet confirmed when the run died may be (SES has no idempotency
key), so delivery is at least once for that single in-flight report.

With REPORT_SCHEDULE (the days a cycle falls due), run it hourly: each cycle is
sent once; a failed run emails a notice to REPORT_ALERT_EMAIL, and
REPORT_HEARTBEAT_URL hears from every run (docs/operations.md).

Exit codes: EXIT_CODES below, which --help prints; docs/operations.md says what
to do about each.

How this file reads: top to bottom, in the order a run meets things, one
banner per section:
    shared policy       exit codes, the failure table, default paths
    errors              the exception family main() turns into exit codes
    files               opening what the run reads: regular files only
    settings            repos.env and the environment, checked into a Config
    the owner's data    the metric catalogue and the figures file
    report markup       the template language both editions come from
    report content      what every report shares (what needs attention, figures,
                        changes, items), then one sub-section a report: its
                        template, its functions, its ReportSpec; then REPORTS
    rendering           the plain-text and HTML editions, the .eml message
    the audit log       its records, the ledger it keeps, the run lock; every
                        reader and writer goes through audit_log_at(path)
    S3                  s3:// locations: the data folder, and the audit log as
                        one object a record, with a claim a report
    SES                 the run's AWS clients, sending, and the preflight
    delivery events     SES's events via SNS to a queue: setting up, reading
    the run             pacing, stop signals, clock, console, one cycle's sends
    the schedule        due cycles, missed ones, the alarms, --status
    command line        the parser, run() and main()
    AWS Lambda          lambda_handler, and --deploy-aws
Where a constant lives: shared policy (read by more than one section) at the
top; a constant that one section (or one report) uses at the head of that
section (or sub-section).
"""

import argparse
import bisect
import contextlib
import csv
import errno
import fcntl
import functools
import hashlib
import html
import io
import json
import math
import os
import queue
import re
import signal
import stat
import string
import sys
import textwrap
import threading
import time
import traceback
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit


# Imported where they are used, because make bench shows it pays (goal 3: a
# --dry-run costs at most twice an import of python-dotenv, and sits within a
# few milliseconds of it): botocore (about 120 ms, only where something is sent
# or checked), python-dotenv (11 ms; --list never reads settings),
# urllib.request (14 ms, the heartbeat), the email package's message classes
# (about 8 ms, the MIME message and odd addresses), zoneinfo, calendar,
# ipaddress and subprocess (2 to 4 ms each, for a setting or a schedule a
# --dry-run seldom has), statistics (4 ms, --ab alone).  Everything else is
# imported here.


###############################################################################
# Shared policy: how a run ends, what a failure means, where things live
# The constants that more than one section reads.  A constant that only one
# section uses sits at the head of that section instead.
###############################################################################

VERSION = "0.1.0"

# How a run can end, the one place exit codes are defined, most pressing
# first: a run that met a rejection and a transient failure exits 1, because a
# person must act before a re-run can help.  --help prints this table.
EXIT_CODES = {
    "interrupted": (130, "interrupted (Ctrl-C); every confirmed send is in the audit log"),
    "terminated": (143, "stopped by SIGTERM (a scheduler's time limit, a shutdown); every "
                        "confirmed send is in the audit log"),
    "hung_up": (129, "stopped by SIGHUP (the terminal closed); every confirmed send is in "
                     "the audit log"),
    "software": (os.EX_SOFTWARE, "a fault in this script (its traceback follows the "
                                 "error line): the failure notice and the heartbeat say so "
                                 "too; run again, and report it with the traceback"),
    "usage": (os.EX_USAGE, "the command line was wrong"),
    "config": (os.EX_CONFIG, "the configuration is invalid, no AWS credentials were found "
                             "or AWS refused them, or TLS to the endpoint cannot be "
                             "verified; nothing more was sent"),
    "data": (os.EX_DATAERR, "a sheet of the owner's data has bad rows, a report's message "
                            "would pass SES's 10 MB, or the figures are stale and "
                            "REPORT_DATA_REQUIRE_FRESH is set; nothing was sent"),
    "cant_create": (os.EX_CANTCREAT, "the audit log, its lock, a preview or a new data "
                                     "folder could not be written, or is not a regular file "
                                     "of yours; nothing unrecorded is sent"),
    "forbidden": (os.EX_NOPERM, "AWS refused these credentials (or the function's role) "
                                "the S3 bucket of the data folder or the audit log, or "
                                "--deploy-aws what it makes; nothing more was sent or made: "
                                "see docs/aws.md's policy"),
    "rejected": (1, "SES rejected or would drop at least one report, or --check found what "
                    "would make it (an unverified sender, a quota too small for the cycle, "
                    "sending paused or shut down by AWS, a recipient on the suppression "
                    "list or one that bounced or complained); stderr says what to fix"),
    "transient": (os.EX_TEMPFAIL, "SES, S3 (or, for --events, the events queue) unreachable, "
                                  "busy or out of quota, or another run holds the lock; "
                                  "safe to run again later"),
    "overdue": (1, "--status: a cycle that fell due is not fully sent REPORT_OVERDUE_HOURS "
                   "after it fell due"),
    "sent": (os.EX_OK, "every selected report was sent, now or earlier in the cycle (or, "
                       "with REPORT_SCHEDULE, none was due)"),
}

# The signals that stop a run (Ctrl-C; a scheduler's time limit, logout or
# shutdown; a closed terminal), with the EXIT_CODES outcome each ends in.
STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated",
                signal.SIGHUP: "hung_up"}


class FailurePolicy(NamedTuple):
    """What one kind of failure means: for the exit code, the run and the reader."""

    # "transient": a later run can succeed unaided; "rejected": a person must act on
    # what SES said; "config": the settings or credentials must be fixed first.
    outcome: str
    stops_run: bool  # every report after it would fail the same way: do not try them
    advice: str  # what the person reading stderr should do


TRANSIENT_ADVICE = "SES could not be reached or was busy; nothing more was sent, run again later"
SENDER_ADVICE = ("check that AWS_SES_FROM_ADDRESS (or its domain) is verified in SES in "
                 "AWS_SES_REGION; in the SES sandbox the recipients must be verified too")
IAM_ADVICE = ("the AWS credentials may not call ses:SendEmail (or ses:SendRawEmail) for this "
              "sender; see the IAM policy in docs/iam.md")

# The failure policy, in two tables: the conditions this script names (an
# answer that shows a used-up quota, no answer at all, what the preflight
# found), then every SES error code it knows.  Every classification reads
# FAILURE_POLICY, the two together (see failure_kind).
CONDITION_POLICY = {
    "DailyQuotaExceeded": FailurePolicy(
        "transient", True, "the 24-hour sending quota is used up; nothing more was sent, "
        "and a run after the quota frees up (a rolling 24 hours) sends the rest"),
    "Unreachable": FailurePolicy("transient", True, TRANSIENT_ADVICE),
    "NotAnSesAnswer": FailurePolicy(
        "transient", True, "the endpoint answered, but not as SES does; check "
        "AWS_ENDPOINT_URL_SES and AWS_ENDPOINT_URL_SESV2, then run again"),
    "ServerError": FailurePolicy("transient", True, TRANSIENT_ADVICE),  # any other 5xx
    "TlsNotVerified": FailurePolicy(
        "config", True, "the endpoint's TLS certificate could not be verified; check "
        "AWS_CA_BUNDLE (a PEM file of CA certificates) and the endpoint: retrying cannot help"),
    "SenderRejected": FailurePolicy("rejected", True, SENDER_ADVICE),  # MessageRejected naming it
    "QuotaTooSmall": FailurePolicy(  # the preflight's: the cycle needs more than a day's quota
        "rejected", True, "ask AWS for a higher sending quota (SES console, Account "
        "dashboard), or send fewer reports (--only) or to fewer recipients"),
    "QuotaInsufficient": FailurePolicy(  # the preflight's: today's quota is used up
        "transient", True, "run again when the 24-hour quota has room"),
    "SendingDisabled": FailurePolicy(  # the preflight's: GetAccount says SendingEnabled false
        "rejected", True, "AWS has paused sending for this account: the SES console's Account "
        "dashboard (and AWS's mail to the account) says why; once fixed, resume sending there "
        "or with aws sesv2 put-account-sending-attributes --sending-enabled"),
    "AccountShutdown": FailurePolicy(  # the preflight's: GetAccount says EnforcementStatus SHUTDOWN
        "rejected", True, "AWS has shut down sending for this account over its bounces or "
        "complaints: see Reputation metrics in the SES console and answer AWS's case in the "
        "AWS Support Center"),
    "RecipientSuppressed": FailurePolicy(  # the preflight's: GetSuppressedDestination found it
        "rejected", False, "fix why that address bounced or complained (a full mailbox, a "
        "typo, a mail-server outage), then take it off the list: aws sesv2 "
        "delete-suppressed-destination --email-address ADDRESS"),
    "StaleData": FailurePolicy(  # REPORT_DATA_REQUIRE_FRESH and the figures are not this cycle's
        "data", True, "add this cycle's row to the figures sheet (figures.csv in the data "
        "folder), then run again"),
    "CredentialsUnusable": FailurePolicy(  # botocore could not get or use the credentials
        "config", True, "the AWS credentials could not be used: log in again (aws sso "
        "login) or check AWS_PROFILE and the keys"),
    "Unknown": FailurePolicy("rejected", False, "fix what SES names, then run again"),
}
SES_CODE_POLICY = {
    "InternalFailure": FailurePolicy("transient", True, TRANSIENT_ADVICE),
    "RequestTimeout": FailurePolicy("transient", True, TRANSIENT_ADVICE),
    "ServiceUnavailable": FailurePolicy("transient", True, TRANSIENT_ADVICE),
    "Throttling": FailurePolicy("transient", True, TRANSIENT_ADVICE),
    "ThrottlingException": FailurePolicy("transient", True, TRANSIENT_ADVICE),
    "TooManyRequestsException": FailurePolicy("transient", True, TRANSIENT_ADVICE),  # v2
    "LimitExceededException": FailurePolicy("transient", True, TRANSIENT_ADVICE),  # v2
    "MessageRejected": FailurePolicy("rejected", False, SENDER_ADVICE),
    "AccessDenied": FailurePolicy("rejected", True, IAM_ADVICE),
    "AccessDeniedException": FailurePolicy("rejected", True, IAM_ADVICE),
    "AccountSendingPausedException": FailurePolicy(
        "rejected", True, "SES has paused sending for this account; check the account's "
        "reputation dashboard in the SES console"),
    "SendingPausedException": FailurePolicy(  # v2's word for it
        "rejected", True, "SES has paused sending for this account; check the account's "
        "reputation dashboard in the SES console"),
    "AccountSuspendedException": FailurePolicy(  # v2: AWS stopped the account's sending
        "rejected", True, "AWS has suspended sending for this account: see the SES console's "
        "Account dashboard and answer AWS's case in the AWS Support Center"),
    "NotFoundException": FailurePolicy(  # v2: a configuration set that does not exist
        "rejected", True, "create what SES names (AWS_SES_CONFIGURATION_SET) or remove it "
        "from repos.env"),
    "BadRequestException": FailurePolicy("rejected", False, "fix what SES names, then run "
                                         "again"),
    "ConfigurationSetDoesNotExist": FailurePolicy(
        "rejected", True, "create the configuration set or remove it from repos.env"),
    "ConfigurationSetSendingPausedException": FailurePolicy(
        "rejected", True, "sending is paused for the configuration set; resume it in the "
        "SES console"),
    "MailFromDomainNotVerifiedException": FailurePolicy(
        "rejected", True, "fix the custom MAIL FROM domain's MX record for the sender identity"),
    "InvalidClientTokenId": FailurePolicy(
        "config", True, "the AWS access key is not valid; check the credentials"),
    "SignatureDoesNotMatch": FailurePolicy(
        "config", True, "the AWS secret key does not match the access key"),
    "ExpiredToken": FailurePolicy(
        "config", True, "the AWS session has expired; log in again (aws sso login)"),
    "UnrecognizedClientException": FailurePolicy(
        "config", True, "the AWS credentials are not valid for SES"),
}
FAILURE_POLICY = {**CONDITION_POLICY, **SES_CODE_POLICY}
# What SES's throttling is called: v1, the SDKs, and v2 (the daily quota, or the rate).
THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException",
                              "LimitExceededException"})
# An answer naming one of the conditions as its code is not taken for it.
FAILURE_CONDITIONS = frozenset(CONDITION_POLICY)


class Refusal(NamedTuple):
    """Why a cycle cannot go out at all, found before its first send."""

    kind: str  # a FAILURE_POLICY key: it decides the exit code and the advice
    why: str  # what was found, for the person reading stderr

# Cron runs from $HOME, so the defaults live beside the script, not in the cwd.
SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_ENV_FILE = SCRIPT_DIR / "repos.env"
DEFAULT_AUDIT_LOG = "exec_reports_audit.jsonl"  # beside the env file
DEFAULT_DATA_DIR = "report_data"  # the owner's data folder, beside the env file
DEFAULT_DATA_FILE = "report_data.csv"  # one figures file, as before the folder

# Variant a is the full report to the usual recipients; b is the one-screen
# brief to its own list, for A/B testing recipients and formatting.
VARIANTS = ("a", "b")

# A line break in a header value would let it start a header of its own.
LINE_BREAKS = frozenset("\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029")
# Bidirectional overrides and isolates reorder what a reader sees ("Trojan Source").
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

TRUE_WORDS, FALSE_WORDS = ("true", "yes", "1"), ("false", "no", "0")  # as written, lowered

TEXT_WIDTH = 72  # what every mail client shows without wrapping


def sha256_hex(text):
    """The sha256 of text's UTF-8 bytes: what the audit log uses to prove a body."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


###############################################################################
# Errors: one family, which main() turns into one line on stderr and an exit code
###############################################################################


class ReportRunError(Exception):
    """A failure a person can fix; main() prints it and exits by its outcome."""

    outcome = "rejected"  # a key of EXIT_CODES


class UsageError(ReportRunError):
    outcome = "usage"


class ProblemsError(ReportRunError):
    """Several problems found at once: each is one line on stderr, then `closing`."""

    label = "error"
    closing = "nothing was sent"

    def __init__(self, problems):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class ConfigError(ProblemsError):
    """The settings are invalid."""

    outcome = "config"
    label = "config error"


class DataError(ProblemsError):
    """The figures file has bad rows."""

    outcome = "data"
    label = "data error"
    closing = "nothing was sent: fix the sheets named above (the data folder: --data or " \
              "REPORT_DATA_DIR)"


class AuditLogError(ReportRunError):
    outcome = "cant_create"


class PreviewError(ReportRunError):
    outcome = "cant_create"


class NewDataError(ReportRunError):
    outcome = "cant_create"


class SetupError(ReportRunError):
    """--setup-events or --test-events could not do what it was asked: AWS said no."""

    outcome = "rejected"


class RunLockedError(ReportRunError):
    """Another run holds the lock: this one must not send."""

    outcome = "transient"


class SendError(ReportRunError):
    """SES did not accept a report: `code` and `message` are SES's own words.

    `kind` is its FAILURE_POLICY key, which decides everything else about it.
    """

    def __init__(self, code, message, kind, *, from_ses=True):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.kind = kind
        self.from_ses = from_ses  # False: no answer from SES at all (network, timeout)

    @property
    def policy(self):
        return FAILURE_POLICY[self.kind]


class RunStopped(BaseException):
    """A stop signal arrived.  BaseException, like KeyboardInterrupt, so that no
    handler for ordinary errors (botocore's, ours) mistakes it for a failed send."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class HelpShown(Exception):
    """--help or --version printed what was asked: the run is done."""


class TemplateError(ValueError):
    """A report template whose markup could be read two ways: a bug in this script."""


###############################################################################
# Files the run reads: regular files only, as UTF-8 text
###############################################################################


def open_regular_file(path, flags=os.O_RDONLY):
    """An fd for path, which must be a regular file: a FIFO would block, a device never end.

    O_NONBLOCK lets a FIFO be opened, and so refused, at once; it changes
    nothing for a regular file.  New files are created readable by their owner only.
    """
    fd = os.open(path, flags | os.O_NONBLOCK, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class UnreadableFile(Exception):
    """A file that exists but cannot be read as text; the message says why."""


class TooLarge(Exception):
    """A file over the size it may have; the message gives its size in MB."""


def read_text_file(path, newline=None, max_bytes=None):
    """A regular file's UTF-8 text (a byte-order mark, which some Windows editors
    write, ignored).  FileNotFoundError passes through; a file over max_bytes is
    TooLarge, before it is read; any other failure is UnreadableFile."""
    try:
        with open(open_regular_file(path), encoding="utf-8-sig", newline=newline) as file:
            size = os.fstat(file.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise TooLarge(f"{size / 2**20:,.1f} MB")
            text = file.read() if max_bytes is None else file.read(max_bytes + 1)
            if max_bytes is not None and len(text) > max_bytes:  # it grew as it was read
                raise TooLarge(f"more than {max_bytes >> 20} MB")
            return text
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableFile(error.strerror) from None
    except UnicodeDecodeError:
        raise UnreadableFile("it is not UTF-8 text") from None


###############################################################################
# Settings: repos.env and the environment, checked before any network call
###############################################################################

REQUIRED_SETTINGS = (
    "AWS_SES_REGION",
    "AWS_SES_FROM_ADDRESS",
    "AWS_SES_FROM_NAME",
    "AWS_RECIPIENT_EMAIL",
    "AWS_BCC_EMAIL",
)
ADDRESS_SETTINGS = ("AWS_SES_FROM_ADDRESS", "AWS_BCC_EMAIL")  # exactly one address
# These, AWS_RECIPIENT_EMAIL_B and every REPORT_TO_<ID>[_B] take a comma-separated list.
ADDRESS_LIST_SETTINGS = ("AWS_RECIPIENT_EMAIL",)
# The AWS services --deploy-aws makes things in (sqs: the schedule's dead letters).
DEPLOY_SERVICES = ("sts", "iam", "lambda", "scheduler", "sqs")
ENDPOINT_SETTINGS = ("AWS_ENDPOINT_URL_SES", "AWS_ENDPOINT_URL_SESV2", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_SNS", "AWS_ENDPOINT_URL_S3",
                     "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_IAM", "AWS_ENDPOINT_URL_LAMBDA",
                     "AWS_ENDPOINT_URL_SCHEDULER", "REPORT_EVENTS_QUEUE_URL")

# Partition, optional gov/iso part, geography, number: us-east-1, us-gov-west-1,
# cn-north-1, eusc-de-east-1.  A shape check, so that no endpoint list is loaded.
AWS_REGION_PATTERN = re.compile(r"[a-z]{2,4}(-(gov|iso[a-z]?))?-[a-z]+-[0-9]{1,2}")
DOMAIN_LABEL_PATTERN = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# RFC 5322's dot-atom addr-spec, the form nearly every address takes.  Matching
# it spares --dry-run the email package's import (bench/ measures the cost); any
# other form is left to email.headerregistry to accept or refuse.
DOT_ATOM_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                              r"@([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)")

CONFIGURATION_SET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
REPORT_ROUTE_PATTERN = re.compile(r"REPORT_TO_([A-Z0-9_]+?)(_B)?")

SES_MAX_RECIPIENTS = 50  # To, CC and BCC together, per message

# botocore's "standard" mode retries throttling, 5xx answers and dropped
# connections with jittered exponential backoff.  Four attempts, with the SES
# section's timeouts, keep a dead endpoint under a minute per report.
# AWS_MAX_ATTEMPTS and AWS_RETRY_MODE, botocore's own settings, win over these.
DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 4
RETRY_MODES = ("standard", "adaptive", "legacy")

DEFAULT_MAX_AGE_DAYS = 35  # older figures than this before the cycle are stale
# A sheet larger than this is no export of the owner's workbook (a mis-saved file, a
# sync tool's conflict copy): refused before it is read, so that the run is not
# killed for memory with no one told.  80,000 figures rows are about 20 MB.
DEFAULT_SHEET_MAX_MB = 50
DEFAULT_OVERDUE_HOURS = 24  # --status: a due cycle not sent this long after is overdue
NO_ALERT = "none"  # REPORT_ALERT_EMAIL=none: no failure notice by email
# REPORT_TRACKING's words, and the SES event types each turns on: an open pixel and
# links redirected through SES's tracking domain (docs/operations.md says what an
# open can and cannot tell).
TRACKING_WORDS = {"opens": "open", "clicks": "click"}
TRACKING_BOTH = "both"  # REPORT_TRACKING=both: opens,clicks

# Redaction's rule: only values at least this long are taken out.  Real
# credentials are long (an access key id is 16 to 128 characters, a secret key
# 40, a session token hundreds); a short test value such as "t" is no secret,
# and taking it out would mangle every word that contains it.
MIN_SECRET_LENGTH = 16

SECRET_FIELDS = ("access_key_id", "secret_access_key", "session_token", "heartbeat_url")


class Config(NamedTuple):
    """The validated settings of one run.  The secrets never show in its repr."""

    region: str
    from_address: str
    from_name: str
    bcc: str
    audit_log_path: Path
    to_by_report: dict  # {report id: To addresses}
    retries: dict  # botocore's retries config
    variant: str = "a"
    configuration_set: str | None = None
    endpoint_url: str | None = None
    endpoint_url_v2: str | None = None  # the SES v2 API's, which the preflight asks
    aws_profile: str | None = None
    ca_bundle: str | None = None  # AWS_CA_BUNDLE: the CA certificates TLS is checked against
    data: "DataSheets | None" = None  # where the owner's sheets are
    data_max_age_days: int = DEFAULT_MAX_AGE_DAYS
    data_require_fresh: bool = False
    sheet_max_bytes: int = DEFAULT_SHEET_MAX_MB << 20  # REPORT_SHEET_MAX_MB
    schedule: tuple = ()  # REPORT_SCHEDULE: the days of the month a cycle falls due
    timezone: object = None  # REPORT_TIMEZONE, a ZoneInfo; None: the machine's own zone
    overdue_hours: int = DEFAULT_OVERDUE_HOURS
    alert_email: str | None = None  # where a failure notice goes (REPORT_ALERT_EMAIL, else
    # the BCC); None: REPORT_ALERT_EMAIL=none, no notice
    heartbeat_url: str | None = None  # REPORT_HEARTBEAT_URL: a secret, never shown
    events_queue_url: str | None = None  # REPORT_EVENTS_QUEUE_URL: SES's events, via SNS
    tracking: frozenset | None = None  # REPORT_TRACKING: SES's event types "open", "click";
    # None where it is not set: --setup-events leaves the destination's as they are
    endpoint_url_sqs: str | None = None  # the queue's and the topic's endpoints, where
    endpoint_url_sns: str | None = None  # a local server stands in for AWS
    endpoint_urls: dict = {}  # --deploy-aws's services (sts, iam, lambda, scheduler, sqs)
    credential_origin: str | None = None  # where explicit keys came from, never the keys
    access_key_id: str | None = None  # the three secrets: never shown, see __repr__
    secret_access_key: str | None = None
    session_token: str | None = None

    def __repr__(self):
        """Every field but the secrets, so that no accidental print shows a key."""
        shown = ", ".join(f"{name}={value!r}" for name, value in self._asdict().items()
                          if name not in SECRET_FIELDS)
        return f"Config({shown})"

    @property
    def sender(self):
        """The From header: the name quoted or RFC 2047-encoded as needed."""
        from email.utils import formataddr

        return formataddr((self.from_name, self.from_address), charset="utf-8")

    @property
    def secrets(self):
        """What redaction takes out: the keys, and the heartbeat URL with its path (a
        dead-man's switch's URL is its password)."""
        return tuple(s for s in (self.access_key_id, self.secret_access_key,
                                 self.session_token, *url_secrets(self.heartbeat_url)) if s)

    def recipients(self, report_id):
        """One report's To and BCC; the BCC is left out where it is a To already."""
        to = self.to_by_report[report_id]
        bcc = () if self.bcc.casefold() in {a.casefold() for a in to} else (self.bcc,)
        return {"to": to, "bcc": bcc}


def load_settings(env_file, environ, *, required=True):
    """The env file's values overlaid by the environment main() was given; env_file
    None: the environment alone (the Lambda function's).

    Values are taken as written: no ${VAR} expansion, which would let a value
    pull a secret from the environment into a header or a body.
    """
    if env_file is None:  # the function's environment alone: python-dotenv not needed
        return spelled_routes(dict(environ))
    from dotenv import dotenv_values

    try:
        text = read_text_file(env_file)
    except FileNotFoundError:
        if not required:
            return dict(environ)
        raise ConfigError([f"settings file {env_file} not found: copy repos.env.example "
                           "to repos.env beside the script and fill it in, or pass "
                           "--env-file"]) from None
    except UnreadableFile as error:
        raise ConfigError([f"cannot read settings file {env_file}: {error}"]) from None
    from_file = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return spelled_routes({**{name: value or "" for name, value in from_file.items()},
                           **environ})


def spelled_routes(settings):
    """The settings with every REPORT_TO_ name spelled as the script spells it, so that
    report_to_cfo, Report_To_Cto and REPORT_TO_RENTAL-3028 (the id as --list prints
    it) are REPORT_TO_CFO, REPORT_TO_CTO and REPORT_TO_RENTAL_3028, never ignored."""
    spelled, given = {}, {}
    for name, value in settings.items():
        upper = name.upper().replace("-", "_")
        key = upper if upper.startswith("REPORT_TO_") else name
        if key in given and given[key] != name:
            raise ConfigError([f"{given[key]} and {name} both name {key}: keep one"])
        spelled[key], given[key] = value, name
    return spelled


def env_file_warnings(env_file, *, ask_git):
    """Warnings about a settings file that others can read or that git tracks.

    Asking git costs a process, a large part of a --dry-run, so only the runs that
    use the credentials (sending and --check) ask it.
    """
    warnings = []
    if os.stat(env_file).st_mode & 0o077:
        warnings.append(f"warning: {env_file} is readable by group or others; "
                        f"fix: chmod 600 {env_file}")
    if ask_git and tracked_by_git(env_file):
        warnings.append(f"warning: {env_file} is tracked by git; its secrets are in the "
                        f"history: fix: git rm --cached {env_file.name}, rotate the keys")
    return warnings


def tracked_by_git(path):
    """True if git tracks the file; False where it does not or there is no git."""
    import subprocess

    try:
        # Pipes, not DEVNULL: run() then waits on the pipes, not by polling with sleeps.
        return subprocess.run(
            ["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent,
            capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False  # no git here: nothing can be tracked


def setting(settings, name):
    """One setting as written, without surrounding spaces; "" where it is not set."""
    return (settings.get(name) or "").strip()


def resolve_path(option, settings, name, default, env_file, s3=None):
    """A file the settings name: its command-line option, else the setting `name`
    (relative to the env file), else the default beside the env file; or an s3://
    location, on the run's S3Connection where one is given."""
    written = option if option is not None else setting(settings, name) or default
    if str(written).startswith("s3://"):
        return S3Location.parse(str(written), s3 or S3Connection(settings), name)
    if option is not None:
        return Path(option).expanduser()
    path = Path(written).expanduser()
    return path if path.is_absolute() else settings_folder(env_file) / path


def settings_folder(env_file):
    """Where relative paths in the settings start: the env file's folder, or, where
    the settings are the environment alone (the function), the working folder."""
    return env_file.resolve().parent if env_file else Path.cwd()


def resolve_data(option, settings, env_file, s3=None):
    """Where the owner's sheets are: --data (a folder, or one .csv: the figures alone),
    else REPORT_DATA_DIR, else REPORT_DATA_PATH (one figures file), else report_data/
    beside the env file; where that folder is not there, report_data.csv beside it,
    the single file that came before the folder."""
    named = option is not None or setting(settings, "REPORT_DATA_DIR")
    if not named and setting(settings, "REPORT_DATA_PATH"):
        return DataSheets.at(resolve_path(None, settings, "REPORT_DATA_PATH",
                                          DEFAULT_DATA_FILE, env_file, s3), named=True)
    folder = resolve_path(option, settings, "REPORT_DATA_DIR", DEFAULT_DATA_DIR, env_file, s3)
    single = settings_folder(env_file) / DEFAULT_DATA_FILE
    if not named and not folder.is_dir() and single.exists():
        return DataSheets(None, single)
    return DataSheets.at(folder, named=bool(named))


def parse_config(settings, audit_log_path, credential_origin=None, variant="a",
                 data=None, environment_names=frozenset()):
    """Turn merged settings into a Config, or raise ConfigError listing every problem."""
    routes = report_routes(settings, variant)
    retries, retry_problems = retry_setting(settings)
    (max_age, require_fresh), freshness_problems = freshness_settings(settings)
    sheet_max_bytes, size_problems = sheet_size_setting(settings)
    (schedule, zone, overdue), schedule_problems = schedule_settings(settings)
    (alert_email, heartbeat_url), alarm_problems = alarm_settings(settings)
    tracking, tracking_problems = tracking_setting(settings)
    problems = [*unreadable_values(settings), *required_problems(settings, environment_names),
                *routing_problems(settings, variant, routes),
                *configuration_set_problems(settings), *endpoint_problems(settings),
                *retry_problems, *freshness_problems, *size_problems, *schedule_problems,
                *alarm_problems, *tracking_problems,
                *credential_problems(settings)]
    problems = problems or recipient_limit_problems(routes, variant)
    if problems:
        raise ConfigError(problems)

    def value(name):
        return setting(settings, name) or None

    return Config(
        region=value("AWS_SES_REGION"),
        from_address=value("AWS_SES_FROM_ADDRESS"),
        from_name=value("AWS_SES_FROM_NAME"),
        bcc=value("AWS_BCC_EMAIL"),
        audit_log_path=audit_log_path,
        variant=variant,
        to_by_report=routes,
        configuration_set=value("AWS_SES_CONFIGURATION_SET"),
        endpoint_url=value("AWS_ENDPOINT_URL_SES") or value("AWS_ENDPOINT_URL"),
        # A local SES server (moto, LocalStack) answers both APIs at one address:
        # without a v2 endpoint of its own, v2 goes where v1 goes, never to AWS alone.
        endpoint_url_v2=(value("AWS_ENDPOINT_URL_SESV2") or value("AWS_ENDPOINT_URL_SES")
                         or value("AWS_ENDPOINT_URL")),
        aws_profile=value("AWS_PROFILE"),
        retries=retries,
        ca_bundle=value("AWS_CA_BUNDLE"),
        data=data,
        data_max_age_days=max_age,
        data_require_fresh=require_fresh,
        sheet_max_bytes=sheet_max_bytes,
        schedule=schedule,
        timezone=zone,
        overdue_hours=overdue,
        alert_email=None if (alert_email or "").lower() == NO_ALERT
        else alert_email or value("AWS_BCC_EMAIL"),
        heartbeat_url=heartbeat_url,
        events_queue_url=value("REPORT_EVENTS_QUEUE_URL"),
        tracking=tracking,
        endpoint_url_sqs=value("AWS_ENDPOINT_URL_SQS") or value("AWS_ENDPOINT_URL"),
        endpoint_url_sns=value("AWS_ENDPOINT_URL_SNS") or value("AWS_ENDPOINT_URL"),
        endpoint_urls={service: value(f"AWS_ENDPOINT_URL_{service.upper()}")
                       or value("AWS_ENDPOINT_URL") for service in DEPLOY_SERVICES},
        credential_origin=credential_origin if value("AWS_ACCESS_KEY_ID") else None,
        access_key_id=value("AWS_ACCESS_KEY_ID"),
        secret_access_key=value("AWS_SECRET_ACCESS_KEY"),
        session_token=value("AWS_SESSION_TOKEN"),
    )


def unreadable_values(settings):
    """A line for each setting of the script's (AWS_*, REPORT_*, AUDIT_LOG_PATH) whose
    value no header, URL or file name can carry: a byte that is not UTF-8 (the
    environment keeps it as a surrogate, which no encoder takes) or a control character
    (a credential written over two lines).  The value itself is never shown."""
    problems = []
    for name, value in sorted(settings.items()):
        if not (name.startswith(("AWS_", "REPORT_")) or name == "AUDIT_LOG_PATH") \
                or name in REQUIRED_SETTINGS:  # checked with the rest of their rules
            continue
        problem = unreadable(value or "")
        if problem:
            problems.append(f"{name} {problem}")
    return problems


def unreadable(value):
    """Why a value no header, URL or file name can carry, or None."""
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        return ("is not UTF-8 text (a byte the environment or repos.env could not "
                "decode): type it again")
    if any(unicodedata.category(ch) == "Cc" for ch in value.strip()):
        return ("contains a line break or control character: write it on one line (the "
                "value is not shown)")
    return None


def required_problems(settings, environment_names=frozenset()):
    """A line for each required setting that is missing or wrong, naming it (and, for
    an empty one, where it came from: the environment wins over repos.env)."""
    problems = []
    for name in REQUIRED_SETTINGS:
        problem = required_setting_problem(name, settings.get(name))
        if problem and name in environment_names and problem.startswith("is empty"):
            problem = (f"is empty in the environment, which wins over repos.env: unset it "
                       f"(unset {name}) or give it a value there")
        if problem:
            problems.append(f"{name} {problem}")
    return problems


def required_setting_problem(name, raw):
    """What is wrong with one required setting's raw value, or None."""
    if raw is None:
        return "is missing; set it in repos.env (see repos.env.example)"
    if any("\ud800" <= ch <= "\udfff" for ch in raw):
        return unreadable(raw)
    if has_line_break(raw):
        return "contains a line break (header injection); use a single line"
    value = raw.strip()
    if not value:
        return "is empty; set it in repos.env (see repos.env.example)"
    if name in ADDRESS_SETTINGS:
        return address_problem(value)
    if name in ADDRESS_LIST_SETTINGS:
        return address_list_problem(value)
    if name == "AWS_SES_REGION" and not AWS_REGION_PATTERN.fullmatch(value):
        return f"{value[:40]!r} is not an AWS region name (for example us-east-1)"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "contains a control character; use plain text"
    if any(ch in BIDI_CONTROLS for ch in value):
        return "contains a right-to-left override or isolate, which can disguise text"
    if name == "AWS_SES_FROM_NAME" and len(value) > MAX_FROM_NAME:
        return (f"is {len(value)} characters: a From name of more than {MAX_FROM_NAME} makes "
                "a header line longer than mail allows; shorten it")
    return None


# A From name longer than this, with no space to fold at, would make the From
# header's line longer than the 998 characters RFC 5322 allows (SES refuses it).
MAX_FROM_NAME = 100


def has_line_break(value):
    """True if value would split a mail header in two."""
    return any(ch in LINE_BREAKS for ch in value)


def address_problem(value):
    """Why value is not one plain email address SES accepts, or None if it is."""
    if has_line_break(value):
        return "contains a line break (header injection)"
    if not value.isascii():
        return "must be ASCII (write an international domain in punycode)"
    plain = DOT_ATOM_ADDRESS.fullmatch(value)
    domain = plain.group(2) if plain else parsed_domain(value)
    if domain is None:
        return f"{value!r} is not one valid email address"
    labels = domain.split(".")
    if len(labels) < 2 or not all(DOMAIN_LABEL_PATTERN.fullmatch(x) for x in labels):
        return f"{value!r} does not have a valid domain"
    local = value[:-len(domain) - 1]
    for part, length, most in (("local part", len(local), 64), ("domain", len(domain), 253),
                               ("address", len(value), 254)):
        if length > most:  # RFC 5321's limits, which SES enforces when it is too late
            return f"{value[:40]!r}... is too long: its {part} has {length} characters, " \
                   f"at most {most}"
    return None


def parsed_domain(value):
    """The domain of an address in a rarer form (a quoted local part), or None."""
    import email.errors
    from email.headerregistry import Address

    try:
        return Address(addr_spec=value).domain
    except (ValueError, IndexError, email.errors.MessageError):
        return None


def address_list_problem(value):
    """Why a comma-separated list is not all valid addresses, or None."""
    entries = [entry.strip() for entry in value.split(",")]
    if not all(entries):
        return "has an empty entry between commas"
    return next(filter(None, map(address_problem, entries)), None)


def split_addresses(value):
    """The distinct addresses of a comma-separated list, in order, each once.

    Addresses that differ only in case reach the same mailbox at every real
    provider, so they count as one; the first spelling is kept.
    """
    distinct = {}
    for entry in value.split(","):
        distinct.setdefault(entry.strip().casefold(), entry.strip())
    return tuple(distinct.values())


def route_setting(report_id, variant):
    """REPORT_TO_<ID>, or REPORT_TO_<ID>_B for variant b: one report's own recipients."""
    name = "REPORT_TO_" + report_id.upper().replace("-", "_")
    return name + "_B" if variant == "b" else name


def fallback_setting(variant):
    """The recipients of every report of a variant that has no REPORT_TO_ of its own."""
    return "AWS_RECIPIENT_EMAIL_B" if variant == "b" else "AWS_RECIPIENT_EMAIL"


def report_routes(settings, variant):
    """{report id: To addresses}: REPORT_TO_<ID>, else the variant's recipient list."""
    routes = {}
    for spec in REPORTS:
        value = (setting(settings, route_setting(spec.report_id, variant))
                 or setting(settings, fallback_setting(variant)))
        routes[spec.report_id] = split_addresses(value) if value else ()
    return routes


def routing_problems(settings, variant, routes):
    """Misnamed or invalid REPORT_TO_ settings, and variant b without its list."""
    problems = []
    known = {spec.report_id for spec in REPORTS}
    for name in sorted(settings):
        match = REPORT_ROUTE_PATTERN.fullmatch(name)
        if match and match.group(1).lower().replace("_", "-") not in known:
            problems.append(f"{name} names no report; the report settings are "
                            f"{', '.join(route_setting(s.report_id, 'a') for s in REPORTS)} "
                            "(and the same with _B)")
    optional = [route_setting(s.report_id, v) for v in VARIANTS for s in REPORTS]
    for name in (*optional, "AWS_RECIPIENT_EMAIL_B"):
        raw = settings.get(name) or ""
        if has_line_break(raw):
            problems.append(f"{name} contains a line break (header injection)")
        elif raw.strip() and address_list_problem(raw.strip()):
            problems.append(f"{name} {address_list_problem(raw.strip())}")
    if variant == "b" and not all(routes.values()):
        problems.append("AWS_RECIPIENT_EMAIL_B is missing: --variant b sends to its own "
                        "list; set it, or REPORT_TO_<ID>_B for every report")
    return problems


def recipient_limit_problems(routes, variant):
    """Reports whose To and BCC together exceed what SES takes in one message."""
    return [f"report {report_id} has {len(to) + 1} recipients (To and BCC); SES takes at "
            f"most {SES_MAX_RECIPIENTS} a message: shorten {route_setting(report_id, variant)}"
            f" or {fallback_setting(variant)}"
            for report_id, to in routes.items() if len(to) + 1 > SES_MAX_RECIPIENTS]


def repeated_recipient_warnings(settings, variant):
    """A warning for each address a recipient setting names twice, or that is the BCC too."""
    bcc = setting(settings, "AWS_BCC_EMAIL")
    warnings = []
    for name in (fallback_setting(variant),
                 *(route_setting(spec.report_id, variant) for spec in REPORTS)):
        entries = [e.strip() for e in setting(settings, name).split(",") if e.strip()]
        seen = set()
        for address in entries:
            if address.casefold() in seen:
                warnings.append(f"warning: {name} names {address} more than once (case aside); "
                                "it is sent one copy")
            seen.add(address.casefold())
        if bcc and bcc.casefold() in seen:
            warnings.append(f"warning: {name} names {bcc}, the BCC (AWS_BCC_EMAIL), too; it "
                            "is sent one copy, as To")
    return warnings


def configuration_set_problems(settings):
    """AWS_SES_CONFIGURATION_SET, if given, must be a name SES takes."""
    name = setting(settings, "AWS_SES_CONFIGURATION_SET")
    if name and not CONFIGURATION_SET_PATTERN.fullmatch(name):
        return [f"AWS_SES_CONFIGURATION_SET {name[:70]!r} is not a configuration set name "
                "(letters, digits, _ and -, up to 64)"]
    return []


def endpoint_problems(settings):
    """Problems with an endpoint override (a local SES server) or AWS_CA_BUNDLE, whose
    file must be there to read."""
    problems = []
    for name in ENDPOINT_SETTINGS:
        value = setting(settings, name)
        problem = value and url_problem(value)
        if problem:
            problems.append(f"{name} {value[:60]!r} {problem}")
    bundle = setting(settings, "AWS_CA_BUNDLE")
    if bundle and not (os.path.isfile(bundle) and os.access(bundle, os.R_OK)):
        problems.append(f"AWS_CA_BUNDLE {bundle[:60]!r} is not a readable file: give the "
                        "path of a PEM file of CA certificates, or leave it unset")
    return problems


def url_problem(value):
    """Why value is not an http(s) URL that botocore can use, or None."""
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        return "is not an http(s) URL"
    try:
        parts = urlsplit(value)
        parts.port  # a bad port or IPv6 address raises only when asked for
    except ValueError as error:
        return f"is not a usable URL ({error})"
    host = parts.hostname or ""
    if not (":" in host or all(DOMAIN_LABEL_PATTERN.fullmatch(x) for x in host.split("."))):
        return f"has no usable host name ({host or 'none'})"
    return None


def retry_setting(settings):
    """(botocore's retries config, problems) from AWS_MAX_ATTEMPTS and AWS_RETRY_MODE,
    botocore's own settings, which win over the defaults."""
    problems = []
    attempts = setting(settings, "AWS_MAX_ATTEMPTS")
    if attempts and not (re.fullmatch(r"[0-9]{1,2}", attempts) and 1 <= int(attempts) <= 20):
        problems.append(f"AWS_MAX_ATTEMPTS {attempts[:20]!r} is not a number of attempts "
                        "from 1 to 20")
    mode = setting(settings, "AWS_RETRY_MODE")
    if mode and mode not in RETRY_MODES:
        problems.append(f"AWS_RETRY_MODE {mode[:20]!r} is not one of {', '.join(RETRY_MODES)}")
    if problems:
        return None, problems
    return {"mode": mode or DEFAULT_RETRY_MODE,
            "total_max_attempts": int(attempts) if attempts else DEFAULT_MAX_ATTEMPTS}, []


def sheet_size_setting(settings):
    """(the most bytes a sheet may have, problems) from REPORT_SHEET_MAX_MB."""
    written = setting(settings, "REPORT_SHEET_MAX_MB")
    if written and not (re.fullmatch(r"[0-9]{1,5}", written) and int(written) >= 1):
        return None, [f"REPORT_SHEET_MAX_MB {written[:20]!r} is not a number of megabytes "
                      "from 1 to 99999"]
    return (int(written) if written else DEFAULT_SHEET_MAX_MB) << 20, []


def freshness_settings(settings):
    """((max age in days, whether stale figures stop the run), problems) from
    REPORT_DATA_MAX_AGE_DAYS and REPORT_DATA_REQUIRE_FRESH."""
    problems = []
    age = setting(settings, "REPORT_DATA_MAX_AGE_DAYS")
    if age and not (re.fullmatch(r"[0-9]{1,4}", age) and int(age) >= 1):
        problems.append(f"REPORT_DATA_MAX_AGE_DAYS {age[:20]!r} is not a number of days "
                        "from 1 to 9999")
    fresh = setting(settings, "REPORT_DATA_REQUIRE_FRESH").lower()
    if fresh and fresh not in TRUE_WORDS + FALSE_WORDS:
        problems.append(f"REPORT_DATA_REQUIRE_FRESH {fresh[:20]!r} is not true or false")
    if problems:
        return (None, None), problems
    return (int(age) if age else DEFAULT_MAX_AGE_DAYS, fresh in TRUE_WORDS), []


def schedule_settings(settings):
    """((due days, time zone, overdue hours), problems) from REPORT_SCHEDULE,
    REPORT_TIMEZONE and REPORT_OVERDUE_HOURS; --status reads them too."""
    problems = []
    written = setting(settings, "REPORT_SCHEDULE")
    days = [day.strip() for day in written.split(",")] if written else []
    if not all(re.fullmatch(r"[0-9]{1,2}", day) and 1 <= int(day) <= 31 for day in days):
        problems.append(f"REPORT_SCHEDULE {written[:40]!r} is not days of the month from 1 "
                        "to 31, separated by commas (for example 1,15)")
    zone, zone_problem = time_zone(setting(settings, "REPORT_TIMEZONE"))
    problems += [zone_problem] if zone_problem else []
    hours = setting(settings, "REPORT_OVERDUE_HOURS")
    if hours and not (re.fullmatch(r"[0-9]{1,4}", hours) and 1 <= int(hours) <= 8784):
        problems.append(f"REPORT_OVERDUE_HOURS {hours[:20]!r} is not a number of hours from "
                        "1 to 8784")
    if problems:
        return (None, None, None), problems
    return (tuple(sorted({int(day) for day in days})), zone,
            int(hours) if hours else DEFAULT_OVERDUE_HOURS), []


def time_zone(name):
    """(ZoneInfo, None) for an IANA zone name, (None, None) for none, else (None, why)."""
    if not name:
        return None, None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name), None
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: a path such as ../x
        return None, (f"REPORT_TIMEZONE {name[:40]!r} is not an IANA time zone (for example "
                      "America/Los_Angeles; the machine's own zone where it is not set)")


def alarm_settings(settings):
    """((alert address, heartbeat URL), problems) from REPORT_ALERT_EMAIL and
    REPORT_HEARTBEAT_URL.  The URL is a secret: no message quotes it."""
    problems = []
    alert = setting(settings, "REPORT_ALERT_EMAIL")
    problem = alert and alert.lower() != NO_ALERT and address_problem(alert)
    if problem:
        problems.append(f"REPORT_ALERT_EMAIL {problem}")
    url = setting(settings, "REPORT_HEARTBEAT_URL")
    problem = url and (heartbeat_url_problem(url))
    if problem:
        problems.append(f"REPORT_HEARTBEAT_URL {problem} (the value is not shown)")
    return (alert or None, url or None), problems


def tracking_setting(settings):
    """(the event types SES is to track, problems) from REPORT_TRACKING: opens, clicks,
    both ("both" or "opens,clicks"), or none ("off" or "none"); None where it is not set
    (or empty): what the event destination tracks is then left as it is."""
    written = setting(settings, "REPORT_TRACKING")
    words = {word.strip().lower() for word in written.split(",") if word.strip()}
    if not words:
        return None, []
    if TRACKING_BOTH in words:
        words = (words - {TRACKING_BOTH}) | TRACKING_WORDS.keys()
    if words <= {"off", "none"}:
        return frozenset(), []
    unknown = sorted(words - TRACKING_WORDS.keys())
    if unknown:
        return frozenset(), [f"REPORT_TRACKING {written[:40]!r} is not opens, clicks or both "
                             "(opens,clicks); leave it empty for no tracking"]
    return frozenset(TRACKING_WORDS[word] for word in words), []


def heartbeat_url_problem(url):
    """Why a heartbeat URL cannot be used, or None: https only, but for a loopback
    address (a local monitor, the tests), so that its secret never crosses a network
    in clear."""
    problem = url_problem(url)
    if problem:
        return problem
    if "@" in urlsplit(url).netloc:
        return ("carries a user name or password: give the check's URL alone (its path "
                "is the secret)")
    if url.lower().startswith("https://") or loopback_host(urlsplit(url).hostname):
        return None
    return "must be an https:// URL (http only to a loopback address)"


def loopback_host(host):
    """True for localhost and a loopback address (127.0.0.0/8, ::1)."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def url_secrets(url):
    """A secret URL and the parts of it that an error message may quote alone: its path
    and each long part of it."""
    if not url:
        return ()
    path = urlsplit(url).path.strip("/")
    return (url, path, *(part for part in path.split("/") if part != path))


def credential_problems(settings):
    """Half-set access keys; the values themselves are never quoted."""
    has_key = bool(setting(settings, "AWS_ACCESS_KEY_ID"))
    has_secret = bool(setting(settings, "AWS_SECRET_ACCESS_KEY"))
    if has_key != has_secret:
        missing = "AWS_SECRET_ACCESS_KEY" if has_key else "AWS_ACCESS_KEY_ID"
        return [f"{missing} is missing: set both access key variables or neither"]
    return []


def redact(text, secrets):
    """text with every secret value replaced, in one pass, for anything printed or logged.

    One pass, longest first, so that no replacement is itself redacted again.  A
    secret is also found as an error message may quote it: escaped (b'...\\n...'),
    or in a URL (%2F for the / an AWS secret key may hold).
    """
    forms = {form for secret in secrets if len(secret) >= MIN_SECRET_LENGTH
             for form in (secret, secret.encode("unicode_escape").decode("ascii"),
                          quote(secret, safe=""))}
    real = sorted(forms, key=len, reverse=True)
    if not real:
        return text
    return re.sub("|".join(map(re.escape, real)), "[redacted]", text)


def load_config(args, environ, console):
    """Settings file plus environment, checked; hygiene warnings on the way."""
    settings = load_settings(args.env_file, environ)
    console.step(f"settings: {args.env_file or 'the environment'}")
    previewing = args.dry_run or args.preview_dir is not None
    for warning in env_file_warnings(args.env_file, ask_git=not previewing) \
            if args.env_file else ():
        console.warn(warning)
    origin = "the environment" if environ.get("AWS_ACCESS_KEY_ID") or not args.env_file \
        else str(args.env_file)
    s3 = S3Connection(settings)  # one S3 client for the data and the log, if in S3
    audit_log_path = resolve_path(args.audit_log, settings, "AUDIT_LOG_PATH",
                                  DEFAULT_AUDIT_LOG, args.env_file, s3)
    config = parse_config(settings, audit_log_path, credential_origin=origin,
                          variant=args.variant,
                          data=resolve_data(args.data, settings, args.env_file, s3),
                          environment_names=frozenset(environ))
    console.secrets = config.secrets  # from here on, nothing printed shows them
    for warning in repeated_recipient_warnings(settings, args.variant):
        console.warn(warning)
    return config


###############################################################################
# The owner's data: the metric catalogue and the figures file
###############################################################################


class Metric(NamedTuple):
    """One measurement of the business: a column of the figures file, or a figure
    computed from the columns (formula)."""

    metric_id: str  # the column's name in the figures file
    label: str  # at most 22 characters: the text edition's tables stay 72 wide
    unit: str  # a key of UNITS
    reports: tuple  # the reports that show it
    target: str | None = None  # the level the business aims for, in the unit
    good: str = "up"  # a key of THRESHOLDS: how a figure meets the target
    formula: object = None  # for a computed figure: snapshot -> figure or None
    counts: str | None = None  # an item kind: the figure is how many are open


# How a figure meets its target, and how the target reads: "at least 6".
THRESHOLDS = {"up": "at least", "down": "at most", "above": "more than"}

# How a figure is written in the figures file, per unit.
UNITS = {
    "count": "a whole number, such as 6",
    "dollars": "dollars, such as 8000, or a range such as 7000-9000",
    "percent": "a percentage from 0 to 100, such as 24",
    "yes_no": "yes or no",
    "months": "a number of months, such as 4.5 (computed, never a column)",
}
REVENUE_METRICS = ("revenue_jada_qos", "revenue_qdn", "revenue_dc")
CASH_FLOW_POSITIVE = Decimal("Infinity")  # the runway of a business that earns its burn


def total_revenue(snapshot):
    """The businesses' revenue a month, once every one of them is measured."""
    parts = [snapshot.figure(metric_id) for metric_id in REVENUE_METRICS]
    if None in parts:
        return None
    return sum(low for low, _ in parts), sum(high for _, high in parts)


def net_cash_flow(snapshot):
    """Revenue minus burn a month: a range where either is one."""
    revenue, burn = total_revenue(snapshot), snapshot.figure("monthly_burn")
    if revenue is None or burn is None:
        return None
    return revenue[0] - burn[1], revenue[1] - burn[0]


def runway(snapshot):
    """Months of cash left = cash / (burn - revenue), from the ranges' worse ends; a
    business whose revenue covers its burn is cash-flow positive."""
    net, cash = net_cash_flow(snapshot), snapshot.figure("cash_on_hand")
    if net is None or cash is None:
        return None
    if net[0] >= 0:
        return CASH_FLOW_POSITIVE, CASH_FLOW_POSITIVE
    months = (max(cash[0], 0) / -net[0]).quantize(Decimal("0.1"))
    return months, months


# Every figure the reports state that measures the business.  Policy and plan
# (the control rules, the OTA sequence) stay text in the templates; a level to
# reach (the break-even in charters a month) is a metric's target here, which
# the templates quote through a placeholder, and targets.csv may set by month.
# METRICS is this catalogue and the metrics a report declares of its own (after
# REPORTS).
CATALOGUE_METRICS = (
    Metric("charters_booked", "Charters booked/month", "count", ("ceo", "cfo"), "6"),
    Metric("revenue_jada_qos", "JADA/QOS revenue/month", "dollars",
           ("ceo", "cfo", "accounting")),
    Metric("revenue_qdn", "QDN revenue/month", "dollars", ("ceo", "accounting")),
    Metric("revenue_dc", "DC billed/month", "dollars", ("ceo", "accounting", "dc-portfolio")),
    Metric("revenue_total", "Revenue/month, total", "dollars", ("ceo", "cfo"),
           formula=total_revenue),
    Metric("monthly_burn", "Monthly burn", "dollars", ("ceo", "cfo"), "9000", "down"),
    Metric("net_cash_flow", "Revenue minus burn", "dollars", ("ceo", "cfo"), "0",
           formula=net_cash_flow),
    Metric("cash_on_hand", "Cash on hand", "dollars", ("cfo",)),
    Metric("runway_months", "Runway", "months", ("ceo", "cfo"), "3", formula=runway),
    Metric("pipeline_value", "Pipeline value", "dollars", ("ceo", "cmo", "cfo"), "0",
           "above"),
    Metric("ota_listings", "OTA listings", "count", ("ceo", "cmo"), "2"),
    Metric("email_list_size", "Email list size", "count", ("cmo",)),
    Metric("email_open_rate", "Email open rate", "percent", ("cmo",)),
    Metric("qdn_enquiries", "QDN enquiries/week", "count", ("cmo",)),
    Metric("qdn_jobs_booked", "QDN jobs booked/week", "count", ("ceo", "cmo"), "1"),
    Metric("dc_active_clients", "DC active clients", "count", ("dc-portfolio",)),
    Metric("rental_occupancy", "Rental occupancy", "percent", ("rental-3028",)),
    Metric("rental_net_income", "Net rent/month", "dollars", ("rental-3028", "accounting")),
    Metric("rent_due", "Rent due/month", "dollars", ("rental-3028",)),
    Metric("property_valuation", "Property valuation", "dollars", ("rental-3028",)),
    Metric("deliveries", "Deliveries/month", "count", ("yacht-delivery",)),
    Metric("delivery_capacity", "Capacity/month", "count", ("yacht-delivery",)),
    Metric("cost_per_delivery", "Cost per delivery", "dollars", ("yacht-delivery",),
           None, "down"),
    # 59 = the baseline's top, $84, less the $25 of savings the CTO report names.
    Metric("aws_monthly_cost", "AWS cost/month", "dollars", ("cto", "cfo"), "59", "down"),
    Metric("open_security_gaps", "Open security gaps", "count", ("ceo", "cto"), "0", "down",
           counts="security_gap"),
    Metric("sites_with_analytics", "Sites with analytics", "count", ("cto", "cmo"), "3"),
    Metric("accounting_system_live", "Accounting system live", "yes_no",
           ("ceo", "accounting"), "yes"),
)


class RuleLevel(NamedTuple):
    """A level an attention rule judges the records by, where no metric's target does:
    targets.csv sets it like a target (its id in the metric column; a month, or no
    month for every month)."""

    unit: str  # a key of UNITS
    default: str
    means: str  # what it is, for --rules


# The attention rules' levels besides the metrics' targets (the runway's, revenue
# minus burn's and each revenue's), and their defaults.
RULE_LEVELS = {
    "delivery_margin": RuleLevel("dollars", "0", "a delivery priced at less than its cost "
                                 "plus this, or a mean margin under it"),
    "rent_late_days": RuleLevel("count", "0", "days after a month's end before its rent, "
                                "short of the rent due, is unpaid"),
    "client_ended_days": RuleLevel("count", "90", "days a client's end stays in the list"),
    "invoice_gap_days": RuleLevel("count", "35", "days an active client may go without an "
                                  "invoice"),
    "renewal_days": RuleLevel("count", "30", "days ahead a renewal needs attention"),
    "overdue_days": RuleLevel("count", "0", "days past its due date before an open item is "
                              "listed"),
}
FIGURES_DATE_COLUMN = "as_of"  # the first column: the snapshot's date, YYYY-MM-DD
FIGURES_NOTE_COLUMN = "note"  # optional free text, shown with the date ("example figures")
TREND_SNAPSHOTS = 6  # how many snapshots a trend shows, newest last
PLAIN_NUMBER = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,6})?")  # a figure: up to 999 trillion
DOLLARS = r"-?[0-9]{1,15}(?:\.[0-9]{1,2})?"  # may be negative: a month's net rent
DOLLAR_FIGURE = re.compile(f"({DOLLARS})(?:-({DOLLARS}))?")  # 8000, or a range 7000-9000


class Item(NamedTuple):
    """Something a report lists until it is done: a shortfall, a gap, an action, a
    milestone, or a statement of the business's state that the owner can change."""

    item_id: str  # stable: the owner names it in items.csv
    kind: str  # a key of ITEM_KINDS: the section that lists it
    reports: tuple  # the reports that list it
    text: str  # what is wrong, or what is to be done, as its section lists it
    todo: str | None = None  # the action that closes it, listed among the actions
    business: str | None = None  # for the shortfalls by business and the stack audit
    due: int | str | None = None  # days after the cycle (a rolling plan), or YYYY-MM-DD
    metric: str | None = None  # metric ids (space-separated) whose targets close it
    once_measured: bool = False  # the metrics close it by being measured, whatever the target
    done_text: str | None = None  # what a report says once it is done
    with_item: str | None = None  # another item whose closing closes this one


# The sections items are listed in.  An owner's item is an action unless its row says.
ITEM_KINDS = {
    "shortfall": "a critical shortfall (CEO)",
    "security_gap": "a security gap (CTO)",
    "ux_gap": "a UX shortfall (CTO)",
    "dev_gap": "a dev cycle gap (CTO)",
    "recognition_gap": "a revenue recognition gap (Accounting)",
    "seo_step": "a step of the QDN local SEO roadmap (CMO)",
    "milestone": "a milestone",
    "state": "a statement of the business's state, true until it is done",
    "action": "an action",
}
ITEM_STATUSES = ("open", "done", "dropped")
ACTION_KINDS = ("action", "seo_step")  # items that are to-dos themselves

# The source document's items, most pressing first.  They are no fact about the
# business: --new-data writes them into a new items.csv as rows to confirm or close,
# and an item stands in a report only where items.csv has a row for it.  A row names
# one by its id and may leave its text, kind and reports to this table; an int due is
# days after the item's first row (its plan keeps its dates from cycle to cycle).
# ITEMS is this table and the items a report declares of its own (after REPORTS).
DOCUMENT_ITEMS = (
    Item("stripe-keys", "security_gap", ("ceo", "cto"), "Hardcoded Stripe keys in the codebase.",
         "Rotate the Stripe keys and move them out of the code.", "All", due=0),
    Item("repos-env-in-git", "security_gap", ("ceo", "cto"),
         "Plaintext repos.env committed to version control.",
         "Remove repos.env from git history; keep it local and chmod 600.", "All", due=0),
    Item("stale-keys", "security_gap", ("cto",), "No key rotation after exposure: keys that "
         "reached the repository are still live.", with_item="stripe-keys"),
    Item("apps-script-auth", "security_gap", ("cto",),
         "Unauthenticated Google Apps Script endpoints.",
         "Put authentication on the Google Apps Script endpoints.", "DC"),
    Item("least-privilege-iam", "security_gap", ("cto",), "Broad AWS credentials used for "
         "sending: no least-privilege IAM policy limiting ses:SendEmail to the verified sender.",
         "Replace broad AWS keys with a least-privilege SES sending policy.", "All"),
    Item("waf", "security_gap", ("cto",), "No Web Application Firewall in front of public "
         "endpoints.", "Put a WAF in front of the public sites.", "All"),
    Item("accounting-system", "shortfall", ("ceo", "accounting"),
         "No accounting system deployed (Accounting Officer report).",
         "Deploy an accounting system.", "Portfolio", due=0, metric="accounting_system_live"),
    Item("email-blast", "action", ("ceo", "cmo"), "Send the email blast to the list "
         "($10K-50K of concert booking potential).", due=7),
    Item("ota-listings", "shortfall", ("ceo", "cmo"), "OTA listings below target: Sailo, then "
         "GetMyBoat, then Viator or GYG.", "List on Sailo first, GetMyBoat second.",
         "JADA / QOS", due=7, metric="ota_listings"),
    Item("pipeline", "shortfall", ("ceo",), "Sales pipeline below target: no charter or event "
         "enquiries in flight.", business="JADA / QOS", metric="pipeline_value"),
    Item("revenue-tracking", "shortfall", ("ceo",), "Revenue tracking gaps: no single view of "
         "revenue by business.", business="Portfolio",
         metric="revenue_jada_qos revenue_qdn revenue_dc", once_measured=True),
    Item("qdn-funnel", "shortfall", ("ceo", "cmo"), "QDN funnel breakage: enquiries do not "
         "reach a booked job.", "Repair the QDN funnel so every enquiry is answered and "
         "tracked.", "QDN", due=14, metric="qdn_jobs_booked"),
    Item("dc-billing-model", "shortfall", ("ceo", "dc-portfolio"), "DC billing model absent: "
         "client work is delivered without a rate card, invoice schedule or contract terms, "
         "so delivered work goes unbilled.", "Set a DC billing model: rate card, invoice "
         "schedule, contract terms.", "DC", due=14,
         done_text="DC has a billing model: rate card, invoice schedule and contract terms."),
    Item("sergio-equity", "shortfall", ("ceo",), "Sergio equity risk: the equity arrangement "
         "is undocumented; mitigate with a written agreement before further investment.",
         "Document the Sergio equity terms in a written agreement.", "Portfolio", due=21),
    Item("carole-handover", "shortfall", ("ceo", "dc-portfolio"), "Carole transition risk: "
         "knowledge held by one person with no handover.", "Document Carole's handover.",
         "Portfolio", due=21),
    Item("kpi-review", "action", ("ceo",), "Review the KPIs against their targets.", due=21),
    Item("analytics", "ux_gap", ("cto", "cmo"), "Zero analytics instrumentation: no traffic "
         "or conversion data.", "Add analytics and UTM attribution to every site and "
         "campaign.", "All", metric="sites_with_analytics"),
    Item("availability-calendar", "ux_gap", ("cto",), "Missing availability calendar: buyers "
         "cannot see open charter dates.", "Ship the availability calendar.", "JADA"),
    Item("pricing-copy", "ux_gap", ("cto",), "Stale pricing tier copy on the booking pages.",
         "Refresh the pricing tier copy.", "JADA"),
    Item("ci-pipeline", "dev_gap", ("cto",), "No CI/CD pipeline: changes reach production by "
         "hand.", "Add a CI pipeline with a staging environment.", "All"),
    Item("staging", "dev_gap", ("cto",), "No staging environment: every change is tested in "
         "production.", business="All", with_item="ci-pipeline"),
    Item("rollback", "dev_gap", ("cto",), "No automated rollback capability.",
         "Add automated rollback.", "All"),
    Item("aws-savings", "action", ("cto",), "Take the ~$25/month of AWS savings (idle "
         "resources, right-sizing).", metric="aws_monthly_cost"),
    Item("charter-recognition", "recognition_gap", ("accounting",), "Charter revenue "
         "(JADA/QOS) is not recognised on the charter date; deposits and balances are not "
         "separated."),
    Item("dc-recognition", "recognition_gap", ("accounting",), "DC client work has no billing "
         "model, so revenue cannot be recognised against delivered work.",
         with_item="dc-billing-model"),
    Item("qdn-payments", "recognition_gap", ("accounting",),
         "QDN jobs are not matched to payments."),
    Item("books-m1", "milestone", ("accounting",), "M1: an accounting system with the chart of "
         "accounts below.", with_item="accounting-system"),
    Item("books-m2", "milestone", ("accounting",), "M2: bank and Stripe feeds connected; every "
         "expense categorised by function.", "Connect bank and Stripe feeds; categorise "
         "every expense by function."),
    Item("books-m3", "milestone", ("accounting",), "M3: a monthly close per business; revenue "
         "recognised on the service date.", "Close the books monthly, per business."),
    Item("books-m4", "milestone", ("accounting",), "M4: a monthly P&L per business against the "
         "charter break-even.", due="2027-03-31"),
    Item("seo-profile", "seo_step", ("cmo",), "Claim and complete the business profile for "
         "local search.", business="QDN"),
    Item("seo-pages", "seo_step", ("cmo",), "One service page per area served, each with a "
         "working quote form.", business="QDN"),
    Item("cmo-day-30", "milestone", ("cmo",), "Day 30: email blast sent; Sailo listing live; "
         "analytics on every site.", due=30),
    Item("cmo-day-60", "milestone", ("cmo",), "Day 60: GetMyBoat live; QDN service pages and "
         "profile complete.", due=60),
    Item("cmo-day-90", "milestone", ("cmo",), "Day 90: Viator/GYG live once COI is hardened; "
         "first channel ROI review.", due=90),
    Item("capital-tiers", "action", ("cfo",), "Hold every spend to the capital tiers: "
         "zero-cost initiatives first."),
    Item("control-rules", "action", ("cfo",), "Enforce the three control rules from this "
         "cycle on."),
    Item("break-even", "action", ("cfo",), "Reach the break-even in charters a month.",
         metric="charters_booked"),
    Item("rental-valuation", "state", ("rental-3028",), "No current valuation is on file.",
         "Obtain a current valuation of the property.", metric="property_valuation",
         once_measured=True, done_text="A current valuation is on file."),
    Item("rental-rent-ledger", "state", ("rental-3028",), "Rent is not recorded in a ledger.",
         "Record every rent payment under Revenue - Rent.",
         done_text="Rent is recorded in the ledger, under Revenue - Rent."),
    Item("rental-occupancy", "action", ("rental-3028",), "Track occupancy monthly.",
         metric="rental_occupancy", once_measured=True),
    Item("yacht-costs", "state", ("yacht-delivery",), "Delivery costs are not recorded per "
         "delivery.", "Record crew, fuel, dockage, travel and insurance per delivery.",
         metric="cost_per_delivery", once_measured=True,
         done_text="Delivery costs are recorded per delivery."),
    Item("yacht-shared-calendar", "state", ("yacht-delivery",), "Deliveries and JADA charters "
         "do not share a calendar.", "Share one calendar with JADA charters.",
         done_text="Deliveries and JADA charters share one calendar."),
    Item("yacht-service-model", "state", ("yacht-delivery",), "Deliveries are taken one at a "
         "time, quoted by hand and crewed ad hoc.", "Write down the delivery service model: "
         "quoting, crewing and scheduling.",
         done_text="The delivery service model (quoting, crewing, scheduling) is written down."),
    Item("dc-client-list", "state", ("dc-portfolio",), "No client list with start dates, terms "
         "and renewal dates is kept.", "List every client with start date, term and renewal "
         "date in clients.csv.",
         done_text="Every client is listed with start date, term and renewal date."),
)
ITEM_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")

# The sheets of the owner's data folder are SHEETS, one row each, below their parsers.
CLIENT_STATUSES = ("active", "paused", "ended")
DELIVERY_COSTS = ("fuel", "crew", "travel", "other")  # deliveries.csv's cost columns
RENTAL_KINDS = ("rent", "expense")
MAX_ITEM_TEXT = 300  # characters of an owner's item text, so a table row stays a row


class Snapshot(NamedTuple):
    """One row of the figures file: what was measured as of a date."""

    as_of: date
    line: int  # in the figures file, for messages
    figures: dict  # {metric id: (low, high) Decimals}; a metric not measured is absent
    note: str
    counted: dict = {}  # {metric id: figure} counted from the items or given by the records
    given: frozenset = frozenset()  # the metric ids the domain records gave

    @property
    def from_records_alone(self):
        """True for the cycle's snapshot where the figures sheet has no row for it and
        the domain records give what they can."""
        return self.line == 0

    def figure(self, metric_id):
        """A column's figure, or what the items or records give in its place."""
        return self.counted.get(metric_id, self.figures.get(metric_id))

    @property
    def sha256(self):
        """The snapshot's content, however the spreadsheet wrote it ($8,000 or 8000):
        what the audit log records, and how a repeated snapshot is recognised."""
        return sha256_hex(json.dumps({"as_of": str(self.as_of), "note": self.note, **{
            metric: [str(low), str(high)] for metric, (low, high) in self.figures.items()}},
            sort_keys=True))


class CycleFigures(NamedTuple):
    """The snapshots a cycle's reports are written from."""

    snapshot: Snapshot | None  # the newest dated on or before the cycle; None: no figures
    previous: Snapshot | None  # the one before it: "last time"
    history: tuple  # up to TREND_SNAPSHOTS snapshots, oldest first, ending with snapshot
    all: tuple = ()  # every snapshot dated on or before the cycle, oldest first

    @property
    def row(self):
        """The cycle's snapshot where it is a row of the figures sheet, else None."""
        return None if self.snapshot is None or self.snapshot.from_records_alone \
            else self.snapshot


NO_FIGURES = CycleFigures(None, None, ())


def parse_figures(text, name):
    """The snapshots of a figures file, oldest first; DataError lists every problem,
    one a line, as FILE:LINE: column: problem."""
    header, body = sheet_rows(text, name)
    problems = header_problems(header, name)
    if problems:  # the rows cannot be read against a wrong first line
        raise DataError(problems)
    snapshots = []
    for line, row in body:
        snapshot, row_problems = parse_snapshot(header, row, line, name)
        if snapshot and snapshots and snapshot.as_of <= snapshots[-1].as_of:
            row_problems.append(f"{name}:{line}: {FIGURES_DATE_COLUMN}: "
                                f"{snapshot.as_of} is not after {snapshots[-1].as_of} "
                                f"(line {snapshots[-1].line}): one row a date, oldest first")
        problems += row_problems
        if snapshot and not row_problems:
            snapshots.append(snapshot)
    if problems:
        raise DataError(problems)
    return snapshots


def header_problems(header, name):
    """What is wrong with the figures file's first line, one problem a column."""
    if not header:
        return [f"{name}:1: the file is empty: its first line names the columns "
                "(--metrics --csv-header prints it)"]
    problems = [] if header[0] == FIGURES_DATE_COLUMN else [
        f"{name}:1: {header[0] or '(empty)'}: the first column must be {FIGURES_DATE_COLUMN}"]
    known = {*(metric.metric_id for metric in MEASURED_METRICS), FIGURES_NOTE_COLUMN}
    for position, column in enumerate(header[1:], start=1):
        if column in METRICS_BY_ID and column not in known:
            problems.append(f"{name}:1: {column}: is computed, never a column: leave it "
                            "out")
        elif column not in known:
            problems.append(f"{name}:1: {column or '(empty)'}: no such metric; --metrics "
                            "lists them")
        elif column in header[:position]:
            problems.append(f"{name}:1: {column}: named twice")
    return problems


def parse_snapshot(header, row, line, name):
    """(Snapshot or None, problems) for one row of the figures file."""
    cells, problems = row_cells(header, row, line, name)
    note = cells.get(FIGURES_NOTE_COLUMN, "")
    problem = text_problem(note) or (len(note) > MAX_ITEM_TEXT
                                     and f"is longer than {MAX_ITEM_TEXT} characters")
    if problem:
        problems.append(f"{name}:{line}: {FIGURES_NOTE_COLUMN}: {problem}")
    as_of = parse_date(cells.get(FIGURES_DATE_COLUMN, ""))
    if as_of is None:
        problems.append(f"{name}:{line}: {FIGURES_DATE_COLUMN}: "
                        f"{cells.get(FIGURES_DATE_COLUMN, '')[:20]!r} is not "
                        f"{DATE_TEXT}")
    figures = {}
    for metric in MEASURED_METRICS:
        cell = cells.get(metric.metric_id, "")
        if cell:
            try:
                figures[metric.metric_id] = parse_figure(cell, metric.unit)
            except ValueError:
                problems.append(f"{name}:{line}: {metric.metric_id}: {cell[:20]!r} is not "
                                f"{UNITS[metric.unit]}")
    if as_of is None:
        return None, problems
    return Snapshot(as_of, line, figures, note), problems


# The dates a business's sheets can hold.  0001-01-01 is what Go's zero time and
# .NET's DateTime.MinValue export for an empty date, and a year past 9998 has no year
# after it: neither is a day of the business, and both would overflow the arithmetic.
FIRST_YEAR, LAST_YEAR = 1970, 2200
DATE_TEXT = f"a date (YYYY-MM-DD, from {FIRST_YEAR} to {LAST_YEAR})"


@functools.lru_cache(maxsize=1 << 16)  # a sheet's dates repeat: each is read once
def parse_date(text):
    """The date of a YYYY-MM-DD text from FIRST_YEAR to LAST_YEAR, or None."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text) or \
            not FIRST_YEAR <= int(text[:4]) <= LAST_YEAR:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)  # one object for each value a sheet repeats: memory
def parse_figure(text, unit):
    """(low, high) Decimals for one cell in its unit, or ValueError.

    Spreadsheets export "$8,000" and "24%": the signs are allowed, each in its own
    unit only ("20%" is no amount of dollars), and a comma only between groups of
    three digits ("7600,50" is no figure).  Dollars may be a range, as the source
    document gives the burn ($7-9K a month).
    """
    if ("$" in text and unit != "dollars") or ("%" in text and unit != "percent") or any(
            not re.fullmatch(r"[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?", number)
            for number in re.findall(r"[0-9.,]*,[0-9.,]*", text)):
        raise ValueError(text)
    plain = text.replace(",", "").replace("$", "").removesuffix("%").strip().lower()
    if unit == "yes_no":
        if plain in TRUE_WORDS + FALSE_WORDS:  # a spreadsheet writes TRUE and FALSE
            value = Decimal(plain in TRUE_WORDS)
            return value, value
        raise ValueError(text)
    # Plain digits only: Decimal would also take 1e999999999, which no business
    # figure is and which would take minutes to write out.  Dollars may be
    # negative (a month's net rent) and a range (7000-9000, or -500-1000).
    shape = DOLLAR_FIGURE if unit == "dollars" else PLAIN_NUMBER
    match = shape.fullmatch(plain)
    if not match:
        raise ValueError(text)
    low = Decimal(match.group(1) if unit == "dollars" else plain) + 0  # + 0: no "-0"
    high = Decimal(match.group(2)) + 0 if unit == "dollars" and match.group(2) else low
    if low > high:
        raise ValueError(text)
    if unit == "count" and low != low.to_integral_value():
        raise ValueError(text)
    if unit == "percent" and high > 100:
        raise ValueError(text)
    return low, high


def cycle_figures(snapshots, cycle):
    """The snapshot a cycle uses (the newest dated on or before the cycle's date, or
    the newest for a cycle that is not a date), the one before it, and the trend."""
    day = parse_date(cycle)
    eligible = [s for s in snapshots if day is None or s.as_of <= day]
    if not eligible:
        return NO_FIGURES
    return CycleFigures(eligible[-1], eligible[-2] if len(eligible) > 1 else None,
                        tuple(eligible[-TREND_SNAPSHOTS:]), tuple(eligible))


class ItemRow(NamedTuple):
    """One row of items.csv: an item's status as of a date, and for an item of the
    owner's own, what it is."""

    as_of: date
    line: int
    item_id: str
    status: str
    note: str
    reports: tuple  # empty: as before (the catalogue's, or the owner's first row's)
    kind: str
    text: str
    due: date | None


def parse_items(text, name):
    """The rows of items.csv; DataError lists every problem as FILE:LINE: column: problem."""
    header, body = sheet_rows(text, name)
    sheet = SHEETS["items.csv"]
    problems = columns_problems(header, name, sheet.columns[0], sheet.columns, sheet.required)
    if problems:
        raise DataError(problems)
    rows = []
    for line, cells in body:
        row, row_problems = parse_item_row(header, cells, line, name)
        problems += row_problems
        if not row_problems:
            rows.append(row)
    rows.sort(key=lambda row: (row.as_of, row.line))
    seen = set(ITEMS_BY_ID)
    for row in rows:  # an item of the owner's own is defined by its first row, by date
        if row.item_id not in seen and not row.text:
            problems.append(f"{name}:{row.line}: id: {row.item_id!r} is none of the source "
                            "document's items (--items lists them); an item of your own "
                            "needs its text on its first row, the earliest by as_of")
        seen.add(row.item_id)
    if problems:
        raise DataError(problems)
    return rows


def parse_item_row(header, cells, line, name):
    """(ItemRow or None, problems) for one row of items.csv."""
    cells, problems = row_cells(header, cells, line, name)
    where = f"{name}:{line}"
    as_of = parse_date(cells.get("as_of", ""))
    if as_of is None:
        problems.append(f"{where}: as_of: {cells.get('as_of', '')[:20]!r} is not "
                        f"{DATE_TEXT}")
    item_id = cells.get("id", "").lower()
    if not ITEM_ID_PATTERN.fullmatch(item_id):
        problems.append(f"{where}: id: {cells.get('id', '')[:40]!r} is not an item id "
                        "(letters, digits, - and _, up to 40)")
    status = cells.get("status", "").lower()
    if status not in ITEM_STATUSES:
        problems.append(f"{where}: status: {cells.get('status', '')[:20]!r} is not one of "
                        f"{', '.join(ITEM_STATUSES)}")
    reports = tuple(part.lower() for part in re.split(r"[\s,;]+", cells.get("reports", ""))
                    if part)
    unknown = [report for report in reports if report not in REPORT_IDS]
    if unknown:
        problems.append(f"{where}: reports: {', '.join(unknown)[:60]} names no report; the "
                        f"reports are {', '.join(REPORT_IDS)}")
    kind = cells.get("kind", "").lower()
    if kind and kind not in ITEM_KINDS:
        problems.append(f"{where}: kind: {kind[:20]!r} is not one of {', '.join(ITEM_KINDS)}")
    text, note = cells.get("text", ""), cells.get("note", "")
    for column, value in (("text", text), ("note", note)):
        problem = text_problem(value) or (len(value) > MAX_ITEM_TEXT and
                                          f"is longer than {MAX_ITEM_TEXT} characters")
        if problem:
            problems.append(f"{where}: {column}: {problem}")
    due = parse_date(cells.get("due", "")) if cells.get("due") else None
    if cells.get("due") and due is None:
        problems.append(f"{where}: due: {cells['due'][:20]!r} is not {DATE_TEXT}")
    if problems:
        return None, problems
    return ItemRow(as_of, line, item_id, status, note, reports, kind, text, due), []


def parse_targets(text, name):
    """{metric id: {"YYYY-MM": target}} from targets.csv; DataError lists every problem."""
    header, body = sheet_rows(text, name)
    sheet = SHEETS["targets.csv"]
    problems = columns_problems(header, name, sheet.columns[0], sheet.columns, sheet.required)
    if problems:
        raise DataError(problems)
    targets, lines = {}, {}
    for line, cells in body:
        cells, row_problems = row_cells(header, cells, line, name)
        where = f"{name}:{line}"
        named = cells.get("metric", "")
        metric = METRICS_BY_ID.get(named) or (named in RULE_LEVELS and Metric(
            named, named, RULE_LEVELS[named].unit, ()))  # a level reads as a target does
        if not metric:
            row_problems.append(f"{where}: metric: {named[:30]!r} is no metric or rule "
                                "level; --metrics and --rules list them")
        month = cells.get("month", "")  # empty: every month without a row of its own
        if month and not (re.fullmatch(r"[0-9]{4}-[0-9]{2}", month)
                          and parse_date(month + "-01")):
            row_problems.append(f"{where}: month: {month[:20]!r} is not a month (YYYY-MM, "
                                f"from {FIRST_YEAR} to {LAST_YEAR}), nor empty for every "
                                "month")
        value = None
        if metric and metric.unit == "yes_no":
            row_problems.append(f"{where}: metric: {metric.metric_id} is yes or no: its "
                                "target is the catalogue's, never a month's")
        elif metric:
            try:
                low, high = parse_figure(cells.get("target", ""), metric.unit)
                value = low if low == high else None
            except ValueError:
                pass
            if value is None:
                row_problems.append(f"{where}: target: {cells.get('target', '')[:20]!r} is "
                                    f"not one value in {metric.metric_id}'s unit: "
                                    f"{UNITS[metric.unit]}")
        key = (metric and metric.metric_id, month)
        if not row_problems and key in lines:
            row_problems.append(f"{where}: month: {metric.metric_id} has a target for "
                                f"{month or 'every month'} already, on line {lines[key]}")
        problems += row_problems
        if not row_problems:
            lines[key] = line
            targets.setdefault(metric.metric_id, {})[month] = value
    if problems:
        raise DataError(problems)
    return targets


class CycleData(NamedTuple):
    """What the owner's sheets say for one cycle: everything a report is written from."""

    day: date | None  # the cycle's date: items and targets are read as of it
    figures: "CycleFigures"
    item_rows: tuple = ()  # items.csv's rows, oldest first
    targets: dict = {}  # targets.csv: {metric id: {"YYYY-MM": target}}
    sheets: dict = {}  # {sheet file name: sha256 of what was read}, for the audit log
    items: dict = {}  # {item id: ItemState} as of the cycle's day
    items_before: dict | None = None  # as of the previous snapshot's date: "last time"
    clients: tuple | None = None  # the domain records; None where there is no sheet
    deliveries: tuple | None = None  # dated on or before the cycle's day
    rental: tuple | None = None  # dated on or before the cycle's day
    attention: tuple | None = None  # what every attention rule found: found once a cycle

    def records(self, sheet, day=None):
        """A record sheet's rows for the cycle (dated rows up to day, where given); None
        where there is no such sheet."""
        rows = getattr(self, SHEETS[sheet].record)
        if rows is None or day is None or not SHEETS[sheet].dated:
            return rows
        return tuple(row for row in rows if row.day <= day)


class DataSheets(NamedTuple):
    """Where the owner's sheets are: a folder of them, or one figures file alone."""

    folder: Path | None
    figures: Path
    named: bool = False  # by --data or a setting: a typo there must not pass for no data

    @classmethod
    def at(cls, path, named=False):
        """A folder, or a path to one .csv file: the figures sheet alone, as it always was.
        In S3, where a HEAD of a folder's name may be refused, its name alone decides."""
        if isinstance(path, S3Location):
            folder = path.at(path.folder)
            return cls(None, path, named) if path.suffix.lower() == ".csv" else \
                cls(folder, folder / "figures.csv", named)
        if path.is_file() or (path.suffix.lower() == ".csv" and not path.is_dir()):
            return cls(None, path, named)
        return cls(path, path / "figures.csv", named)

    def path(self, sheet):
        return self.figures if sheet == "figures.csv" else (
            self.folder / sheet if self.folder else None)

    @property
    def where(self):
        return self.folder or self.figures


def sheet_rows(text, name):
    """(header, the (line, cells) of each row) of a sheet as a spreadsheet exports it:
    the header is the first line that is not blank, trailing empty columns dropped;
    blank rows are skipped; a row's line is where it starts (a quoted cell may span
    lines).  The rows are read as they are asked for, so a long sheet is never held
    twice.  A file that is not CSV raises DataError."""
    reader = csv.reader(io.StringIO(text), strict=True)  # a stray quote is an error
    rows = iter(lambda: next(reader, None), None)
    with not_csv(name, reader):
        header = next((row for row in rows if any(c.strip() for c in row)), [])
    header = [column.strip().lower() for column in header]  # "As_Of " is as_of
    while header and not header[-1]:  # a spreadsheet's trailing comma
        header.pop()
    if len(header) == 1 and ";" in header[0]:
        raise DataError([f"{name}:1: the columns are separated by semicolons: export the "
                         "sheet as comma-separated CSV"])

    def body():
        line = reader.line_num
        with not_csv(name, reader):
            for row in rows:
                start, line = line + 1, reader.line_num
                if any(cell.strip() for cell in row):
                    yield start, row

    return header, body()


@contextlib.contextmanager
def not_csv(name, reader):
    """A csv.Error, as the DataError that says where."""
    try:
        yield
    except csv.Error as error:
        raise DataError([f"{name}:{reader.line_num}: not CSV as a spreadsheet writes it "
                         f"({error})"]) from None



def row_cells(header, row, line, name):
    """({column: stripped cell}, problems) for one row: more cells than columns is one."""
    problems = []
    if any(cell.strip() for cell in row[len(header):]):
        problems.append(f"{name}:{line}: ({len(row)} cells): more cells than the "
                        f"{len(header)} columns the first line names")
    return dict(zip(header, map(str.strip, row))), problems


def columns_problems(header, name, first, known, required=(), others_allowed=False):
    """What is wrong with a sheet's first line: its first column, unknown (unless
    others are allowed) or repeated columns, and the columns it must have."""
    if not header:
        return [f"{name}:1: the file is empty: its first line names the columns "
                "(--new-data writes it)"]
    problems = [] if first is None or header[0] == first else [
        f"{name}:1: {header[0] or '(empty)'}: the first column must be {first}"]
    for position, column in enumerate(header[1:], start=1):
        if column not in known and not (others_allowed and column):
            problems.append(f"{name}:1: {column or '(empty)'}: no such column; the columns "
                            f"are {', '.join(known)}")
        elif column in header[:position]:
            problems.append(f"{name}:1: {column}: named twice")
    problems += [f"{name}:1: {column}: missing; the first line must name it"
                 for column in required if column not in header]
    return problems


def text_problem(text):
    """Why free text from a sheet cannot go into a report, or None.  A line break would
    start a line of its own (a forged heading in the text edition); format characters
    (zero-width, soft hyphen, direction marks) hide or reorder what a reader sees."""
    if text.isprintable():  # the common cell: no break, control or format character
        return None
    if any(ch in LINE_BREAKS for ch in text):
        return "has a line break (Alt+Enter in a spreadsheet cell): keep it on one line"
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        return "has a control or invisible formatting character"
    return None


class RowReader:
    """One row of a record sheet, read cell by cell: each cell that is wrong adds one
    FILE:LINE: column: problem to the sheet's problems."""

    def __init__(self, header, cells, line, name, problems):
        self.cells, row_problems = row_cells(header, cells, line, name)
        self.where = f"{name}:{line}"
        self.line = line
        self.problems = problems
        self.problems += row_problems

    def problem(self, column, what):
        self.problems.append(f"{self.where}: {column}: {what}")

    def text(self, column, required=False):
        value = self.cells.get(column, "")
        if required and not value:
            self.problem(column, "is empty")
        elif text_problem(value) or len(value) > MAX_ITEM_TEXT:
            self.problem(column, text_problem(value)
                         or f"is longer than {MAX_ITEM_TEXT} characters")
        return value

    def choice(self, column, choices):
        value = self.cells.get(column, "").lower()
        if value not in choices:
            self.problem(column, f"{self.cells.get(column, '')[:20]!r} is not one of "
                                 f"{', '.join(choices)}")
        return value

    def date(self, column, required=False):
        cell = self.cells.get(column, "")
        value = parse_date(cell)
        if value is None and (cell or required):
            self.problem(column, f"{cell[:20]!r} is not {DATE_TEXT}")
        return value

    def amount(self, column, unit="dollars", required=False):
        """An amount of 0 or more in its unit; None where the cell is empty."""
        cell = self.cells.get(column, "")
        if not cell:
            if required:
                self.problem(column, "is empty")
            return None
        try:
            low, high = parse_figure(cell, unit)
        except ValueError:
            low = high = None
        if low is None or low != high or low < 0:
            self.problem(column, f"{cell[:20]!r} is not {AMOUNTS[unit]}")
            return None
        return low


# What an amount in a record sheet is written as.
AMOUNTS = {"dollars": "an amount of dollars, 0 or more, such as 1250.50",
           "number": "a number, 0 or more, such as 412.5",
           "count": "a whole number, 0 or more, such as 3"}


def record_rows(text, name, sheet):
    """(header, body) of a record sheet, its first line checked: its columns come in
    any order, and the owner may add columns of their own, which are read past."""
    header, body = sheet_rows(text, name)
    problems = columns_problems(header, name, None, SHEETS[sheet].columns,
                                SHEETS[sheet].required, others_allowed=True)
    if problems:
        raise DataError(problems)
    return header, body


class Client(NamedTuple):
    """One row of clients.csv: a DangerousCentaur client."""

    name: str
    tier: str
    monthly_value: Decimal | None
    billing_model: str
    contract_start: date | None
    renewal_date: date | None
    last_invoiced: date | None
    status: str  # a key of CLIENT_STATUSES
    line: int  # in clients.csv, for messages
    ended: date | None = None  # the day an ended client left


def parse_records(text, name, sheet, read_row, across_rows=None):
    """The records of a record sheet, one read_row(RowReader) a row; DataError lists
    every problem of every row, and those across_rows(records, name) finds among the
    good ones."""
    header, body = record_rows(text, name, sheet)
    records, problems = [], []
    for line, cells in body:
        before = len(problems)
        record = read_row(RowReader(header, cells, line, name, problems))
        if len(problems) == before:
            records.append(record)
    problems += across_rows(records, name) if across_rows else []
    if problems:
        raise DataError(problems)
    return tuple(records)


def parse_clients(text, name):
    """The clients of clients.csv, in the sheet's order."""
    return parse_records(text, name, "clients.csv", read_client, listed_twice)


def listed_twice(clients, name):
    """One row a client: a name (case aside) on a second row is a problem, not a
    second client."""
    first = {}
    return [f"{name}:{client.line}: client: {client.name!r} is listed already, on line "
            f"{first[client.name.casefold()]}: one row a client" for client in clients
            if first.setdefault(client.name.casefold(), client.line) != client.line]


def read_client(row):
    client = Client(row.text("client", required=True), row.text("tier"),
                    row.amount("monthly_value"), row.text("billing_model"),
                    row.date("contract_start"), row.date("renewal_date"),
                    row.date("last_invoiced"), row.choice("status", CLIENT_STATUSES),
                    row.line, row.date("ended"))
    if client.contract_start and client.renewal_date and \
            client.renewal_date < client.contract_start:
        row.problem("renewal_date", f"{client.renewal_date} is before the contract start, "
                                    f"{client.contract_start}")
    if client.contract_start and client.ended and client.ended < client.contract_start:
        row.problem("ended", f"{client.ended} is before the contract start, "
                             f"{client.contract_start}")
    return client


class Delivery(NamedTuple):
    """One row of deliveries.csv: a yacht delivered."""

    day: date
    vessel: str
    origin: str
    destination: str
    miles: Decimal | None  # nautical miles
    days: Decimal | None
    price: Decimal | None
    costs: dict  # {category: dollars}; a cost left empty is not recorded, which is not 0
    line: int  # in deliveries.csv, for messages
    cost: Decimal | None  # the recorded costs in all; None where none is recorded


def parse_deliveries(text, name):
    """The deliveries of deliveries.csv, oldest first."""
    return tuple(sorted(parse_records(text, name, "deliveries.csv", read_delivery),
                        key=lambda delivery: delivery.day))


def read_delivery(row):
    costs = {category: cost for category in DELIVERY_COSTS
             if (cost := row.amount(category)) is not None}
    return Delivery(row.date("date", required=True), row.text("vessel"), row.text("from"),
                    row.text("to"), row.amount("nautical_miles", "number"),
                    row.amount("days", "number"), row.amount("price"), costs, row.line,
                    sum(costs.values()) if costs else None)


class RentalEntry(NamedTuple):
    """One row of rental.csv: rent received, or an expense of the 3028 51st St rental."""

    day: date
    kind: str  # rent or expense
    category: str  # the owner's word for an expense; grouped without regard to case
    amount: Decimal
    note: str
    line: int  # in rental.csv, for messages


def parse_rental(text, name):
    """The entries of rental.csv, oldest first."""
    return tuple(sorted(parse_records(text, name, "rental.csv", read_rental_entry),
                        key=lambda entry: entry.day))


def read_rental_entry(row):
    return RentalEntry(row.date("date", required=True), row.choice("kind", RENTAL_KINDS),
                       row.text("category"), row.amount("amount", required=True),
                       row.text("note"), row.line)


def sheet_text(path, max_bytes):
    """A sheet's text, from a file or from S3, where a sheet its listing lacks is not
    there (FileNotFoundError) without asking for it."""
    if not isinstance(path, S3Location):
        return read_text_file(path, newline="", max_bytes=max_bytes)  # csv reads line ends
    if not path.is_file():
        raise FileNotFoundError(str(path))
    return path.read_text(max_bytes)


def read_sheet(path, parse, max_bytes=DEFAULT_SHEET_MAX_MB << 20):
    """(what parse makes of the sheet, the sha256 of its text), or (None, None) where
    there is no such file; a file over max_bytes is a DataError before it is read."""
    try:
        text = sheet_text(path, max_bytes)
    except FileNotFoundError:
        return None, None
    except TooLarge as size:
        raise DataError([f"{path}: {size}, more than the {max_bytes >> 20} MB a sheet may be "
                         "(REPORT_SHEET_MAX_MB): a mis-saved export or a sync tool's copy? "
                         "Move it out of the data folder, or raise REPORT_SHEET_MAX_MB"]
                        ) from None
    except UnreadableFile as error:
        raise DataError([f"{path}: cannot read it: {error}"]) from None
    return parse(text, path), sha256_hex(text)


# What each record sheet's rows give the reports as figures (Sheet.figures).


def clients_figures(data, day):
    """clients.csv keeps no history: it gives the cycle's day alone its figures."""
    if not data.clients or day != data.day:
        return {}
    active = active_clients(data.clients)
    return {"dc_active_clients": (Decimal(len(active)),) * 2,
            "revenue_dc": (billed_revenue(active),) * 2}


def deliveries_figures(data, day):
    deliveries = data.deliveries[:bisect.bisect_right(data.deliveries, day, key=day_of)] \
        if data.deliveries and day else ()  # oldest first: those up to day
    if not deliveries:
        return {}
    costs = [d.cost for d in deliveries if d.cost is not None]
    return {"deliveries": (Decimal(len(dated_within(deliveries, day, 30))),) * 2,
            "cost_per_delivery": (mean(costs),) * 2 if costs else None}  # none recorded


def rental_figures(data, day):
    month = day and month_before(day)
    if not any(month_of(e.day) == month for e in data.rental or ()):  # none: not measured
        return {}
    return {"rental_net_income": (net_income(data.rental, month),) * 2}


class Sheet(NamedTuple):
    """One sheet of the owner's data folder, a CSV export of one sheet of a workbook:
    everything the script knows of it, so that a new sheet is one row of SHEETS and
    its parser."""

    name: str  # its file name in the folder
    columns: tuple | None  # its columns, the first each row's key (None: figures.csv's)
    required: tuple  # the columns its first line must name
    parse: object  # (text, file name) -> what the sheet holds; DataError for bad rows
    record: str = ""  # a domain record: the CycleData field that holds its rows
    row_is: str = ""  # a record sheet's row, as "add a row a client" names it
    dates: object = None  # a record row -> its dates (warned of when a year ahead)
    dated: bool = False  # its rows count from their date: a cycle reads those up to its day
    gives: tuple = ()  # the metrics its records give, which win over the figures sheet's
    figures: object = None  # (CycleData, day) -> {metric id: figure}: what gives them


SHEETS = {sheet.name: sheet for sheet in (
    # as_of, note and one column a metric: see csv_header()
    Sheet("figures.csv", None, (), parse_figures),
    Sheet("items.csv", ("as_of", "id", "status", "note", "reports", "kind", "text", "due"),
          ("as_of", "id", "status"), parse_items),
    Sheet("targets.csv", ("metric", "month", "target"), ("metric", "month", "target"),
          parse_targets),
    # The domain records: lists the owner keeps, to which a column of their own may be
    # added (it is read past).
    Sheet("clients.csv", ("client", "tier", "monthly_value", "billing_model",
                          "contract_start", "renewal_date", "last_invoiced", "status",
                          "ended"), ("client", "status"), parse_clients, "clients",
          "a row a client", lambda c: (c.contract_start, c.last_invoiced, c.ended),
          gives=("dc_active_clients", "revenue_dc"), figures=clients_figures),
    Sheet("deliveries.csv", ("date", "vessel", "from", "to", "nautical_miles", "days",
                             "price", "fuel", "crew", "travel", "other"), ("date",),
          parse_deliveries, "deliveries", "a row a delivery", lambda d: (d.day,), True,
          gives=("deliveries", "cost_per_delivery"), figures=deliveries_figures),
    Sheet("rental.csv", ("date", "kind", "category", "amount", "note"),
          ("date", "kind", "amount"), parse_rental, "rental",
          "a row a rent payment or expense", lambda e: (e.day,), True,
          gives=("rental_net_income",), figures=rental_figures),
)}
RECORD_SHEETS = tuple(name for name, sheet in SHEETS.items() if sheet.record)
RECORD_METRICS = {metric_id: name for name, sheet in SHEETS.items() for metric_id in sheet.gives}


def load_cycle_data(config, cycle, day, console):
    """The owner's sheets, every one checked before any is used (all their problems
    in one DataError), as they stand for this cycle."""
    if config.data.named and not (config.data.folder or config.data.figures).exists():
        start = (f"upload one with aws s3 sync report_data {config.data.where}"
                 if isinstance(config.data.where, S3Location)
                 else f"start a folder with --new-data {config.data.where}")
        raise DataError([f"{config.data.where}: no such data folder or file: check --data, "
                         f"REPORT_DATA_DIR or REPORT_DATA_PATH, or {start}"])
    problems, read = [], {}
    for sheet in SHEETS.values():
        path = config.data.path(sheet.name)
        try:
            read[sheet.name] = read_sheet(path, sheet.parse, config.sheet_max_bytes) \
                if path else (None, None)
        except DataError as error:
            problems += error.problems
    if problems:
        raise DataError(problems)
    snapshots, _ = read["figures.csv"]
    records = {sheet: read[sheet][0] for sheet in RECORD_SHEETS}
    data = cycle_data(cycle, day, snapshots or (), read["items.csv"][0] or (),
                      read["targets.csv"][0] or {},
                      {sheet: digest for sheet, (_, digest) in read.items() if digest},
                      records=records)
    for warning in data_warnings(config.data, snapshots, data, records):
        console.warn(warning)
    for alert in unmeasured_alerts(config.data, snapshots, data, cycle):
        console.alert(alert)  # eight reports of nothing must reach cron's mail
    snapshot = data.figures.row
    console.step(f"data: {config.data.where}; figures "
                 f"{'as of ' + str(snapshot.as_of) if snapshot else 'none'}; "
                 f"{len(data.item_rows)} item row(s); sheets read: "
                 f"{', '.join(data.sheets) or 'none'}")
    return data


def data_warnings(sheets, snapshots, data, records):
    """What the owner should hear about the sheets: a folder or figures that are not
    there, no snapshot for the cycle, rows dated far ahead (a typo), a count the items
    overrule, an item marked done that its figures deny."""
    where = sheets.where
    if sheets.folder is not None and not sheets.folder.is_dir():
        return []  # an alert says so
    warnings = [f"warning: no items.csv in {where}: the reports list no items (--new-data "
                f"{where} writes one with the source document's items, to confirm or close)"
                for _ in [sheets.folder] if sheets.folder and "items.csv" not in data.sheets]
    warnings += far_ahead(sheets, snapshots or (), data, records)
    warnings += long_overdue(sheets, data)
    warnings += done_but_denied(data)
    if data.figures.snapshot is None:
        return warnings
    original = data.figures.snapshot
    for metric in METRICS:
        written = original.figures.get(metric.metric_id)
        counted = data.figures.snapshot.counted.get(metric.metric_id)
        if metric.counts and written is not None and written != counted:
            warnings.append(f"warning: {sheets.figures} line {original.line}: "
                            f"{metric.metric_id} {figure_text(written, metric.unit)} is not "
                            f"used: the items leave {figure_text(counted, metric.unit)} open, "
                            "and the items win (mark them done in items.csv)")
    return warnings


def unmeasured_alerts(sheets, snapshots, data, cycle):
    """The alert, said even with --quiet, when the cycle has no figures at all: no
    figures file, one with no rows, or none dated on or before the cycle."""
    snapshot = data.figures.snapshot
    every = ("every figure the domain records do not give" if snapshot and snapshot.given
             else "every figure")
    if sheets.folder is not None and not sheets.folder.is_dir():
        return [f"warning: no data folder at {sheets.where}: every figure reads 'not "
                f"measured' and no item is listed; start one with --new-data {sheets.where}"]
    if snapshots is None:
        return [f"warning: no figures file at {sheets.figures}: {every} reads 'not "
                "measured'; start one with --new-data (or --metrics --csv-header)"]
    if not snapshots:
        return [f"warning: figures file {sheets.figures} has no rows yet: {every} "
                "reads 'not measured'; add this cycle's row"]
    if snapshot is None or snapshot.from_records_alone:
        return [f"warning: figures file {sheets.figures} has no snapshot dated on or before "
                f"cycle {cycle}: {every} reads 'not measured'"]
    return []


def far_ahead(sheets, snapshots, data, records):
    """A warning for each row dated more than a year after the cycle: a typo (2062 for
    2026) that would otherwise wait silently for its date."""
    if data.day is None:
        return []
    limit = a_year_after(data.day)
    rows = [(sheets.figures, s.line, s.as_of) for s in snapshots if s.as_of > limit]
    rows += [(sheets.path("items.csv"), r.line, r.as_of) for r in data.item_rows
             if r.as_of > limit]
    rows += [(sheets.path(sheet), row.line, day) for sheet in RECORD_SHEETS
             if SHEETS[sheet].dates for row in records.get(sheet) or ()
             for day in SHEETS[sheet].dates(row) if day and day > limit]
    return [f"warning: {path} line {line}: dated {as_of}, more than a year after the cycle "
            "(a typo?); it counts only from that date" for path, line, as_of in rows]


def long_overdue(sheets, data):
    """A warning for each open item due more than a year before the cycle: a typo in
    its due date (1990 for 2026), or a plan that wants a new date."""
    if data.day is None:
        return []
    limit = data.day.replace(year=data.day.year - 1, day=min(data.day.day, 28))
    return [f"warning: {sheets.path('items.csv')}: {state.item.item_id} is open and was due "
            f"{state.due}, more than a year before the cycle (a typo?): give it a new due "
            "date on a row of its own, or close it" for state in data.items.values()
            if state.status == "open" and state.due and state.due < limit]


def a_year_after(day):
    """The same date a year on (February 29th: the 28th)."""
    return day.replace(year=day.year + 1, day=min(day.day, 28 if day.month == 2 else 31))


def done_but_denied(data):
    """A warning for each item items.csv marks done whose figures or records say
    otherwise."""
    snapshot = data.figures.snapshot
    return [f"warning: items.csv marks {state.item.item_id} done, but the figures as of "
            f"{snapshot.as_of} do not show {state.item.metric} in order: one of them is out "
            "of date" for state in data.items.values()
            if state.status == "done" and state.closed_by is None and state.item.metric
            and not state.item.once_measured and snapshot and denied(state.item, snapshot)
            ] + [f"warning: items.csv marks {state.item.item_id} done, but {state.overruled}; "
                 "the records win, so it stays open" for state in data.items.values()
                 if state.overruled]


def denied(item, snapshot):
    """True where the snapshot measures an item's metrics and shows them not in order."""
    metrics = [METRICS_BY_ID[m] for m in item.metric.split()]
    return all(figure_of(snapshot, m) is not None for m in metrics) and not all(
        plan_met(m, snapshot) for m in metrics)


def cycle_data(cycle, day, snapshots=(), item_rows=(), targets=None, sheets=None,
               records=None):
    """The CycleData of a cycle on day: its figures (for a label that is not a date, as of
    day), the items' states, and each snapshot with what the items count (open security
    gaps) as of its date; the cycle's own snapshot counts them as of the cycle's day, as
    its lists do, and takes what the domain records give (they win over the figures
    sheet's)."""
    records = {sheet: rows if rows is None or not SHEETS[sheet].dated
               else tuple(row for row in rows if day is None or row.day <= day)
               for sheet, rows in (records or {}).items()}
    as_of = cycle if parse_date(cycle) or day is None else day.isoformat()
    data = CycleData(day, cycle_figures(snapshots, as_of), tuple(item_rows), targets or {},
                     sheets or {}, **{SHEETS[sheet].record: rows
                                      for sheet, rows in records.items()})
    given = record_figures(data, day)
    figures = data.figures
    if figures.snapshot is None and given:
        alone = Snapshot(day, 0, {}, "")  # what the records give is measured all the same
        figures = CycleFigures(alone, None, (alone,), (alone,))
    counted = {snapshot.as_of: with_counts(snapshot, item_states(data, snapshot.as_of,
                                                                 snapshot),
                                           record_figures(data, snapshot.as_of))
               for snapshot in (*figures.history, figures.previous) if snapshot}
    items = item_states(data, day, figures.snapshot and figures.snapshot._replace(
        counted=given, given=frozenset(given)))  # an item its record closes stands so
    own_dates = dict(counted)  # each snapshot as of its own date: the months' figures
    if figures.snapshot:
        counted[figures.snapshot.as_of] = with_counts(figures.snapshot, items, given)

    def recount(snapshot):
        return snapshot and counted.get(snapshot.as_of, snapshot)

    data = data._replace(figures=figures._replace(
        snapshot=recount(figures.snapshot), previous=recount(figures.previous),
        history=tuple(map(recount, figures.history)),
        all=tuple(own_dates.get(s.as_of, s) for s in figures.all)), items=items)
    previous = data.figures.previous
    data = data._replace(items_before=previous and item_states(data, previous.as_of,
                                                                previous))
    return data._replace(attention=found_attention(data))


def with_counts(snapshot, states, given):
    """The snapshot with the figures these item states count, and those given.  A count
    of a kind items.csv has no row of is not measured: no row is no news."""
    kinds = {state.item.kind for state in states.values()}
    return snapshot._replace(counted={
        **{metric.metric_id: open_count(states.values(), metric.counts)
           for metric in METRICS if metric.counts in kinds}, **given}, given=frozenset(given))


def record_figures(data, day):
    """The figures the domain records give as of day, which win over the figures
    sheet's: {metric id: figure}, for the records there are (a sheet with no rows
    leaves the figures sheet's)."""
    return {metric_id: figure for sheet in SHEETS.values() if sheet.figures
            for metric_id, figure in sheet.figures(data, day).items()}


def active_clients(clients):
    return [client for client in clients if client.status == "active"]


def billed_revenue(clients):
    """What these clients are billed a month: the monthly value of those with a billing
    model."""
    return sum((c.monthly_value or 0 for c in clients if c.billing_model), Decimal(0))


def day_of(record):
    return record.day


def dated_within(records, day, days):
    """The records dated within `days` days up to day."""
    return [record for record in records if 0 <= (day - record.day).days < days]


def mean(values):
    return cents(sum(values) / len(values))


def cents(amount):
    """Dollars to the cent, half a cent up, as a bookkeeper rounds (not to even)."""
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def percent_share(part, whole):
    """A share as a whole percentage, half up: "13%"."""
    return f"{(part / whole * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)}%"


@functools.lru_cache(maxsize=1 << 17)  # a long sheet asks for the same days again and again
def month_of(day):
    return f"{day:%Y-%m}"


def month_before(day):
    """The last whole month before day's: "2026-11" for 2026-12-01."""
    return month_of(day.replace(day=1) - timedelta(days=1))


def net_income(entries, month):
    """Rent received less expenses, in a month."""
    return ledger_sum(entries, month, "rent") - ledger_sum(entries, month, "expense")


def ledger_sum(entries, month, kind):
    """The rent received (kind "rent") or the expenses paid in a month."""
    return sum((e.amount for e in entries if e.kind == kind and month_of(e.day) == month),
               Decimal(0))


def open_count(states, kind):
    """How many of these items of a kind are open, as a figure."""
    count = Decimal(sum(state.status == "open" and state.item.kind == kind
                        for state in states))
    return count, count


class ItemState(NamedTuple):
    """Where one item stands as of a date."""

    item: Item  # as the owner's rows leave it
    status: str  # a key of ITEM_STATUSES
    since: date | None  # the date of the row that set the status, or of the item closing it
    note: str
    due: date | None
    dated: bool  # the due date is one somebody set, not the rolling plan's
    closed_by: str | None = None  # "metric", a record sheet, or the item that closed it
    overruled: str | None = None  # why a record sheet keeps open what items.csv closed


def item_states(data, day, snapshot):
    """{item id: ItemState} as of day (None: every row): the items items.csv has a row
    for, dated on or before day, the source document's in their order, then the
    owner's; each stands as its latest row leaves it.  An item with no row is in no
    report: the code states nothing of its own.  An open item whose metrics meet their
    targets in the snapshot is done."""
    items, latest, due, first = {}, {}, {}, {}
    for row in data.item_rows:  # oldest first: a later row wins
        if day is not None and row.as_of > day:
            break
        known = items.get(row.item_id) or ITEMS_BY_ID.get(row.item_id)
        if known is None and not row.text:
            continue  # the owner's item is defined on a later row
        items[row.item_id] = row_item(known, row)
        first.setdefault(row.item_id, row.as_of)
        latest[row.item_id] = row
        if row.due:
            due[row.item_id] = row.due
    order = {item_id: rank for rank, item_id in enumerate(ITEMS_BY_ID)}
    states = {}
    for item_id, item in sorted(items.items(), key=lambda pair: order.get(pair[0], len(order))):
        row = latest[item_id]
        state = ItemState(item, row.status, row.as_of, row.note,
                          due.get(item_id) or planned_due(item, first[item_id]),
                          item_id in due or item.due is not None)
        decided = state.status != "dropped" and record_decides(state, data, day)
        if decided:
            state = decided
        elif state.status == "open" and item.metric and all(
                plan_met(METRICS_BY_ID[m], snapshot, item.once_measured)
                for m in item.metric.split()):
            sheets = [RECORD_METRICS[m] for m in item.metric.split() if m in snapshot.given]
            state = state._replace(status="done", since=None,
                                   closed_by=sheets[0] if sheets else "metric")
        states[item_id] = state
    for item_id, state in states.items():
        other = states.get(state.item.with_item)
        if state.status == "open" and other and other.status != "open":
            states[item_id] = state._replace(status=other.status, since=other.since,
                                             closed_by=other.item.item_id)
    return states


class RecordRule(NamedTuple):
    """What a record sheet must show, once it has rows, for an item to be done.  While
    the sheet is there it wins over items.csv both ways: the rule met closes the item,
    the rule failed keeps it open (a client added with no renewal date reopens the
    client list).  A rule with nothing to judge (no active client) decides nothing:
    items.csv does.  A report declares the rules of its items (RECORD_RULES)."""

    item_id: str
    sheet: str
    holds: object  # records -> bool, or None where there is nothing to judge
    says: str  # what closes the item, as --items says it


def every_active(clients, test):
    """Whether every active client passes the test; None where none is active."""
    active = active_clients(clients)
    return all(map(test, active)) if active else None


def record_decides(state, data, day):
    """An item's state as its record sheet decides it as of day, or None where no sheet
    does (no rule, no such sheet, or a rule with nothing to judge)."""
    rule = RECORD_RULES.get(state.item.item_id)
    if rule is None or rule.sheet not in data.sheets:
        return None
    records = data.records(rule.sheet, day)
    holds = rule.holds(records) if records else None  # no rows: nothing to judge
    if holds is None:
        return None
    if holds:
        return state._replace(status="done", since=None, closed_by=rule.sheet)
    return state._replace(status="open", since=None, overruled=(
        f"{rule.sheet} does not show it (closed {rule.says})"
        if state.status == "done" else None))


def row_item(item, row):
    """An item as this row leaves it: what the row says, else what it was (the source
    document's, or the owner's from an earlier row)."""
    if item is None:
        return Item(row.item_id, row.kind or "action", row.reports or ("ceo",), row.text)
    if row.text and row.text != item.text:  # the owner's words: the script's action and
        item = item._replace(text=row.text, todo=None, done_text=None, metric=None,
                             with_item=None)  # its action, outcome and closing no longer fit
    return item._replace(kind=row.kind or item.kind, reports=row.reports or item.reports)


def planned_due(item, first_row):
    """The source document's due date of an item: days after its first row in items.csv
    (so a plan keeps its dates from cycle to cycle), or a date."""
    if isinstance(item.due, int):
        return first_row + timedelta(days=item.due)
    return date.fromisoformat(item.due) if item.due else None



def check_freshness(figures, cycle, config, today, console, read_log):
    """Warn where this cycle's figures are not news: too old for the cycle, or the very
    snapshot the last cycle sent.  Return the Refusal REPORT_DATA_REQUIRE_FRESH makes
    of that (StaleData), or None."""
    stale = []
    snapshot = figures.row
    if snapshot:
        age = ((parse_date(cycle) or today) - snapshot.as_of).days
        if age > config.data_max_age_days:
            stale.append(f"the newest snapshot is as of {snapshot.as_of}, {age} days before "
                         f"cycle {cycle} (REPORT_DATA_MAX_AGE_DAYS is "
                         f"{config.data_max_age_days})")
        last = last_sent_figures(config.audit_log_path, cycle) if read_log else None
        if last and last[1] == snapshot.sha256:
            stale.append(f"the snapshot as of {snapshot.as_of} is the one cycle {last[0]} "
                         "already reported")
    for reason in stale:
        console.alert(f"warning: stale figures: {reason}")
    if config.data_require_fresh and (stale or snapshot is None):
        why = "; ".join(stale) or "there are no figures for this cycle"
        return Refusal("StaleData", f"REPORT_DATA_REQUIRE_FRESH is set and {why}; nothing "
                       "was sent")
    return None


###############################################################################
# Report markup: the template language both editions are rendered from
###############################################################################

# The marks a template line may carry (see ReportTemplate).
NUMBERED_ITEM_PATTERN = re.compile(r"(\d{1,2})\. (.*)")
BAR_PATTERN = re.compile(r"\[bar (\d+)/(\d+)\]")
BRIEF_MARK = "[brief]"
COUNT_MARK = "(#)"  # a heading ending so counts the items of the list under it
SLOT_PATTERN = re.compile(r"\$\{([_a-z][_a-z0-9]*)\}")  # a line that is one placeholder

# What reads as a marker, in any case: [bar 4/6], [brief], and their misspellings.
MARKER_PATTERN = re.compile(r"\[[a-z]+[^\]]*\]", re.IGNORECASE)
GROWING_BLOCKS = frozenset({"paragraph", "bullets", "numbered", "table"})


class ReportTemplate(string.Template):
    """A report's source: ${name} placeholders, then a few line-start marks.

    Only ${name} is a placeholder, so "$50K" reads as money.  Each line of the
    source is read as one of:
      "# Title"            the report's title
      "## Heading"         a section; "## Heading [brief]" also goes in the brief
      "- item"             a bullet item
      "1. item"            a numbered item
      "| a | b |"          a table row, the first row of a table its header;
                           a cell "[bar 4/6]" is a bar filled 4 parts of 6
      "---"                the footer rule
      "  more"             an indented line continues the item, or the last
                           cell of the table row, above it
      anything else        paragraph text; a blank line ends a paragraph
    A blank line must separate a paragraph, a list and a table from each other,
    numbered items count from 1, and every row has the header's cells: any
    other shape raises TemplateError.  Placeholders are filled after that, so a
    value is always text, never markup.  Both editions, plain text and HTML,
    are rendered from these blocks, so they cannot disagree.
    """

    pattern = r"""
    \$(?:
      (?P<escaped>(?!))                    # a lone $ is never special
    | (?P<named>(?!))                      # bare $name is not a placeholder
    | {(?P<braced>[_a-z][_a-z0-9]*)}
    | (?P<invalid>{[^}]*})                 # ${...} that is not a name
    )
    """


class Block:
    """One piece of a report: a title, heading, paragraph, list, table or rule."""

    __slots__ = ("kind", "items", "brief", "total")

    def __init__(self, kind, items, brief=False, total=None):
        self.kind = kind
        self.items = items
        self.brief = brief  # headings only: the section belongs in the brief too
        self.total = total  # lists only: how many it stands for, where it shows fewer


class Bar(NamedTuple):
    """A table cell drawn as a bar: `filled` parts of `total`."""

    filled: int
    total: int


class Trend(NamedTuple):
    """A table cell drawn as a small chart of recent values, oldest first (None: a
    snapshot that did not measure it)."""

    values: tuple

    def levels(self, steps):
        """Each value as a step from 0 to steps - 1, in proportion from zero: a value 7%
        lower is a bar 7% shorter (a series with negative values spans its range)."""
        known = [v for v in self.values if v is not None]
        low, high = min([0, *known]), max([0, *known])
        return [None if v is None else
                (0 if high == low else round((v - low) / (high - low) * (steps - 1)))
                for v in self.values]


class Status(NamedTuple):
    """A table cell that says how a figure stands: seen at a glance in both editions."""

    text: str  # on track, behind, no target, not measured, to come
    level: str  # "good", "bad" or "none"


def line_block(line):
    """The kind of block a template line starts, and its content."""
    if line.startswith("# "):
        return "title", line[2:].strip()
    if line.startswith("## "):
        return "heading", line[3:].strip()
    if line.strip() == "---":
        return "rule", ""
    if line.startswith("- "):
        return "bullets", line[2:].strip()
    numbered = NUMBERED_ITEM_PATTERN.match(line)
    if numbered:
        return "numbered", numbered.group(2).strip()
    if line.startswith("|"):
        return "table", [cell.strip() for cell in line.strip().strip("|").split("|")]
    return "paragraph", line.strip()


def parse_blocks(source, name):
    """The blocks of a template's source, in order (see ReportTemplate).

    Strict: a line that could be read two ways raises TemplateError naming the
    template and the line, so a rewrapped paragraph never silently becomes a list.
    """
    blocks, open_block = [], None
    for number, line in enumerate(source.splitlines(), start=1):
        try:
            open_block = add_line(blocks, open_block, line)
        except TemplateError as error:
            raise TemplateError(f"template {name}, line {number} ({line.strip()[:40]!r}): "
                                f"{error}") from None
    return blocks


def add_line(blocks, open_block, line):
    """Read one source line into blocks; return the block that stays open after it."""
    if not line.strip():
        return None
    if line.startswith("  ") and open_block:  # a wrapped item or cell goes on
        if open_block.kind not in GROWING_BLOCKS:
            raise TemplateError(f"an indented line after a {open_block.kind}, which nothing "
                                "continues")
        items = open_block.items[-1] if open_block.kind == "table" else open_block.items
        items[-1] += " " + line.strip()
        return open_block
    kind, content = line_block(line)
    check_markers(kind, content)
    if kind == "table":
        content = [Bar(*parse_bar(cell)) if BAR_PATTERN.fullmatch(cell) else cell
                   for cell in content]
    elif kind == "paragraph" and SLOT_PATTERN.fullmatch(content):
        kind, content = "slot", SLOT_PATTERN.fullmatch(content).group(1)
    if open_block and open_block.kind in GROWING_BLOCKS and kind in GROWING_BLOCKS:
        if kind != open_block.kind:
            raise TemplateError(f"a {kind} line right after {open_block.kind} lines; leave "
                                "a blank line between them, or indent it two spaces to "
                                "continue the line above")
        check_continues(open_block, content, line)
        open_block.items.append(content)
        return open_block
    if kind == "numbered":
        check_continues(Block(kind, []), content, line)
    brief = kind == "heading" and content.endswith(BRIEF_MARK)
    if brief:
        content = content[:-len(BRIEF_MARK)].rstrip()
    block = Block(kind, [content], brief)
    blocks.append(block)
    return block


def check_continues(block, content, line):
    """A numbered item must be the next number; a table row must have the header's cells."""
    if block.kind == "numbered":
        number, expected = int(NUMBERED_ITEM_PATTERN.match(line).group(1)), len(block.items) + 1
        if number != expected:
            raise TemplateError(f"item {number} where item {expected} belongs")
    elif block.kind == "table" and len(content) != len(block.items[0]):
        raise TemplateError(f"a row of {len(content)} cells in a table of "
                            f"{len(block.items[0])} columns")


def check_markers(kind, content):
    """[bar n/m] only as a whole table cell, [brief] only at a heading's end."""
    for cell in content if kind == "table" else [content]:
        for marker in MARKER_PATTERN.findall(cell):
            if kind == "table" and marker == cell and BAR_PATTERN.fullmatch(cell):
                try:
                    parse_bar(cell)
                except ValueError as error:
                    raise TemplateError(str(error)) from None
            elif not (kind == "heading" and marker == BRIEF_MARK and cell.endswith(marker)
                      and cell.count(marker) == 1):
                raise TemplateError(f"unknown or misplaced marker {marker}; the markers are "
                                    "[bar N/M] as a whole table cell and [brief] at the end "
                                    "of a heading")


def fill_blocks(blocks, values):
    """The blocks with their placeholders filled: values are never read as markup.

    A line that is a placeholder alone is a slot: its value is text, or a list
    of blocks made by the script (a table of figures, a list of findings), put
    in whole.
    A heading ending in "(#)" then counts the items of the list under it.
    """
    def fill(item):
        if isinstance(item, list):
            return [fill(cell) for cell in item]
        if not isinstance(item, str):
            return item
        return ReportTemplate(item).substitute(values)

    filled = []
    for block in blocks:
        if block.kind == "slot":
            value = values[block.items[0]]
            filled.extend([Block("paragraph", [value])] if isinstance(value, str) else value)
        else:
            block.items = [fill(item) for item in block.items]
            filled.append(block)
    for heading, following in zip(filled, filled[1:] + [None]):
        if heading.kind == "heading" and heading.items[0].endswith(COUNT_MARK):
            counted = (following.total or len(following.items)) if following and \
                following.kind in ("bullets", "numbered") else 0
            heading.items[0] = heading.items[0][:-len(COUNT_MARK)] + f"({counted})"
    return filled


def brief_blocks(blocks):
    """The one-screen brief: the header, the [brief] sections and the footer."""
    kept, keeping = [], True
    for block in blocks:
        if block.kind == "heading":
            keeping = block.brief
        elif block.kind == "rule":
            keeping = True
        if keeping:
            kept.append(block)
    return kept


def parse_bar(cell):
    """(filled, total) for a "[bar 4/6]" cell, else None."""
    match = BAR_PATTERN.fullmatch(cell)
    if not match:
        return None
    filled, total = int(match.group(1)), int(match.group(2))
    if not 0 <= filled <= total or total == 0:
        raise ValueError(f"bar {cell!r} must be filled 0 to its total")
    return filled, total


###############################################################################
# Report content: the eight reports, and what the owner's data fills in
###############################################################################

# The building blocks every report shares come first: what needs the owner, how a
# figure and its target read, what changed since last time, the items, the trends.
# Then each report is one sub-section: its template, the functions that fill its own
# placeholders, and its ReportSpec.  REPORTS lists them: a ninth report is one more
# sub-section and one more line there.

TOP_ACTIONS = 3  # how many of its open actions a report leads with
DUE_SOON_DAYS = 7  # "Since the last report" names an item due within these days

HEADER_TEMPLATE = ReportTemplate("""\
# ${title}
Cycle ${cycle} | prepared by ${prepared_by} | generated ${generated_at} | figures ${figures_line}

Businesses: JADA, QueenofSanDiego (QOS), QuickDumpNow (QDN), DangerousCentaur (DC)
""")


FOOTER_TEMPLATE = ReportTemplate("""\
---
Sent by send_exec_reports ${version} for cycle ${cycle}, variant ${variant}. A copy
of every report goes to the audit inbox; the audit log records this message's id.
""")


class ReportSpec(NamedTuple):
    """One report: its id on the command line, its title, its template and the
    placeholders of its own (those every report shares are report_values'); and what
    it adds to the owner's data: the items its record sheets decide, and any metric
    or source-document item that only it shows."""

    report_id: str
    title: str
    template: ReportTemplate
    values: object = None  # CycleData -> {placeholder: () -> its text}
    record_rules: tuple = ()  # RecordRules: items one of its record sheets decides
    metrics: tuple = ()  # Metrics of its own, listed after the catalogue's
    items: tuple = ()  # Items of its own from the source document, after ITEMS's


# What needs the owner: the attention rules.  Each reads the sheets alone and gives
# one line per thing wrong, with the dollars at stake (a monthly figure as itself, a
# one-off as itself) and since when; every report opens with its own, the CEO's
# with every business's, the most money first, then the longest overdue.  The
# levels: the metrics' targets (runway, revenue minus burn, each revenue) and
# RULE_LEVELS, each of which targets.csv may set; --rules lists them.
RECENT_DAYS = 90  # the deliveries whose margins are judged: the last 90 days'
ATTENTION_SHOWN = 10  # a list longer than this ends with how many more, and their dollars
# A list that grows with a sheet (clients, items) shows this many rows, those that
# matter most first, then how many more the sheet holds: a report stays readable,
# and within what SES takes, however long the sheet grows.
LIST_SHOWN = 20


def list_at_most(lines, sheet, order=""):
    """A numbered list of the first LIST_SHOWN lines (a heading over it still counts
    them all), then a line of how many more the sheet holds and which come first."""
    return [Block("numbered", list(lines[:LIST_SHOWN]), total=len(lines)),
            *more_in(len(lines), sheet, order)]


def table_at_most(rows, sheet, order="", last=None):
    """A table's heading row, its first LIST_SHOWN rows and its `last` row (a total),
    then a line of how many more rows the sheet gives."""
    body = rows[1:]
    return [Block("table", [rows[0], *body[:LIST_SHOWN], *([last] if last else [])]),
            *more_in(len(body), sheet, order)]


def more_in(count, sheet, order):
    """The paragraph under a list of `count` cut to LIST_SHOWN; none where it is not."""
    if count <= LIST_SHOWN:
        return []
    shown = f"; those shown are {order}" if order else ""
    return [Block("paragraph", [f"And {count - LIST_SHOWN} more in {sheet}{shown}."])]


CELL_SHOWN = 5  # items named in one table cell; the rest are counted


def joined_at_most(labels):
    """Items for one table cell: the first CELL_SHOWN, then how many more."""
    more = len(labels) - CELL_SHOWN
    return "; ".join(labels[:CELL_SHOWN]) + (f"; and {more} more in items.csv" if more > 0
                                             else "")


class Attention(NamedTuple):
    """One line of "Needs attention": what is wrong, from the sheets."""

    text: str  # what is wrong, in dollars where there are dollars, and since when
    label: str  # the same in a few words, for the executive summary
    money: Decimal  # dollars at stake
    days: int  # days overdue, or since it began
    reports: tuple  # the reports that list it besides the CEO's


class AttentionRule(NamedTuple):
    rule_id: str
    level: str  # a metric id (its target is the level) or a key of RULE_LEVELS
    says: str  # the rule, for --rules: {} is where its level goes
    find: object  # (data) -> [Attention]


def rule_level(data, level_id):
    """A rule's level for the cycle's month: targets.csv's row for the month, else its
    row for every month, else the default."""
    if level_id in METRICS_BY_ID:
        return target_of(METRICS_BY_ID[level_id], data, data.figures.snapshot)
    rows = data.targets.get(level_id, {})
    value = rows.get(data.day and month_of(data.day), rows.get(""))
    return Decimal(RULE_LEVELS[level_id].default) if value is None else value


def found_attention(data):
    """Every attention line of the cycle, most money first, then the longest overdue."""
    found = [entry for rule in ATTENTION_RULES for entry in rule.find(data)]
    return tuple(sorted(found, key=lambda entry: (-entry.money, -entry.days, entry.text)))


def needs_attention(data, report_id):
    """The attention lines of one report, in found_attention's order."""
    found = found_attention(data) if data.attention is None else data.attention
    return [entry for entry in found if report_id == "ceo" or report_id in entry.reports]


def attention_list(data, report_id):
    """The "Needs attention" section: a line per thing wrong, or one line saying that
    nothing is, and on what."""
    entries = needs_attention(data, report_id)
    if not entries:
        return [Block("paragraph", [calm_line(data)])]
    shown, rest = entries[:ATTENTION_SHOWN], entries[ATTENTION_SHOWN:]
    lines = [entry.text for entry in shown]
    if rest:
        stake = sum(entry.money for entry in rest)
        lines.append(f"And {len(rest)} more" + (f", {money_text(stake)} at stake" if stake
                                                 else "") + ", each in the full report it "
                     "belongs to (--rules lists what they are).")
    return [Block("numbered", lines)]


def calm_line(data):
    """What a report says when no rule finds anything: on what it judged."""
    judged = data.figures.snapshot or data.items or any(
        data.records(sheet) for sheet in RECORD_SHEETS)
    return ("Nothing needs attention by the rules (--rules lists them)." if judged else
            "Nothing can be judged yet: the sheets have no rows for this cycle.")


def as_of_text(data):
    """Where the cycle's figures come from, in a few words."""
    snapshot = data.figures.snapshot
    return f"figures as of {snapshot.as_of}" if snapshot and snapshot.line else \
        "the domain records"


def under_level(data, metric_id):
    """(the cycle's figure of a metric, its level) where the figure misses the level;
    None where it meets it, or either is unknown."""
    metric = METRICS_BY_ID[metric_id]
    figure, level = figure_of(data.figures.snapshot, metric), rule_level(data, metric_id)
    if figure is None or level is None or on_target(metric, figure, level):
        return None
    return figure, level


def runway_short(data):
    """The runway under its level: cash against the monthly loss."""
    missed = under_level(data, "runway_months")
    if missed is None:
        return []
    (figure, level), snapshot = missed, data.figures.snapshot
    net = net_cash_flow(snapshot)
    cash = snapshot.figure("cash_on_hand")
    return [Attention(
        f"Runway {figure_text(figure, 'months')}, under {amount_text(level, 'months')}: "
        f"cash {figure_text(cash, 'dollars')}, {money_text(-net[0])} a month more out than "
        f"in ({as_of_text(data)}).",
        f"runway {figure_text(figure, 'months')}", -net[0], 0, ("cfo",))]


def losing_money(data):
    """Revenue minus burn under its level (0: a month that spends more than it earns)."""
    missed = under_level(data, "net_cash_flow")
    if missed is None:
        return []
    (net, level), snapshot = missed, data.figures.snapshot
    return [Attention(
        f"Revenue minus burn {figure_text(net, 'dollars')} a month"
        + (f", under the {money_text(level)} level" if level else "") + ": revenue "
        f"{figure_text(total_revenue(snapshot), 'dollars')}, burn "
        f"{figure_text(snapshot.figure('monthly_burn'), 'dollars')} ({as_of_text(data)}).",
        f"revenue minus burn {figure_text(net, 'dollars')} a month", level - net[0], 0,
        ("cfo",))]


def revenue_short(data):
    """Each business's revenue under the month's target: the shortfall."""
    snapshot, found = data.figures.snapshot, []
    for metric_id in REVENUE_METRICS:
        metric, missed = METRICS_BY_ID[metric_id], under_level(data, metric_id)
        if missed is None:
            continue
        figure, target = missed
        short = target - figure[0]
        found.append(Attention(
            f"{metric.label} {figure_text(figure, 'dollars')}: {money_text(short)} under the "
            f"{month_of(snapshot.as_of)} target of {money_text(target)} "
            f"({as_of_text(data)}).", f"{metric.label.split()[0]} revenue {money_text(short)} "
            "under target", short, 0, metric.reports))
    return found


def recent_deliveries(data, days=RECENT_DAYS):
    """The deliveries of the last `days` days with a price and a cost, oldest first."""
    return [d for d in dated_within(data.deliveries or (), data.day, days)
            if d.price is not None and d.cost is not None] if data.day else []


def deliveries_at_a_loss(data):
    """Each recent delivery priced under its cost (plus the level), with the loss."""
    level = rule_level(data, "delivery_margin")
    return [Attention(
        (f"Delivery at a loss, {money_text(d.cost - d.price)}: " if d.price < d.cost else
         f"Delivery margin {money_text(d.price - d.cost)}, under the {money_text(level)} "
         "level: ") + f"{delivery_name(d)}, priced {money_text(d.price)}, cost "
        f"{money_text(d.cost)}.", f"a delivery under its margin ({d.vessel or d.day})",
        level - (d.price - d.cost), (data.day - d.day).days, ("yacht-delivery", "cfo"))
        for d in recent_deliveries(data) if d.price - d.cost < level]


def delivery_name(delivery):
    route = " to ".join(filter(None, (delivery.origin, delivery.destination)))
    return ", ".join(filter(None, (str(delivery.day), delivery.vessel, route)))


def margin_below(data):
    """The recent deliveries' mean margin under the level."""
    recent = recent_deliveries(data)
    if not recent:
        return []
    margin, level = mean([d.price - d.cost for d in recent]), rule_level(data, "delivery_margin")
    if margin >= level:
        return []
    return [Attention(
        f"Deliveries' mean margin {money_text(margin)} over the last {RECENT_DAYS} days "
        f"({len(recent)} priced and costed)" + (f", under the {money_text(level)} level"
                                                if level else "") + ".",
        f"deliveries' mean margin {money_text(margin)}", (level - margin) * len(recent), 0,
        ("yacht-delivery", "cfo"))]


def rent_unpaid(data):
    """The rent owed: the rent due of each month over (plus the level's days) that the
    figures give a rent due for, less the rent received in those months and any paid
    ahead this month; what is owed is put on the latest months (a payment settles the
    oldest first)."""
    if not data.rental or data.day is None:
        return []
    late, this = int(rule_level(data, "rent_late_days")), month_of(data.day)
    dues, paid = {}, Decimal(0)
    for month in recent_months(data, (e.day for e in data.rental)):
        due = figure_by_month(data, "rent_due", month)
        if due is None:
            continue  # no rent due known: the month is not judged
        received = ledger_sum(data.rental, month, "rent")
        if (data.day - month_end(month)).days > late:
            dues[month], paid = due, paid + received
        elif month == this:
            paid += max(received - due, Decimal(0))  # paid ahead, or late for a past month
    owed = sum(dues.values()) - paid
    if owed <= 0:
        return []
    months, left = {}, owed
    for month in sorted(dues, reverse=True):
        if left <= 0:
            break
        months[month], left = min(dues[month], left), left - dues[month]
    first = min(months)
    listed = "; ".join(f"{month} {money_text(months[month])}" for month in sorted(months))
    return [Attention(
        f"Rent unpaid since {first}: {money_text(owed)} owed ({listed}).",
        f"rent unpaid, {money_text(owed)}", owed, (data.day - month_end(first)).days,
        ("rental-3028", "accounting"))]


def days_text(days):
    return f"{days} day" + ("" if days == 1 else "s")


def month_end(month):
    """The last day of a month, YYYY-MM."""
    year, number = map(int, month.split("-"))
    return date(year + number // 12, number % 12 + 1, 1) - timedelta(days=1)


def clients_ended(data):
    """Each client ended within the level's days: the monthly value lost."""
    if data.day is None:
        return []
    within = int(rule_level(data, "client_ended_days"))
    return [Attention(
        f"Client ended {c.ended}: {c.name}" + (f" ({c.tier})" if c.tier else "") + f", "
        f"{money_text(c.monthly_value or Decimal(0))} a month lost.", f"{c.name} ended",
        c.monthly_value or Decimal(0),
        (data.day - c.ended).days, ("dc-portfolio",))
        for c in data.clients or () if c.status == "ended" and c.ended
        and 0 <= (data.day - c.ended).days <= within]


def clients_unbilled(data):
    """Each active client with a billing gap: its monthly value is at stake."""
    found = []
    for client in active_clients(data.clients or ()):
        gap = billing_gap(client, data)
        if gap:
            since = client.last_invoiced or client.contract_start
            found.append(Attention(
                f"Billing gap: {client.name}, {money_text(client.monthly_value or 0)} a "
                f"month, {gap}.", f"{client.name} {gap.split(' (')[0]}",
                client.monthly_value or Decimal(0),
                (data.day - since).days if since and data.day else 0,
                ("dc-portfolio", "accounting")))
    return found


def renewals_due(data):
    """Each active client renewing within the level's days, or whose renewal date has
    passed with no new one."""
    within, found = int(rule_level(data, "renewal_days")), []
    for client in active_clients(data.clients or ()):
        days = days_until(client.renewal_date, data.day)
        if days is None or days > within:
            continue
        when = (f"Renewal in {days_text(days)}, on {client.renewal_date}" if days >= 0 else
                f"Renewal date passed {days_text(-days)} ago, on {client.renewal_date}, with "
                "no new one")
        found.append(Attention(
            f"{when}: {client.name}, {money_text(client.monthly_value or 0)} a month.",
            f"{client.name} renewal", client.monthly_value
            or Decimal(0), max(-days, 0), ("dc-portfolio",)))
    return found


def items_overdue(data):
    """Each open item past its due date by more than the level's days."""
    if data.day is None:
        return []
    grace = int(rule_level(data, "overdue_days"))
    return [Attention(
        f"Overdue {days_text((data.day - s.due).days)}: {item_todo(s.item)} (due {s.due}).",
        f"{item_label(s.item)} overdue", Decimal(0), (data.day - s.due).days,
        s.item.reports) for s in data.items.values()
        if s.status == "open" and s.due and (data.day - s.due).days > grace]


ATTENTION_RULES = (
    AttentionRule("runway", "runway_months", "the runway under {} (cash against the monthly "
                  "loss)", runway_short),
    AttentionRule("losing-money", "net_cash_flow", "revenue minus burn under {} a month",
                  losing_money),
    AttentionRule("revenue-short", "revenue_jada_qos revenue_qdn revenue_dc",
                  "a business's revenue under its month's target (targets.csv)",
                  revenue_short),
    AttentionRule("delivery-loss", "delivery_margin", "a delivery of the last 90 days priced "
                  "under its cost plus {}", deliveries_at_a_loss),
    AttentionRule("delivery-margin", "delivery_margin", "the last 90 days' mean delivery "
                  "margin under {}", margin_below),
    AttentionRule("rent-unpaid", "rent_late_days", "rent short of rent_due, {} days after "
                  "its month's end", rent_unpaid),
    AttentionRule("client-ended", "client_ended_days", "a client ended in the last {} days "
                  "(clients.csv's ended column)", clients_ended),
    AttentionRule("billing-gap", "invoice_gap_days", "an active client on no billing model, "
                  "never invoiced, or not invoiced for {} days or more", clients_unbilled),
    AttentionRule("renewal", "renewal_days", "an active client renewing within {} days, or "
                  "past its renewal date", renewals_due),
    AttentionRule("overdue", "overdue_days", "an open item more than {} days past its due "
                  "date (items.csv)", items_overdue),
)


def figure_of(snapshot, metric):
    """A metric's figure in a snapshot, (low, high), computed where it is a formula's;
    None where it is not measured."""
    if snapshot is None:
        return None
    if metric.formula:
        return metric.formula(snapshot)
    if metric.counts or metric.metric_id in snapshot.counted:
        return snapshot.counted.get(metric.metric_id)
    return snapshot.figures.get(metric.metric_id)


def amount_text(value, unit, money_sign=True):
    """One amount as a reader sees it: $8,000, 24%, 3,676, yes, 4.5 months."""
    if unit == "yes_no":
        return "yes" if value else "no"
    if unit == "months":
        return "cash-flow positive" if value == CASH_FLOW_POSITIVE else f"{value:.1f} months"
    if unit == "dollars":  # whole dollars as $8,000; cents, where there are any, as $100.50
        to_cent = cents(value)
        number = format(to_cent if to_cent % 1 else to_cent.quantize(Decimal(1)), ",f")
        if not money_sign:
            return number
        return "-$" + number[1:] if number.startswith("-") else "$" + number
    number = format(value, ",f")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number + "%" if unit == "percent" else number


def figure_text(figure, unit):
    """A figure as a reader sees it; a range as $7,000-9,000; - where not measured."""
    if figure is None:
        return "-"
    low, high = figure
    if low == high:
        return amount_text(low, unit)
    if low < 0 or high < 0:  # "-$3,000--1,000" would read as nonsense
        return f"{amount_text(low, unit)} to {amount_text(high, unit)}"
    return f"{amount_text(low, unit)}-{amount_text(high, unit, money_sign=False)}"


def catalogue_target(metric):
    """The metric's target as the catalogue sets it, or None."""
    return None if metric.target is None else (
        Decimal(metric.target == "yes") if metric.unit == "yes_no" else Decimal(metric.target))


def target_of(metric, data, snapshot=None):
    """The metric's target for the month a snapshot measures (else the cycle's month):
    targets.csv's row for that month, else the catalogue's."""
    day = snapshot.as_of if snapshot else data.day
    return catalogue_target(metric) if day is None else month_target(metric, data,
                                                                     month_of(day))


def target_text(metric, target):
    """A target as a threshold reads: at least 6, at most $9,000, more than $0, yes."""
    if target is None:
        return "-"
    amount = amount_text(target, metric.unit)
    return amount if metric.unit == "yes_no" else f"{THRESHOLDS[metric.good]} {amount}"


def on_target(metric, figure, target):
    """True if the figure meets the target (the range's worse end counts)."""
    low, high = figure
    if metric.good == "down":
        return high <= target
    return low > target if metric.good == "above" else low >= target


def status_of(metric, figure, target):
    """How a figure stands: a Status cell of the glance table."""
    if figure is None:
        return Status("not measured", "none")
    if target is None:
        return Status("no target", "none")
    return Status("on track", "good") if on_target(metric, figure, target) else \
        Status("behind", "bad")


def fixed(metric, figure, target):
    """Whether the data says what this metric tracks is in order."""
    if figure is None:
        return False
    return target is None or on_target(metric, figure, target)


def plan_met(metric, snapshot, once_measured=False):
    """Whether a snapshot shows the catalogue's level reached, which is what closes an
    item: a month's target in targets.csv moves a status, never the plan."""
    figure = figure_of(snapshot, metric)
    return figure is not None if once_measured else \
        fixed(metric, figure, catalogue_target(metric))


def change_text(metric, now, before, compared):
    """Since the previous snapshot: up 1, down $400, no change, new, or -."""
    if not compared or now is None:
        return "-"
    if before is None:
        return "new"
    if now == before:
        return "no change"
    if metric.unit in ("yes_no", "months"):
        return f"now {figure_text(now, metric.unit)}"
    difference = sum(now) / 2 - sum(before) / 2  # a range moves by its middle
    if not difference:
        return "range moved"
    amount = (f"{amount_text(abs(difference), 'count')} points" if metric.unit == "percent"
              else amount_text(abs(difference), metric.unit))
    return f"{'up' if difference > 0 else 'down'} {amount}"


def metrics_of(report_id):
    return [metric for metric in METRICS if report_id in metric.reports]


def glance_table(report_id, data):
    """The headline figures of one report: value, change, target and status."""
    figures = data.figures
    rows = [["Measure", "Now", "Change", "Target", "Status"]]
    for metric in metrics_of(report_id):
        now, before = figure_of(figures.snapshot, metric), figure_of(figures.previous, metric)
        target = target_of(metric, data, figures.snapshot)
        rows.append([metric.label, figure_text(now, metric.unit),
                     change_text(metric, now, before, comparable(metric, figures)),
                     target_text(metric, target), status_of(metric, now, target)])
    return [Block("table", rows), *records_won(report_id, figures.snapshot)] \
        if len(rows) > 1 else []


def records_won(report_id, snapshot):
    """The line under a glance that names the figures the domain records gave, which
    win over the figures sheet's, and says why a count of clients shows no change."""
    by_sheet = {}
    for metric in metrics_of(report_id) if snapshot else ():
        inputs = {metric.metric_id, *(REVENUE_METRICS if metric.formula else ())}
        for sheet in dict.fromkeys(RECORD_METRICS[m] for m in sorted(inputs & snapshot.given)):
            by_sheet.setdefault(sheet, []).append(metric.label)
    if not by_sheet:
        return []
    said = "; ".join(f"{', '.join(labels)} from {sheet}" for sheet, labels in by_sheet.items())
    history = (" clients.csv keeps no history, so no change is shown for its figures."
               if "clients.csv" in by_sheet else "")
    return [Block("paragraph", [f"Taken from the domain records, which win over the figures "
                                f"sheet: {said}.{history}"])]


def changes_since_last(report_id, data, items_now, items_before):
    """What moved, crossed its target or was measured for the first time; which items
    were closed or opened; and which are due or overdue."""
    figures = data.figures
    if figures.snapshot is None:
        said = [Block("paragraph", ["No figures yet: nothing in this report is measured. "
                                    "Add this cycle's numbers to the figures sheet."])]
    elif figures.snapshot.from_records_alone:
        said = [Block("paragraph", ["No figures sheet row for this cycle: only what the "
                                    "domain records give is measured. Add this cycle's "
                                    "numbers to the figures sheet."])]
    elif figures.previous is None:
        said = [Block("paragraph", [f"The snapshot of {figures.snapshot.as_of} is the first: "
                                    "nothing to compare with yet."])]
    else:
        said = []
    lines = [line for metric in metrics_of(report_id) if comparable(metric, figures)
             and (line := change_line(metric, data))]
    moved = [line for metric in metrics_of(report_id) if not comparable(metric, figures)
             and (line := source_change_line(metric, figures))]
    if moved:  # said once for all of them: a change of sheet is no change in the business
        lines.append(f"From another sheet than last time, so no change is computed: "
                     f"{'; '.join(moved)}.")
    lines += item_changes(report_id, data.day, items_now, items_before)
    if lines:
        return said + [Block("bullets", lines)]
    return said or [Block("paragraph", [f"Nothing moved since the snapshot of "
                                        f"{figures.previous.as_of}."])]


def comparable(metric, figures):
    """Whether the cycle's figure of a metric can be set against the last snapshot's:
    there is one, and both come from the same place (a count of clients.csv set
    against the figures sheet's number is no change in the business)."""
    return figures.previous is not None and same_source(metric, figures.previous,
                                                        figures.snapshot)


def same_source(metric, snapshot, other):
    """Whether two snapshots take a metric (and what it is computed from) from the same
    place: both from the domain records, or both from the figures sheet."""
    inputs = {metric.metric_id, *(REVENUE_METRICS if metric.formula else ())}
    return inputs & snapshot.given == inputs & other.given


def source_change_line(metric, figures):
    """The line for a figure that now comes from another place than last time: both
    figures, and no change computed between them."""
    now, before = figure_of(figures.snapshot, metric), figure_of(figures.previous, metric)
    if now is None or before is None:
        return None
    where = {True: "the domain records", False: "the figures sheet"}
    inputs = {metric.metric_id, *(REVENUE_METRICS if metric.formula else ())}
    return (f"{metric.label} {figure_text(now, metric.unit)} now, from "
            f"{where[bool(inputs & figures.snapshot.given)]}, "
            f"{figure_text(before, metric.unit)} last time, from "
            f"{where[bool(inputs & figures.previous.given)]}")


def change_line(metric, data):
    """One line of "Since the last report" for a metric, or None if it did not move."""
    snapshot, previous = data.figures.snapshot, data.figures.previous
    now, before = figure_of(snapshot, metric), figure_of(previous, metric)
    shown = figure_text(now, metric.unit)
    if now is None:
        return None if before is None else (
            f"{metric.label}: not measured this time (was {figure_text(before, metric.unit)}).")
    if before is None:
        return f"{metric.label}: measured for the first time, {shown}."
    if now == before:
        return None
    moved = f"{metric.label}: {figure_text(before, metric.unit)} to {shown}"
    target, target_before = target_of(metric, data, snapshot), target_of(metric, data, previous)
    if target is not None and target_before is not None and \
            on_target(metric, now, target) != on_target(metric, before, target_before):
        crossed = "reached" if on_target(metric, now, target) else "fell behind"
        return f"{moved}; {crossed} its target ({target_text(metric, target)})."
    return f"{moved}."


def item_changes(report_id, day, items_now, items_before):
    """Since the last report: the report's items closed and opened, then those due within
    a week (an overdue one is in Needs attention)."""
    lines = []
    for item_id, state in report_items(items_now, report_id).items():
        before = items_before.get(item_id) if items_before is not None else None
        if items_before is not None and state.status != (before and before.status):
            if state.status == "open":
                lines.append(f"Opened: {state.item.text}")
            elif before and before.status == "open":
                said = ("Done" if state.item.done_text or is_action(state) else "Closed") \
                    if state.status == "done" else state.status.capitalize()
                lines.append(f"{said}: {item_label(state.item, state.status == 'done')} "
                             f"({closing_text(state)}).")
        if state.status == "open" and state.due and day and state.dated and \
                0 <= (state.due - day).days < DUE_SOON_DAYS:  # overdue: Needs attention
            lines.append(f"Due: {item_label(state.item)} (due {state.due}).")
    return lines


def item_label(item, done=False):
    """An item in a few words: its text up to ": " where that is a phrase of its own
    ("Sergio equity risk"), else all of it; once done, what it says then."""
    text = item.done_text if done and item.done_text else item.text
    head = text.split(": ")[0]
    return (head if head != text and len(head.split()) >= 3 else text).rstrip(".")


def closing_text(state):
    """How an item was closed: by a row (its date and note), its metric, or another item."""
    if state.closed_by == "metric":
        return "the figures show it"
    if state.closed_by in RECORD_SHEETS:
        return f"{state.closed_by} records it"
    if state.closed_by:
        return f"closed with {state.closed_by}"
    return f"marked {state.status} {state.since}" + (f": {state.note}" if state.note else "")


def report_items(states, report_id):
    """The items one report lists, in rank order."""
    return {item_id: state for item_id, state in states.items()
            if report_id in state.item.reports}


def open_items(states, report_id, kind=None):
    return [state for state in report_items(states, report_id).values()
            if state.status == "open" and kind in (None, state.item.kind)]


def item_list(states, report_id, kind):
    """The report's open items of a kind, as a numbered list; its dates where it has one."""
    listed = open_items(states, report_id, kind)
    unconfirmed = [state for state in listed[:LIST_SHOWN] if state.note.endswith(NEW_ITEM_NOTE)]
    lines = [state.item.text + (f" (due {state.due})" if state.due and state.dated else "")
             + (" (unconfirmed)" if state in unconfirmed else "") for state in listed]
    if lines:
        return list_at_most(lines, "items.csv") + ([Block("paragraph", [
            "Unconfirmed: --new-data wrote it from the source document; a row in items.csv "
            "confirms or closes it."])] if unconfirmed else [])
    if any(s.item.kind == kind for s in report_items(states, report_id).values()):
        return [Block("paragraph", ["Every one items.csv lists here is closed."])]
    return [Block("paragraph", [f"items.csv has no row of this kind ({kind}) for this "
                                "report: --items lists the source document's, and a row of "
                                "your own adds one."])]


def is_action(state):
    return bool(state.item.todo) or state.item.kind in ACTION_KINDS


def other_items(states, report_id, used):
    """The report's open items that no section of its template lists (an owner's item of
    a kind the report has no section for, actions past the top ones), under a heading
    of their own; nothing where there are none."""
    actions = [state for state in open_items(states, report_id) if is_action(state)]
    shown = actions if "actions" in used else actions[:TOP_ACTIONS] if "top_actions" in used \
        else []
    rest = [state for state in open_items(states, report_id)
            if f"items_{state.item.kind}" not in used and state not in shown]
    if not rest:
        return []
    lines = [state.item.text + (f" Action: {state.item.todo}" if state.item.todo else "")
             + (f" (due {state.due})" if state.due and state.dated else "") for state in rest]
    return [Block("heading", ["Other open items " + COUNT_MARK]),
            *list_at_most(lines, "items.csv")]


def action_list(states, report_id, most=None):
    """The report's open actions, most pressing first: each open item's action, and the
    items that are actions themselves."""
    actions = [state.item.todo or state.item.text for state in open_items(states, report_id)
               if is_action(state)][:most]
    return list_at_most(actions, "items.csv") if actions else [
        Block("paragraph", ["items.csv has no open action for this report."])]


def item_todo(item):
    return (item.todo or item.text).rstrip(".")


def revenue_part_target(data, metric, month):
    """The total's target for a month where targets.csv sets none: the sum of the
    businesses' targets, once each has one."""
    if metric.metric_id != "revenue_total":
        return None
    parts = [data.targets.get(m, {}).get(month, data.targets.get(m, {}).get(""))
             for m in REVENUE_METRICS]
    return None if None in parts else sum(parts)


def month_range(first, last):
    """The months from first to last, YYYY-MM, both included."""
    year, month = map(int, first.split("-"))
    months = []
    while f"{year}-{month:02d}" <= last:
        months.append(f"{year}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def trend_table(report_id, figures):
    """Each figure measured at least twice, over the last snapshots, oldest first: the
    bars rise from zero, so a dip of 7% is a bar 7% shorter."""
    rows = [["Measure", f"Last {len(figures.history)}", "Oldest", "Newest"]]
    for metric in metrics_of(report_id):
        # A point from another source than the newest's (the figures sheet's number
        # before the records gave one) is left out: it would show a change of source.
        values = [figure_of(snapshot, metric) if same_source(metric, snapshot,
                                                             figures.snapshot) else None
                  for snapshot in figures.history]
        known = [value for value in values if value is not None]
        middles = tuple(None if v is None or not v[0].is_finite() else sum(v) / 2
                        for v in values)
        if len(known) >= 2 and sum(m is not None for m in middles) >= 2:
            rows.append([metric.label, Trend(middles), figure_text(known[0], metric.unit),
                         figure_text(known[-1], metric.unit)])
    if len(rows) == 1:
        return [Block("paragraph", ["A trend appears once two snapshots measure a figure."])]
    return [Block("table", rows)]


# What a row of each record sheet is, for the line a report gives while it has none.
def missing_record(data, sheet, first=False):
    """What a report says for a record sheet with no rows for the cycle: how to start
    it, in the first section that needs it; in the others, that it has none."""
    if not first:  # said once, in the first section: nothing here until then
        return []
    if sheet not in data.sheets:
        said = (f"No {sheet} yet: run --new-data on the data folder (it writes the first "
                f"line of each sheet not there, and keeps the rest), then add "
                f"{SHEETS[sheet].row_is}.")
    elif sheet == "clients.csv":
        said = f"{sheet} has no rows yet: add {SHEETS[sheet].row_is}."
    else:
        said = f"{sheet} has no rows dated on or before this cycle: add {SHEETS[sheet].row_is}."
    said += " The sections below that it fills stay empty until then."
    return [Block("paragraph", [said])]


def money_text(value):
    return "-" if value is None else amount_text(value, "dollars")


def billing_gap(client, data):
    """Why an active client is not billed as it should be, or None."""
    if not client.billing_model:
        return "on no billing model"
    if client.last_invoiced is None:
        return "never invoiced"
    days = data.day and (data.day - client.last_invoiced).days
    if days and days >= rule_level(data, "invoice_gap_days"):
        return f"not invoiced since {client.last_invoiced} ({days} days)"
    return None


def days_until(day, today):
    """Days from today to day, or None where either is unknown."""
    return None if day is None or today is None else (day - today).days


def recent_months(data, days, most=12):
    """The cycle's month and those before it, at most `most`, from the first month with
    a record."""
    first = max(min(map(month_of, days), default=month_of(data.day)),
                first_month(data.day, most))
    return month_range(first, month_of(data.day))


def first_month(day, months):
    """The first of the `months` months that end with day's: "2025-12" for 12 months
    to 2026-11-30."""
    index = day.year * 12 + day.month - months  # the month before the first, from 0
    return f"{index // 12}-{index % 12 + 1:02d}"


def month_target(metric, data, month):
    """A metric's target for a month: targets.csv's, else (for the revenue total) the
    sum of the businesses' targets, else the catalogue's."""
    monthly = data.targets.get(metric.metric_id, {})
    for key in (month, ""):  # the month's own row, then the row for every month
        if key in monthly:
            return monthly[key]
    summed = revenue_part_target(data, metric, month)
    return catalogue_target(metric) if summed is None else summed


def figure_by_month(data, metric_id, month):
    """A figure that holds until it changes (the rent due, the capacity): the latest
    snapshot's that measured it, up to the month's end (the snapshots are oldest
    first, so the search runs from the newest and stops at the first)."""
    end = month_end(month)
    for snapshot in reversed(data.figures.all):
        if snapshot.as_of <= end and metric_id in snapshot.figures:
            return snapshot.figures[metric_id][0]
    return None


def sum_ranges(figures):
    """The sum of (low, high) figures, None where there are none."""
    known = [figure for figure in figures if figure is not None]
    if not known:
        return None
    return sum(low for low, _ in known), sum(high for _, high in known)


def latest_by_month(data, metric_id):
    """{YYYY-MM: figure}: each month's latest snapshot that measured the metric."""
    months = {}
    for snapshot in data.figures.all:
        if metric_id in snapshot.figures:
            months[month_of(snapshot.as_of)] = snapshot.figures[metric_id]
    return months


class Placeholders(Mapping):
    """A report's placeholders, each worked out the first time its template asks for
    it: a report computes only what it shows.  A name no one can fill is a KeyError."""

    def __init__(self, makers):
        self._makers = makers
        self._made = {}

    def __getitem__(self, name):
        if name not in self._made:
            self._made[name] = self._makers[name]()
        return self._made[name]

    def __iter__(self):
        return iter(self._makers)

    def __len__(self):
        return len(self._makers)


def report_values(spec, data, used=(), **given):
    """The placeholders and slots of a report's template: those given (the title, the
    cycle...), those every report shares, and the report's own (spec.values), each
    filled from the owner's data.  used: the names the template uses, so that what it
    does not list can be listed apart."""
    figures = data.figures
    snapshot = figures.snapshot
    states = data.items
    report_id = spec.report_id
    makers = {
        **{name: (lambda value=value: value) for name, value in given.items()},
        "figures_line": lambda: (f"as of {snapshot.as_of}" + (
            f" ({snapshot.note})" if snapshot.note else "")
            if figures.row else "none for this cycle in the figures sheet" + (
                "; the domain records give theirs" if snapshot else "")),
        "attention": lambda: attention_list(data, report_id),
        "glance": lambda: glance_table(report_id, data),
        "changes": lambda: changes_since_last(report_id, data, states, data.items_before),
        "trends": lambda: trend_table(report_id, figures),
        "top_actions": lambda: action_list(states, report_id, TOP_ACTIONS),
        "actions": lambda: action_list(states, report_id),
        **{f"items_{kind}": (lambda kind=kind: item_list(states, report_id, kind))
           for kind in ITEM_KINDS},
        **{f"count_{kind}": (lambda kind=kind: str(len(open_items(states, report_id, kind))))
           for kind in ITEM_KINDS},
        "other_items": lambda: other_items(states, report_id, used),
        **(spec.values(data) if spec.values else {}),
    }
    return Placeholders(makers)



# --- The CEO report: portfolio health and the 30-day agenda ---------------------------

AGENDA_DAYS = 30  # the CEO's agenda: what falls due in these days, by week


CEO_TEMPLATE = ReportTemplate("""\
## Needs attention [brief]
${attention}

## Since the last report [brief]
${changes}

## At a glance [brief]
${glance}

## Top actions [brief]
${top_actions}

## Executive summary
${summary}

## Trends over the last snapshots
${trends}

## P&L by business
${pnl}

## Critical shortfalls (#)
${items_shortfall}

## Shortfalls by business
${shortfall_split}

## Missing KPIs (#)
${missing_kpis}

## 30-day execution agenda, from ${cycle}
${agenda}

${other_items}
""")


def agenda_table(states, day):
    """The CEO's 30-day agenda: its open items with a due date, by week (overdue first)."""
    weeks = {}
    for state in open_items(states, "ceo"):
        if state.due is None or day is None or (state.due - day).days >= AGENDA_DAYS:
            continue
        days = (state.due - day).days
        week = "Overdue" if days < 0 else str(days // 7 + 1)
        overdue = f" (due {state.due})" if days < 0 else ""
        weeks.setdefault(week, []).append((state.due, item_todo(state.item) + overdue))
    rows = [["Week", "Actions"]] + [
        [week, joined_at_most([todo for _, todo in sorted(todos, key=lambda pair: pair[0])])]
        for week, todos in sorted(weeks.items(), key=lambda pair: (pair[0] != "Overdue",
                                                                   pair[0]))]
    return [Block("table", rows)] if len(rows) > 1 else [
        Block("paragraph", [f"Nothing is due in the next {AGENDA_DAYS} days."])]


def shortfall_split(states):
    """The CEO's open shortfalls by business, as bars of their share."""
    shortfalls = open_items(states, "ceo", "shortfall")
    businesses = list(dict.fromkeys(state.item.business or "Portfolio" for state in shortfalls))
    rows = [["Business", f"Share of {len(shortfalls)}", "Shortfalls"]]
    for business in businesses:
        mine = [s for s in shortfalls if (s.item.business or "Portfolio") == business]
        rows.append([business, Bar(len(mine), len(shortfalls)),
                     joined_at_most([item_label(s.item) for s in mine])])
    return table_at_most(rows, "items.csv") if shortfalls else [
        Block("paragraph", ["items.csv has no open critical shortfall."])]


def unmeasured(figures):
    """The catalogue's measured metrics with no figure in the cycle's snapshot."""
    return [metric for metric in MEASURED_METRICS if figure_of(figures.snapshot, metric) is None]


def missing_kpis(figures):
    """The catalogue's metrics this snapshot did not measure."""
    missing = [metric.label for metric in unmeasured(figures)]
    return [Block("numbered", missing)] if missing else [
        Block("paragraph", ["Every metric in the catalogue was measured."])]


def executive_summary(data):
    """The CEO's summary, computed: what needs attention most, then what improved and
    what worsened since the last snapshot."""
    entries = needs_attention(data, "ceo")
    said = [f"{len(entries)} thing(s) need attention; "
            f"{'the biggest' if entries[0].money > 0 else 'the longest overdue'}: "
            f"{'; '.join(e.label for e in entries[:3])}."
            if entries else calm_line(data)]
    better, worse = movements(data)
    if data.figures.previous is not None:
        said.append(f"Better since {data.figures.previous.as_of}: {'; '.join(better)}."
                    if better else f"Nothing got better since {data.figures.previous.as_of}.")
        said.append(f"Worse: {'; '.join(worse)}." if worse else "Nothing got worse.")
    return [Block("paragraph", [" ".join(said)])]


def movements(data):
    """([better], [worse]): the CEO's figures that moved since the last snapshot, each
    judged by which way is good for it."""
    better, worse = [], []
    figures = data.figures
    for metric in metrics_of("ceo"):
        if not comparable(metric, figures):
            continue
        now, before = figure_of(figures.snapshot, metric), figure_of(figures.previous, metric)
        if now is None or before is None or now == before or \
                not all(v.is_finite() for v in (*now, *before)):
            continue
        if sum(now) == sum(before):
            continue  # a range moved about the same middle: neither better nor worse
        rose = sum(now) > sum(before)
        moved = f"{metric.label} {figure_text(before, metric.unit)} to " \
                f"{figure_text(now, metric.unit)}"
        (better if rose == (metric.good != "down") else worse).append(moved)
    return better, worse


def pnl_table(data):
    """The CEO's P&L: revenue, cost and net a month for each business the sheets give,
    the rental and the deliveries included, with a total."""
    snapshot = data.figures.snapshot
    lines, notes = [], []  # (business, revenue, cost), and where each comes from
    for metric_id, name in (("revenue_jada_qos", "JADA / QOS"), ("revenue_qdn", "QDN"),
                            ("revenue_dc", "DC")):
        figure = figure_of(snapshot, METRICS_BY_ID[metric_id])
        if figure is not None:
            lines.append((name, figure, None))
    if lines:
        dc = " (DC's billed revenue: clients.csv)" if snapshot and "revenue_dc" in \
            snapshot.given else ""
        notes.append(f"the businesses' revenue a month: {as_of_text(data)}{dc}; their costs "
                     "are not split by business in the sheets")
    month = data.day and month_before(data.day)
    entries = [e for e in data.rental or () if month and month_of(e.day) == month]
    if entries:
        lines.append(("Rental, 3028 51st St", (ledger_sum(entries, month, "rent"),) * 2,
                      (ledger_sum(entries, month, "expense"),) * 2))
        notes.append(f"the rental: rental.csv, {month}")
    recent = recent_deliveries(data, 30)
    if recent:
        lines.append(("Yacht deliveries", (sum(d.price for d in recent),) * 2,
                      (sum(d.cost for d in recent),) * 2))
        notes.append(f"the deliveries: the {len(recent)} priced and costed in deliveries.csv "
                     "in the last 30 days")
    burn = figure_of(snapshot, METRICS_BY_ID["monthly_burn"])
    if burn is not None:
        lines.append(("Portfolio burn", None, burn))
        notes.append("the burn: the figures sheet's monthly burn (if it already holds the "
                     "rental's expenses or the deliveries' costs, the total counts them twice)")
    if not lines:
        return [Block("paragraph", ["Nothing to show until the figures sheet gives a revenue "
                                    "or the burn, or rental.csv or deliveries.csv has rows."])]
    lines.append(("Total", sum_ranges(line[1] for line in lines),
                  sum_ranges(line[2] for line in lines)))
    rows = [["Business", "Revenue", "Cost", "Net"]] + [pnl_row(*line) for line in lines]
    return [Block("table", rows), Block("paragraph", [
        "Where each row comes from: " + "; ".join(notes) + ". The total adds the rental's "
        "and the deliveries' to the businesses' revenue: it is not the glance's Revenue/month, "
        "total, which is the three businesses' alone."])]


def pnl_row(name, revenue, cost):
    """A row of the P&L; its net, where it has both sides, marked when it is negative."""
    if revenue is None or cost is None:
        net = "-"
    else:
        low, high = revenue[0] - cost[1], revenue[1] - cost[0]
        net = Status(figure_text((low, high), "dollars"), "good" if low >= 0 else "bad")
    return [name, figure_text(revenue, "dollars"), figure_text(cost, "dollars"), net]


def ceo_values(data):
    """The CEO report's own placeholders."""
    return {
        "summary": lambda: executive_summary(data),
        "pnl": lambda: pnl_table(data),
        "shortfall_split": lambda: shortfall_split(data.items),
        "missing_kpis": lambda: missing_kpis(data.figures),
        "agenda": lambda: agenda_table(data.items, data.day),
    }


CEO_REPORT = ReportSpec("ceo", "CEO Report: portfolio health and 30-day agenda",
                        CEO_TEMPLATE, ceo_values)


# --- The CTO report: stack, security and engineering actions --------------------------

STACKS = ("JADA", "QOS", "QDN", "DC", "All")  # the CTO's stack-by-stack audit


CTO_TEMPLATE = ReportTemplate("""\
## Needs attention [brief]
${attention}

## Since the last report [brief]
${changes}

## At a glance [brief]
${glance}

## Top actions [brief]
${top_actions}

## Stack-by-stack audit
${stack_audit}

## Security gaps found in the audit (#)
${items_security_gap}

## AWS cost analysis
| Item | Monthly cost |
| AWS, this snapshot | ${aws_cost} |
| Target | ${aws_target} |
| SES, $0.10 per 1,000 emails | cents at eight reports a cycle |

SES's free tier (62,000 emails a month) is only for mail sent from an
application on EC2; at eight reports a cycle SES costs cents a month.

## Trends over the last snapshots
${trends}

## UX shortfalls (#)
${items_ux_gap}

## Dev cycle gaps (#)
${items_dev_gap}

## Engineering actions, ranked by security impact and user value (#)
${actions}

${other_items}
""")


def stack_audit(states):
    """The CTO's open findings, stack by stack."""
    if not any(s.item.kind != "action" for s in report_items(states, "cto").values()):
        return [Block("paragraph", ["items.csv has no finding for the CTO yet: --items "
                                    "lists the source document's."])]
    rows = [["Stack", "Open findings"]]
    for stack in STACKS:
        found = [item_label(s.item) for s in open_items(states, "cto")
                 if s.item.kind != "action" and (s.item.business or "All") == stack]
        rows.append([stack, joined_at_most(found) or "none open in items.csv"])
    return [Block("table", rows)]


def aws_cost(data):
    """The AWS bill a month, as the figures give it."""
    metric = METRICS_BY_ID["aws_monthly_cost"]
    figure = figure_of(data.figures.snapshot, metric)
    return "not measured" if figure is None else figure_text(figure, metric.unit)


def aws_target(data):
    metric = METRICS_BY_ID["aws_monthly_cost"]
    return target_text(metric, target_of(metric, data, data.figures.snapshot))


def cto_values(data):
    """The CTO report's own placeholders."""
    return {
        "stack_audit": lambda: stack_audit(data.items),
        "aws_cost": lambda: aws_cost(data),
        "aws_target": lambda: aws_target(data),
    }


CTO_REPORT = ReportSpec("cto", "CTO Report: stack, security and engineering actions",
                        CTO_TEMPLATE, cto_values)


# --- The Accounting Officer report: the books and the roadmap to profitability --------

ACCOUNTING_TEMPLATE = ReportTemplate("""\
## Needs attention [brief]
${attention}

## Since the last report [brief]
${changes}

## At a glance [brief]
${glance}

## Top actions [brief]
${top_actions}

## Critical finding
${accounting_finding}

## Trends over the last snapshots
${trends}

## Revenue recognition gaps (#)
${items_recognition_gap}

## Chart of accounts audit
The recommended structure, with one class per business (JADA, QOS, QDN, DC) plus
the 3028 51st St rental and Expert Yacht Delivery:

| Range | Type | Accounts |
| 1000-1999 | Assets | Operating bank per business, Stripe clearing, deposits held |
| 2000-2999 | Liabilities | Customer deposits, owner loans, credit cards |
| 3000-3999 | Equity | Owner capital; partner equity |
| 4000-4999 | Revenue | Charters, events, deliveries, QDN jobs, DC services, rent |
| 5000-5999 | Direct costs | Crew, fuel, dockage, disposal fees, contractors |
| 6000-6999 | Operating expenses | Software, AWS, insurance, marketing |

## Expense categorisation by function
${expense_functions}

## Four-milestone roadmap to profitability, through Q1 2027: open (#)
${items_milestone}

${other_items}
""")


def accounting_finding(data):
    """Whether an accounting system is live, as the figures sheet says."""
    snapshot = data.figures.snapshot
    live = figure_of(snapshot, METRICS_BY_ID["accounting_system_live"])
    if live is None:
        return ("Not measured: whether an accounting system is live goes in the figures "
                "sheet, as accounting_system_live (yes or no).")
    if live[0]:
        return (f"An accounting system is live ({as_of_text(data)}): keep the books to the "
                "chart of accounts below and close them monthly.")
    return (f"No accounting system is live ({as_of_text(data)}): until one is, no financial "
            "statement of this cycle can be produced from books.")


def expense_functions(data):
    """Expenses by function, in dollars, where the records hold them: the cycle's month
    and the last 12."""
    if data.day is None:
        return [Block("paragraph", ["Nothing to show: the cycle has no date."])]
    first, this = first_month(data.day, 12), month_of(data.day)
    rows = [["Function", "From", "This month so far", "Last 12 months"]]
    delivery = [d for d in data.deliveries or () if d.cost is not None
                and month_of(d.day) >= first]
    if delivery:
        rows.append(["Operations (deliveries)", "deliveries.csv",
                     money_text(sum((d.cost for d in delivery if month_of(d.day) == this),
                                    Decimal(0))),
                     money_text(sum(d.cost for d in delivery))])
    aws = {month: figure for month, figure in latest_by_month(data, "aws_monthly_cost")
           .items() if month >= first}
    if aws:
        rows.append(["Technology (AWS)", "figures sheet", figure_text(aws.get(this), "dollars"),
                     figure_text(sum_ranges(aws.values()), "dollars")
                     + f" ({len(aws)} month(s) measured)"])
    spent = [e for e in data.rental or () if e.kind == "expense" and month_of(e.day) >= first]
    if spent:
        rows.append(["Property (3028 51st St)", "rental.csv",
                     money_text(sum((e.amount for e in spent if month_of(e.day) == this),
                                    Decimal(0))),
                     money_text(sum(e.amount for e in spent))])
    policy = ("How expenses are categorised: Operations (crew, fuel, dockage, maintenance, "
              "disposal fees), Technology (AWS, software), Marketing (OTA commissions, email "
              "platform, advertising), Administration (insurance, legal, accounting), "
              "Property (3028 51st St by category).")
    if len(rows) == 1:
        return [Block("paragraph", ["No expense is in the sheets yet: deliveries.csv's "
                                    "costs, the figures sheet's aws_monthly_cost and "
                                    "rental.csv's expenses fill this table.", policy])]
    return [Block("table", rows), Block("paragraph", [
        "Marketing and Administration have no sheet of their own yet. " + policy])]


def accounting_values(data):
    """The Accounting Officer report's own placeholders."""
    return {
        "accounting_finding": lambda: accounting_finding(data),
        "expense_functions": lambda: expense_functions(data),
    }


ACCOUNTING_REPORT = ReportSpec("accounting", "Accounting Officer Report: books and roadmap",
                               ACCOUNTING_TEMPLATE, accounting_values)


# --- The CMO report: channels, the email blast and OTA sequencing ---------------------

CMO_TEMPLATE = ReportTemplate("""\
## Needs attention [brief]
${attention}

## Since the last report [brief]
${changes}

## At a glance [brief]
${glance}

## Top actions [brief]
${top_actions}

## Channel-by-channel visibility matrix
${channel_matrix}

## Business case: an email blast
${email_blast}

## OTA sequencing
1. Sailo first.
2. GetMyBoat second.
3. Viator and GetYourGuide only after certificate of insurance hardening (the
   CFO report's third control rule).

## Trends over the last snapshots
${trends}

## QDN local SEO roadmap: steps open (#)
${items_seo_step}

## 30/60/90-day milestones: open (#)
${items_milestone}

## Attribution tracking requirements
Every campaign link carries UTM tags; every booking records its channel; the
monthly review compares bookings per channel against spend.

${other_items}
""")


def channel_matrix(data, states):
    """The CMO's channels: what each reaches now, from the figures and the items."""
    snapshot = data.figures.snapshot

    def shown(metric_id, after=""):
        metric = METRICS_BY_ID[metric_id]
        figure = figure_of(snapshot, metric)
        return "not measured" if figure is None else figure_text(figure, metric.unit) + after

    seo = len(open_items(states, "cmo", "seo_step"))
    rows = [["Channel", "Businesses", "Now"],
            ["Email list", "JADA / QOS", f"{shown('email_list_size', ' people')}; open rate "
                                         f"{shown('email_open_rate')}"],
            ["OTA marketplaces", "JADA / QOS", shown("ota_listings", " listed")],
            ["Local search / SEO", "QDN", f"{seo} roadmap step(s) open" if any(
                s.item.kind == "seo_step" for s in states.values())
                else "no roadmap step in items.csv"],
            ["Enquiries", "QDN", shown("qdn_enquiries", " a week")],
            ["Analytics", "every site", shown("sites_with_analytics", " site(s) measured")]]
    return [Block("table", rows)]


def state_text(state):
    """A statement of state from an item: what is true while it is open, else once done."""
    if state.status == "open":
        return state.item.text
    said = (state.item.done_text if state.status == "done" else None) or state.item.text
    return f"{said.rstrip('.')} ({closing_text(state)})."


def email_blast(data, states):
    """The email blast's case: the list as measured, the source document's model (named
    as a model), and where the blast stands in items.csv."""
    snapshot = data.figures.snapshot
    size = figure_of(snapshot, METRICS_BY_ID["email_list_size"])
    said = [f"The list: {figure_text(size, 'count')} people ({as_of_text(data)})."
            if size else "The list's size is not measured: add email_list_size to the "
                         "figures sheet."]
    said.append("The source document models a blast to it at $10K-50K of concert booking "
                "potential: a model, not a measured return. The reasoning: a list that "
                "exists costs nothing to reach through SES, so it comes before paid "
                "channels.")
    state = states.get("email-blast")
    said.append("items.csv has no row for the blast (id email-blast)." if state is None
                else f"items.csv: {state_text(state)}" if state.status != "open"
                else f"items.csv: open" + (f", due {state.due}." if state.due else "."))
    return [Block("paragraph", [" ".join(said)])]


def cmo_values(data):
    """The CMO report's own placeholders."""
    return {
        "channel_matrix": lambda: channel_matrix(data, data.items),
        "email_blast": lambda: email_blast(data, data.items),
    }


CMO_REPORT = ReportSpec("cmo", "CMO Report: channels, email blast and OTA sequencing",
                        CMO_TEMPLATE, cmo_values)


# --- The CFO report: revenue, burn, capital tiers and control rules -------------------

REVENUE_TABLE_MONTHS = 12  # the CFO's revenue table: a year from the quarter's start


CFO_TEMPLATE = ReportTemplate("""\
## Needs attention [brief]
${attention}

## Since the last report [brief]
${changes}

## At a glance [brief]
${glance}

## Top actions [brief]
${top_actions}

## Monthly revenue against target
${revenue_months}

## Burn rate model
${burn_model}

## Tiered capital deployment framework
1. Zero-cost initiatives: email blast, OTA listings, SEO fixes.
2. Low-cost infrastructure: accounting system, analytics, WAF.
3. Revenue-producing features: availability calendar, booking flow.
4. No-deploy guardrails: nothing ships that breaks the control rules.

## Charters booked against their target
${break_even}

## Trends over the last snapshots
${trends}

## Three non-negotiable financial control rules
1. No hardcoded keys: payment credentials live outside the code.
2. Audit trail on all expenses: every expense is categorised and recorded.
3. COI verification before charter acceptance: no certificate of insurance, no
   charter.

${other_items}
""")


def revenue_table(data):
    """The CFO's monthly revenue against target, from the start of the cycle's quarter to
    the last month with a revenue target: target, actual, status and difference; and
    each quarter's total."""
    metrics = [METRICS_BY_ID[m] for m in (*REVENUE_METRICS, "revenue_total")]
    targeted = [month or month_of(data.day) for metric in metrics if data.day
                for month in data.targets.get(metric.metric_id, {})]
    if data.day is None or not targeted:
        return [Block("paragraph", ["No monthly revenue targets yet: add them to targets.csv "
                                    "(metric,month,target), a row per business and month."])]
    rows = [["Month", "Revenue", "Target", "Actual", "Status, difference"]]
    months = month_range(quarter_start(data.day), max(max(targeted), f"{data.day:%Y-%m}"))
    later = months[REVENUE_TABLE_MONTHS:]  # a year from the quarter's start at most
    months = months[:REVENUE_TABLE_MONTHS]
    for quarter in dict.fromkeys(quarter_of(month) for month in months):
        in_quarter = [month for month in months if quarter_of(month) == quarter]
        for month in in_quarter:
            rows += [revenue_row(month, metric, *month_revenue(data, metric, [month]))
                     for metric in metrics]
        rows += [revenue_row(quarter, metric, *month_revenue(data, metric, in_quarter))
                 for metric in metrics]
    return [Block("table", rows)] + ([Block("paragraph", [
        f"The targets after {months[-1]} (up to {later[-1]}) are not shown: the table covers "
        "a year from the quarter's start."])] if later else [])


def month_revenue(data, metric, months):
    """(target, actual, whether every month is over) of a metric summed over months;
    None where a month lacks an actual."""
    targets = [month_target(metric, data, month) for month in months]
    actuals = [month_actual(data, metric, month) for month in months]
    total = (lambda values: None if None in values else sum(values))
    return total(targets), total(actuals), months[-1] < f"{data.day:%Y-%m}"


def month_actual(data, metric, month):
    """A revenue's actual for a month: what the records give, in the cycle's month
    (clients.csv bills as of the cycle's day), else the month's latest snapshot's; the
    total, the sum of the businesses' where each has one."""
    if metric.formula:
        parts = [month_actual(data, METRICS_BY_ID[m], month) for m in REVENUE_METRICS]
        return None if None in parts else sum(parts)
    cycle = data.figures.snapshot
    if cycle and month == month_of(data.day) and metric.metric_id in cycle.given:
        figure = cycle.counted[metric.metric_id]
    else:
        figure = figure_of(next((s for s in reversed(data.figures.all)
                                 if month_of(s.as_of) == month), None), metric)
    return figure and figure[0]


def revenue_row(month, metric, target, actual, past):
    """One row of the revenue table; its status says the difference too (five columns
    fit a phone)."""
    name = "Total" if metric.metric_id == "revenue_total" else metric.label.split(" ")[0]
    if actual is None:
        status = Status("not measured" if past else "to come", "none")
    elif target is None:
        status = Status("no target", "none")
    else:
        difference = amount_text(actual - target, "dollars")
        status = Status(f"on track, {'+' * (actual > target)}{difference}", "good") \
            if actual >= target else Status(f"behind, {difference}", "bad")
    return [month, name, "-" if target is None else amount_text(target, "dollars"),
            "-" if actual is None else amount_text(actual, "dollars"), status]


def quarter_start(day):
    return f"{day.year}-{(day.month - 1) // 3 * 3 + 1:02d}"


def quarter_of(month):
    year, number = month.split("-")
    return f"Q{(int(number) - 1) // 3 + 1} {year}"


def break_even_table(figures):
    """Charters booked in each recent snapshot against the break-even (their target in the
    catalogue)."""
    metric = METRICS_BY_ID["charters_booked"]
    target = int(catalogue_target(metric))
    rows = [["As of", "Charters", f"Against the target ({target})"]]
    for snapshot in figures.history:
        figure = figure_of(snapshot, metric)
        if figure is not None:
            booked = int(figure[0])
            rows.append([str(snapshot.as_of), str(booked), Bar(min(booked, target), target)])
    return [Block("table", rows)] if len(rows) > 1 else [
        Block("paragraph", ["Charters booked are not yet measured."])]


def burn_model(data):
    """The burn, what a charter brings in, and how many charters a month would cover
    the burn with the other businesses' revenue: computed, never assumed."""
    snapshot = data.figures.snapshot
    burn = figure_of(snapshot, METRICS_BY_ID["monthly_burn"])
    charters = figure_of(snapshot, METRICS_BY_ID["charters_booked"])
    charter_revenue = figure_of(snapshot, METRICS_BY_ID["revenue_jada_qos"])
    per_charter = (cents(charter_revenue[0] / charters[0]) if charters and charters[0]
                   and charter_revenue else None)
    others = [figure_of(snapshot, METRICS_BY_ID[m]) for m in ("revenue_qdn", "revenue_dc")]
    needed = None
    if burn and per_charter is not None and None not in others:
        uncovered = burn[1] - sum(o[0] for o in others)
        needed = (max(0, math.ceil(uncovered / per_charter)) if per_charter > 0 else
                  0 if uncovered <= 0 else "none")  # a charter that brings nothing in
    target = target_of(METRICS_BY_ID["charters_booked"], data, snapshot)
    rows = [["Item", "Figure"],
            ["Monthly burn", figure_text(burn, "dollars")],
            ["JADA/QOS revenue per charter", money_text(per_charter)],
            ["Charters a month that cover the burn", "-" if needed is None else
             "no number" if needed == "none" else str(needed)],
            ["Charters booked, target", target_text(METRICS_BY_ID["charters_booked"], target)]]
    how = ("How: revenue per charter is JADA/QOS revenue over charters booked; the charters "
           "that cover the burn are what the burn's upper end leaves after QDN's and DC's "
           "revenue, over that.")
    if needed is None:
        how += (" It needs the burn, charters booked (more than 0), and JADA/QOS, QDN and "
                "DC revenue.")
    return [Block("table", rows), Block("paragraph", [how])]


def cfo_values(data):
    """The CFO report's own placeholders."""
    return {
        "revenue_months": lambda: revenue_table(data),
        "burn_model": lambda: burn_model(data),
        "break_even": lambda: break_even_table(data.figures),
    }


CFO_REPORT = ReportSpec("cfo", "CFO Report: burn, capital tiers and control rules",
                        CFO_TEMPLATE, cfo_values)


# --- The rental audit: 3028 51st St ---------------------------------------------------

RENTAL_TEMPLATE = ReportTemplate("""\
## Needs attention [brief]
${attention}

## Since the last report [brief]
${changes}

## At a glance [brief]
${glance}

## Top actions [brief]
${top_actions}

## Property asset valuation
${valuation} A current valuation carries the property in the chart of accounts
(Assets) at a known figure.

## Rental revenue visibility
${rent_ledger} Rent received against rent due, the expenses and the net income,
month by month (rental.csv, and rent_due in the figures):

${rent_months}

## Trends over the last snapshots
${trends}

## Expense tracking by maintenance category
${expenses}

## Seasonal demand modelling
The model: the mean occupancy of each calendar month over the years recorded.

${seasons}

## Occupancy rate targets
Occupancy against its target, month by month (the target: targets.csv, metric
rental_occupancy).

${occupancy_months}

${other_items}
""")


def rent_table(data):
    """Rent received, rent due, expenses and net income by month, for the last 12."""
    if not data.rental or data.day is None:
        return missing_record(data, "rental.csv", first=True)
    months = recent_months(data, (e.day for e in data.rental))
    rows = [["Month", "Rent", "Rent due", "Expenses", "Net income"]]
    for month in months:
        entries = [e for e in data.rental if month_of(e.day) == month]
        rent, spent = ledger_sum(entries, month, "rent"), ledger_sum(entries, month, "expense")
        due = figure_by_month(data, "rent_due", month)
        rows.append([month, rent_cell(rent, due, month == month_of(data.day)),
                     money_text(due), money_text(spent),
                     money_text(rent - spent) if entries else "-"])
    return [Block("table", rows)]


def rent_cell(rent, due, in_progress):
    """A month's rent against the rent due: short is flagged once the month is over
    (rent due on the 1st is not late on the 1st)."""
    if due is None or (in_progress and rent < due):
        return money_text(rent) + (" so far" if in_progress and due else "")
    return Status(money_text(rent), "good" if rent >= due else "bad")


def expense_table(data):
    """Expenses by category (the owner's words, case aside): this month and the last 12."""
    if not data.rental or data.day is None:
        return missing_record(data, "rental.csv")
    first = first_month(data.day, 12)  # the rent table's twelve months
    names, sums = {}, {}
    for entry in data.rental:
        if entry.kind != "expense" or month_of(entry.day) < first:
            continue
        key = (entry.category or "uncategorised").casefold()
        names.setdefault(key, entry.category or "uncategorised")
        this_month, year = sums.get(key, (Decimal(0), Decimal(0)))
        sums[key] = (this_month + (entry.amount if month_of(entry.day) == month_of(data.day)
                                   else 0), year + entry.amount)
    rows = [["Category", "This month", "Last 12 months"]]
    rows += [[names[key], money_text(this_month), money_text(year)]
             for key, (this_month, year) in sorted(sums.items(), key=lambda pair: -pair[1][1])]
    return table_at_most(rows, "rental.csv", "the most spent first") if sums else [
        Block("paragraph", ["No expense is recorded in the last 12 months."])]


def occupancy_by_month(data):
    """{YYYY-MM: occupancy}: each month's latest snapshot that measured it."""
    return {month: figure[0] for month, figure in
            latest_by_month(data, "rental_occupancy").items()}


def occupancy_table(data):
    """Occupancy against its target, month by month, for the last 12."""
    recorded = occupancy_by_month(data)
    if not recorded or data.day is None:
        return [Block("paragraph", ["No occupancy is recorded: add rental_occupancy to the "
                                    "figures sheet."])]
    metric = METRICS_BY_ID["rental_occupancy"]
    rows = [["Month", "Occupancy", "Target", "Status"]]
    for month in recent_months(data, map(date.fromisoformat, (m + "-01" for m in recorded))):
        figure = recorded.get(month)
        target = month_target(metric, data, month)
        rows.append([month, "-" if figure is None else amount_text(figure, "percent"),
                     target_text(metric, target),
                     status_of(metric, None if figure is None else (figure, figure),
                               target)])
    return [Block("table", rows)]


def seasonal_table(data):
    """Mean occupancy by calendar month over the years recorded; said plainly when less
    than a year is recorded."""
    recorded = occupancy_by_month(data)
    if not recorded:
        return [Block("paragraph", ["No occupancy is recorded yet, so no season can be "
                                    "seen."])]
    by_month = {}
    for month, occupancy in recorded.items():
        by_month.setdefault(month[5:], []).append(occupancy)
    rows = [["Month", "Mean occupancy", "Years"]]
    rows += [[date(2000, int(number), 1).strftime("%B"),
              amount_text((sum(values) / len(values)).quantize(Decimal("0.1"),
                                                               rounding=ROUND_HALF_UP), "percent"),
              str(len(values))] for number, values in sorted(by_month.items())]
    span = len(month_range(min(recorded), max(recorded)))
    unmeasured_months = [date(2000, number, 1).strftime("%B") for number in range(1, 13)
                         if f"{number:02d}" not in by_month]
    if span < 12:
        said = [f"Not enough data for a seasonal model: {len(recorded)} month(s) of "
                f"occupancy are recorded, since {min(recorded)}, less than a year; the table "
                "fills in as a full year is measured."]
    elif unmeasured_months:
        said = [f"No occupancy is recorded for {', '.join(unmeasured_months)}: those "
                "months have no mean yet."]
    else:
        said = []
    return ([Block("paragraph", said)] if said else []) + [Block("table", rows)]


def valuation_text(data):
    """The property's valuation and its date, from the figures."""
    valued = [s for s in data.figures.all if "property_valuation" in s.figures]
    if valued:
        latest = valued[-1]
        return (f"Valuation: {figure_text(latest.figures['property_valuation'], 'dollars')}, "
                f"as of {latest.as_of}.")
    return "No valuation in the figures sheet: add property_valuation."


def rent_ledger(data):
    """What rental.csv records of rent, as a sentence."""
    if not data.rental:
        return "rental.csv records no rent payment up to this cycle."
    paid = [e for e in data.rental if e.kind == "rent"]
    if not paid:
        return "rental.csv records expenses but no rent payment up to this cycle."
    return f"rental.csv records {len(paid)} rent payment(s), the last on {paid[-1].day}."


RENT_LEDGER_RULE = RecordRule(
    "rental-rent-ledger", "rental.csv", lambda entries: any(e.kind == "rent" for e in entries),
    "once rental.csv records a rent payment")


def rental_values(data):
    """The rental audit's own placeholders."""
    return {
        "valuation": lambda: valuation_text(data),
        "rent_ledger": lambda: rent_ledger(data),
        "rent_months": lambda: rent_table(data),
        "expenses": lambda: expense_table(data),
        "seasons": lambda: seasonal_table(data),
        "occupancy_months": lambda: occupancy_table(data),
    }


RENTAL_REPORT = ReportSpec("rental-3028", "3028 51st St Rental Audit", RENTAL_TEMPLATE,
                           rental_values, record_rules=(RENT_LEDGER_RULE,))


# --- The operations report: Expert Yacht Delivery -------------------------------------

YACHT_DELIVERY_TEMPLATE = ReportTemplate("""\
## Needs attention [brief]
${attention}

## Since the last report [brief]
${changes}

## At a glance [brief]
${glance}

## Top actions [brief]
${top_actions}

## Current service delivery model
${items_state}

## Deliveries and what they cost
${delivery_figures}

${delivery_list}

## Trends over the last snapshots
${trends}

## Capacity constraints
The most deliveries a month the crew and the calendar allow (delivery_capacity in
the figures sheet), against the deliveries recorded:

${capacity}

## Cost-per-delivery analysis
Every quote must cover crew, fuel, travel and the rest, so each cost is recorded
per delivery. The recorded costs by category:

${cost_split}

## Integration with the JADA charter workflow
The plan: one calendar shared with JADA, so that deliveries fill the gaps between
charters, and JADA's COI verification and booking records used for deliveries
too. Where it stands is in the service model's items above.

${other_items}
""")


def delivery_figures(data):
    """The deliveries of the last 30 and 90 days, cost per delivery, per nautical mile,
    margin per delivery, and the latest delivery against the mean."""
    if not data.deliveries:
        return missing_record(data, "deliveries.csv", first=True)
    costed = [d for d in data.deliveries if d.cost is not None]
    rows = [["Measure", "Figure"]]
    if data.day:
        for days in (30, 90):
            rows.append([f"Deliveries, last {days} days",
                         str(len(dated_within(data.deliveries, data.day, days)))])
    rows.append([f"Cost per delivery (mean of {len(costed)} costed)",
                 money_text(mean([d.cost for d in costed]) if costed else None)])
    sailed = [d for d in costed if d.miles]
    per_mile = cents(sum(d.cost for d in sailed) / sum(d.miles for d in sailed)) \
        if sailed else None
    rows.append([f"Cost per nautical mile ({len(sailed)} with miles)", money_text(per_mile)])
    priced = [d for d in costed if d.price is not None]
    rows.append([f"Margin per delivery (mean of {len(priced)} priced and costed)",
                 money_text(mean([d.price - d.cost for d in priced]) if priced else None)])
    if costed:
        latest, average = costed[-1], mean([d.cost for d in costed])
        above = latest.cost - average
        rows.append([f"Latest, {latest.day} {latest.vessel}".strip(),
                     f"{money_text(latest.cost)}: {money_text(abs(above))} "
                     f"{'above' if above > 0 else 'below' if above < 0 else 'at'} the mean"])
    return [Block("table", rows)]


def cost_split(data):
    """Recorded delivery costs by category, with each one's share."""
    if not data.deliveries:
        return missing_record(data, "deliveries.csv")
    totals = {category: sum((d.costs[category] for d in data.deliveries
                             if category in d.costs), Decimal(0))
              for category in DELIVERY_COSTS}
    recorded = {category: sum(category in d.costs for d in data.deliveries)
                for category in DELIVERY_COSTS}
    total = sum(totals.values())
    rows = [["Cost", "Total", "Share", "Recorded on"]]
    rows += [[category, money_text(totals[category]) if recorded[category] else "-",
              percent_share(totals[category], total) if total and recorded[category] else "-",
              f"{recorded[category]} of {len(data.deliveries)}"] for category in DELIVERY_COSTS]
    return [Block("table", rows)]


def capacity_table(data):
    """Deliveries a month against the capacity the figures give (delivery_capacity)."""
    if not data.deliveries or data.day is None:
        return missing_record(data, "deliveries.csv")
    months = recent_months(data, (d.day for d in data.deliveries), 6)
    rows = [["Month", "Deliveries", "Capacity", "Used"]]
    for month in months:
        count = sum(month_of(d.day) == month for d in data.deliveries)
        capacity = figure_by_month(data, "delivery_capacity", month)
        rows.append([month, str(count), "-" if capacity is None else amount_text(
            capacity, "count"), capacity_used(count, capacity)])
    if all(row[2] == "-" for row in rows[1:]):
        return [Block("table", rows), Block("paragraph", [
            "No capacity is set: add delivery_capacity to the figures sheet, the most "
            "deliveries a month the crew and the calendar allow."])]
    return [Block("table", rows)]


def capacity_used(count, capacity):
    """A month's deliveries against its capacity: a bar, or a flag past it."""
    if not capacity:
        return "-"
    if count > capacity:
        return Status(f"{count}/{int(capacity)}, over capacity", "bad")
    return Bar(count, int(capacity))


def delivery_list(data):
    """The latest deliveries, each with its price, cost and margin; losses marked."""
    if not data.deliveries:
        return []
    latest = data.deliveries[-ATTENTION_SHOWN:]
    rows = [["Date", "Vessel", "Price", "Cost", "Margin"]]
    for d in reversed(latest):
        margin = d.price - d.cost if d.price is not None and d.cost is not None else None
        rows.append([str(d.day), d.vessel or "-", money_text(d.price), money_text(d.cost),
                     "-" if margin is None else Status(f"{money_text(margin)} loss", "bad")
                     if margin < 0 else money_text(margin)])
    more = len(data.deliveries) - len(latest)
    return [Block("table", rows)] + ([Block("paragraph", [
        f"The {len(latest)} latest of {len(data.deliveries)} deliveries."])] if more else [])


def yacht_delivery_values(data):
    """The delivery operations report's own placeholders."""
    return {
        "delivery_list": lambda: delivery_list(data),
        "delivery_figures": lambda: delivery_figures(data),
        "capacity": lambda: capacity_table(data),
        "cost_split": lambda: cost_split(data),
    }


YACHT_DELIVERY_REPORT = ReportSpec("yacht-delivery", "Expert Yacht Delivery Operations Report",
                                   YACHT_DELIVERY_TEMPLATE, yacht_delivery_values)


# --- The portfolio audit: DangerousCentaur's clients ----------------------------------

RENEWAL_DAYS = 90  # the renewal calendar's horizon
RENEWAL_SOON_DAYS = 60  # a renewal this close is flagged, and with a billing gap, a risk
MOST_VALUE_FIRST = "the most monthly value first"


DC_PORTFOLIO_TEMPLATE = ReportTemplate("""\
## Needs attention [brief]
${attention}

## Since the last report [brief]
${changes}

## At a glance [brief]
${glance}

${clients_book}

## Top actions [brief]
${top_actions}

## Billing gap identification
${billing_models} An active client on no billing model, never invoiced, or not
invoiced for ${invoice_gap_days} days or more has a billing gap:

${billing_gaps}

## Ended clients
${ended_clients}

## Trends over the last snapshots
${trends}

## Revenue recognition by client tier
Active clients' monthly value, by tier, recognised as work is delivered:

${tier_revenue}

## Contract renewal calendar
${client_dates} Active clients renewing in the next 90 days; those within 60
are flagged:

${renewal_calendar}

## Churn risk assessment
A client is at risk when it is paused; when it renews within 60 days with a
billing gap; or when its renewal date has passed with no new one recorded.

${churn_risks}

${other_items}
""")


def clients_book(data):
    """The DC portfolio's counts, from clients.csv, which wins over the figures sheet."""
    if not data.clients:
        return missing_record(data, "clients.csv", first=True)
    active = active_clients(data.clients)
    return [Block("paragraph", [
        f"Active clients: {len(active)} of {len(data.clients)}; billed "
        f"{money_text(billed_revenue(active))} a month, of their "
        f"{money_text(sum((c.monthly_value or 0 for c in active), Decimal(0)))} monthly "
        "value (a client on no billing model is not billed)."])]


def by_value(clients):
    """Clients, the most monthly value first (sheet order among equals)."""
    return sorted(clients, key=lambda client: -(client.monthly_value or 0))


def billing_gaps(data):
    """The active clients with a billing gap, named with it."""
    if not data.clients:
        return missing_record(data, "clients.csv")
    gaps = [f"{client.name}: {gap}." for client in by_value(active_clients(data.clients))
            if (gap := billing_gap(client, data))]
    return list_at_most(gaps, "clients.csv", MOST_VALUE_FIRST) if gaps else [
        Block("paragraph", ["No active client has a billing gap."])]


def renewal_calendar(data):
    """Active clients renewing in the next 90 days, by date; those within 60 flagged."""
    if not data.clients:
        return missing_record(data, "clients.csv")
    rows = [["Renewal", "Client", "Tier", "Monthly value", "In"]]
    for client in sorted(active_clients(data.clients), key=lambda c: c.renewal_date or date.max):
        days = days_until(client.renewal_date, data.day)
        if days is not None and 0 <= days <= RENEWAL_DAYS:
            rows.append([str(client.renewal_date), client.name, client.tier or "-",
                         money_text(client.monthly_value),
                         Status(f"{days} days", "bad" if days <= RENEWAL_SOON_DAYS else "none")])
    return table_at_most(rows, "clients.csv", "the soonest first") if len(rows) > 1 else [
        Block("paragraph", [f"No active client renews in the next {RENEWAL_DAYS} days."])]


def tier_revenue(data):
    """Active clients' monthly value by tier, and each tier's share."""
    if not data.clients:
        return missing_record(data, "clients.csv")
    tiers, names = {}, {}
    for client in active_clients(data.clients):
        key = (client.tier or "no tier").casefold()  # Gold and gold are one tier
        names.setdefault(key, client.tier or "no tier")
        tier = tiers.setdefault(key, [0, Decimal(0)])
        tier[0] += 1
        tier[1] += client.monthly_value or 0
    if not tiers:
        return [Block("paragraph", ["No client is active."])]
    total = sum((value for _, value in tiers.values()), Decimal(0))
    rows = [["Tier", "Clients", "Monthly value", "Share"]]
    for key, (count, value) in sorted(tiers.items(), key=lambda pair: -pair[1][1]):
        share = percent_share(value, total) if total else "-"
        rows.append([names[key], str(count), money_text(value), share])
    return table_at_most(rows, "clients.csv", MOST_VALUE_FIRST, last=[
        "All tiers", str(sum(c for c, _ in tiers.values())), money_text(total),
        "100%" if total else "-"])


def churn_risks(data):
    """The clients at risk of leaving, each with its reason, by the rules stated below
    the list (and in docs/data.md)."""
    if not data.clients:
        return missing_record(data, "clients.csv")
    risks = []
    for client in by_value(data.clients):
        gap = billing_gap(client, data)
        days = days_until(client.renewal_date, data.day)
        if client.status == "paused":
            risks.append(f"{client.name}: paused.")
        elif client.status != "active" or days is None:
            continue
        elif days < 0:
            risks.append(f"{client.name}: its renewal date, {client.renewal_date}, has "
                         "passed with no new one recorded.")
        elif days <= RENEWAL_SOON_DAYS and gap:
            risks.append(f"{client.name}: renews in {days} days with a billing gap ({gap}).")
    return list_at_most(risks, "clients.csv", MOST_VALUE_FIRST) if risks else [
        Block("paragraph", ["No client is at risk by these rules."])]


def active_share(data, test, what):
    """How many active clients pass a test, as a sentence: "3 of 4 active clients
    are on a billing model"."""
    active = active_clients(data.clients or ())
    if not active:
        return "No active client to judge." if data.clients is None else \
            "clients.csv has no active client to judge."
    return f"clients.csv: {sum(map(bool, map(test, active)))} of {len(active)} active " \
           f"clients {what}."


def ended_clients(data):
    """The clients that ended, latest first, with the monthly value each took."""
    if not data.clients:
        return missing_record(data, "clients.csv")
    ended = sorted((c for c in data.clients if c.status == "ended"),
                   key=lambda c: c.ended or date.min, reverse=True)
    if not ended:
        return [Block("paragraph", ["No client is marked ended in clients.csv."])]
    rows = [["Ended", "Client", "Tier", "Monthly value lost"]]
    rows += [[str(c.ended or "-"), c.name, c.tier or "-", money_text(c.monthly_value)]
             for c in ended[:ATTENTION_SHOWN]]
    total = sum((c.monthly_value or 0 for c in ended), Decimal(0))
    said = f"{len(ended)} ended client(s), whose monthly value was {money_text(total)} in all."
    if any(c.ended is None for c in ended):
        said += " A client with no date in the ended column is not in Needs attention."
    return [Block("table", rows), Block("paragraph", [said])]


CLIENT_LIST_RULE = RecordRule(
    "dc-client-list", "clients.csv", lambda clients: every_active(
        clients, lambda c: c.contract_start and c.renewal_date),
    "while clients.csv gives every active client a contract start and a renewal date")


def dc_portfolio_values(data):
    """The portfolio audit's own placeholders."""
    return {
        "clients_book": lambda: clients_book(data),
        "billing_models": lambda: active_share(data, lambda c: c.billing_model,
                                               "are on a billing model"),
        "invoice_gap_days": lambda: amount_text(rule_level(data, "invoice_gap_days"), "count"),
        "billing_gaps": lambda: billing_gaps(data),
        "ended_clients": lambda: ended_clients(data),
        "tier_revenue": lambda: tier_revenue(data),
        "client_dates": lambda: active_share(data, lambda c: c.contract_start and
                                             c.renewal_date,
                                             "have a contract start and a renewal date"),
        "renewal_calendar": lambda: renewal_calendar(data),
        "churn_risks": lambda: churn_risks(data),
    }


DC_PORTFOLIO_REPORT = ReportSpec("dc-portfolio", "DangerousCentaur Client Portfolio Audit",
                                 DC_PORTFOLIO_TEMPLATE, dc_portfolio_values,
                                 record_rules=(CLIENT_LIST_RULE,))

# --- Every report, in the order a run sends them -------------------------------------

REPORTS = (CEO_REPORT, CTO_REPORT, ACCOUNTING_REPORT, CMO_REPORT, CFO_REPORT, RENTAL_REPORT,
           YACHT_DELIVERY_REPORT, DC_PORTFOLIO_REPORT)
REPORT_IDS = tuple(spec.report_id for spec in REPORTS)

# What the reports add to the owner's data joins its tables here, once REPORTS is
# known (nothing reads these tables before the module is loaded): the metrics and
# items a report alone shows, and the items its record sheets decide.
METRICS = (*CATALOGUE_METRICS, *(metric for spec in REPORTS for metric in spec.metrics))
METRICS_BY_ID = {metric.metric_id: metric for metric in METRICS}
# The columns of the figures file; a counted one is overruled by the items.
MEASURED_METRICS = tuple(metric for metric in METRICS if metric.formula is None)
ITEMS = (*DOCUMENT_ITEMS, *(item for spec in REPORTS for item in spec.items))
ITEMS_BY_ID = {item.item_id: item for item in ITEMS}
RECORD_RULES = {rule.item_id: rule for spec in REPORTS for rule in spec.record_rules}

# A report with no sheets at all: nothing measured, no item listed.
NO_DATA = cycle_data("", None)


def select_reports(only):
    """The reports named by --only (comma-separated ids), in the standard order."""
    if only is None:
        return REPORTS
    wanted = {part.strip() for part in only.split(",") if part.strip()}
    known = {spec.report_id for spec in REPORTS}
    unknown = sorted(wanted - known)
    if unknown or not wanted:
        raise UsageError(f"unknown report id {', '.join(unknown) or '(none given)'}; "
                         f"valid ids: {', '.join(s.report_id for s in REPORTS)}")
    return tuple(spec for spec in REPORTS if spec.report_id in wanted)


###############################################################################
# Rendering: the plain-text and HTML editions, and the message
###############################################################################

# The text edition's bars and trends.
TREND_LEVELS = ".:-=+#"  # lowest to highest
TEXT_BAR_WIDTH = 12
# How each level of a Status is marked, in text and in HTML: a symbol and a colour
# (its class carries the dark palette's), never the colour alone.
STATUS_MARKS = {"good": ("", "&#10003;&#160;", "ontrack"),
                "bad": ("! ", "&#9660;&#160;", "behind"),
                "none": ("", "", "")}

# The HTML edition's look, and how it survives mail clients.  Inline styles
# carry it (Gmail and Outlook drop most of <head>); the one <style> block only
# adds, by class, a dark palette for the clients that honour prefers-color-scheme
# (Apple Mail, iOS Mail, Outlook.com) and a desktop's wider margins.  Outlook
# for Windows draws with Word: padding and backgrounds hold only on table cells
# (so lists, bars and rules are table cells, each background also a bgcolor
# attribute), and line heights hold only in pixels with
# mso-line-height-rule:exactly.  The colours are
# mid-tones that stay legible when Gmail or Outlook invert them in dark mode.
HTML_COLUMN_WIDTH = 640  # the desktop width; narrower screens get all of theirs
HTML_COLOR = {"page": "#f3f4f6", "card": "#ffffff", "ink": "#1f2933", "heading": "#102a43",
              "header": "#243b53", "header_ink": "#ffffff", "rule": "#d9e2ec",
              "line": "#e4e7eb", "fill": "#2e7d32", "track": "#cbd2d9",
              "good": "#1b5e20", "bad": "#b3261e"}
HTML_HEAD_STYLE = (  # by class: the dark palette, and a desktop's wider margins
    ":root{color-scheme:light dark;supported-color-schemes:light dark;}"
    "@media (min-width:600px){.inner{padding:24px 28px!important}}"
    "@media (prefers-color-scheme:dark){"
    ".page{background:#121417!important}.card{background:#1c2126!important}"
    ".ink{color:#e4e7eb!important}.heading{color:#9fb3c8!important}"
    ".header{background:#334e68!important;color:#ffffff!important}"
    ".data td,.data th{color:#e4e7eb!important;border-color:#3e4c59!important}"
    ".data .header{color:#ffffff!important}.track{background:#52606d!important}"
    ".data .ontrack{color:#8fd19e!important}.data .behind{color:#ffb4ab!important}}"
    "[data-ogsc] .ink{color:#e4e7eb!important}[data-ogsc] .heading{color:#9fb3c8!important}"
    "[data-ogsc] .ontrack{color:#8fd19e!important}"
    "[data-ogsc] .behind{color:#ffb4ab!important}")


def line_height(pixels):
    """A line height that Outlook for Windows keeps as given."""
    return f"line-height:{pixels}px;mso-line-height-rule:exactly;"


# The font is set once, on the column's cell, and inherited; Outlook for Windows,
# which does not carry it into nested tables, gets it from a <style> of its own.
HTML_FONT = "font-family:Helvetica,Arial,sans-serif;"
# In prose, a word too long for a phone (a link in the figures' note, a long From
# name) breaks where it must instead of widening the column.  Not in tables: there
# it would let columns be squeezed mid-word ("Targ/et").
HTML_BREAK_LONG_WORDS = "overflow-wrap:anywhere;word-break:break-word;"
HTML_OUTLOOK_STYLE = f"table,td,th,p,h1,h2{{{HTML_FONT}}}"
HTML_STYLE = {
    "body": f"margin:0;padding:0;background:{HTML_COLOR['page']};",
    "layout": "border-collapse:collapse;",
    "column": f"width:100%;max-width:{HTML_COLUMN_WIDTH}px;background:{HTML_COLOR['card']};"
              "border-collapse:collapse;",
    "inner": f"padding:24px 14px;{HTML_FONT}font-size:15px;{line_height(22)}"
             f"color:{HTML_COLOR['ink']};",
    "preheader": "display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;"
                 "opacity:0;overflow:hidden;mso-hide:all;",
    "h1": f"font-size:22px;{line_height(28)}margin:0 0 8px;color:{HTML_COLOR['heading']};"
          f"{HTML_BREAK_LONG_WORDS}",
    "h2": f"font-size:17px;{line_height(22)}margin:24px 0 8px;padding-bottom:4px;"
          f"color:{HTML_COLOR['heading']};border-bottom:2px solid {HTML_COLOR['rule']};"
          f"{HTML_BREAK_LONG_WORDS}",
    "p": f"font-size:15px;{line_height(22)}margin:0 0 12px;color:{HTML_COLOR['ink']};"
         f"{HTML_BREAK_LONG_WORDS}",
    "list": "border-collapse:collapse;margin:0 0 12px;",
    "marker": f"font-size:15px;{line_height(22)}padding:0 8px 6px 4px;vertical-align:top;"
              f"text-align:right;color:{HTML_COLOR['ink']};",
    "item": f"font-size:15px;{line_height(22)}padding:0 0 6px;vertical-align:top;"
            f"color:{HTML_COLOR['ink']};{HTML_BREAK_LONG_WORDS}",
    "table": "border-collapse:collapse;margin:0 0 16px;width:100%;",
    "th": f"font-size:13px;{line_height(18)}text-align:left;padding:6px;"
          f"vertical-align:bottom;background:{HTML_COLOR['header']};"
          f"color:{HTML_COLOR['header_ink']};",
    "td": f"font-size:14px;{line_height(20)}padding:6px;"
          f"vertical-align:top;color:{HTML_COLOR['ink']};"
          f"border-bottom:1px solid {HTML_COLOR['line']};",
    "bar_cell": f"font-size:1px;{line_height(1)}padding:0;",
    "bar_label": f"font-size:13px;{line_height(16)}padding:0 0 0 6px;"
                 f"color:{HTML_COLOR['ink']};",
    "trend_column": "padding:0 1px;vertical-align:bottom;",
    "rule": f"font-size:1px;{line_height(1)}padding:0;"
            f"border-top:1px solid {HTML_COLOR['rule']};",
    "ontrack": f"color:{HTML_COLOR['good']};",
    "behind": f"color:{HTML_COLOR['bad']};font-weight:bold;",
}
SLASH_BETWEEN_WORDS = re.compile(r"(?<=[A-Za-z])/(?=[A-Za-z])")
HTML_BAR_WIDTH = 96  # pixels: a bar and its label fit a phone's table cell
HTML_TREND_HEIGHT = 20
PREHEADER_FIGURES = 3  # the first headline numbers, shown in the inbox beside the subject


class RenderedReport(NamedTuple):
    """A report ready to send: what goes on the wire and what the audit log proves.

    body is the plain-text edition, html the HTML one; to and bcc are tuples.
    """

    report_id: str
    subject: str
    body: str
    html: str
    to: tuple = ()
    bcc: tuple = ()
    variant: str = "a"
    snapshot: "Snapshot | None" = None  # the figures it was written from
    sheets: dict = {}  # {sheet: sha256} of every sheet of the owner's data it was written from
    raw: bytes = b""  # the MIME message SES is given (ses_messages builds it for a send)

    @property
    def recipient_count(self):
        """How many messages SES counts against its quotas for this report."""
        return len(self.to) + len(self.bcc)

    @property
    def data_as_of(self):
        return self.snapshot and str(self.snapshot.as_of)

    @property
    def data_sha256(self):
        return self.snapshot and self.snapshot.sha256

    @property
    def body_sha256(self):
        return sha256_hex(self.body)


def text_cell(cell):
    """A table cell as plain text: a bar becomes [#####-------] 5/12, a trend [.:-=+#],
    a status behind target "! behind", so it stands out in a column."""
    if isinstance(cell, Status):
        return f"{STATUS_MARKS[cell.level][0]}{cell.text}"
    if isinstance(cell, Bar):
        filled = round(TEXT_BAR_WIDTH * cell.filled / cell.total)
        return f"[{'#' * filled}{'-' * (TEXT_BAR_WIDTH - filled)}] {cell.filled}/{cell.total}"
    if isinstance(cell, Trend):
        return "[" + "".join(" " if level is None else TREND_LEVELS[level]
                             for level in cell.levels(len(TREND_LEVELS))) + "]"
    return cell


def text_table(rows, wrap=True):
    """Aligned columns, at most 72 wide: the widest columns wrap until the table fits.

    wrap=False keeps each row on one line, for ids that must stay whole.
    """
    rows = [[text_cell(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows if i < len(row))
              for i in range(max(map(len, rows)))]
    while wrap and sum(widths) + 2 * (len(widths) - 1) > TEXT_WIDTH and max(widths) > 8:
        widths[widths.index(max(widths))] -= 1
    lines = []
    for number, row in enumerate(rows):
        cells = [(wrap_cell(cell, widths[i]) if wrap else [cell]) or [""]
                 for i, cell in enumerate(row)]
        for depth in range(max(map(len, cells))):
            lines.append("  ".join((cell[depth] if depth < len(cell) else "").ljust(widths[i])
                                   for i, cell in enumerate(cells)))
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def wrap_cell(cell, width):
    """A cell's lines at the column's width; most cells fit, and need no textwrap.
    Every Unicode space is a space where a line may break."""
    if len(cell) <= width and not any(space in cell for space in "\t\n\r\v\f"):
        return [cell.strip()] if cell.strip() else []
    return [unruled(line)
            for line in textwrap.wrap(breakable_spaces(cell), width, break_on_hyphens=False)]


def render_text(blocks):
    """The plain-text edition: complete and readable on its own."""
    parts = []
    for block in blocks:
        if block.kind == "title":
            parts.append(f"{block.items[0]}\n{'=' * len(block.items[0])}")
        elif block.kind == "heading":
            heading = block.items[0].upper()
            parts.append(f"{heading}\n{'-' * len(heading)}")
        elif block.kind == "paragraph":
            parts.append(wrap_prose(" ".join(block.items)))
        elif block.kind == "bullets":
            parts.append("\n".join(wrap_prose(item, "  - ", "    ") for item in block.items))
        elif block.kind == "numbered":
            width = len(str(len(block.items)))
            parts.append("\n".join(wrap_prose(item, f"  {n:>{width}}. ", " " * (width + 4))
                                   for n, item in enumerate(block.items, start=1)))
        elif block.kind == "table":
            parts.append(text_table(block.items))
        elif block.kind == "rule":
            parts.append("--")
    return "\n\n".join(parts) + "\n"


def breakable_spaces(text):
    """Every Unicode space (no-break, thin, ideographic...) as a plain one."""
    if text.isascii():  # most text: nothing to look at
        return text
    return "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in text)


def wrap_prose(text, first="", rest=""):
    """Text wrapped to TEXT_WIDTH, so that no sheet's words can pass for the report's
    own marks: every Unicode space is a space where a line may break (a non-breaking
    space would make one long word), and a line of dashes alone is in brackets."""
    lines = textwrap.wrap(breakable_spaces(text), TEXT_WIDTH, initial_indent=first,
                          subsequent_indent=rest)
    return "\n".join(map(unruled, lines))


def unruled(line):
    """A wrapped line with no letter or digit (dashes, box-drawing, dots) reads as an
    underline or a rule of the report's own: it is shown in brackets instead."""
    bare = line.strip()
    if len(bare) < 2 or any(ch.isalnum() for ch in bare):
        return line
    return line[:len(line) - len(line.lstrip())] + "(" + bare + ")"


def layout_table(rows, style=HTML_STYLE["layout"], width=None, css_class=None,
                 bgcolor=None):
    """A table that only lays things out: screen readers are told to skip it.
    bgcolor repeats the style's background for Outlook for Windows."""
    attributes = "".join(f' {name}="{value}"' for name, value in (
        ("width", width), ("class", css_class), ("bgcolor", bgcolor)) if value)
    return (f'<table role="presentation" cellpadding="0" cellspacing="0" border="0"'
            f'{attributes} style="{style}">{rows}</table>')


def filled_cell(color, width, height, css_class=""):
    """An empty cell of one colour, as bgcolor too: Outlook for Windows paints only that."""
    css_class = f' class="{css_class}"' if css_class else ""
    return (f'<td width="{width}" height="{height}" bgcolor="{color}"{css_class} '
            f'style="{HTML_STYLE["bar_cell"]}width:{width}px;height:{height}px;'
            f'background:{color};">&#160;</td>')


def html_bar(filled, total):
    """A bar and its label in one row of cells, so they never split (Outlook ignores
    inline-table and nowrap)."""
    done = round(HTML_BAR_WIDTH * filled / total)
    cells = "".join(filled_cell(color, width, 12, css_class)
                    for width, color, css_class in (
                        (done, HTML_COLOR["fill"], ""),
                        (HTML_BAR_WIDTH - done, HTML_COLOR["track"], "track")) if width)
    label = f'<td class="ink" style="{HTML_STYLE["bar_label"]}">{filled}/{total}</td>'
    return layout_table(f"<tr>{cells}{label}</tr>")


def html_trend(trend, height=HTML_TREND_HEIGHT):
    """Up to six vertical bars, oldest first: each a filled cell at the foot of a column
    of fixed height (an empty column: not measured in that snapshot)."""
    columns = []
    for level in trend.levels(height):
        bar = "" if level is None else layout_table(
            f"<tr>{filled_cell(HTML_COLOR['fill'], 8, max(level, 2))}</tr>", width=8)
        columns.append(f'<td width="10" height="{height}" valign="bottom" '
                       f'style="{HTML_STYLE["trend_column"]}height:{height}px;">{bar}</td>')
    return layout_table(f'<tr>{"".join(columns)}</tr>')


def html_cell(cell, scope=None):
    """One cell of a data table: a header (<th>, scope col or row) or a value (<td>)."""
    if isinstance(cell, Bar):
        content = html_bar(cell.filled, cell.total)
    elif isinstance(cell, Status):
        content = html_status(cell)
    elif isinstance(cell, Trend):
        content = html_trend(cell)
    else:  # "revenue/month" may break after its slash, so that tables fit a phone
        content = SLASH_BETWEEN_WORDS.sub("/<wbr />", html.escape(cell))
    if scope == "col":
        return (f'<th scope="col" bgcolor="{HTML_COLOR["header"]}" class="header" '
                f'style="{HTML_STYLE["th"]}">{content}</th>')
    # A row's header (th, for screen readers) looks like the cells beside it.
    style = HTML_STYLE["td"] + ("font-weight:normal;text-align:left;" if scope == "row" else "")
    tag, scope = ("th", f' scope="{scope}"') if scope else ("td", "")
    return f'<{tag}{scope} style="{style}">{content}</{tag}>'


def html_status(status):
    """A status as a symbol and a word in its colour, bold where it is behind."""
    _, symbol, css_class = STATUS_MARKS[status.level]
    if not css_class:
        return html.escape(status.text)
    return (f'<span class="{css_class}" style="{HTML_STYLE[css_class]}">{symbol}'
            f'{html.escape(status.text)}</span>')


def html_table(rows):
    """A data table: its first row the column headers, each row's first cell its header."""
    header, *body = rows
    head = "".join(html_cell(cell, "col") for cell in header)
    lines = "".join("<tr>" + html_cell(row[0], "row")
                    + "".join(html_cell(cell) for cell in row[1:]) + "</tr>"
                    for row in body)
    return (f'<table cellpadding="0" cellspacing="0" border="0" width="100%" class="data" '
            f'style="{HTML_STYLE["table"]}"><tr>{head}</tr>{lines}</table>')


def html_list(items, numbered):
    """A list as rows of two cells, the marker and the item: Outlook for Windows
    drops a list's indentation."""
    rows = "".join(f'<tr><td width="28" class="ink" style="{HTML_STYLE["marker"]}">'
                   f'{f"{n}." if numbered else "&#8226;"}</td>'
                   f'<td class="ink" style="{HTML_STYLE["item"]}">{item}</td></tr>'
                   for n, item in enumerate(items, start=1))
    return layout_table(rows, style=HTML_STYLE["list"], width="100%")


def html_block(block):
    """One block as HTML with inline styles: what Gmail and Outlook keep."""
    escaped = [html.escape(item) if isinstance(item, str) else item for item in block.items]
    if block.kind == "title":
        return f'<h1 class="heading" style="{HTML_STYLE["h1"]}">{escaped[0]}</h1>'
    if block.kind == "heading":
        return f'<h2 class="heading" style="{HTML_STYLE["h2"]}">{escaped[0]}</h2>'
    if block.kind == "paragraph":
        return f'<p class="ink" style="{HTML_STYLE["p"]}">{" ".join(escaped)}</p>'
    if block.kind in ("bullets", "numbered"):
        return html_list(escaped, block.kind == "numbered")
    if block.kind == "table":
        return html_table(block.items)
    return layout_table(f'<tr><td height="1" style="{HTML_STYLE["rule"]}">&#160;</td></tr>',
                        style="border-collapse:collapse;margin:24px 0 12px;", width="100%")


def preheader(blocks):
    """The inbox's preview line: the report's first headline numbers, else its first words.

    Without it, clients show the title again, then "Cycle ... prepared by ...".
    """
    table = next((block.items for block in blocks if block.kind == "table"), [])
    measured = [f"{text_cell(row[0])}: {text_cell(row[1])}" for row in table[1:]
                if len(row) > 1 and text_cell(row[1]) not in ("", "-")]
    if measured:
        return " · ".join(measured[:PREHEADER_FIGURES])
    # No figures yet: the report's own first words, after the header's.
    after_header = blocks[next((i for i, b in enumerate(blocks) if b.kind == "heading"),
                               len(blocks)):]
    prose = next((" ".join(b.items) for b in after_header
                  if b.kind in ("paragraph", "bullets", "numbered")), "")
    return textwrap.shorten(prose, 120, placeholder="...")


def render_html(blocks, title):
    """The HTML edition: one column, fluid up to 640 pixels (fixed at 640 for Outlook for
    Windows, which ignores max-width), nothing loaded from the web."""
    content = "\n".join(html_block(block) for block in blocks)
    page = HTML_COLOR["page"]
    column = layout_table(
        f'<tr><td class="ink inner" style="{HTML_STYLE["inner"]}">\n{content}\n</td></tr>',
        style=HTML_STYLE["column"], width="100%", css_class="card", bgcolor=HTML_COLOR["card"])
    outlook_open = (f'<!--[if mso]><table role="presentation" cellpadding="0" cellspacing="0" '
                    f'border="0" width="{HTML_COLUMN_WIDTH}" align="center"><tr><td>'
                    f'<![endif]-->')
    outlook_close = "<!--[if mso]></td></tr></table><![endif]-->"
    return (
        '<!DOCTYPE html>\n<html lang="en" dir="ltr"><head><meta charset="utf-8" />'
        '<meta name="viewport" content="width=device-width, initial-scale=1" />'
        '<meta name="x-apple-disable-message-reformatting" />'
        '<meta name="color-scheme" content="light dark" />'
        '<meta name="supported-color-schemes" content="light dark" />'
        f"<title>{html.escape(title)}</title><style>{HTML_HEAD_STYLE}</style>"
        f"<!--[if mso]><style>{HTML_OUTLOOK_STYLE}</style><![endif]--></head>"
        f'<body class="page" bgcolor="{page}" style="{HTML_STYLE["body"]}">'
        f'<div lang="en" dir="ltr" class="page" style="background:{page};">'
        f'<div style="{HTML_STYLE["preheader"]}">{html.escape(preheader(blocks))}'
        f'{"&#847;&#160;" * 40}</div>'
        + layout_table(f'<tr><td align="center" style="padding:16px 0;">{outlook_open}'
                       f'{column}{outlook_close}</td></tr>', width="100%", css_class="page",
                       style=f"{HTML_STYLE['layout']}background:{page};", bgcolor=page)
        + "</div></body></html>\n"
    )


def render_report(spec, *, cycle, prepared_by, generated_at, variant="a", to=(), bcc=(),
                  data=None, with_html=True):
    """Both editions of one report, written from the owner's data (CycleData), or the
    text alone for --dry-run, which shows only that; a placeholder with no value
    raises KeyError."""
    data = data or NO_DATA
    title = spec.title if variant == "a" else f"Brief: {spec.title}"
    used = {name for name in SLOT_PATTERN.findall(spec.template.template)}
    values = report_values(spec, data, used, title=title, cycle=cycle,
                           prepared_by=prepared_by, generated_at=generated_at,
                           version=VERSION, variant=variant)
    blocks = [block for name, template in (("header", HEADER_TEMPLATE),
                                           (spec.report_id, spec.template),
                                           ("footer", FOOTER_TEMPLATE))
              for block in fill_blocks(parse_blocks(template.template, name), values)]
    if variant == "b":
        blocks = brief_blocks(blocks)
    return RenderedReport(report_id=spec.report_id, subject=f"{title} | cycle {cycle}",
                          body=render_text(blocks),
                          html=render_html(blocks, title) if with_html else "",
                          to=tuple(to), bcc=tuple(bcc), variant=variant,
                          snapshot=data.figures.row, sheets=data.sheets)


def report_eml(report, config, now, show_bcc=True):
    """The report as a standard MIME message, text and HTML: what SES is given to send
    (without the Bcc header, which SES would deliver to every recipient), or an .eml
    preview that opens in any mail client."""
    import email.policy
    from email.headerregistry import Address
    from email.message import EmailMessage
    from email.utils import format_datetime

    message = EmailMessage()
    message["From"] = Address(display_name=config.from_name, addr_spec=config.from_address)
    message["To"] = ", ".join(report.to)
    if show_bcc:
        message["Bcc"] = ", ".join(report.bcc)
    message["Subject"] = report.subject
    message["Date"] = format_datetime(now)
    message.set_content(report.body, cte=transfer_encoding(report.body))
    message.add_alternative(report.html, subtype="html", cte=transfer_encoding(report.html))
    # 998 is RFC 5322's hard line limit; at 78, Python folds some subjects right
    # after "Subject:", and readers then see a leading space.
    return message.as_bytes(policy=email.policy.SMTP.clone(max_line_length=998))


def transfer_encoding(text):
    """7bit where the text allows it (ASCII, lines of at most 78), else quoted-printable:
    never base64, which spam filters distrust and nobody can read in the raw message."""
    if text.isascii() and all(len(line) <= 78 for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"


###############################################################################
# The audit log: its records, the ledger it keeps, and the lock
###############################################################################

# Which fields an audit record must have to be relied on, and of what type; the
# ledger and --history skip, with a warning, any record of another shape.
RECORD_FIELDS = {"cycle": str, "report": str, "status": str}
OPTIONAL_RECORD_FIELDS = {"variant": str, "ts": str, "message_id": (str, type(None)),
                          "error": (dict, type(None)), "to": list, "bcc": list,
                          "data_as_of": (str, type(None)), "data_sha256": (str, type(None)),
                          "suppressed": list, "sheets": dict, "tracking": list}
# A report's record is sent, failed or skipped; a cycle's own records say it was
# missed (its due date passed unsent) or that a failure notice went out for it; an
# event record is what SES said later of a message: delivered, bounced...
RECORD_STATUSES = ("sent", "failed", "skipped", "missed", "notice", "event")
LEDGER_CHUNK_BYTES = 1 << 20  # the log is read a chunk at a time: memory stays flat
# Below this much free space, the next record might not fit: send nothing more.
AUDIT_LOG_MIN_FREE_BYTES = 64 * 1024


def audit_record(report, config, *, run_id, cycle, now, status,
                 message_id=None, error=None, suppressed=()):
    """One audit log line: what was sent, when, to whom, and what SES said.

    suppressed: the recipients on the account's suppression list, to whom SES
    accepts the report and delivers nothing.
    """
    return {
        "ts": now.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
        "run_id": run_id,
        "cycle": cycle,
        "variant": report.variant,
        "report": report.report_id,
        "subject": report.subject,
        "from": config.from_address,
        "to": list(report.to),
        "bcc": list(report.bcc),
        "region": config.region,
        "status": status,
        "message_id": message_id,
        "error": error,
        "suppressed": list(suppressed),
        "body_sha256": report.body_sha256,
        "html_sha256": sha256_hex(report.html),
        "data_as_of": report.data_as_of,
        "data_sha256": report.data_sha256,
        "sheets": dict(report.sheets),
        **schedule_field(config),
        **({"tracking": sorted(config.tracking)} if config.tracking is not None else {}),
    }


def schedule_field(config):
    """The schedule in force, on each record a run writes under one: a cycle is called
    missed only where it fell due while that schedule was in force."""
    return {"schedule": schedule_text(config.schedule)} if config.schedule else {}


def schedule_text(schedule):
    return ",".join(map(str, schedule))


def real_audit_log_path(path):
    """The file the audit log path names, symlinks followed, once it is safe to use.

    It must be a regular file of this user's (or not exist yet, in a folder that
    does): never a folder, FIFO or device, nor another user's file.
    """
    fix = "choose a file with --audit-log or AUDIT_LOG_PATH"
    try:
        real = path.resolve()
        info = real.stat()
    except FileNotFoundError:
        if real.parent.is_dir():
            return real
        raise AuditLogError(f"audit log {path}: its folder {real.parent} does not exist; "
                            f"{fix}") from None
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop (Python < 3.13)
        reason = getattr(error, "strerror", None) or "a symbolic link loop"
        raise AuditLogError(f"audit log {path}: {reason}; {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise AuditLogError(f"audit log {path} is not a regular file (a folder, FIFO or "
                            f"device); {fix}")
    if info.st_uid != os.geteuid():
        raise AuditLogError(f"audit log {path} belongs to another user (uid {info.st_uid}); "
                            f"{fix}")
    return real


def record_problem(record):
    """Why a parsed line is not an audit record to rely on, or None if it is one."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for name, kind in RECORD_FIELDS.items():
        if not isinstance(record.get(name), kind):
            return f"no text {name!r}"
    for name, kind in OPTIONAL_RECORD_FIELDS.items():
        if name in record and not isinstance(record[name], kind):
            return f"{name!r} of the wrong type"
    if record["status"] not in RECORD_STATUSES:
        return f"status {record['status'][:20]!r}"
    error = record.get("error") or {}
    if not all(isinstance(error.get(key, ""), str) for key in ("code", "message")):
        return "an 'error' of the wrong shape"
    if not all(isinstance(a, str) for a in (*record.get("to", ()), *record.get("bcc", ()),
                                           *record.get("suppressed", ()))):
        return "recipients that are not text"
    return event_record_problem(record) if record["status"] == "event" else None


def event_record_problem(record):
    """Why an event record is not one this script writes (a hand-edited line), or None."""
    if not isinstance(record.get("event"), str) or record["event"] not in EVENT_STATES:
        return "an 'event' that is no event's kind"
    if not all(isinstance(record.get(name), str)
               for name in ("recipient", "event_time", "event_id")):
        return "a 'recipient', 'event_time' or 'event_id' that is not text"
    if not isinstance(record.get("matched"), bool):
        return "a 'matched' that is not true or false"
    bounce = record.get("bounce", {"type": "", "subtype": "", "diagnostic": ""})
    if not isinstance(bounce, dict) or not all(
            isinstance(bounce.get(name), str) for name in ("type", "subtype", "diagnostic")):
        return "a 'bounce' of the wrong shape"
    return None


def parsed_record(line):
    """(record, None) for a good audit log line, else (None, why it is not one)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: [[[[... nested past Python's limit
        return None, "not a complete record (a run stopped mid-write?)"
    problem = record_problem(record)
    return (None, f"not a record this script wrote ({problem})") if problem else (record, None)


def log_regions(file, backward=False, most_bytes=None, block=LEDGER_CHUNK_BYTES):
    """The one line reader of the audit log, forward or backward: (data, start, end,
    base) a block at a time, where data[start:end] holds whole lines (split at newlines)
    and data[0] is at file offset base; the file's first lines first, or its last
    first.  Only a line that spans two blocks is put together, and a line longer than
    a block is cut (no record is that long): memory stays flat however long the log.
    Given most_bytes (backward), only the lines within that many bytes of the end."""
    if backward:
        yield from regions_from_end(file, most_bytes, block)
        return
    offset, carry = 0, b""  # the file offset of carry, the unfinished line
    while chunk := file.read(block):
        first, last = chunk.find(b"\n"), chunk.rfind(b"\n")
        if first < 0:
            carry += chunk
            if len(carry) > block:
                offset, carry = offset + len(carry), b""
            continue
        spanning = carry + chunk[:first]
        yield spanning, 0, len(spanning), offset
        base = offset + len(carry)  # the file offset of chunk[0]
        yield chunk, first + 1, last, base
        offset, carry = base + last + 1, chunk[last + 1:]
    yield carry, 0, len(carry), offset


def regions_from_end(file, most_bytes, block):
    """log_regions, backward."""
    position = end = file.seek(0, os.SEEK_END)
    carry = b""  # the start of what was read: a line that may begin in an earlier block
    while position > 0:
        if most_bytes is not None and end - position >= most_bytes:
            return  # carry may be part of a line: not a line to give
        step = min(block, position)
        position -= step
        file.seek(position)
        data = file.read(step) + carry
        first = data.find(b"\n")
        if first >= 0:
            yield data, first + 1, len(data), position
        carry = data[:first if first >= 0 else len(data)][:LEDGER_CHUNK_BYTES]
    yield carry, 0, len(carry), 0


def lines_holding(data, start, end, base, needle, tail_from):
    """(file offset, line) of the lines in a region that hold the needle, searched
    where they lie without splitting the region; and near the log's end (tail_from)
    every line that is not a whole JSON object, where a crash leaves a torn one."""
    if base + end > tail_from:
        for line in data[start:end].split(b"\n"):
            whole = line.startswith(b"{") and line.rstrip().endswith(b"}")
            if needle in line or (line.strip() and not whole):
                yield base + start, line
            start += len(line) + 1
        return
    found = data.find(needle, start, end)
    while found >= 0:
        line_start = data.rfind(b"\n", start, found) + 1 or start
        line_end = data.find(b"\n", found, end)
        line_end = end if line_end < 0 else line_end
        yield base + line_start, data[line_start:line_end]
        found = data.find(needle, line_end, end)


def lines_with(log, needle):
    """(file offset, line) of each line of an open log that holds needle, first to
    last, and of each torn line in its last block."""
    tail_from = os.fstat(log.fileno()).st_size - LEDGER_CHUNK_BYTES
    for data, start, end, base in log_regions(log):
        yield from lines_holding(data, start, end, base, needle, tail_from)


def lines_from_end(file, most_bytes=None, block=1 << 16):
    """The lines of an open log, last first."""
    for data, start, end, _ in log_regions(file, True, most_bytes, block):
        yield from reversed(data[start:end].split(b"\n"))


def line_numbers(log, offsets):
    """The line number at each of these ascending byte offsets: only for warnings."""
    numbers, newlines, position = [], 0, 0
    log.seek(0)
    for offset in offsets:
        while position < offset:
            data = log.read(min(LEDGER_CHUNK_BYTES, offset - position))
            if not data:
                break
            newlines, position = newlines + data.count(b"\n"), position + len(data)
        numbers.append(newlines + 1)
    return numbers


class LogLine(NamedTuple):
    """A line of the audit log read from its end: a record, or why it is none."""

    number: int  # from the end: 1 is the last line
    record: dict | None
    problem: str | None


class AuditLogFile:
    """The audit log, as every part of the script reaches it (audit_log_at): the
    records of a cycle, the records from the end, and appending under the run's
    exclusive hold.  A JSON Lines file; AuditLogS3 is the other store, with these
    methods, for a log in S3."""

    def __init__(self, path):
        self.path = path

    def cycle_records(self, cycle, statuses=None):
        """(the records of one cycle, oldest first, and a warning for each line it had
        to skip); statuses: only the records of these.

        The log is streamed a chunk at a time and only the lines that name the cycle
        are parsed, so a run costs about the same, in time and memory, however long
        the log has grown.  A line that names the cycle but is not a record, and a
        torn or foreign line in the log's last MiB (where a crash leaves one), is
        skipped with a warning naming its line.
        """
        log = self._open_to_read()
        if log is None:
            return [], []
        needle = b'"' + cycle.encode()  # how JSON starts the cycle; cycles need no escapes
        records, skipped = [], []  # skipped: (byte offset, why)
        with log:
            for offset, line in lines_with(log, needle):
                record, problem = parsed_record(line)
                if problem:
                    skipped.append((offset, problem))
                elif record["cycle"] == cycle and (statuses is None
                                                   or record["status"] in statuses):
                    records.append(record)
            numbers = line_numbers(log, [offset for offset, _ in skipped])
        return records, [f"warning: audit log {self.path} line {number} is {problem}; "
                         "ignored, not rewritten"
                         for number, (_, problem) in zip(numbers, skipped)]

    def from_end(self, keep=None, most_bytes=None, statuses=None):
        """The log's lines, newest first, as LogLines, blank ones passed over; given
        keep (raw line -> bool), only those it keeps are parsed and given (a line not
        parsed costs little); given most_bytes, only those within that many bytes of
        the end.  statuses: the only statuses keep keeps, a hint AuditLogS3 reads its
        keys by (here keep decides).  The file is open until the iterator is done or
        closed."""
        log = self._open_to_read()
        if log is None:
            return
        with log:
            for number, line in enumerate(lines_from_end(log, most_bytes), start=1):
                if line.strip() and (keep is None or keep(line)):
                    yield LogLine(number, *parsed_record(line))

    @contextlib.contextmanager
    def held(self, follow=False):
        """The log open to append, under the run lock: one sending run at a time per
        log.  follow: the log is checked, before each send, at its path as the settings
        name it, a symbolic link followed anew (a send run); else at its real path."""
        real = real_audit_log_path(self.path)
        with RunLock(lock_path(real)), \
                AuditLogWriter(real, self.path if follow else None) as audit_log:
            yield audit_log

    @contextlib.contextmanager
    def held_for_notice(self):
        """The log for a failure notice, under the run lock where the lock can be taken;
        None where the log cannot be opened (the notice goes all the same: the log's
        failure may be the news).  RunLockedError where another run holds the lock."""
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(RunLock(lock_path(real_audit_log_path(self.path))))
            except RunLockedError:
                raise
            except ReportRunError:
                pass  # a lock file that is not ours: the log may still be written
            try:
                audit_log = held.enter_context(AuditLogWriter(real_audit_log_path(self.path)))
            except ReportRunError:
                audit_log = None
            yield audit_log

    def write_problem(self):
        """Why a send could not write the log, asked without writing it: the line a
        send would stop with, or None."""
        try:
            real = real_audit_log_path(self.path)
            with RunLock(lock_path(real)):
                pass  # a lock file a send would refuse, refused now
        except RunLockedError:
            real = real_audit_log_path(self.path)  # a run is sending now: its lock is fine
        except ReportRunError as error:
            return str(error)
        if real.exists():
            if not real.is_file():
                return f"audit log {real} is not a regular file: a send would stop at once"
            if not os.access(real, os.W_OK):
                return (f"cannot write audit log {real} (permission denied): a send would stop "
                        "at once; fix its permissions")
        elif not real.parent.is_dir() or not os.access(real.parent, os.W_OK | os.X_OK):
            return (f"cannot create audit log {real}: its folder {real.parent} is missing or "
                    "not writable; a send would stop at once")
        return None

    def _open_to_read(self):
        """The log opened for reading, or None if there is none yet."""
        try:
            return open(open_regular_file(real_audit_log_path(self.path)), "rb")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise AuditLogError(f"cannot read audit log {self.path}: {error.strerror}") \
                from None


def audit_log_at(path):
    """The audit log at a location the settings name: a file, or an S3 prefix."""
    return AuditLogS3(path) if isinstance(path, S3Location) else AuditLogFile(path)


def read_ledger(path, cycle, variant):
    """{report: SES message id} of what the audit log shows sent in this cycle and
    variant, and a warning for each line it had to skip."""
    records, warnings = audit_log_at(path).cycle_records(cycle, ("sent",))
    return {record["report"]: record.get("message_id") for record in records
            if record.get("variant", "a") == variant}, warnings


def read_recent_records(path, cycles, skip_reports=()):
    """The records of the last `cycles` cycles, every variant of each, oldest first, and
    warnings (among them one where event records of those cycles lay beyond the
    EVENTS_LOOKBACK_RECORDS newest and were not read).  skip_reports: reports whose
    records are passed over, and make no cycle (--ab: the event test's).

    The log is read backwards and reading stops at the first record of an older
    cycle, so --history costs the same however long the log has grown.  (Counting
    (cycle, variant) pairs instead would stop inside a cycle whose variants were sent
    in turns, and show its first sends as missing.)
    """
    records, warnings, seen, events, dropped = [], [], [], [], {}
    for number, record, problem in audit_log_at(path).from_end():
        if problem:
            warnings.append(f"warning: audit log {path} line {number} from the end is "
                            f"{problem}; ignored, not rewritten")
            continue
        if record["report"] in skip_reports:
            continue
        if record["status"] == "event":  # written when read, often cycles later:
            if len(events) < EVENTS_LOOKBACK_RECORDS:  # they belong to their cycle,
                events.append(record)  # not the log's order; the latest are enough
            else:
                dropped[record["cycle"]] = dropped.get(record["cycle"], 0) + 1
            continue
        if record["cycle"] not in seen:
            if len(seen) == cycles:
                break
            seen.append(record["cycle"])
        records.append(record)
    unread = sum(count for cycle, count in dropped.items() if cycle in seen)
    if unread:
        warnings.append(f"warning: {unread} event record(s) of these cycles lie beyond the "
                        f"newest {EVENTS_LOOKBACK_RECORDS} event records and were not read: "
                        "the older cycles' deliveries, opens and clicks are undercounted; "
                        "ask for fewer cycles")
    return records[::-1] + [e for e in events[::-1] if e["cycle"] in seen], warnings


def last_sent_figures(path, cycle):
    """(cycle, data_sha256, data_as_of) of the last report sent in another cycle, read
    from the audit log's end; None if there is none, or it recorded no figures."""
    record = next((r for r in records_from_end(path, SENT_MARK, ("sent",))
                   if report_sent(r) and r["cycle"] != cycle), None)
    digest = record and record.get("data_sha256")
    return (record["cycle"], digest, record.get("data_as_of")) if digest else None


def records_from_end(path, needle=b"", statuses=None):
    """The audit log's good records, newest first (a line that is none is passed
    over: --history is where such lines are warned of); given a needle, only those
    whose line holds it; statuses, from_end's hint."""
    lines = audit_log_at(path).from_end(lambda line: needle in line, statuses=statuses)
    return (line.record for line in lines if line.record is not None)


SENT_MARK = b'"sent"'  # in every sent record's line, however it is spaced


def report_sent(record):
    """True for the record of a report SES accepted (the event test is no report)."""
    return record["status"] == "sent" and record["report"] != EVENT_TEST_REPORT


def cannot_lock(path, error):
    """The line for a file this filesystem cannot lock (NFS without lockd: ENOLCK)."""
    return (f"cannot lock {path}: {error.strerror or error}; this filesystem cannot hold "
            "the lock that keeps two runs from sending twice: put the audit log on a local "
            "disk (AUDIT_LOG_PATH or --audit-log); nothing was sent")


def lock_path(log_path):
    """The run lock's file: beside the log's real path, whatever name reaches it."""
    return log_path.with_name(log_path.name + ".lock")


class RunLock:
    """One sending run at a time per audit log file, whatever name reaches it.

    The lock file sits beside the log's real path (symlinks resolved).  It is
    never followed if it is a symlink, and never truncated unless it is a lock
    file this script made: a regular file of this user's, with one name, holding
    a pid.  flock is released by the kernel when the process dies, however it
    dies, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, path):
        self.path = path
        try:
            self._fd = open_regular_file(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW)
        except OSError as error:
            reason = "it is a symbolic link" if error.errno == errno.ELOOP else error.strerror
            raise AuditLogError(f"cannot use lock file {path}: {reason}; remove it, or fix "
                                "the audit log's folder or permissions") from None
        problem = self._foreign()
        if problem:
            os.close(self._fd)
            raise AuditLogError(f"lock file {path} {problem}, so this script did not make "
                                "it; nothing was sent: remove it if nothing else needs it")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(self._fd)
            raise RunLockedError(f"another run (pid {holder}) is sending with this audit "
                                 f"log (lock {path}); this run sent nothing: let it "
                                 "finish") from None
        except OSError as error:  # ENOLCK: a network filesystem without locking
            os.close(self._fd)
            raise AuditLogError(cannot_lock(path, error)) from None
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:
            os.close(self._fd)
            raise AuditLogError(f"cannot write lock file {path}: {error.strerror}; "
                                "nothing was sent") from None

    def _foreign(self):
        """Why the open lock file is not one this script made, or None."""
        info = os.fstat(self._fd)
        if info.st_uid != os.geteuid():
            return f"belongs to another user (uid {info.st_uid})"
        if info.st_nlink != 1:
            return "has other names (hard links)"
        if not re.fullmatch(rb"[0-9]*\n?", os.pread(self._fd, 33, 0)):
            return "holds something other than a process id"
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        os.close(self._fd)  # closing releases the flock


class AuditLogWriter:
    """The append-only JSON Lines record of every send outcome, private to its owner.

    Each record is written whole and fsynced before the next send.  If a write
    fails (a full disk, say), what was written of it is cut off again, so no
    torn record is left, and the error carries the record for the person to see.

    The open log is locked (flock) for as long as it is open: the lock follows the
    file, so a second name for it (a hard link) cannot admit a second run.  Before
    each send and each record, the open file must still be the one at its path: an
    editor's save, sed -i or a rotation that replaced it would otherwise take this
    run's records out of view, and the next run would send those reports again.
    """

    def __init__(self, path, named=None):
        self.path = path
        self.named = named or path  # as the settings name it: a symlink is followed anew
        self.written = []  # this run's records, to carry over if the file is replaced
        try:
            self._fd = open_regular_file(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            size = os.fstat(self._fd).st_size
        except OSError as error:
            raise AuditLogError(f"cannot open audit log {path} for appending: "
                                f"{error.strerror}; fix the path or its permissions "
                                "(AUDIT_LOG_PATH or --audit-log)") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RunLockedError(f"another run is sending with audit log {path} (under "
                                 "another name: a hard link); this run sent nothing: let it "
                                 "finish") from None
        except OSError as error:  # ENOLCK: a network filesystem without locking
            os.close(self._fd)
            raise AuditLogError(cannot_lock(path, error)) from None
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            # A run died mid-write: end its torn line so our records start clean.
            self._write(b"\n")

    def in_place(self):
        """True while the open file is the one at the log's path (as the settings name
        it: a symlink retargeted, or replaced by a file, is another file)."""
        try:
            there = os.stat(self.named)
        except OSError:
            return False
        mine = os.fstat(self._fd)
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def check_in_place(self, record=None):
        """Stop the run where the log was replaced or removed under it: this run's
        records (and this one) go into the file now at the path, and the error says so."""
        if self.in_place():
            return
        moved = [*self.written, *([record] if record else [])]
        try:
            with AuditLogWriter(real_audit_log_path(self.named), self.named) as now_there:
                for earlier in moved:  # a copy (cp log t && mv t log) may hold some
                    line = json.dumps(earlier, ensure_ascii=False).encode("utf-8")
                    if not any(line in found for _, found in now_there.matching_lines(line)):
                        now_there.append(earlier)
            where = (f"{len(moved)} record(s) of this run are now in the file at that path "
                     "too" if moved else "this run had recorded nothing yet")
        except RunLockedError:
            where = (f"another run holds the file now at that path, so this run's "
                     f"{len(moved)} record(s) could not be put into it: add these lines by "
                     f"hand: {' '.join(json.dumps(r, ensure_ascii=False) for r in moved)}")
        except ReportRunError as error:
            where = (f"this run's {len(moved)} record(s) could not be put back "
                     f"({str(error).split(';')[0]}): add these lines to the log by hand: "
                     f"{' '.join(json.dumps(r, ensure_ascii=False) for r in moved)}")
        raise AuditLogError(f"audit log {self.path} was replaced or removed while this run "
                            f"was sending (an editor's save, sed -i, a sync tool, a "
                            f"rotation): {where}; nothing more was sent: run again to send "
                            "the rest")

    def claim(self, report, cycle, now, force=False):
        """Go: the run lock already keeps every other run from sending (S3LogWriter
        claims each report instead)."""
        return CLAIMED

    def release(self, report, cycle):
        """Nothing to give up: the run lock goes with the run."""

    def matching_lines(self, needle):
        """(file offset, line) of the open log's lines that hold needle."""
        with open(os.dup(self._fd), "rb") as log:
            log.seek(0)
            yield from lines_with(log, needle)

    def check_room(self):
        """Refuse to send when the log's disk is too full to record the outcome, or
        when the log is no longer the file at its path."""
        self.check_in_place()
        try:
            disk = os.fstatvfs(self._fd)
        except OSError:
            return  # cannot tell: the write itself will say
        if disk.f_bavail * disk.f_frsize < AUDIT_LOG_MIN_FREE_BYTES:
            raise AuditLogError(f"the disk holding audit log {self.path} is full; nothing "
                                "more was sent, so that no send goes unrecorded: free some "
                                "space and run again")

    def append(self, record):
        """Write one record and force it to disk before the next send starts."""
        self.check_in_place(record)
        line = json.dumps(record, ensure_ascii=False) + "\n"
        self._write(line.encode("utf-8"), line)
        self.written.append(record)

    def _write(self, data, line=None):
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)  # no torn record left behind
            lost = (f"; this outcome is not recorded, add the line by hand once there is "
                    f"room: {line.strip()}") if line else ""
            raise AuditLogError(f"cannot write audit log {self.path}: {error.strerror}"
                                f"{lost}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        try:
            os.close(self._fd)
        except OSError as error:
            if exc_info[0] is None:
                raise AuditLogError(f"cannot close audit log {self.path}: "
                                    f"{error.strerror}") from None


###############################################################################
# S3: the data folder and the audit log in a bucket (s3:// locations)
###############################################################################

# How long a claim on a report keeps other runs from sending it, by S3's own clock
# (never a run's, which may be wrong): longer than one send can take on a laptop
# (AWS_MAX_ATTEMPTS at its most, 20 tries of 25 s, and their back-off) and three
# times the function's whole run.
CLAIM_STALE_SECONDS = 900
# Records are fetched this many at a time: a cycle's are read in one round or two.
S3_CONCURRENCY = 16
S3_RETRIES = {"mode": "standard", "total_max_attempts": 3}
# A reader that looks back by size (the delivery check) reads this many cycles at
# most in S3, where each record is a request of its own.
S3_LOOKBACK_CYCLES = 12
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# What AWS says when it will not let these credentials in: S3's, and IAM's, Lambda's
# and Scheduler's (--deploy-aws).
AWS_FORBIDDEN = ("AccessDenied", "AllAccessDisabled", "AccountProblem", "403",
                 "AccessDeniedException", "UnauthorizedOperation")
AWS_BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                       "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId")
# What a failed S3 call mid-run says of what went before it: it may come after sends.
NOTHING_MORE = "nothing more was sent"
# The permission each S3 call of the script's needs, for the line that says it was refused.
S3_PERMISSIONS = {"get_object": "s3:GetObject", "head_object": "s3:GetObject",
                  "put_object": "s3:PutObject", "delete_object": "s3:DeleteObject",
                  "list_objects_v2": "s3:ListBucket"}


class AwsError(ReportRunError):
    """S3 (or, for --deploy-aws, another AWS service) could not be used: `said` is what
    went wrong and what to do, `closing` what it means for the run; outcome says why
    (transient, forbidden, config)."""

    def __init__(self, said, outcome, closing=""):
        super().__init__(f"{said}; {closing}" if closing else said)
        self.said, self.outcome = said, outcome


class ClaimTaken(Exception):
    """S3 answered a conditional write with 412 (or 409): another run wrote first."""


class S3Connection:
    """The S3 client that a run's s3:// locations share, made the first time one is
    read: the settings' keys or profile (else botocore's chain: a function's role),
    AWS_ENDPOINT_URL_S3 (a local server, the tests') and the CA bundle."""

    def __init__(self, settings):
        self._settings = {name: setting(settings, name) or None for name in (
            "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
            "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_SES_REGION",
            "AWS_REGION")}
        self._client = None

    def __repr__(self):
        return "S3Connection()"  # the keys it holds are never shown

    @property
    def client(self):
        if self._client is None:
            import botocore.config

            given = self._settings
            endpoint = given["AWS_ENDPOINT_URL_S3"] or given["AWS_ENDPOINT_URL"]
            session = aws_session(given["AWS_PROFILE"], given["AWS_ACCESS_KEY_ID"],
                                  given["AWS_SECRET_ACCESS_KEY"], given["AWS_SESSION_TOKEN"])
            settings = botocore.config.Config(
                retries=S3_RETRIES, connect_timeout=SES_CONNECT_TIMEOUT_SECONDS,
                read_timeout=SES_READ_TIMEOUT_SECONDS, max_pool_connections=S3_CONCURRENCY,
                # a local server has no bucket.host names: the bucket goes in the path
                s3={"addressing_style": "path"} if endpoint else None)
            self._client = session.create_client(
                "s3", region_name=given["AWS_SES_REGION"] or given["AWS_REGION"] or "us-east-1",
                endpoint_url=endpoint, verify=given["AWS_CA_BUNDLE"], config=settings)
        return self._client


class S3Location:
    """An s3://bucket/key the settings name, used where a Path is (the data folder, a
    sheet, the audit log's prefix): / joins, exists(), is_file(), is_dir(), and
    read_text() with read_text_file's exceptions.  Shown as its URL, never with the
    connection's keys."""

    def __init__(self, bucket, key, connection):
        self.bucket, self.key, self.connection = bucket, key, connection

    @classmethod
    def parse(cls, url, connection, name):
        """The location of an s3:// URL, or ConfigError naming the setting."""
        bucket, _, key = url[len("s3://"):].partition("/")
        if not BUCKET_PATTERN.fullmatch(bucket) or ".." in key or any(
                ch in LINE_BREAKS or not ch.isprintable() for ch in key):
            raise ConfigError([f"{name} {url[:80]!r} is not an S3 location: write "
                               "s3://BUCKET/PREFIX/ (a bucket name of lowercase letters, "
                               "digits, dots and hyphens)"])
        return cls(bucket, key, connection)

    def __str__(self):
        return f"s3://{self.bucket}/{self.key}"

    def __repr__(self):
        return f"S3Location({str(self)!r})"

    def __eq__(self, other):
        return isinstance(other, S3Location) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))

    def __truediv__(self, name):
        return self.at(self.folder + name)

    @property
    def folder(self):
        """The key as a prefix: with its closing /, where it names anything."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"

    @property
    def name(self):
        return self.key.rstrip("/").rpartition("/")[2]

    @property
    def suffix(self):
        return Path(self.name).suffix

    def is_file(self):
        """Whether the key is there, asked by listing (a HEAD of a missing key is 403,
        not 404, to credentials that may list only a prefix: the function's)."""
        if not self.key or self.key.endswith("/"):
            return False
        return self.keys(self.key, most=1) == [self.key]  # keys sort: the key comes first

    def is_dir(self):
        """True where some object lies under this prefix: S3 has no empty folders."""
        return bool(self.keys(self.folder, most=1))

    def exists(self):
        return self.is_file() or self.is_dir()

    def read_text(self, max_bytes=None):
        """The object's UTF-8 text, its byte-order mark ignored, as read_text_file
        reads a file: FileNotFoundError, TooLarge before it is read, UnreadableFile."""
        _, data = self.read_bytes(max_bytes, too_large=TooLarge)
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UnreadableFile("it is not UTF-8 text") from None

    def read_bytes(self, most, too_large=None):
        """(S3's answer, the object's bytes, at most `most`): read whole, or AwsError
        where the connection broke or S3 sent less than it said (a sheet cut short
        must never read as one with fewer rows); too_large, if given, is raised for an
        object over `most` before it is read."""
        import botocore.exceptions

        answer = self.call("get_object")
        size = answer.get("ContentLength") or 0
        with contextlib.closing(answer["Body"]) as body:
            if too_large and most is not None and size > most:
                raise too_large(f"{size / 2**20:,.1f} MB")
            try:
                data = body.read() if most is None else body.read(most + 1)
            except (botocore.exceptions.BotoCoreError, OSError) as error:
                raise AwsError(f"S3's answer for {self} broke off ({error}): run again "
                               "later", "transient", NOTHING_MORE) from None
        if too_large and most is not None and len(data) > most:
            raise too_large(f"more than {most >> 20} MB")
        if len(data) < min(size, most + 1 if most is not None else size):
            raise AwsError(f"S3 sent {len(data)} of the {size} bytes of {self}: run again "
                           "later", "transient", NOTHING_MORE)
        return answer, data

    def keys(self, prefix, *, delimiter=None, most=None):
        """The keys under prefix (or, with a delimiter, the prefixes one level down),
        in S3's order, which is the keys' byte order."""
        found = []
        pages = {"Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {}),
                 **({"MaxKeys": most} if most else {})}
        while True:
            answer = self.call("list_objects_v2", Key=None, **pages)
            found += [entry["Prefix"] for entry in answer.get("CommonPrefixes", ())] \
                if delimiter else [entry["Key"] for entry in answer.get("Contents", ())]
            if not answer.get("IsTruncated") or (most and len(found) >= most):
                return found
            pages["ContinuationToken"] = answer["NextContinuationToken"]

    def at(self, key):
        """Another key in this bucket, on the same connection."""
        return S3Location(self.bucket, key, self.connection)

    def call(self, operation, **parameters):
        """One S3 call on this object (Key=None: on the bucket alone).  A key that is
        not there is FileNotFoundError; a conditional write that lost, ClaimTaken;
        anything else S3 or the network says, the AwsError that says what to fix."""
        import botocore.exceptions

        parameters.setdefault("Key", self.key)
        if parameters["Key"] is None:
            del parameters["Key"]
        try:
            return getattr(self.connection.client, operation)(Bucket=self.bucket,
                                                              **parameters)
        except botocore.exceptions.ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412) and operation == "put_object":
                raise ClaimTaken() from None  # 409: a conditional write racing another
            raise s3_failure(error, self, operation) from None
        except (botocore.exceptions.NoCredentialsError,
                botocore.exceptions.PartialCredentialsError):
            raise ConfigError([f"no AWS credentials found to read {self}: set AWS_PROFILE, "
                               "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run it "
                               "where a role gives them (the function's)"]) from None
        except botocore.exceptions.BotoCoreError as error:  # no connection, a timeout
            raise AwsError(f"S3 could not be reached for {self} ({error}): run again later",
                           "transient", NOTHING_MORE) from None


def s3_failure(error, location, operation="get_object"):
    """What an S3 error answer means for a run: FileNotFoundError for a missing key,
    else the AwsError that says what to fix."""
    answer = error.response.get("Error", {})
    code = str(answer.get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    said = f"{code}: {answer.get('Message', '')}".strip(": ")
    if code in ("NoSuchKey", "404") and status == 404:
        return FileNotFoundError(str(location))
    if code == "NoSuchBucket":
        return AwsError(f"S3 bucket {location.bucket} does not exist (for {location}): fix "
                        "REPORT_DATA_DIR or AUDIT_LOG_PATH, or make the bucket", "config",
                        NOTHING_MORE)
    if code in AWS_BAD_CREDENTIALS:
        return AwsError(f"S3 refused the AWS credentials for {location} ({said}): log in "
                        "again or check the keys", "config", NOTHING_MORE)
    if code in AWS_FORBIDDEN or status == 403:
        return AwsError(f"S3 refused access to {location} ({said}): allow these credentials "
                        f"(or the function's role) {S3_PERMISSIONS.get(operation, operation)} "
                        "there (docs/aws.md)", "forbidden", NOTHING_MORE)
    if status >= 500 or code in THROTTLING_CODES or code == "SlowDown":
        return AwsError(f"S3 was busy or failing for {location} ({said}): run again later",
                        "transient", NOTHING_MORE)
    return AwsError(f"S3 said no for {location} ({said})", "config", NOTHING_MORE)


class AuditLogS3:
    """The audit log as objects under an S3 prefix, with AuditLogFile's methods: the
    same records, one object each (S3 has no append), under

        PREFIX/records/CYCLE/TIME-RUN-N.STATUS.json  keys that sort by cycle, then time
        PREFIX/claims/CYCLE/VARIANT/REPORT.json       who sends a report, or sent it

    A cycle is read by listing its own prefix, and the log from its end a cycle at a
    time, newest cycle first, so that no read lists the whole bucket.  No run holds
    the whole log: each report is claimed, with S3's conditional write, just before it
    is sent (S3LogWriter.claim)."""

    def __init__(self, location):
        self.location = location.at(location.folder)
        self.path = self.location  # as messages name the log

    def cycle_prefix(self, cycle):
        return f"{self.location.key}records/{quote(cycle, safe='')}/"

    def claim_at(self, cycle, variant, report_id):
        """Where the claim on one report of a cycle and variant lies."""
        return self.location.at(f"{self.location.key}claims/{quote(cycle, safe='')}/"
                                f"{variant}/{report_id}.json")

    def cycle_records(self, cycle, statuses=None):
        """(the cycle's records, oldest first, a warning for each object that is none);
        statuses: only records of these (their keys say), the others not fetched."""
        records, warnings = [], []
        for key, record, problem, _ in self._read(self._keys(self.cycle_prefix(cycle),
                                                             statuses)):
            if record and record["cycle"] != cycle:
                problem = f"a record of cycle {record['cycle'][:64]!r} in another's folder"
            if problem:
                warnings.append(f"warning: audit log object s3://{self.location.bucket}/"
                                f"{key} is {problem}; ignored, not rewritten")
            elif statuses is None or record["status"] in statuses:
                records.append(record)
        return records, warnings

    def from_end(self, keep=None, most_bytes=None, statuses=None):
        """LogLines, newest first: the newest cycle's records, newest first, then the
        cycle before; keep and most_bytes as AuditLogFile.from_end's (most_bytes
        counting the records' bytes, and S3_LOOKBACK_CYCLES cycles at most); given
        statuses, a record of another status (its key says) is not fetched at all."""
        number, read = 0, 0
        for seen, prefix in enumerate(self.cycles_newest_first()):
            if most_bytes is not None and seen == S3_LOOKBACK_CYCLES:
                return
            for key, record, problem, raw in self._read(self._keys(prefix, statuses)[::-1]):
                number, read = number + 1, read + len(raw)
                if most_bytes is not None and read > most_bytes:
                    return
                if keep is None or keep(raw):
                    yield LogLine(number, record, problem and f"{problem} (object {key})")

    def cycles_newest_first(self):
        """The cycles' prefixes, the newest first: a cycle labelled by its date at that
        date, one labelled otherwise (--cycle board-q3) when its newest record was
        written, which one more listing of it tells."""
        prefixes = self.location.keys(f"{self.location.key}records/", delimiter="/")

        def when(prefix):
            day = parse_date(prefix.rstrip("/").rpartition("/")[2])
            if day is not None:
                return day.isoformat().replace("-", "")
            newest = self.location.keys(prefix)[-1:]  # keys start with their time
            return newest[0].rpartition("/")[2][:15] if newest else ""

        return sorted(prefixes, key=when, reverse=True)

    @contextlib.contextmanager
    def held(self, follow=False):
        """The log to write: no run-wide hold (the claims are per report)."""
        yield S3LogWriter(self)

    @contextlib.contextmanager
    def held_for_notice(self):
        yield S3LogWriter(self)

    def write_problem(self):
        """Why a send could not use the log, found by writing a probe claim (what a send
        does first) and taking it away (a send may not need to): the line, or None."""
        probe = self.location.at(f"{self.location.key}claims/check.json")
        try:
            probe.call("put_object", Body=b"{}")
        except AwsError as error:
            return f"{error.said}: a send would stop at once"
        with contextlib.suppress(ReportRunError, FileNotFoundError):
            probe.call("delete_object")
        return None

    def _keys(self, prefix, statuses):
        """The keys of the records under a cycle's prefix, oldest first; given statuses,
        only those whose key names one of them (or names none: a key not ours)."""
        return [key for key in self.location.keys(prefix)
                if statuses is None or key_status(key) in (*statuses, None)]

    def _read(self, keys):
        """(key, record, problem, its bytes) of each key, in order, fetched a few at a
        time."""
        from concurrent.futures import ThreadPoolExecutor

        def fetch(key):
            try:
                text = self.location.at(key).read_text(LEDGER_CHUNK_BYTES)
            except FileNotFoundError:  # taken away between the list and the read
                return key, None, "gone (deleted after it was listed)", b""
            except (TooLarge, UnreadableFile) as error:
                return key, None, f"not a record ({error})", b""
            return (key, *parsed_record(text), text.encode("utf-8"))

        with ThreadPoolExecutor(S3_CONCURRENCY) as pool:
            yield from pool.map(fetch, keys)


def key_status(key):
    """The status a record's key names (TIME-RUN-N.STATUS.json), or None for a key
    this script did not write (it is read, and warned of, whatever is asked)."""
    parts = key.rsplit("/", 1)[-1].split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in RECORD_STATUSES else None


class Claim(NamedTuple):
    """What S3LogWriter.claim found: whether this run may send the report, and if not
    why (code, why: its skip record's error); taken_over where it may, having taken a
    dead run's claim (the report may go twice: the run says so)."""

    go: bool
    code: str = ""
    why: str = ""
    taken_over: str = ""


CLAIMED = Claim(True)


class S3LogWriter:
    """Writing the S3 audit log: a record is one new object, written whole or not at
    all (S3 has no torn writes), before the next send; and the claims."""

    def __init__(self, log):
        self.log = log
        self.path = log.path
        self.written = []
        self._run = os.urandom(4).hex()  # keeps two runs' keys apart in one millisecond
        self._claims = {}  # claim key -> the ETag of this run's claim there

    def check_room(self):
        """S3 is never full, and never replaced under a run."""

    def append(self, record):
        """Write one record.  A sent record marks the report's claim sent first: where
        the record cannot be written, the mark keeps every later run from sending the
        report again, and where neither can, the line says so."""
        marked = record["status"] != "sent" or self._mark_sent(record)
        when = str(record.get("ts", "")).replace("-", "").replace(":", "")[:19]
        key = (f"{self.log.cycle_prefix(record['cycle'])}{when or '0'}Z-{self._run}-"
               f"{len(self.written):04d}.{record['status']}.json")
        line = json.dumps(record, ensure_ascii=False)
        try:
            self.log.location.at(key).call("put_object", Body=line.encode("utf-8"),
                                           IfNoneMatch="*", ContentType="application/json")
        except (AwsError, ClaimTaken) as error:
            raise unrecorded(record, line, error, marked) from None
        self.written.append(record)

    def claim(self, report, cycle, now, force=False):
        """Claim a report before it is sent: a Claim that says whether to send it.

        Another run's claim (S3's 412) means that run sent the report or is sending it
        now, unless it is older than CLAIM_STALE_SECONDS by S3's clock with no sent
        mark or record: then its run died, and the claim is taken over (If-Match on its
        ETag: of two runs, one wins), so that report may go twice.  --force takes it
        over whatever it says."""
        try:
            self._claim(cycle, report.variant, report.report_id, now=now)
            return CLAIMED
        except ClaimTaken:
            pass
        held = self._held(cycle, report)
        if held is None:  # given back between the write and the read: try once more
            return self._retry(cycle, report, now)
        age, etag, sent = held
        sent = sent or self._sent_record(cycle, report)
        if sent and not force:
            return Claim(False, "AlreadySent", f"sent by another run in cycle {cycle} as "
                         f"{sent}; --force sends it again")
        if age < CLAIM_STALE_SECONDS and not force:
            return Claim(False, "ClaimedByAnotherRun", (
                f"another run claimed it {int(age)} s ago and is sending it (its claim in "
                f"S3); a claim {CLAIM_STALE_SECONDS} s old with no sent record is taken "
                "over by the next run"))
        if not self.take_over(cycle, report, etag, now):
            return Claim(False, "ClaimedByAnotherRun", "another run took over its claim first")
        return CLAIMED if force else CLAIMED._replace(taken_over=(
            f"its claim in S3 is {int(age)} s old with no sent record: the run that made it "
            "died or stalled, so this run sends it; if that run's send went through, it "
            "arrives twice"))

    def take_over(self, cycle, report, etag, now):
        """Replace a claim only if it is still the one read (its ETag): of two runs
        taking over one dead run's claim, one wins.  True for this run."""
        try:
            self._claim(cycle, report.variant, report.report_id, now=now, etag=etag)
        except (ClaimTaken, FileNotFoundError):  # replaced, or given back, meanwhile
            return False
        return True

    def release(self, report, cycle):
        """Give up this run's claim on a report SES did not send, so that a later run
        may try at once: deleted only while it is the claim this run wrote (If-Match),
        never one another run has taken over since.  Best effort: a claim left is
        taken over once stale."""
        claim = self.log.claim_at(cycle, report.variant, report.report_id)
        etag = self._claims.pop(claim.key, None)
        if etag:
            with contextlib.suppress(ReportRunError, FileNotFoundError):
                claim.call("delete_object", IfMatch=etag)

    def _claim(self, cycle, variant, report_id, *, now=None, sent=None, etag=None):
        """Write this run's claim: new (If-None-Match), over the one read (If-Match), or,
        once SES has sent it, marked sent (over our own)."""
        body = {"run": self._run, "cycle": cycle, "variant": variant, "report": report_id,
                **({"claimed_at": now.astimezone(timezone.utc).isoformat(timespec="seconds")}
                   if now else {}), **({"sent": sent} if sent is not None else {})}
        condition = {} if sent is not None else {"IfMatch": etag} if etag else \
            {"IfNoneMatch": "*"}
        claim = self.log.claim_at(cycle, variant, report_id)
        answer = claim.call("put_object", Body=json.dumps(body).encode(),
                            ContentType="application/json", **condition)
        self._claims[claim.key] = answer.get("ETag")

    def _mark_sent(self, record):
        """Mark the report's claim sent (SES's message id): True where S3 took it."""
        try:
            self._claim(record["cycle"], record.get("variant", "a"), record["report"],
                        sent=record.get("message_id") or "")
        except (ReportRunError, ClaimTaken):
            return False
        return True

    def _held(self, cycle, report):
        """(its age in seconds by S3's clock, its ETag, the message id it marks sent or
        None) of the claim S3 has now; None where it is gone.  Refused straight after
        S3 said it was there (412) is gone too: S3 answers 403, not 404, for a missing
        key to credentials that may not list the whole bucket."""
        try:
            answer, text = self.log.claim_at(cycle, report.variant,
                                             report.report_id).read_bytes(4096)
        except FileNotFoundError:
            return None
        except AwsError as error:
            if error.outcome == "forbidden":
                return None
            raise
        try:
            sent = json.loads(text).get("sent")
        except (ValueError, AttributeError):  # not a claim of ours: its age decides
            sent = None
        return s3_age(answer), answer.get("ETag", ""), sent if isinstance(sent, str) else None

    def _retry(self, cycle, report, now):
        try:
            self._claim(cycle, report.variant, report.report_id, now=now)
            return CLAIMED
        except ClaimTaken:
            return Claim(False, "ClaimedByAnotherRun", "another run claimed it just now")

    def _sent_record(self, cycle, report):
        """The message id of the report's sent record in the cycle, if any."""
        records, _ = self.log.cycle_records(cycle, ("sent",))
        return next((r.get("message_id") or "?" for r in records
                     if r["report"] == report.report_id
                     and r.get("variant", "a") == report.variant), None)


def unrecorded(record, line, error, marked):
    """The error of a record S3 would not take: what S3 said, what it means for that
    report, and the line to put in by hand.  A sent report whose claim is not marked
    sent either would go again once its claim is stale: exit 73, never 'run again'."""
    said = getattr(error, "said", "S3 already holds a record under its key")
    if marked:
        meaning = ("its claim in S3 is marked sent, so no run sends it again" if
                   record["status"] == "sent" else "")
        outcome = getattr(error, "outcome", "transient")
    else:
        meaning = (f"SES sent it ({record.get('message_id')}), but neither its record nor "
                   "its claim could be marked sent: a run "
                   f"{CLAIM_STALE_SECONDS // 60} minutes from now sends it again unless "
                   "this line is in the log")
        outcome = "cant_create"
    return AwsError(f"{said}: the {record['status']} record of {record['report']} could not "
                    f"be written{'; ' + meaning if meaning else ''}; put this line in the log "
                    f"by hand: {line}", outcome, NOTHING_MORE)


def s3_age(answer):
    """How old an object is, in seconds, by S3's clock: its answer's Date less its
    LastModified (a run's own clock may be minutes out; a Date that cannot be read,
    the run's)."""
    from email.utils import parsedate_to_datetime

    modified = answer["LastModified"]
    try:
        now = parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"])
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)  # "-0000": UTC, says RFC 5322
        return (now - modified).total_seconds()
    except (KeyError, TypeError, ValueError, IndexError):
        return (datetime.now(timezone.utc) - modified).total_seconds()


###############################################################################
# SES: the clients, sending, and the preflight
###############################################################################

# Set here on purpose rather than inherited: botocore's read timeout is a full minute.
SES_CONNECT_TIMEOUT_SECONDS = 5
SES_READ_TIMEOUT_SECONDS = 20

# The preflight asks SES once per question and never waits long: it is advice,
# and an endpoint or IAM policy that cannot answer must not hold up the reports.
PREFLIGHT_RETRIES = {"mode": "standard", "total_max_attempts": 1}
PREFLIGHT_CONNECT_TIMEOUT_SECONDS = 2
PREFLIGHT_READ_TIMEOUT_SECONDS = 3

# The events queue is read before a run sends: one try a call, and a short wait.
EVENTS_RETRIES = {"mode": "standard", "total_max_attempts": 1}
EVENTS_CONNECT_TIMEOUT_SECONDS = 2
EVENTS_READ_TIMEOUT_SECONDS = 5

# A failure notice is best effort: one try, and a short wait, after a run that failed.
NOTICE_RETRIES = {"mode": "standard", "total_max_attempts": 1}
NOTICE_CONNECT_TIMEOUT_SECONDS = 5
NOTICE_READ_TIMEOUT_SECONDS = 10
# Its questions are asked at once, this many at a time (and as many connections);
# however many recipients there are, what is still unanswered after the deadline
# is given up on, and said.
PREFLIGHT_CONCURRENCY = 10
PREFLIGHT_DEADLINE_SECONDS = 10

# The sandbox's quota.  SES's v2 API says "sandbox" outright; where only v1
# answers, this quota is how the preflight guesses it.
SANDBOX_MAX_24_HOUR_SEND = 200

# Preflight questions that an IAM policy may leave out: being refused one is
# not a problem with sending (docs/iam.md's policy lists them as optional).
OPTIONAL_PERMISSION_CODES = ("AccessDenied", "AccessDeniedException")
# A v2 answer that lacks what SES always sends (a web page that says 200, a
# quota that is not a number) is not SES's, however botocore parsed it.
QUOTA_FIELDS = ("Max24HourSend", "SentLast24Hours", "MaxSendRate")
KNOWN_ENFORCEMENT = ("HEALTHY", "PROBATION", "SHUTDOWN")
# What each v2 question sees that the v1 API cannot: named when v2 is silent.
V2_ONLY = {"account": "whether AWS has paused or shut down sending",
           "identity": "the sender domain's DKIM and MAIL FROM status"}

# How the preflight names where botocore found the credentials (never the values).
CREDENTIAL_SOURCES = {
    "env": "environment variables",
    "shared-credentials-file": "the shared credentials file (~/.aws/credentials)",
    "config-file": "the AWS config file (~/.aws/config)",
    "sso": "AWS IAM Identity Center (SSO)",
    "assume-role": "an assumed role from the AWS config",
    "iam-role": "the instance's IAM role",
    "container-role": "the container's IAM role",
}


class AwsClients:
    """The AWS clients of a run, each made the first time it is used and all closed
    once: a run that sends nothing makes none, and a run that reads the events queue
    and then sends makes each once.  Everything they need comes from config (the
    settings file overlaid by the environment main() was given): region, endpoints,
    keys or profile, retries, CA bundle; only where config names no keys does
    botocore's own credential chain look further (profiles, SSO, instance roles).
    They are botocore's clients (boto3's are the same clients; its session is skipped
    because it adds to the loader's search path each time it is made)."""

    def __init__(self, config, *, preflight_read_timeout=PREFLIGHT_READ_TIMEOUT_SECONDS,
                 models=None):
        self.config = config
        self.preflight_read_timeout = preflight_read_timeout
        self._models = models  # a botocore loader to share (tests: one for many runs)
        self._session = self._source = None
        self._made = {}

    @property
    def credential_source(self):
        """Whose keys the clients use, in words (never the keys)."""
        self._connect()
        return self._source

    @property
    def preflight_v2(self):
        """The preflight's v2 client: one try, and it never waits long."""
        return self._client("preflight_v2", "sesv2", self.config.endpoint_url_v2,
                            PREFLIGHT_RETRIES, PREFLIGHT_CONNECT_TIMEOUT_SECONDS,
                            self.preflight_read_timeout)

    @property
    def preflight(self):
        """The v1 preflight client: for where v2 cannot answer, and the sandbox."""
        return self._client("preflight", "ses", self.config.endpoint_url, PREFLIGHT_RETRIES,
                            PREFLIGHT_CONNECT_TIMEOUT_SECONDS, self.preflight_read_timeout)

    @property
    def send(self):
        """The sending client: SES v2's SendEmail, given each report's raw message."""
        return self._client("send", "sesv2", self.config.endpoint_url_v2, sends=True)

    @property
    def send_v1(self):
        """v1's client, for where v2 did not answer the preflight (SendRawEmail, the
        same messages), --test-events and --setup-events's configuration set."""
        return self._client("send_v1", "ses", self.config.endpoint_url, sends=True)

    @property
    def notice(self):
        """The failure notice's client: one try, short timeouts."""
        return self._client("notice", "ses", self.config.endpoint_url, NOTICE_RETRIES,
                            NOTICE_CONNECT_TIMEOUT_SECONDS, NOTICE_READ_TIMEOUT_SECONDS)

    @property
    def sqs(self):
        """The events queue's client: it must not hold a run up (EVENTS_RETRIES)."""
        return self._client("sqs", "sqs", self.config.endpoint_url_sqs, EVENTS_RETRIES,
                            EVENTS_CONNECT_TIMEOUT_SECONDS, EVENTS_READ_TIMEOUT_SECONDS)

    @property
    def sns(self):
        """The events topic's client, for --setup-events."""
        return self._client("sns", "sns", self.config.endpoint_url_sns)

    def service(self, service):
        """A client of a service --deploy-aws makes things in (DEPLOY_SERVICES)."""
        return self._client(f"deploy_{service}", service, self.config.endpoint_urls.get(service))

    def close(self):
        """Close the clients' connections (a run uses them once)."""
        for client in self._made.values():
            client.close()

    def _client(self, name, service, endpoint_url, retries=None,
                connect_timeout=SES_CONNECT_TIMEOUT_SECONDS,
                read_timeout=SES_READ_TIMEOUT_SECONDS, sends=False):
        """The client of this name, made now if it is the first time it is asked for.
        One that sends never retries a used-up daily quota."""
        if name not in self._made:
            import botocore.config

            settings = botocore.config.Config(
                retries=retries or self.config.retries, connect_timeout=connect_timeout,
                read_timeout=read_timeout, max_pool_connections=PREFLIGHT_CONCURRENCY)
            made = self._create(service, endpoint_url, settings)
            if sends:
                made.meta.events.register_first(f"needs-retry.{service}",
                                                refuse_to_retry_daily_quota)
            self._made[name] = made
        return self._made[name]

    def _create(self, service, endpoint_url, settings):
        import botocore.exceptions

        config = self.config
        session = self._connect()
        try:
            return session.create_client(service, region_name=config.region,
                                         verify=config.ca_bundle,
                                         endpoint_url=endpoint_url, config=settings)
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError([no_such_profile(config.aws_profile)]) from None
        except (ValueError, botocore.exceptions.BotoCoreError) as error:
            # A region or endpoint botocore will not use, past our own checks.
            raise ConfigError([f"SES cannot be reached as configured (AWS_SES_REGION "
                               f"{config.region}, endpoint {endpoint_url or 'AWS'}): "
                               f"{error}"]) from None

    def _connect(self):
        """The run's botocore session, its credentials found once: ConfigError where
        there are none, or the profile named is not there."""
        if self._session is not None:
            return self._session
        config = self.config
        session = aws_session(config.aws_profile, config.access_key_id,
                              config.secret_access_key, config.session_token, self._models)
        method = session.get_credentials().method
        if method == "explicit":
            self._source = f"access keys from {config.credential_origin}"
        else:
            self._source = CREDENTIAL_SOURCES.get(method, method)
        self._session = session
        return session


def aws_session(profile, access_key_id=None, secret_access_key=None, session_token=None,
                models=None):
    """A botocore session whose credentials are found: the keys given, else the
    profile, else botocore's chain (SSO, a function's or an instance's role);
    ConfigError where there are none, or the profile is not there."""
    import botocore.exceptions
    import botocore.session

    try:
        session = botocore.session.Session(profile=profile)
        if models is not None:
            session.register_component("data_loader", models)
        if access_key_id:
            session.set_credentials(access_key_id, secret_access_key, session_token)
        credentials = session.get_credentials()
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError([no_such_profile(profile)]) from None
    except botocore.exceptions.BotoCoreError as error:
        raise ConfigError([f"AWS credentials could not be loaded: {error}"]) from None
    if credentials is None:
        raise ConfigError(["no AWS credentials found: set AWS_PROFILE, or "
                           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, in the "
                           "environment or repos.env (or run aws sso login)"])
    return session


def connect_ses(config, **options):
    """The AWS clients of a run (AwsClients): the real factory main() uses unless given
    another.  Tests, which run many times in one process, may pass `models` (one
    botocore loader, so that SES's service description is read once) and shorten how
    long the preflight waits for an answer (preflight_read_timeout)."""
    return AwsClients(config, **options)


def no_such_profile(name):
    """The line for an AWS_PROFILE (or botocore's own AWS_DEFAULT_PROFILE, where the
    settings name none) that botocore cannot find."""
    named = f"AWS_PROFILE {name[:40]!r}" if name else "AWS_DEFAULT_PROFILE"
    return (f"{named} is not a profile in the AWS config or credentials "
            "file (~/.aws/config, ~/.aws/credentials, or AWS_CONFIG_FILE and "
            "AWS_SHARED_CREDENTIALS_FILE): fix the name, or unset it")


def refuse_to_retry_daily_quota(response, **_):
    """botocore needs-retry hook: a used-up daily quota will not free up in seconds.

    SES reports it as Throttling, which the standard retry mode would retry;
    raising here ends the call at once instead.
    """
    failure = ses_error(response[1]) if response else None
    if failure and failure.kind == "DailyQuotaExceeded":
        raise failure


def send_report(ses, config, report, cycle):
    """Send one report's message (report.raw) through SES and return SES's message id,
    or raise SendError.  The v2 client's SendEmail takes it; v1's SendRawEmail, where
    v2 did not answer the preflight, takes the same bytes: only the names differ."""
    import botocore.exceptions

    # So that SES event publishing can attribute deliveries, opens and bounces.
    tags = [{"Name": "report", "Value": report.report_id},
            {"Name": "variant", "Value": report.variant},
            {"Name": "cycle", "Value": cycle}]
    configuration_set = ({"ConfigurationSetName": config.configuration_set}
                         if config.configuration_set else {})
    if ses.meta.service_model.service_name == "sesv2":
        call, request = ses.send_email, {
            "FromEmailAddress": config.sender,
            "Destination": {"ToAddresses": list(report.to),
                            "BccAddresses": list(report.bcc)},
            "Content": {"Raw": {"Data": report.raw}}, "EmailTags": tags}
    else:
        call, request = ses.send_raw_email, {
            "Source": config.sender, "Destinations": [*report.to, *report.bcc],
            "RawMessage": {"Data": report.raw}, "Tags": tags}
    try:
        response = call(**request, **configuration_set)
    except SendError:
        raise  # from refuse_to_retry_daily_quota, already classified
    except botocore.exceptions.ClientError as error:
        failure = ses_error(error.response, config.from_address)
        if failure.kind == "Unknown" and error.response.get("ResponseMetadata", {}).get(
                "HTTPStatusCode") == 404:  # SES's own 404 names what it did not find
            failure = SendError(failure.code, failure.message, "NotAnSesAnswer")
        raise failure from None
    except (botocore.exceptions.BotoCoreError, OSError) as error:
        raise unanswered(error) from None
    except Exception as error:  # noqa: BLE001 - botocore's parser on a non-SES answer
        raise not_an_ses_answer(error) from None
    if "MessageId" not in response:
        raise not_an_ses_answer(None)
    return response["MessageId"]


def unanswered(error):
    """The failure for a request SES never answered: network, TLS or credentials.

    A dropped connection or a timeout does not say the message was refused,
    so a later run may succeed.  TLS that cannot be verified, or credentials
    botocore cannot get (an expired SSO login), need a person first.
    """
    import botocore.exceptions

    if isinstance(error, botocore.exceptions.SSLError):
        kind = "TlsNotVerified"
    elif isinstance(error, (botocore.exceptions.HTTPClientError,
                            botocore.exceptions.ConnectionError, OSError)):
        kind = "Unreachable"
    else:
        kind = "CredentialsUnusable"
    return SendError(type(error).__name__, str(error), kind, from_ses=False)


def not_an_ses_answer(error):
    """The failure for an endpoint whose answer botocore cannot read as SES's."""
    detail = f" ({type(error).__name__}: {error})" if error else ""
    return SendError("NotAnSesAnswer", f"the endpoint answered, but not as SES does{detail}",
                     "NotAnSesAnswer", from_ses=False)


def ses_error(response, sender=None):
    """The SendError for an error answer from SES (botocore's parsed response)."""
    error = response.get("Error") or {}
    code, message = error.get("Code") or "Unknown", error.get("Message") or ""
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return SendError(code, message, failure_kind(code, message, status, sender))


def failure_kind(code, message, http_status, sender):
    """The FAILURE_POLICY key for SES's answer: its code, or the condition it shows."""
    if code in THROTTLING_CODES and "daily" in message.lower():
        return "DailyQuotaExceeded"  # SES words it "Daily message quota exceeded."
    if code == "MessageRejected" and sender and sender in message:
        return "SenderRejected"  # "Email address is not verified ... <sender>"
    if code in FAILURE_POLICY and code not in FAILURE_CONDITIONS:
        return code
    return "ServerError" if http_status >= 500 else "Unknown"


def ses_text(value):
    """Something SES said, fit for one line of a terminal: no control characters (a
    line break or an escape sequence shows as ?).  Never shortened here: a cut could
    leave part of a secret that redaction, later, would no longer recognise."""
    return "".join("?" if unicodedata.category(ch).startswith("C") else ch
                   for ch in str(value))


class Quota(NamedTuple):
    """The account's sending quota as SES states it (v1 and v2 name the fields alike)."""

    max_24_hour_send: float  # -1: unlimited
    sent_last_24_hours: float
    max_send_rate: float  # recipients a second

    @classmethod
    def from_answer(cls, answer):
        """The quota SES stated, or (where the numbers are none a real account has: NaN,
        a rate under one a second) the slowest real account's, with a warning."""
        quota = cls(*(answer.get(name) for name in QUOTA_FIELDS))
        odd = [name for name, value, least in zip(QUOTA_FIELDS, quota, (-1, 0, MIN_SEND_RATE))
               if not is_number(value) or value < least]
        if not odd:
            return quota, ()
        # Each number no account has is replaced alone; the others still count.
        kept = cls(*(fallback if name in odd else value for name, value, fallback
                     in zip(QUOTA_FIELDS, quota, FALLBACK_QUOTA)))
        if {"Max24HourSend", "SentLast24Hours"} & set(odd):  # one without the other is no
            kept = kept._replace(max_24_hour_send=-1.0, sent_last_24_hours=0.0)  # quota
        said = ", ".join(f"{name} {answer.get(name)!r}"[:40] for name in odd)
        what = "; ".join(filter(None, [
            f"pacing at {MIN_SEND_RATE:g} message a second, the slowest an account has"
            if "MaxSendRate" in odd else "",
            "the 24-hour quota unchecked" if {"Max24HourSend", "SentLast24Hours"} & set(odd)
            else ""]))
        return kept, (f"warning: SES's quota answer ({said}) is not one a real account "
                      f"gives: {what}",)

    def note(self):
        return (f"quota: {self.sent_last_24_hours:g} of {self.max_24_hour_send:g} messages "
                f"used in the last 24 hours; max send rate {self.max_send_rate:g} a second")


# No SES account sends slower than one message a second (the sandbox's rate).
MIN_SEND_RATE = 1.0
FALLBACK_QUOTA = Quota(-1.0, 0.0, MIN_SEND_RATE)


class Finding(NamedTuple):
    """What one preflight question found; run_preflight gathers them into a Preflight."""

    notes: tuple = ()
    warnings: tuple = ()
    alerts: tuple = ()  # warnings that --quiet does not hold back (the account at risk)
    problems: frozenset = frozenset()  # EXIT_CODES outcomes: what would stop a send
    sandbox: bool | None = None
    quota: Quota | None = None
    account_refusal: Refusal | None = None  # AWS stopped the account
    suppressed: tuple = ()  # (address, why SES drops mail to it: "BOUNCE since 2026-11-20")


class Preflight:
    """What SES said before sending, gathered from the findings; None wherever it could
    not tell."""

    def __init__(self, findings=()):
        self.notes, self.warnings, self.alerts = [], [], []
        self.problems = set()  # what --check ends in
        self.sandbox = self.quota = self.account_refusal = None
        self.suppressed = {}  # address -> why
        self.v2_unusable = False  # v2 did not answer as SES does: send through v1
        for finding in findings:
            self.add(finding)

    def add(self, finding):
        """Take in one question's finding: its lines, its problems and the facts it saw."""
        self.notes += finding.notes
        self.warnings += finding.warnings
        self.alerts += finding.alerts
        self.problems |= finding.problems
        for fact in ("sandbox", "quota", "account_refusal"):
            if getattr(finding, fact) is not None:
                setattr(self, fact, getattr(finding, fact))
        self.suppressed.update(finding.suppressed)

    @property
    def max_send_rate(self):
        return self.quota and self.quota.max_send_rate

    def refusal(self, reports):
        """The Refusal if these reports cannot go out at all, else None."""
        return self.account_refusal or self.quota_refusal(reports)

    def quota_refusal(self, reports):
        """The Refusal if the quota cannot take these reports, else None.

        A quota smaller than the cycle needs a person (QuotaTooSmall); one used
        up for today frees up by itself (QuotaInsufficient).
        """
        needed = sum(report.recipient_count for report in reports)
        if self.quota is None or self.quota.max_24_hour_send < 0:
            return None  # unknown, or -1: unlimited
        most = self.quota.max_24_hour_send
        left = max(most - self.quota.sent_last_24_hours, 0)
        if needed <= left:
            return None
        counted = (f"this cycle needs {needed} (each report counts its To and BCC); nothing "
                   "was sent so that the cycle is not half-sent")
        if needed > most:
            return Refusal("QuotaTooSmall", f"SES's 24-hour quota is {most:g} and {counted}")
        return Refusal("QuotaInsufficient",
                       f"SES's 24-hour quota has {left:g} messages left and {counted}")


def suppression_line(address, why):
    """The error line for a recipient on the account's suppression list: why, and the fix."""
    advice = FAILURE_POLICY["RecipientSuppressed"].advice.replace("ADDRESS", address)
    return (f"error: {address} is on the account's suppression list ({why}): SES accepts "
            f"reports to it and delivers none; {advice}")


def run_preflight(clients, config, recipients, deadline=PREFLIGHT_DEADLINE_SECONDS,
                  meanwhile=None):
    """Ask SES about the account, the sender and the recipients; warn, never fail, on silence.

    The SES v2 API answers first, its questions asked at once (ten at a time,
    so that a cycle of a few recipients costs one round trip).  Where v2 cannot
    answer (an IAM policy without its actions, a server without it, no answer in
    time), the v1 API's questions stand in, with one warning naming what v1
    cannot see.  meanwhile(), if given, runs while SES answers.
    """
    found = Preflight([Finding(notes=(f"credentials: found ({clients.credential_source})",))])
    domain = config.from_address.rpartition("@")[2]
    answers = ask_at_once(v2_questions(clients.preflight_v2, config.from_address, domain,
                                       recipients), deadline, meanwhile)
    silent = {key: failure for key, answer in answers.items()
              if (failure := v2_silence(key, answer))}
    fallback = []
    found.v2_unusable = v2_unusable(answers["account",])
    if ("account",) in silent:
        fallback.append(("quota", check_quota))
    else:
        found.add(read_account(answers["account",], config))
    if {("identity", config.from_address), ("identity", domain)} & silent.keys():
        fallback.append(("sender", check_sender))
    else:
        found.add(read_sender(answers, config.from_address, domain))
    found.add(read_suppressions(answers, silent))
    v1_answered = ask_v1(clients, config, recipients, found, fallback)
    if v1_answered and found.sandbox:
        v1_answered = ask_v1(clients, config, recipients, found,
                             [("sandbox", check_sandbox_recipients)])
    if silent and v1_answered:  # else v1's own warning says SES did not answer
        unseen = [key for key, failure in silent.items()  # busy, failing or silent SES
                  if key[0] == "suppressed" and failure.policy.outcome == "transient"]
        # Questions that met no answer in time were not seen: --check cannot say "go".
        found.add(Finding(warnings=(v2_fallback_warning(silent),),
                          problems=frozenset({"transient"} if unseen else ())))
    return found


def v2_unusable(answer):
    """Whether the account question's answer says the v2 API cannot take the sends: no
    answer (unreachable, too slow), one SES would not give, or an error page that names
    no SES error code (an endpoint without the v2 API: 404, or a proxy's 403 or 502).
    The sends then go through v1, as the preflight's questions did.  SES's own refusal
    (denied, busy, each with its code) is no reason: v1 would meet it too."""
    import botocore.exceptions

    if isinstance(answer, botocore.exceptions.ClientError):
        code = str(answer.response.get("Error", {}).get("Code", ""))
        return code.isdigit()  # botocore's word for an error page that names no SES code
    return isinstance(answer, Exception) or answer_problem("account", answer) is not None


def v2_questions(client, sender, domain, recipients):
    """The v2 API's preflight questions: {key: (call, its parameters)}."""
    questions = {("account",): (client.get_account, {})}
    for identity in (sender, domain):
        questions["identity", identity] = (client.get_email_identity,
                                           {"EmailIdentity": identity})
    for address in recipients:
        questions["suppressed", address] = (client.get_suppressed_destination,
                                            {"EmailAddress": address})
    return questions


class NotAsked(Exception):
    """A preflight question unanswered, or never asked, when the preflight's time was up."""


def ask_at_once(questions, deadline, meanwhile=None):
    """Each question's answer, or the exception it raised, asked a few at a time.

    Daemon threads, so that a run stopped by a signal exits at once rather than
    after every question; what is still queued when the deadline passes, or when
    the run is stopped, is never asked.
    """
    pending = queue.SimpleQueue()
    for item in questions.items():
        pending.put(item)
    answers = {}

    def ask():
        while True:
            try:
                key, (call, parameters) = pending.get_nowait()
            except queue.Empty:
                return
            try:
                answers[key] = call(**parameters)
            except Exception as error:  # noqa: BLE001 - each answer is judged by v2_silence
                answers[key] = error

    askers = [threading.Thread(target=ask, daemon=True)
              for _ in range(min(PREFLIGHT_CONCURRENCY, len(questions)))]
    ends = time.monotonic() + deadline
    try:
        for asker in askers:
            asker.start()
        if meanwhile:
            meanwhile()
        for asker in askers:
            asker.join(max(ends - time.monotonic(), 0))
    finally:
        while not pending.empty():  # a stop or the deadline: ask nothing more
            with contextlib.suppress(queue.Empty):
                pending.get_nowait()
    return {key: answers.get(key, NotAsked(f"no answer within the preflight's {deadline} s"))
            for key in questions}


def v2_silence(key, answer):
    """The SendError for a v2 question SES did not answer, else None.

    NotFoundException answers the identity and suppression questions: the
    identity does not exist, the address is not on the list.  A 404 without it
    is a server that does not have the v2 API.
    """
    import botocore.exceptions

    if not isinstance(answer, Exception):
        problem = answer_problem(key[0], answer)
        return not_an_ses_answer(ValueError(problem)) if problem else None
    if isinstance(answer, botocore.exceptions.ClientError):
        failure = ses_error(answer.response)
        answered = failure.code == "NotFoundException" and key[0] != "account"
        return None if answered else failure
    if isinstance(answer, NotAsked):
        return SendError("NotAsked", str(answer), "Unreachable", from_ses=False)
    if isinstance(answer, (botocore.exceptions.BotoCoreError, OSError)):
        return unanswered(answer)
    return not_an_ses_answer(answer)


def answer_problem(topic, answer):
    """Why a v2 answer is not what SES sends for this question, or None."""
    if not isinstance(answer, dict):
        return "not an object"
    if topic == "account":
        quota = answer.get("SendQuota")
        if not isinstance(quota, dict) or not all(
                is_number(quota.get(name)) for name in QUOTA_FIELDS):
            return "no SendQuota of three numbers"
        if not isinstance(answer.get("ProductionAccessEnabled"), bool):
            return "no ProductionAccessEnabled"  # the sandbox cannot be told
    elif topic == "identity" and "IdentityType" not in answer:
        return "no IdentityType"
    elif topic == "suppressed" and not isinstance(answer.get("SuppressedDestination"), dict):
        return "no SuppressedDestination"
    return None


def is_number(value):
    """A finite number, as SES's quota fields are (bool is not one)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def v2_fallback_warning(silent):
    """The one warning for every v2 question that went unanswered."""
    said = ", ".join(dict.fromkeys(ses_text(failure.code) for failure in silent.values()))
    parts = []
    unseen = list(dict.fromkeys(V2_ONLY[key[0]] for key in silent if key[0] in V2_ONLY))
    if unseen:
        parts.append(f"the v1 API stood in, and cannot see {' or '.join(unseen)}")
    unchecked = [key[1] for key in silent if key[0] == "suppressed"]
    if unchecked:
        more = f" and {len(unchecked) - 5} more" if len(unchecked) > 5 else ""
        parts.append(f"the suppression list was not checked for {len(unchecked)} "
                     f"address(es): {', '.join(unchecked[:5])}{more}")
    refused = any(failure.code in OPTIONAL_PERMISSION_CODES for failure in silent.values())
    why = ("the IAM policy in docs/iam.md lists the optional ses:GetAccount, "
           "ses:GetEmailIdentity and ses:GetSuppressedDestination" if refused else
           f"SES was busy or failing, or gave no answer within the preflight's "
           f"{PREFLIGHT_DEADLINE_SECONDS} s, or none that SES would give: --check again "
           "sees more")
    return (f"warning: preflight: SES API v2 did not answer ({said}); {'; '.join(parts)}; "
            f"going on ({why})")


def read_account(account, config):
    """account: production access or the sandbox, sending status, enforcement, quota."""
    quota, odd_quota = Quota.from_answer(account["SendQuota"])
    sandbox = account.get("ProductionAccessEnabled") is not True
    sending = account.get("SendingEnabled") not in (False, "false")
    status = ses_text(account.get("EnforcementStatus", "not reported"))
    notes = (f"account: {'in the SES sandbox' if sandbox else 'production access'} in "
             f"{config.region}; sending {'enabled' if sending else 'DISABLED'}; "
             f"enforcement status {status}", quota.note())
    refusal, alerts, warnings = None, (), ()
    if status == "SHUTDOWN":
        refusal = Refusal("AccountShutdown", f"AWS reports sending SHUT DOWN for this SES "
                          f"account in {config.region} (EnforcementStatus SHUTDOWN)")
    elif not sending:
        refusal = Refusal("SendingDisabled", f"AWS reports sending disabled for this SES "
                          f"account in {config.region} (SendingEnabled false)")
    elif status == "PROBATION":
        alerts = (f"warning: AWS has put this SES account in {config.region} on probation "
                  "(EnforcementStatus PROBATION): its bounces or complaints are too high; see "
                  "Reputation metrics in the SES console and fix the cause, or AWS will shut "
                  "sending down",)
    elif status not in KNOWN_ENFORCEMENT and status != "not reported":
        warnings = (f"warning: AWS reports enforcement status {status} for this SES account "
                    f"in {config.region}, which this script does not know: see Reputation "
                    "metrics in the SES console",)
    problems = frozenset({FAILURE_POLICY[refusal.kind].outcome} if refusal else ())
    return Finding(notes=notes, warnings=warnings + odd_quota, alerts=alerts,
                   problems=problems, sandbox=sandbox, quota=quota, account_refusal=refusal)


def read_sender(answers, address, domain):
    """sender: verified (as an address or by its domain), DKIM-signed, its MAIL FROM."""
    identities = {name: answers["identity", name] for name in (address, domain)
                  if not isinstance(answers["identity", name], Exception)}
    verified = [name for name, identity in identities.items()
                if identity.get("VerifiedForSendingStatus") is True
                or identity.get("VerificationStatus") == "SUCCESS"]
    if not verified:
        return sender_finding(address, domain, verified)
    notes, warnings = list(sender_finding(address, domain, verified).notes), []
    dkim = (identities.get(domain) or {}).get("DkimAttributes")
    dkim_status = ses_text(dkim.get("Status", "NOT_STARTED") if isinstance(dkim, dict)
                           else "not reported")
    if domain not in identities:
        notes.append(f"dkim: {domain} is not an SES identity, so SES signs the reports as "
                     f"amazonses.com only; verify {domain} with Easy DKIM to sign them as "
                     "your own")
    elif dkim_status == "SUCCESS":
        notes.append(f"dkim: {domain} signs the reports (DKIM SUCCESS)")
    else:
        warnings.append(f"warning: DKIM for {domain} is {dkim_status}, so the reports are "
                        f"not signed as {domain} and may land in spam: publish the CNAME "
                        "records that the SES console shows under Identities > "
                        f"{domain} > Authentication")
    mail_from = identities[verified[0]].get("MailFromAttributes")
    mail_from = mail_from if isinstance(mail_from, dict) else {}
    status = ses_text(mail_from.get("MailFromDomainStatus") or "not reported")
    if mail_from.get("MailFromDomain") and status != "SUCCESS":
        warnings.append(f"warning: the custom MAIL FROM domain "
                        f"{ses_text(mail_from['MailFromDomain'])} of {verified[0]} is "
                        f"{status}: publish its MX and SPF records as the SES console shows "
                        f"(Identities > {verified[0]} > Custom MAIL FROM domain)")
    return Finding(notes=tuple(notes), warnings=tuple(warnings))


def sender_finding(address, domain, verified):
    """The sender's note, or the warning and problem that SES will reject every report."""
    if verified:
        return Finding(notes=(f"sender: {address} is verified (identity {verified[0]})",))
    return Finding(warnings=(f"warning: neither {address} nor {domain} is a verified SES "
                             "identity in this region: verify the sender in the SES console, "
                             "or SES will reject every report",),
                   problems=frozenset({FAILURE_POLICY["SenderRejected"].outcome}))


def read_suppressions(answers, silent):
    """suppressed: the recipients that SES drops mail to, with the reason and since when."""
    suppressed = []
    for key, answer in answers.items():
        if key[0] != "suppressed" or key in silent or isinstance(answer, Exception):
            continue
        listed = answer["SuppressedDestination"]
        when = listed.get("LastUpdateTime")
        since = (f" since {when.astimezone(timezone.utc):%Y-%m-%d}"
                 if isinstance(when, datetime) else "")
        suppressed.append((key[1], f"{ses_text(listed.get('Reason', 'listed'))}{since}"))
    problems = {FAILURE_POLICY["RecipientSuppressed"].outcome} if suppressed else ()
    return Finding(problems=frozenset(problems), suppressed=tuple(suppressed))


def ask_v1(clients, config, recipients, found, steps):
    """The v1 API's questions, (topic, step) in order, each finding added to found; the
    first that SES cannot answer ends them.

    Returns whether SES answered them all (a refusal of an optional one is an answer).
    """
    for topic, step in steps:
        finding, answered = v1_answer(topic, step, clients, config, recipients)
        found.add(finding)
        if not answered:
            return False
    return True


def v1_answer(topic, step, clients, config, recipients):
    """(what one v1 question found, whether SES answered it so that the next may be asked)."""
    import botocore.exceptions

    try:
        return step(clients.preflight, config, recipients), True  # the client, made if needed
    except botocore.exceptions.ClientError as error:
        failure = ses_error(error.response)
        optional = failure.code in OPTIONAL_PERMISSION_CODES
        warning = (f"warning: preflight {topic} not checked: SES said "
                   f"{ses_text(failure.code)}: {ses_text(failure.message)}; going on")
        # Refused credentials: every other question would get the same answer.
        return Finding(warnings=(warning,), problems=frozenset(
            () if optional else {failure.policy.outcome})), failure.policy.outcome != "config"
    except botocore.exceptions.BotoCoreError as error:
        # An endpoint that does not answer one question will not answer the next.
        warning = (f"warning: preflight stopped, SES did not answer "
                   f"({type(error).__name__}); going on")
        return Finding(warnings=(warning,),
                       problems=frozenset({unanswered(error).policy.outcome})), False
    except Exception as error:  # noqa: BLE001 - botocore's parser on a non-SES answer
        warning = (f"warning: preflight stopped, the endpoint's answer is not SES's "
                   f"({type(error).__name__}); going on")
        return Finding(warnings=(warning,),
                       problems=frozenset({not_an_ses_answer(error).policy.outcome})), False


def check_sender(client, config, recipients):
    """Is the From address, or its domain, a verified SES identity."""
    domain = config.from_address.rpartition("@")[2]
    verified = [identity for identity in verified_identities(client, [config.from_address])
                if identity in (config.from_address, domain)]
    return sender_finding(config.from_address, domain, verified)


def verified_identities(client, addresses):
    """Which of these addresses, and of their domains, SES has verified.

    In SES a verified domain covers every address at it, so both are asked.
    """
    identities = list(dict.fromkeys(
        name for address in addresses for name in (address, address.rpartition("@")[2])))
    verified = set()
    for start in range(0, len(identities), 100):  # SES takes 100 identities a call
        answer = client.get_identity_verification_attributes(
            Identities=identities[start:start + 100])["VerificationAttributes"]
        verified |= {name for name, attributes in answer.items()
                     if attributes.get("VerificationStatus") == "Success"}
    return [name for name in identities if name in verified]


def check_quota(client, config, recipients):
    """The account's 24-hour quota and maximum send rate (v1: the sandbox guessed)."""
    quota, odd_quota = Quota.from_answer(client.get_send_quota())
    sandbox = quota.max_24_hour_send == SANDBOX_MAX_24_HOUR_SEND
    notes = (quota.note(),) + (("sandbox: the quota is the SES sandbox's (200 a day), so "
                                "the account looks like it is in the sandbox",) if sandbox
                               else ())
    return Finding(notes=notes, sandbox=sandbox, quota=quota, warnings=odd_quota)


def check_sandbox_recipients(client, config, recipients):
    """In the SES sandbox, recipients must be verified too."""
    verified = set(verified_identities(client, recipients))
    unverified = [r for r in recipients
                  if r not in verified and r.rpartition("@")[2] not in verified]
    if not unverified:
        return Finding()
    return Finding(warnings=(f"warning: in the SES sandbox, where the account is (or, where "
                             f"only v1 answers, looks to be), recipients must be verified "
                             f"too; not verified: {', '.join(unverified)}: verify them or "
                             "request production access",),
                   problems=frozenset({FAILURE_POLICY["MessageRejected"].outcome}))


###############################################################################
# Delivery events: SES's events through SNS to a queue, set up and read back
###############################################################################

# The names --setup-events gives what it creates, where the settings name none.
EVENTS_NAME = "exec-reports-events"
DEFAULT_CONFIGURATION_SET = "exec-reports"
# The event types the configuration set publishes (SES's names for them).
EVENT_TYPES = ("send", "reject", "bounce", "complaint", "delivery", "deliveryDelay",
               "renderingFailure")
# How a run reads the queue: at most this many messages and seconds, so that a
# queue full of old events never holds the reports up; the rest wait for the next.
EVENTS_MAX_MESSAGES = 500
EVENTS_MAX_SECONDS = 10
EVENTS_VISIBILITY_SECONDS = 60  # a message read and not yet deleted, hidden this long
# SES's event names (eventType, or notificationType for identity notifications),
# each as the audit log names it and the field of the event that lists recipients.
EVENT_KINDS = {
    "Send": ("send", None), "Delivery": ("delivery", "recipients"),
    "Bounce": ("bounce", "bouncedRecipients"), "Complaint": ("complaint",
                                                              "complainedRecipients"),
    "DeliveryDelay": ("delay", "delayedRecipients"), "Reject": ("reject", None),
    "Rendering Failure": ("rendering_failure", None), "RenderingFailure": (
        "rendering_failure", None), "Open": ("open", None), "Click": ("click", None)}
# The kinds that happen to a message, not to one of its recipients: SES's open pixel
# and rewritten links are the message's, so an open or a click names no recipient
# (the To and the audit inbox's BCC read the same message).  One record an event.
MESSAGE_EVENTS = ("open", "click")
MESSAGE_EVENT_MARKS = tuple(f'"event": "{kind}"'.encode() for kind in MESSAGE_EVENTS)
MAX_LINK = 200  # characters of a clicked link kept: scheme, host and path, no query
# How many event records, in how many bytes from the log's end, decide a recipient's
# latest state: the check costs the same however long the log has grown (8 MiB is
# about 15,000 records, years of weekly cycles).  An address that bounced before
# that and was sent nothing since is on SES's suppression list, which the
# preflight asks about.
EVENTS_LOOKBACK_RECORDS = 5000
EVENTS_LOOKBACK_BYTES = 8 << 20
# What --history calls each kind, the latest per recipient.
EVENT_STATES = {"send": "sent", "delivery": "delivered", "bounce": "bounced",
                "complaint": "complained", "delay": "delayed", "reject": "rejected",
                "rendering_failure": "not rendered", "open": "opened", "click": "clicked"}
UNMATCHED = "(unmatched)"  # the cycle and report of an event for a message the log lacks
# An SES message id: letters, digits and a few marks, as SES and moto write them.
MESSAGE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,199}")
EVENT_CLOCK_SKEW = timedelta(minutes=5)  # an event dated later than now by more: forged
EVENT_TEST_REPORT = "(event test)"
SIMULATOR = ("success@simulator.amazonses.com", "bounce@simulator.amazonses.com")


def events_topic_arn(arn, queue_url):
    """Whether an SNS message's TopicArn is the events topic of the queue's own account
    (arn:PARTITION:sns:REGION:ACCOUNT:exec-reports-events), as --setup-events made it."""
    parts = arn.split(":") if isinstance(arn, str) else []
    account = urlsplit(queue_url or "").path.strip("/").split("/")[0]
    return len(parts) == 6 and parts[0] == "arn" and parts[2] == "sns" and \
        parts[4] == account and parts[5] == EVENTS_NAME


def ses_events(body, queue_url=None):
    """The SES event in a queue message's body, wrapped in SNS's envelope (from the
    events topic) or raw; None where the body is not one (malformed, another sender's
    or another topic's, an SNS confirmation, a shape SES never writes)."""
    try:
        event = json.loads(body)
        if isinstance(event, dict) and event.get("Type") == "Notification":
            if not events_topic_arn(event.get("TopicArn"), queue_url):
                return None  # only the topic --setup-events made speaks for SES
            event = json.loads(event.get("Message") or "")
        return event if ses_shaped(event) else None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError):
        return None  # a shape no SES event has, at any depth


def ses_shaped(event):
    """Whether a parsed body has the shape the records are made from: a known kind, a
    message id as SES writes one, and at most SES_MAX_RECIPIENTS addresses, each a
    plain address, where SES writes lists."""
    if not isinstance(event, dict) or not isinstance(event.get("mail"), dict):
        return False
    kind = event.get("eventType") or event.get("notificationType")
    if not isinstance(kind, str) or kind not in EVENT_KINDS or not isinstance(
            event["mail"].get("messageId"), str) or not MESSAGE_ID_PATTERN.fullmatch(
            event["mail"]["messageId"]):
        return False
    recipients = event_recipients(event)
    destination = event["mail"].get("destination") or []
    if not isinstance(destination, list) or not all(isinstance(a, str) for a in destination):
        return False
    listing = EVENT_KINDS[kind][1] is not None  # a kind that names whom it happened to
    return (bool(recipients) or not listing) and \
        max(len(recipients), len(destination)) <= SES_MAX_RECIPIENTS and all(
            len(address) <= 254 and address.isprintable() and address.isascii()
            for address in (*destination, *(r["emailAddress"] for r in recipients)))


def event_recipients(event):
    """The recipients an event names, and each one's own details ({} where none)."""
    kind, recipients_field = EVENT_KINDS[event.get("eventType") or event["notificationType"]]
    detail = event.get(kind_field(event), {})
    if not isinstance(detail, dict):
        raise TypeError("details that are not an object")
    named = detail.get(recipients_field) if recipients_field else event["mail"].get(
        "destination")
    if not isinstance(named or [], list):
        raise TypeError("recipients that are not a list")
    recipients = []
    for entry in named or []:
        entry = {"emailAddress": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("emailAddress"), str):
            raise TypeError("a recipient that is not an address")
        recipients.append(entry)
    return recipients


def event_records(event, matched, now):
    """The audit records of one SES event, one a recipient: what happened to the
    message (matched: its send record, or None), when, and for a bounce why."""
    kind, _ = EVENT_KINDS[event.get("eventType") or event["notificationType"]]
    detail = event.get(kind_field(event)) or {}
    mail = event["mail"]
    named = [] if kind in MESSAGE_EVENTS else event_recipients(event)
    event_id = sha256_hex(json.dumps(event, sort_keys=True))  # the same event twice: once
    records = []
    for number, entry in enumerate(named or [{"emailAddress": ""}]):
        recipient = entry["emailAddress"]
        record = {"ts": now.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
                  "cycle": matched["cycle"] if matched else UNMATCHED,
                  "variant": matched.get("variant", "a") if matched else "a",
                  "report": matched["report"] if matched else UNMATCHED,
                  "status": "event", "event": kind, "message_id": mail["messageId"],
                  "recipient": ses_text(recipient)[:254],
                  "event_time": ses_text(str(detail.get("timestamp") or mail.get("timestamp")
                                             or ""))[:40],
                  "event_id": f"{event_id}:{number}", "matched": bool(matched)}
        if kind == "bounce":
            record["bounce"] = {"type": ses_text(str(detail.get("bounceType", "")))[:40],
                                "subtype": ses_text(str(detail.get("bounceSubType", "")))[:40],
                                "diagnostic": ses_text(str(entry.get(
                                    "diagnosticCode", "")))[:MAX_DETAIL]}
        if kind == "click":
            record["link"] = clicked_link(detail.get("link"))
        if kind in ("reject", "rendering_failure", "delay"):
            record["error"] = {"code": kind, "message": ses_text(str(
                detail.get("reason") or detail.get("errorMessage")
                or detail.get("delayType") or ""))[:MAX_DETAIL]}
        records.append(record)
    return records


def clicked_link(link):
    """A clicked link as the log keeps it: scheme, host and path, without the query or
    fragment (where a link carries a token) or a user and password, printable and
    capped."""
    try:
        parts = urlsplit(link) if isinstance(link, str) else None
    except ValueError:  # "http://[x": no link a mail client follows
        parts = None
    # user:password@ is dropped too: a credential, never a report's
    kept = urlunsplit((parts[0], parts[1].rpartition("@")[2], parts[2], "", "")) \
        if parts else ""
    return ses_text(kept)[:MAX_LINK]


def kind_field(event):
    """The field of an event that holds its details: "bounce", "deliveryDelay"..."""
    name = event.get("eventType") or event["notificationType"]
    return {"DeliveryDelay": "deliveryDelay", "Rendering Failure": "failure",
            "RenderingFailure": "failure"}.get(name, name[0].lower() + name[1:])


# What an event's records take from its send (event_records, sent_to), and how many
# of the newest sends a drain keeps as it reads back: SQS keeps a message 14 days at
# most, and 20,000 sends are years of cycles, so an event's send is among them.
SEND_FIELDS = ("cycle", "variant", "report", "to", "bcc")
KEPT_SENDS = 20_000


class EventBook:
    """What the events drain looks up in the audit log, each part read once a run, so
    that a drain costs what its messages do however long the queue's backlog:

    - the sends, by SES message id: read backwards from the log's end as the run
      found it, only as far as an id not yet seen asks (every line read once a
      run), the KEPT_SENDS newest sends passed kept for later batches, what an
      event needs of each;
    - the event ids already recorded, by cycle: read once a cycle, then kept up to
      date as the run records more (a message SQS delivers twice is recorded once).
    """

    def __init__(self, path):
        self._log = audit_log_at(path)
        self._lines = self._log.from_end(self._worth_reading, statuses=("sent",))
        self._sends, self._absent, self._event_ids = {}, set(), {}
        self._needles = set()  # the ids the current batch asks for, as the log has them

    def close(self):
        self._lines.close()

    def _worth_reading(self, line):
        """A sent record's line; once KEPT_SENDS are kept, only one of an id asked for."""
        return SENT_MARK in line and (len(self._sends) < KEPT_SENDS or any(
            needle in line for needle in self._needles))

    def sends(self, message_ids):
        """{SES message id: its sent record} for those of these ids the log has."""
        wanted = set(message_ids) - self._sends.keys() - self._absent
        self._needles = {json.dumps(message_id).encode() for message_id in wanted}
        for _, record, _ in self._lines if wanted else ():
            if record and record["status"] == "sent" and \
                    isinstance(record.get("message_id"), str):
                self._sends.setdefault(record["message_id"], {  # the newest send of an id
                    field: record[field] for field in SEND_FIELDS if field in record})
                if wanted <= self._sends.keys():
                    break
        self._absent |= wanted - self._sends.keys()
        return {message_id: self._sends[message_id] for message_id in message_ids
                if message_id in self._sends}

    def event_ids(self, cycle):
        """The event ids recorded for a cycle (a set the run adds to)."""
        if cycle not in self._event_ids:
            records, _ = self._log.cycle_records(cycle)
            self._event_ids[cycle] = {r.get("event_id") for r in records
                                      if r["status"] == "event"}
        return self._event_ids[cycle]


class Drained(NamedTuple):
    """What one read of the events queue did."""

    recorded: int = 0
    read_all: bool = True  # False: the queue could not be read (the line said why)


def drain_events(clients, config, audit_log, clock, console, sending=True):
    """Read the events queue into the audit log: each SES event recorded (fsynced)
    before its message is deleted; a message that is not an SES event left on the
    queue for its redrive policy.  Bounded in messages and time (a call started just
    before the deadline may take its timeout); a queue that cannot be read is one
    warning."""
    import botocore.exceptions

    deadline, read, recorded, foreign = clock.monotonic() + EVENTS_MAX_SECONDS, 0, 0, 0
    book = EventBook(config.audit_log_path)
    try:
        while read < EVENTS_MAX_MESSAGES and clock.monotonic() < deadline:
            messages = clients.sqs.receive_message(
                QueueUrl=config.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                VisibilityTimeout=EVENTS_VISIBILITY_SECONDS).get("Messages", [])
            if not messages:
                break
            read += len(messages)
            events = [(message, ses_events(message.get("Body", ""), config.events_queue_url))
                      for message in messages]
            foreign += sum(event is None for _, event in events)
            written, strangers = record_events([e for e in events if e[1]], clients, config,
                                               audit_log, clock, console, deadline, book)
            recorded, foreign = recorded + written, foreign + strangers
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        then = ("the reports are sent all the same, and the events wait on the queue for the "
                "next run" if sending else "the events wait on the queue")
        console.alert(f"warning: the events queue (REPORT_EVENTS_QUEUE_URL) could not be "
                      f"read: {events_error(error)}; {then}")
        return Drained(recorded, read_all=False)
    finally:
        book.close()
        if foreign:
            console.warn(f"warning: {foreign} message(s) on the events queue are not SES "
                         "events (malformed, or another sender's): left on the queue, for its "
                         "redrive policy")
    console.step(f"events: {recorded} recorded from the queue")
    return Drained(recorded)


def record_events(events, clients, config, audit_log, clock, console, deadline, book):
    """Record these (message, event) pairs, then delete their messages; (how many
    records were written, how many events named an address their send never had: not
    SES's, left on the queue).  Past the deadline (clock.monotonic()), the messages not
    yet recorded are left on the queue for the next run.  book: the run's EventBook."""
    sends = book.sends({e["mail"]["messageId"] for _, e in events})
    ours = [(message, e) for message, e in events
            if sent_to(sends.get(e["mail"]["messageId"]), e)]
    strangers, events = len(events) - len(ours), ours
    written, done = 0, []
    for message, event in events:
        if clock.monotonic() >= deadline:
            break  # the run's time for events is up, inside a batch as between them
        for record in event_records(event, sends.get(event["mail"]["messageId"]),
                                    clock.now()):
            known = book.event_ids(record["cycle"])
            if record["event_id"] not in known:
                audit_log.append(record)  # on disk before its message leaves the queue
                known.add(record["event_id"])
                written += 1
        done.append(message)
    entries = [{"Id": str(number), "ReceiptHandle": message["ReceiptHandle"]}
               for number, message in enumerate(done) if message.get("ReceiptHandle")]
    failed = 0
    for start in range(0, len(entries), 10):
        answer = clients.sqs.delete_message_batch(QueueUrl=config.events_queue_url,
                                                  Entries=entries[start:start + 10])
        failed += len(answer.get("Failed") or [])
    if failed:
        console.warn(f"warning: {failed} event message(s) could not be deleted from the queue: "
                     "they come back, and are recorded once")
    return written, strangers


def sent_to(send, event):
    """Whether every address the event's mail went to (mail.destination, as SES writes
    it) was one its send went to; True where the log has no send for it (it is
    recorded as unmatched, and decides nothing).  A bounce may name another address,
    the final recipient of a forwarding alias: that is SES's, and kept."""
    if send is None:
        return True
    ours = {address.casefold() for address in (*send.get("to", ()), *send.get("bcc", ()))}
    return all(address.casefold() in ours for address in event["mail"].get("destination") or ())


def events_error(error):
    """One line for what the queue said: its error code, or why it could not be asked."""
    response = getattr(error, "response", None)
    if response:
        said = response.get("Error") or {}
        return ses_text(f"{said.get('Code', 'Unknown')}: {said.get('Message', '')}")[:MAX_DETAIL]
    return ses_text(f"{type(error).__name__}: {error}")[:MAX_DETAIL]


def read_events(config, audit_log, clock, console, clients, recipients, sending=True):
    """Read the events queue, where there is one (clients: the run's AwsClients),
    then warn of each recipient whose latest event is a permanent bounce or a
    complaint (even with --quiet).  Returns the Drained and the problems."""
    drained = Drained()
    try:
        if config.events_queue_url:
            drained = drain_events(clients, config, audit_log, clock, console, sending)
        problems = delivery_problems(config.audit_log_path, recipients, clock.now())
    except ReportRunError:
        raise  # the audit log: its own exit code
    except Exception as error:  # bookkeeping of what came after: never stops the reports
        if not sending:
            raise
        console.alert(f"warning: the delivery events could not be read ({fault_line(error)}); "
                      "the reports are sent all the same")
        return Drained(drained.recorded, read_all=False), []
    for problem in problems if sending else ():
        console.alert(f"warning: {problem}")
    return drained, problems


def delivery_problems(path, recipients, now):
    """A line for each address among these recipients whose latest event is a
    permanent bounce or a complaint: the owner must fix or replace it.  Only an event
    for a message of ours, dated no later than now, decides: a forged one for a
    message we never sent, or dated in the future, decides nothing."""
    latest = {}
    wanted = {address.casefold() for address in recipients}
    events = audit_log_at(path).from_end(  # opens and clicks decide no address's state
        lambda line: b'"status": "event"' in line and not any(
            mark in line for mark in MESSAGE_EVENT_MARKS), EVENTS_LOOKBACK_BYTES, ("event",))
    for _, (_, record, problem) in zip(range(EVENTS_LOOKBACK_RECORDS), events):
        if problem or record.get("event") not in ("delivery", "bounce", "complaint") or \
                str(record.get("recipient", "")).casefold() not in wanted or \
                not record.get("matched") or event_moment(record, now) is None:
            continue
        later_than(latest, record["recipient"].casefold(), record)
    problems = []
    for record in latest.values():
        where = f"(report {record['report']}, cycle {record['cycle']}, {record.get('event_time')})"
        if record["event"] == "complaint":
            problems.append(f"{record['recipient']} marked a report as spam {where}: SES "
                            "counts complaints against the account; ask them, or take the "
                            "address out of repos.env")
        elif record["event"] == "bounce" and record.get("bounce", {}).get("type") == "Permanent":
            bounce = record["bounce"]
            problems.append(f"{record['recipient']} bounced permanently ({bounce['subtype']}"
                            f"{': ' + bounce['diagnostic'] if bounce['diagnostic'] else ''}) "
                            f"{where}: fix or replace the address in repos.env")
    return problems


def later_than(latest, key, record, oldest_first=False):
    """Keep in latest[key] whichever event SES dated later (SQS keeps no order), as
    moments, not as text; of two at one moment, the one written later to the log.  An
    event with no time SES would write is never later than one with."""
    moment, kept = event_moment(record), latest.get(key)
    before = kept and event_moment(kept)
    if kept is None or (moment and (before is None or moment > before)) or (
            oldest_first and moment == before):
        latest[key] = record


def event_moment(record, now=None):
    """When SES says an event happened, as an aware datetime; None where its time is
    no time, or (given now) later than now by more than a clock's skew."""
    try:
        moment = datetime.fromisoformat(str(record.get("event_time", "")).replace("Z",
                                                                                 "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return None if now is not None and moment > now + EVENT_CLOCK_SKEW else moment


def setup_events(config, connect, console):
    """--setup-events: the queue (and its dead-letter queue), the topic, the
    subscription, the configuration set and its event destination, each made where
    missing, put right where wrong, and left alone where right."""
    import botocore.exceptions

    name = config.configuration_set or DEFAULT_CONFIGURATION_SET
    try:
        with contextlib.closing(connect(config)) as clients:
            queue_url, queue_arn = events_queue(clients.sqs, console)
            topic_arn = events_topic(clients.sns, name, console)
            events_queue_policy(clients.sqs, queue_url, queue_arn, topic_arn, console)
            events_subscription(clients.sns, topic_arn, queue_arn, console)
            events_destination(clients.send_v1, name, topic_arn, console, config.tracking)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        said = events_error(error)
        hint = ("; the IAM policy for setting up is in docs/iam.md" if "AccessDenied" in said
                or "AuthorizationError" in said else "")
        raise SetupError(f"--setup-events stopped: {said}{hint}") from None
    if not config.configuration_set:
        console.result(f"AWS_SES_CONFIGURATION_SET={name}")
    console.result(f"REPORT_EVENTS_QUEUE_URL={queue_url}")


def events_queue(sqs, console):
    """(URL, ARN) of the events queue, made where missing, keeping its messages for
    SQS's longest, 14 days (a laptop may be away a while), and handing a message no
    run can read to a dead-letter queue after EVENTS_MAX_RECEIVES tries."""
    dead_url = sqs.create_queue(QueueName=EVENTS_NAME + "-dead", Attributes=KEEP_LONGEST)[
        "QueueUrl"]
    dead_arn = queue_attributes(sqs, dead_url, "QueueArn")["QueueArn"]
    url = sqs.create_queue(QueueName=EVENTS_NAME)["QueueUrl"]
    have = queue_attributes(sqs, url, "QueueArn", "MessageRetentionPeriod", "RedrivePolicy")
    wanted = {**KEEP_LONGEST, "RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(EVENTS_MAX_RECEIVES)})}
    wrong = {k: v for k, v in wanted.items() if not same_setting(have.get(k), v)}
    if wrong:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=wrong)
    console.result(f"queue: {have['QueueArn']} (messages kept 14 days; after "
                   f"{EVENTS_MAX_RECEIVES} failed reads, to {EVENTS_NAME}-dead)"
                   + (" (put right)" if wrong else ""))
    return url, have["QueueArn"]


KEEP_LONGEST = {"MessageRetentionPeriod": "1209600"}  # 14 days: SQS's longest
EVENTS_MAX_RECEIVES = 5


def queue_attributes(sqs, url, *names):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names)).get(
        "Attributes", {})


def same_setting(have, wanted):
    """Whether a queue attribute is as wanted: JSON compared as JSON, numbers as text."""
    try:  # SQS writes maxReceiveCount as a number, and takes it as text
        have, wanted = json.loads(have), json.loads(wanted)
    except (TypeError, ValueError):
        return have == wanted
    if isinstance(have, dict) and isinstance(wanted, dict):
        return {k: str(v) for k, v in have.items()} == {k: str(v) for k, v in wanted.items()}
    return str(have) == str(wanted)


def events_topic(sns, configuration_set, console):
    """The events topic's ARN (CreateTopic returns the one there), its policy letting
    SES publish this configuration set's events to it (the others' statements kept)."""
    topic_arn = sns.create_topic(Name=EVENTS_NAME)["TopicArn"]
    account = topic_arn.split(":")[4]
    statement = {
        "Sid": "SesPublishesEvents", "Effect": "Allow",
        "Principal": {"Service": "ses.amazonaws.com"}, "Action": "SNS:Publish",
        "Resource": topic_arn, "Condition": {
            "StringEquals": {"AWS:SourceAccount": account},
            "StringLike": {"AWS:SourceArn": f"arn:aws:ses:*:{account}:configuration-set/"
                                            f"{configuration_set}"}}}
    current = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"].get("Policy")
    merged = with_statement(current, statement)
    if merged is None:
        console.result(f"topic: {topic_arn} (already right)")
    else:
        sns.set_topic_attributes(TopicArn=topic_arn, AttributeName="Policy",
                                 AttributeValue=merged)
        console.result(f"topic: {topic_arn} (SES may now publish to it)")
    return topic_arn


def events_queue_policy(sqs, queue_url, queue_arn, topic_arn, console):
    """The queue's policy: the topic may write to the queue (the others' statements
    kept)."""
    statement = {
        "Sid": "TopicWritesEvents", "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
        "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}}
    merged = with_statement(queue_attributes(sqs, queue_url, "Policy").get("Policy"), statement)
    if merged is None:
        console.result("queue policy: already lets the topic write")
        return
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": merged})
    console.result("queue policy: set (the topic may write to the queue)")


def with_statement(current, statement):
    """A policy's JSON with this statement in it (in place of one with its Sid), every
    other statement kept; None where it is there already, as it is."""
    try:
        policy = json.loads(current) if current else {}
    except ValueError:
        policy = {}
    policy = policy if isinstance(policy, dict) else {}
    statements = policy.get("Statement") or []
    statements = statements if isinstance(statements, list) else [statements]
    if statement in statements:
        return None
    kept = [s for s in statements if not (isinstance(s, dict) and s.get("Sid") == statement["Sid"])]
    return json.dumps({"Version": "2012-10-17", **policy, "Statement": [*kept, statement]},
                      sort_keys=True)


def events_subscription(sns, topic_arn, queue_arn, console):
    """The queue's subscription to the topic, made where missing."""
    pages = sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn)
    if any(s.get("Endpoint") == queue_arn and s.get("Protocol") == "sqs"
           for page in pages for s in page.get("Subscriptions", [])):
        console.result("subscription: the queue is subscribed (already)")
        return
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    console.result("subscription: the queue is now subscribed to the topic")


def events_destination(ses, name, topic_arn, console, tracking=None):
    """The configuration set, made where missing, and its SNS event destination for
    every type of EVENT_TYPES, and open and click as REPORT_TRACKING asks (tracking; None
    where it is not set: those of a destination that is there are left as they are).
    One of that name that is not right (another topic, disabled, types missing) is
    said, not changed: SES's v1 API cannot be trusted to update it everywhere, and the
    console can.  Only tracking is turned on or off in place, as the setting says."""
    import botocore.exceptions

    try:
        described = ses.describe_configuration_set(
            ConfigurationSetName=name, ConfigurationSetAttributeNames=["eventDestinations"])
        console.result(f"configuration set: {name} (already there)")
    except botocore.exceptions.ClientError as error:
        if (error.response.get("Error") or {}).get("Code") != "ConfigurationSetDoesNotExist":
            raise
        ses.create_configuration_set(ConfigurationSet={"Name": name})
        console.result(f"configuration set: {name} (made)")
        described = {}
    ours = [d for d in described.get("EventDestinations") or []
            if d and d.get("Name") == EVENTS_NAME]
    if not ours:
        ses.create_configuration_set_event_destination(
            ConfigurationSetName=name, EventDestination={
                "Name": EVENTS_NAME, "Enabled": True,
                "MatchingEventTypes": [*EVENT_TYPES, *sorted(tracking or ())],
                "SNSDestination": {"TopicARN": topic_arn}})
        console.result(f"event destination: the topic (made)"
                       f"{tracking_said(tracking or frozenset(), tracking is None)}")
        return
    destination = ours[0]
    types = {str(t).casefold() for t in destination.get("MatchingEventTypes") or []}
    wrong = [why for why, bad in (
        (f"it sends to {(destination.get('SNSDestination') or {}).get('TopicARN')}",
         (destination.get("SNSDestination") or {}).get("TopicARN") != topic_arn),
        ("it is disabled", str(destination.get("Enabled")).lower() not in ("true", "none")),
        ("it lacks event types " + ", ".join(t for t in EVENT_TYPES if t.casefold() not in types),
         not {t.casefold() for t in EVENT_TYPES} <= types)) if bad]
    if wrong:
        raise SetupError(f"configuration set {name} has an event destination named "
                         f"{EVENTS_NAME} that is not right ({'; '.join(wrong)}): fix it in "
                         "the SES console (or delete it), then run --setup-events again")
    tracked = types & set(TRACKING_WORDS.values())
    if tracking is None or tracked == tracking:
        console.result(f"event destination: the topic (already)"
                       f"{tracking_said(tracked, tracking is None)}")
        return
    kept = [t for t in destination.get("MatchingEventTypes") or []
            if str(t).casefold() not in TRACKING_WORDS.values()]
    ses.update_configuration_set_event_destination(
        ConfigurationSetName=name, EventDestination={
            "Name": EVENTS_NAME, "Enabled": True, "MatchingEventTypes": [*kept, *sorted(tracking)],
            "SNSDestination": {"TopicARN": topic_arn}})
    console.result(f"event destination: the topic (tracking changed){tracking_said(tracking)}")


def tracking_said(tracking, unset=False):
    """What --setup-events says of the opens and clicks tracked."""
    if unset:
        tracked = " and ".join(f"{kind}s" for kind in sorted(tracking)) or "no opens or clicks"
        return f"; {tracked} tracked (REPORT_TRACKING is not set: left as it is)"
    if not tracking:
        return "; no opens or clicks tracked (REPORT_TRACKING is off)"
    return f"; tracking {' and '.join(f'{kind}s' for kind in sorted(tracking))} (REPORT_TRACKING)"


def send_event_test(config, connect, clock, console):
    """--test-events: one message to SES's mailbox simulator, delivered to one address
    and bounced by the other, so that --events shows the whole path work."""
    with audit_log_at(config.audit_log_path).held() as log, \
            contextlib.closing(connect(config)) as clients:
        request = {"Source": config.sender, "Destination": {"ToAddresses": list(SIMULATOR)},
                   "Message": {"Subject": {"Data": "Delivery events test", "Charset": "UTF-8"},
                               "Body": {"Text": {"Data": "A test of SES's delivery events: one "
                                                 "address delivers, the other bounces.",
                                                 "Charset": "UTF-8"}}},
                   "Tags": [{"Name": "report", "Value": "event-test"}]}
        if config.configuration_set:
            request["ConfigurationSetName"] = config.configuration_set
        try:
            message_id = clients.send_v1.send_email(**request)["MessageId"]
        except Exception as error:  # botocore's, whatever the endpoint did: one line
            raise SetupError(f"--test-events: SES did not take the test message: "
                             f"{events_error(error)}") from None
        log.append({"ts": clock.now().astimezone(timezone.utc).isoformat(
            timespec="milliseconds"), "cycle": "event-test", "variant": "a",
            "report": EVENT_TEST_REPORT, "status": "sent", "message_id": message_id,
            "to": list(SIMULATOR), "bcc": []})
    console.result(f"sent {message_id} to {' and '.join(SIMULATOR)}; in a minute, --events "
                   "reads what SES said of it (--history shows cycle event-test)")
    if not config.configuration_set:
        console.warn("warning: AWS_SES_CONFIGURATION_SET is not set, so SES publishes no "
                     "events for this message: run --setup-events and add the lines it prints")


###############################################################################
# The run: pacing, stop signals, the clock, the console, and sending a cycle
###############################################################################

# How long SES's answer to the send in flight is awaited, once a stop is asked for.
IN_FLIGHT_GRACE_SECONDS = 5
MAX_DETAIL = 200  # characters of a record's detail in a summary or history row
GMAIL_CLIPS_AT = 100 * 1024  # bytes of HTML: Gmail clips a message past about 102 KB
# The largest message SES's v1 API takes, base64-encoded (v2 takes 40 MB): a run may
# fall back to v1, and a message that large serves no reader.
SES_MESSAGE_MAX_BYTES = 10 * 1000 * 1000

# What --check says for each kind of problem the preflight met (details above it).
CHECK_VERDICTS = {
    "config": "AWS refused the credentials, or TLS to the endpoint cannot be verified "
              "(see above); a send would fail the same way",
    "rejected": "SES would refuse or drop reports: see above (the sender, the account, a "
                "recipient on the suppression list or one that bounced or complained, or in "
                "the sandbox an unverified one)",
    "transient": "SES could not be reached, did not answer every question in time, or did "
                 "not answer as SES does (see above); try again later",
    "cant_create": "the audit log could not be written (see above): a send would stop "
                   "before the first report",
}


PACING_SHARE = 0.95  # of SES's MaxSendRate: see SendPacer
# The longest wait for one message: its most recipients at the slowest rate paced.
MAX_PACING_WAIT_SECONDS = SES_MAX_RECIPIENTS / (MIN_SEND_RATE * PACING_SHARE)


class SendPacer:
    """Spaces sends so that SES's MaxSendRate, counted in recipients, is never exceeded:
    at PACING_SHARE of it, since SES counts on its own clock, and a send that leaves a
    moment late can reach it with the next one close behind."""

    def __init__(self, max_send_rate, clock):
        self.rate = max_send_rate * PACING_SHARE if max_send_rate and max_send_rate > 0 \
            else None
        self.clock = clock
        self.next_send = None

    def wait_to_send(self, recipients):
        """Sleep until a message to this many recipients may go; never longer than
        MAX_PACING_WAIT_SECONDS (a whole message at the slowest rate an account has)."""
        if self.rate is None:
            return
        now = self.clock.monotonic()
        if self.next_send is not None and self.next_send > now:
            wait = min(self.next_send - now, MAX_PACING_WAIT_SECONDS)
            self.clock.sleep(wait)
            now += wait
        self.next_send = now + recipients / self.rate


class StopSignals:
    """Turns SIGINT, SIGTERM and SIGHUP into RunStopped, without losing a send.

    While a report is being sent and recorded, a signal only asks the run to
    stop: SES's answer is awaited for IN_FLIGHT_GRACE_SECONDS, the outcome is
    recorded, and the run stops before the next report.  A second signal, or
    the grace running out, stops it at once.  Python handles signals in the
    main thread only; a run started from another thread keeps the defaults.
    """

    def __init__(self):
        self.signum = None  # a stop asked for while protected
        self._protected = 0  # depth of protect() blocks
        self._awaiting_ses = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (*STOP_SIGNALS, signal.SIGALRM):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info):
        self._disarm()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum, frame):
        if signum == signal.SIGALRM:  # the grace is over: give up on SES's answer
            if self._awaiting_ses:
                raise RunStopped(self.signum)
        elif self._protected and self.signum is None:
            self.signum = signum
            if self._awaiting_ses:
                signal.setitimer(signal.ITIMER_REAL, IN_FLIGHT_GRACE_SECONDS)
        else:
            raise RunStopped(signum)

    def _disarm(self):
        if self._previous:
            signal.setitimer(signal.ITIMER_REAL, 0)

    @contextlib.contextmanager
    def protect(self):
        """A send and its record: a stop asked for meanwhile waits for the end."""
        self._protected += 1
        try:
            yield
        finally:
            self._protected -= 1

    @contextlib.contextmanager
    def awaiting_ses(self):
        """The request itself: a stop asked for meanwhile waits the grace at most."""
        self._awaiting_ses = True
        if self.signum is not None:
            signal.setitimer(signal.ITIMER_REAL, IN_FLIGHT_GRACE_SECONDS)
        try:
            yield
        finally:
            self._awaiting_ses = False
            self._disarm()

    def check(self):
        """Stop here if a stop was asked for during the last send."""
        if self.signum is not None:
            raise RunStopped(self.signum)


class SystemClock:
    """The time a run reads: now() for records, monotonic() and sleep() for pacing.

    main() takes another clock in its place, so tests run on a clock of their own.
    """

    def now(self):
        return datetime.now().astimezone()

    def monotonic(self):
        return time.monotonic()

    def sleep(self, seconds):
        time.sleep(seconds)


class Console:
    """Results to stdout, diagnostics to stderr, as loud as the user asked.

    With --quiet nothing is printed unless something went wrong; then the
    problems are printed, with any warnings held back until then.  Alerts
    (stale figures, an SES account on probation) are printed even then: numbers
    sent as news must not be old, and an account at risk must not go unseen.  cron mails
    whatever a job prints, so a quiet run that worked sends no mail.

    Everything printed passes through here, so this is where the secrets (once
    the settings are read) are taken out of it.
    """

    def __init__(self, stdout, stderr, verbosity="normal"):
        self.stdout = stdout
        self.stderr = stderr
        self.verbosity = verbosity
        self.secrets = ()  # the run's credentials, never printed
        self.summary = {}  # a sending run's cycle and reports by status, as recorded so
        # far: for a caller that reads no text (lambda_handler), even where it stopped
        self._held = []
        self._closed = set()  # streams whose reader has gone

    def result(self, text):
        if self.verbosity != "quiet":
            self._print(text, self.stdout)

    def step(self, text):
        if self.verbosity == "verbose":
            self._print(text, self.stderr)

    def warn(self, text):
        if self.verbosity == "quiet":
            self._held.append(text)
        else:
            self._print(text, self.stderr)

    def alert(self, text):
        """A warning --quiet does not hold back: stale figures must reach cron's mail."""
        self._print(text, self.stderr)

    def problem(self, text):
        for held in self._held:
            self._print(held, self.stderr)
        self._held.clear()
        self._print(text, self.stderr)

    def _print(self, text, stream):
        """Print, or, where the reader has gone (`| head -1`, a closed terminal), print
        nothing more to that stream: the audit log, not the console, is the record, so
        a closed pipe never stops a run."""
        if stream in self._closed:
            return
        try:
            print(redact(text, self.secrets), file=stream, flush=True)
        except (BrokenPipeError, ValueError):  # ValueError: a stream closed in-process
            self._closed.add(stream)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                # Python flushes the real streams at exit: give it nowhere to fail.
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


class RunOutcome:
    """What happened to each report in one run, in order."""

    def __init__(self):
        self.records = []
        self.failures = []  # (record, SendError)
        self.refusal = None  # the Refusal, when the cycle could not go out at all
        self.suppressed = {}  # recipient -> why SES drops what this run sent to it

    def outcomes(self):
        """What went wrong, as EXIT_CODES keys (none: every report went out)."""
        found = {failure.policy.outcome for _, failure in self.failures}
        if self.refusal:
            found.add(FAILURE_POLICY[self.refusal.kind].outcome)
        if self.suppressed:  # sent, but not to everyone: a person has to act
            found.add(FAILURE_POLICY["RecipientSuppressed"].outcome)
        return found


class CycleRun:
    """One sending run of a cycle: each report sent, skipped or failed, and audited."""

    def __init__(self, config, *, audit_log, cycle, clock, console, stop, force=False):
        self.config = config
        self.audit_log = audit_log
        self.cycle = cycle
        self.force = force
        self.clock = clock
        self.console = console
        self.stop = stop
        self.run_id = os.urandom(16).hex()  # random, like uuid4, without importing uuid
        self.outcome = RunOutcome()
        console.summary.update(cycle=cycle)

    def record(self, report, status, *, message_id=None, error=None, suppressed=()):
        """Audit one outcome (on disk before anything else happens) and note it."""
        record = audit_record(report, self.config, run_id=self.run_id, cycle=self.cycle,
                              now=self.clock.now(), status=status, message_id=message_id,
                              error=error, suppressed=suppressed)
        self.console.summary.setdefault(status, []).append(report.report_id)  # what
        self.audit_log.append(record)  # happened, even where it could not be recorded
        self.outcome.records.append(record)
        self.console.step(f"{status} {report.report_id}: {message_id or error['code']}")
        return record

    def skip(self, reports, code, message, suppressed=()):
        for report in reports:
            self.record(report, "skipped", error={"code": code, "message": message},
                        suppressed=suppressed)

    def send(self, reports, ses, pacer, suppressed):
        """Send in order; stop early where every remaining report would fail too.

        suppressed: the recipients SES would drop (the preflight's finding).  A
        report still goes to the others; one with nobody else is not sent.
        """
        for position, report in enumerate(reports):
            self.stop.check()
            self.audit_log.check_room()
            dropped = [a for a in (*report.to, *report.bcc) if a in suppressed]
            self.outcome.suppressed.update((a, suppressed[a]) for a in dropped)
            if len(dropped) == report.recipient_count:
                self.skip([report], "RecipientSuppressed", "every recipient is on the "
                          f"account's suppression list: {', '.join(dropped)}", dropped)
                continue
            pacer.wait_to_send(report.recipient_count)
            claim = self.audit_log.claim(report, self.cycle, self.clock.now(), self.force)
            if not claim.go:  # an S3 log's other run sent it, or is sending it now
                self.skip([report], claim.code, claim.why)
                continue
            if claim.taken_over:
                self.console.warn(f"warning: {report.report_id}: {claim.taken_over}")
            self.console.step(f"sending {report.report_id} to {', '.join(report.to)}")
            with self.stop.protect():
                failure = self.send_one(ses, report, dropped)
            if failure and failure.policy.stops_run:
                self.skip(reports[position + 1:], "NotAttempted",
                          f"run stopped after {failure.code}")
                break
        self.stop.check()  # a stop asked for during the last send still stops the run

    def send_one(self, ses, report, suppressed=()):
        """Send one report and record what SES said; return the SendError, if any."""
        try:
            with self.stop.awaiting_ses():
                message_id = send_report(ses, self.config, report, self.cycle)
        except RunStopped:  # the grace ran out: say so, then stop
            self.record(report, "failed", error={
                "code": "StoppedInFlight", "message": "the run was stopped before SES "
                "answered; SES may have sent it, and the next run sends it (again)"})
            raise
        except SendError as failure:
            error = {"code": failure.code,
                     "message": redact(failure.message, self.config.secrets)}
            self.outcome.failures.append((self.record(report, "failed", error=error), failure))
            self.audit_log.release(report, self.cycle)
            return failure
        self.record(report, "sent", message_id=message_id, suppressed=suppressed)
        return None


def send_cycle(reports, config, *, cycle, force, clock, console, connect, stop, refusal=None,
               scheduled=False):
    """Lock, read the ledger, check with SES, then send what this cycle still lacks.

    connect(config) makes the SES clients (connect_ses, unless main() was given
    another); a Refusal stops the cycle before SES is asked.  On a schedule, the due
    dates that passed unsent since the last cycle sent are recorded as missed first.
    """
    with audit_log_at(config.audit_log_path).held(follow=True) as audit_log, \
            contextlib.closing(connect(config)) as clients:
        if scheduled:
            record_missed(audit_log, config, cycle, reports, clock, console)
        read_events(config, audit_log, clock, console, clients, recipients_of(reports))
        already_sent, warnings = read_ledger(config.audit_log_path, cycle, config.variant)
        for warning in warnings:
            console.warn(warning)
        if force:
            already_sent = {}
        console.step(f"ledger: {len(already_sent)} report(s) already sent in cycle {cycle}, "
                     f"variant {config.variant}")
        cycle_run = CycleRun(config, audit_log=audit_log, cycle=cycle, clock=clock,
                             console=console, stop=stop, force=force)
        for report in reports:
            if report.report_id in already_sent:
                cycle_run.skip([report], "AlreadySent", f"sent earlier in cycle {cycle} as "
                         f"{already_sent[report.report_id]}; --force sends it again")
        to_send = [r for r in reports if r.report_id not in already_sent]
        if to_send:
            to_send = ses_messages(to_send, config, clock.now())
        if to_send and refusal:
            cycle_run.outcome.refusal = refusal
            cycle_run.skip(to_send, *refusal)
        elif to_send:
            # The sending client is made while SES answers the preflight.
            found = run_preflight(clients, config, recipients_of(to_send),
                                  meanwhile=lambda: clients.send)
            say_preflight(found, console, console.step)
            cycle_run.outcome.refusal = found.refusal(to_send)
            if cycle_run.outcome.refusal:
                cycle_run.skip(to_send, *cycle_run.outcome.refusal)
            else:
                cycle_run.send(to_send, clients.send_v1 if found.v2_unusable else clients.send,
                               SendPacer(found.max_send_rate, clock), found.suppressed)
    return cycle_run.outcome


def record_missed(audit_log, config, cycle, reports, clock, console):
    """Record each due date that passed unsent (in full or in part) before this cycle,
    and say so once, in one line."""
    run_id = os.urandom(16).hex()
    cycles = schedule_records(config.audit_log_path, config.variant,
                              date.fromisoformat(cycle))
    said = schedule_change(cycles, config)
    if said:
        console.warn(said)
    missed = missed_cycles(cycles, config, cycle, reports)
    for day, unsent in missed.items():
        audit_log.append(missed_record(config, run_id=run_id, day=day, cycle=cycle,
                                       unsent=unsent, now=clock.now()))
    if missed:
        days = [str(day) for day in missed]
        shown = ", ".join(days[:MISSED_SHOWN]) + (
            f" and {len(days) - MISSED_SHOWN} more" if len(days) > MISSED_SHOWN else "")
        console.alert(f"warning: missed cycle(s) {shown}: they fell due and were not "
                      f"(fully) sent before cycle {cycle} fell due; only {cycle} is sent "
                      "(the audit log records each miss; --history shows them)")


def schedule_change(cycles, config):
    """One line where the log's latest scheduled cycle was sent under another schedule
    than REPORT_SCHEDULE's now: no cycle before the change is called missed.  cycles:
    what schedule_records read."""
    latest = max((day for day, seen in cycles.items() if seen["sent"] or seen["missed"]),
                 default=None)
    before = {s for s in cycles[latest]["schedules"] if s} if latest else set()
    ours = schedule_text(config.schedule)
    if not before or ours in before:
        return None
    return (f"note: REPORT_SCHEDULE is now {ours} (cycle {latest} went under "
            f"{', '.join(sorted(before))}): cycles are counted as missed from the first "
            "sent under the new schedule")


def say_preflight(found, console, note):
    """What the preflight found: its notes through note (a step of the run, or --check's
    result), its warnings, and the alerts --quiet does not hold back."""
    for line in found.notes:
        note(line)
    for warning in found.warnings:
        console.warn(warning)
    for alert in found.alerts:
        console.alert(alert)


def recipients_of(reports):
    """Every distinct recipient of these reports, in first-seen order."""
    return list(dict.fromkeys(a for r in reports for a in (*r.to, *r.bcc)))


def configured_recipients(config, specs):
    """recipients_of for reports not rendered: To and BCC as the settings route them."""
    routes = [config.recipients(spec.report_id) for spec in specs]
    return list(dict.fromkeys(a for route in routes for a in (*route["to"], *route["bcc"])))


def check_only(reports, config, *, cycle, console, connect, now, refusal=None):
    """--check: say what SES can tell and what a run would send; send nothing.

    Returns what would stop a send, as EXIT_CODES outcomes: none only when a
    send would go through, as far as SES can tell.
    """
    sent, warnings = read_ledger(config.audit_log_path, cycle, config.variant)
    to_send = [r for r in reports if r.report_id not in sent]
    with contextlib.closing(connect(config)) as clients:
        found = run_preflight(clients, config, recipients_of(to_send or reports))
    for warning in warnings:
        console.warn(warning)
    say_preflight(found, console, console.result)
    console.result(f"cycle {cycle}, variant {config.variant}: "
                   f"{len(reports) - len(to_send)} already sent, {len(to_send)} to send")
    problems = set(found.problems) if to_send else set()
    for refused in (refusal, found.refusal(to_send)):
        if refused and to_send:
            problems.add(FAILURE_POLICY[refused.kind].outcome)
            console.problem(refusal_line(refused))
    for address, why in found.suppressed.items() if to_send else ():
        console.problem(suppression_line(address, why))
    for problem in delivery_problems(config.audit_log_path, recipients_of(reports), now):
        problems.add("rejected")  # SES will drop it, or count it against the account
        console.problem(f"error: {problem}")
    unwritable = audit_log_at(config.audit_log_path).write_problem() if to_send else None
    if unwritable:
        problems.add("cant_create")
        console.problem(f"error: {unwritable}")
    explained = {FAILURE_POLICY[r.kind].outcome for r in (refusal, found.refusal(to_send))
                 if r and to_send}  # its own line said why; a verdict would blur it
    for outcome, verdict in CHECK_VERDICTS.items():
        if outcome in problems and outcome not in explained:
            console.problem(f"error: {verdict}")
    return problems


def refusal_line(refusal):
    """The line on stderr for a cycle the preflight refused: why, and what to do."""
    return f"error: {refusal.why}: {FAILURE_POLICY[refusal.kind].advice}"


def failure_line(record, failure):
    """One line on stderr for a failed report: what SES said and what to do."""
    said = f"{ses_text(failure.code)}: {ses_text(failure.message)}"
    said = f"SES said {said}" if failure.from_ses else said
    return f"error: {record['report']} not sent: {said}; {failure.policy.advice}"


def outcome_detail(record):
    """The last column of the summary and history tables: one line of what the record
    says (SES's words were redacted when recorded), cut to fit a terminal."""
    detail = record_detail(record)
    clean = ses_text(detail)  # a line break would forge a row; U+202E reorder it
    if len(clean) > MAX_DETAIL:
        return f"{clean[:MAX_DETAIL]}... ({len(clean) - MAX_DETAIL} more characters in the log)"
    return clean


def record_detail(record):
    error = record.get("error") or {}
    if record.get("status") == "sent":
        dropped = record.get("suppressed") or []
        return (record.get("message_id") or "") + (
            f"; suppressed, not delivered: {', '.join(dropped)}" if dropped else "")
    if error.get("code") == "AlreadySent":
        return "already sent: " + error.get("message", "").split(" as ")[-1].split(";")[0]
    if error.get("code") == "NotAttempted":
        return f"not attempted ({error.get('message', '')})"
    return f"{error.get('code')}: {error.get('message', '')}"


def short_list(addresses):
    """The first address, and how many more: keeps a table row on one line."""
    addresses = list(addresses) or ["-"]
    return addresses[0] + (f" +{len(addresses) - 1}" if len(addresses) > 1 else "")


def summary_table(records):
    """The end-of-run table: report, recipients, status and SES message id."""
    rows = [["report", "to", "status", "SES message id"]]
    rows += [[r["report"], short_list(r["to"]), r["status"], outcome_detail(r)]
             for r in records]
    return text_table(rows, wrap=False)


def report_outcome(outcome, config, cycle, console):
    """The summary on stdout, and one line on stderr per problem."""
    for record, failure in outcome.failures:
        console.problem(failure_line(record, failure))
    for address, why in outcome.suppressed.items():
        console.problem(suppression_line(address, why))
    if outcome.refusal:
        console.problem(refusal_line(outcome.refusal))
    sent = sum(r["status"] == "sent" for r in outcome.records)
    console.result(summary_table(outcome.records))
    console.result(f"{sent} of {len(outcome.records)} reports sent for cycle {cycle}, "
                   f"variant {config.variant}; BCC {config.bcc}; "
                   f"audit log: {config.audit_log_path}")


def history_tables(records, now):
    """The cycles these records hold, newest last, each variant as a table; where SES's
    events reached the log, each recipient's latest state."""
    latest = {}  # (cycle, variant) -> {report: its record that says the most}
    delivered = {}  # (cycle, variant, report) -> {recipient: its latest event record}
    for record in records:
        key = (record.get("cycle"), record.get("variant", "a"))
        if record["status"] == "event":
            if record.get("event") in MESSAGE_EVENTS:
                continue  # no recipient's state: --ab counts them
            if record["matched"] and event_moment(record, now):  # as the alarm reads them
                later_than(delivered.setdefault((*key, record["report"]), {}),
                           record["recipient"].casefold(), record, oldest_first=True)
            continue
        shown = latest.pop(key, {})  # re-inserted: the dict keeps last-active order
        earlier = shown.get(record["report"])
        already = (record.get("error") or {}).get("code") == "AlreadySent"
        # A later skip or failure does not hide an earlier send; an AlreadySent
        # skip is shown only where the send it names is not in view.
        if not (earlier and (already or (earlier["status"] == "sent"
                                         and record["status"] != "sent"))):
            shown[record["report"]] = record
        latest[key] = shown
    tables = []
    for (cycle, variant), shown in latest.items():  # the records hold the last cycles
        rows = [["report", "status", "when (UTC)", "figures", "to", "SES message id / error"]]
        rows += [[r["report"], r["status"], r.get("ts", "")[:16].replace("T", " "),
                  r.get("data_as_of") or "-", short_list(r.get("to", [])),
                  outcome_detail(r)] for r in shown.values()]
        events = {report: states for (c, v, report), states in delivered.items()
                  if (c, v) == (cycle, variant)}
        if events:
            rows[0].append("delivery (latest per recipient)")
            for row in rows[1:]:
                row.append("; ".join(delivery_state(e) for e in events.get(row[0], {}).values())
                           or "-")
        tables.append(f"cycle {cycle}, variant {variant}\n{text_table(rows, wrap=False)}")
    return tables


def delivery_state(record):
    """One recipient's latest event, as --history shows it: "a@x bounced (Permanent)"."""
    state = EVENT_STATES.get(record.get("event"), record.get("event", "?"))
    bounce = record.get("bounce") or {}
    why = f" ({bounce.get('type', '')}/{bounce.get('subtype', '')})" if bounce else ""
    return ses_text(f"{record.get('recipient', '')} {state}{why}")[:MAX_DETAIL]


# --ab: which edition its readers open and click, and whether the difference is more
# than chance.  Counted per message (one report to its To list), since SES's opens
# and clicks name no recipient; deliveries, bounces and complaints per To recipient.
AB_CYCLES = 6  # --ab's window when no N is given
AB_SIGNIFICANCE = 0.05  # a leader only where chance alone would show the gap under 5 %
AB_POWER = 0.80  # "how many more cycles": what finds such a difference 80 % of the time
AB_SMALL_COUNT = 5  # an expected cell under this: Fisher's exact test, not the normal one


class Tally:
    """What one variant (or one report of it) did in the window."""

    def __init__(self):
        self.cycles, self.messages, self.recipients = set(), {}, 0
        self.delivered, self.opened, self.clicked = set(), set(), set()
        self.bounced, self.complained = set(), set()
        self.untracked = {kind: set() for kind in MESSAGE_EVENTS}  # sent with it off

    def send(self, record):
        self.cycles.add(record["cycle"])
        self.messages[record["message_id"]] = {a.casefold() for a in record.get("to", ())}
        self.recipients += len(record.get("to", ()))
        said = record.get("tracking")  # not there: sent before it was recorded, or unset
        for kind in MESSAGE_EVENTS if isinstance(said, list) else ():
            if kind not in said:
                self.untracked[kind].add(record["message_id"])

    def tracked(self, kind):
        """How many of its messages SES could have seen opened (clicked): all but those
        sent with that tracking off, which can neither open nor lower a rate."""
        return len(self.messages) - len(self.untracked[kind])

    def hits(self, kind):
        """How many of those were opened (clicked) at least once."""
        return len((self.opened if kind == "open" else self.clicked) - self.untracked[kind])

    def event(self, record):
        """An event of one of this tally's messages: to a To recipient, or to the
        message itself (an open, a click)."""
        message_id, kind = record["message_id"], record.get("event")
        recipient = str(record.get("recipient", "")).casefold()
        if kind == "open":
            self.opened.add(message_id)
        elif kind == "click":
            self.clicked.add(message_id)
        elif recipient in self.messages[message_id]:  # the audit inbox's copy is no reader
            {"delivery": self.delivered, "bounce": self.bounced,
             "complaint": self.complained}.get(kind, set()).add((message_id, recipient))


def ab_tallies(records):
    """{variant: Tally} and {(report, variant): Tally} of these records: the sends SES
    accepted and the events matched to them."""
    variants, reports, of_message = {}, {}, {}
    for record in records:
        if record["status"] == "sent" and report_sent(record) and \
                isinstance(record.get("message_id"), str):
            key = (record["report"], record.get("variant", "a"))
            tallies = (variants.setdefault(key[1], Tally()), reports.setdefault(key, Tally()))
            for tally in tallies:
                tally.send(record)
            of_message[record["message_id"]] = tallies
    for record in records:
        if record["status"] == "event" and record.get("matched") and \
                record.get("message_id") in of_message:
            for tally in of_message[record["message_id"]]:
                tally.event(record)
    return variants, reports


def count_of(part, whole):
    """"12 of 30 (40%)"."""
    return f"{part} of {whole} ({percent_share(Decimal(part), whole)})"


def count_and_rate(part, whole):
    """"12 (40%)": a count and its share of the whole, or the count alone of none."""
    return f"{part} ({percent_share(Decimal(part), whole)})" if whole else str(part)


def ab_table(variants, tracked):
    """Each variant's counts, with rates; "-" where SES recorded no event of a kind
    (tracked: the kinds recorded in the window; deliveries, bounces and complaints
    shown where any of them was)."""
    delivery = bool(tracked & {"delivery", "bounce", "complaint"})
    rows = [["variant", "cycles", "reports", "recipients", "delivered", "opened", "clicked",
             "bounced", "complaints"]]
    for variant, tally in sorted(variants.items()):
        sent, people = len(tally.messages), tally.recipients
        rows.append([ses_text(variant)[:20], str(len(tally.cycles)), str(sent), str(people),
                     count_and_rate(len(tally.delivered), people) if delivery else "-",
                     count_and_rate(tally.hits("open"), tally.tracked("open"))
                     if "open" in tracked else "-",
                     count_and_rate(tally.hits("click"), tally.tracked("click"))
                     if "click" in tracked else "-",
                     count_and_rate(len(tally.bounced), people) if delivery else "-",
                     count_and_rate(len(tally.complained), people) if delivery else "-"])
    return text_table(rows, wrap=False)


def ab_verdict(what, kind, variants):
    """One line on whether a variant leads on opens or clicks (kind "open", "click"): only
    where the difference is beyond chance at 95 %; else the counts, and how many more
    cycles would tell.  A message sent with that tracking off is not counted."""
    a, b = variants.get("a"), variants.get("b")
    if not (a and a.tracked(kind) and b and b.tracked(kind)):
        return f"{what}: a variant sent nothing tracked in these cycles: nothing to compare"
    hits = [a.hits(kind), b.hits(kind)]
    sent = [a.tracked(kind), b.tracked(kind)]
    said = f"a {count_of(hits[0], sent[0])}, b {count_of(hits[1], sent[1])}"
    p_value, test = two_proportion_p(hits, sent)
    if p_value < AB_SIGNIFICANCE:
        leader = "a" if hits[0] / sent[0] > hits[1] / sent[1] else "b"
        shown = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"
        return f"{what}: variant {leader} leads, {said}; {shown} ({test})"
    return (f"{what}: too few to tell, {said}; p = {p_value:.2f} ({test}): "
            f"{more_cycles(hits, sent, [len(a.cycles), len(b.cycles)])}")


def two_proportion_p(hits, sent):
    """The two-sided p-value that two rates differ by chance alone, and the test used:
    the normal approximation where every expected count is 5 or more, else Fisher's."""
    total_hits, total = sum(hits), sum(sent)
    expected = [n * h / total for n in sent for h in (total_hits, total - total_hits)]
    if min(expected) < AB_SMALL_COUNT:
        return fisher_p(hits, sent), "Fisher's exact test"
    from statistics import NormalDist

    pooled = total_hits / total
    spread = math.sqrt(pooled * (1 - pooled) * (1 / sent[0] + 1 / sent[1]))
    z = abs(hits[0] / sent[0] - hits[1] / sent[1]) / spread if spread else 0.0
    return 2 * (1 - NormalDist().cdf(z)), "two-proportion z-test"


def fisher_p(hits, sent):
    """Fisher's exact two-sided p-value of a 2x2 table: the chance, with the margins
    fixed, of a table no likelier than the one seen."""
    total_hits, total = sum(hits), sum(sent)

    def chance(k):
        return math.comb(sent[0], k) * math.comb(sent[1], total_hits - k) / math.comb(
            total, total_hits)

    seen = chance(hits[0])
    low, high = max(0, total_hits - sent[1]), min(sent[0], total_hits)
    return min(1.0, sum(p for k in range(low, high + 1)
                        if (p := chance(k)) <= seen * (1 + 1e-7)))


def more_cycles(hits, sent, cycles):
    """How many more cycles a variant, at these rates and sends a cycle, would let the
    test find this difference 80 % of the time."""
    from statistics import NormalDist

    rates = [h / n for h, n in zip(hits, sent)]
    if rates[0] == rates[1]:
        return "the rates are the same, and more cycles at these rates would not part them"
    pooled = sum(hits) / sum(sent)
    z_test, z_power = (NormalDist().inv_cdf(p) for p in (1 - AB_SIGNIFICANCE / 2, AB_POWER))
    needed = (z_test * math.sqrt(2 * pooled * (1 - pooled)) + z_power * math.sqrt(
        sum(r * (1 - r) for r in rates))) ** 2 / (rates[0] - rates[1]) ** 2
    per_cycle = min(n / c for n, c in zip(sent, cycles))
    more = max(1, math.ceil(needed / per_cycle) - min(cycles))
    return f"at these rates, about {more} more cycle(s) of each variant would tell"


def ab_lines(records, cycles):
    """What --ab prints of these records, of the last `cycles` cycles asked for."""
    variants, reports = ab_tallies(records)
    if not variants:
        return ["no reports sent in these cycles: nothing to compare"]
    tracked = {r.get("event") for r in records if r["status"] == "event" and r["matched"]}
    seen = len({r["cycle"] for r in records if r["status"] != "event"})
    lines = [f"A/B over the last {seen} cycle(s) of the audit log ({cycles} asked for):",
             ab_table(variants, tracked)]
    for what, kind in (("opens", "open"), ("clicks", "click")):
        lines.append(textwrap.fill(
            ab_verdict(what, kind, variants) if kind in tracked else
            f"{what}: none recorded in these cycles, so none are shown as 0 (SES records "
            f"them only where tracking is on: REPORT_TRACKING)", TEXT_WIDTH,
            subsequent_indent="  ", break_on_hyphens=False))
    if tracked & set(MESSAGE_EVENTS):
        lines.append(textwrap.fill(
            "The tests count each message as a trial of its own, but each list reads every "
            "cycle's: a lead says which edition these readers opened more, not that it "
            "would do better with others.", TEXT_WIDTH))
    if not tracked & {"delivery", "bounce", "complaint"}:
        lines.append(textwrap.fill(
            "deliveries, bounces and complaints: none recorded in these cycles, so none "
            "are shown as 0 (REPORT_EVENTS_QUEUE_URL: --setup-events)", TEXT_WIDTH,
            subsequent_indent="  ", break_on_hyphens=False))
    rows = [["report", *(f"{ses_text(v)[:20]}: opened/sent" for v in sorted(variants))]]
    for report_id in dict.fromkeys(r for r, _ in reports):
        rows.append([ses_text(report_id)[:40], *(f"{t.hits('open')}/{t.tracked('open')}" if (
            t := reports.get((report_id, v))) else "-" for v in sorted(variants))])
    if "open" in tracked:
        tests = len(rows) - 1
        lines += [textwrap.fill(
            f"By report, not tested one by one: of {tests} such tests, at least one would "
            f"pass at 95 % by chance {1 - (1 - AB_SIGNIFICANCE) ** tests:.0%} of the time; "
            "the totals above are the test.", TEXT_WIDTH),
            text_table(rows, wrap=False)]
    return lines


def print_dry_run(reports, config, console):
    """Print each report's text edition as it would be sent, headers first.

    The From line shows the name as a reader sees it, not its encoded form.
    """
    for report in reports:
        console.result(f"From: {config.from_name} <{config.from_address}>\n"
                       f"To: {', '.join(report.to)}\n"
                       f"Bcc: {', '.join(report.bcc)}\nSubject: {report.subject}\n\n"
                       f"{report.body}\n{'=' * TEXT_WIDTH}")


def write_previews(reports, config, directory, now, console):
    """Each report as an .eml (opens in any mail client) and its .html; sends nothing.
    The previews are the owner's financials: readable by their owner only (a folder
    the script makes, 0700), and never written through a link planted in the folder."""
    path = directory
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for report in reports:
            stem = report.report_id + ("" if report.variant == "a" else "-b")
            for path, content in ((directory / f"{stem}.eml", report_eml(report, config, now)),
                                  (directory / f"{stem}.html", report.html.encode("utf-8"))):
                write_private(path, content)
            console.result(f"wrote {directory / stem}.eml and .html")
    except OSError as error:
        reason = ("it is a symbolic link, and a preview is never written through one: "
                  "remove it" if error.errno == errno.ELOOP else
                  "it is not a regular file (a FIFO?)" if error.errno == errno.ENXIO
                  else error.strerror)
        raise PreviewError(f"cannot write preview {path}: {reason}; or choose another "
                           "--preview-dir") from None


def write_private(path, content):
    """Write a regular file readable by its owner only; never through a symbolic link."""
    fd = open_regular_file(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW)
    with open(fd, "wb") as file:
        if os.fstat(fd).st_nlink > 1:  # another name of it may be a file the owner keeps
            raise OSError(errno.EMLINK, "it has other names (hard links), and a preview "
                                        "never overwrites a file kept elsewhere: remove it")
        os.ftruncate(fd, 0)
        os.fchmod(fd, 0o600)  # one left by an earlier run, or by someone else
        file.write(content)


###############################################################################
# The schedule and the alarms: cycles that fall due, missed ones, the failure
# notice and the heartbeat
###############################################################################

# What the heartbeat waits for, at most.
HEARTBEAT_TIMEOUT_SECONDS = 5
# A due date is called missed within this many days of the cycle sent: a stray old
# record (a test run for 1926) must not make a thousand of them.
MISSED_LOOKBACK_DAYS = 366
# The records a run writes under the schedule in force; an event (SES's, read later)
# or a failure notice says nothing of which schedule a cycle was sent under.
SCHEDULED_STATUSES = ("sent", "failed", "skipped", "missed")
MISSED_REPORT = "(cycle)"  # the report name of a missed cycle's record
MISSED_SHOWN = 5  # missed cycles named in the one line that says them
NOTICE_REPORT = "(failure notice)"  # the report name of a failure notice's record
# The outcomes a notice is sent for: reports were due and did not go.  A run
# stopped by a signal is left to the heartbeat; a run another one locked out
# leaves the telling to that one.
NOTICE_OUTCOMES = ("software", "rejected", "data", "cant_create", "transient", "forbidden")


def due_days(schedule, year, month):
    """The days of a month that a schedule makes due; a day past the month's end is
    its last day (31 is April's 30th, February's 28th or 29th)."""
    import calendar

    last = calendar.monthrange(year, month)[1]
    return sorted({min(day, last) for day in schedule})


def due_on_or_before(schedule, day):
    """The latest due date on or before day: the cycle a run on day sends."""
    year, month = day.year, day.month
    while True:
        passed = [d for d in due_days(schedule, year, month) if date(year, month, d) <= day]
        if passed:
            return date(year, month, passed[-1])
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)


def due_after(schedule, day):
    """The first due date after day."""
    year, month = day.year, day.month
    while True:
        coming = [d for d in due_days(schedule, year, month) if date(year, month, d) > day]
        if coming:
            return date(year, month, coming[0])
        year, month = (year, month + 1) if month < 12 else (year + 1, 1)


def fell_due_at(day, zone):
    """The moment a cycle falls due: the first moment of its day in the run's zone
    (where a clock change skips midnight, the first that exists: 01:00)."""
    if zone:  # zoneinfo reads a skipped 00:00 with the offset before the change
        return datetime.combine(day, datetime.min.time(), tzinfo=zone)
    start = datetime.combine(day, datetime.min.time()).astimezone()  # the machine's zone
    while start.astimezone().date() < day:  # a skipped midnight read as the day before
        start += timedelta(minutes=15)
    return start.astimezone()


def zone_name(zone):
    return str(zone) if zone else "the machine's time zone"


def schedule_records(path, variant, before):
    """{cycle date: {"sent": reports sent, "missed": bool, "schedules": the schedules
    its records were written under}} of the variant's dated cycles in the year before
    `before`, read back from the log's end as far as the first record of an older
    cycle (records are appended in time order)."""
    cycles = {}
    oldest = before - timedelta(days=MISSED_LOOKBACK_DAYS)
    for record in records_from_end(path, statuses=SCHEDULED_STATUSES):
        if record["status"] not in SCHEDULED_STATUSES:
            continue  # an event or a notice, written later, under no schedule
        day = parse_date(record["cycle"])
        if day is not None and day < oldest:
            break
        if day is None or day >= before or record.get("variant", "a") != variant:
            continue
        seen = cycles.setdefault(day, {"sent": set(), "missed": False, "schedules": set()})
        seen["missed"] |= record["status"] == "missed"
        written = record.get("schedule")  # a hand-edited one that is no text: none
        seen["schedules"].add(written if isinstance(written, str) else None)
        if record["status"] == "sent":
            seen["sent"].add(record["report"])
    return cycles


def missed_cycles(cycles, config, cycle, reports):
    """{due date: the reports it never sent} for each due date before this cycle, in
    the year before it, not fully sent and not yet recorded as missed, since the
    first cycle the log shows sent under the schedule in force: a new schedule (or
    the first, after cycles sent by hand) has missed nothing.  cycles: what
    schedule_records read."""
    current = date.fromisoformat(cycle)
    ours = schedule_text(config.schedule)
    # Only since the latest cycle written under another schedule (or none: by hand).
    other = max((day for day, seen in cycles.items() if seen["schedules"] - {ours}),
                default=date.min)
    started = [day for day, seen in cycles.items() if day > other and
               (seen["missed"] or seen["sent"]) and ours in seen["schedules"]]
    if not started:
        return {}
    wanted = [spec.report_id for spec in reports]
    missed, day = {}, min(started) - timedelta(days=1)
    while (day := due_after(config.schedule, day)) < current:
        seen = cycles.get(day, {"sent": set(), "missed": False, "schedules": set()})
        unsent = [r for r in wanted if r not in seen["sent"]]
        if unsent and not seen["missed"]:
            missed[day] = unsent
    return missed


def missed_record(config, *, run_id, day, cycle, unsent, now):
    """The audit record of a due cycle whose reports (all, or some) never went."""
    return {"ts": now.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
            "run_id": run_id, "cycle": day.isoformat(), "variant": config.variant,
            "report": MISSED_REPORT, "status": "missed", "message_id": None,
            "error": {"code": "Missed", "message": f"fell due on {day}; not sent before "
                      f"cycle {cycle} fell due: {', '.join(unsent)}"},
            **schedule_field(config)}


def cycle_is_sent(config, cycle, reports):
    """True where the ledger shows every one of these reports sent in the cycle."""
    sent, _ = read_ledger(config.audit_log_path, cycle, config.variant)
    return all(spec.report_id in sent for spec in reports)


class Heartbeat:
    """A dead-man's switch's pings, healthchecks.io style: URL/start as a run begins,
    URL when it ends with everything due sent, URL/<exit code> otherwise.

    The URL is a secret: no line names it, and no redirect is followed (it could
    take the secret to another host, or to plain http).  A ping is one request and
    one retry within HEARTBEAT_TIMEOUT_SECONDS; it never changes the exit code, and
    once a ping goes unanswered the run sends no more (each would wait as long)."""

    def __init__(self, url, console):
        self.url = url
        self.console = console
        self.silent = not url

    def ping(self, suffix=""):
        if self.silent:
            return
        failures = []
        worker = threading.Thread(target=self._ping, args=(ping_url(self.url, suffix),
                                                           failures),
                                  daemon=True)  # a server that never answers holds no exit
        worker.start()
        worker.join(HEARTBEAT_TIMEOUT_SECONDS)
        if worker.is_alive():
            self.silent = True
            self.console.warn(f"warning: the heartbeat (REPORT_HEARTBEAT_URL) did not "
                              f"answer in {HEARTBEAT_TIMEOUT_SECONDS} s; no more pings "
                              "this run")
        elif failures:
            self.console.warn(f"warning: the heartbeat (REPORT_HEARTBEAT_URL) could not be "
                              f"reached: {failures[-1]}")

    def _ping(self, url, failures):
        import urllib.error
        import urllib.request
            # A monitor on this machine is reached directly, whatever proxy is set.
        direct = [urllib.request.ProxyHandler({})] if loopback_host(urlsplit(url).hostname) \
            else []
        opener = urllib.request.build_opener(*direct, _no_redirects())
        deadline = time.monotonic() + HEARTBEAT_TIMEOUT_SECONDS
        for _ in range(2):  # one try and one retry
            request = urllib.request.Request(url, data=b"", method="POST", headers={
                "User-Agent": f"send_exec_reports/{VERSION}"})
            try:
                with opener.open(request, timeout=max(deadline - time.monotonic(), 0.1)):
                    del failures[:]
                    return
            except urllib.error.HTTPError as error:
                failures.append(f"HTTP {error.code}" + (" (a redirect, not followed: give "
                                                        "the final URL)" if 300 <= error.code
                                                        < 400 else ""))
                if error.code < 500:
                    return  # a wrong URL stays wrong
            except Exception as error:  # whatever it is, this thread ends in a line, never a
                # traceback on stderr (which redaction does not see): URLError, a
                # malformed answer (http.client's), a TLS failure...
                failures.append(f"{type(error).__name__}: {getattr(error, 'reason', error)}")


def ping_url(url, suffix):
    """The heartbeat URL with a suffix on its path: /start, /1 (a trailing slash or a
    query string of the monitor's kept where they belong)."""

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix)) if suffix else url


def _no_redirects():
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        """A redirect is an answer to report, not a place to follow the secret to."""

        def redirect_request(self, *args, **kwargs):
            return None

    return NoRedirects


class Alarms:
    """What a send run tells besides its exit code: the heartbeat as it begins and
    ends, and, where due reports did not go, one failure notice by email to
    REPORT_ALERT_EMAIL, at most one per cycle, variant and reason (the audit log
    records it)."""

    def __init__(self, config, *, cycle, selected, console, connect, clock):
        self.config = config
        self.cycle = cycle
        self.selected = selected
        self.console = console
        self.connect = connect
        self.clock = clock
        self.heartbeat = Heartbeat(config.heartbeat_url, console)

    def watch(self, sending):
        """Run sending() (a RunOutcome, or None where nothing was due) between the
        heartbeat's start and end; return its outcomes, as EXIT_CODES keys."""
        try:
            self.heartbeat.ping("/start")
            outcome = sending()
        except RunLockedError:
            raise  # the run holding the lock is at work: it pings, and tells
        except (ProblemsError, ReportRunError) as error:
            self.ended({error.outcome}, *failure_reason(error), self.unsent_of_ledger())
            raise
        except (KeyboardInterrupt, RunStopped) as stopped:
            signum = getattr(stopped, "signum", signal.SIGINT)
            self.heartbeat.ping(f"/{exit_code({STOP_SIGNALS[signum]})}")
            raise
        except Exception as error:  # a fault of the script's own: it must still be heard
            self.ended({"software"}, "software", fault_line(error), self.unsent_of_ledger())
            raise
        outcomes = outcome.outcomes() if outcome else set()
        if outcomes:
            self.ended(outcomes, *outcome_reason(outcome), outcome_unsent(outcome))
        else:
            self.heartbeat.ping("")
        return outcomes

    def ended(self, outcomes, key, reason, unsent):
        code = exit_code(outcomes)
        if self.config.alert_email and outcomes & set(NOTICE_OUTCOMES):
            try:
                self.notify(code, key, reason, unsent)
            except Exception as error:  # best effort, and it says so: the notice must
                # never change what the run ends in, or hide why it failed
                self.console.warn(f"warning: the failure notice to {self.config.alert_email} "
                                  f"could not be sent: {ses_text(str(error))[:MAX_DETAIL]}")
        self.heartbeat.ping(f"/{code}")

    def unsent_of_ledger(self):
        """The selected reports the ledger does not show sent in the cycle (all of them
        where the log cannot be read)."""
        try:
            sent, _ = read_ledger(self.config.audit_log_path, self.cycle, self.config.variant)
        except (OSError, ReportRunError):
            sent = {}
        return [spec.report_id for spec in self.selected if spec.report_id not in sent]

    def notify(self, code, key, reason, unsent):
        """Send the failure notice, unless the cycle's log shows one for this variant
        and reason; record it where the log can be written."""
        config = self.config
        reason = redact(reason, config.secrets)  # once, for the notice and its record
        try:
            with audit_log_at(config.audit_log_path).held_for_notice() as audit_log:
                if audit_log and self.noticed(key):
                    self.console.step(f"a failure notice for cycle {self.cycle} ({key}) "
                                      "went out already")
                    return
                with contextlib.closing(self.connect(config)) as clients:
                    message_id = send_notice(clients.notice, config, self.cycle, code, reason,
                                             unsent, len(self.selected))
                self.console.step(f"failure notice sent to {config.alert_email}: {message_id}")
                if audit_log:
                    try:
                        audit_log.append(notice_record(config, cycle=self.cycle, key=key,
                                                       reason=reason, message_id=message_id,
                                                       now=self.clock.now()))
                    except ReportRunError as error:
                        self.console.warn(f"warning: the failure notice went out but is not "
                                          f"recorded ({error}); the next failing run sends "
                                          "another")
        except RunLockedError:
            self.console.step("no failure notice: another run holds the lock, and tells")

    def noticed(self, key):
        """Whether the cycle's log shows a notice sent for this variant and reason; False
        where the log cannot be read (an S3 that is down): that may be the news."""
        try:
            records, _ = audit_log_at(self.config.audit_log_path).cycle_records(self.cycle)
        except (OSError, ReportRunError):
            return False
        return any(r["status"] == "notice" and r.get("variant", "a") == self.config.variant
                   and (r.get("error") or {}).get("code") == key for r in records)


def fault_line(error):
    """The one line that names a fault in the script: what and where, no more (a
    message could carry what it was working on)."""
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    return (f"error: a fault in send_exec_reports: {type(error).__name__}"
            + (f" in {where.name}, line {where.lineno}" if where else "")
            + "; the run's stderr has the traceback")


def failure_reason(error):
    """(reason key, the one line that says what went wrong and the fix) of an error
    that ended a send run."""
    if isinstance(error, ProblemsError):
        more = len(error.problems) - 1
        return (error.outcome, f"{error.label}: {error.problems[0]}"
                + (f" (and {more} more problem(s): run it by hand to see them)" if more else ""))
    return type(error).__name__, f"error: {error}"


def outcome_reason(outcome):
    """(reason key, the one line) of a send run whose reports did not all go."""
    if outcome.failures:
        record, failure = outcome.failures[0]
        return failure.code, failure_line(record, failure)
    if outcome.refusal:
        return outcome.refusal.kind, refusal_line(outcome.refusal)
    address, why = next(iter(outcome.suppressed.items()))
    return "RecipientSuppressed", suppression_line(address, why)


def outcome_unsent(outcome):
    """The reports a run did not send (a report sent earlier in the cycle is not one)."""
    return [r["report"] for r in outcome.records if r["status"] != "sent"
            and (r.get("error") or {}).get("code") != "AlreadySent"]


def send_notice(ses, config, cycle, code, reason, unsent, selected):
    """Send the plain-text failure notice (reason redacted already: Alarms.notify);
    return SES's message id or raise SendError."""
    import botocore.exceptions

    body = "\n".join([
        f"The executive reports of cycle {cycle} did not all go out.", "",
        f"Not sent ({len(unsent)} of {selected}): {', '.join(unsent) or 'none'}",
        f"Why: {reason}",
        f"Exit code: {code}", "",
        "Fix what the line above says, then run send_exec_reports.py again: a report "
        "already sent is never sent twice. --history shows the cycle.",
        f"Audit log: {config.audit_log_path}"])
    request = {"Source": config.sender, "Destination": {"ToAddresses": [config.alert_email]},
               "Message": {"Subject": {"Data": f"Reports not sent: cycle {cycle} "
                                               f"({len(unsent)} of {selected})",
                                       "Charset": "UTF-8"},
                           "Body": {"Text": {"Data": body,
                                             "Charset": "UTF-8"}}},
               "Tags": [{"Name": "report", "Value": "failure-notice"},
                        {"Name": "cycle", "Value": cycle}]}
    if config.configuration_set:
        request["ConfigurationSetName"] = config.configuration_set
    try:
        return ses.send_email(**request)["MessageId"]
    except botocore.exceptions.ClientError as error:
        raise ses_error(error.response, config.from_address) from None
    except (botocore.exceptions.BotoCoreError, OSError) as error:
        raise SendError(type(error).__name__, str(error), "Unreachable",
                        from_ses=False) from None


def notice_record(config, *, cycle, key, reason, message_id, now):
    """The audit record of a failure notice sent: the cycle, the reason (redacted), the
    address."""
    return {"ts": now.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
            "run_id": os.urandom(16).hex(), "cycle": cycle, "variant": config.variant,
            "report": NOTICE_REPORT, "to": [config.alert_email], "status": "notice",
            "message_id": message_id,
            "error": {"code": key, "message": reason}}


def show_status(args, environ, console, clock):
    """--status: the last cycle sent, the cycle due and the next; the outcome "overdue"
    where a due cycle is not fully sent REPORT_OVERDUE_HOURS after it fell due."""
    settings = load_settings(args.env_file, environ, required=False)
    (schedule, zone, overdue), problems = schedule_settings(settings)
    if problems:
        raise ConfigError(problems)
    path = resolve_path(args.audit_log, settings, "AUDIT_LOG_PATH", DEFAULT_AUDIT_LOG,
                        args.env_file)
    now = clock.now()
    console.result(last_sent_line(path, zone))
    if not schedule:
        console.result("schedule: none (REPORT_SCHEDULE is not set): no cycle falls due by "
                       "itself, so none is overdue")
        return set()
    today = now.astimezone(zone).date()
    due = due_on_or_before(schedule, today)
    wanted = select_reports(args.only)  # as the scheduled job sends: --only, --variant
    sent, _ = read_ledger(path, due.isoformat(), args.variant)
    unsent = [spec.report_id for spec in wanted if spec.report_id not in sent]
    since = now - fell_due_at(due, zone)
    hours = int(since.total_seconds() // 3600)
    console.result(f"schedule: days {','.join(map(str, schedule))} of each month, in "
                   f"{zone_name(zone)}; next due {due_after(schedule, today)}")
    console.result(f"due: cycle {due}, variant {args.variant}: {len(wanted) - len(unsent)} "
                   f"of {len(wanted)} reports sent, {hours} hour(s) after it fell due")
    if unsent and since >= timedelta(hours=overdue):
        console.problem(f"overdue: cycle {due} fell due {hours} hours ago and {len(unsent)} "
                        f"of {len(wanted)} reports are not sent (REPORT_OVERDUE_HOURS is "
                        f"{overdue}): run send_exec_reports.py, and see --history for what "
                        "stopped the last run")
        return {"overdue"}
    return set()


def last_sent_line(path, zone):
    """What --status says of the last report sent: its cycle, when, and how many of
    that cycle's reports the log shows sent."""
    last = next(filter(report_sent, records_from_end(path, SENT_MARK, ("sent",))), None)
    if last is None:
        return f"last sent: nothing yet (audit log {path})"
    sent, _ = read_ledger(path, last["cycle"], last.get("variant", "a"))
    when = last.get("ts", "")
    with contextlib.suppress(ValueError, OverflowError):  # a hand-edited or foreign ts
        when = f"{datetime.fromisoformat(when).astimezone(zone):%Y-%m-%d %H:%M %Z}"
    return (f"last sent: cycle {last['cycle']}, variant {last.get('variant', 'a')}: "
            f"{len(sent)} report(s), the last at {when}")


###############################################################################
# Command line
###############################################################################

# What --deploy-aws does not go with (--dry-run, its plan, it does).
DEPLOY_EXCLUDES = ("preview_dir", "check", "events", "setup_events", "test_events", "status",
                   "new_data", "force", "only", "cycle", "audit_log", "data")
# SES message tags carry the cycle, and allow only letters, digits, _ and -.
CYCLE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 64) instead of exiting with 2."""

    def error(self, message):
        raise UsageError(message)


def build_parser():
    description = textwrap.fill(
        "Render the executive reports and send each through Amazon SES, To its "
        "recipients and BCC the audit inbox, recording every outcome in an audit log. "
        "A report already sent in the cycle is skipped, so a re-run sends only what "
        "is missing.", TEXT_WIDTH)
    parser = _ArgumentParser(prog="send_exec_reports.py", description=description,
                             epilog=exit_code_table(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="print the report ids and titles")
    action.add_argument("--dry-run", action="store_true",
                        help="print the text edition of the selected reports; nothing "
                             "sent, and no network call but to read sheets kept in S3")
    action.add_argument("--preview-dir", metavar="DIR", type=Path,
                        help="write each selected report as DIR/ID.eml and DIR/ID.html; "
                             "nothing sent")
    action.add_argument("--check", action="store_true",
                        help="ask SES about the credentials, account, sender and "
                             "recipients (quota, sandbox, suppression list); send nothing")
    action.add_argument("--history", metavar="N", type=int, nargs="?", const=5,
                        help="print the last N cycles from the audit log (default 5)")
    action.add_argument("--ab", metavar="N", type=int, nargs="?", const=AB_CYCLES,
                        help="compare variants a and b over the last N cycles (default 6): "
                             "delivered, opened, clicked, and whether a lead is beyond "
                             "chance")
    action.add_argument("--events", action="store_true",
                        help="read SES's delivery events from REPORT_EVENTS_QUEUE_URL into "
                             "the audit log (every send run does this first)")
    action.add_argument("--setup-events", action="store_true",
                        help="make what SES's events need (queue, topic, subscription, "
                             "configuration set, event destination), keeping what is there; "
                             "prints the REPORT_EVENTS_QUEUE_URL line for repos.env")
    action.add_argument("--test-events", action="store_true",
                        help="send one message to SES's mailbox simulator (one address "
                             "delivers, one bounces), for --events to show")
    action.add_argument("--status", action="store_true",
                        help="print the last cycle sent and, with REPORT_SCHEDULE, the "
                             "cycle due and the next; exit 1 where a due cycle is overdue "
                             "(for monitors)")
    action.add_argument("--metrics", action="store_true",
                        help="print the metric catalogue: the figures sheet's columns, and "
                             "where each target comes from")
    action.add_argument("--items", action="store_true",
                        help="print the source document's items: the ids items.csv names")
    action.add_argument("--rules", action="store_true",
                        help="print the attention rules every report opens with, and "
                             "their levels: the defaults, and targets.csv's")
    action.add_argument("--new-data", metavar="DIR",
                        help="start a data folder: each sheet with its first line, and "
                             "items.csv with the source document's items to confirm or "
                             "close; a sheet already there is kept")
    parser.add_argument("--deploy-aws", action="store_true",
                        help="make or update the AWS Lambda function that runs this file "
                             "hourly, its role, schedule and dead-letter queue, keeping "
                             "what is there (with --dry-run: print the plan); needs the "
                             "data and the audit log in S3 (docs/aws.md)")
    parser.add_argument("--csv-header", action="store_true",
                        help="with --metrics: print the first line of a new figures file")
    parser.add_argument("--data", metavar="PATH",
                        help="the owner's data folder, or one figures .csv (default: "
                             "REPORT_DATA_DIR, else REPORT_DATA_PATH, else "
                             f"{DEFAULT_DATA_DIR}/ beside the env file)")
    parser.add_argument("--only", metavar="ID[,ID...]", help="send only these reports")
    parser.add_argument("--variant", choices=VARIANTS, default="a",
                        help="a: the full reports to AWS_RECIPIENT_EMAIL (default); b: the "
                             "one-screen brief to AWS_RECIPIENT_EMAIL_B")
    parser.add_argument("--cycle", metavar="LABEL",
                        help="the reporting cycle, in subjects and the audit log "
                             "(default: with REPORT_SCHEDULE, the latest due date; else "
                             "today's date in REPORT_TIMEZONE, or the machine's zone)")
    parser.add_argument("--force", action="store_true",
                        help="send the selected reports even if already sent this cycle")
    parser.add_argument("--env-file", metavar="PATH", type=Path, default=DEFAULT_ENV_FILE,
                        help="settings file (default: repos.env beside this script)")
    parser.add_argument("--audit-log", metavar="PATH",
                        help="audit log (default: AUDIT_LOG_PATH, else "
                             f"{DEFAULT_AUDIT_LOG} beside the env file)")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", action="store_true",
                          help="print nothing if every report was sent; else only the "
                               "problems (for cron); stale or missing figures and an SES "
                               "account on probation are always said")
    loudness.add_argument("--verbose", action="store_true", help="show each step on stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    return parser


def exit_code(outcomes):
    """The exit code of a run that met these outcomes: the most pressing one's."""
    unknown = set(outcomes) - set(EXIT_CODES)
    if unknown:
        raise ValueError(f"outcomes with no exit code: {sorted(unknown)}")  # a bug here
    return next((code for outcome, (code, _) in EXIT_CODES.items() if outcome in outcomes),
                EXIT_CODES["sent"][0])


def exit_code_table():
    """EXIT_CODES as --help shows them, in the order of the codes."""
    rows = sorted(EXIT_CODES.values())
    return "exit codes:\n" + "\n".join(
        textwrap.fill(meaning, TEXT_WIDTH, initial_indent=f"  {code:<5}",
                      subsequent_indent=" " * 7) for code, meaning in rows)


def parse_cycle(label):
    """--cycle's label, checked; None where it is not given."""
    if label is None:
        return None
    if not CYCLE_PATTERN.fullmatch(label):
        raise UsageError(f"--cycle {label[:40]!r} must be 1-64 letters, digits, '_' or '-' "
                         "(for example 2026-11-29)")
    if re.fullmatch(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}", label) and parse_date(label) is None:
        raise UsageError(f"--cycle {label!r} looks like a date but is not one: write it "
                         f"YYYY-MM-DD, a day that exists from {FIRST_YEAR} to {LAST_YEAR}")
    return label


def metric_catalogue(targets, targets_path):
    """--metrics: each metric's column, unit, target and reports, then its label; and
    the months targets.csv sets a target for, which win over the catalogue's."""
    rows = [["column", "unit", "target", "reports", "label"]]
    rows += [[m.metric_id + (" (computed)" if m.formula or m.counts else ""), m.unit,
              target_text(m, catalogue_target(m)), ",".join(m.reports), m.label]
             for m in METRICS]
    units = "\n".join(f"  {unit:<8} {meaning}" for unit, meaning in UNITS.items())
    monthly = [f"  {metric_id:<22} {month or 'every':<7}  "
               f"{target_text(METRICS_BY_ID[metric_id], value)}"
               for metric_id, months in targets.items() if metric_id in METRICS_BY_ID
               for month, value in sorted(months.items())]
    source = (f"targets from {targets_path}, each for its month instead of the catalogue's:\n"
              + "\n".join(monthly)) if monthly else \
        f"targets: the catalogue's (no month's target in {targets_path or 'a targets.csv'})"
    return (f"{text_table(rows, wrap=False)}\n\n{source}\n\nunits:\n{units}\n\n"
            f"The figures sheet's first column is {FIGURES_DATE_COLUMN} (YYYY-MM-DD); "
            f"{FIGURES_NOTE_COLUMN} (optional) is free text shown with the date. An empty "
            "cell is not measured. A computed figure is never a column: open security gaps "
            "are counted from the items, the others from the columns.")


def csv_header():
    """--metrics --csv-header: the first line of a new figures file."""
    return ",".join([FIGURES_DATE_COLUMN, FIGURES_NOTE_COLUMN,
                     *(metric.metric_id for metric in MEASURED_METRICS if not metric.counts)])


def item_catalogue():
    """--items: the source document's items, each its id first, then what closes it."""
    entries = []
    for item in ITEMS:
        due = (f"due {item.due} days after its first row" if isinstance(item.due, int)
               else f"due {item.due}" if item.due else "")
        closes = (f"closed {RECORD_RULES[item.item_id].says}" if item.item_id in RECORD_RULES
                  else f"closed once {item.metric} is measured" if item.once_measured
                  else f"closed when {item.metric} meet(s) the target" if item.metric
                  else f"closed with {item.with_item}" if item.with_item else "")
        facts = "; ".join(filter(None, [item.kind, ", ".join(item.reports), due, closes]))
        entries.append("\n".join([item.item_id, *(textwrap.fill(
            text, TEXT_WIDTH, initial_indent="    ", subsequent_indent="      ")
            for text in (facts, item.text + (f" Action: {item.todo}" if item.todo else "")))]))
    kinds = "\n".join(f"  {kind:<16} {meaning}" for kind, meaning in ITEM_KINDS.items())
    return ("The source document's items. None is in a report until items.csv has a row "
            "for it: --new-data writes them all, open, to confirm or close.\n\n"
            + "\n".join(entries) + f"\n\nkinds:\n{kinds}\n\nitems.csv: "
            f"{','.join(SHEETS['items.csv'].columns)}; status is "
            f"{', '.join(ITEM_STATUSES)}. An item of your own: a new id, with its text "
            "(and reports, kind, due) on its first row.")


# The note on each item --new-data writes: the source document said it, no sheet did.
NEW_ITEM_NOTE = "from the source document: confirm or close"


def new_sheets(day):
    """What a new data folder's sheets hold: each sheet's first line; items.csv also
    the source document's items, open as of day, each to be confirmed or closed."""
    sheets = {name: ",".join(sheet.columns) if sheet.columns else csv_header()
              for name, sheet in SHEETS.items()}
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    for item in ITEMS:
        due = planned_due(item, day)
        writer.writerow([day.isoformat(), item.item_id, "open", NEW_ITEM_NOTE,
                         " ".join(item.reports), item.kind, item.text,
                         due.isoformat() if due else ""])
    sheets["items.csv"] += "\n" + rows.getvalue().rstrip("\n")
    return sheets


def write_new_data(folder, day, console):
    """--new-data: a data folder with every sheet's first line, and in items.csv the
    source document's items dated day; a sheet that is there already is kept as it
    is, never overwritten."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for sheet, header in new_sheets(day).items():
            path = folder / sheet
            if path.is_symlink():
                console.result(f"left {path} alone: it is a symbolic link, and a sheet is "
                               "never written through one")
                continue
            try:  # O_EXCL: never overwrite; O_NOFOLLOW: never write through a link
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o600)
            except FileExistsError:
                console.result(f"kept {path}: it is there already")
                continue
            with open(fd, "w", encoding="utf-8") as file:
                file.write(header + "\n")
            console.result(f"wrote {path}")
    except OSError as error:
        raise NewDataError(f"cannot write the data folder {folder}: {error.strerror}; "
                           "choose another --new-data folder") from None


def local_today(args, environ, clock):
    """Today in REPORT_TIMEZONE where the settings (not required here) set it, else
    in the machine's zone."""
    settings = load_settings(args.env_file, environ, required=False)
    zone, _ = time_zone(setting(settings, "REPORT_TIMEZONE"))
    return clock.now().astimezone(zone).date()


def show_metrics(args, environ, console):
    """--metrics: the catalogue, and the monthly targets of the data folder's targets.csv
    where the settings (not required here) lead to one; its problems are warnings here."""
    return metric_catalogue(*owners_targets(args, environ, console))


def owners_targets(args, environ, console):
    """(targets.csv's targets, its path) where the settings (not required here) lead to
    one; its problems are warnings here."""
    settings = load_settings(args.env_file, environ, required=False)
    path = resolve_data(args.data, settings, args.env_file).path("targets.csv")
    try:
        targets = (read_sheet(path, parse_targets)[0] if path else None) or {}
    except DataError as error:
        for problem in error.problems:
            console.warn(f"warning: {problem}")
        console.warn(f"warning: {path} is not read while it has these problems: what "
                     "follows is without it")
        targets = {}
    return targets, path


def default_level_text(level_id):
    """A level as the rule reads it when targets.csv sets none: 3.0 months, $0, 35."""
    metric = METRICS_BY_ID.get(level_id)
    if metric:
        return amount_text(catalogue_target(metric), metric.unit) if metric.target else \
            "its target"
    return amount_text(Decimal(RULE_LEVELS[level_id].default), RULE_LEVELS[level_id].unit)


def rule_catalogue(targets, targets_path):
    """--rules: each attention rule, the level it judges by, and where targets.csv
    sets that level."""
    entries = []
    for rule in ATTENTION_RULES:
        levels = []
        for level_id in rule.level.split():
            metric = METRICS_BY_ID.get(level_id)
            default = (target_text(metric, catalogue_target(metric)) if metric else
                       amount_text(Decimal(RULE_LEVELS[level_id].default),
                                   RULE_LEVELS[level_id].unit))
            unit = metric.unit if metric else RULE_LEVELS[level_id].unit
            set_by_owner = "; ".join(f"{month or 'every month'} {amount_text(value, unit)}"
                                     for month, value in sorted(targets.get(level_id, {})
                                                                .items()))
            means = f" ({RULE_LEVELS[level_id].means})" if level_id in RULE_LEVELS else ""
            levels.append(f"{level_id}{means}: {'none' if default == '-' else default} by "
                          "default"
                          + (f"; targets.csv: {set_by_owner}" if set_by_owner else ""))
        says = rule.says.format(default_level_text(rule.level.split()[0]))
        entries.append("\n".join([rule.rule_id, *(textwrap.fill(
            text, TEXT_WIDTH, initial_indent="    ", subsequent_indent="      ")
            for text in (says, *levels))]))
    return ("Every report opens with Needs attention: a line for each of these the sheets "
            "meet, the most dollars first, then the longest overdue. The CEO's lists every "
            "business's.\n\n" + "\n".join(entries) + "\n\nA level is set in "
            f"{targets_path or 'targets.csv'} like a target: metric,month,target, with the "
            "level's name as the metric and an empty month for every month.")


def show_history(args, environ, console, clock):
    """--history: what the audit log says of the last N cycles; needs no valid config."""
    path, records = last_cycles(args, environ, console, "--history", args.history)
    tables = history_tables(records, clock.now())
    console.result("\n\n".join(tables) if tables else f"no records yet in {path}")
    return set()


def show_ab(args, environ, console):
    """--ab: the variants' sends, deliveries, opens and clicks over the last N cycles,
    and whether either leads beyond chance; needs no valid config."""
    _, records = last_cycles(args, environ, console, "--ab", args.ab,
                             skip_reports={EVENT_TEST_REPORT})
    console.result("\n".join(ab_lines(records, args.ab)))
    return set()


def last_cycles(args, environ, console, option, cycles, **options):
    """(the audit log's path, the records of its last `cycles` cycles), its warnings
    said, for an option that reads them (--history, --ab) and needs no valid config."""
    if cycles < 1:
        raise UsageError(f"{option} takes a number of cycles, 1 or more")
    settings = load_settings(args.env_file, environ, required=False)
    path = resolve_path(args.audit_log, settings, "AUDIT_LOG_PATH", DEFAULT_AUDIT_LOG,
                        args.env_file)
    records, warnings = read_recent_records(path, cycles, **options)
    for warning in warnings:
        console.warn(warning)
    return path, records


def run(args, *, environ, console, clock, connect, stop):
    """Do what the parsed command line asks; return what went wrong as EXIT_CODES keys.

    Raises ReportRunError where nothing more can be done.
    """
    if args.list:
        for spec in REPORTS:
            console.result(f"{spec.report_id:<15} {spec.title}")
        return set()
    if args.history is not None:
        return show_history(args, environ, console, clock)
    if args.ab is not None:
        return show_ab(args, environ, console)
    if args.metrics:
        console.result(csv_header() if args.csv_header else show_metrics(args, environ,
                                                                          console))
        return set()
    if args.csv_header:
        raise UsageError("--csv-header goes with --metrics")
    if args.deploy_aws and (any(getattr(args, action) for action in DEPLOY_EXCLUDES)
                            or args.variant != "a"):
        raise UsageError("--deploy-aws goes alone, or with --dry-run for the plan (the "
                         "function's locations are the settings', AUDIT_LOG_PATH and "
                         "REPORT_DATA_DIR)")
    if args.items:
        console.result(item_catalogue())
        return set()
    if args.rules:
        console.result(rule_catalogue(*owners_targets(args, environ, console)))
        return set()
    if "" in (args.new_data, args.data):
        raise UsageError("--new-data and --data take a path, not an empty one")
    if args.new_data is not None and args.new_data.startswith("s3://"):
        raise UsageError("--new-data writes a folder on this machine: start it here, then "
                         "upload it with aws s3 sync (docs/aws.md)")
    if args.new_data is not None:
        write_new_data(Path(args.new_data).expanduser(), local_today(args, environ, clock),
                       console)
        return set()
    if args.status:
        return show_status(args, environ, console, clock)
    selected = select_reports(args.only)
    label = parse_cycle(args.cycle)
    config = load_config(args, environ, console)
    if args.deploy_aws:
        return deploy_aws(args, config, load_settings(args.env_file, environ),
                          connect=connect, console=console)
    if args.events or args.setup_events or args.test_events:
        return delivery_events(args, config, clock=clock, console=console, connect=connect)
    now = clock.now().astimezone(config.timezone)  # the cycle's date is the zone's
    scheduled = label is None and bool(config.schedule)
    cycle = label or (due_on_or_before(config.schedule, now.date()) if scheduled
                      else now.date()).isoformat()
    if args.dry_run or args.preview_dir or args.check:
        reports, refusal = prepare_reports(selected, config, cycle, now, args, console)
        if args.dry_run:
            print_dry_run(reports, config, console)
            return set()
        ses_messages(reports, config, now)  # one larger than SES takes is found here too
        if args.preview_dir:
            write_previews(reports, config, args.preview_dir, now, console)
            return set()
        return check_only(reports, config, cycle=cycle, console=console, connect=connect,
                          refusal=refusal, now=now)
    alarms = Alarms(config, cycle=cycle, selected=selected, console=console,
                    connect=connect, clock=clock)
    return alarms.watch(lambda: send_run(selected, config, cycle, now, args, scheduled=scheduled,
                                         clock=clock, console=console, connect=connect,
                                         stop=stop))


def delivery_events(args, config, *, clock, console, connect):
    """--events, --setup-events and --test-events."""
    if args.setup_events:
        setup_events(config, connect, console)
        return set()
    if args.test_events:
        send_event_test(config, connect, clock, console)
        return set()
    if not config.events_queue_url:
        raise UsageError("--events reads REPORT_EVENTS_QUEUE_URL, which is not set: "
                         "--setup-events makes the queue and prints the line to add")
    recipients = configured_recipients(config, select_reports(args.only))
    with audit_log_at(config.audit_log_path).held() as audit_log:
        with contextlib.closing(connect(config)) as clients:
            drained, problems = read_events(config, audit_log, clock, console, clients,
                                            recipients, sending=False)
    console.result(f"{drained.recorded} event record(s) added to {config.audit_log_path}; "
                   "--history shows each recipient's latest")
    for problem in problems:
        console.problem(f"error: {problem}")
    return ({"rejected"} if problems else set()) | (set() if drained.read_all
                                                    else {"transient"})


def send_run(selected, config, cycle, now, args, *, scheduled, clock, console, connect,
             stop):
    """Send what the cycle still lacks; the RunOutcome, or None where, on a schedule,
    the cycle due is sent already and nothing is due."""
    if scheduled and not args.force and cycle_is_sent(config, cycle, selected):
        today = now.date()
        console.result(f"nothing due: cycle {cycle} is sent; the next falls due "
                       f"{due_after(config.schedule, today)} ({zone_name(config.timezone)})")
        console.summary.update(cycle=cycle, due=False)
        read_events_between_cycles(config, selected, clock, console, connect)
        return None
    reports, refusal = prepare_reports(selected, config, cycle, now, args, console)
    outcome = send_cycle(reports, config, cycle=cycle, force=args.force, clock=clock,
                         console=console, connect=connect, stop=stop, refusal=refusal,
                         scheduled=scheduled)
    report_outcome(outcome, config, cycle, console)
    return outcome


def read_events_between_cycles(config, selected, clock, console, connect):
    """On a run with nothing due: read the events queue all the same (a queue keeps
    its messages for days, not for ever) and warn of a bounced or complaining
    recipient; where another run holds the lock, it reads them."""
    recipients = configured_recipients(config, selected)
    if not config.events_queue_url:
        for problem in delivery_problems(config.audit_log_path, recipients, clock.now()):
            console.alert(f"warning: {problem}")
        return
    try:
        with audit_log_at(config.audit_log_path).held() as audit_log:
            with contextlib.closing(connect(config)) as clients:
                read_events(config, audit_log, clock, console, clients, recipients)
    except RunLockedError:
        console.step("events: another run holds the lock, and reads them")


def prepare_reports(selected, config, cycle, now, args, console):
    """(the selected reports rendered for the cycle, the Refusal stale figures make
    where REPORT_DATA_REQUIRE_FRESH is set, or None)."""
    data = load_cycle_data(config, cycle, parse_date(cycle) or now.date(), console)
    sending = not (args.dry_run or args.preview_dir)  # these never read the audit log
    refusal = check_freshness(data.figures, cycle, config, now.date(), console, sending)
    generated_at = now.strftime("%Y-%m-%d %H:%M %Z")  # in the zone the cycle's date is
    reports = [render_report(spec, cycle=cycle, prepared_by=config.from_name,
                             generated_at=generated_at, variant=config.variant,
                             data=data, with_html=not args.dry_run,
                             **config.recipients(spec.report_id))
               for spec in selected]
    for report in reports:
        size = len(report.html.encode("utf-8"))
        if size > GMAIL_CLIPS_AT:
            console.warn(f"warning: the HTML of {report.report_id} is {size // 1024} KB: Gmail "
                         f"shows only its first {GMAIL_CLIPS_AT // 1024} KB or so, behind a "
                         "link; shorten what its sheets list")
    return reports, refusal


def ses_messages(reports, config, now):
    """The reports with the MIME message SES is given (report.raw), built only for what
    a run sends; DataError, before any send, where one is larger than SES takes."""
    reports = [report._replace(raw=report_eml(report, config, now, show_bcc=False))
               for report in reports]
    sizes = {report.report_id: encoded_size(report.raw) for report in reports}
    too_large = [f"{report_id}: its message is {size / 1e6:.2f} MB "
                 f"as SES counts it, over the {SES_MESSAGE_MAX_BYTES / 1e6:g} MB it accepts: a "
                 "sheet gives it more than a message can carry"
                 for report_id, size in sizes.items() if size > SES_MESSAGE_MAX_BYTES]
    if too_large:
        raise DataError(too_large)
    return reports


def encoded_size(raw):
    """A message's size as SES measures it against its limit: after base64."""
    return 4 * -(-len(raw) // 3)


def parse_args(argv, console, env_file=DEFAULT_ENV_FILE):
    """The command line as argparse reads it, its help going to the console's stdout;
    env_file: the settings file where --env-file names none (None: the environment)."""
    parser = build_parser()
    parser.set_defaults(env_file=env_file)
    try:
        with contextlib.redirect_stdout(console.stdout):
            args = parser.parse_args(argv)
    except SystemExit:  # only --help and --version exit: errors raise UsageError
        raise HelpShown() from None
    console.verbosity = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    return args


def main(argv=None, *, environ=None, stdout=None, stderr=None, clock=None,
         ses_factory=None, env_file=DEFAULT_ENV_FILE, summary=None):
    """Run the command line; return its exit code (EXIT_CODES, shown by --help).

    Expected failures (bad settings, SES refusals, an unwritable audit log, a
    run already in progress) become one line per problem on stderr and their
    exit code, never a traceback.  What the run touches can be given: the
    environment (instead of os.environ), the streams, the clock (SystemClock's
    now, monotonic and sleep) and the SES client factory (connect_ses); env_file,
    the settings file where --env-file names none (None: the environment alone);
    summary, a dict a sending run fills with its cycle and the reports sent,
    skipped and failed (lambda_handler's answer).
    """
    environ = os.environ if environ is None else environ
    for stream in {stdout or sys.stdout, stderr or sys.stderr}:
        with contextlib.suppress(AttributeError, ValueError):
            # A terminal that cannot show a character (PYTHONIOENCODING=ascii) shows "?".
            stream.reconfigure(errors="replace")
    console = Console(stdout or sys.stdout, stderr or sys.stderr)
    console.summary = {} if summary is None else summary
    try:
        with StopSignals() as stop:
            return exit_code(run(parse_args(argv, console, env_file), environ=environ,
                                 console=console,
                                 clock=clock or SystemClock(),
                                 connect=ses_factory or connect_ses, stop=stop))
    except ProblemsError as error:
        for problem in error.problems:
            console.problem(f"{error.label}: {problem}")
        console.problem(error.closing)
        return exit_code({error.outcome})
    except ReportRunError as error:
        console.problem(f"error: {error}")
        return exit_code({error.outcome})
    except (KeyboardInterrupt, RunStopped) as stopped:
        signum = getattr(stopped, "signum", signal.SIGINT)
        said = "interrupted" if signum == signal.SIGINT else \
            f"stopped by {signal.Signals(signum).name}"
        console.problem(f"{said}: the audit log holds every report confirmed so far; "
                        "run again to send the rest")
        return exit_code({STOP_SIGNALS[signum]})
    except HelpShown:
        return exit_code(set())
    except Exception as error:  # a fault of the script's own: its traceback, for a fix
        console.problem(fault_line(error))  # the traceback, redacted like every line
        console.problem("".join(traceback.format_exception(error)).rstrip())
        return exit_code({"software"})


###############################################################################
# AWS Lambda: this file as the function's code, and --deploy-aws
###############################################################################

# What --deploy-aws makes: the function runs in the sender's region on Lambda's
# current Python (boto3 is in it; python-dotenv is not needed: no repos.env there).
LAMBDA_RUNTIME = "python3.14"
LAMBDA_HANDLER = "send_exec_reports.lambda_handler"
LAMBDA_TIMEOUT_SECONDS = 300  # a third of CLAIM_STALE_SECONDS: a live run's claim is fresh
LAMBDA_MEMORY_MB = 256
# A role IAM has just made reaches Lambda within seconds, not at once.
ROLE_PROPAGATION_TRIES = 12
ROLE_PROPAGATION_PAUSE_SECONDS = 5
DEFAULT_AWS_NAME = "exec-reports"  # REPORT_AWS_NAME: one per owner or portfolio
AWS_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
# Hourly, in REPORT_TIMEZONE, five minutes past: a due cycle is caught as cron
# hourly catches it.  A run that fails is tried again twice within the hour by
# Lambda (the schedule starts it asynchronously), then put on the dead letters; the
# schedule's own retries are for when it cannot start the function at all.
SCHEDULE_EXPRESSION = "cron(5 * * * ? *)"
SCHEDULE_RETRY = {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}
# The settings the function is given: the script's own, never AWS keys, a profile,
# an endpoint or a CA bundle of this machine's (the role replaces the keys).
FUNCTION_SETTING_PREFIXES = ("AWS_SES_", "AWS_RECIPIENT_EMAIL", "AWS_BCC_EMAIL", "REPORT_")
# Where the function keeps its ledger and reads its sheets: never on its own disk,
# which is gone after a run (a ledger lost there would send every report again).
FUNCTION_LOCATIONS = ("AUDIT_LOG_PATH", "REPORT_DATA_DIR")
# What an event's command line may not say: the function's settings are its
# environment's, whose locations --deploy-aws checked.
NOT_IN_AN_EVENT = ("--audit-log", "--data", "--env-file", "--deploy-aws", "--new-data",
                   "--preview-dir")


class ReportsNotSent(Exception):
    """The function's run ended with a non-zero exit code: raised, so that Lambda's
    retries, its failure destination and an alarm on its errors all see it."""


def lambda_handler(event, context, **given):
    """The function's entry point: what main() runs, with the settings from the
    function's environment and the credentials of its role.

    event: {"args": ["--only", "ceo", ...]}, or empty for a scheduled run
    (REPORT_SCHEDULE decides what is due, as on a laptop).  Returns {"exit_code",
    "cycle", "sent", "skipped", "failed"}; raises ReportsNotSent where the exit code
    is not 0.  Retries are safe: the ledger in S3 never sends a report twice.  given:
    main()'s keyword arguments (the tests' environment, clock and streams).
    """
    args = (event or {}).get("args", []) if isinstance(event, dict) else None
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise ReportsNotSent('the event must be {} or {"args": ["--only", "ceo", ...]}')
    environ = given.pop("environ", os.environ)
    summary = {}
    refusal = function_refusal(args, environ)
    if refusal:
        outcome, line = refusal
        print(line, file=given.get("stderr") or sys.stderr, flush=True)
        code = EXIT_CODES[outcome][0]
    else:
        code = main(args, environ=environ, env_file=None, summary=summary, **given)
    answer = {"exit_code": code, "cycle": summary.get("cycle"),
              **{status: summary.get(status, []) for status in ("sent", "skipped", "failed")}}
    if code != 0:
        raise ReportsNotSent(json.dumps(answer))
    return answer


def function_refusal(args, environ):
    """(outcome, its one line) where the function must not run this command line with
    these settings: an option that would move its ledger or settings, or a ledger or
    data folder it cannot keep; else None."""
    refused = options_not_in_an_event(args)
    if refused:
        return "usage", (f"usage: {', '.join(refused)}: not in the function's event; its "
                         "settings are its environment's (--deploy-aws)")
    problems = function_location_problems(environ)
    return ("config", f"config error: {'; '.join(problems)}") if problems else None


def options_not_in_an_event(args):
    """The options of NOT_IN_AN_EVENT an event's command line gives, as argparse reads
    them (--audit, an abbreviation, is --audit-log); a command line that does not
    parse is main()'s to refuse."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --help: main() prints it
            parsed = build_parser().parse_args(args)
    except (UsageError, SystemExit):
        return []
    return [option for option in NOT_IN_AN_EVENT
            if getattr(parsed, option[2:].replace("-", "_")) not in (None, False,
                                                                     DEFAULT_ENV_FILE)]


def function_location_problems(settings):
    """Why the function cannot keep its ledger or read its sheets where the settings
    say: each must be an S3 prefix (its disk is gone after a run), under a folder of
    its own (the role's policy is scoped to it)."""
    problems = []
    for name in FUNCTION_LOCATIONS:
        where = setting(settings, name)
        if not where.startswith("s3://"):
            problems.append(f"{name} must be an s3:// location for the function (its disk "
                            "does not outlive a run): upload the folder with aws s3 sync "
                            "and set it (docs/aws.md)")
        elif not where[len("s3://"):].partition("/")[2].strip("/") or \
                where.lower().endswith(".csv"):
            problems.append(f"{name} {where[:80]!r} must name a folder in its bucket "
                            "(s3://BUCKET/PREFIX/), which the function's role is kept to")
    return problems


class Deployment(NamedTuple):
    """What --deploy-aws makes, named from REPORT_AWS_NAME, and the ARNs it names."""

    name: str
    account: str
    region: str

    @property
    def function_role(self):
        return f"{self.name}-function"

    @property
    def scheduler_role(self):
        return f"{self.name}-scheduler"

    @property
    def dead_letters(self):
        return f"{self.name}-dead-letters"

    @property
    def partition(self):
        """aws, aws-cn or aws-us-gov, by the region."""
        return "aws-cn" if self.region.startswith("cn-") else \
            "aws-us-gov" if self.region.startswith("us-gov-") else "aws"

    @property
    def function_arn(self):
        return self.arn("lambda", f"function:{self.name}")

    @property
    def dead_letters_arn(self):
        return self.arn("sqs", self.dead_letters)

    def arn(self, service, resource):
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"

    def role_arn(self, role):
        return f"arn:{self.partition}:iam::{self.account}:role/{role}"

    def s3_arn(self, location, below=""):
        return f"arn:{self.partition}:s3:::{location.bucket}" + (
            f"/{location.folder}{below}" if below else "")


def function_policy(config, deployment):
    """The function role's one inline policy: least privilege, no * resource for SES or
    S3.  The preflight's account questions (GetAccount, GetSendQuota) take no resource,
    so they are left out: the preflight says it could not ask, and the send goes on."""
    identities = sorted({config.from_address, config.from_address.rpartition("@")[2]})
    ses = [deployment.arn("ses", f"identity/{identity}") for identity in identities]
    if config.configuration_set:
        ses.append(deployment.arn("ses", f"configuration-set/{config.configuration_set}"))
    log, data = AuditLogS3(config.audit_log_path).location, config.data.folder
    statements = [
        {"Sid": "SendAsTheReportsAddressOnly", "Effect": "Allow",
         "Action": ["ses:SendEmail", "ses:SendRawEmail"], "Resource": ses,
         "Condition": {"StringEquals": {"ses:FromAddress": config.from_address}}},
        {"Sid": "AskAboutTheSender", "Effect": "Allow", "Action": "ses:GetEmailIdentity",
         "Resource": ses[:len(identities)]},
        {"Sid": "ReadTheSheets", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": deployment.s3_arn(data, "*")},
        {"Sid": "KeepTheLedger", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": deployment.s3_arn(log, "*")},
        {"Sid": "GiveBackAClaim", "Effect": "Allow", "Action": "s3:DeleteObject",
         "Resource": deployment.s3_arn(log, "claims/*")},
        *({"Sid": f"List{which}", "Effect": "Allow", "Action": "s3:ListBucket",
           "Resource": deployment.s3_arn(where),
           "Condition": {"StringLike": {"s3:prefix": [f"{where.folder}*"]}}}
          for which, where in (("TheSheets", data), ("TheLedger", log))),
        {"Sid": "PutAFailedRunOnTheDeadLetters", "Effect": "Allow",
         "Action": "sqs:SendMessage", "Resource": deployment.dead_letters_arn},
        {"Sid": "WriteItsLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": [deployment.arn("logs", f"log-group:/aws/lambda/{deployment.name}"),
                      deployment.arn("logs", f"log-group:/aws/lambda/{deployment.name}:*")]},
    ]
    if config.events_queue_url:
        queue_name = urlsplit(config.events_queue_url).path.rstrip("/").rpartition("/")[2]
        statements.append({"Sid": "ReadTheEvents", "Effect": "Allow",
                           "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                           "Resource": deployment.arn("sqs", queue_name)})
    return {"Version": "2012-10-17", "Statement": statements}


def scheduler_policy(deployment):
    """The schedule's role: start the function, and put what failed on the dead letters."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "lambda:InvokeFunction",
         "Resource": deployment.function_arn},
        {"Effect": "Allow", "Action": "sqs:SendMessage",
         "Resource": deployment.dead_letters_arn}]}


def trust_policy(service):
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}


def function_environment(settings):
    """The function's environment: the script's settings as repos.env and the
    environment give them, without keys, a profile, endpoints or a CA bundle."""
    return {name: value for name, value in sorted(settings.items())
            if (name.startswith(FUNCTION_SETTING_PREFIXES) or name == "AUDIT_LOG_PATH")
            and value}


def function_zip():
    """This file alone, zipped the same way every time (fixed dates and modes), so
    that an unchanged script is seen as unchanged."""
    import zipfile

    member = zipfile.ZipInfo("send_exec_reports.py", date_time=(2020, 1, 1, 0, 0, 0))
    member.external_attr = 0o644 << 16
    member.compress_type = zipfile.ZIP_DEFLATED
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, Path(__file__).read_bytes())
    return buffer.getvalue()


def code_sha256(data):
    """Lambda's CodeSha256 of a package: base64 of its sha256."""
    import base64

    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def deploy_aws(args, config, settings, *, connect, console):
    """--deploy-aws: make or update the roles, the dead-letter queue, the function and
    its hourly schedule, keeping what is already as it should be; --dry-run prints
    the plan and changes nothing."""
    name = setting(settings, "REPORT_AWS_NAME") or DEFAULT_AWS_NAME
    problems = [] if AWS_NAME_PATTERN.fullmatch(name) else [
        f"REPORT_AWS_NAME {name[:40]!r}: use up to 40 letters, digits, - and _"]
    problems += function_location_problems(settings)
    problems += [f"{label} must be set for the function: {why}" for label, why in (
        ("REPORT_SCHEDULE", "it runs hourly, and sends a cycle only when one is due"),
        ("REPORT_TIMEZONE", "the function's clock is UTC, not the owner's"))
        if not setting(settings, label)]
    if problems:
        raise ConfigError(problems)
    import botocore.exceptions

    with contextlib.closing(connect(config)) as clients:
        account = aws_call(clients.service("sts").get_caller_identity)["Account"]
        deployment = Deployment(name, account, config.region)
        environment = function_environment(settings)
        if args.dry_run:
            console.result(deployment_plan(config, deployment, environment))
            return set()
        for step in (
                lambda: ensure_role(clients.service("iam"), deployment.function_role,
                                    "lambda.amazonaws.com", function_policy(config, deployment)),
                lambda: ensure_role(clients.service("iam"), deployment.scheduler_role,
                                    "scheduler.amazonaws.com", scheduler_policy(deployment)),
                lambda: ensure_dead_letters(clients.service("sqs"), deployment.dead_letters),
                lambda: ensure_function(clients.service("lambda"), deployment, environment),
                lambda: ensure_schedule(clients.service("scheduler"), deployment, config)):
            try:
                console.result(step())  # each said as it is done: a later failure keeps it
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) \
                    as error:
                raise deploy_failure(error) from None
    console.result(f"upload the sheets (and again whenever they change): aws s3 sync "
                   f"report_data {config.data.folder}")
    console.result(f"its logs: aws logs tail /aws/lambda/{name} --follow; undo it: "
                   "docs/aws.md")
    return set()


def deployment_plan(config, deployment, environment):
    """What --deploy-aws --dry-run prints: every resource, both policies in full, and
    the function's settings by name (their values may be secrets)."""
    return "\n".join([
        f"plan for account {deployment.account}, region {deployment.region}:",
        f"role {deployment.function_role} (assumed by lambda.amazonaws.com), its policy:",
        json.dumps(function_policy(config, deployment), indent=2),
        f"role {deployment.scheduler_role} (assumed by scheduler.amazonaws.com), its policy:",
        json.dumps(scheduler_policy(deployment), indent=2),
        f"queue {deployment.dead_letters}: the runs that failed every try",
        f"function {deployment.name}: {LAMBDA_RUNTIME}, {LAMBDA_HANDLER}, timeout "
        f"{LAMBDA_TIMEOUT_SECONDS} s, {LAMBDA_MEMORY_MB} MB, reserved concurrency 1, "
        f"{SCHEDULE_RETRY['MaximumRetryAttempts']} retries, then {deployment.dead_letters}; "
        f"settings {', '.join(environment)}",
        f"schedule {deployment.name}: {SCHEDULE_EXPRESSION} in {zone_name(config.timezone)}"])


def aws_call(call, **parameters):
    """One AWS call of --deploy-aws; where AWS says no or cannot be reached, the
    error that says so in one line."""
    import botocore.exceptions

    try:
        return call(**parameters)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        raise deploy_failure(error) from None


def deploy_failure(error):
    """What --deploy-aws says of an AWS error: SetupError where AWS said no, AwsError's
    transient outcome where it could not be reached."""
    import botocore.exceptions

    if not isinstance(error, botocore.exceptions.ClientError):
        return AwsError(f"AWS could not be reached ({error}); nothing more was changed: "
                        "--deploy-aws again later", "transient")
    answer = error.response.get("Error", {})
    if answer.get("Code") in AWS_FORBIDDEN:
        return AwsError(f"AWS refused {error.operation_name} to these credentials "
                        f"({answer.get('Code')}): --deploy-aws needs to manage IAM roles, "
                        "Lambda, EventBridge Scheduler and SQS (docs/aws.md); nothing after "
                        "it was changed", "forbidden")
    return SetupError(f"AWS refused {error.operation_name}: {answer.get('Code')}: "
                      f"{answer.get('Message', '')}; nothing after it was changed "
                      "(--deploy-aws again once fixed)")


def not_there(error, *codes):
    """True for a ClientError that says the thing asked for is not there."""
    import botocore.exceptions

    return isinstance(error, botocore.exceptions.ClientError) and \
        error.response.get("Error", {}).get("Code") in codes


def ensure_role(iam, name, service, policy):
    """The role, with its trust and its one inline policy as given: 'made', 'updated'
    or 'unchanged'."""
    import botocore.exceptions

    trust = trust_policy(service)
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except botocore.exceptions.ClientError as error:
        if not not_there(error, "NoSuchEntity"):
            raise deploy_failure(error) from None
        aws_call(iam.create_role, RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                 Description="send_exec_reports.py --deploy-aws")
        aws_call(iam.put_role_policy, RoleName=name, PolicyName=name,
                 PolicyDocument=json.dumps(policy))
        return f"made role {name}"
    changed = []
    if policy_document(role.get("AssumeRolePolicyDocument")) != trust:
        aws_call(iam.update_assume_role_policy, RoleName=name,
                 PolicyDocument=json.dumps(trust))
        changed.append("its trust")
    try:
        held = policy_document(iam.get_role_policy(RoleName=name, PolicyName=name)
                               ["PolicyDocument"])
    except botocore.exceptions.ClientError as error:
        if not not_there(error, "NoSuchEntity"):
            raise deploy_failure(error) from None
        held = None
    if held != policy:
        aws_call(iam.put_role_policy, RoleName=name, PolicyName=name,
                 PolicyDocument=json.dumps(policy))
        changed.append("its policy")
    return f"updated role {name}: {', '.join(changed)}" if changed else \
        f"unchanged role {name}"


def policy_document(document):
    """A policy as IAM gives it back (a dict, or URL-encoded JSON) as a dict."""
    from urllib.parse import unquote

    return json.loads(unquote(document)) if isinstance(document, str) else document


def ensure_dead_letters(sqs, name):
    """The schedule's dead-letter queue (CreateQueue keeps one that is there)."""
    import botocore.exceptions

    try:
        sqs.get_queue_url(QueueName=name)
        return f"unchanged queue {name}"
    except botocore.exceptions.ClientError as error:
        if not not_there(error, "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise deploy_failure(error) from None
        aws_call(sqs.create_queue, QueueName=name,
                 Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)})
        return f"made queue {name}"


def ensure_function(client, deployment, environment):
    """The function: made, or its code and settings updated where they differ; one run
    at a time, and a failed run tried again twice, then put on the dead letters."""
    import botocore.exceptions

    package = function_zip()
    wanted = {"Runtime": LAMBDA_RUNTIME, "Handler": LAMBDA_HANDLER,
              "Role": deployment.role_arn(deployment.function_role),
              "Timeout": LAMBDA_TIMEOUT_SECONDS, "MemorySize": LAMBDA_MEMORY_MB,
              "Environment": {"Variables": environment}}
    try:
        held = client.get_function(FunctionName=deployment.name)
    except botocore.exceptions.ClientError as error:
        if not not_there(error, "ResourceNotFoundException"):
            raise deploy_failure(error) from None
        create_function(client, deployment, package, wanted)
        aws_call(client.put_function_concurrency, FunctionName=deployment.name,
                 ReservedConcurrentExecutions=1)
        ensure_retries(client, deployment)
        return f"made function {deployment.name}"
    changed = []
    configuration = held["Configuration"]
    if configuration.get("CodeSha256") != code_sha256(package):
        wait_for_function(client, deployment.name)
        aws_call(client.update_function_code, FunctionName=deployment.name, ZipFile=package)
        changed.append("its code")
    if any(configuration.get(key) != value for key, value in wanted.items()
           if key != "Environment") or \
            configuration.get("Environment", {}).get("Variables", {}) != environment:
        wait_for_function(client, deployment.name)
        aws_call(client.update_function_configuration, FunctionName=deployment.name,
                 **wanted)
        changed.append("its settings")
    if held.get("Concurrency", {}).get("ReservedConcurrentExecutions") != 1:
        aws_call(client.put_function_concurrency, FunctionName=deployment.name,
                 ReservedConcurrentExecutions=1)
        changed.append("its concurrency")
    if ensure_retries(client, deployment):
        changed.append("its retries")
    return f"updated function {deployment.name}: {', '.join(changed)}" if changed else \
        f"unchanged function {deployment.name}"


def create_function(client, deployment, package, wanted):
    """CreateFunction, tried again for a minute while IAM has not yet shown Lambda the
    role made moments before ("cannot be assumed by Lambda")."""
    import botocore.exceptions

    for tries_left in range(ROLE_PROPAGATION_TRIES - 1, -1, -1):
        try:
            return client.create_function(FunctionName=deployment.name,
                                          Code={"ZipFile": package},
                                          Description="send_exec_reports.py, hourly", **wanted)
        except botocore.exceptions.ClientError as error:
            message = error.response.get("Error", {}).get("Message", "")
            if "cannot be assumed" not in message or not tries_left:
                raise deploy_failure(error) from None
            time.sleep(ROLE_PROPAGATION_PAUSE_SECONDS)


def ensure_retries(client, deployment):
    """A failed run (the handler raised) tried again as SCHEDULE_RETRY says, then put on
    the dead letters: set, or put right; True where it changed."""
    import botocore.exceptions

    failed_to = {"Destination": deployment.dead_letters_arn}
    wanted = {**SCHEDULE_RETRY, "DestinationConfig": {"OnFailure": failed_to}}
    try:
        held = client.get_function_event_invoke_config(FunctionName=deployment.name)
    except botocore.exceptions.ClientError as error:
        if not not_there(error, "ResourceNotFoundException"):
            raise deploy_failure(error) from None
        held = {}
    if all(held.get(key) == value for key, value in SCHEDULE_RETRY.items()) and \
            held.get("DestinationConfig", {}).get("OnFailure") == failed_to:
        return False  # (AWS gives back an empty OnSuccess too: not ours to set)
    aws_call(client.put_function_event_invoke_config, FunctionName=deployment.name, **wanted)
    return True


def wait_for_function(client, name):
    """Wait until Lambda takes another update: one runs at a time."""
    aws_call(client.get_waiter("function_updated_v2").wait, FunctionName=name,
             WaiterConfig={"Delay": 2, "MaxAttempts": 60})


def ensure_schedule(scheduler, deployment, config):
    """The hourly schedule in REPORT_TIMEZONE, with its retries and dead letters."""
    import botocore.exceptions

    wanted = {
        "ScheduleExpression": SCHEDULE_EXPRESSION,
        "ScheduleExpressionTimezone": zone_name(config.timezone),
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "State": "ENABLED",
        "Target": {"Arn": deployment.function_arn,
                   "RoleArn": deployment.role_arn(deployment.scheduler_role),
                   "Input": "{}", "RetryPolicy": SCHEDULE_RETRY,
                   "DeadLetterConfig": {"Arn": deployment.dead_letters_arn}}}
    try:
        held = scheduler.get_schedule(Name=deployment.name)
    except botocore.exceptions.ClientError as error:
        if not not_there(error, "ResourceNotFoundException"):
            raise deploy_failure(error) from None
        aws_call(scheduler.create_schedule, Name=deployment.name, **wanted)
        return f"made schedule {deployment.name}: {SCHEDULE_EXPRESSION} in " \
               f"{wanted['ScheduleExpressionTimezone']}"
    if all(held.get(key) == value for key, value in wanted.items()):
        return f"unchanged schedule {deployment.name}"
    aws_call(scheduler.update_schedule, Name=deployment.name, **wanted)
    return f"updated schedule {deployment.name}"


if __name__ == "__main__":
    sys.exit(main())
