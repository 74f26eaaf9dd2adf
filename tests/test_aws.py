"""The same file as an AWS Lambda function: its data folder and audit ledger in S3
(one object a record, a claim a report), its handler, and --deploy-aws.

moto's S3, SES, IAM, Lambda, Scheduler, SQS and STS answer on the tests' one loopback
server; moto runs no function code, so the handler is called here, in-process, with
the function's environment pointing at moto's endpoints."""

import io
import json
import re
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import send_exec_reports as ser
from conftest import (BCC, GOOD_SETTINGS, RECIPIENT, SENDER, FakeClock, Result,
                      shared_models)
from local_ses import EXAMPLE_DATA, SCRIPT, free_port, script_environment

BUCKET = "owner-reports.example"  # an example bucket name, as an owner might choose
DATA = f"s3://{BUCKET}/data/"
LEDGER = f"s3://{BUCKET}/ledger/"
CYCLE = "2026-11-29"  # due on the 29th (REPORT_SCHEDULE below); FakeClock's day
SHEETS = sorted(path.name for path in EXAMPLE_DATA.iterdir() if path.suffix == ".csv")


@pytest.fixture
def bucket(ses):
    """The example data folder uploaded to a bucket, as aws s3 sync would."""
    s3 = ses.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for name in SHEETS:
        s3.put_object(Bucket=BUCKET, Key=f"data/{name}", Body=(EXAMPLE_DATA / name).read_bytes())
    ses.verify(SENDER)
    return s3


def function_environment(tmp_path, ses, ses_url=None, **changes):
    """The function's environment as --deploy-aws sets it, its AWS services moto's."""
    url = ses_url or ses.url
    environment = {
        **script_environment(url, tmp_path, url if ses_url else ses.v2_url),
        **GOOD_SETTINGS, "REPORT_TIMEZONE": "UTC", "REPORT_ALERT_EMAIL": "none",
        "REPORT_SCHEDULE": "29", "REPORT_DATA_DIR": DATA, "AUDIT_LOG_PATH": LEDGER,
        **{f"AWS_ENDPOINT_URL_{service}": ses.url
           for service in ("S3", "STS", "IAM", "LAMBDA", "SCHEDULER", "SQS")}}
    for name, value in changes.items():
        environment.pop(name) if value is None else environment.update({name: value})
    return environment


def handler(environment, event=None, clock=None):
    """(the handler's answer or the exception it raised, a Result of its streams)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        answer = ser.lambda_handler({} if event is None else event, None, environ=environment,
                                    stdout=stdout, stderr=stderr,
                                    clock=clock or FakeClock(), ses_factory=shared_models)
    except ser.ReportsNotSent as error:
        answer = error
    return answer, Result(getattr(answer, "get", lambda *_: 1)("exit_code", 1),
                          stdout.getvalue(), stderr.getvalue())


def run(environment, *args, clock=None):
    """main() as the laptop runs it with the same settings (no repos.env: the
    environment), e.g. --history against the ledger in S3."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = ser.main(list(args), environ=environment, stdout=stdout, stderr=stderr,
                    clock=clock or FakeClock(), ses_factory=shared_models, env_file=None)
    return Result(code, stdout.getvalue(), stderr.getvalue())


def ledger_records(s3):
    """Every record object of the ledger, by key."""
    keys = [entry["Key"] for entry in s3.list_objects_v2(
        Bucket=BUCKET, Prefix="ledger/records/").get("Contents", [])]
    return {key: json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            for key in keys}


def sent_reports(ses):
    return sorted(message["subject"] for message in ses.messages())


# --- The handler: a run, a re-run, and --history from the laptop -----------------------


def test_a_handler_run_sends_eight_and_a_second_sends_nothing(tmp_path, ses, bucket):
    environment = function_environment(tmp_path, ses)

    answer, first = handler(environment)

    assert answer["exit_code"] == 0, first.stderr
    assert answer["cycle"] == CYCLE
    assert sorted(answer["sent"]) == sorted(ser.REPORT_IDS)
    assert answer["failed"] == [] and answer["skipped"] == []
    assert len(ses.messages()) == 8
    records = ledger_records(bucket)
    assert len(records) == 8
    assert all(key.startswith(f"ledger/records/{CYCLE}/") for key in records)
    assert {r["report"] for r in records.values() if r["status"] == "sent"} == \
        set(ser.REPORT_IDS)
    assert all(r["to"] == [RECIPIENT] and r["bcc"] == [BCC] for r in records.values())

    again, second = handler(environment)

    assert again == {"exit_code": 0, "cycle": CYCLE, "sent": [], "skipped": [], "failed": []}
    assert "nothing due" in second.stdout
    assert len(ses.messages()) == 8  # nothing twice

    history = run(environment, "--history")
    assert history.returncode == 0, history.stderr
    assert CYCLE in history.stdout and "ceo" in history.stdout
    status = run(environment, "--status")
    assert f"last sent: cycle {CYCLE}, variant a: 8 report(s)" in status.stdout


