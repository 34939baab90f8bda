#!/usr/bin/env python3
"""pipwatch beside the Python tools a trader would reach for, on this machine
(issue 22). Optional: it needs the packages of requirements.txt, which
`cargo test` never does.

    python3 -m venv /tmp/pyref && /tmp/pyref/bin/pip install -r scripts/reference/requirements.txt
    cargo build --release
    /tmp/pyref/bin/python scripts/reference/compare.py [--rows 1000000] [--sweep-rows 100000]

Prints one line per measurement; BENCHMARKS.md records what it said.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import talib
import vectorbt as vbt

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.join(ROOT, "target", "release", "pipwatch")


def best_of(n, f):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times), sorted(times)[len(times) // 2]


def binary(args):
    subprocess.run([BIN] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--sweep-rows", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    big = os.path.join(tmp, "EUR_USD_H1.csv")
    small = os.path.join(tmp, "EUR_USD_H1_small.csv")
    subprocess.run([sys.executable, os.path.join(HERE, "make_history.py"), str(a.rows), big], check=True)
    with open(big) as f, open(small, "w") as g:
        for i, line in enumerate(f):
            if i > a.sweep_rows:
                break
            g.write(line)
    print(f"versions: pandas {pd.__version__}, numpy {np.__version__}, TA-Lib {talib.__version__}, vectorbt {vbt.__version__}")

    def pandas_talib():
        df = pd.read_csv(big, parse_dates=["time"])
        c, h, lo = df["close"].to_numpy(), df["high"].to_numpy(), df["low"].to_numpy()
        talib.SMA(c, 10), talib.SMA(c, 20), talib.ATR(h, lo, c, 14)

    for name, f in [
        ("pandas read_csv + TA-Lib SMA/SMA/ATR", pandas_talib),
        ("pipwatch replay (signals)", lambda: binary(["replay", big])),
        ("pipwatch replay --indicators", lambda: binary(["replay", "--indicators", big])),
        ("pipwatch backtest (json)", lambda: binary(["backtest", "--format", "json", big])),
    ]:
        best, median = best_of(a.runs, f)
        print(f"{name}: {a.rows} rows, best {best:.3f}s median {median:.3f}s ({a.rows / median / 1e6:.2f} M rows/s)")

    # The machine's own floor for reading the file: the fastest CSV readers
    # we know of, on every core, doing less than a replay (no engine, no
    # output). Optional: skipped without pyarrow or polars.
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import polars as pl
    except ImportError:
        print("pyarrow or polars not installed: the reading floor is not measured")
    else:
        types = {"time": pa.timestamp("s"), **{c: pa.float64() for c in ["open", "high", "low", "close", "volume"]}}
        conv = pacsv.ConvertOptions(column_types=types, timestamp_parsers=["%Y-%m-%d %H:%M:%S"])
        for name, f in [
            ("read the file's bytes (Python)", lambda: open(big, "rb").read()),
            (f"pyarrow {pa.__version__} read_csv, times parsed", lambda: pacsv.read_csv(big, convert_options=conv)),
            (f"polars {pl.__version__} read_csv, times as text", lambda: pl.read_csv(big)),
            (f"polars {pl.__version__} read_csv, times parsed", lambda: pl.read_csv(big, try_parse_dates=True)),
        ]:
            best, median = best_of(a.runs, f)
            print(f"{name}: {a.rows} rows, best {best:.3f}s median {median:.3f}s ({a.rows / median / 1e6:.2f} M rows/s)")

    df = pd.read_csv(small, parse_dates=["time"], index_col="time")
    close, high, low = df["close"], df["high"], df["low"]
    fasts, slows = list(range(5, 51, 5)), list(range(10, 201, 10))
    pairs = [(f, s) for f in fasts for s in slows if f < s]
    atr = pd.Series(talib.ATR(high.to_numpy(), low.to_numpy(), close.to_numpy(), 14), index=close.index)

    def vectorbt_sweep():
        fast = vbt.MA.run(close, [p[0] for p in pairs], short_name="fast")
        slow = vbt.MA.run(close, [p[1] for p in pairs], short_name="slow")
        entries = fast.ma_crossed_above(slow)
        exits = fast.ma_crossed_below(slow)
        stop = (1.5 * atr / close).to_numpy()[:, None]
        take = (3.0 * atr / close).to_numpy()[:, None]
        pf = vbt.Portfolio.from_signals(
            close, entries, exits, short_entries=exits, short_exits=entries, sl_stop=stop, tp_stop=take, freq="1h"
        )
        return pf.total_return()

    vectorbt_sweep()  # the JIT's first compile is not the sweep's cost
    work = len(pairs) * a.sweep_rows
    best, median = best_of(a.runs, vectorbt_sweep)
    print(f"vectorbt sweep: {len(pairs)} combinations x {a.sweep_rows} candles, best {best:.3f}s median {median:.3f}s ({work / median / 1e6:.1f} M combination-candles/s)")
    sweep = ["backtest", "--format", "json", "--fast", "5..50:5", "--slow", "10..200:10", small]
    best, median = best_of(a.runs, lambda: binary(sweep))
    print(f"pipwatch sweep: {len(pairs)} combinations x {a.sweep_rows} candles, best {best:.3f}s median {median:.3f}s ({work / median / 1e6:.1f} M combination-candles/s)")


if __name__ == "__main__":
    main()
