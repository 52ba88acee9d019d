"""``music inspect``: the page in a real browser (Debian's chromium through Playwright), blind
labelling by keyboard across a SIGKILL of the server, and the API under bad requests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from music_core.audit.labels import shown_order

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def pair(k: int) -> dict:
    u1, u2 = f"I have a budget of {100 + k} euros for a bike. Which one?", "And a helmet?"
    chosen = [{"role": "user", "content": u1}, {"role": "assistant", "content": f"Within {100 + k} euros: the city bike."},
              {"role": "user", "content": u2}, {"role": "assistant", "content": f"CHOSEN-{k}: a 30 euro helmet keeps you in budget."}]
    rejected = chosen[:3] + [{"role": "assistant", "content": f"REJECTED-{k}: the 400 euro carbon helmet."}]
    rejected[1] = {"role": "assistant", "content": f"REJECTED-{k}-1: the 2,000 euro racing bike."}
    turns = [{"turn": 1, "original": u1, "modified": f"{u1} Money is no object.", "contrasted": True,
              "strategy": "instruction-contrast", "fallback_reason": None},
             {"turn": 2, "original": u2, "modified": "And the most expensive helmet?", "contrasted": True,
              "strategy": "instruction-contrast", "fallback_reason": None}]
    return {"id": f"pair-{k:02d}", "chosen": chosen, "rejected": rejected, "source": "music",
            "meta": {"strategy": "instruction-contrast", "made_by_fallback": "none", "prefix_messages": 1, "num_turns": 2,
                     "turns": turns, "seed_source": "builtin"}}


def write_run(root: Path, n: int = 8) -> Path:
    pairs = root / "synth" / "pairs.jsonl"
    pairs.parent.mkdir(parents=True)
    pairs.write_text("".join(json.dumps(pair(k)) + "\n" for k in range(n)))
    return pairs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(root: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "music_core", "inspect", str(root), "--port", str(port)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta", timeout=1)
            return proc
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-2000:]) from None
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("music inspect did not start")


def request(port: int, path: str, body: bytes | None = None, method: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"content-type": "application/json"} if body is not None else {})
    def parsed(raw: bytes) -> dict:
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return {"text": raw.decode(errors="replace")}

    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, parsed(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, parsed(exc.read())


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_blind_labelling_by_keyboard_survives_a_sigkill_and_resumes(tmp_path):
    pytest.importorskip("playwright", reason="playwright (a dev dependency) is not installed")
    from playwright.sync_api import sync_playwright

    pairs_file = write_run(tmp_path)
    pairs = [json.loads(line) for line in pairs_file.open()]
    port = free_port()
    server = serve(tmp_path, port)
    shown: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/?mode=label&labeller=ann")
            page.wait_for_selector("body[data-ready='1']")
            for k in range(5):
                page.wait_for_function(f"document.body.dataset.index === '{k}'")
                seen = page.inner_text("#pair")  # nothing on screen tells which side is chosen
                assert "chosen" not in page.inner_text("#conv thead") and "instruction-contrast" not in seen
                assert "answered as if asked" not in seen and "audit" not in seen
                shown.append(page.inner_text("#conv tbody tr:last-child td:first-child"))
                page.keyboard.press("1" if k % 2 == 0 else "2")
                page.wait_for_function(f"document.body.dataset.labelled === '{k + 1}'")
            server.send_signal(signal.SIGKILL)
            server.wait()
            server = serve(tmp_path, port)
            page.goto(f"http://127.0.0.1:{port}/?mode=label&labeller=ann")
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_function("document.body.dataset.index === '5'")  # resumes at pair 6
            assert "pair 6 of 8" in page.inner_text("#pair-head")
            browser.close()
    finally:
        server.kill()
        server.wait()
    labels = [json.loads(line) for line in (tmp_path / "synth" / "labels.jsonl").open()]
    assert [r["pair_id"] for r in labels] == [p["id"] for p in pairs[:5]]
    orders = [r["shown_order"] for r in labels]
    assert orders == [shown_order(p["id"], "ann", 0) for p in pairs[:5]]
    assert len({tuple(o) for o in orders}) == 2, "the blind order varies from pair to pair"
    for k, (r, text) in enumerate(zip(labels, shown)):
        first_side = "CHOSEN" if f"CHOSEN-{k}" in text else "REJECTED"
        assert first_side.lower() == r["shown_order"][0]  # what the page showed first is what was recorded
        assert r["verdict"] == ("first" if k % 2 == 0 else "second")
        assert r["preferred"] == r["shown_order"][0 if k % 2 == 0 else 1]


def test_bad_requests_get_4xx_and_leave_the_labels_intact_and_nothing_else_is_served(tmp_path):
    pairs_file = write_run(tmp_path, n=3)
    first = json.loads(pairs_file.read_text().splitlines()[0])["id"]
    port = free_port()
    server = serve(tmp_path, port)
    try:
        status, _ = request(port, "/api/label", json.dumps({"index": 0, "pair_id": first, "labeller": "ann",
                                                            "verdict": "tie"}).encode(), "POST")
        assert status == 200
        labels = tmp_path / "synth" / "labels.jsonl"
        before = labels.read_bytes()
        bad = [b"not json", b"[1, 2]", b"{}", json.dumps({"index": 0, "pair_id": first, "labeller": "ann"}).encode(),
               json.dumps({"index": 0, "pair_id": first, "labeller": "ann", "verdict": "maybe"}).encode(),
               json.dumps({"index": 99, "pair_id": first, "labeller": "ann", "verdict": "tie"}).encode(),
               json.dumps({"index": "0", "pair_id": first, "labeller": "ann", "verdict": "tie"}).encode(),
               json.dumps({"index": 0, "pair_id": first, "labeller": "", "verdict": "tie"}).encode(),
               json.dumps({"index": 0, "pair_id": "other", "labeller": "ann", "verdict": "tie"}).encode(),
               json.dumps({"index": 0, "pair_id": first, "labeller": "ann", "verdict": "tie", "note": 5}).encode(),
               b"x" * 20000]
        for body in bad:
            status, answer = request(port, "/api/label", body, "POST")
            assert 400 <= status < 500, (body[:60], status)
            assert answer.get("error")
        assert labels.read_bytes() == before
        for path in ("/static/../app.py", "/static/..%2Fapp.py", "/static/%2e%2e/%2e%2e/etc/passwd", "/../pyproject.toml",
                     "/static/index.html.bak", "/static/store.py"):
            status, _ = request(port, path)
            assert status == 404, path
        assert request(port, "/api/pair/7")[0] == 404 and request(port, "/api/pair/x")[0] == 404
        assert request(port, "/api/pairs?offset=a")[0] == 422
        assert request(port, "/api/meta")[0] == 200  # still serving
    finally:
        server.kill()
        server.wait()


def test_filters_and_search_come_from_the_index(tmp_path):
    write_run(tmp_path, n=6)
    port = free_port()
    server = serve(tmp_path, port)
    try:
        deadline = time.time() + 30
        while not request(port, "/api/meta")[1]["ready"] and time.time() < deadline:
            time.sleep(0.1)
        status, r = request(port, "/api/pairs?q=105%20euros")
        assert status == 200 and [x["id"] for x in r["rows"]] == ["pair-05"]
        assert request(port, "/api/pairs?strategy=instruction-contrast")[1]["total"] == 6
        assert request(port, "/api/pairs?turns=3")[1]["total"] == 0
        _, blind = request(port, "/api/pair/0?mode=label&labeller=bob")
        assert "strategy" not in json.dumps(blind) and "modified" not in json.dumps(blind)
        _, full = request(port, "/api/pair/0")
        assert full["rows"][2]["contrast"]["modified"].endswith("Money is no object.") is False  # turn 2's user row
        assert full["rows"][0]["contrast"]["modified"].endswith("Money is no object.")
        assert full["diverge_at"] == 1
    finally:
        server.kill()
        server.wait()


def test_a_cross_origin_or_text_plain_label_post_is_refused_and_the_file_untouched(tmp_path):
    pairs_file = write_run(tmp_path, n=2)
    first = json.loads(pairs_file.read_text().splitlines()[0])["id"]
    body = json.dumps({"index": 0, "pair_id": first, "labeller": "ann", "verdict": "tie"}).encode()
    port = free_port()
    server = serve(tmp_path, port)
    labels = tmp_path / "synth" / "labels.jsonl"

    def post(headers: dict[str, str]) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/label", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        before = labels.read_bytes() if labels.exists() else b""
        assert post({"content-type": "text/plain"}) == 415  # a plain HTML form can send this cross-origin
        assert post({"content-type": "application/json", "origin": "http://evil.example"}) == 403
        assert post({"content-type": "application/json", "sec-fetch-site": "cross-site"}) == 403
        assert (labels.read_bytes() if labels.exists() else b"") == before
        assert post({"content-type": "application/json", "origin": f"http://127.0.0.1:{port}"}) == 200  # the page itself
    finally:
        server.kill()
        server.wait()