def test_the_laptop_and_the_function_share_one_ledger(tmp_path, ses, bucket):
    environment = function_environment(tmp_path, ses, REPORT_SCHEDULE=None)
    laptop = run(environment, "--only", "ceo,cfo", "--cycle", CYCLE)
    assert laptop.returncode == 0, laptop.stderr

    answer, _ = handler(environment, {"args": ["--cycle", CYCLE]})

    assert answer["exit_code"] == 0
    assert sorted(answer["skipped"]) == ["ceo", "cfo"]  # AlreadySent, by the laptop
    assert len(answer["sent"]) == 6
    assert len(ses.messages()) == 8


def test_an_event_of_args_runs_that_command_line(tmp_path, ses, bucket):
    answer, result = handler(function_environment(tmp_path, ses), {"args": ["--only", "ceo"]})

    assert answer["sent"] == ["ceo"], result.stderr
    assert len(ses.messages()) == 1


@pytest.mark.parametrize("event", [[], {"args": "--only ceo"}, {"args": [1]}])
def test_an_event_that_is_no_command_line_is_refused(tmp_path, ses, bucket, event):
    with pytest.raises(ser.ReportsNotSent, match="args"):
        ser.lambda_handler(event, None, environ=function_environment(tmp_path, ses))
    assert ses.messages() == []


def test_a_failed_run_raises_so_that_lambda_retries_it(tmp_path, ses, bucket):
    environment = function_environment(tmp_path, ses, AWS_SES_FROM_ADDRESS="nobody@example.org")

    answer, result = handler(environment)

    assert isinstance(answer, ser.ReportsNotSent)
    said = json.loads(str(answer))
    assert said["exit_code"] == 1 and said["cycle"] == CYCLE, result.stderr
    assert said["failed"] == [ser.REPORT_IDS[0]] and said["sent"] == []
    assert "Traceback" not in result.stderr

    again, _ = handler(function_environment(tmp_path, ses))  # Lambda's retry, once fixed
    assert len(again["sent"]) == 8


@pytest.mark.parametrize("args", [["--audit-log", "/tmp/x.jsonl"], ["--data=/tmp/x"],
                                  ["--env-file", "/tmp/x.env"], ["--audit", "/tmp/x.jsonl"],
                                  ["--dat", "/tmp/x"], ["--env", "/tmp/x.env"]])
def test_an_event_cannot_move_the_functions_ledger_or_settings(tmp_path, ses, bucket, args):
    """An event's command line that named another ledger would send everything again
    (an abbreviation too, which argparse takes for the option)."""
    answer, result = handler(function_environment(tmp_path, ses), {"args": args})

    assert json.loads(str(answer))["exit_code"] == 64
    assert "not in the function's event" in result.stderr
    assert ses.messages() == []


@pytest.mark.parametrize("unset", ["AUDIT_LOG_PATH", "REPORT_DATA_DIR"])
def test_the_function_refuses_a_ledger_or_data_on_its_own_disk(tmp_path, ses, bucket, unset):
    environment = function_environment(tmp_path, ses, **{unset: str(tmp_path / "x")})

    answer, result = handler(environment)

    assert json.loads(str(answer))["exit_code"] == 78
    assert f"{unset} must be" in result.stderr and result.stderr.count("\n") == 1
    assert ses.messages() == []


