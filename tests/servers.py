"""`movierec serve` run as users run it: a subprocess on a free loopback port, and a small HTTP client for it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from urllib.parse import urlsplit

from conftest import REPO


class Server:
    """A `movierec serve` subprocess and a small HTTP client for it."""

    def __init__(self, *args: str):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "movierec", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        line = self.proc.stdout.readline()  # "Serving NAME at http://127.0.0.1:PORT/; ..." once it listens
        if not line.startswith("Serving "):
            self.proc.kill()
            raise AssertionError(f"movierec serve did not start: {line}{self.proc.stderr.read()}")
        self.first_line = line
        self.url = line.split(" at ", 1)[1].split(";", 1)[0].split(" ", 1)[0]
        where = urlsplit(self.url)
        self.host, self.port = where.hostname, where.port

    def call(self, method: str, path: str, body: object = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers={**hdrs, **(headers or {})})
            response = conn.getresponse()
            text = response.read()
            kind = response.getheader("Content-Type", "")
            return response.status, dict(response.getheaders()), json.loads(text) if "json" in kind else text
        finally:
            conn.close()

    def get(self, path: str) -> object:
        status, _, answer = self.call("GET", path)
        assert status == 200, answer
        return answer

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
