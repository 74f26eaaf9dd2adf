"""A real HTTP proxy on loopback in front of the tests' S3 (moto's), that answers
chosen requests the way S3 and a broken network do: an error status in S3's XML, a
body cut short, a connection reset mid-body; and, for a caller whose role may not
list the whole bucket, S3's 403 where the key is missing (S3 says 404 only to
those who may list)."""

import http.client
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from fault_proxy import SHUTDOWN_POLL_SECONDS

# status -> S3's error code for it
S3_ERRORS = {403: "AccessDenied", 500: "InternalError", 503: "SlowDown"}
CUT_AFTER = b"as_of,"  # what a cut-short body carries before the connection drops


class S3FaultProxy:
    """Passes every request to upstream but those a planned fault matches."""

    def __init__(self, upstream):
        self.upstream = urlsplit(upstream)
        self.faults = []  # [matches(method, path, headers), fault, times left]
        self.without_list = False  # a role that may not list: 403 for a missing key
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, matches, fault, times=1_000_000):
        """Answer requests that matches(method, path, headers) picks with fault: a status
        (403, 500, 503), "cut" (a body cut short) or "reset" (reset mid-body)."""
        self.faults.append([matches, fault, times])

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,),
                         daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()

    def _planned(self, method, path, headers):
        for planned in self.faults:
            matches, fault, left = planned
            if left and matches(method, path, headers):
                planned[2] -= 1
                return fault
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._planned(self.command, self.path, self.headers)
                if fault is not None:
                    return self._fault(fault)
                status, headers, data = self._forward(body)
                if proxy.without_list and status == 404 and "list-type" not in self.path:
                    return self._fault(403)
                self.send_response_only(status)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection",
                                            "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _forward(self, body):
                upstream = http.client.HTTPConnection(proxy.upstream.hostname,
                                                      proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream.netloc
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                try:
                    return answer.status, answer.getheaders(), answer.read()
                finally:
                    upstream.close()

            def _fault(self, fault):
                if fault in ("cut", "reset"):
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(CUT_AFTER)
                    self.wfile.flush()
                    if fault == "reset":  # RST, not FIN: the reader's socket errors
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                data = (f"<?xml version='1.0'?><Error><Code>{S3_ERRORS[fault]}</Code>"
                        "<Message>as S3 says it</Message></Error>").encode()
                self.send_response(fault)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def log_message(self, *args):
                pass

        return Handler
