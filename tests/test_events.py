"""Know what was delivered: SES's events through SNS to an SQS queue, set up by
--setup-events and read back into the audit log, against moto's SES, SNS and SQS
on one loopback server (moto publishes no events itself: the tests put on the
queue what SES would, through the topic as SES does, or raw)."""

import http.server
import json
import re
import socket

import pytest

import send_exec_reports as ser
from conftest import BCC, RECIPIENT, SENDER, FakeClock
from fault_proxy import serve_in_background

CYCLE = "2026-12-01"


@pytest.fixture
def events(run_script, ses):
    """The queue and topic --setup-events made, as the script reaches them; the
    runner's environment points SQS and SNS at the local server."""
    run_script.events_env = {"AWS_ENDPOINT_URL_SQS": ses.url, "AWS_ENDPOINT_URL_SNS": ses.url}
    result = run_script("--setup-events", env=run_script.events_env)
    assert result.returncode == 0, result.stderr
    queue_url = result.stdout.strip().splitlines()[-1].split("=", 1)[1]
    run_script.events_env["REPORT_EVENTS_QUEUE_URL"] = queue_url
    run_script.events_env["AWS_SES_CONFIGURATION_SET"] = "exec-reports"
    return Queue(ses, queue_url)


class Queue:
    """The events queue and topic, as SES (through SNS) and a stranger write to them."""

    def __init__(self, ses, url):
        self.url = url
        self.sqs = ses.client("sqs")
        self.sns = ses.client("sns")
        self.topic = self.sns.create_topic(Name=ser.EVENTS_NAME)["TopicArn"]

    def publish(self, event):
        """As SES does: to the topic, which wraps it in its envelope for the queue."""
        self.sns.publish(TopicArn=self.topic, Message=json.dumps(event))

    def raw(self, body):
        """Straight onto the queue: raw message delivery, or someone else's message."""
        self.sqs.send_message(QueueUrl=self.url,
                              MessageBody=body if isinstance(body, str) else json.dumps(body))

    def waiting(self):
        """Messages on the queue, visible or not (read and not deleted)."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        return sum(int(value) for value in attributes["Attributes"].values())


def ses_event(kind, message_id, recipient, *, notification=False, **detail):
    """An SES event as SES writes it: event publishing (eventType) or an identity
    notification (notificationType)."""
    field = {"DeliveryDelay": "deliveryDelay"}.get(kind, kind[0].lower() + kind[1:])
    recipients = {"Delivery": ("recipients", recipient),
                  "Bounce": ("bouncedRecipients", {"emailAddress": recipient,
                                                   "diagnosticCode": detail.pop(
                                                       "diagnostic", "")}),
                  "Complaint": ("complainedRecipients", {"emailAddress": recipient}),
                  "DeliveryDelay": ("delayedRecipients", {"emailAddress": recipient})}
    body = dict(detail, timestamp="2026-12-01T08:00:00.000Z")
    if kind in recipients:
        name, value = recipients[kind]
        body[name] = [value]
    return {("notificationType" if notification else "eventType"): kind,
            "mail": {"timestamp": "2026-12-01T07:59:00.000Z", "messageId": message_id,
                     "source": SENDER, "destination": [recipient]},
            field: body}


def sent_ids(run_script):
    return {r["report"]: r["message_id"] for r in run_script.audit_records()
            if r["status"] == "sent"}


def event_records(run_script):
    return [r for r in run_script.audit_records() if r["status"] == "event"]


def send_cycle(run_script, ses, *args):
    ses.verify(SENDER)
    result = run_script("--cycle", CYCLE, *args, env=run_script.events_env)
    assert result.returncode == 0, result.stderr
    return sent_ids(run_script)


# --- Setting up -----------------------------------------------------------------------------


def test_setup_events_makes_what_is_missing_and_nothing_twice(run_script, ses):
    env = {"AWS_ENDPOINT_URL_SQS": ses.url, "AWS_ENDPOINT_URL_SNS": ses.url}
    first = run_script("--setup-events", env=env)
    assert first.returncode == 0, first.stderr
    assert "configuration set: exec-reports (made)" in first.stdout
    assert "event destination: the topic (made)" in first.stdout
    assert "subscription: the queue is now subscribed to the topic" in first.stdout
    assert "AWS_SES_CONFIGURATION_SET=exec-reports" in first.stdout
    second = run_script("--setup-events", env={**env, "AWS_SES_CONFIGURATION_SET":
                                                "exec-reports"})
    assert second.returncode == 0, second.stderr
    assert "(made)" not in second.stdout and "now subscribed" not in second.stdout
    assert "queue policy: already lets the topic write" in second.stdout
    assert "topic: " in second.stdout and "(already right)" in second.stdout
    assert first.stdout.splitlines()[-1] == second.stdout.splitlines()[-1]
    assert first.stdout.splitlines()[-1].startswith("REPORT_EVENTS_QUEUE_URL=http")
    sqs, sns = ses.client("sqs"), ses.client("sns")
    assert len(sqs.list_queues()["QueueUrls"]) == 2  # the queue and its dead letters
    attributes = sqs.get_queue_attributes(QueueUrl=first.stdout.splitlines()[-1].split("=")[1],
                                          AttributeNames=["All"])["Attributes"]
    assert attributes["MessageRetentionPeriod"] == "1209600"
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith("-dead")
    assert len(sns.list_subscriptions()["Subscriptions"]) == 1


def test_the_queue_setup_prints_carries_what_the_topic_publishes(run_script, ses, events):
    events.publish({"hello": "from the topic"})
    assert events.waiting() == 1


# --- Reading the events ----------------------------------------------------------------------


KINDS = [
    ("Delivery", RECIPIENT, {}, f"{RECIPIENT} delivered"),
    ("Bounce", RECIPIENT, {"bounceType": "Permanent", "bounceSubType": "General",
                           "diagnostic": "smtp; 550 5.1.1 user unknown"},
     f"{RECIPIENT} bounced (Permanent/General)"),
    ("Bounce", BCC, {"bounceType": "Transient", "bounceSubType": "MailboxFull"},
     f"{BCC} bounced (Transient/MailboxFull)"),
    ("Complaint", RECIPIENT, {"complaintFeedbackType": "abuse"}, f"{RECIPIENT} complained"),
    ("DeliveryDelay", BCC, {"delayType": "MailboxFull"}, f"{BCC} delayed"),
    ("Reject", RECIPIENT, {"reason": "Bad content"}, f"{RECIPIENT} rejected"),
]


@pytest.mark.parametrize("kind, recipient, detail, shown", KINDS,
                         ids=[f"{k[0]}-{k[2].get('bounceType', '')}" for k in KINDS])
def test_each_event_in_each_format_is_recorded_once_and_shown(run_script, ses, events, kind,
                                                               recipient, detail, shown):
    ids = send_cycle(run_script, ses, "--only", "ceo,cto,cfo")
    events.publish(ses_event(kind, ids["ceo"], recipient, **dict(detail)))  # SNS's envelope
    events.raw(ses_event(kind, ids["cto"], recipient, **dict(detail)))  # raw delivery
    if kind in ("Delivery", "Bounce", "Complaint"):  # identity notifications name these
        events.raw(ses_event(kind, ids["cfo"], recipient, notification=True, **dict(detail)))
    result = run_script("--events", "--only", "ceo,cto,cfo", env=run_script.events_env)
    assert result.returncode in (0, 1), result.stderr
    records = event_records(run_script)
    wanted = 3 if kind in ("Delivery", "Bounce", "Complaint") else 2
    assert len(records) == wanted and events.waiting() == 0
    assert {r["report"] for r in records} == {"ceo", "cto", "cfo"} - (
        set() if wanted == 3 else {"cfo"})
    for record in records:
        assert record["cycle"] == CYCLE and record["matched"] is True
        assert record["recipient"] == recipient
        assert record["message_id"] == ids[record["report"]]
        assert record["event_time"] == "2026-12-01T08:00:00.000Z"
    if kind == "Bounce":
        assert records[0]["bounce"]["type"] == detail["bounceType"]
        assert records[0]["bounce"]["subtype"] == detail["bounceSubType"]
    if detail.get("diagnostic"):
        assert records[0]["bounce"]["diagnostic"] == "smtp; 550 5.1.1 user unknown"
    history = run_script("--history", "1")
    assert "delivery (latest per recipient)" in history.stdout
    assert shown in history.stdout
    # The ledger still counts what was sent: a re-run sends nothing.
    again = run_script("--cycle", CYCLE, "--only", "ceo,cto,cfo", env=run_script.events_env)
    assert [m for m in ses.messages()][3:] == []
    assert again.returncode in (0, 1)


def test_history_shows_each_recipients_latest_state(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    events.publish(ses_event("DeliveryDelay", ids["ceo"], RECIPIENT, delayType="Throttled"))
    events.publish(ses_event("Delivery", ids["ceo"], RECIPIENT))
    events.publish(ses_event("Delivery", ids["ceo"], BCC))
    assert run_script("--events", env=run_script.events_env).returncode == 0
    history = run_script("--history", "1").stdout
    assert f"{RECIPIENT} delivered; {BCC} delivered" in history


def test_a_duplicate_an_unknown_id_and_strangers_messages(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    delivery = ses_event("Delivery", ids["ceo"], RECIPIENT)
    events.publish(delivery)
    events.raw(delivery)  # the same event, delivered twice
    events.publish(ses_event("Delivery", "0100-no-such-message", RECIPIENT))
    events.raw("{not json")
    events.raw({"Records": [{"eventSource": "aws:s3"}]})  # another sender's message
    result = run_script("--events", env=run_script.events_env)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    records = event_records(run_script)
    assert [(r["report"], r["matched"]) for r in records] == [
        ("ceo", True), (ser.UNMATCHED, False)]
    assert records[1]["cycle"] == ser.UNMATCHED
    assert result.stderr.count("warning: 2 message(s) on the events queue are not SES "
                               "events") == 1
    assert events.waiting() == 2  # left for the queue's redrive policy
    again = run_script("--events", env=run_script.events_env)
    assert len(event_records(run_script)) == 2  # nothing recorded twice


def test_a_send_run_reads_the_queue_before_it_sends(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    events.publish(ses_event("Bounce", ids["ceo"], BCC, bounceType="Permanent",
                             bounceSubType="NoEmail", diagnostic="smtp; 550 no such user"))
    result = run_script("--quiet", "--cycle", "2026-12-15", env=run_script.events_env)
    assert result.returncode == 0
    # The audit inbox bounced: said even with --quiet, naming it and why.
    assert (f"warning: {BCC} bounced permanently (NoEmail: smtp; 550 no such user) "
            f"(report ceo, cycle {CYCLE}") in result.stderr
    assert event_records(run_script)[0]["recipient"] == BCC
    check = run_script("--check", "--cycle", "2026-12-15", env=run_script.events_env)
    assert check.returncode == 1
    assert f"error: {BCC} bounced permanently" in check.stderr
    # A delivery since puts it right.
    events.publish(ses_event("Delivery", ids["ceo"], BCC))
    assert run_script("--events", env=run_script.events_env).returncode == 0
    assert run_script("--check", "--cycle", "2026-12-15",
                      env=run_script.events_env).returncode == 0


def test_a_complaint_is_a_problem_to_see(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    events.publish(ses_event("Complaint", ids["ceo"], RECIPIENT))
    result = run_script("--events", env=run_script.events_env)
    assert result.returncode == 1
    assert f"error: {RECIPIENT} marked a report as spam" in result.stderr


# --- A queue that cannot be read ------------------------------------------------------------


class DeniedQueue:
    """An SQS endpoint that answers every call AccessDenied, as SQS's JSON API words it."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.dumps({"__type": "com.amazonaws.sqs#AccessDenied",
                                   "message": "Access to the resource is denied."}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("x-amzn-query-error", "AccessDenied;Sender")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        serve_in_background(self.server)


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("queue", ["unreachable", "denied"])
def test_a_queue_that_cannot_be_read_does_not_stop_the_reports(run_script, ses, queue):
    denied = DeniedQueue() if queue == "denied" else None
    endpoint = denied.url if denied else f"http://127.0.0.1:{closed_port()}"
    env = {"AWS_ENDPOINT_URL_SQS": endpoint,
           "REPORT_EVENTS_QUEUE_URL": f"{endpoint}/123456789012/{ser.EVENTS_NAME}"}
    ses.verify(SENDER)
    try:
        result = run_script("--quiet", "--cycle", CYCLE, env=env)
    finally:
        if denied:
            denied.server.shutdown()
    assert result.returncode == 0, result.stderr
    assert len(ses.messages()) == len(ser.REPORTS), result.stderr
    lines = [x for x in result.stderr.splitlines() if "events queue" in x]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("warning: the events queue (REPORT_EVENTS_QUEUE_URL) could not be "
                           "read: ")
    if denied:
        assert "AccessDenied" in line


