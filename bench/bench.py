"""Benchmark: what validation, preflight, ledger, lock and fsync cost a run.

Run by hand with `make bench` (or `python3 bench/bench.py --aws PATH`). It
starts moto's SES server on loopback, with a sending rate high enough that
pacing does not bind, and times these commands, alternating them round by
round so that a slow moment of the machine hits them all alike:

  1. the full send of all eight reports by send_exec_reports.py, against a
     bare loop of eight boto3 send_email calls doing nothing else;
  2. the same full send against eight `aws ses send-email` calls from a shell
     loop, which is what many people would script instead;
  3. --dry-run and --list against a bare `python3 -c "import dotenv"`, each
     less the time Python takes to compile the script, which it does on every
     run of a script and never caches (see COMPILE_SCRIPT).

Then, on a server whose MaxSendRate is R recipients a second and behind a
proxy that throttles as SES does above that rate:

  4. pacing: the eight sends take no less than 7*k/R and no more than
     1.1 * 7*k/R plus start-up, k being the recipients of each message (SES
     counts every To and BCC against the rate), with no throttling.

Then, behind a proxy that adds 50 ms to every request, as a distant SES
region does:

  7. the full send against the bare loop again: at most 1.20x, so that the
     preflight's questions (asked at once) cost about one round trip.

Then the ledger, with no SES involved:

  5. a no-op run (every report already sent this cycle) on an audit log of
     200,000 records against the same run on a log of 8: at most 1.3x the time,
     and under 60 MB of peak memory (RSS);
  6. --history on the same two logs: at most 2x the time, since it reads the
     log from its end.

Then the owner's sheets and the events queue:

  8. --dry-run on a data folder of 20,000 rows in each of figures, clients,
     deliveries and rental, against --dry-run on the example folder: at most
     15x the time, and under 250 MiB of peak memory;
  9. a drain of 5,000 event messages queued on moto's SQS, for 5,000 sends in
     the log, by --events runs of 500 messages each (a run's most): the last
     run's time a message against the first's, at most 1.3x (flat, however
     long the backlog and the log it grows).

Each full send gets a fresh audit log, so the ledger never skips a report.
Every run reads the example data folder, report_data.example/ (figures, items
and targets), so the owner's data is in play in every timed run.
Prints the medians, the ratios and the goals; exits 1 if a goal is missed.
"""

import argparse
import csv
import hashlib
import http.server
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fault_proxy import FaultProxy  # noqa: E402  (the tests' helpers, not a package)
from local_ses import EXAMPLE_DATA, LocalSES, script_environment  # noqa: E402

sys.path.insert(0, str(REPO))
from send_exec_reports import PACING_SHARE  # noqa: E402

SCRIPT = REPO / "send_exec_reports.py"
SENDER, RECIPIENT, BCC = "reports@example.com", "owner@example.com", "audit@example.com"
RECIPIENTS_PER_MESSAGE = 2  # one To and the BCC
SETTINGS = f"""\
AWS_SES_REGION=us-east-1
AWS_SES_FROM_ADDRESS={SENDER}
AWS_SES_FROM_NAME="Executive Reports, Example Holdings"
AWS_RECIPIENT_EMAIL={RECIPIENT}
AWS_BCC_EMAIL={BCC}
"""

# Eight send_email calls and nothing else, carrying the same eight messages as
# the full send (rendered once, beforehand, and read from a JSON file), so that
# both put the same bytes on the wire.
BARE_LOOP = f"""
import json, sys
import boto3
ses = boto3.client("ses", region_name="us-east-1")
for subject, text, html in json.load(open(sys.argv[1])):
    ses.send_email(
        Source={SENDER!r},
        Destination={{"ToAddresses": [{RECIPIENT!r}], "BccAddresses": [{BCC!r}]}},
        Message={{"Subject": {{"Data": subject, "Charset": "UTF-8"}},
                 "Body": {{"Text": {{"Data": text, "Charset": "UTF-8"}},
                          "Html": {{"Data": html, "Charset": "UTF-8"}}}}}})
"""

