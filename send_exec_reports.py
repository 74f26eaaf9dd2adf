#!/usr/bin/env python3
"""Send the eight executive reports through Amazon SES.

Usage:
    python3 send_exec_reports.py                 # send every report for today's cycle
    python3 send_exec_reports.py --only ceo,cfo  # send some of them
    python3 send_exec_reports.py --dry-run       # print them, send nothing
    python3 send_exec_reports.py --list          # the report ids and titles

Settings come from repos.env beside this script (or --env-file PATH); variables
already set in the environment win over the file.  Every setting is checked
before the first network call.  Each report goes To AWS_RECIPIENT_EMAIL and
BCC AWS_BCC_EMAIL, and every outcome is appended to a JSON Lines audit log.

Exit codes:
    0   every selected report was sent
    1   SES rejected at least one report (the message says what to fix)
    64  the command line was wrong
    73  the audit log could not be opened or written; nothing unrecorded is sent
    75  SES could not be reached or was busy; safe to run again later
    78  the configuration is invalid; nothing was sent
"""

import argparse
import dataclasses
import email.errors
import hashlib
import json
import os
import re
import string
import sys
import unicodedata
import uuid
from datetime import date, datetime, timezone
from email.headerregistry import Address
from email.utils import formataddr
from pathlib import Path

# boto3 is imported inside connect_ses(): --list and --dry-run never need it,
# and importing it costs more than everything else this script does.

VERSION = "0.1.0"

EXIT_SENT = 0
EXIT_REJECTED = 1
EXIT_USAGE = 64  # sysexits.h EX_USAGE
EXIT_AUDIT_LOG = 73  # EX_CANTCREAT
EXIT_TRANSIENT = 75  # EX_TEMPFAIL: cron wrappers know to try again later
EXIT_CONFIG = 78  # EX_CONFIG
EXIT_INTERRUPTED = 130

# Cron runs from $HOME, so the defaults live beside the script, not in the cwd.
SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_ENV_FILE = SCRIPT_DIR / "repos.env"
DEFAULT_AUDIT_LOG = "exec_reports_audit.jsonl"  # beside the env file

REQUIRED_SETTINGS = (
    "AWS_SES_REGION",
    "AWS_SES_FROM_ADDRESS",
    "AWS_SES_FROM_NAME",
    "AWS_RECIPIENT_EMAIL",
    "AWS_BCC_EMAIL",
)
ADDRESS_SETTINGS = ("AWS_SES_FROM_ADDRESS", "AWS_RECIPIENT_EMAIL", "AWS_BCC_EMAIL")
ENDPOINT_SETTINGS = ("AWS_ENDPOINT_URL_SES", "AWS_ENDPOINT_URL")

# Values that must never reach stdout, stderr or the audit log.
SECRET_SETTINGS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")

# Partition, optional gov/iso part, geography, number: us-east-1, us-gov-west-1,
# cn-north-1, eusc-de-east-1.  A shape check, so that no endpoint list is loaded.
AWS_REGION_PATTERN = re.compile(r"[a-z]{2,4}(-(gov|iso[a-z]?))?-[a-z]+-\d{1,2}")
DOMAIN_LABEL_PATTERN = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
CYCLE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# A line break in a header value would let it start a header of its own.
LINE_BREAKS = frozenset("\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029")

# botocore's "standard" mode retries throttling, 5xx answers and dropped
# connections with jittered exponential backoff.  Four attempts keep a dead
# endpoint under a minute per report; the timeouts are set here on purpose
# rather than inherited (botocore's read timeout is a full minute).
SES_RETRIES = {"mode": "standard", "total_max_attempts": 4}
SES_CONNECT_TIMEOUT_SECONDS = 5
SES_READ_TIMEOUT_SECONDS = 20

# SES error codes that every remaining report would hit too: stop at the first.
RUN_STOPPING_CODES = frozenset({
    "AccessDenied",
    "AccessDeniedException",
    "AccountSendingPausedException",
    "ConfigurationSetDoesNotExist",
    "ConfigurationSetSendingPausedException",
    "ExpiredToken",
    "InvalidClientTokenId",
    "MailFromDomainNotVerifiedException",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
})
TRANSIENT_CODES = frozenset({
    "InternalFailure",
    "RequestTimeout",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
})