def test_events_without_a_queue_setting_is_a_usage_line(run_script):
    result = run_script("--events")
    assert result.returncode == 64
    assert "REPORT_EVENTS_QUEUE_URL" in result.stderr


def test_test_events_sends_to_the_mailbox_simulator(run_script, ses):
    ses.verify(SENDER)
    result = run_script("--test-events")
    assert result.returncode == 0, result.stderr
    [message] = ses.messages()
    assert message["destinations"]["ToAddresses"] == list(ser.SIMULATOR)
    [record] = run_script.audit_records()
    assert record["report"] == ser.EVENT_TEST_REPORT and record["cycle"] == "event-test"
    assert re.search(r"sent \S+ to success@simulator", result.stdout)


def test_events_of_an_older_cycle_do_not_push_the_newest_out_of_history(run_script, ses,
                                                                         events):
    ids = send_cycle(run_script, ses, "--only", "ceo")  # cycle 2026-12-01
    assert run_script("--cycle", "2026-12-15", "--only", "ceo",
                      env=run_script.events_env).returncode == 0
    events.publish(ses_event("Delivery", ids["ceo"], RECIPIENT))  # read after the 15th's
    assert run_script("--events", env=run_script.events_env).returncode == 0
    latest = run_script("--history", "1").stdout
    assert "cycle 2026-12-15" in latest and "cycle 2026-12-01" not in latest
    both = run_script("--history", "2").stdout
    assert f"{RECIPIENT} delivered" in both.split("cycle 2026-12-15")[0]


