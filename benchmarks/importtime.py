"""How long `import hybridnb` takes (goal: < 150 ms), and which heavy modules it pulls in.

Runs `python -X importtime -c 'import hybridnb'` several times and prints the median of the
cumulative time of the hybridnb package, next to the bare interpreter start as a baseline.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 7
HEAVY = ("docker", "libvirt", "pyroute2", "matplotlib", "networkx", "IPython", "ipywidgets", "yaml")


def import_us() -> int:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hybridnb"],
                         capture_output=True, text=True, check=True).stderr
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "hybridnb":
            return int(parts[1])
    raise SystemExit("hybridnb not found in -X importtime output")


def wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main() -> None:
    cumulative = statistics.median(import_us() for _ in range(RUNS)) / 1000
    bare = statistics.median(wall("pass") for _ in range(RUNS)) * 1000
    with_import = statistics.median(wall("import hybridnb") for _ in range(RUNS)) * 1000
    loaded = subprocess.run([sys.executable, "-c", "import sys, hybridnb; print(','.join("
                             f"m for m in {HEAVY!r} if m in sys.modules))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    print(f"import hybridnb (cumulative, -X importtime, median of {RUNS}): {cumulative:.1f} ms "
          f"(goal < 150 ms) {'OK' if cumulative < 150 else 'TOO SLOW'}")
    print(f"interpreter start: {bare:.1f} ms; start + import hybridnb: {with_import:.1f} ms "
          f"(ratio {with_import / bare:.2f}x)")
    print(f"heavy modules loaded by the import: {loaded or 'none'}")


if __name__ == "__main__":
    main()