def test_the_function_needs_no_python_dotenv(tmp_path, ses, bucket):
    """Its settings are its environment: python-dotenv, absent from Lambda's runtime,
    is never imported."""
    environment = function_environment(tmp_path, ses)
    code = ("import sys, send_exec_reports as s; "
            "print(s.lambda_handler({'args': ['--only', 'ceo']}, None)['sent'], "
            "'dotenv' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=SCRIPT.parent, env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[-2] == "['ceo'] False", done.stderr


# --- Two runs at once, and a run that died ---------------------------------------------


def test_two_runs_at_once_send_each_report_exactly_once(tmp_path, ses, bucket, proxy):
    """S3's conditional write decides: each report is claimed by one run alone."""
    proxy.delay["SendEmail"] = 0.2  # each send takes a while: the runs overlap
    environment = function_environment(tmp_path, ses, proxy.url)
    answers, start = [], threading.Barrier(2)

    def one_run():
        start.wait()
        answers.append(handler(environment)[0])

    runs = [threading.Thread(target=one_run) for _ in range(2)]
    for each in runs:
        each.start()
    for each in runs:
        each.join(120)

    sent = [message["subject"] for message in ses.messages()]
    assert len(sent) == 8 and len(set(sent)) == 8
    assert all(answer["exit_code"] == 0 for answer in answers), answers
    both = answers[0]["sent"] + answers[1]["sent"]
    assert sorted(both) == sorted(ser.REPORT_IDS)
    records = ledger_records(bucket).values()
    assert sorted(r["report"] for r in records if r["status"] == "sent") == \
        sorted(ser.REPORT_IDS)
    # They overlapped: a run met the other's claim, not a finished ledger.
    assert any(r["status"] == "skipped" and r["error"]["code"] == "ClaimedByAnotherRun"
               for r in records), answers


def dead_runs_claim(s3, report, age):
    """The claim a run left on a report when it died mid-send, age seconds ago by S3's
    clock (the tests' server backdates an object that asks it to)."""
    s3.put_object(Bucket=BUCKET, Key=f"ledger/claims/{CYCLE}/a/{report}.json",
                  Metadata={"test-age-seconds": str(age)},
                  Body=json.dumps({"run": "deadbeef", "cycle": CYCLE, "report": report,
                                   "variant": "a"}))


def test_a_dead_runs_claim_is_taken_over_only_once_it_is_stale(tmp_path, ses, bucket):
    environment = function_environment(tmp_path, ses)
    dead_runs_claim(bucket, "cfo", ser.CLAIM_STALE_SECONDS - 60)

    answer, result = handler(environment)

    assert answer["exit_code"] == 0, result.stderr
    assert answer["skipped"] == ["cfo"] and len(answer["sent"]) == 7
    skipped = [r for r in ledger_records(bucket).values() if r["status"] == "skipped"]
    assert skipped[0]["error"]["code"] == "ClaimedByAnotherRun"

    dead_runs_claim(bucket, "cfo", ser.CLAIM_STALE_SECONDS + 1)
    answer, result = handler(environment, {"args": ["--cycle", CYCLE]})

    assert answer["sent"] == ["cfo"], result.stderr
    assert re.search(r"cfo: its claim in S3 is 9\d\d s old with no sent record", result.stderr)
    assert len(ses.messages()) == 8


@pytest.mark.parametrize("skew", [-600, 365 * 86400])
def test_a_runs_wrong_clock_neither_takes_a_live_claim_nor_blocks_for_ever(tmp_path, ses,
                                                                           bucket, skew):
    """A claim's age is S3's to tell: a laptop ten minutes slow (its claim looks old to
    others' clocks) keeps its claim; one a year fast does not hold one for ever."""
    environment = function_environment(tmp_path, ses)
    wrong = FakeClock(FakeClock().now() + timedelta(seconds=skew))
    live = ledger_writer(environment)
    assert live.claim(Report("cfo"), CYCLE, wrong.now()).go

    answer, _ = handler(environment)
    assert answer["skipped"] == ["cfo"]  # fresh by S3's clock, whatever it says inside

    dead_runs_claim(bucket, "cfo", ser.CLAIM_STALE_SECONDS + 1)  # the same, left for dead
    answer, result = handler(environment, {"args": ["--cycle", CYCLE, "--only", "cfo"]})
    assert answer["sent"] == ["cfo"], result.stderr


def age_the_claim(s3, report, age):
    """Make a claim that is there as old as age, by S3's clock, its content kept."""
    key = f"ledger/claims/{CYCLE}/a/{report}.json"
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata={"test-age-seconds": str(age)})


