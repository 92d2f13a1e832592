"""The calibration table: false-positive rate and power at α = 0.05 of every null, on planted data.

    python benchmarks/calibration.py                  # 1,000 structureless replicates, larger sizes
    python benchmarks/calibration.py --replicates 200 --small   # the test suite's sizes
    python benchmarks/calibration.py --only mesoscale,boundary  # some rows

The checks are ``resdyn.testing.calibration.CHECKS`` (a list of (name, function) entries: a new
test is one more entry), plus the record-only rows of ``EXTRA`` (the unstratified mesoscale null on
heavy singleton units, which is not calibrated, kept to show why the stratification is there).
Prints one Markdown row per check: test, structureless replicates, FPR at α = 0.05, power (and its
replicates), the planted effect, seconds on this machine (one BLAS thread).
"""

from __future__ import annotations

import argparse

from threadpoolctl import threadpool_limits

from resdyn.testing import calibration as C


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=1000, help="structureless replicates per check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="the test suite's sizes instead of the larger ones")
    ap.add_argument("--only", default="", help="comma-separated check names (default: all)")
    args = ap.parse_args(argv)
    checks = C.CHECKS + C.EXTRA
    if args.only:
        want = set(args.only.split(","))
        unknown = want - {n for n, _ in checks}
        if unknown:
            ap.error(f"unknown check(s) {', '.join(sorted(unknown))}; choose from {', '.join(n for n, _ in checks)}")
        checks = [(n, f) for n, f in checks if n in want]
    print(f"α = {C.ALPHA}; pass: FPR ≤ {C.MAX_FPR} and power ≥ {C.MIN_POWER}; seed {args.seed}; "
          f"{'test-suite' if args.small else 'larger'} sizes\n")
    print("| test | replicates | FPR at α = 0.05 | power (replicates) | planted effect | seconds |")
    print("|---|---|---|---|---|---|")
    with threadpool_limits(limits=1, user_api="blas"):
        for name, fn in checks:
            row = C.run_checks([(name, fn)], args.replicates, args.seed, not args.small).iloc[0]
            print(f"| {row['test']} | {row['replicates']} | {row['fpr']:.3f} | {row['power']:.2f} "
                  f"({row['power_replicates']}) | {row['effect']} | {row['seconds']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
