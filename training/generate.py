"""Synthetic customers and card transactions that behave like a retail bank's.

The data follows the contract in :mod:`core.schema`. Customers are generated in fixed-size
chunks, each from its own seed, so the output depends only on the seed and the size, and a
million customers can be written without holding them in memory.

What is in the data (and what a model can learn from it):

* every customer has an income, a spending level, an activity rate, preferred categories,
  channels and hours, one to three cards or devices, and a home country;
* activity follows the week (Friday and Saturday busier) and the year (December peak, January lull);
* about one customer in five churns: from a date of its own, activity fades out over 2 to 14 weeks
  (two in five stop abruptly) and then stops. Half of the loyal customers have a quiet spell of
  2 to 13 weeks (holidays, a second bank; two in five go fully silent, then come back), and low-activity customers have long gaps anyway, so inactivity is a
  strong but noisy sign of churn;
* fraud comes in bursts on a compromised card: amounts far above the customer's norm, risky
  categories, night hours, new devices and foreign countries, each only with some probability, so
  a share of fraud looks ordinary and a share of ordinary spending (travel abroad, a replaced
  phone or card, which three customers in ten get) looks odd.

Beside the data, the next ``later_days`` (30) of the same customers, with nothing changed, go to
``transactions_later.parquet``: transactions that come after every feature snapshot, to replay as
live traffic (the load test's fraud requests). Training never reads them. The drift scenario
(:data:`DRIFT_SHIFTS`) generates a later period for the same customers with a known shift, written
down in ``drift_manifest.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from core.schema import CHANNELS, MERCHANT_CATEGORIES

CHUNK_CUSTOMERS = 20_000  # fixed: the output for a seed must not depend on memory settings
LATER_TRANSACTIONS = "transactions_later.parquet"

CATEGORY_MEDIAN_AMOUNT = np.array([35, 25, 50, 45, 40, 180, 20, 80, 30, 150, 80], dtype=float)
CATEGORY_WEIGHT = np.array([0.26, 0.16, 0.08, 0.12, 0.10, 0.03, 0.07, 0.05, 0.05, 0.02, 0.06])
RISKY_CATEGORIES = np.array([MERCHANT_CATEGORIES.index(c) for c in ("electronics", "online_retail", "travel", "cash")])
CASH = MERCHANT_CATEGORIES.index("cash")
ONLINE_RETAIL = MERCHANT_CATEGORIES.index("online_retail")
TRAVEL = MERCHANT_CATEGORIES.index("travel")
POS, ONLINE, MOBILE, ATM = (CHANNELS.index(c) for c in ("pos", "online", "mobile", "atm"))

HOME_COUNTRIES = np.array(["GB", "DE", "FR", "ES", "IT", "NL", "IE", "PL"])
HOME_WEIGHT = np.array([0.55, 0.12, 0.1, 0.07, 0.06, 0.04, 0.03, 0.03])
ABROAD = np.array(["US", "PT", "GR", "TR", "TH", "AE", "MX", "HR", "CH", "AT"])
FRAUD_COUNTRIES = np.array(["NG", "RU", "BR", "VN", "UA", "CN", "RO", "ID"])

WEEKDAY_FACTOR = np.array([0.92, 0.95, 0.97, 1.0, 1.15, 1.25, 0.8])  # Monday first
MONTH_FACTOR = np.array([0.85, 0.9, 0.97, 1.0, 1.0, 1.02, 1.08, 1.1, 0.98, 1.0, 1.08, 1.3])  # January first

# The drift scenario: raw columns it moves, how, and the features that follow them.
DRIFT_SHIFTS = {
    "amount": "every amount is 40% higher (price inflation)",
    "channel": "half of the point-of-sale payments move to mobile",
}
# Every feature computed from amounts over a window that reaches into the drifted months (the
# trends, slopes and year-long log averages too), and the two channel shares the move touches.
DRIFT_FEATURES_MOVED = [
    "spend_7d", "spend_30d", "spend_90d", "spend_180d", "avg_amount_30d", "avg_amount_90d",
    "spend_trend_30_90", "spend_trend_90_180", "spend_slope_12w", "median_amount_90d", "max_amount_90d",
    "std_amount_90d", "p95_amount_90d", "avg_log_amount_365d", "std_log_amount_365d",
    "share_pos_90d", "share_mobile_90d",
]


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # exclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    return date(day.year + month // 12, month % 12 + 1, min(day.day, 28))


def _profiles(rng: np.random.Generator, n: int, base: Period) -> dict[str, np.ndarray]:
    """Draw one chunk of customer profiles. Depends only on the rng and the base period."""
    age = np.clip(rng.normal(44, 15, n), 18, 90).round()
    income = rng.lognormal(np.log(34_000), 0.5, n)
    rate = rng.gamma(2.0, 0.15, n)  # transactions per day
    young = (age < 35).astype(float)
    channel_alpha = np.stack([6 - 3 * young, 2 + young, 2 + 3 * young], axis=1)  # pos, online, mobile
    churn_prob = 0.14 + 0.10 * (rate < 0.2) + 0.06 * young
    churns = rng.random(n) < churn_prob
    # churn dates spread over the base period and beyond it, so some churn is never seen
    churn_day = rng.uniform(45, base.days + 150, n)
    fade_days = np.where(rng.random(n) < 0.4, 0.0, rng.uniform(15, 100, n))
    quiet_start = np.where(rng.random(n) < 0.5, rng.uniform(0, base.days + 150, n), np.inf)
    return {
        "age": age,
        "income": income,
        "spend_scale": np.sqrt(income / 34_000) * rng.lognormal(0, 0.25, n),
        "rate": rate,
        "category_p": np.stack([rng.dirichlet(CATEGORY_WEIGHT * 15) for _ in range(n)]),
        "channel_p": np.stack([rng.dirichlet(a) for a in channel_alpha]),
        "hour_center": rng.normal(14, 2.5, n),
        "hour_spread": rng.uniform(2, 4.5, n),
        "n_devices": rng.integers(1, 4, n),
        "home": rng.choice(len(HOME_COUNTRIES), n, p=HOME_WEIGHT),
        "signup_days_before": rng.integers(30, 3650, n),
        "churn_day": np.where(churns, churn_day, np.inf),
        "fade_days": fade_days,
        "quiet_start": quiet_start,
        "quiet_days": rng.uniform(14, 90, n),
        "quiet_level": np.where(rng.random(n) < 0.4, 0.0, rng.uniform(0.02, 0.3, n)),
        "fraud_rate": rng.gamma(0.5, 0.0012, n),  # compromise incidents per day
        "new_phone_day": np.where(rng.random(n) < 0.3, rng.uniform(0, base.days + 150, n), np.inf),
    }


def _activity(p: dict[str, np.ndarray], day: np.ndarray) -> np.ndarray:
    """Multiplier of each customer's activity on each day since the base start (customers x days)."""
    d = day[None, :]
    churn = p["churn_day"][:, None]
    fade = np.maximum(p["fade_days"][:, None], 1e-9)
    level = np.clip((churn - d) / fade, 0.0, 1.0) * 0.9 + 0.1
    level = np.where(d >= churn, 0.0, level)
    in_quiet = (d >= p["quiet_start"][:, None]) & (d < p["quiet_start"][:, None] + p["quiet_days"][:, None])
    return level * np.where(in_quiet, p["quiet_level"][:, None], 1.0)


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row from a matrix of row-wise probabilities."""
    u = rng.random(len(probs))[:, None]
    return (u > np.cumsum(probs, axis=1)).sum(axis=1).clip(max=probs.shape[1] - 1)


def _transactions(
    rng: np.random.Generator, p: dict[str, np.ndarray], base: Period, period: Period, drifted: bool
) -> pd.DataFrame:
    offset = (period.start - base.start).days
    day = np.arange(offset, offset + period.days)
    dates = pd.date_range(period.start, periods=period.days, freq="D")
    seasonal = WEEKDAY_FACTOR[dates.dayofweek] * MONTH_FACTOR[dates.month - 1]
    rate = p["rate"][:, None] * seasonal[None, :] * _activity(p, day)
    counts = rng.poisson(rate)
    cust, day_idx = np.nonzero(counts)
    reps = counts[cust, day_idx]
    cust, day_idx = np.repeat(cust, reps), np.repeat(day_idx, reps)
    n = len(cust)

    hour = np.mod(rng.normal(p["hour_center"][cust], p["hour_spread"][cust]), 24)
    category = _pick(rng, p["category_p"][cust])
    channel = _pick(rng, p["channel_p"][cust])  # pos, online, mobile: same order as CHANNELS
    channel = np.where((category == ONLINE_RETAIL) & (channel == POS), ONLINE, channel)
    channel = np.where(category == CASH, ATM, channel)
    amount = np.exp(np.log(CATEGORY_MEDIAN_AMOUNT[category] * p["spend_scale"][cust]) + rng.normal(0, 0.55, n))
    abroad = ((category == TRAVEL) & (rng.random(n) < 0.5)) | (rng.random(n) < 0.01)
    country = np.where(abroad, rng.choice(ABROAD, n), HOME_COUNTRIES[p["home"][cust]])
    device = rng.integers(0, p["n_devices"][cust])
    device = np.where(day_idx + offset >= p["new_phone_day"][cust], 8, device)  # a replaced phone or card
    fraud = np.zeros(n, dtype=np.int8)

    # fraud bursts on compromised cards, only while the customer is still a customer
    incidents = rng.poisson(p["fraud_rate"] * period.days)
    f_cust = np.repeat(np.arange(len(incidents)), incidents)
    f_day = rng.uniform(0, period.days, len(f_cust))
    alive = f_day + offset < p["churn_day"][f_cust]
    f_cust, f_day = f_cust[alive], f_day[alive]
    size = 1 + rng.poisson(1.8, len(f_cust))
    f_cust, f_start = np.repeat(f_cust, size), np.repeat(f_day, size)
    m = len(f_cust)
    if m:
        burst_pos = np.concatenate([np.arange(s) for s in size])
        night = rng.random(len(size)) < 0.5
        start_hour = np.where(night, rng.uniform(0, 5, len(size)), rng.uniform(0, 24, len(size)))
        f_time = np.floor(f_start) * 24 + np.repeat(start_hour, size) + burst_pos * rng.exponential(0.25, m)
        f_day_idx = np.minimum(f_time // 24, period.days - 1).astype(int)
        f_hour = np.mod(f_time, 24)
        f_category = np.where(rng.random(m) < 0.7, rng.choice(RISKY_CATEGORIES, m), _pick(rng, p["category_p"][f_cust]))
        f_channel = np.where(rng.random(m) < 0.6, rng.choice([ONLINE, MOBILE], m), POS)
        f_channel = np.where(f_category == CASH, ATM, f_channel)
        typical = CATEGORY_MEDIAN_AMOUNT[f_category] * p["spend_scale"][f_cust]
        multiplier = np.where(rng.random(m) < 0.75, rng.lognormal(np.log(5), 0.7, m), rng.lognormal(0, 0.55, m))
        f_country = np.where(
            rng.random(m) < 0.45, rng.choice(FRAUD_COUNTRIES, m), HOME_COUNTRIES[p["home"][f_cust]]
        )
        new_device = rng.random(m) < 0.6
        f_device = np.where(new_device, 9, rng.integers(0, p["n_devices"][f_cust]))
        cust = np.concatenate([cust, f_cust])
        day_idx = np.concatenate([day_idx, f_day_idx])
        hour = np.concatenate([hour, f_hour])
        category = np.concatenate([category, f_category])
        channel = np.concatenate([channel, f_channel])
        amount = np.concatenate([amount, typical * multiplier])
        country = np.concatenate([country, f_country])
        device = np.concatenate([device, f_device])
        fraud = np.concatenate([fraud, np.ones(m, dtype=np.int8)])

    if drifted:
        amount = amount * 1.4
        channel = np.where((channel == POS) & (rng.random(len(channel)) < 0.5), MOBILE, channel)

    seconds = (day_idx * 86_400 + hour * 3600).astype(np.int64)
    timestamp = pd.Timestamp(period.start, tz="UTC") + pd.to_timedelta(seconds, unit="s")
    device_codes = pd.Series(device).astype(str)
    return pd.DataFrame(
        {
            "cust": cust,
            "timestamp": timestamp,
            "amount": np.round(np.maximum(amount, 0.5), 2),
            "merchant_id": pd.Series(category * 1000 + rng.integers(0, 400, len(cust))).map("M{:05d}".format).to_numpy(),
            "merchant_category": np.asarray(MERCHANT_CATEGORIES)[category],
            "channel": np.asarray(CHANNELS)[channel],
            "country": country,
            "device_suffix": np.where(device_codes == "9", "X" + pd.Series(rng.integers(0, 10**6, len(cust))).astype(str), device_codes),
            "is_fraud": fraud,
        }
    )


def _chunk_rng(seed: int, chunk: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, chunk, stream])


def generate_chunk(seed: int, chunk: int, n: int, base: Period, period: Period, drifted: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers and transactions of one chunk, for one period."""
    profiles = _profiles(_chunk_rng(seed, chunk, 0), n, base)
    ids = np.array([f"C{chunk * CHUNK_CUSTOMERS + i + 1:07d}" for i in range(n)])
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_date": pd.Timestamp(base.start, tz="UTC") - pd.to_timedelta(profiles["signup_days_before"], unit="D"),
            "age": profiles["age"],
            "home_country": HOME_COUNTRIES[profiles["home"]],
        }
    )
    stream = 1 + (period.start - base.start).days  # a later period draws from a different stream
    tx = _transactions(_chunk_rng(seed, chunk, stream), profiles, base, period, drifted)
    tx = tx.sort_values(["cust", "timestamp"], kind="stable").reset_index(drop=True)
    tx.insert(0, "customer_id", ids[tx.pop("cust").to_numpy()])
    tx["device_id"] = "D" + tx["customer_id"].str[1:] + "-" + tx.pop("device_suffix")
    tx.insert(0, "transaction_id", [f"T{chunk:04d}{stream:04d}{i:09d}" for i in range(len(tx))])
    return customers, tx[["transaction_id", "customer_id", "timestamp", "amount", "merchant_id",
                          "merchant_category", "channel", "country", "device_id", "is_fraud"]]


