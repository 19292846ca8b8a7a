"""A small HTTP/1.1 server for the benchmark: answers 200 {"ok": true} to every GET.

GET /__arrivals returns (and forgets) the arrival times seen so far, so that the
benchmark measures the rate at the server, as a partner would.
Usage: python3 bench_server.py PORT_FILE   (writes the chosen port to PORT_FILE)
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_arrivals = []
_lock = threading.Lock()
_BODY = b'{"ok": true}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK hold the body back about 40 ms on Linux.
    disable_nagle_algorithm = True

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/__arrivals":
            with _lock:
                body = json.dumps(_arrivals).encode()
                _arrivals.clear()
        else:
            with _lock:
                _arrivals.append(time.time())
            body = _BODY
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002
        return


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(sys.argv[1], "w") as fh:
        fh.write(str(server.server_address[1]))
    server.serve_forever()
