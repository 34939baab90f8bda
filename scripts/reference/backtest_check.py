#!/usr/bin/env python3
"""`pipwatch backtest` beside backtesting.py on the same candles: the same
crossover signals, traded by backtesting.py's own order engine, and the two
trade lists compared one by one. Optional: it needs backtesting and TA-Lib
(requirements.txt), which `cargo test` never does.

    /tmp/pyref/bin/pip install -r scripts/reference/requirements.txt
    cargo build --release
    /tmp/pyref/bin/python scripts/reference/backtest_check.py [CSV] [--fill next-open]

The signals are computed here, not taken from pipwatch: SMA crossovers
decided in integer ticks (exact, as the engine decides them) and TA-Lib's
ATR for the stop (1.5 ATR) and the target (3 ATR). backtesting.py then
fills them at the signal candle's close (trade_on_close; with
`--fill next-open`, at the next candle's open), reverses on the opposite
signal (exclusive_orders), and exits at its stop and take-profit orders. Prints the counts, the first differences, and the total R of each;
BENCHMARKS.md records what it said.
"""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import talib
from backtesting import Backtest, Strategy

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("PIPWATCH_BIN", os.path.join(ROOT, "target", "release", "pipwatch"))
DEFAULT = os.path.join(ROOT, "data", "EUR_USD_H1_2017_ask.csv")
FAST, SLOW, ATR, SL, TP = 10, 20, 14, 1.5, 3.0
TICK = 100_000  # five decimals


def candles(path):
    """Dukascopy's export (the shipped file) or make_history.py's common shape."""
    df = pd.read_csv(path)
    df.columns = [c.strip().lower() for c in df.columns]
    time = df.columns[0]
    dotted = "." in str(df[time].iloc[0])[:6]
    df.index = pd.to_datetime(df[time], format="%d.%m.%Y %H:%M:%S.%f" if dotted else None, utc=True)
    df = df.rename(columns=str.capitalize)
    return df[["Open", "High", "Low", "Close", "Volume"]]


def signals(df):
    """+1 buy, -1 sell, 0 none, per candle; and the ATR."""
    ticks = [round(c * TICK) for c in df["Close"]]
    atr = talib.ATR(df["High"].to_numpy(), df["Low"].to_numpy(), df["Close"].to_numpy(), ATR)
    side = np.zeros(len(df), dtype=int)
    prev = None
    for i in range(SLOW - 1, len(df)):
        fast_sum = sum(ticks[i - FAST + 1 : i + 1])
        slow_sum = sum(ticks[i - SLOW + 1 : i + 1])
        # sign(fast/FAST - slow/SLOW), in integers.
        diff = fast_sum * SLOW - slow_sum * FAST
        if prev is not None and not np.isnan(atr[i]):
            if diff > 0 and prev <= 0:
                side[i] = 1
            elif diff < 0 and prev >= 0:
                side[i] = -1
        prev = diff
    return side, atr


def reference_trades(df, side, atr, on_close):
    class Cross(Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            if side[i] == 0:
                return
            price = self.data.Close[-1]
            if side[i] > 0:
                self.buy(size=100_000, sl=price - SL * atr[i], tp=price + TP * atr[i])
            else:
                self.sell(size=100_000, sl=price + SL * atr[i], tp=price - TP * atr[i])

    bt = Backtest(
        df, Cross, cash=10_000_000, commission=0.0, trade_on_close=on_close, exclusive_orders=True, finalize_trades=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = bt.run()
    return stats["_trades"]


def pipwatch_trades(path, fill):
    args = [BIN, "backtest", path, "--format", "json", "--fill", fill]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    rows = [json.loads(l) for l in out.stdout.splitlines()]
    return [r for r in rows if r.get("type") == "trade"]


def main():
    args = sys.argv[1:]
    fill = "close"
    if "--fill" in args:
        at = args.index("--fill")
        fill = args[at + 1]
        del args[at : at + 2]
    path = args[0] if args else DEFAULT
    df = candles(path)
    side, atr = signals(df)
    ref = reference_trades(df, side, atr, on_close=fill == "close")
    ours = pipwatch_trades(path, fill)
    print(f"fill at the {'close' if fill == 'close' else 'next open'}")
    print(f"candles {len(df)}, signals here {int(np.count_nonzero(side))}")
    print(f"trades: pipwatch {len(ours)}, backtesting.py {len(ref)}")

    def key(t):
        return pd.Timestamp(t).tz_convert("UTC") if pd.Timestamp(t).tzinfo else pd.Timestamp(t, tz="UTC")

    differ = 0
    matched = 0
    r_ref = 0.0
    r_ours = 0.0
    for n in range(max(len(ours), len(ref))):
        o = ours[n] if n < len(ours) else None
        b = ref.iloc[n] if n < len(ref) else None
        if o is not None:
            r_ours += o["r"]
        if b is not None:
            risk = abs(b["EntryPrice"] - b["SL"])
            r_ref += (b["ExitPrice"] - b["EntryPrice"]) / risk * (1 if b["Size"] > 0 else -1)
        same = (
            o is not None
            and b is not None
            and key(o["entry_time"]) == key(b["EntryTime"])
            and (o["side"] == "buy") == (b["Size"] > 0)
            and abs(o["entry"] - b["EntryPrice"]) < 1e-9
            and abs(o["exit"] - b["ExitPrice"]) < 1e-9
            and (o["exit_time"] is None or key(o["exit_time"]) == key(b["ExitTime"]))
        )
        if same:
            matched += 1
        else:
            differ += 1
            if differ <= 5:
                print(f"differs at trade {n}:")
                print(f"  pipwatch       {o and {k: o[k] for k in ('side', 'entry_time', 'entry', 'exit_time', 'exit', 'exit_reason')}}")
                if b is not None:
                    print(
                        f"  backtesting.py {'buy' if b['Size'] > 0 else 'sell'} {b['EntryTime']} {b['EntryPrice']} "
                        f"-> {b['ExitTime']} {b['ExitPrice']} (sl {b['SL']:.6f}, tp {b['TP']:.6f})"
                    )
    print(f"matched {matched} of {max(len(ours), len(ref))} (entry time, side, entry, exit time, exit price)")
    print(f"total R: pipwatch {r_ours:.4f}, backtesting.py {r_ref:.4f}")


if __name__ == "__main__":
    main()