# What a person should do about each SES answer.
SES_ADVICE = {
    "MessageRejected": "check that AWS_SES_FROM_ADDRESS (or its domain) is verified "
    "in SES in AWS_SES_REGION; in the SES sandbox the recipients must be verified too",
    "AccessDenied": "the AWS credentials may not call ses:SendEmail for this sender; "
    "see the IAM policy in the README",
    "AccessDeniedException": "the AWS credentials may not call ses:SendEmail for this "
    "sender; see the IAM policy in the README",
    "AccountSendingPausedException": "SES has paused sending for this account; "
    "check the account's reputation dashboard in the SES console",
    "ConfigurationSetDoesNotExist": "create the configuration set or remove it from repos.env",
    "ConfigurationSetSendingPausedException": "sending is paused for the configuration "
    "set; resume it in the SES console",
    "MailFromDomainNotVerifiedException": "fix the custom MAIL FROM domain's MX record "
    "for the sender identity",
    "InvalidClientTokenId": "the AWS access key is not valid; check the credentials",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key",
    "ExpiredToken": "the AWS session has expired; log in again (aws sso login)",
    "UnrecognizedClientException": "the AWS credentials are not valid for SES",
    "Throttling": "SES is throttling this account; run again later (the daily quota "
    "resets on a rolling 24 hours)",
}
TRANSIENT_ADVICE = "SES could not be reached or was busy; nothing more was sent, run again later"


class ReportTemplate(string.Template):
    """A template in which only ${name} is a placeholder, so "$50K" reads as money."""

    pattern = r"""
    \$(?:
      (?P<escaped>(?!))                    # a lone $ is never special
    | (?P<named>(?!))                      # bare $name is not a placeholder
    | {(?P<braced>[_a-z][_a-z0-9]*)}
    | (?P<invalid>{[^}]*})                 # ${...} that is not a name
    )
    """


HEADER_TEMPLATE = ReportTemplate("""\
${title}
Cycle ${cycle} | prepared by ${prepared_by} | generated ${generated_at}
Businesses: JADA, QueenofSanDiego (QOS), QuickDumpNow (QDN), DangerousCentaur (DC)
""")

FOOTER_TEMPLATE = ReportTemplate("""\
--
Sent by send_exec_reports ${version} for cycle ${cycle}. A copy of every
report goes to the audit inbox; the audit log records this message's id.
""")

CEO_TEMPLATE = ReportTemplate("""\
EXECUTIVE SUMMARY
The portfolio has real assets and no operating rhythm around them. Revenue is
not tracked in one place, the sales pipeline is empty, and none of the charter
inventory is listed where buyers look. The next 30 days are about turning on
revenue visibility and the zero-cost channels before anything is spent.

1. ASSET INVENTORY
   JADA ............... charter operation; the revenue engine (break-even at
                        6 charters/month, see the CFO report)
   QueenofSanDiego .... brand and booking site for San Diego charters and events
   QuickDumpNow ....... local service business; lead funnel currently broken
   DangerousCentaur ... client-services business with a client portfolio and
                        no billing model
   Supporting ......... 3028 51st St rental; Expert Yacht Delivery; a
                        3,676-person email list; AWS account with SES on a
                        verified organisational domain

2. CRITICAL SHORTFALLS (8)
   1. Empty sales pipeline: no charter or event enquiries in flight.
   2. Revenue tracking gaps: no single view of revenue by business.
   3. Sergio equity risk: the equity arrangement is undocumented; mitigate
      with a written agreement before further investment.
   4. Zero OTA listings: no presence on Sailo, GetMyBoat, Viator or GYG.
   5. DC billing model absent: client work is delivered without a defined
      billing model, so revenue leaks.
   6. QDN funnel breakage: enquiries do not reach a booked job.
   7. Carole transition risk: knowledge held by one person with no handover.
   8. No accounting system deployed (Accounting Officer report).

3. MISSING KPIs (9)
   1. Charters booked per month (target: 6, the break-even point)
   2. Revenue per business per month
   3. Monthly burn against the $7-9K model
   4. Pipeline value and enquiry-to-booking conversion
   5. Email list engagement (open and click rate of the 3,676-person list)
   6. OTA listing views and bookings per platform
   7. QDN enquiries and booked jobs per week
   8. DC billable revenue per client and renewal dates
   9. 3028 51st St occupancy rate and net rental income

4. 30-DAY EXECUTION AGENDA (from ${cycle})
   Week 1: rotate and remove hardcoded Stripe keys; take repos.env out of
           version control; choose and deploy an accounting system.
   Week 2: send the email blast to the 3,676-person list; list on Sailo.
   Week 3: list on GetMyBoat; repair the QDN funnel; define DC billing tiers.
   Week 4: document the Sergio equity terms and Carole's handover; review
           the nine KPIs above for the first time.

P&L IMPACT
Every item on the agenda is zero- or low-cost. The email blast alone is
modelled at $10K-50K of concert booking potential (CMO report).
""")

