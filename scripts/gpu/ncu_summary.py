"""Sums an `ncu --csv --metrics gpu__time_duration.sum` listing by kernel and launch shape:
`python3 ncu_summary.py FILE STEPS` (STEPS: the decoding steps the listing covers)."""
import collections
import csv
import sys

UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}
path, steps = sys.argv[1], float(sys.argv[2])
header, kernels = None, collections.defaultdict(lambda: [0, 0.0])
for row in csv.reader(open(path)):
    if "Kernel Name" in row:
        header = row
        continue
    if not header or len(row) != len(header):
        continue
    r = dict(zip(header, row))
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    us = float(r["Metric Value"].replace(",", "")) * UNITS.get(r["Metric Unit"], float("nan"))
    k = kernels[(r["Kernel Name"].split("(")[0], r["Grid Size"], r["Block Size"])]
    k[0] += 1
    k[1] += us
total = sum(k[1] for k in kernels.values())
print(f"{sum(k[0] for k in kernels.values())} launches, {total / steps:.1f} us per step (kernels alone)")
for (name, grid, block), (n, us) in sorted(kernels.items(), key=lambda kv: -kv[1][1]):
    print(f"{name:16} grid {grid:>14} block {block:>12} {n:4} launches {us / n:8.2f} us each "
          f"{us / steps:8.1f} us per step {100 * us / total:5.1f}%")
