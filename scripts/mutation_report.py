"""Kill rate per module from the last `mutmut run` (run by `make mutation`), as a markdown table.

Killed = the tests failed (or timed out) with the mutant in; survived = they passed; no tests = no selected test
calls the mutated function. The rate is killed / (killed + survived + no tests); a mutant never run is left out.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path

LINE = re.compile(r"^\s*(?P<module>[\w.]+)\.x(?:ǁ\w+ǁ)?_?(?P<function>\w+?)__mutmut_\d+: (?P<status>.+)$")
KILLED = {"killed", "timeout", "segfault"}
COUNTED = KILLED | {"survived", "no tests"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutmut", default=str(Path(sys.executable).with_name("mutmut")))
    parser.add_argument("--survivors", action="store_true", help="list the mutants that survived, by name")
    args = parser.parse_args()
    out = subprocess.run([args.mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    survivors = []
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        status = m["status"].strip()
        counts[m["module"]][status] += 1
        if status in ("survived", "no tests"):
            survivors.append(line.strip())
    print("| module | mutants | killed | survived | no tests | kill rate |")
    print("|---|---:|---:|---:|---:|---:|")
    total: collections.Counter[str] = collections.Counter()
    for module in sorted(counts):
        c = counts[module]
        total.update(c)
        print(_row(module, c))
    print(_row("**all**", total))
    if args.survivors:
        print("\n".join(["", *survivors]))
    return 0


def _row(name: str, c: collections.Counter[str]) -> str:
    killed = sum(c[s] for s in KILLED)
    counted = sum(c[s] for s in COUNTED)
    rate = f"{100 * killed / counted:.1f} %" if counted else "-"
    return f"| {name} | {counted} | {killed} | {c['survived']} | {c['no tests']} | {rate} |"


if __name__ == "__main__":
    sys.exit(main())
