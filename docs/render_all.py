"""Render every report (.eml, .html and the --dry-run text, variants a and b) from the
example folder and the three folders of tests/test_attention.py (in trouble,
thriving, headers only), with a fixed clock and MIME boundaries normalised, into
OUT: run it before and after a change that must not change what the reports say,
then `diff -r`.  By hand, not in CI; sends nothing.

    .venv/bin/python docs/render_all.py OUT [EXTRA_DATA_FOLDER ...]
"""

import io
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import send_exec_reports as ser  # noqa: E402
import test_attention  # noqa: E402
from conftest import GOOD_SETTINGS, RUN_DEFAULTS, FakeClock, write_env_file  # noqa: E402
from local_ses import script_environment  # noqa: E402

CYCLE = "2026-12-01"


def folders(work, extra):
    """{name: data folder}: the example, the tests' three, and any given."""
    made = {"example": REPO / "report_data.example"}
    for name in ("trouble", "thriving", "headers_only"):
        folder = work / name
        folder.mkdir()
        for sheet, (header, rows) in getattr(test_attention, name)().items():
            test_attention.write_sheet(folder / sheet, header, rows)
        made[name] = folder
    made.update((Path(path).name, Path(path)) for path in extra)
    return made


def main(out, *extra):
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp())
    env_file = write_env_file(work / "repos.env",
                              {**GOOD_SETTINGS, "AWS_RECIPIENT_EMAIL_B": "b@example.com"})
    environ = {**script_environment("http://127.0.0.1:9", work), **RUN_DEFAULTS}
    for name, folder in folders(work, extra).items():
        for variant in ("a", "b"):
            target = out / f"{name}-{variant}"
            for what, more in (("preview", ["--preview-dir", str(target)]),
                               ("dry-run", ["--dry-run"])):
                stdout, stderr = io.StringIO(), io.StringIO()
                code = ser.main(["--env-file", str(env_file), "--audit-log",
                                 str(work / "audit.jsonl"), "--data", str(folder),
                                 "--cycle", CYCLE, "--variant", variant, *more],
                                environ=environ, stdout=stdout, stderr=stderr,
                                clock=FakeClock())
                said = f"exit {code}\n{stderr.getvalue()}\n{stdout.getvalue()}"
                (out / f"{name}-{variant}.{what}.txt").write_text(
                    said.replace(str(target), "OUT").replace(str(work), "WORK"))
            for eml in target.glob("*.eml"):
                eml.write_bytes(re.sub(rb"={15}\d+==", b"===BOUNDARY==", eml.read_bytes()))
    shutil.rmtree(work)
    print(f"rendered into {out}")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