# --- From the hostile review of the events ------------------------------------------------


def test_a_run_with_nothing_due_still_reads_the_queue(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    events.publish(ses_event("Bounce", ids["ceo"], RECIPIENT, bounceType="Permanent",
                             bounceSubType="General"))
    from test_alarms import at
    env = {**run_script.events_env, "REPORT_SCHEDULE": "1,15",
           "REPORT_TIMEZONE": "America/Los_Angeles"}
    assert run_script("--quiet", "--only", "ceo", clock=at("2026-12-02 18:00"),
                      env=env).returncode == 0
    quiet = run_script("--quiet", "--only", "ceo", clock=at("2026-12-03 18:00"), env=env)
    assert quiet.returncode == 0 and "nothing due" not in quiet.stdout
    assert len(event_records(run_script)) == 1 and events.waiting() == 0
    assert f"warning: {RECIPIENT} bounced permanently" in quiet.stderr


@pytest.mark.parametrize("poison", [
    {"bounce": {"bounceType": "Permanent", "bouncedRecipients": [5]}},
    {"bounce": "oops"},
    {"bounce": {"bouncedRecipients": "ab@example.com"}},
    {"mail_destination": 5, "kind": "Send"},
    {"mail_destination": "abc@example.com", "kind": "Reject"},
])
def test_an_event_of_the_wrong_shape_is_no_event_and_the_run_sends(run_script, ses, events,
                                                                    poison):
    kind = poison.pop("kind", "Bounce")
    event = ses_event(kind, "0100-some-id", RECIPIENT)
    if "mail_destination" in poison:
        event["mail"]["destination"] = poison.pop("mail_destination")
    event.update(poison)
    events.raw(event)
    ses.verify(SENDER)
    result = run_script("--cycle", CYCLE, env=run_script.events_env)
    assert result.returncode == 0, result.stderr
    assert len(ses.messages()) == len(ser.REPORTS) and "Traceback" not in result.stderr
    assert "1 message(s) on the events queue are not SES events" in result.stderr
    assert not event_records(run_script)


def test_the_latest_state_is_the_latest_ses_dated_not_the_last_read(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    delivered = ses_event("Delivery", ids["ceo"], BCC)
    bounced = ses_event("Bounce", ids["ceo"], BCC, bounceType="Permanent",
                        bounceSubType="General")
    bounced["bounce"]["timestamp"] = "2026-12-01T07:00:00.000Z"  # before the delivery
    events.raw(delivered)
    assert run_script("--events", env=run_script.events_env).returncode == 0
    events.raw(bounced)  # read later, dated earlier
    assert run_script("--events", env=run_script.events_env).returncode == 0
    assert f"{BCC} delivered" in run_script("--history", "1").stdout


def test_what_an_event_says_is_cleaned_before_it_is_shown(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    event = ses_event("Bounce", ids["ceo"], RECIPIENT, bounceType="Permanent",
                      bounceSubType="Gen\x1b[2J\neral\u202e" + "x" * 5000,
                      diagnostic="smtp\n\x1b[31mFAKE: all good\u202e")
    events.raw(event)
    result = run_script("--events", env=run_script.events_env)
    assert result.returncode == 1
    [line] = [x for x in result.stderr.splitlines() if "bounced permanently" in x]
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr
    assert len(line) < 500 and "FAKE" in line  # on the same line: no forged one


def test_setup_keeps_the_statements_others_put_in_the_policies(run_script, ses, events):
    topic = json.loads(events.sns.get_topic_attributes(TopicArn=events.topic)[
        "Attributes"]["Policy"])
    assert {s["Sid"] for s in topic["Statement"]} == {"__default_statement_ID",
                                                      "SesPublishesEvents"}
    other = {"Sid": "Other", "Effect": "Allow", "Principal": {"AWS": "123456789012"},
             "Action": "sqs:ReceiveMessage", "Resource": "*"}
    policy = json.loads(events.sqs.get_queue_attributes(
        QueueUrl=events.url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    policy["Statement"].append(other)
    events.sqs.set_queue_attributes(QueueUrl=events.url,
                                    Attributes={"Policy": json.dumps(policy)})
    again = run_script("--setup-events", env=run_script.events_env)
    assert again.returncode == 0 and "queue policy: already lets the topic write" in again.stdout
    kept = json.loads(events.sqs.get_queue_attributes(
        QueueUrl=events.url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    assert {s["Sid"] for s in kept["Statement"]} == {"TopicWritesEvents", "Other"}


def test_setup_says_what_is_wrong_with_a_destination_it_did_not_make(run_script, ses):
    env = {"AWS_ENDPOINT_URL_SQS": ses.url, "AWS_ENDPOINT_URL_SNS": ses.url,
           "AWS_SES_CONFIGURATION_SET": "exec-reports"}
    client = ses.client("ses")
    client.create_configuration_set(ConfigurationSet={"Name": "exec-reports"})
    client.create_configuration_set_event_destination(
        ConfigurationSetName="exec-reports", EventDestination={
            "Name": ser.EVENTS_NAME, "Enabled": True, "MatchingEventTypes": ["bounce"],
            "SNSDestination": {"TopicARN": "arn:aws:sns:us-east-1:123456789012:elsewhere"}})
    result = run_script("--setup-events", env=env)
    assert result.returncode == 1
    assert (f"configuration set exec-reports has an event destination named "
            f"{ser.EVENTS_NAME} that is not right (it sends to "
            "arn:aws:sns:us-east-1:123456789012:elsewhere; it lacks event types send") \
        in result.stderr
    assert "iam.md" not in result.stderr


def test_events_exits_75_when_the_queue_cannot_be_read(run_script):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = run_script("--events", env={
        "AWS_ENDPOINT_URL_SQS": endpoint,
        "REPORT_EVENTS_QUEUE_URL": f"{endpoint}/123456789012/{ser.EVENTS_NAME}"})
    assert result.returncode == 75
    assert "could not be read" in result.stderr and "sent all the same" not in result.stderr


def test_the_event_test_is_no_report_for_the_stale_figures_check(run_script, ses):
    ses.verify(SENDER)
    for cycle in ("2026-12-01", "2026-12-15"):
        assert run_script("--only", "ceo", "--cycle", cycle).returncode == 0
    assert run_script("--test-events").returncode == 0
    result = run_script("--only", "ceo", "--cycle", "2026-12-29")
    assert "is the one cycle 2026-12-15 already reported" in result.stderr


def test_an_empty_or_partial_message_id_matches_no_send(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo,cto")  # the two reports it reads
    events.raw(ses_event("Delivery", "", RECIPIENT))
    events.raw(ses_event("Delivery", ids["ceo"][:8], RECIPIENT))
    events.raw(ses_event("Delivery", ids["cto"], RECIPIENT))
    assert run_script("--events", env=run_script.events_env).returncode == 0
    matched = [(r["report"], r["matched"]) for r in event_records(run_script)]
    assert ("cto", True) in matched and (ser.UNMATCHED, False) in matched
    assert len(matched) == 2  # the empty id is no SES event


def test_history_takes_an_address_in_any_case_as_one(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    events.raw(ses_event("DeliveryDelay", ids["ceo"], BCC.upper(), delayType="Throttled"))
    later = ses_event("Delivery", ids["ceo"], BCC)
    later["delivery"]["timestamp"] = "2026-12-01T09:00:00.000Z"
    events.raw(later)
    assert run_script("--events", env=run_script.events_env).returncode == 0
    history = run_script("--history", "1").stdout
    assert f"{BCC} delivered" in history and "DELAYED" not in history.upper().replace(
        "DELIVERED", "")


# --- Hardening, fourth pass (issue 26, items 1 to 4) ----------------------------------------


def poisoned(kind):
    """A message of a shape SES never writes, each once seen to stop every run."""
    event = ses_event("Bounce", "0100-some-id", RECIPIENT, bounceType="Permanent")
    if kind == "eventType a list":
        event["eventType"] = ["Bounce"]
    elif kind == "eventType an object":
        event["eventType"] = {"Bounce": 1}
    elif kind == "messageId a list":
        event["mail"]["messageId"] = ["0100-some-id"]
    elif kind == "a lone surrogate in the message id":
        return json.dumps(event).replace("0100-some-id", "0100-\\ud800")
    elif kind == "a lone surrogate in an address":
        return json.dumps(event).replace(RECIPIENT, "a\\udc80b@example.com")
    elif kind == "51 recipients":
        event["bounce"]["bouncedRecipients"] = [{"emailAddress": f"r{n}@example.com"}
                                               for n in range(51)]
    elif kind == "notificationType a number":
        del event["eventType"]
        event["notificationType"] = 7
    return event


@pytest.mark.parametrize("kind", ["eventType a list", "eventType an object",
                                  "messageId a list", "a lone surrogate in the message id",
                                  "a lone surrogate in an address", "51 recipients",
                                  "notificationType a number"])
def test_one_message_of_any_shape_never_stops_the_reports(run_script, ses, events, kind):
    events.raw(poisoned(kind))
    ses.verify(SENDER)
    result = run_script("--cycle", CYCLE, env=run_script.events_env)
    assert result.returncode == 0, result.stderr
    assert len(ses.messages()) == len(ser.REPORTS) and "Traceback" not in result.stderr
    assert "1 message(s) on the events queue are not SES events" in result.stderr
    assert events.waiting() == 1 and not event_records(run_script)
    again = run_script("--cycle", CYCLE, env=run_script.events_env)
    assert again.returncode == 0, again.stderr  # and the next run too


def test_an_event_naming_an_address_its_send_never_had_is_not_ses(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    event = ses_event("Delivery", ids["ceo"], RECIPIENT)
    event["mail"]["destination"] = [RECIPIENT, "stranger@example.net"]
    events.publish(event)
    result = run_script("--events", env=run_script.events_env)
    assert result.returncode == 0, result.stderr
    assert "1 message(s) on the events queue are not SES events" in result.stderr
    assert not event_records(run_script) and events.waiting() == 1


def test_a_bounce_from_a_forwarding_alias_is_ses_and_recorded(run_script, ses, events):
    """SES names a bounce's final recipient (the DSN's Final-Recipient), which for an
    alias is not the address the report went to: what the mail went to decides."""
    ids = send_cycle(run_script, ses, "--only", "ceo")
    bounce = ses_event("Bounce", ids["ceo"], "mailbox@internal.example.net",
                       bounceType="Permanent", bounceSubType="General")
    bounce["mail"]["destination"] = [RECIPIENT, BCC]  # what the report went to
    events.publish(bounce)
    result = run_script("--events", env=run_script.events_env)
    assert "not SES" not in result.stderr and len(event_records(run_script)) == 1
    assert events.waiting() == 0


def test_an_sns_message_from_the_events_topic_of_another_account_is_not_ses(run_script, ses,
                                                                          events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    for arn in ("arn:aws:sns:us-east-1:999999999999:" + ser.EVENTS_NAME, ser.EVENTS_NAME):
        events.raw({"Type": "Notification", "TopicArn": arn,
                    "Message": json.dumps(ses_event("Delivery", ids["ceo"], RECIPIENT))})
    result = run_script("--events", env=run_script.events_env)
    assert "2 message(s) on the events queue are not SES events" in result.stderr
    assert not event_records(run_script)


def test_a_bounce_that_names_no_recipient_is_not_ses(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    event = ses_event("Bounce", ids["ceo"], RECIPIENT, bounceType="Permanent")
    event["bounce"]["bouncedRecipients"] = []
    events.raw(event)
    result = run_script("--events", env=run_script.events_env)
    assert "1 message(s) on the events queue are not SES events" in result.stderr


def test_history_shows_no_state_a_forged_event_would_set(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    events.publish(ses_event("Bounce", ids["ceo"], BCC, bounceType="Permanent",
                             bounceSubType="General"))
    forged = ses_event("Delivery", ids["ceo"], BCC)
    forged["delivery"]["timestamp"] = "9999-12-31T23:59:59.999Z"
    events.publish(forged)
    assert run_script("--events", env=run_script.events_env).returncode == 1
    history = run_script("--history", "1").stdout
    assert f"{BCC} bounced" in history and f"{BCC} delivered" not in history


def test_an_event_from_another_topic_is_not_ses(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    other = events.sns.create_topic(Name="somebody-elses")["TopicArn"]
    envelope = {"Type": "Notification", "TopicArn": other,
                "Message": json.dumps(ses_event("Delivery", ids["ceo"], RECIPIENT))}
    events.raw(envelope)
    result = run_script("--events", env=run_script.events_env)
    assert "1 message(s) on the events queue are not SES events" in result.stderr
    assert not event_records(run_script)


@pytest.mark.parametrize("forgery", ["an unknown message id", "a time in the future",
                                     "a time that is no time"])
def test_a_forged_delivery_never_switches_the_bounce_alarm_off(run_script, ses, events,
                                                               forgery):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    events.publish(ses_event("Bounce", ids["ceo"], BCC, bounceType="Permanent",
                             bounceSubType="General"))
    forged = ses_event("Delivery", ids["ceo"], BCC)
    if forgery == "an unknown message id":
        forged = ses_event("Delivery", "0100-never-sent", BCC)
        forged["delivery"]["timestamp"] = "2026-12-02T08:00:00.000Z"  # later, and real
    elif forgery == "a time in the future":
        forged["delivery"]["timestamp"] = "9999-12-31T23:59:59.999Z"
    else:
        forged["delivery"]["timestamp"] = "~~~~ later than anything"
    events.publish(forged)
    for args in (("--events",), ("--check", "--cycle", "2026-12-15")):
        result = run_script(*args, env=run_script.events_env)
        assert result.returncode == 1, (args, result.stderr)
        assert f"{BCC} bounced permanently" in result.stderr
    assert len(event_records(run_script)) == 2  # the forgery is recorded, and decides nothing


@pytest.mark.parametrize("line", [
    {"event": "bounce", "bounce": "Permanent"},
    {"event": "bounce", "bounce": {"type": "Permanent"}},  # its subtype and diagnostic gone
    {"event": "delivery", "event_id": ["x"]},
    {"event": "delivery", "event_id": {"a": 1}},
    {"event": "delivery", "matched": "yes"},
    {"event": ["bounce"]},
    {"event": "bounce", "bounce": {"type": ["Permanent"]}},
    {"event": "delivery", "recipient": {"address": "x"}},
    {"event": "delivery", "event_time": 20261201},
])
def test_a_hand_edited_event_line_is_ignored_with_one_warning(run_script, ses, events, line):
    record = {"ts": "2026-12-01T08:00:00.000+00:00", "cycle": CYCLE, "report": "ceo",
              "status": "event", "recipient": BCC, "event_time": "2026-12-01T08:00:00Z",
              "matched": True, "message_id": "0100-x", **line}
    run_script.audit_log.write_text(json.dumps(record) + "\n")
    ses.verify(SENDER)
    result = run_script("--cycle", CYCLE, env=run_script.events_env)
    assert result.returncode == 0, result.stderr
    assert len(ses.messages()) == len(ser.REPORTS) and "Traceback" not in result.stderr
    assert "not a record this script wrote" in result.stderr
    for args in (("--history",), ("--status",), ("--events",),
                 ("--check", "--cycle", "2026-12-15")):
        other = run_script(*args, env=run_script.events_env)
        assert other.returncode in (0, 1) and "Traceback" not in other.stderr, args


class SlowClock(FakeClock):
    """A clock on which every look at the monotonic time takes a second."""

    def monotonic(self):
        self.elapsed += 1.0
        return self.elapsed


def test_the_drains_time_holds_inside_a_batch_of_messages(run_script, ses, events):
    """Ten messages come in one receive; the drain has EVENTS_MAX_SECONDS (10 s) and
    looks at the clock before each message: what it had no time for stays queued."""
    ids = send_cycle(run_script, ses, "--only", "ceo")
    for number in range(10):
        events.raw(ses_event("Delivery", ids["ceo"], RECIPIENT, notification=number % 2 == 1))
    clock = SlowClock(ser.datetime.now(ser.timezone.utc))
    result = run_script("--events", env=run_script.events_env, clock=clock)
    assert result.returncode == 0, result.stderr
    assert 0 < events.waiting() < 10


# --- Many messages: each line of the log read once a run (issue 27) -------------------------


def test_a_later_batch_finds_a_send_the_first_batch_read_past(run_script, ses, events):
    """The drain reads the log backwards once a run: the sends it passes on the way to
    one batch's are kept for the next (the newest send sits nearer the end)."""
    ids = send_cycle(run_script, ses)
    oldest, newest = ser.REPORTS[0].report_id, ser.REPORTS[-1].report_id
    for n in range(10):  # a whole batch for the oldest send, read first
        events.raw(ses_event("DeliveryDelay", ids[oldest], RECIPIENT, delayType=f"T{n}"))
    events.raw(ses_event("Bounce", ids[newest], BCC, bounceType="Permanent",
                         bounceSubType="NoEmail", diagnostic="smtp; 550 no such user"))
    events.raw(ses_event("Delivery", "0100018f-never-sent", RECIPIENT))  # an id of no send
    events.raw(ses_event("Delivery", ids[newest], RECIPIENT, timestamp="x"))
    result = run_script("--events", env=run_script.events_env)
    assert result.returncode == 1, result.stderr  # the bounce is ours: it raises the alarm
    records = event_records(run_script)
    assert [(r["report"], r["matched"]) for r in records if r["message_id"] == ids[newest]
            and r["event"] == "bounce"] == [(newest, True)]
    check = run_script("--check", "--cycle", "2026-12-15", env=run_script.events_env)
    assert check.returncode == 1 and f"{BCC} bounced permanently" in check.stderr


# --- Opens and clicks (issue 30) -----------------------------------------------------------


def test_opens_and_clicks_are_recorded_once_a_message_and_compared_by_variant(run_script, ses,
                                                                             events):
    a = send_cycle(run_script, ses, "--only", "ceo,cto")
    run_script.settings(AWS_RECIPIENT_EMAIL_B=RECIPIENT)
    b = send_cycle(run_script, ses, "--only", "ceo,cto", "--variant", "b")
    opened = ses_event("Open", a["ceo"], RECIPIENT, ipAddress="192.0.2.1",
                       userAgent="Mail")
    events.publish(opened)  # through SNS, as SES does
    events.publish(opened)  # SQS delivers a message twice now and then: recorded once
    events.publish(ses_event("Open", a["ceo"], RECIPIENT, userAgent="Mail 2"))  # read again
    events.raw(ses_event("Open", b["ceo"], RECIPIENT))  # raw delivery
    events.publish(ses_event("Click", b["cto"], RECIPIENT,
                             link="https://example.com/report?token=secret#top"))
    result = run_script("--events", env=run_script.events_env)
    assert result.returncode == 0, result.stderr
    records = event_records(run_script)
    assert sorted((r["event"], r["variant"], r["report"]) for r in records) == [
        ("click", "b", "cto"), ("open", "a", "ceo"), ("open", "a", "ceo"),
        ("open", "b", "ceo")]
    # SES's pixel and links are the message's: an open or a click names no recipient.
    assert {r["recipient"] for r in records} == {""}
    [click] = [r for r in records if r["event"] == "click"]
    assert click["link"] == "https://example.com/report"  # no query, no token
    history = run_script("--history", "2")
    assert history.returncode == 0 and "opened" not in history.stdout
    said = " ".join(run_script("--ab").stdout.split())
    assert "opens: too few to tell, a 1 of 2 (50%), b 1 of 2 (50%)" in said  # unique
    assert "clicks: too few to tell, a 0 of 2 (0%), b 1 of 2 (50%)" in said


def destination_types(ses):
    described = ses.client("ses").describe_configuration_set(
        ConfigurationSetName="exec-reports", ConfigurationSetAttributeNames=["eventDestinations"])
    return set(described["EventDestinations"][0]["MatchingEventTypes"])


def test_tracking_turns_open_and_click_events_on_and_off_in_place(run_script, ses):
    env = {"AWS_ENDPOINT_URL_SQS": ses.url, "AWS_ENDPOINT_URL_SNS": ses.url}
    first = run_script("--setup-events", env=env)
    assert first.returncode == 0, first.stderr
    assert destination_types(ses) == set(ser.EVENT_TYPES)  # off unless it is asked for
    assert "no opens or clicks tracked (REPORT_TRACKING is not set" in first.stdout
    on = run_script("--setup-events", env={**env, "REPORT_TRACKING": "opens,clicks"})
    assert on.returncode == 0, on.stderr
    assert "(tracking changed); tracking clicks and opens" in on.stdout
    assert destination_types(ses) == {*ser.EVENT_TYPES, "open", "click"}
    again = run_script("--setup-events", env={**env, "REPORT_TRACKING": "Clicks, opens"})
    assert "event destination: the topic (already); tracking clicks and opens" in again.stdout
    opens = run_script("--setup-events", env={**env, "REPORT_TRACKING": "opens"})
    assert destination_types(ses) == {*ser.EVENT_TYPES, "open"} and opens.returncode == 0
    unset = run_script("--setup-events", env=env)  # not set: as the console left it
    assert unset.returncode == 0 and destination_types(ses) == {*ser.EVENT_TYPES, "open"}
    assert "(already); opens tracked (REPORT_TRACKING is not set: left as it is)" in \
        unset.stdout
    off = run_script("--setup-events", env={**env, "REPORT_TRACKING": "off"})
    assert off.returncode == 0 and destination_types(ses) == set(ser.EVENT_TYPES)
    assert "(tracking changed); no opens or clicks tracked" in off.stdout


def test_a_tracking_setting_that_is_no_kind_is_one_line_and_exit_78(run_script):
    result = run_script("--dry-run", "--only", "ceo", env={"REPORT_TRACKING": "opens,pixels"})
    assert result.returncode == 78
    assert "REPORT_TRACKING 'opens,pixels' is not opens, clicks or both" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_clicked_link_keeps_no_user_or_password(run_script, ses, events):
    ids = send_cycle(run_script, ses, "--only", "ceo")
    events.publish(ses_event("Click", ids["ceo"], RECIPIENT,
                             link="https://owner:hunter2secret@example.com/r?token=x"))
    result = run_script("--events", env=run_script.events_env)
    assert result.returncode == 0, result.stderr
    [click] = event_records(run_script)
    assert click["link"] == "https://example.com/r"
    assert "hunter2" not in run_script.audit_log.read_text()


def test_tracking_both_is_opens_and_clicks(run_script, ses):
    env = {"AWS_ENDPOINT_URL_SQS": ses.url, "AWS_ENDPOINT_URL_SNS": ses.url,
           "REPORT_TRACKING": "Both"}
    result = run_script("--setup-events", env=env)
    assert result.returncode == 0, result.stderr
    assert destination_types(ses) == {*ser.EVENT_TYPES, "open", "click"}