CTO_TEMPLATE = ReportTemplate("""\
1. STACK-BY-STACK AUDIT
   JADA ... booking site; no availability calendar; pricing tier copy stale
   QOS .... marketing and booking site; no analytics instrumentation
   QDN .... lead funnel forms; enquiries lost between form and follow-up
   DC ..... client sites and Google Apps Script endpoints without auth
   All .... no CI/CD pipeline, no staging environment, no automated rollback

2. SECURITY GAPS (6)
   1. Hardcoded Stripe keys in the codebase.
   2. Plaintext repos.env committed to version control.
   3. Unauthenticated Google Apps Script endpoints.
   4. No Web Application Firewall in front of public endpoints.
   5. No key rotation after exposure: keys that reached the repository are
      still live.
   6. Broad AWS credentials used for sending: no least-privilege IAM policy
      limiting ses:SendEmail to the verified sender.

3. AWS COST ANALYSIS
   Baseline ........... ~$50-84/month
   Optimisation ....... ~$25/month available (idle resources, right-sizing)
   SES ................ $0.10 per 1,000 emails after the first 62,000 a month;
                        8 reports x 2-3 cycles/month costs nothing at the margin

4. UX SHORTFALLS
   - Missing availability calendar: buyers cannot see open charter dates.
   - Zero analytics instrumentation: no traffic or conversion data.
   - Stale pricing tier copy on the booking pages.

5. DEV CYCLE GAPS
   - No CI/CD pipeline: changes reach production by hand.
   - No staging environment: every change is tested in production.
   - No automated rollback capability.

6. TEN ENGINEERING ACTIONS, RANKED BY SECURITY IMPACT AND USER VALUE
    1. Rotate the Stripe keys and move them out of the code.
    2. Remove repos.env from git history; keep it local and chmod 600.
    3. Put authentication on the Google Apps Script endpoints.
    4. Replace broad AWS keys with a least-privilege SES sending policy.
    5. Put a WAF in front of the public sites.
    6. Add analytics instrumentation to JADA, QOS and QDN.
    7. Ship the availability calendar.
    8. Refresh the pricing tier copy.
    9. Add a CI pipeline with a staging environment.
   10. Add automated rollback, then take the $25/month AWS savings.
""")

ACCOUNTING_TEMPLATE = ReportTemplate("""\
CRITICAL FINDING
No accounting system is currently deployed. Revenue, expenses and owner
transactions for the four businesses are not recorded in a ledger, so no
financial statement in this cycle can be produced from books.

1. REVENUE RECOGNITION GAPS
   - Charter revenue (JADA/QOS) is not recognised on the charter date; deposits
     and balances are not separated.
   - DC client work has no billing model, so revenue cannot be recognised
     against delivered work.
   - QDN jobs are not matched to payments.

2. CHART OF ACCOUNTS AUDIT
   Existing structure: none; bank statements are the only record.
   Recommended structure, one class per business (JADA, QOS, QDN, DC) plus the
   3028 51st St rental and Expert Yacht Delivery:
   1000-1999  Assets (operating bank per business, Stripe clearing, deposits held)
   2000-2999  Liabilities (customer deposits, owner loans, credit cards)
   3000-3999  Equity (owner capital; partner equity, including Sergio's stake)
   4000-4999  Revenue (charters, events, deliveries, QDN jobs, DC services, rent)
   5000-5999  Direct costs (crew, fuel, dockage, disposal fees, contractors)
   6000-6999  Operating expenses (software, AWS, insurance, marketing)

3. EXPENSE CATEGORISATION BY FUNCTION
   Operations ...... crew, fuel, dockage, maintenance, disposal fees
   Technology ...... AWS (~$50-84/month), software subscriptions
   Marketing ....... OTA commissions, email platform, advertising
   Administration .. insurance (certificates of insurance), legal, accounting
   Property ........ 3028 51st St maintenance by category

4. FOUR-MILESTONE ROADMAP TO PROFITABILITY (THROUGH Q1 2027)
   M1  Deploy an accounting system and the chart of accounts above.
   M2  Connect bank and Stripe feeds; categorise every expense by function.
   M3  Monthly close per business; revenue recognised on service date.
   M4  Q1 2027: monthly P&L per business against the 6-charter break-even.
""")

