#!/usr/bin/env python3
"""Writes N hourly EUR/USD-like candles as CSV (a seeded random walk), in the
common `time,open,high,low,close,volume` shape or Dukascopy's.

    python3 scripts/reference/make_history.py 1000000 /tmp/EUR_USD_H1.csv [--dukascopy]
"""
import random
import sys
from datetime import datetime, timedelta, timezone


def main() -> None:
    n, path = int(sys.argv[1]), sys.argv[2]
    dukascopy = "--dukascopy" in sys.argv
    rng = random.Random(7)
    t = datetime(2000, 1, 3, tzinfo=timezone.utc)
    price = 1.1
    with open(path, "w") as f:
        f.write("Gmt time,Open,High,Low,Close,Volume\n" if dukascopy else "time,open,high,low,close,volume\n")
        for _ in range(n):
            o = price
            c = max(0.5, o + rng.gauss(0, 0.0012))
            h = max(o, c) + abs(rng.gauss(0, 0.0005))
            lo = min(o, c) - abs(rng.gauss(0, 0.0005))
            v = round(rng.uniform(100, 5000), 1)
            stamp = t.strftime("%d.%m.%Y %H:%M:%S.000") if dukascopy else t.strftime("%Y-%m-%d %H:%M:%S")
            f.write(f"{stamp},{o:.5f},{h:.5f},{lo:.5f},{c:.5f},{v}\n")
            price = c
            t += timedelta(hours=1)


if __name__ == "__main__":
    main()
