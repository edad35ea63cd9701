"""`movierec serve` as users run it: the real server in a subprocess on a free loopback port, every endpoint and
every kind of bad input, answers equal to the CLI's, a checkpoint replaced under a running server, and stops."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from conftest import REPO, assert_one_line_error, isolated_home
from servers import Server

from movierec import paths
from movierec.cli import app

pytest.importorskip("fastapi", reason='movierec serve needs its extra: pip install "movierec[serve]"')
pytest.importorskip("uvicorn", reason='movierec serve needs its extra: pip install "movierec[serve]"')

TINY = {"als": ["als", "--epochs", "2", "--factors", "8"], "mf": ["mf", "--epochs", "2", "--factors", "8"]}
NEW_USER = [{"movie": "Toy Story (1995)", "stars": 5}, {"movie": "star wars", "stars": 4},
            {"movie": 174, "stars": 1}, {"movie": "Godfather, The", "stars": 3.5}]  # 174 = Raiders of the Lost Ark
NEW_USER_CLI = ["--rate", "Toy Story (1995)=5", "--rate", "star wars=4", "--rate", "174=1",
                "--rate", "Godfather, The=3.5"]


@pytest.fixture(scope="module")
def home(trained_home) -> Iterator[Path]:
    trains = [["train", *args, "--device", "cpu", "--name", name, "--json"] for name, args in TINY.items()]
    with isolated_home(trained_home(*trains)) as h:
        yield h


@pytest.fixture(scope="module")
def server(home) -> Iterator[Server]:
    s = Server("--model", "als")
    yield s
    s.kill()


def cli_json(runner, *args: str) -> object:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# -- answers ------------------------------------------------------------------------------------------------
def test_health_names_the_model_and_its_scale(server):
    assert server.first_line.startswith(f"Serving als at http://127.0.0.1:{server.port}/;")
    health = server.get("/health")
    assert health["status"] == "ok" and health["model"] == "als" and health["dataset"] == "ml-100k"
    # Its lists are ordered by, and show, the chance of picking and liking; the stars are beside them.
    assert health["stars"] == [1, 2, 3, 4, 5] and health["score"] == "match"


def test_models_lists_the_saved_models_and_which_is_served(server):
    listed = server.get("/models")
    assert listed["served"] == "als"
    by_name = {m["name"]: m for m in listed["models"]}
    assert set(by_name) >= {"als", "mf"}
    assert by_name["als"]["served"] and not by_name["mf"]["served"]
    assert by_name["mf"]["model"] == "mf" and by_name["als"]["dataset"] == "ml-100k"
    assert set(by_name["als"]["metrics"]) >= {"rmse", "mae"}
    assert all("path" not in m for m in listed["models"])  # nothing about the server's files


@pytest.mark.parametrize(("query", "cli"), [
    ("user=42", ["--user", "42"]),
    ("user=42&n=25&genre=comedy&genre=Drama&min_year=1990&max_year=1996",
     ["--user", "42", "--top", "25", "--genre", "comedy", "--genre", "Drama", "--min-year", "1990",
      "--max-year", "1996"]),
    ("user=1&include_seen=true&n=5", ["--user", "1", "--include-seen", "--top", "5"]),
])
def test_a_known_user_gets_the_cli_list(server, runner, query, cli):
    rows = server.get(f"/recommend?{query}")
    assert rows == cli_json(runner, "recommend", "--model", "als", *cli)
    assert rows and all(r["title"] and r["because_you_liked"] for r in rows)


@pytest.mark.parametrize(("query", "cli"), [("", []), ("?n=20&shrink=0&genre=action", ["--top", "20", "--shrink", "0",
                                                                                     "--genre", "action"])])
def test_a_new_user_gets_the_cli_list(server, runner, query, cli):
    status, _, rows = server.call("POST", f"/recommend{query}", NEW_USER)
    assert status == 200, rows
    assert rows == cli_json(runner, "recommend", "--model", "als", *NEW_USER_CLI, *cli)
    rated = {"Toy Story (1995)", "Star Wars (1977)", "Raiders of the Lost Ark (1981)", "Godfather, The (1972)"}
    assert not rated & {r["title"] for r in rows}
    assert {r["because_you_liked"] for r in rows} <= rated | {None}


def test_similar_movies_are_the_cli_list(server, runner):
    answer = server.get(f"/similar?movie={quote('star wars')}&n=15&min_ratings=50")
    assert answer == cli_json(runner, "similar", "star wars", "--model", "als", "--top", "15", "--min-ratings", "50")
    assert answer["title"] == "Star Wars (1977)" and len(answer["similar"]) == 15
    assert server.get("/similar?movie=50") == cli_json(runner, "similar", "50", "--model", "als")


def test_answers_are_the_python_apis(server):
    from movierec import api

    model = api.load("als")

    def same(rows, frame):
        assert [r["movie_id"] for r in rows] == frame["movie_id"].tolist()
        assert [r["title"] for r in rows] == frame["title"].tolist()
        assert [r["score"] for r in rows] == frame["score"].tolist()
        if "because_you_liked" in rows[0]:
            assert [r["because_you_liked"] for r in rows] == frame["because_you_liked"].tolist()

    same(server.get("/recommend?user=500&n=20&genre=drama"), model.recommend(500, 20, genres=["drama"]))
    status, _, rows = server.call("POST", "/recommend", NEW_USER)
    assert status == 200
    same(rows, model.recommend_new([(r["movie"], r["stars"]) for r in NEW_USER]))
    same(server.get("/similar?movie=1&n=12")["similar"], model.similar_items(1, 12))
    assert [m["movie_id"] for m in server.get("/movies?q=star")] == model.search("star")["movie_id"].tolist()


def test_title_search_for_autocomplete(server):
    found = server.get(f"/movies?q={quote('star wa')}")
    assert found[0]["title"] == "Star Wars (1977)" and found[0]["movie_id"] == 50 and found[0]["ratings"] > 300
    assert server.get("/movies?q=godfather&n=2")[0]["title"] == "Godfather, The (1972)"
    assert len(server.get("/movies?q=the&n=100")) == 100
    assert server.get("/movies?q=qqqqqq") == []


# -- bad input: a 4xx and one sentence, always --------------------------------------------------------------
LOTS = [{"movie": 1, "stars": 4}] * 1001
HUGE = b'[{"movie": "' + b"x" * 70_000 + b'", "stars": 4}]'
BAD = [
    ("GET", "/recommend?user=99999", None, 404, "User 99999 is not in ml-100k"),
    ("GET", "/recommend?user=abc", None, 422, "'user' should be a valid integer"),
    ("GET", "/recommend", None, 422, "The query parameter 'user' is required."),
    ("GET", "/recommend?user=42&n=101", None, 422, "'n' should be less than or equal to 100"),
    ("GET", "/recommend?user=42&n=0", None, 422, "'n' should be greater than or equal to 1"),
    ("GET", "/recommend?user=42&genre=zombie", None, 400, "Unknown genre 'zombie'"),
    ("GET", "/recommend?user=42&min_year=2100", None, 400, "No movie passes"),
    ("GET", "/recommend?user=99999999999999999999999", None, 422, "'user' should be less than or equal to"),
    ("POST", "/recommend", [{"movie": "No Such Film Ever", "stars": 4}], 404, "No movie matches 'No Such Film Ever'"),
    ("POST", "/recommend", [{"movie": 99999, "stars": 4}], 404, "Movie 99999 is not in ml-100k"),
    ("POST", "/recommend", [{"movie": "Star", "stars": 4}], 400, "'Star' matches several movies"),
    ("POST", "/recommend", [{"movie": "Star Wars", "stars": 6}], 400, "Rating 6 for 'Star Wars' is not a number of "
                                                                       "stars from 1 to 5."),
    ("POST", "/recommend", [{"movie": "Star Wars", "stars": 0.5}], 400, "from 1 to 5"),
    ("POST", "/recommend", [{"movie": "Star Wars", "stars": "five"}], 422, "Rating 1: 'stars' must be a number."),
    ("POST", "/recommend", [{"movie": 1, "stars": True}], 422, "Rating 1: 'stars' must be a number."),
    ("POST", "/recommend", b'[{"movie": 1, "stars": NaN}]', 422, "Rating 1: 'stars' must be a number."),
    ("POST", "/recommend", [{"movie": 1, "stars": 4}, {"movie": None, "stars": 4}], 422,
     "Rating 2: 'movie' must be a title or a MovieLens id"),
    ("POST", "/recommend", [{"movie": 1}], 422, "Rating 1 has no 'stars'."),
    ("POST", "/recommend", [5], 422, "Rating 1 must be an object"),
    ("POST", "/recommend", [], 400, "No ratings were given"),  # well formed: a person may describe themselves
    ("POST", "/recommend", {"movie": 1, "stars": 4}, 422, "must be a JSON list of ratings"),
    ("POST", "/recommend", b'[{"movie": "Toy Story", "stars": 5', 422, "The request body is not valid JSON."),
    ("POST", "/recommend", b"", 422, "must be a JSON list of ratings"),
    ("POST", "/recommend", LOTS, 422, "At most 1000 ratings are accepted in one request."),
    ("POST", "/recommend", HUGE, 413, "The request body is over the limit of 64 KB."),
    ("POST", "/recommend?n=500", NEW_USER, 422, "'n' should be less than or equal to 100"),
    ("POST", "/recommend?shrink=-1", NEW_USER, 422, "'shrink' should be greater than or equal to 0"),
    ("GET", "/similar?movie=qwertyuiop", None, 404, "No movie matches 'qwertyuiop'"),
    ("GET", "/similar?movie=star", None, 400, "'star' matches several movies"),
    ("GET", "/similar", None, 422, "The query parameter 'movie' is required."),
    ("GET", "/similar?movie=50&min_ratings=-1", None, 422, "'min_ratings' should be greater than or equal to 0"),
    ("GET", "/movies", None, 422, "The query parameter 'q' is required."),
    ("GET", "/movies?q=" + "a" * 301, None, 422, "'q' is not valid: string should have at most 300 characters"),
    ("GET", "/no/such/page", None, 404, "There is no '/no/such/page' here"),
    ("DELETE", "/recommend", None, 405, "DELETE is not allowed on /recommend; use GET, POST."),
    ("POST", "/health", None, 405, "POST is not allowed on /health; use GET."),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), BAD,
                         ids=[f"{m} {p[:40]} {s}" for m, p, _, s, _ in BAD])
def test_bad_input_is_a_4xx_with_one_sentence(server, method, path, body, status, says):
    raw = body if isinstance(body, bytes) else None
    got, headers, answer = server.call(method, path, None if raw is not None else body, raw=raw)
    assert got == status, answer
    assert headers["content-type"] == "application/json"
    assert isinstance(answer, dict) and list(answer) == ["error"], answer
    sentence = answer["error"]
    assert says in sentence, sentence
    assert sentence.endswith(".") and "\n" not in sentence and "Traceback" not in sentence
    assert server.proc.poll() is None  # and the server goes on


def test_a_body_without_content_length_is_bounded_too(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.putrequest("POST", "/recommend")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for _ in range(100):  # 100 KB in 1 KB chunks
            conn.send(b"400\r\n" + b" " * 1024 + b"\r\n")
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read()) == {"error": "The request body is over the limit of 64 KB."}
    finally:
        conn.close()


# -- the page -------------------------------------------------------------------------------------------------
def test_the_page_and_its_files_are_served_with_a_strict_policy(server):
    status, headers, page = server.call("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert b'<script src="app.js"' in page and b'href="style.css"' in page
    script = server.call("GET", "/app.js")
    style = server.call("GET", "/style.css")
    assert script[0] == style[0] == 200 and script[1]["content-type"].startswith("text/javascript")
    for text in (page, script[2], style[2]):
        assert b"http://" not in text and b"https://" not in text and b"//cdn" not in text  # works offline
    # Titles and every other text from the server go in as text: no HTML-parsing sinks in the script.
    for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write", b"eval("):
        assert sink not in script[2]


def test_the_api_is_described_at_docs(server):
    spec = server.get("/openapi.json")
    assert {"/recommend", "/similar", "/movies", "/models", "/health", "/reload"} <= set(spec["paths"])
    assert set(spec["paths"]["/recommend"]) == {"get", "post"}
    status, _, page = server.call("GET", "/docs")
    assert status == 200 and b"openapi.json" in page


# -- a checkpoint replaced or deleted while serving -----------------------------------------------------------
def test_a_replaced_checkpoint_keeps_serving_until_reloaded(home, runner):
    models = paths.models_dir()
    shutil.copy(models / "als.pt", models / "live.pt")
    s = Server("--model", "live")
    try:
        before = s.get("/recommend?user=42")
        similar = s.get("/similar?movie=1")
        # A save replaces a checkpoint by renaming a new file over it: here the mf model takes the name.
        shutil.copy(models / "mf.pt", models / ".live.tmp")
        os.replace(models / ".live.tmp", models / "live.pt")
        assert s.get("/recommend?user=42") == before and s.get("/similar?movie=1") == similar
        assert s.get("/recommend?user=500") == cli_json(runner, "recommend", "--model", "als", "--user", "500")
        (models / "live.pt").unlink()
        assert s.get("/recommend?user=42") == before
        status, _, answer = s.call("POST", "/reload")  # nothing to reload: the old model stays
        assert status == 409 and answer["error"].startswith("No saved model named 'live'.")
        assert answer["error"].endswith("Still serving als.")
        assert s.get("/recommend?user=42") == before
        shutil.copy(models / "mf.pt", models / "live.pt")
        status, _, health = s.call("POST", "/reload")
        assert status == 200 and health["model"] == "mf"
        assert s.get("/recommend?user=42") == cli_json(runner, "recommend", "--model", "mf", "--user", "42")
    finally:
        s.kill()
        (models / "live.pt").unlink(missing_ok=True)


def test_reloading_is_for_the_servers_own_machine():
    from movierec.server import _loopback

    def asked_from(host):
        return _loopback(SimpleNamespace(client=SimpleNamespace(host=host) if host else None))

    assert asked_from("127.0.0.1") and asked_from("::1") and asked_from("127.0.0.5")
    assert not asked_from("192.0.2.7") and not asked_from("2001:db8::1") and not asked_from(None)
    assert not asked_from("testclient")


# -- starting and stopping ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_stop_the_server_cleanly(home, sig):
    s = Server("--model", "mf")
    try:
        assert s.get("/health")["model"] == "mf"
        code, out, err = s.stop(sig)
    finally:
        s.kill()
    assert code == 0, err
    assert err.strip() == "Stopped."


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie no one has waited for yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _health_of(s: Server, want: str, seconds: float = 20.0) -> str:
    """The model /health names, asked until it is ``want`` or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        model = s.get("/health")["model"]
        if model == want or time.monotonic() > deadline:
            return model
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker processes through /proc")
def test_workers_answer_alike_reload_together_and_stop_together(home, runner):
    models = paths.models_dir()
    shutil.copy(models / "als.pt", models / "team.pt")
    s = Server("--model", "team", "--workers", "2")
    try:
        assert " by 2 worker processes;" in s.first_line
        [child] = _children(s.proc.pid)
        expected = cli_json(runner, "recommend", "--model", "als", "--user", "42")
        # A stopped process takes no connections: each worker in turn answers alone, as the CLI does.
        for alone, paused in ((s.proc.pid, child), (child, s.proc.pid)):
            os.kill(paused, signal.SIGSTOP)
            try:
                assert s.get("/recommend?user=42") == expected, alone
            finally:
                os.kill(paused, signal.SIGCONT)
        # Retrained under its name: the worker asked reloads, and the other follows at its next request.
        shutil.copy(models / "mf.pt", models / ".team.tmp")
        os.replace(models / ".team.tmp", models / "team.pt")
        os.kill(s.proc.pid, signal.SIGSTOP)
        try:
            status, _, health = s.call("POST", "/reload")  # the child answers
            assert status == 200 and health["model"] == "mf"
        finally:
            os.kill(s.proc.pid, signal.SIGCONT)
        os.kill(child, signal.SIGSTOP)
        try:
            assert _health_of(s, "mf") == "mf"  # the first process, which was not asked
            assert s.get("/recommend?user=42") == cli_json(runner, "recommend", "--model", "mf", "--user", "42")
        finally:
            os.kill(child, signal.SIGCONT)
        code, _, err = s.stop(signal.SIGTERM)
        assert code == 0 and err.strip() == "Stopped."
        assert _gone(child)
    finally:
        s.kill()
        (models / "team.pt").unlink(missing_ok=True)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker processes through /proc")
