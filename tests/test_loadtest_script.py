import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "loadtest.py"


def test_the_load_test_without_httpx_says_how_to_get_it_not_a_traceback():
    hidden = ("import runpy, sys; sys.modules['httpx'] = None; sys.argv = [sys.argv[1], '--help']; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
    refused = subprocess.run([sys.executable, "-c", hidden, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == ("scripts/loadtest.py needs httpx, which the test extra brings: bash scripts/setup.sh "
                              "pytest, or .venv/bin/pip install -c constraints.txt httpx\n")
    shown = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: loadtest.py")
