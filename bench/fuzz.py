"""Fuzz the helper's parsers and the client's reply receive longer than CI does.

Builds the libFuzzer harnesses (`make -C helper fuzz`, clang with ASan+UBSan): the
helper's request and policy parsers, and fuzz_reply, the client's compiled reply
receive (gprocket's _fdpass_speed.c) seeded with the helper's replies to
helper/vectors.txt (helper/build/corpus/reply, written by the same make). Runs each
on a scratch copy of its seed corpus, and prints executions, executions per second,
corpus growth and crashes. The anchor is an empty harness built with the same
flags: its rate is libFuzzer's own ceiling on this machine, so "ratio" says what
fraction of that ceiling the parser leaves. With ``--hog N`` every harness (the
anchor too) runs a second time with N busy processes running (bench/_hog.py:
paused for the quiet pass, killed at the end), and the loaded rates are printed
beside the quiet ones.

    /opt/gprocket/venv/bin/python bench/fuzz.py [--seconds N] [--hog N]

Exit status 1 if any harness crashed (the reproducer is kept and named).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import _hog

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "helper"
NOOP = "#include <stddef.h>\n#include <stdint.h>\n" \
       "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n"
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer",
            "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all"]


@dataclass(frozen=True)
class Run:
    """One harness's result."""

    name: str
    executions: int
    seconds: float
    corpus_before: int
    corpus_after: int
    crashes: tuple[str, ...]

    @property
    def per_second(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0


def build_noop(workdir: Path) -> Path:
    source = workdir / "noop.c"
    source.write_text(NOOP)
    binary = workdir / "fuzz_noop"
    subprocess.run(["clang", *SANITIZE, "-o", str(binary), str(source)], check=True)
    return binary


def run(name: str, binary: Path, seeds: Path | None, seconds: int, workdir: Path) -> Run:
    corpus = workdir / f"corpus-{name}"
    if seeds is not None:
        shutil.copytree(seeds, corpus)
    else:
        corpus.mkdir()
    before = len(list(corpus.iterdir()))
    artifacts = workdir / f"artifacts-{name}"
    artifacts.mkdir()
    proc = subprocess.run(
        [str(binary), f"-max_total_time={seconds}", "-max_len=1024", "-print_final_stats=1",
         f"-artifact_prefix={artifacts}/", str(corpus)],
        capture_output=True, text=True, timeout=seconds + 120, check=False)
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    done = re.search(r"Done \d+ runs in (\d+) second", proc.stderr)
    crashes = tuple(str(p) for p in sorted(artifacts.iterdir()))
    if proc.returncode != 0 and not crashes:
        crashes = (f"exit {proc.returncode}: {proc.stderr[-500:]}",)
    if crashes:
        keep = REPO / "helper" / "build" / f"crashes-{name}"
        keep.mkdir(parents=True, exist_ok=True)
        for path in artifacts.iterdir():
            shutil.copy(path, keep / path.name)
    return Run(name, int(executed[1]) if executed else 0,
               float(done[1]) if done else float(seconds), before,
               len(list(corpus.iterdir())), crashes)


def run_all(seconds: int, workdir: Path, suffix: str) -> list[Run]:
    """The anchor, then every harness, each on a fresh copy of its seeds."""
    anchor = run(f"noop{suffix}", build_noop(workdir), None, max(5, seconds // 4), workdir)
    seeds = {"request": HELPER / "fuzz" / "corpus" / "request",
             "policy": HELPER / "fuzz" / "corpus" / "policy",
             "reply": HELPER / "build" / "corpus" / "reply"}
    return [anchor, *(run(f"{name}{suffix}", HELPER / "build" / f"fuzz_{name}", corpus,
                          seconds, workdir) for name, corpus in seeds.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=45,
                        help="per parser harness (the anchor gets a quarter)")
    _hog.add_argument(parser)
    args = parser.parse_args(argv)
    subprocess.run(["make", "-s", "-C", str(HELPER), "fuzz"], check=True)
    passes: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="gprocket-fuzz-") as tmp, \
            _hog.Hogs(args.hog) as hogs:
        for phase in hogs.phases:
            hogs.phase(phase)
            passes[phase] = run_all(args.seconds, Path(tmp),
                                    "" if phase == _hog.QUIET else "-loaded")
        hogs.pause()
    head = (f"{'harness':<10} {'executions':>12} {'exec/s':>10} {'ratio':>7} "
            f"{'corpus':>13} {'crashes':>8}")
    if _hog.LOADED in passes:
        head += f" | {args.hog} hog: {'exec/s':>10} {'ratio':>7} {'crashes':>8}"
    print(head)
    quiet = passes[_hog.QUIET]
    loaded = passes.get(_hog.LOADED)
    for index, r in enumerate(quiet):
        line = (f"{r.name:<10} {r.executions:>12,} {r.per_second:>10,.0f} "
                f"{_ratio(r, quiet[0]):>7.3f} {r.corpus_before:>5} -> {r.corpus_after:<5} "
                f"{len(r.crashes):>8}")
        if loaded is not None:
            other = loaded[index]
            line += (f" | {'':>6} {other.per_second:>10,.0f} {_ratio(other, loaded[0]):>7.3f} "
                     f"{len(other.crashes):>8}")
        print(line)
    crashed = [c for runs in passes.values() for r in runs[1:] for c in r.crashes]
    for crash in crashed:
        print(f"CRASH: {crash}", file=sys.stderr)
    return 1 if crashed else 0


def _ratio(r: Run, anchor: Run) -> float:
    return r.per_second / anchor.per_second if anchor.per_second else 0.0


if __name__ == "__main__":
    sys.exit(main())
