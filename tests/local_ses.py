"""A local SES for the tests and `make demo`: moto's server on a free loopback port,
and on another the tests' HTTP proxy in front of it, for the SES v2 API: the
proxy answers the v2 calls moto lacks (GetAccount, GetSuppressedDestination) as
SES documents them, for a healthy production account with an empty suppression
list, and passes the rest to moto.  The script reaches them as a user reaches
a local SES: AWS_ENDPOINT_URL_SES and AWS_ENDPOINT_URL_SESV2.

Run as a script, it is the demo: it starts the server, verifies the sender of
repos.env.example there and runs the real send of all eight reports against it.
`local_ses.py serve PORT RATE DAILY V2PORT` is how the server itself is started.

moto's server reports the sandbox's quota (200 messages a day, 1 a second).
The server is started with an account's quota of our choosing instead, so that
pacing binds only in the tests that are about pacing.
"""

import email
import email.header
import email.policy
import email.utils
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fault_proxy import FaultProxy, mail_parts

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "send_exec_reports.py"
EXAMPLE_ENV = REPO / "repos.env.example"
EXAMPLE_DATA = REPO / "report_data.example"  # the owner's data folder, made up
EXAMPLE_FIGURES = EXAMPLE_DATA / "figures.csv"
START_TIMEOUT_SECONDS = 30
# A production-like account: pacing never binds and the quota never runs out.
FAST_SEND_RATE = 1000
# Loopback is reached directly, whatever proxy the environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LARGE_DAILY_QUOTA = 50000


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalSES:
    """moto's SES server in a child process, reached over real HTTP on loopback.

    `url` is moto (both APIs, as far as moto has them); `v2_url` is the proxy
    in front of it that completes the v2 API.  A test's own FaultProxy goes in
    front of `url` and answers the v2 calls itself.
    """

    def __init__(self, max_send_rate=FAST_SEND_RATE, max_24_hour_send=LARGE_DAILY_QUOTA):
        self.port, self.v2_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.v2_url = f"http://127.0.0.1:{self.v2_port}"
        self.quota = (max_send_rate, max_24_hour_send)
        self._process = None
        self._clients = {}

    def start(self):
        rate, daily = self.quota
        self._process = subprocess.Popen(
            [sys.executable, __file__, "serve", str(self.port), str(rate), str(daily),
             str(self.v2_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                self.state()
                DIRECT.open(f"{self.v2_url}/v2/email/account", timeout=5).close()
                return self
            except OSError:
                if self._process.poll() is not None:
                    raise RuntimeError("moto's server exited; is moto[server] installed?") \
                        from None
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto's server did not answer on {self.url}")

    def stop(self):
        if self._process and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def state(self):
        """Everything the server holds, as moto's own data API reports it."""
        with DIRECT.open(f"{self.url}/moto-api/data.json", timeout=5) as answer:
            return json.load(answer)

    def messages(self):
        """The messages SES accepted, as one shape whichever API sent them: id, source,
        subject, body (the HTML part where there is one, as moto keeps for v1's
        SendEmail), text, destinations ({"ToAddresses", "BccAddresses"}) and, for a
        raw message, the message itself (raw).  The reports (raw, through v2) come in the
        order SES received them, then the failure notices (v1's SendEmail)."""
        held = self.state().get("ses", {})
        return [*map(raw_message, held.get("RawMessage", [])), *held.get("Message", [])]

    def reset(self):
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        DIRECT.open(request, timeout=5).close()

    def client(self, service):
        """A boto3 client of moto itself, made once: one costs tens of milliseconds."""
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(
                service, region_name="us-east-1", endpoint_url=self.url,
                aws_access_key_id="local", aws_secret_access_key="local")
        return self._clients[service]

    def verify(self, identity):
        """Verify an address, or a whole domain with Easy DKIM, as the SES console does."""
        if "@" in identity:
            self.client("ses").verify_email_identity(EmailAddress=identity)
        else:
            self.client("sesv2").create_email_identity(
                EmailIdentity=identity,
                DkimSigningAttributes={"NextSigningKeyLength": "RSA_2048_BIT"})


def raw_message(held):
    """A raw message moto holds, in the shape of its simple ones: its destinations are
    the request's (serve() sees to it), To then BCC, and its BCC those past the To
    header's; its parts as mail_parts reads them.  Read once a message: a test asks
    again and again."""
    if held["id"] not in READ:
        message = email.message_from_string(held["raw_data"], policy=email.policy.compat32)
        to = [address for _, address in email.utils.getaddresses(message.get_all("To", []))]
        parts = {kind: text for kind, (text, _) in mail_parts(message).items()}
        subject = str(email.header.make_header(email.header.decode_header(message["Subject"])))
        given = held["destinations"]
        READ[held["id"]] = {
            "id": held["id"], "source": held["source"], "subject": subject,
            "body": parts.get("html", parts.get("plain")), "text": parts.get("plain"),
            "destinations": {"ToAddresses": given[:len(to)], "BccAddresses": given[len(to):]},
            "raw": held["raw_data"]}
    return READ[held["id"]]


READ = {}  # message id -> the message as raw_message read it (ids are never reused)


def script_environment(endpoint_url, home, v2_url=None, **extra):
    """An environment that can reach only the local server, with throwaway credentials.

    The v2 API goes to v2_url where given, else where v1 goes (a test's proxy).
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "local-demo-key",
        "AWS_SECRET_ACCESS_KEY": "local-demo-secret",
        "AWS_ENDPOINT_URL_SES": endpoint_url,
        "AWS_ENDPOINT_URL_SESV2": v2_url or endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",  # never look for an instance role
        "AWS_CONFIG_FILE": str(Path(home) / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(Path(home) / "no-aws-credentials"),
    }
    env.update(extra)
    return env


def serve(port, max_send_rate, max_24_hour_send, v2_port):
    """moto's server in this process, its SES quota set to an account's of our choosing,
    and the proxy that completes its v2 API on v2_port, in threads of this process."""
    from moto.server import main as moto_server
    from moto.ses import models, responses

    sandbox_quota = models.SESQuota.__init__

    def account_quota(quota, sent):
        sandbox_quota(quota, sent)
        quota.max_send_rate = max_send_rate
        quota.max24_hour_send = max_24_hour_send

    models.SESQuota.__init__ = account_quota
    keep_raw = models.SESBackend.send_raw_email
    limit = models.RECIPIENT_LIMIT

    def send_raw_email(backend, source, destinations, raw_data):
        """moto's, with the request's destinations the only ones, as SES has it (moto
        adds the To header's again: each To would count twice against the limit)."""
        if len(destinations) > limit:
            raise models.MessageRejectedError("Too many recipients.")
        counted = backend.sent_message_count
        message = keep_raw(backend, source, list(destinations), raw_data)
        if destinations:
            message.destinations = list(destinations)
            backend.sent_message_count = counted + len(destinations)
        return message

    backdate_objects_that_say_so()
    models.RECIPIENT_LIMIT = 10 * limit  # checked above, on the request's destinations
    models.SESBackend.send_raw_email = send_raw_email
    responses.EmailResponse.update_configuration_set_event_destination = \
        update_configuration_set_event_destination
    with FaultProxy(f"http://127.0.0.1:{port}", port=v2_port) as v2:
        v2.account_quota(max_24_hour_send, 0, max_send_rate)  # no need to ask moto each time
        moto_server(["-H", "127.0.0.1", "-p", str(port)])


def backdate_objects_that_say_so():
    """An S3 object put with the metadata test-age-seconds: N is as old as that, by S3's
    clock (its LastModified N seconds before now), as an object a run left that long
    ago would be: how the tests make a dead run's claim stale without waiting."""
    from datetime import timedelta

    from moto.s3.models import FakeKey

    keep = FakeKey.set_metadata

    def set_metadata(key, metadata, replace=False):
        keep(key, metadata, replace)
        age = next((value for name, value in key.metadata.items()
                    if name.lower().endswith("test-age-seconds")), None)
        if age:
            key.last_modified -= timedelta(seconds=float(age))

    FakeKey.set_metadata = set_metadata


def update_configuration_set_event_destination(response):
    """SES's UpdateConfigurationSetEventDestination, which moto lacks, as SES documents
    it: the destination of that name in the set is replaced; an unknown set or name is
    SES's error (--setup-events turns tracking on and off with it)."""
    from moto.core.responses import EmptyResult
    from moto.ses.exceptions import ConfigurationSetDoesNotExist, SesError

    class EventDestinationDoesNotExist(SesError):
        code = "EventDestinationDoesNotExist"  # SES's code; moto has no class of it

    name = response._get_param("ConfigurationSetName")
    destination = response._get_param("EventDestination", {})
    backend = response.backend
    if name not in backend.config_sets:
        raise ConfigurationSetDoesNotExist(f"Configuration set <{name}> does not exist.")
    held = backend.config_set_event_destination.get(name) or {}
    if held.get("Name") != destination.get("Name"):
        raise EventDestinationDoesNotExist(f"No EventDestination found for {name}")
    backend.config_set_event_destination[name] = destination
    return EmptyResult()


def demo():
    """Send all eight reports to a local SES and show what it received."""
    import shutil

    from dotenv import dotenv_values

    os.environ["no_proxy"] = "127.0.0.1,localhost"  # boto3 here, too, goes straight there
    sender = dotenv_values(EXAMPLE_ENV)["AWS_SES_FROM_ADDRESS"]
    workdir = REPO / ".demo"
    workdir.mkdir(exist_ok=True)
    env_file = workdir / "repos.env"  # a private copy, as the README says to make
    shutil.copyfile(EXAMPLE_ENV, env_file)
    env_file.chmod(0o600)
    shutil.rmtree(workdir / "report_data", ignore_errors=True)  # a demo run again: afresh
    shutil.copytree(EXAMPLE_DATA, workdir / "report_data")  # the owner's sheets, beside it
    audit_log = workdir / "exec_reports_audit.jsonl"
    audit_log.unlink(missing_ok=True)  # a fresh log: the demo always sends all eight
    with LocalSES() as ses, tempfile.TemporaryDirectory() as home:
        print(f"local SES (moto) listening on {ses.url}; verifying {sender} there", flush=True)
        ses.verify(sender)
        command = [sys.executable, str(SCRIPT), "--env-file", str(env_file),
                   "--audit-log", str(audit_log)]
        print(f"$ AWS_ENDPOINT_URL_SES={ses.url} AWS_ENDPOINT_URL_SESV2={ses.v2_url} "
              "python3 send_exec_reports.py --env-file .demo/repos.env "
              "--audit-log .demo/exec_reports_audit.jsonl", flush=True)
        result = subprocess.run(command, env=script_environment(ses.url, home, ses.v2_url))
        print(f"\nthe local SES server holds {len(ses.messages())} messages:")
        for message in ses.messages():
            print(f"  {message['id']}  {message['subject']}")
    print(f"\naudit log: {audit_log}")
    return result.returncode


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(demo())
