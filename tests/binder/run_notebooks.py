"""Run every notebook given on the command line top to bottom, as "Run all" would: no
parameters injected, the kernel started from this interpreter (the Binder venv), each
notebook in its own directory.  Prints one line per notebook; exit 1 if any failed.

Runs inside the Binder-like environment (``tests/binder/test_binder.py``), so it imports only
what that environment has: nbclient and nbformat.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbclient
import nbformat


def run(path: Path, out_dir: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}},
                                     store_widget_state=True)
    started = time.monotonic()
    try:
        client.execute()
        ok = True
    except nbclient.exceptions.CellExecutionError as exc:
        print(f"FAILED {path.name}: {str(exc)[-2000:]}", flush=True)
        ok = False
    nbformat.write(nb, out_dir / path.name)
    if ok:
        print(f"ok {path.name} in {time.monotonic() - started:.1f} s", flush=True)
    return ok


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [run(Path(p), out_dir) for p in argv[1:]]
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