@dataclass
class GenerationSummary:
    customers: int
    transactions: int
    fraud_transactions: int
    start: date
    end: date

    @property
    def fraud_rate(self) -> float:
        return self.fraud_transactions / max(self.transactions, 1)


def generate(
    out_dir: Path,
    n_customers: int,
    months: int,
    start: date,
    seed: int,
    drift_months: int = 0,
    progress: bool = True,
    later_days: int = 30,
) -> GenerationSummary:
    """Write customers.parquet and transactions.parquet, the next `later_days` to
    transactions_later.parquet, and, with drift_months, the drifted period to
    transactions_drift.parquet with its manifest, under out_dir, chunk by chunk."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = Period(start, add_months(start, months))
    periods = [(base, False, out_dir / "transactions.parquet")]
    if later_days:
        periods.append((Period(base.end, base.end + timedelta(days=later_days)), False, out_dir / LATER_TRANSACTIONS))
    if drift_months:
        drift = Period(base.end, add_months(base.end, drift_months))
        periods.append((drift, True, out_dir / "transactions_drift.parquet"))

    writers: dict[Path, pq.ParquetWriter] = {}
    n_tx = n_fraud = 0
    n_chunks = -(-n_customers // CHUNK_CUSTOMERS)
    try:
        for chunk in tqdm(range(n_chunks), desc="generating customers", unit="chunk", disable=not progress):
            n = min(CHUNK_CUSTOMERS, n_customers - chunk * CHUNK_CUSTOMERS)
            for period, drifted, path in periods:
                customers, tx = generate_chunk(seed, chunk, n, base, period, drifted)
                _append(writers, path, tx)
                if period == base:
                    n_tx += len(tx)
                    n_fraud += int(tx["is_fraud"].sum())
            _append(writers, out_dir / "customers.parquet", customers)
    finally:
        for writer in writers.values():
            writer.close()

    if drift_months:
        manifest = {
            "period": {"start": str(drift.start), "end": str(drift.end)},
            "shifted_columns": DRIFT_SHIFTS,
            "unshifted_columns": ["merchant_category", "country", "timestamp (hour and rhythm)", "device_id"],
            "features_expected_to_move": DRIFT_FEATURES_MOVED,
        }
        (out_dir / "drift_manifest.json").write_text(json.dumps(manifest, indent=2))
    return GenerationSummary(n_customers, n_tx, n_fraud, base.start, base.end)


def _append(writers: dict[Path, pq.ParquetWriter], path: Path, frame: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if path not in writers:
        writers[path] = pq.ParquetWriter(path, table.schema)
    writers[path].write_table(table)