AWS_CLI_LOOP = (
    'for n in 1 2 3 4 5 6 7 8; do "$AWS" ses send-email --region us-east-1 '
    f"--from {SENDER} --to {RECIPIENT} --bcc {BCC} "
    '--subject "report $n" --text "body" >/dev/null || exit 1; done'
)

# Goal 3 asks that a --dry-run cost about what importing python-dotenv does: an
# interpreter's start and a few imports, boto3 not among them.  But Python
# compiles a script run as __main__ on every run and never caches its bytecode
# (an imported module's is cached in __pycache__), and for one file of this size
# that compile is a large share of a --dry-run, which no change to what the script
# imports can shrink.  So goal 3 takes it out: each round also times the compile,
# and the goal is (--dry-run - compile) / import dotenv.  The compile is timed by
# the clock of a fresh interpreter around compile() of the script's bytes, the
# work Python does before it runs the script, rather than as that process's wall
# time less a bare interpreter's: a difference of two process timings carries the
# noise of both.  The plain ratio, --dry-run / import dotenv, is printed beside
# it with no goal, so that the script's growth stays visible.
COMPILE_SCRIPT = """
import sys, time
started = time.perf_counter()
with open(sys.argv[1], "rb") as script:
    compile(script.read(), sys.argv[1], "exec")
print(time.perf_counter() - started)
"""
DRY_RUN_LESS_COMPILE = "--dry-run - compile"
LIST_LESS_COMPILE = "--list - compile"  # --list pays the same compile
FULL_LESS_COMPILE = "full send - compile"  # what the single file's compile costs a send

GOALS = [  # (label, numerator, denominator, at most; None: shown, no goal)
    ("1  full send / bare boto3 loop", "full send", "bare boto3 loop", 1.25),
    ("1  full send, events queue / bare loop", "full send, events queue", "bare boto3 loop",
     1.25),
    ("   (full send - compile) / bare loop", FULL_LESS_COMPILE, "bare boto3 loop", None),
    ("2  full send / AWS CLI loop", "full send", "aws cli loop", 0.15),
    ("3  (--dry-run - compile) / import dotenv", DRY_RUN_LESS_COMPILE, "import dotenv", 2.0),
    ("   --dry-run / import dotenv", "--dry-run", "import dotenv", None),
    ("3  (--list - compile) / import dotenv", LIST_LESS_COMPILE, "import dotenv", 2.0),
    ("   --list / import dotenv", "--list", "import dotenv", None),
]
LABEL_WIDTH = 42


