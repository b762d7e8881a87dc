"""The README's commands work as written: every shell and Python snippet is run or says why it is not, and
the demo output it shows is what ``make demo`` prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.receiver import EnvelopeReceiver
from tests.servers import REPO_ROOT
from tests.test_cli import _clean_env, run_demo

README = Path(REPO_ROOT) / "README.md"
_BLOCK = re.compile(r"(?:<!-- (?P<marker>[^>]*) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)\n```", re.DOTALL)
RUN_LANGUAGES = ("python", "sh")


def blocks(language: str, marker: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [m["body"] for m in _BLOCK.finditer(text) if m["lang"] == language and m["marker"] == marker]


def test_every_shell_and_python_snippet_is_run_or_says_why_not() -> None:
    text = README.read_text(encoding="utf-8")
    unmarked = [
        m["body"].splitlines()[0]
        for m in _BLOCK.finditer(text)
        if m["lang"] in RUN_LANGUAGES and not (m["marker"] or "").startswith("snippet: ")
    ]
    assert unmarked == [], "mark each with <!-- snippet: run ... --> or <!-- snippet: not run (why) -->"
    markers = {m["marker"] for m in _BLOCK.finditer(text) if m["lang"] in RUN_LANGUAGES}
    known = {"snippet: run as main.py", "snippet: run in a clone"}
    assert {marker for marker in markers if not marker.startswith("snippet: not run (")} <= known


def test_the_python_snippets_run_as_an_app_module(tmp_path: Path, receiver: EnvelopeReceiver) -> None:
    snippets = blocks("python", "snippet: run as main.py")
    assert snippets
    for snippet in snippets:
        (tmp_path / "main.py").write_text(snippet + "\n", encoding="utf-8")
        driver = textwrap.dedent(
            """
            import asyncio, otel_bridge, main

            async def get():
                scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                         "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
                         "root_path": "", "headers": [(b"host", b"shop.test")], "client": ("127.0.0.1", 1),
                         "server": ("127.0.0.1", 8000)}
                async def receive():
                    return {"type": "http.request", "body": b"", "more_body": False}
                async def send(message):
                    pass
                await main.app(scope, receive, send)

            asyncio.run(get())
            print("FLUSHED", otel_bridge.flush(5))
            """
        )
        env = _clean_env(SENTRY_DSN=receiver.dsn, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO_ROOT}")
        result = subprocess.run(
            [sys.executable, "-c", driver], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "FLUSHED True" in result.stdout
        [transaction] = receiver.wait_for_transactions(1)
        assert transaction["transaction"] == "/"
        receiver.clear()


def _copy_of_the_project(target: Path) -> Path:
    ignored = shutil.ignore_patterns(".venv*", ".git", "build", "dist", ".cache", "*.egg-info", "__pycache__")
    shutil.copytree(REPO_ROOT, target, ignore=ignored)
    return target


def test_the_shell_snippets_run_in_a_clone(tmp_path: Path) -> None:
    snippets = blocks("sh", "snippet: run in a clone")
    assert snippets
    clone = _copy_of_the_project(tmp_path / "clone")
    env = _clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for snippet in snippets:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", snippet],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{snippet}\n{result.stdout}\n{result.stderr}"


@pytest.mark.timeout(120)
def test_the_demo_output_shown_is_what_make_demo_prints(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    shown = text.split("<!-- demo-output -->\n```text\n", 1)[1].split("\n```", 1)[0]
    printed = run_demo(tmp_path).split("The receiver got", 1)[1]
    printed = "The receiver got" + re.sub(r"\nDurations \(.*?\n\n", "\n", printed, flags=re.DOTALL)
    printed = printed.split("\nOK:", 1)[0] + "\nOK:" + printed.split("\nOK:", 1)[1].splitlines()[0]
    assert printed.strip() == shown.strip(), "regenerate the README's sample from `make demo`"
