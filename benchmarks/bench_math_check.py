"""Answer-equivalence cost: the string/number fast path next to math-verify in its worker process.

The fast path decides only pairs math-verify would decide the same way (tests/test_math_fast_path.py);
this prints how many pairs of MATH-500 answers and their usual rewrites it decides, and what a check
costs on each path.

    python3 benchmarks/bench_math_check.py [--data-dir DIR] [--symbolic 200]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from evalkit.math_equivalence import SymbolicChecker, fast_equivalence

REWRITES = {
    "same": lambda s: s,
    "dollars": lambda s: f"${s}$",
    "dfrac": lambda s: s.replace("\\frac", "\\dfrac"),
    "spaces": lambda s: s.replace(" ", ""),
    "assignment": lambda s: f"x = {s}",
    "text": lambda s: f"\\text{{{s}}}",
    "degrees": lambda s: f"{s}^\\circ",
    "decimal": lambda s: f"{s}.0" if s.isdigit() else s,
    "mutant": lambda s: re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), s, count=1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("EVALKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared/datasets"))
    parser.add_argument("--data-dir", default=default_data)
    parser.add_argument("--symbolic", type=int, default=200, help="pairs timed through math-verify")
    args = parser.parse_args()
    lines = (Path(args.data_dir) / "math" / "math500_test.jsonl").read_text(encoding="utf-8").splitlines()
    golds = [json.loads(line)["answer"] for line in lines]
    pairs = [(gold, rewrite(gold)) for gold in golds for rewrite in REWRITES.values()]

    start = time.perf_counter()
    decided = [fast_equivalence(gold, answer) for gold, answer in pairs]
    fast_s = time.perf_counter() - start

    checker = SymbolicChecker()
    try:
        checker.check("1", "1")  # start the worker (imports sympy) outside the timing
        sample = pairs[:: max(1, len(pairs) // args.symbolic)][: args.symbolic]
        start = time.perf_counter()
        for gold, answer in sample:
            checker.check(gold, answer)
        symbolic_s = time.perf_counter() - start
    finally:
        checker.close()

    share = sum(d is not None for d in decided) / len(pairs)
    fast_us = fast_s / len(pairs) * 1e6
    symbolic_us = symbolic_s / len(sample) * 1e6
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"{'path':<22}{'checks':>8}{'decided':>10}{'us/check':>12}")
    print(f"{'string/number':<22}{len(pairs):>8}{share:>10.1%}{fast_us:>12.1f}")
    print(f"{'math-verify worker':<22}{len(sample):>8}{'100.0%':>10}{symbolic_us:>12.1f}")
    print(f"math-verify / fast path: {symbolic_us / fast_us:.0f}x per check")
    for name, rewrite in REWRITES.items():
        got = [fast_equivalence(g, rewrite(g)) for g in golds]
        print(f"  {name:<12} decided by the fast path: {sum(d is not None for d in got) / len(golds):6.1%}")


if __name__ == "__main__":
    main()