def timed(command, env):
    """Wall-clock seconds of one command, which must succeed."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"bench: {command[:3]} exited {result.returncode}: {result.stderr}")
    return elapsed


def self_timed(command, env):
    """The seconds a command says, on stdout, that its work took by its own clock."""
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench: {command[:3]} exited {result.returncode}: {result.stderr}")
    return float(result.stdout)


def rendered_messages(path):
    """The eight reports as the full send renders them, for the bare loop to send."""
    sys.path.insert(0, str(REPO))
    import send_exec_reports as ser

    sheets = {name: ser.read_sheet(EXAMPLE_DATA / name, sheet.parse)[0]
              for name, sheet in ser.SHEETS.items()}
    data = ser.cycle_data("bench", date.today(), sheets["figures.csv"], sheets["items.csv"],
                          sheets["targets.csv"])
    messages = [ser.render_report(spec, cycle="bench", generated_at="2026-11-29 03:00 UTC",
                                  prepared_by="Executive Reports, Example Holdings",
                                  data=data)
                for spec in ser.REPORTS]
    path.write_text(json.dumps([(m.subject, m.body, m.html) for m in messages]))
    return path


def commands(env_file, workdir, aws, queue_url=None, endpoint=None):
    """name -> a function making the command line for one timed run."""
    python = sys.executable
    fresh = iter(range(10**6))
    messages = rendered_messages(workdir / "messages.json")

    def full_send():
        log = workdir / f"audit-{next(fresh)}.jsonl"
        return [python, str(SCRIPT), "--env-file", str(env_file), "--audit-log", str(log),
                "--cycle", "bench"]

    def with_events_queue():  # an empty queue configured: one more round trip a run
        return ["env", f"REPORT_EVENTS_QUEUE_URL={queue_url}",
                f"AWS_ENDPOINT_URL_SQS={endpoint}", *full_send()]

    return {
        "full send": full_send,
        **({"full send, events queue": with_events_queue} if queue_url else {}),
        "bare boto3 loop": lambda: [python, "-c", BARE_LOOP, str(messages)],
        "aws cli loop": lambda: ["sh", "-c", AWS_CLI_LOOP.replace('"$AWS"', f'"{aws}"')],
        "--dry-run": lambda: [python, str(SCRIPT), "--env-file", str(env_file), "--dry-run"],
        "--list": lambda: [python, str(SCRIPT), "--list"],
        "import dotenv": lambda: [python, "-c", "import dotenv"],
        "script compile": lambda: [python, "-c", COMPILE_SCRIPT, str(SCRIPT)],
    }


def measure(rounds, aws, workdir):
    """Seconds of each command in each round, the order rotating from round to round."""
    env_file = workdir / "repos.env"
    env_file.write_text(SETTINGS)
    env_file.chmod(0o600)
    shutil.copytree(EXAMPLE_DATA, workdir / "report_data")  # the owner's data, in play
    times = {}
    with LocalSES() as ses:
        env = script_environment(ses.url, workdir, ses.v2_url)
        queue_url = f"{ses.url}/123456789012/bench-events"  # moto's URL for the queue
        makers = commands(env_file, workdir, aws, queue_url, ses.url)
        names = list(makers)
        for number in range(rounds):
            ses.reset()  # the same server state for every round
            ses.verify(SENDER)
            ses.client("sqs").create_queue(QueueName="bench-events")  # empty
            for name in names[number % len(names):] + names[:number % len(names)]:
                clock = self_timed if name == "script compile" else timed
                times.setdefault(name, []).append(clock(makers[name](), env))
            print(f"round {number + 1}/{rounds} done", file=sys.stderr)
    for less, command in ((DRY_RUN_LESS_COMPILE, "--dry-run"), (LIST_LESS_COMPILE, "--list"),
                          (FULL_LESS_COMPILE, "full send")):
        times[less] = [run - compiling for run, compiling
                       in zip(times[command], times["script compile"])]
    return times


def round_ratios(times, top, bottom):
    """top/bottom within each round: commands timed moments apart share the machine's mood."""
    return [a / b for a, b in zip(times[top], times[bottom])]


def goal_line(label, ratios, limit):
    """Print one ratio: its median, its range and its goal; return 1 if the goal was
    missed.  A limit of None shows the ratio with no goal."""
    ratio = statistics.median(ratios)
    missed = limit is not None and ratio > limit
    result = "shown, no goal" if limit is None else "MISSED" if missed else "met"
    print(f"{label:<{LABEL_WIDTH}}{ratio:>7.3f}{min(ratios):>8.3f}-{max(ratios):<6.3f}"
          f"{'-' if limit is None else f'{limit:.2f}':>9}  {result}")
    return int(missed)


def measure_pacing(rate, workdir, runs=3):
    """Median seconds of a full send at MaxSendRate `rate`, and how often SES throttled."""
    env_file = workdir / "repos.env"
    durations = []
    with LocalSES(max_send_rate=rate) as ses, FaultProxy(ses.url) as proxy:
        ses.verify(SENDER)
        env = script_environment(proxy.url, workdir)
        for run in range(runs):
            # Each run is a cron run of its own, with the account's rate unused, as
            # after any real pause: a run paces its own sends, not the run before it.
            proxy.limit_rate(rate)
            log = workdir / f"paced-{run}.jsonl"
            durations.append(timed([sys.executable, str(SCRIPT), "--env-file", str(env_file),
                                    "--audit-log", str(log), "--cycle", "paced"], env))
    return statistics.median(durations), proxy.throttled


LATENCY_SECONDS = 0.05
LATENCY_GOAL = 1.20