def test_a_sent_report_whose_record_was_lost_is_never_sent_again(tmp_path, ses, bucket):
    """SES took it, then S3 refused its record: the claim says sent, and no run takes
    it over, however old it grows."""
    bucket.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{BUCKET}/ledger/records/*"}]}))
    environment = function_environment(tmp_path, ses, REPORT_SCHEDULE=None)
    args = {"args": ["--cycle", CYCLE, "--only", "ceo"]}

    first, result = handler(environment, args)

    said = json.loads(str(first))
    assert said["exit_code"] == 77 and said["sent"] == ["ceo"], result.stderr
    assert "the sent record of ceo could not be written" in result.stderr
    assert "put this line in the log by hand" in result.stderr
    assert "nothing was sent" not in result.stderr
    bucket.delete_bucket_policy(Bucket=BUCKET)
    age_the_claim(bucket, "ceo", ser.CLAIM_STALE_SECONDS * 10)

    again, result = handler(environment, args)

    assert again["sent"] == [] and again["skipped"] == ["ceo"], result.stderr
    assert len(ses.messages()) == 1


def test_a_failed_send_gives_its_claim_back(tmp_path, ses, bucket, proxy):
    proxy.plan("SendEmail", "reject")
    environment = function_environment(tmp_path, ses, proxy.url, REPORT_SCHEDULE=None)
    first, _ = handler(environment, {"args": ["--cycle", CYCLE, "--only", "ceo"]})
    assert json.loads(str(first))["failed"] == ["ceo"]

    answer, result = handler(environment, {"args": ["--cycle", CYCLE, "--only", "ceo"]})

    assert answer["sent"] == ["ceo"], result.stderr  # at once: no stale claim in its way


# --- Bad data, an unreachable or forbidden bucket ----------------------------------------


def test_bad_data_in_s3_exits_65_naming_the_object(tmp_path, ses, bucket):
    bucket.put_object(Bucket=BUCKET, Key="data/figures.csv",
                      Body="\ufeffas_of,cash_on_hand\r\n2026-13-01,\"1,000\"\r\n".encode())

    answer, result = handler(function_environment(tmp_path, ses))

    assert json.loads(str(answer))["exit_code"] == 65
    assert f"{DATA}figures.csv:2: as_of" in result.stderr
    assert "Traceback" not in result.stderr
    assert ses.messages() == []


def test_a_sheet_over_its_size_in_s3_is_refused_before_it_is_read(tmp_path, ses, bucket):
    bucket.put_object(Bucket=BUCKET, Key="data/clients.csv", Body=b"client,\n" * 200_000)
    environment = function_environment(tmp_path, ses, REPORT_SHEET_MAX_MB="1")

    answer, result = handler(environment)

    assert json.loads(str(answer))["exit_code"] == 65
    assert f"{DATA}clients.csv: 1.5 MB, more than the 1 MB" in result.stderr


def test_an_unreachable_bucket_is_one_line_and_exit_75(tmp_path, ses, bucket):
    environment = function_environment(
        tmp_path, ses, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{free_port()}")

    answer, result = handler(environment)

    assert json.loads(str(answer))["exit_code"] == 75
    assert result.stderr.count("\n") == 1 and "S3 could not be reached" in result.stderr
    assert ses.messages() == []


@pytest.mark.parametrize("denied, prefix", [
    ("s3:GetObject", "data"),  # the sheets may not be read
    ("s3:PutObject", "ledger"),  # the claim, before any send, may not be written
])
def test_a_forbidden_bucket_is_one_line_and_exit_77(tmp_path, ses, bucket, denied, prefix):
    bucket.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": denied,
            "Resource": f"arn:aws:s3:::{BUCKET}/{prefix}/*"}]}))

    answer, result = handler(function_environment(tmp_path, ses))

    assert json.loads(str(answer))["exit_code"] == 77
    assert result.stderr.count("\n") == 1 and "S3 refused access" in result.stderr
    assert ses.messages() == []


def test_a_bucket_that_is_not_there_says_so(tmp_path, ses, bucket):
    environment = function_environment(tmp_path, ses, AUDIT_LOG_PATH="s3://no-such-bucket/l/")

    answer, result = handler(environment)

    assert json.loads(str(answer))["exit_code"] == 78
    assert "S3 bucket no-such-bucket does not exist" in result.stderr
    assert ses.messages() == []


@pytest.mark.parametrize("location", ["s3://", "s3://A_B/x/", "s3://ok-bucket/a/../b/"])
def test_an_s3_location_that_is_none_is_a_config_error(tmp_path, ses, location):
    result = run(function_environment(tmp_path, ses, AUDIT_LOG_PATH=location), "--history")

    assert result.returncode == 78
    assert "is not an S3 location" in result.stderr


def test_a_foreign_object_in_the_ledger_is_warned_of_not_trusted(tmp_path, ses, bucket):
    environment = function_environment(tmp_path, ses)
    bucket.put_object(Bucket=BUCKET, Key=f"ledger/records/{CYCLE}/0-forged.json",
                      Body=b'{"cycle": "2026-11-29", "report": "ceo", "status": "sent!"}')

    answer, result = handler(environment)

    assert len(answer["sent"]) == 8, result.stderr
    assert "0-forged.json is not a record this script wrote" in result.stderr


# --- --deploy-aws -------------------------------------------------------------------------


def deploy(tmp_path, ses, *args, **changes):
    return run(function_environment(tmp_path, ses, **changes), "--deploy-aws", *args)


def test_deploy_aws_twice_makes_nothing_new_the_second_time(tmp_path, ses, bucket):
    first = deploy(tmp_path, ses)

    assert first.returncode == 0, first.stderr
    made = first.stdout.splitlines()
    assert [line.split(":")[0] for line in made[:5]] == [
        "made role exec-reports-function", "made role exec-reports-scheduler",
        "made queue exec-reports-dead-letters", "made function exec-reports",
        "made schedule exec-reports"]
    assert f"aws s3 sync report_data {DATA}" in first.stdout

    second = deploy(tmp_path, ses)

    assert second.returncode == 0, second.stderr
    assert [line for line in second.stdout.splitlines() if line.startswith(
        ("made", "updated"))] == []
    assert second.stdout.count("unchanged") == 5

    function = ses.client("lambda").get_function(FunctionName="exec-reports")
    settings = function["Configuration"]["Environment"]["Variables"]
    assert settings["AUDIT_LOG_PATH"] == LEDGER and settings["REPORT_DATA_DIR"] == DATA
    assert not any(name.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_ENDPOINT"))
                   for name in settings)
    assert function["Configuration"]["Timeout"] == 300
    assert function["Concurrency"]["ReservedConcurrentExecutions"] == 1
    schedule = ses.client("scheduler").get_schedule(Name="exec-reports")
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 2
    assert schedule["Target"]["DeadLetterConfig"]["Arn"].endswith(":exec-reports-dead-letters")


def test_deploy_aws_updates_what_changed(tmp_path, ses, bucket):
    assert deploy(tmp_path, ses).returncode == 0

    again = deploy(tmp_path, ses, REPORT_TIMEZONE="America/Los_Angeles")

    assert "updated function exec-reports: its settings" in again.stdout
    assert "updated schedule exec-reports" in again.stdout
    assert "unchanged role exec-reports-function" in again.stdout


def test_the_planned_role_policy_has_no_star_resource_for_ses_or_s3(tmp_path, ses, bucket):
    plan = deploy(tmp_path, ses, "--dry-run")

    assert plan.returncode == 0, plan.stderr
    document = plan.stdout.split("its policy:\n", 1)[1].split("\nrole ", 1)[0]
    policy = json.loads(document)
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) \
            else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) \
            else [statement["Resource"]]
        if any(action.startswith(("ses:", "s3:")) for action in actions):
            for resource in resources:  # a * only below a folder of the bucket's
                assert resource != "*" and "*" not in resource.split("/", 1)[0], statement
                assert not resource.endswith(f"{BUCKET}/*"), statement
    granted = {(action, statement["Resource"]) for statement in policy["Statement"]
               for action in ([statement["Action"]] if isinstance(statement["Action"], str)
                              else statement["Action"])
               if isinstance(statement["Resource"], str)}
    assert ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/ledger/claims/*") in granted
    assert ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/ledger/*") in granted
    assert ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/data/*") in granted
    assert not any(action == "s3:DeleteObject" and not resource.endswith("/claims/*")
                   for action, resource in granted)
    assert "arn:aws:ses:us-east-1:123456789012:identity/example.com" in plan.stdout
    with pytest.raises(Exception):  # a dry run made nothing
        ses.client("lambda").get_function(FunctionName="exec-reports")


def test_deploy_aws_prints_no_secret(tmp_path, ses, bucket):
    hook = "https://hc-ping.example.com/0a1b2c3d-secret-check-id"
    result = deploy(tmp_path, ses, REPORT_HEARTBEAT_URL=hook)
    plan = deploy(tmp_path, ses, "--dry-run", REPORT_HEARTBEAT_URL=hook)

    for said in (result, plan):
        assert "0a1b2c3d-secret-check-id" not in said.stdout + said.stderr
        assert "local-demo-secret" not in said.stdout + said.stderr
    function = ses.client("lambda").get_function(FunctionName="exec-reports")
    assert function["Configuration"]["Environment"]["Variables"]["REPORT_HEARTBEAT_URL"] == hook


@pytest.mark.parametrize("changes, said", [
    ({"AUDIT_LOG_PATH": "audit.jsonl"}, "AUDIT_LOG_PATH must be an s3:// location"),
    ({"REPORT_DATA_DIR": "report_data"}, "REPORT_DATA_DIR must be an s3:// location"),
    ({"REPORT_SCHEDULE": None}, "REPORT_SCHEDULE must be set"),
    ({"REPORT_AWS_NAME": "my reports"}, "REPORT_AWS_NAME 'my reports'"),
    ({"AUDIT_LOG_PATH": f"s3://{BUCKET}"}, "must name a folder in its bucket"),
    ({"REPORT_DATA_DIR": f"s3://{BUCKET}/"}, "must name a folder in its bucket"),
    ({"REPORT_DATA_DIR": f"{DATA}figures.csv"}, "must name a folder in its bucket"),
])
def test_deploy_aws_refuses_what_the_function_cannot_run_with(tmp_path, ses, bucket, changes,
                                                             said):
    result = deploy(tmp_path, ses, **changes)

    assert result.returncode == 78
    assert said in result.stderr


@pytest.mark.parametrize("option", [["--only", "ceo"], ["--audit-log", LEDGER],
                                    ["--data", DATA], ["--variant", "b"]])
def test_deploy_aws_goes_alone(tmp_path, ses, option):
    """--audit-log and --data would give the plan locations the function never gets."""
    result = deploy(tmp_path, ses, *option)

    assert result.returncode == 64 and "--deploy-aws goes alone" in result.stderr


def test_a_run_that_fails_is_retried_by_lambda_then_dead_lettered(tmp_path, ses, bucket):
    """The schedule starts the function asynchronously: Lambda's own retries and its
    on-failure destination are what see a run that raised."""
    assert deploy(tmp_path, ses).returncode == 0

    retries = ses.client("lambda").get_function_event_invoke_config(FunctionName="exec-reports")

    assert retries["MaximumRetryAttempts"] == 2
    assert retries["DestinationConfig"]["OnFailure"]["Destination"].endswith(
        ":exec-reports-dead-letters")


def test_deploy_aws_that_cannot_reach_a_service_is_one_line_and_exit_75(tmp_path, ses,
                                                                       bucket):
    result = deploy(tmp_path, ses, AWS_ENDPOINT_URL_LAMBDA=f"http://127.0.0.1:{free_port()}")

    assert result.returncode == 75 and result.stderr.count("\n") == 1
    assert "AWS could not be reached" in result.stderr
    assert "made role exec-reports-function" in result.stdout  # what it did, it said


# --- The claim, where two runs race for it ------------------------------------------------


class Report(ser.NamedTuple):
    """What a claim reads of a report."""

    report_id: str
    variant: str = "a"


def ledger_writer(environment):
    location = ser.S3Location.parse(LEDGER, ser.S3Connection(environment), "AUDIT_LOG_PATH")
    return ser.S3LogWriter(ser.AuditLogS3(location))


def test_of_two_runs_taking_over_one_dead_claim_one_wins(tmp_path, ses, bucket):
    """The takeover is conditional on the ETag read: a run that read the dead claim,
    then lost the race, does not overwrite the winner's claim."""
    dead_runs_claim(bucket, "cfo", ser.CLAIM_STALE_SECONDS + 1)
    key = f"ledger/claims/{CYCLE}/a/cfo.json"
    read_by_the_slow_run = bucket.head_object(Bucket=BUCKET, Key=key)["ETag"]
    now = FakeClock().now()
    winner = ledger_writer(function_environment(tmp_path, ses))
    assert winner.claim(Report("cfo"), CYCLE, now).taken_over

    slow = ledger_writer(function_environment(tmp_path, ses))
    assert not slow.take_over(CYCLE, Report("cfo"), read_by_the_slow_run, now)
    held = json.loads(bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert held["run"] != slow._run


def test_a_report_sent_since_the_ledger_was_read_is_not_sent_again(tmp_path, ses, bucket):
    """A run that read the ledger before another run sent the report finds the sent
    record at the claim, however old the claim: never a takeover."""
    environment = function_environment(tmp_path, ses, REPORT_SCHEDULE=None)
    handler(environment, {"args": ["--cycle", CYCLE, "--only", "ceo"]})
    much_later = FakeClock().now() + timedelta(days=2)

    said = ledger_writer(environment).claim(Report("ceo"), CYCLE, much_later)

    assert not said.go and said.code == "AlreadySent" and "--force" in said.why


def test_a_claim_in_variant_b_is_its_own(tmp_path, ses, bucket):
    writer = ledger_writer(function_environment(tmp_path, ses))
    now = FakeClock().now()

    assert writer.claim(Report("ceo", "a"), CYCLE, now).go
    assert writer.claim(Report("ceo", "b"), CYCLE, now).go
    assert writer.claim(Report("ceo", "b"), CYCLE, now).code == "ClaimedByAnotherRun"


# --- The rest of the ledger's readers and writers in S3 ----------------------------------


def test_a_missed_cycle_is_found_in_the_s3_ledger(tmp_path, ses, bucket):
    environment = function_environment(tmp_path, ses, REPORT_SCHEDULE="1,29")
    november = FakeClock(datetime(2026, 11, 1, 9, tzinfo=timezone.utc))
    assert handler(environment, clock=november)[0]["cycle"] == "2026-11-01"
    december = FakeClock(datetime(2026, 12, 2, 9, tzinfo=timezone.utc))  # slept through the 29th

    answer, result = handler(environment, clock=december)

    assert answer["cycle"] == "2026-12-01" and len(answer["sent"]) == 8
    assert "missed cycle(s) 2026-11-29" in result.stderr
    missed = [r for r in ledger_records(bucket).values() if r["status"] == "missed"]
    assert [r["cycle"] for r in missed] == ["2026-11-29"]
    assert "2026-11-29" in run(environment, "--history", "3").stdout


def test_delivery_events_go_into_the_s3_ledger_once(tmp_path, ses, bucket):
    from test_events import Queue, ses_event

    environment = function_environment(tmp_path, ses, REPORT_SCHEDULE=None,
                                       AWS_ENDPOINT_URL_SNS=ses.url)
    setup = run(environment, "--setup-events")
    assert setup.returncode == 0, setup.stderr
    environment["REPORT_EVENTS_QUEUE_URL"] = setup.stdout.strip().splitlines()[-1].split("=", 1)[1]
    environment["AWS_SES_CONFIGURATION_SET"] = "exec-reports"
    events = Queue(ses, environment["REPORT_EVENTS_QUEUE_URL"])
    answer, _ = handler(environment, {"args": ["--cycle", CYCLE, "--only", "ceo"]})
    sent = next(r for r in ledger_records(bucket).values() if r["status"] == "sent")
    delivered = ses_event("Delivery", sent["message_id"], RECIPIENT)
    events.publish(delivered)
    events.publish(delivered)  # SQS delivers at least once

    drained = run(environment, "--events")

    assert drained.returncode == 0, drained.stderr
    assert "1 event record(s) added" in drained.stdout
    after_the_event = FakeClock(datetime(2026, 12, 2, tzinfo=timezone.utc))
    history = run(environment, "--history", "1", clock=after_the_event)
    assert f"{RECIPIENT} delivered" in history.stdout
    assert sorted(key.rsplit(".", 2)[1] for key in ledger_records(bucket)) == ["event", "sent"]


def test_a_data_prefix_with_nothing_in_it_says_how_to_fill_it(tmp_path, ses, bucket):
    environment = function_environment(tmp_path, ses, REPORT_DATA_DIR=f"s3://{BUCKET}/empty/")

    answer, result = handler(environment)

    assert json.loads(str(answer))["exit_code"] == 65
    assert f"aws s3 sync report_data s3://{BUCKET}/empty/" in result.stderr


def test_new_data_is_never_written_to_a_local_folder_named_s3(tmp_path, ses):
    result = run(function_environment(tmp_path, ses), "--new-data", f"s3://{BUCKET}/data/")

    assert result.returncode == 64 and "aws s3 sync" in result.stderr
    assert not Path("s3:").exists()  # where Path("s3://...") would have made it


def test_a_cycle_with_a_label_of_its_own_is_read_in_its_time_not_its_name(tmp_path, ses,
                                                                          bucket):
    """--cycle board-q3 sorts after every date by name; --status and --history read
    the S3 ledger by when its cycles were written, as the file log is read."""
    environment = function_environment(tmp_path, ses, REPORT_SCHEDULE=None)
    february = FakeClock(datetime(2026, 2, 2, 9, tzinfo=timezone.utc))
    handler(environment, {"args": ["--cycle", "board-q3", "--only", "ceo"]}, clock=february)
    handler(environment, {"args": ["--cycle", CYCLE]})

    status = run(environment, "--status")
    history = run(environment, "--history", "1")

    assert f"last sent: cycle {CYCLE}, variant a: 8 report(s)" in status.stdout
    assert f"cycle {CYCLE}" in history.stdout and "board-q3" not in history.stdout


def test_check_finds_a_ledger_a_send_could_not_write(tmp_path, ses, bucket):
    bucket.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{BUCKET}/ledger/*"}]}))

    result = run(function_environment(tmp_path, ses), "--check")

    assert result.returncode != 0
    assert "S3 refused access" in result.stderr and "a send would stop at once" in result.stderr
    assert bucket.list_objects_v2(Bucket=BUCKET, Prefix="ledger/").get("KeyCount", 0) == 0


# --- S3 as a broken network and a narrow role leave it ---------------------------------


@pytest.fixture
def s3_proxy(ses):
    from s3_fault_proxy import S3FaultProxy

    with S3FaultProxy(ses.url) as proxy:
        yield proxy


def through(proxy, tmp_path, ses, **changes):
    """The function's environment, S3 reached through the fault proxy."""
    return function_environment(tmp_path, ses, AWS_ENDPOINT_URL_S3=proxy.url, **changes)


def getting(name):
    return lambda method, path, _: method == "GET" and path.split("?")[0].endswith(name)


@pytest.mark.parametrize("fault", ["cut", "reset"])
def test_a_sheet_cut_short_in_transit_is_never_read_as_a_shorter_sheet(tmp_path, ses, bucket,
                                                                       s3_proxy, fault):
    s3_proxy.fail(getting("/data/figures.csv"), fault)

    answer, result = handler(through(s3_proxy, tmp_path, ses))

    assert json.loads(str(answer))["exit_code"] == 75, result.stderr
    assert result.stderr.count("\n") == 1 and "figures.csv" in result.stderr
    assert ses.messages() == []


def test_a_ledger_record_cut_short_is_one_line(tmp_path, ses, bucket, s3_proxy):
    environment = through(s3_proxy, tmp_path, ses, REPORT_SCHEDULE=None)
    handler(environment, {"args": ["--cycle", CYCLE, "--only", "ceo"]})
    s3_proxy.fail(getting(".sent.json"), "cut")

    history = run(environment, "--history")

    assert history.returncode == 75 and history.stderr.count("\n") == 1
    assert "no records yet" not in history.stdout


def test_a_role_that_may_not_list_the_bucket_still_finds_no_rental_sheet(tmp_path, ses,
                                                                         bucket, s3_proxy):
    """Under the function's role S3 answers 403 for a sheet that is not there: the
    folder's listing says it is not, and it is never asked for."""
    bucket.delete_object(Bucket=BUCKET, Key="data/rental.csv")
    s3_proxy.without_list = True

    answer, result = handler(through(s3_proxy, tmp_path, ses,
                                     REPORT_DATA_DIR=f"s3://{BUCKET}/data"))  # no closing /

    assert answer["exit_code"] == 0 and len(answer["sent"]) == 8, result.stderr


def test_the_failure_notice_goes_when_s3_is_the_failure(tmp_path, ses, bucket, s3_proxy):
    s3_proxy.fail(lambda *_: True, 403)  # (503 too, after retries that take seconds)
    environment = through(s3_proxy, tmp_path, ses, REPORT_ALERT_EMAIL=BCC)

    answer, result = handler(environment)

    assert json.loads(str(answer))["exit_code"] == 77
    notices = [m for m in ses.messages() if "not sent" in m["subject"]]
    assert len(notices) == 1, result.stderr


def test_a_sent_report_neither_recorded_nor_marked_says_it_will_go_again(tmp_path, ses,
                                                                         bucket, s3_proxy):
    """SES took it; S3 then refused both the claim's sent mark and the record: the line
    says the report goes again once the claim is stale unless the line is put in, and
    the exit is 73, never 'run again later'."""
    s3_proxy.fail(lambda method, path, headers: method == "PUT" and (
        "/records/" in path or ("/claims/" in path and "If-None-Match" not in headers)), 500)
    environment = through(s3_proxy, tmp_path, ses, REPORT_SCHEDULE=None)

    answer, result = handler(environment, {"args": ["--cycle", CYCLE, "--only", "ceo"]})

    said = json.loads(str(answer))
    assert said["exit_code"] == 73 and said["sent"] == ["ceo"]
    assert "sends it again unless this line is in the log" in result.stderr
    assert result.stderr.count("\n") == 1 and len(ses.messages()) == 1


def test_a_claim_given_back_is_only_ever_this_runs_own(tmp_path, ses, bucket):
    """A run whose claim was taken over meanwhile (it stalled past the stale age) does
    not delete the claim of the run that took it (If-Match on its own ETag)."""
    environment = function_environment(tmp_path, ses)
    now = FakeClock().now()
    stalled = ledger_writer(environment)
    assert stalled.claim(Report("ceo"), CYCLE, now).go
    age_the_claim(bucket, "ceo", ser.CLAIM_STALE_SECONDS + 1)
    assert ledger_writer(environment).claim(Report("ceo"), CYCLE, now).taken_over

    stalled.release(Report("ceo"), CYCLE)

    held = bucket.get_object(Bucket=BUCKET, Key=f"ledger/claims/{CYCLE}/a/ceo.json")
    assert json.loads(held["Body"].read())["run"] != stalled._run
