"""A/B of a code change: one benchmark command run in alternating rounds in two trees, a
git revision (``--base``, checked out once as a worktree) and the working tree.

The machine's speed drifts by about 2x (PERFORMANCE.md), so the two sides alternate
(A B A B ...) in fresh processes and each round's pair is compared. The command runs in
each tree with that tree first on ``PYTHONPATH``, so it imports that tree's engine (run a
script path, not ``python -c`` or ``-m`` from the repository root, whose current folder
would come first); the benchmark script itself is the working tree's on both sides. Lines
of its output matching ``--grep`` are printed per side and round.

Usage::

    .venv/bin/python benchmarks/ab_revisions.py --base HEAD --rounds 2 --grep "flax " -- \\
        .venv/bin/python benchmarks/bench_finetune.py --skip accuracy --rounds 1
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(tree: Path, command: list[str], pattern: re.Pattern) -> tuple[list[str], float]:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"{command} failed in {tree}:\n{out.stderr[-3000:]}")
    lines = [ln for ln in out.stdout.splitlines() if pattern.search(ln)]
    return lines, time.perf_counter() - started


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD", help="the revision to compare against")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--grep", default=".", help="regex of the output lines to print")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the benchmark command after --")
    pattern = re.compile(args.grep)
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), rev], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
        try:
            sides = {f"base {rev}": base, "change (working tree)": ROOT}
            for r in range(args.rounds):
                for name, tree in sides.items():
                    lines, seconds = run(tree, command, pattern)
                    print(f"round {r + 1}, {name} ({seconds:.0f} s):", flush=True)
                    for line in lines:
                        print(f"    {line}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           capture_output=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