def test_workers_stop_when_the_server_is_killed(home):
    s = Server("--model", "mf", "--workers", "2")
    try:
        [child] = _children(s.proc.pid)
        s.kill()  # SIGKILL: no chance to stop its workers
        deadline = time.monotonic() + 15
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((s.host, s.port), timeout=5).close()
    finally:
        s.kill()


def test_impossible_workers_are_one_sentence(home, runner, monkeypatch):
    result = runner.invoke(app, ["serve", "--model", "als", "--workers", "2", "--device", "cuda", "--port", "0"])
    assert_one_line_error(result, "--workers above 1 answers on the CPU; serve on a GPU with one worker.")
    monkeypatch.delattr(os, "fork")
    result = runner.invoke(app, ["serve", "--model", "als", "--workers", "2", "--port", "0"])
    assert_one_line_error(result, "--workers above 1 needs a system that can fork processes (Linux, macOS); "
                                  "serve with one worker here.")
    result = runner.invoke(app, ["serve", "--model", "als", "--workers", "0", "--port", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_a_port_in_use_is_one_sentence(home, runner):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--model", "als", "--port", str(port)])
    assert_one_line_error(result, f"Port {port} on 127.0.0.1 is in use; stop what uses it or choose another with "
                                  "--port.")


def test_an_address_not_of_this_machine_is_one_sentence(home, runner):
    result = runner.invoke(app, ["serve", "--host", "192.0.2.1", "--port", "0"])  # TEST-NET-1: nobody's
    assert_one_line_error(result, "Cannot listen on 192.0.2.1: it is not an address of this machine.")


def test_no_model_is_one_sentence(home, runner):
    result = runner.invoke(app, ["serve", "--model", "nothing-by-this-name", "--port", "0"])
    assert_one_line_error(result, "No saved model named 'nothing-by-this-name'.")


def test_without_the_extra_serve_says_how_to_install_it(home, runner, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    result = runner.invoke(app, ["serve"])
    line = assert_one_line_error(result)
    assert line == 'Error: movierec serve needs fastapi and uvicorn; install them with pip install "movierec[serve]".'


def test_serve_help_imports_no_web_framework():
    code = textwrap.dedent("""
        import sys
        from movierec.cli import app
        code = app(["serve", "--help"], standalone_mode=False, prog_name="movierec")
        heavy = sorted({"fastapi", "uvicorn", "starlette", "torch", "pandas"} & set(sys.modules))
        assert code == 0 and not heavy, heavy
        print("LIGHT")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    assert "LIGHT" in proc.stdout and "--port" in proc.stdout and "127.0.0.1" in proc.stdout