CMO_TEMPLATE = ReportTemplate("""\
1. CHANNEL-BY-CHANNEL VISIBILITY MATRIX
   Channel            JADA/QOS      QDN           DC
   Own website        live          live          live
   Email list         3,676, idle   none          none
   OTA marketplaces   not listed    n/a           n/a
   Local search/SEO   weak          roadmap below n/a
   Analytics          none          none          none

2. BUSINESS CASE: EMAIL BLAST TO 3,676 PEOPLE, NOW
   The list exists and costs nothing to reach through SES. Modelled return:
   $10K-50K of concert booking potential. Send it first: it is the only
   channel that is both free and already built.

3. OTA SEQUENCING
   1. Sailo first.
   2. GetMyBoat second.
   3. Viator and GetYourGuide only after certificate of insurance hardening
      (COI verification before any charter is accepted).

4. QDN LOCAL SEO ROADMAP
   - Claim and complete the business profile for local search.
   - One service page per area served, each with a working quote form.
   - Fix the funnel so every enquiry is answered and tracked.

5. 30/60/90-DAY MILESTONES (from ${cycle})
   Day 30: email blast sent; Sailo listing live; analytics on every site.
   Day 60: GetMyBoat live; QDN service pages and profile complete.
   Day 90: Viator/GYG live once COI is hardened; first channel ROI review.

ATTRIBUTION TRACKING REQUIREMENTS
Every campaign link carries UTM tags; every booking records its channel; the
monthly review compares bookings per channel against spend.
""")

CFO_TEMPLATE = ReportTemplate("""\
1. BURN RATE MODEL
   Monthly burn ........ $7-9K
   Break-even .......... 6 charters/month
   Implied contribution  ~$1,170-1,500 per charter ($7-9K / 6)

2. TIERED CAPITAL DEPLOYMENT FRAMEWORK
   Tier 1  Zero-cost initiatives: email blast, OTA listings, SEO fixes.
   Tier 2  Low-cost infrastructure: accounting system, analytics, WAF.
   Tier 3  Revenue-producing features: availability calendar, booking flow.
   Tier 4  No-deploy guardrails: nothing ships that fails the control rules.

3. MONTHLY REVENUE TARGETS THROUGH Q4 2026
   Target: 6 charters a month (break-even) by December 2026, i.e. revenue
   covering the $7-9K monthly burn, tracked monthly once the accounting
   system is live.

4. THREE NON-NEGOTIABLE FINANCIAL CONTROL RULES
   1. No hardcoded keys: payment credentials live outside the code.
   2. Audit trail on all expenses: every expense is categorised and recorded.
   3. COI verification before charter acceptance: no certificate of
      insurance, no charter.
""")

RENTAL_TEMPLATE = ReportTemplate("""\
1. PROPERTY ASSET VALUATION
   No current valuation is on file. Obtain one this cycle so the property is
   carried in the chart of accounts (Assets) at a known figure.

2. RENTAL REVENUE VISIBILITY
   Rent is not recorded in a ledger. Record each payment under Revenue - Rent
   once the accounting system is live.

3. EXPENSE TRACKING BY MAINTENANCE CATEGORY
   Categories: repairs, appliances, landscaping, utilities, insurance, tax.

4. SEASONAL DEMAND MODELLING
   San Diego demand is seasonal; model summer and winter rents separately.

5. OCCUPANCY RATE TARGETS
   Track occupancy monthly and set the target once one full year of
   occupancy data is recorded.
""")

YACHT_DELIVERY_TEMPLATE = ReportTemplate("""\
1. CURRENT SERVICE DELIVERY MODEL
   Deliveries are taken one at a time, quoted by hand and crewed ad hoc.

2. CAPACITY CONSTRAINTS
   Crew availability and the captain's calendar limit how many deliveries
   can run in a month; charters (JADA) compete for the same people.

3. COST-PER-DELIVERY ANALYSIS
   Record crew, fuel, dockage, travel and insurance per delivery, so each
   quote covers its cost; no per-delivery costs are recorded today.

4. INTEGRATION WITH THE JADA CHARTER WORKFLOW
   Share one calendar with JADA, so deliveries fill the gaps between
   charters; reuse JADA's COI verification and booking records.
""")

DC_PORTFOLIO_TEMPLATE = ReportTemplate("""\
1. BILLING GAP IDENTIFICATION
   DC has no billing model: work is delivered without a rate card, invoice
   schedule or contract terms, so delivered work goes unbilled.

2. REVENUE RECOGNITION BY CLIENT TIER
   Tier clients by monthly value and recognise revenue as work is delivered,
   per tier, once the billing model is set.

3. CONTRACT RENEWAL CALENDAR
   No renewal dates are recorded. List every client with start date, term
   and renewal date this cycle.

4. CHURN RISK ASSESSMENT
   Risk is highest where work is unbilled or undocumented, and where client
   knowledge is held by one person (see the Carole transition risk in the
   CEO report).
""")