def measure_latency(workdir, rounds):
    """Seconds of the full send and of the bare loop, each request 50 ms late."""
    workdir = workdir / "latency"  # audit logs of its own: each full send sends all eight
    workdir.mkdir()
    env_file = workdir / "repos.env"
    env_file.write_text(SETTINGS)
    env_file.chmod(0o600)
    shutil.copytree(EXAMPLE_DATA, workdir / "report_data")
    times = {}
    with LocalSES() as ses, FaultProxy(ses.url) as proxy:
        proxy.latency = LATENCY_SECONDS
        env = script_environment(proxy.url, workdir)  # v1 and v2 both behind it
        makers = commands(env_file, workdir, aws=None)
        names = ["full send", "bare boto3 loop"]
        for number in range(rounds):
            ses.reset()
            ses.verify(SENDER)
            for name in names[number % 2:] + names[:number % 2]:
                times.setdefault(name, []).append(timed(makers[name](), env))
    return times


LEDGER_RECORDS = 200_000
LEDGER_GOAL = 1.3
LEDGER_CYCLE = "2026-11-30"
RSS_GOAL_BYTES = 60 * 1024 * 1024
# Runs a command and prints the peak RSS of it (ru_maxrss: KiB on Linux, bytes on macOS).
PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(peak if sys.platform == "darwin" else peak * 1024)
"""


def audit_logs(workdir):
    """Two audit logs that end with this cycle's eight sends: one of 8 records, one of
    LEDGER_RECORDS (older cycles before them, as an hourly cron job leaves over the
    years)."""
    sys.path.insert(0, str(REPO))
    import send_exec_reports as ser

    def record(report_id, cycle, number):
        return json.dumps({
            "ts": f"{cycle}T07:00:00.000+00:00", "run_id": f"{number:032x}", "cycle": cycle,
            "variant": "a", "report": report_id, "subject": f"{report_id} | cycle {cycle}",
            "from": SENDER, "to": [RECIPIENT], "bcc": [BCC], "region": "us-east-1",
            "status": "sent", "message_id": f"{number:060x}", "error": None,
            "body_sha256": hashlib.sha256(b"b%d" % number).hexdigest(),
            "html_sha256": hashlib.sha256(b"h%d" % number).hexdigest()}) + "\n"

    ids = [spec.report_id for spec in ser.REPORTS]
    this_cycle = "".join(record(report_id, LEDGER_CYCLE, n) for n, report_id in enumerate(ids))
    small, large = workdir / "ledger-8.jsonl", workdir / "ledger-large.jsonl"
    small.write_text(this_cycle)
    with open(large, "w") as file:
        for n in range(LEDGER_RECORDS - len(ids)):
            file.write(record(ids[n % len(ids)], f"2016-{n // 2400 % 12 + 1:02d}-{n % 28 + 1:02d}",
                              n))
        file.write(this_cycle)
    return small, large


def measure_ledger(workdir, rounds):
    """Seconds of a no-op run and of --history on the small and the large log, and the
    peak RSS of the no-op run on the large one."""
    env_file = workdir / "repos.env"
    env_file.write_text(SETTINGS)
    env_file.chmod(0o600)
    env = script_environment("http://127.0.0.1:9", workdir)  # nothing may reach SES
    small, large = audit_logs(workdir)

    def command(log, *extra):
        return [sys.executable, str(SCRIPT), "--env-file", str(env_file), "--audit-log",
                str(log), "--cycle", LEDGER_CYCLE, *extra]

    runs = {"no-op, 8 records": command(small), "no-op, 200k records": command(large),
            "--history, 8 records": command(small, "--history"),
            "--history, 200k records": command(large, "--history")}
    times = {name: [] for name in runs}
    for number in range(rounds):
        names = list(runs)[number % len(runs):] + list(runs)[:number % len(runs)]
        for name in names:
            times[name].append(timed(runs[name], env))
    return times, peak_rss(runs["no-op, 200k records"], env), large.stat().st_size


def peak_rss(command, env):
    """The peak RSS, in bytes, of one run of a command."""
    peak = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], env=env,
                          capture_output=True, text=True, check=True)
    return int(peak.stdout)


def settings_file(workdir):
    """The bench's repos.env, private as the README says."""
    env_file = workdir / "repos.env"
    env_file.write_text(SETTINGS)
    env_file.chmod(0o600)
    return env_file


SHEET_ROWS = 20_000
SHEETS_GOAL = 15.0
SHEETS_RSS_GOAL_BYTES = 250 * 1024 * 1024


