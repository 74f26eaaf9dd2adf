"""A real HTTP proxy on loopback, between the script and the local SES, that
answers some requests the way SES does when things go wrong."""

import base64
import contextlib
import email
import email.policy
import json
import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape as xml_escape

HANG_SECONDS = 60
# How often a server's loop looks for shutdown(), which waits for it: the default
# half second, at the end of every test that stops a server, was most of the test.
SHUTDOWN_POLL_SECONDS = 0.002
# Loopback is reached directly, whatever proxy the environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# fault name -> (HTTP status, SES error code, SES message), in SES's own words.
SES_ERRORS = {
    "throttle": (400, "Throttling", "Maximum sending rate exceeded."),
    "quota": (400, "Throttling", "Daily message quota exceeded."),
    "503": (503, "ServiceUnavailable", "Service is unavailable. Please try again later."),
    "reject": (400, "MessageRejected", "Illegal address"),
    "paused": (400, "AccountSendingPausedException",
               "Sending is paused for this account."),
    "denied": (403, "AccessDenied", "User is not authorized to perform this action"),
}
# The same faults as the v2 API words them (JSON, its own error names).
SES_V2_ERRORS = {
    "throttle": (429, "TooManyRequestsException", "Maximum sending rate exceeded."),
    "quota": (429, "TooManyRequestsException", "Daily message quota exceeded."),
    "reject": (400, "MessageRejected", "Illegal address"),
    "paused": (400, "SendingPausedException", "Sending is paused for this account."),
    "503": (503, "ServiceUnavailable", "Service is unavailable. Please try again later."),
    "denied": (403, "AccessDeniedException",
               "User is not authorized to perform: ses:{action} on resource: *"),
}

# Every question the script's preflight may ask, v2's first.
PREFLIGHT_V2_ACTIONS = ("GetAccount", "GetEmailIdentity", "GetSuppressedDestination")
PREFLIGHT_ACTIONS = (*PREFLIGHT_V2_ACTIONS, "GetSendQuota", "GetIdentityVerificationAttributes")

# The v2 API's requests, named as its actions: (method, path pattern, action).
SES_V2_ACTIONS = [
    ("GET", re.compile(r"/v2/email/account$"), "GetAccount"),
    ("GET", re.compile(r"/v2/email/suppression/addresses/([^/?]+)$"),
     "GetSuppressedDestination"),
    ("GET", re.compile(r"/v2/email/identities/([^/?]+)$"), "GetEmailIdentity"),
    ("POST", re.compile(r"/v2/email/outbound-emails$"), "SendEmail"),
]

# SES's answer to GetSendQuota, for an account whose quota a test chooses.
QUOTA_XML = """<GetSendQuotaResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/">
  <GetSendQuotaResult>
    <Max24HourSend>{max_24_hour_send}</Max24HourSend>
    <SentLast24Hours>{sent_last_24_hours}</SentLast24Hours>
    <MaxSendRate>{max_send_rate}</MaxSendRate>
  </GetSendQuotaResult>
  <ResponseMetadata><RequestId>fault-proxy</RequestId></ResponseMetadata>
</GetSendQuotaResponse>"""

ERROR_XML = """<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>fault-proxy</RequestId>
</ErrorResponse>"""


def mail_parts(message):
    """A parsed MIME message's text parts as a mail client reads them: {subtype: (text,
    its lines ended as Python's are, though the message has SMTP's CRLF; charset)}."""
    return {part.get_content_subtype(): (
        part.get_payload(decode=True).decode(part.get_content_charset() or "ascii")
        .replace("\r\n", "\n"), part.get_content_charset())
        for part in message.walk() if part.get_content_maintype() == "text"}


def read_send(request):
    """A v2 SendEmail request, and its raw message as a mail client reads it: "text" and
    "html" (the two editions: mail_parts), "charsets" (of each part), "tags" ({name:
    value})."""
    raw = ((request.get("Content") or {}).get("Raw") or {}).get("Data")
    if raw:
        message = email.message_from_bytes(base64.b64decode(raw), policy=email.policy.default)
        parts = mail_parts(message)
        request = {**request, "message": message,
                   "charsets": {kind: charset for kind, (_, charset) in parts.items()},
                   **{name: parts[kind][0] for name, kind in
                      (("text", "plain"), ("html", "html")) if kind in parts}}
    request["tags"] = {tag.get("Name"): tag.get("Value") for tag in request.get("EmailTags") or ()}
    return request


def serve_in_background(server):
    """Serve from a daemon thread, so that shutdown() returns in milliseconds."""
    threading.Thread(target=server.serve_forever,
                     kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS}, daemon=True).start()