@dataclasses.dataclass(frozen=True)
class ReportSpec:
    """One of the eight reports: its id on the command line, title and template."""

    report_id: str
    title: str
    template: ReportTemplate


REPORTS = (
    ReportSpec("ceo", "CEO Report: portfolio health and 30-day agenda", CEO_TEMPLATE),
    ReportSpec("cto", "CTO Report: stack, security and engineering actions", CTO_TEMPLATE),
    ReportSpec("accounting", "Accounting Officer Report: books and roadmap", ACCOUNTING_TEMPLATE),
    ReportSpec("cmo", "CMO Report: channels, email blast and OTA sequencing", CMO_TEMPLATE),
    ReportSpec("cfo", "CFO Report: burn, capital tiers and control rules", CFO_TEMPLATE),
    ReportSpec("rental-3028", "3028 51st St Rental Audit", RENTAL_TEMPLATE),
    ReportSpec("yacht-delivery", "Expert Yacht Delivery Operations Report", YACHT_DELIVERY_TEMPLATE),
    ReportSpec("dc-portfolio", "DangerousCentaur Client Portfolio Audit", DC_PORTFOLIO_TEMPLATE),
)


class ReportRunError(Exception):
    """A failure a person can fix; main() prints it and exits with exit_code."""

    exit_code = EXIT_REJECTED


class UsageError(ReportRunError):
    exit_code = EXIT_USAGE


class ConfigError(ReportRunError):
    """The settings are invalid; carries one line per problem."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class AuditLogError(ReportRunError):
    exit_code = EXIT_AUDIT_LOG


class SendError(ReportRunError):
    """SES did not accept a report: `code` and `message` are SES's own words."""

    def __init__(self, code, message, *, transient, stops_run):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transient = transient
        self.stops_run = stops_run or transient
        self.exit_code = EXIT_TRANSIENT if transient else EXIT_REJECTED


@dataclasses.dataclass(frozen=True)
class Config:
    """The validated settings of one run."""

    region: str
    from_address: str
    from_name: str
    recipient: str
    bcc: str
    audit_log_path: Path
    endpoint_url: str | None = None
    aws_profile: str | None = None
    # Never shown: repr=False keeps them out of any accidental print.
    access_key_id: str | None = dataclasses.field(default=None, repr=False)
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)

    @property
    def sender(self):
        """The From header: the name quoted or RFC 2047-encoded as needed."""
        return formataddr((self.from_name, self.from_address), charset="utf-8")

    @property
    def secrets(self):
        return tuple(s for s in (self.access_key_id, self.secret_access_key,
                                 self.session_token) if s)


@dataclasses.dataclass(frozen=True)
class RenderedReport:
    """A report ready to send: what goes on the wire and what the audit log proves."""

    report_id: str
    subject: str
    body: str

    @property
    def body_sha256(self):
        return hashlib.sha256(self.body.encode("utf-8")).hexdigest()


# --- Validating settings (pure) ------------------------------------------------


def has_line_break(value):
    """True if value would split a mail header in two."""
    return any(ch in LINE_BREAKS for ch in value)


def address_problem(value):
    """Why value is not one plain email address SES accepts, or None if it is."""
    if has_line_break(value):
        return "contains a line break (header injection)"
    if not value.isascii():
        return "must be ASCII (write an international domain in punycode)"
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError, email.errors.MessageError):
        return f"{value!r} is not one valid email address"
    labels = address.domain.split(".")
    if len(labels) < 2 or not all(DOMAIN_LABEL_PATTERN.fullmatch(x) for x in labels):
        return f"{value!r} does not have a valid domain"
    return None


def setting_problems(settings):
    """Every problem with the settings, one line each, naming the variable."""
    problems = []
    for name in REQUIRED_SETTINGS:
        problem = required_setting_problem(name, settings.get(name))
        if problem:
            problems.append(f"{name} {problem}")
    problems.extend(endpoint_problems(settings))
    problems.extend(credential_problems(settings))
    return problems


