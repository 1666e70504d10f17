"""Summarise a py-spy ``--format raw`` profile: the functions with the most samples, inclusive
(anywhere on the stack) and self (on top of it).

    python -m bench.topstacks bench/profiles/NAME.txt [--top 25] [--filter bridge]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int, only: str) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    out = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        out.append(f"-- {title}")
        shown = [(f, n) for f, n in counter.most_common() if only in f][:top]
        out += [f"{100 * n / max(1, total):5.1f}%  {f}" for f, n in shown]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--filter", default="")
    args = parser.parse_args()
    print(summarise(args.path, args.top, args.filter))


if __name__ == "__main__":
    main()