def large_folder(folder, rows=SHEET_ROWS):
    """The example folder with `rows` rows in each of figures, clients, deliveries and
    rental: a figures row a day back from the example's newest, clients renewing and
    invoiced on days spread over a year, deliveries and rent over eight years.  Made
    up, as the example's rows are."""
    shutil.copytree(EXAMPLE_DATA, folder)
    newest = date(2026, 11, 29)
    spread = [newest - timedelta(days=(rows - 1 - n) * 3000 // rows) for n in range(rows)]
    with open(EXAMPLE_DATA / "figures.csv", newline="") as file:
        header, *_, last = csv.reader(file)
    sheets = {
        "figures.csv": (header, ([(newest - timedelta(days=rows - 1 - n)).isoformat(),
                                  *last[1:]] for n in range(rows))),
        "clients.csv": ("client,tier,monthly_value,billing_model,contract_start,renewal_date,"
                        "last_invoiced,status,note".split(","),
                        ([f"Client {n}", ("Gold", "Silver", "Bronze")[n % 3], 100 + n % 1900,
                          "monthly retainer" if n % 2 else "", "2025-01-15",
                          newest + timedelta(days=n % 420 - 20),
                          newest - timedelta(days=n % 60 + 1), "active", "example, made up"]
                         for n in range(rows))),
        "deliveries.csv": ("date,vessel,from,to,nautical_miles,days,price,fuel,crew,travel,"
                           "other,note".split(","),
                           ([day, f"Boat {n}", "San Diego", "Ensenada", 65, 1, 1000 + n % 2000,
                             320, 600, 150, "", "example, made up"]
                            for n, day in enumerate(spread))),
        "rental.csv": ("date,kind,category,amount,note".split(","),
                       ([day, "rent" if n % 2 else "expense", "" if n % 2 else "Plumbing",
                         2400 if n % 2 else 50, "example, made up"]
                        for n, day in enumerate(spread))),
    }
    for name, (columns, body) in sheets.items():
        with open(folder / name, "w", newline="") as file:
            csv.writer(file).writerows([columns, *body])
    return folder


def measure_sheets(workdir, rounds):
    """Seconds of --dry-run on the example folder and on the large one, and the peak
    RSS of the large one's."""
    env_file = settings_file(workdir)
    env = script_environment("http://127.0.0.1:9", workdir)  # nothing may reach SES
    folders = {"--dry-run, example folder": EXAMPLE_DATA,
               "--dry-run, 20k rows a sheet": large_folder(workdir / "large-data")}
    runs = {name: [sys.executable, str(SCRIPT), "--env-file", str(env_file), "--dry-run",
                   "--cycle", "2026-11-29", "--data", str(folder)]
            for name, folder in folders.items()}
    times = {name: [] for name in runs}
    for number in range(rounds):
        for name in list(runs)[number % 2:] + list(runs)[:number % 2]:
            times[name].append(timed(runs[name], env))
    return times, peak_rss(runs["--dry-run, 20k rows a sheet"], env)


DRAIN_MESSAGES = 5_000
DRAIN_PER_RUN = 500  # EVENTS_MAX_MESSAGES: what one run reads at most
DRAIN_GOAL = 1.3


class QueueStandIn:
    """A local SQS stand-in on loopback: the two calls the drain makes (ReceiveMessage
    and DeleteMessageBatch, in the JSON protocol botocore speaks to SQS), over
    messages held in memory.  moto's SQS takes about 0.2 s a request with thousands
    of messages queued, so timing the drain against it would time moto."""

    def __init__(self, bodies):
        self.waiting = {str(n): body for n, body in enumerate(bodies)}  # id -> body
        self.in_flight = {}  # receipt handle -> id
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                action = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                answer = getattr(stand_in, action.lower(), None)
                data = json.dumps(answer(asked) if answer else {
                    "__type": "InvalidAction", "message": action}).encode()
                self.send_response(200 if answer else 400)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receivemessage(self, asked):
        taken = [n for n in self.waiting if n not in self.in_flight.values()][
            :asked.get("MaxNumberOfMessages", 1)]
        messages = []
        for message_id in taken:
            handle = f"{message_id}-{len(self.in_flight)}"
            self.in_flight[handle] = message_id
            body = self.waiting[message_id]
            messages.append({"MessageId": message_id, "ReceiptHandle": handle, "Body": body,
                             "MD5OfBody": hashlib.md5(body.encode()).hexdigest()})
        return {"Messages": messages}

    def deletemessagebatch(self, asked):
        for entry in asked["Entries"]:
            self.waiting.pop(self.in_flight.pop(entry["ReceiptHandle"], None), None)
        return {"Successful": [{"Id": entry["Id"]} for entry in asked["Entries"]],
                "Failed": []}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def measure_drain(workdir):
    """Seconds of each --events run draining DRAIN_MESSAGES delivery events, queued
    (raw, as raw message delivery puts them) on the stand-in, one for each send that
    an audit log of as many sends holds."""
    env_file = settings_file(workdir)
    log = workdir / "drain.jsonl"
    ids = [f"bench-{n:06d}" for n in range(DRAIN_MESSAGES)]
    with open(log, "w") as file:
        for n, message_id in enumerate(ids):
            file.write(json.dumps({
                "ts": "2026-12-01T07:00:00.000+00:00", "run_id": f"{n // 8:032x}",
                "cycle": "2026-12-01", "variant": "a", "report": f"report-{n % 8}",
                "status": "sent", "message_id": message_id, "error": None,
                "to": [RECIPIENT], "bcc": [BCC]}) + "\n")
    queue = QueueStandIn(json.dumps({
        "eventType": "Delivery", "mail": {
            "timestamp": "2026-12-01T07:00:00.000Z", "messageId": message_id,
            "source": SENDER, "destination": [RECIPIENT]},
        "delivery": {"timestamp": "2026-12-01T07:01:00.000Z", "recipients": [RECIPIENT]}})
        for message_id in ids)
    env = {**script_environment("http://127.0.0.1:9", workdir),  # nothing may reach SES
           "AWS_ENDPOINT_URL_SQS": queue.url,
           "REPORT_EVENTS_QUEUE_URL": f"{queue.url}/123456789012/bench-drain"}
    try:
        times = [timed([sys.executable, str(SCRIPT), "--env-file", str(env_file),
                        "--audit-log", str(log), "--events"], env)
                 for _ in range(DRAIN_MESSAGES // DRAIN_PER_RUN)]
    finally:
        queue.close()
    # Each event recorded, and matched to its send (an event matched to none would not
    # raise a bounce's alarm): a drain that lost its sends would look flat, and wrong.
    recorded = sum(b'"status": "event"' in line and b'"matched": true' in line
                   for line in log.read_bytes().splitlines())
    return times, recorded, len(queue.waiting)


def versions(aws):
    import boto3

    cli = subprocess.run([aws, "--version"], capture_output=True, text=True)
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, boto3 {boto3.__version__}, "
            f"{(cli.stdout or cli.stderr).split()[0]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aws", default=shutil.which("aws"), help="the AWS CLI to compare")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--rate", type=float, default=4.0,
                        help="MaxSendRate for the pacing measurement")
    args = parser.parse_args()
    if not args.aws:
        raise SystemExit("bench: no AWS CLI found; make bench installs one in .venv-awscli")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        times = measure(args.rounds, args.aws, workdir)
        paced, throttled = measure_pacing(args.rate, workdir)
        latency_times = measure_latency(workdir, args.rounds)
        ledger_times, ledger_rss, large_size = measure_ledger(workdir, args.rounds)
        sheet_times, sheet_rss = measure_sheets(workdir, args.rounds)
        drain = measure_drain(workdir)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"machine: {versions(args.aws)}; {args.rounds} rounds\n")
    print(f"{'command':<22}{'median':>10}")
    for name, seconds in medians.items():
        print(f"{name:<22}{seconds:>9.3f}s")
    print(f"\n{'goal: median of the per-round ratios':<{LABEL_WIDTH}}{'ratio':>7}"
          f"{'range':>15}{'at most':>9}  result")
    missed = sum(goal_line(label, round_ratios(times, top, bottom), limit)
                 for label, top, bottom, limit in GOALS)
    floor = 7 * RECIPIENTS_PER_MESSAGE / args.rate
    # The script paces at PACING_SHARE of the rate: a margin SES's own clock needs.
    ceiling = 1.1 * floor / PACING_SHARE + medians["full send"]
    met = floor <= paced <= ceiling and throttled == 0
    missed += not met
    print(f"4  pacing at {args.rate:g}/s: {paced:.3f}s for 8 sends, bounds "
          f"[{floor:.3f}s, {ceiling:.3f}s] (7 x {RECIPIENTS_PER_MESSAGE}/R, "
          f"1.1 x 7 x {RECIPIENTS_PER_MESSAGE}/({PACING_SHARE:g} R) + start-up), throttled "
          f"{throttled}  {'met' if met else 'MISSED'}")
    missed += report_latency(latency_times)
    missed += report_ledger(ledger_times, ledger_rss, large_size)
    missed += report_sheets(sheet_times, sheet_rss)
    missed += report_drain(*drain)
    return 1 if missed else 0


def report_latency(times):
    """Print goal 7; return 1 if it was missed."""
    print(f"\nwith {LATENCY_SECONDS * 1000:.0f} ms added to every request: full send "
          f"{statistics.median(times['full send']):.3f}s, bare loop "
          f"{statistics.median(times['bare boto3 loop']):.3f}s")
    return goal_line("7  full send / bare loop, +50 ms",
                     round_ratios(times, "full send", "bare boto3 loop"), LATENCY_GOAL)


def report_ledger(times, peak_rss, large_size):
    """Print goals 5 and 6; return how many were missed."""
    print(f"\nledger: {LEDGER_RECORDS:,} records, {large_size / 2**20:.1f} MiB")
    for name, values in times.items():
        print(f"{name:<26}{statistics.median(values):>9.3f}s")
    missed = 0
    for label, top, bottom, limit in (
            ("5  no-op run, 200k / 8 records", "no-op, 200k records", "no-op, 8 records",
             LEDGER_GOAL),
            ("6  --history, 200k / 8 records", "--history, 200k records",
             "--history, 8 records", 2.0)):
        missed += goal_line(label, round_ratios(times, top, bottom), limit)
    met = peak_rss < RSS_GOAL_BYTES
    missed += not met
    print(f"5  peak RSS of the no-op run on 200k records: {peak_rss / 2**20:.1f} MiB "
          f"(goal under {RSS_GOAL_BYTES / 2**20:.0f} MiB)  {'met' if met else 'MISSED'}")
    return missed


def report_sheets(times, peak_rss):
    """Print goal 8; return how many of its parts were missed."""
    print(f"\nsheets: {SHEET_ROWS:,} rows in each of figures, clients, deliveries, rental")
    for name, values in times.items():
        print(f"{name:<30}{statistics.median(values):>9.3f}s")
    missed = goal_line("8  --dry-run, 20k rows / example", round_ratios(
        times, "--dry-run, 20k rows a sheet", "--dry-run, example folder"), SHEETS_GOAL)
    met = peak_rss < SHEETS_RSS_GOAL_BYTES
    print(f"8  peak RSS of --dry-run on 20k rows a sheet: {peak_rss / 2**20:.1f} MiB (goal "
          f"under {SHEETS_RSS_GOAL_BYTES / 2**20:.0f} MiB)  {'met' if met else 'MISSED'}")
    return missed + (not met)


def report_drain(times, recorded, left):
    """Print goal 9; return 1 if it was missed (or the drain did not record them all)."""
    per_message = [seconds / DRAIN_PER_RUN * 1000 for seconds in times]
    print(f"\nevents drain: {DRAIN_MESSAGES:,} messages, {len(times)} runs of "
          f"{DRAIN_PER_RUN}; ms a message, run by run: "
          + " ".join(f"{ms:.2f}" for ms in per_message))
    ratio = per_message[-1] / per_message[0]
    met = ratio <= DRAIN_GOAL and recorded == DRAIN_MESSAGES and left == 0
    print(f"9  last run / first run, a message{ratio:>10.3f}{'':>15}{DRAIN_GOAL:>9.2f}  "
          f"{'met' if met else 'MISSED'} ({recorded:,} recorded matched to their sends, {left} "
          "left on the queue)")
    return int(not met)


if __name__ == "__main__":
    sys.exit(main())