def required_setting_problem(name, raw):
    """What is wrong with one required setting's raw value, or None."""
    if raw is None:
        return "is missing; set it in repos.env (see repos.env.example)"
    if has_line_break(raw):
        return "contains a line break (header injection); use a single line"
    value = raw.strip()
    if not value:
        return "is empty; set it in repos.env (see repos.env.example)"
    if name in ADDRESS_SETTINGS:
        return address_problem(value)
    if name == "AWS_SES_REGION" and not AWS_REGION_PATTERN.fullmatch(value):
        return f"{value[:40]!r} is not an AWS region name (for example us-east-1)"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "contains a control character; use plain text"
    return None


def endpoint_problems(settings):
    """Problems with an endpoint override such as a local SES server."""
    problems = []
    for name in ENDPOINT_SETTINGS:
        value = (settings.get(name) or "").strip()
        if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            problems.append(f"{name} {value[:60]!r} is not an http(s) URL")
    return problems


def credential_problems(settings):
    """Half-set access keys; the values themselves are never quoted."""
    has_key = bool((settings.get("AWS_ACCESS_KEY_ID") or "").strip())
    has_secret = bool((settings.get("AWS_SECRET_ACCESS_KEY") or "").strip())
    if has_key != has_secret:
        missing = "AWS_SECRET_ACCESS_KEY" if has_key else "AWS_ACCESS_KEY_ID"
        return [f"{missing} is missing: set both access key variables or neither"]
    return []


def parse_config(settings, audit_log_path):
    """Turn merged settings into a Config, or raise ConfigError listing every problem."""
    problems = setting_problems(settings)
    if problems:
        raise ConfigError(problems)

    def value(name):
        return (settings.get(name) or "").strip() or None

    return Config(
        region=value("AWS_SES_REGION"),
        from_address=value("AWS_SES_FROM_ADDRESS"),
        from_name=value("AWS_SES_FROM_NAME"),
        recipient=value("AWS_RECIPIENT_EMAIL"),
        bcc=value("AWS_BCC_EMAIL"),
        audit_log_path=audit_log_path,
        endpoint_url=value("AWS_ENDPOINT_URL_SES") or value("AWS_ENDPOINT_URL"),
        aws_profile=value("AWS_PROFILE"),
        access_key_id=value("AWS_ACCESS_KEY_ID"),
        secret_access_key=value("AWS_SECRET_ACCESS_KEY"),
        session_token=value("AWS_SESSION_TOKEN"),
    )


def redact(text, secrets):
    """text with every secret value replaced, for anything printed or logged."""
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


# --- Rendering reports (pure) --------------------------------------------------


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


def render_report(spec, *, cycle, prepared_by, generated_at):
    """Fill a report's templates; a placeholder with no value is a bug, so it raises."""
    values = {"title": spec.title, "cycle": cycle, "prepared_by": prepared_by,
              "generated_at": generated_at, "version": VERSION}
    body = "\n".join(template.substitute(values) for template in
                     (HEADER_TEMPLATE, spec.template, FOOTER_TEMPLATE))
    subject = f"{spec.title} | cycle {cycle}"
    if has_line_break(subject):
        raise UsageError(f"the subject of {spec.report_id} would contain a line break")
    return RenderedReport(spec.report_id, subject, body)


def audit_record(report, config, *, run_id, cycle, now, status,
                 message_id=None, error=None):
    """One audit log line: what was sent, when, to whom, and what SES said."""
    return {
        "ts": now.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
        "run_id": run_id,
        "cycle": cycle,
        "report": report.report_id,
        "subject": report.subject,
        "from": config.from_address,
        "to": [config.recipient],
        "bcc": [config.bcc],
        "region": config.region,
        "status": status,
        "message_id": message_id,
        "error": error,
        "body_sha256": report.body_sha256,
    }


# --- Settings file, audit log and SES (I/O) -----------------------------------


def load_settings(env_file, environ):
    """The env file's values overlaid by the real environment (dotenv's convention)."""
    from dotenv import dotenv_values

    if not env_file.is_file():
        raise ConfigError([f"settings file {env_file} not found: copy repos.env.example "
                           "to repos.env beside the script and fill it in, or pass --env-file"])
    try:
        from_file = dotenv_values(env_file, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"cannot read settings file {env_file}: {error}"]) from None
    return {**{name: value or "" for name, value in from_file.items()}, **environ}


def resolve_audit_log_path(option, settings, env_file):
    """--audit-log, else AUDIT_LOG_PATH (relative to the env file), else the default."""
    if option:
        return Path(option).expanduser()
    configured = (settings.get("AUDIT_LOG_PATH") or "").strip()
    path = Path(configured or DEFAULT_AUDIT_LOG).expanduser()
    return path if path.is_absolute() else env_file.resolve().parent / path