class FaultProxy:
    """Forwards to `upstream`, except where a planned fault answers instead.

    The v2 API's SendEmail (the reports) and v1's (the failure notice) are both
    "SendEmail"; v1's SendRawEmail (the reports, where v2 is missing) is its own.
    plan("SendEmail", "throttle", "pass", then="quota") answers the first
    SendEmail with Throttling, forwards the second, and answers every later one
    with the daily-quota error; a fault may also be (HTTP status, code, message)
    of a test's own, or for a v2 action {"status": ..., "body": ...}, an answer
    of the test's own in JSON. `delay` slows every forwarded request of an action.
    `account_quota(...)` makes GetSendQuota answer with an account's quota of the
    test's choosing, as SES documents the answer.

    moto's server lacks two calls of the SES v2 API, and the proxy answers them
    as SES documents them: GetAccount (production access, sending status,
    enforcement status and quota; `account_status(...)` sets them) and
    GetSuppressedDestination (404 NotFoundException unless `suppress(address)`
    put the address on the account's suppression list).  Every other v2 call
    (GetEmailIdentity) goes on to moto.  Faults are planned for v2 actions by
    name as for v1 ones, and answered in v2's JSON.
    """

    def __init__(self, upstream, port=0):
        self.upstream = upstream
        self.seen = []
        self.requests = []  # (action, {parameter: value}) as the script sent them
        self._faults = {}
        self._then = {}
        self.delay = {}
        self.send_quota = None  # GetSendQuota's answer, when a test sets one
        self.latency = 0.0  # seconds added to every request, answered or forwarded
        self.account = {"production": True, "sending": True, "enforcement": "HEALTHY"}
        self.suppressed = {}  # address -> GetSuppressedDestination's SuppressedDestination
        self.identities = {}  # identity -> what GetEmailIdentity says beyond moto's answer
        self.in_flight = 0  # v2 requests being answered right now
        self.most_in_flight = 0  # the most at any moment: were they asked at once?
        self.rate_limit = None  # recipients a second, enforced as SES does: see limit_rate
        self.throttled = 0
        self._bucket = (0.0, 0.0)  # (recipients available, when last counted)
        self._lock = threading.Lock()
        self._closing = threading.Event()  # ends hangs and delays when the test is over
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        # Closing waits for every request still being handled, so that nothing a
        # test started (a killed run's send, say) reaches the server in the next test.
        self._server.daemon_threads = False
        self._server.block_on_close = True
        # select() can call the listening socket ready when no connection is left to
        # take (one reset before it was accepted): a blocking accept() would then
        # wait for ever, and so would the shutdown at the end of the test.
        self._server.socket.settimeout(0.5)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def plan(self, action, *faults, then="pass"):
        with self._lock:
            self._faults[action] = list(faults)
            self._then[action] = then

    def clear(self):
        with self._lock:
            self._faults.clear()
            self._then.clear()
            self.delay.clear()

    def account_quota(self, max_24_hour_send=50000, sent_last_24_hours=0, max_send_rate=1000):
        """Answer GetSendQuota with this quota instead of the server's."""
        self.send_quota = {"max_24_hour_send": float(max_24_hour_send),
                           "sent_last_24_hours": float(sent_last_24_hours),
                           "max_send_rate": float(max_send_rate)}

    def account_status(self, production=True, sending=True, enforcement="HEALTHY"):
        """What GetAccount says of the account, beside its quota."""
        self.account = {"production": production, "sending": sending,
                        "enforcement": enforcement}

    def suppress(self, address, reason="BOUNCE", when=1764400000.0):
        """Put an address on the account-level suppression list, as one bounce does."""
        self.suppressed[address] = {
            "EmailAddress": address, "Reason": reason, "LastUpdateTime": when,
            "Attributes": {"MessageId": "0100018f-bounced", "FeedbackId": "0100018f-fb"}}

    def identity_status(self, identity, dkim=None, mail_from=None, verified=None):
        """Overlay moto's GetEmailIdentity answer: a DKIM status (PENDING, FAILED, ...),
        a custom MAIL FROM (domain, status), or whether the identity is verified."""
        overlay = self.identities.setdefault(identity, {})
        if dkim:
            overlay["DkimAttributes"] = {"SigningEnabled": True, "Status": dkim,
                                         "SigningAttributesOrigin": "AWS_SES"}
        if mail_from:
            overlay["MailFromAttributes"] = {"MailFromDomain": mail_from[0],
                                             "MailFromDomainStatus": mail_from[1],
                                             "BehaviorOnMxFailure": "USE_DEFAULT_VALUE"}
        if verified is not None:
            overlay["VerifiedForSendingStatus"] = verified
            overlay["VerificationStatus"] = "SUCCESS" if verified else "PENDING"

    def reset(self):
        """Back to a healthy account with nothing planned, as a new test expects."""
        self.clear()
        self.send_quota = None
        self.latency = 0.0
        self.account_status()
        self.suppressed.clear()
        self.identities.clear()
        self.rate_limit = None
        self.throttled = 0
        self.seen.clear()
        self.requests.clear()
        self.most_in_flight = 0

    def get_account(self):
        """GetAccount's answer: the test's quota, else the one the server holds."""
        quota = self.send_quota or self._server_quota()
        return {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": self.account["enforcement"],
            "ProductionAccessEnabled": self.account["production"],
            "SendQuota": {"Max24HourSend": quota["max_24_hour_send"],
                          "MaxSendRate": quota["max_send_rate"],
                          "SentLast24Hours": quota["sent_last_24_hours"]},
            "SendingEnabled": self.account["sending"],
            "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
        }

    def _server_quota(self):
        """The quota moto holds, asked of it through the v1 API (it has no GetAccount)."""
        # moto tells the service by the signature's scope; it checks nothing else.
        scope = "AWS4-HMAC-SHA256 Credential=local/20261130/us-east-1/ses/aws4_request, " \
                "SignedHeaders=host, Signature=0"
        request = urllib.request.Request(self.upstream + "/", data=b"Action=GetSendQuota",
                                         headers={"Authorization": scope}, method="POST")
        with DIRECT.open(request, timeout=30) as answer:
            xml = answer.read().decode()
        names = {"max_24_hour_send": "Max24HourSend", "max_send_rate": "MaxSendRate",
                 "sent_last_24_hours": "SentLast24Hours"}
        return {key: float(re.search(f"<{tag}>([^<]+)</{tag}>", xml).group(1))
                for key, tag in names.items()}

    def limit_rate(self, recipients_per_second, burst=None):
        """Answer SendEmail with Throttling whenever the account's rate is exceeded.

        A token bucket of `burst` recipients (one second's worth unless given),
        refilled at the rate: like SES, it tolerates a short burst and counts
        every To and BCC.
        """
        self.rate_limit = recipients_per_second
        self.burst = burst or recipients_per_second
        self._bucket = (self.burst, time.monotonic())

    def _over_rate(self, action, parameters):
        """Whether this send is over the rate: v1's SendEmail and SendRawEmail name their
        recipients as form fields, v2's SendEmail in its JSON Destination."""
        if self.rate_limit is None or action not in ("SendEmail", "SendRawEmail"):
            return False
        destination = parameters.get("Destination")
        if isinstance(destination, dict):
            recipients = sum(len(destination.get(kind, ())) for kind in
                             ("ToAddresses", "CcAddresses", "BccAddresses"))
        else:
            recipients = sum(1 for name in parameters
                             if name.startswith(("Destination.", "Destinations.")))
        with self._lock:
            tokens, then = self._bucket
            now = time.monotonic()
            tokens = min(self.burst, tokens + (now - then) * self.rate_limit)
            over = tokens < recipients
            self._bucket = (tokens if over else tokens - recipients, now)
            self.throttled += over
        return over

    def count(self, action):
        return self.seen.count(action)

    def sent(self, action="SendEmail"):
        """The parameters of each request of an action, in order."""
        return [parameters for name, parameters in self.requests if name == action]

    def _next_fault(self, action):
        with self._lock:
            self.seen.append(action)
            planned = self._faults.get(action, [])
            return planned.pop(0) if planned else self._then.get(action, "pass")

    def __enter__(self):
        serve_in_background(self._server)
        return self

    def __exit__(self, *exc_info):
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._v2("GET", b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.startswith("/v2/"):
                    self._v2("POST", body)
                    return
                if proxy._closing.wait(proxy.latency):
                    self.close_connection = True
                    return
                parameters = {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}
                action = parameters.get("Action", "?")
                proxy.requests.append((action, parameters))
                fault = proxy._next_fault(action)
                if fault == "pass" and proxy._over_rate(action, parameters):
                    fault = "throttle"
                fault = SES_ERRORS.get(fault, fault) if isinstance(fault, str) else fault
                if isinstance(fault, tuple):
                    status, code, message = fault
                    self._answer(status, "text/xml", ERROR_XML.format(
                        code=code, message=xml_escape(message)).encode())
                elif self._no_answer_or_garbage(fault, 501, b"<h1>Not Implemented</h1>"):
                    pass
                elif action == "GetSendQuota" and proxy.send_quota:
                    self._answer(200, "text/xml", QUOTA_XML.format(**proxy.send_quota).encode())
                else:
                    if proxy._closing.wait(proxy.delay.get(action, 0)):
                        self.close_connection = True  # the test is over: forward nothing
                    else:
                        self._forward(body)

            def _v2(self, method, body):
                """A request of the SES v2 API (REST and JSON), counted while in flight."""
                with proxy._lock:
                    proxy.in_flight += 1
                    proxy.most_in_flight = max(proxy.most_in_flight, proxy.in_flight)
                try:
                    self._answer_v2(method, body)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def _answer_v2(self, method, body):
                if proxy._closing.wait(proxy.latency):
                    self.close_connection = True
                    return
                path = self.path.split("?")[0]
                action, subject = f"{method} {path}", None
                for verb, pattern, name in SES_V2_ACTIONS:
                    match = pattern.match(path)
                    if verb == method and match:
                        action, subject = name, unquote(match.group(1)) if match.groups() \
                            else None
                        break
                parameters = {"subject": subject}
                if action == "SendEmail":  # its JSON, as v1's form fields are kept
                    with contextlib.suppress(ValueError):
                        parameters.update(read_send(json.loads(body)))
                proxy.requests.append((action, parameters))
                fault = proxy._next_fault(action)
                if fault == "pass" and proxy._over_rate(action, parameters):
                    fault = "throttle"
                if isinstance(fault, str) and fault in SES_V2_ERRORS:
                    fault = SES_V2_ERRORS[fault]
                if isinstance(fault, dict):  # an answer of the test's own: {"status", "body"}
                    self._answer(fault.get("status", 200), "application/json",
                                 json.dumps(fault["body"]).encode())
                elif isinstance(fault, tuple):
                    status, code, message = fault
                    self._v2_error(status, code, message.format(action=action))
                elif self._no_answer_or_garbage(fault, 404, b"<h1>404 Not Found</h1>"):
                    pass  # "unimplemented": a server without the v2 API
                elif action == "GetAccount":
                    self._answer(200, "application/json", json.dumps(proxy.get_account()).encode())
                elif action == "GetSuppressedDestination":
                    listed = proxy.suppressed.get(subject)
                    if listed:
                        self._answer(200, "application/json",
                                     json.dumps({"SuppressedDestination": listed}).encode())
                    else:
                        self._v2_error(404, "NotFoundException",
                                       f"Email address {subject} does not exist on your "
                                       "suppression list.")
                elif proxy._closing.wait(proxy.delay.get(action, 0)):
                    self.close_connection = True  # the test is over: forward nothing
                else:
                    self._forward(body, method, overlay=proxy.identities.get(subject)
                                  if action == "GetEmailIdentity" else None)

            def _no_answer_or_garbage(self, fault, unimplemented_status, unimplemented_page):
                """Answer the faults both APIs meet alike; False for any other fault."""
                if fault in ("drop", "hang"):
                    if fault == "hang":
                        proxy._closing.wait(HANG_SECONDS)
                    self.close_connection = True  # no answer at all
                elif fault == "garbage":
                    self._answer(200, "text/html", b"<html><body>It works!</body></html>")
                elif fault == "unimplemented":
                    self._answer(unimplemented_status, "text/html", unimplemented_page)
                else:
                    return False
                return True

            def _v2_error(self, status, code, message):
                data = json.dumps({"message": message}).encode()
                self.send_response(status)
                self.send_header("Connection", "close")
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, body, method="POST", overlay=None):
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                request = urllib.request.Request(proxy.upstream + self.path,
                                                 data=body if method == "POST" else None,
                                                 headers=headers, method=method)
                try:
                    with DIRECT.open(request, timeout=30) as answer:
                        status, data, kind = answer.status, answer.read(), answer.headers
                except urllib.error.HTTPError as error:
                    status, data, kind = error.code, error.read(), error.headers
                if overlay and status == 200:
                    data = json.dumps({**json.loads(data), **overlay}).encode()
                self._answer(status, kind.get("Content-Type", "text/xml"), data)

            def _answer(self, status, content_type, data):
                self.send_response(status)
                # The proxy closes every connection after one answer: saying so keeps
                # the client from reusing one the proxy is closing, which would fail
                # a request the test never meant to fail.
                self.send_header("Connection", "close")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass  # the tests read `seen`, not an access log

        return Handler