class AuditLog:
    """The append-only JSON Lines record of every send outcome, private to its owner."""

    def __init__(self, path):
        self.path = path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as error:
            raise AuditLogError(f"cannot open audit log {path} for appending: "
                                f"{error.strerror}; fix the path or its permissions "
                                "(AUDIT_LOG_PATH or --audit-log)") from None
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def append(self, record):
        """Write one record and force it to disk before the next send starts."""
        try:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:
            raise AuditLogError(f"cannot write audit log {self.path}: {error.strerror}; "
                                f"unrecorded outcome: {json.dumps(record)}") from None

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def connect_ses(config):
    """A boto3 SES client with explicit retries and timeouts, and credentials checked."""
    import boto3
    import botocore.config
    import botocore.exceptions

    try:
        session = boto3.session.Session(
            profile_name=config.aws_profile,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            aws_session_token=config.session_token,
        )
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as error:
        raise ConfigError([f"AWS credentials could not be loaded: {error}"]) from None
    if credentials is None:
        raise ConfigError(["no AWS credentials found: set AWS_PROFILE, or "
                           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, in the "
                           "environment or repos.env (or run aws sso login)"])
    client_config = botocore.config.Config(
        retries=SES_RETRIES,
        connect_timeout=SES_CONNECT_TIMEOUT_SECONDS,
        read_timeout=SES_READ_TIMEOUT_SECONDS,
    )
    return session.client("ses", region_name=config.region,
                          endpoint_url=config.endpoint_url, config=client_config)


def send_report(ses, config, report):
    """Send one report through SES and return SES's message id, or raise SendError."""
    import botocore.exceptions

    try:
        response = ses.send_email(
            Source=config.sender,
            Destination={"ToAddresses": [config.recipient], "BccAddresses": [config.bcc]},
            Message={
                "Subject": {"Data": report.subject, "Charset": "UTF-8"},
                "Body": {"Text": {"Data": report.body, "Charset": "UTF-8"}},
            },
        )
    except botocore.exceptions.ClientError as error:
        raise classify_client_error(error.response, config) from None
    except (botocore.exceptions.BotoCoreError, OSError) as error:
        # Dropped connections, timeouts and answers that are not SES's XML:
        # none of them says the message was refused, so a later run may succeed.
        raise SendError(type(error).__name__, str(error), transient=True,
                        stops_run=True) from None
    return response["MessageId"]


def classify_client_error(response, config):
    """A SendError from SES's error answer: transient or not, and whether to stop."""
    error = response.get("Error", {})
    code = error.get("Code", "Unknown")
    message = error.get("Message", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    transient = code in TRANSIENT_CODES or status >= 500
    sender_refused = code == "MessageRejected" and config.from_address in message
    return SendError(code, message, transient=transient,
                     stops_run=code in RUN_STOPPING_CODES or sender_refused)


# --- The run ------------------------------------------------------------------


@dataclasses.dataclass
class RunOutcome:
    """What happened to each report in one run, in order."""

    records: list = dataclasses.field(default_factory=list)
    failures: list = dataclasses.field(default_factory=list)  # (record, SendError)

    @property
    def exit_code(self):
        if any(not failure.transient for _, failure in self.failures):
            return EXIT_REJECTED  # a person must act before a re-run can help
        return EXIT_TRANSIENT if self.failures else EXIT_SENT


def send_cycle(reports, config, *, ses, audit_log, run_id, cycle, clock, stdout):
    """Send each report and audit each outcome; stop early where the rest would fail too."""
    outcome = RunOutcome()
    stopped_by = None
    for report in reports:
        fields = dict(run_id=run_id, cycle=cycle)
        if stopped_by is not None:
            error = {"code": "NotAttempted",
                     "message": f"run stopped after {stopped_by.code}"}
            record = audit_record(report, config, now=clock(), status="skipped",
                                  error=error, **fields)
        else:
            try:
                message_id = send_report(ses, config, report)
            except SendError as failure:
                stopped_by = failure if failure.stops_run else None
                error = {"code": failure.code,
                         "message": redact(failure.message, config.secrets)}
                record = audit_record(report, config, now=clock(), status="failed",
                                      error=error, **fields)
                outcome.failures.append((record, failure))
            else:
                record = audit_record(report, config, now=clock(), status="sent",
                                      message_id=message_id, **fields)
        audit_log.append(record)
        outcome.records.append(record)
        print(f"{record['status']:<8} {report.report_id:<15} "
              f"{record['message_id'] or record['error']['code']}", file=stdout)
    return outcome


def failure_line(record, failure, config):
    """One line on stderr for a failed report: what SES said and what to do."""
    advice = TRANSIENT_ADVICE if failure.transient else SES_ADVICE.get(
        failure.code, "see the SES error above; fix it, then run again")
    said = redact(f"{failure.code}: {failure.message}", config.secrets)
    return f"error: {record['report']} not sent: SES said {said}; {advice}"


def print_dry_run(reports, config, stdout):
    """Print each report as it would be sent, headers first."""
    for report in reports:
        print(f"From: {config.sender}\nTo: {config.recipient}\nBcc: {config.bcc}\n"
              f"Subject: {report.subject}\n\n{report.body}\n{'=' * 72}", file=stdout)


# --- Command line -------------------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 64) instead of exiting with 2."""

    def error(self, message):
        raise UsageError(message)


def build_parser():
    parser = _ArgumentParser(
        prog="send_exec_reports.py",
        description="Render the eight executive reports and send each through "
                    "Amazon SES, To the recipient and BCC the audit inbox, "
                    "recording every outcome in an audit log.",
        epilog="exit codes: 0 all sent, 1 SES rejected a report, 64 usage error, "
               "73 audit log not writable, 75 SES unreachable or busy (safe to run "
               "again), 78 invalid configuration",
    )
    parser.add_argument("--list", action="store_true", help="print the report ids and titles")
    parser.add_argument("--only", metavar="ID[,ID...]", help="send only these reports")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the selected reports; no network call, nothing sent")
    parser.add_argument("--cycle", metavar="LABEL",
                        help="the reporting cycle, in subjects and the audit log "
                             "(default: today's local date)")
    parser.add_argument("--env-file", metavar="PATH", type=Path, default=DEFAULT_ENV_FILE,
                        help="settings file (default: repos.env beside this script)")
    parser.add_argument("--audit-log", metavar="PATH",
                        help="audit log (default: AUDIT_LOG_PATH, else "
                             f"{DEFAULT_AUDIT_LOG} beside the env file)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    return parser


def parse_cycle(label, today):
    """The cycle label: --cycle as given, or today's date."""
    if label is None:
        return today.isoformat()
    if not CYCLE_PATTERN.fullmatch(label):
        raise UsageError(f"--cycle {label[:40]!r} must be 1-64 letters, digits, '.', '_' "
                         "or '-' (for example 2026-11-29)")
    return label


def run(args, *, environ, stdout, stderr, clock):
    """Do what the parsed command line asks; raise ReportRunError on failure."""
    if args.list:
        for spec in REPORTS:
            print(f"{spec.report_id:<15} {spec.title}", file=stdout)
        return EXIT_SENT
    reports_wanted = select_reports(args.only)
    cycle = parse_cycle(args.cycle, clock().date())
    settings = load_settings(args.env_file, environ)
    config = parse_config(settings, resolve_audit_log_path(args.audit_log, settings,
                                                           args.env_file))
    generated_at = clock().astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reports = [render_report(spec, cycle=cycle, prepared_by=config.from_name,
                             generated_at=generated_at) for spec in reports_wanted]
    if args.dry_run:
        print_dry_run(reports, config, stdout)
        return EXIT_SENT
    with AuditLog(config.audit_log_path) as audit_log:
        ses = connect_ses(config)
        outcome = send_cycle(reports, config, ses=ses, audit_log=audit_log,
                             run_id=uuid.uuid4().hex, cycle=cycle, clock=clock,
                             stdout=stdout)
    for record, failure in outcome.failures:
        print(failure_line(record, failure, config), file=stderr)
    sent = sum(r["status"] == "sent" for r in outcome.records)
    print(f"{sent} of {len(reports)} reports sent for cycle {cycle}; "
          f"audit log: {config.audit_log_path}", file=stdout)
    return outcome.exit_code


def main(argv=None, *, environ=None, stdout=None, stderr=None, clock=None):
    """Run the command line; return the exit code documented in the module docstring.

    Expected failures (bad settings, SES refusals, an unwritable audit log)
    become one line per problem on stderr and their exit code, never a traceback.
    """
    environ = os.environ if environ is None else environ
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    clock = clock or (lambda: datetime.now().astimezone())
    try:
        args = build_parser().parse_args(argv)
        return run(args, environ=environ, stdout=stdout, stderr=stderr, clock=clock)
    except ConfigError as error:
        for problem in error.problems:
            print(f"config error: {problem}", file=stderr)
        print("nothing was sent", file=stderr)
        return error.exit_code
    except ReportRunError as error:
        print(f"error: {error}", file=stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted: the audit log holds every report confirmed so far",
              file=stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
