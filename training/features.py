"""Customer features as of snapshot dates, and churn labels from the window after each snapshot.

One implementation feeds both sides: the offline training sets (every snapshot) and the online
store (the last snapshot, at the end of the data), so what a model learns from is what it is
served. Every feature of a snapshot uses only transactions strictly before it.

    table = compute_features(transactions, snapshot_dates(transactions, every_days=30, min_history_days=90))
    labels = churn_labels(transactions, table, horizon_days=60)

The computation is vectorised: per snapshot, a handful of ``np.bincount`` passes over the
transactions of the year before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from core.feature_sets import ACTIVITY_FEATURES, RISK_FEATURES, SPEND_MIX_FEATURES, WINDOWS
from core.realtime import LIST_SEPARATOR
from core.schema import CHANNELS, MERCHANT_CATEGORIES

DAY = 86_400  # seconds
NUMERIC_FEATURES = ACTIVITY_FEATURES + SPEND_MIX_FEATURES + RISK_FEATURES
# Non-numeric features the request-time fraud features compare against; the *_seen ones are
# sets of names joined by LIST_SEPARATOR.
PROFILE_FEATURES = ["home_country", "countries_seen", "devices_seen", "categories_seen"]

ENTITY = "customer_id"
TIMESTAMP = "event_timestamp"


@dataclass
class _Encoded:
    """Transactions as integer-coded numpy arrays, sorted by customer then time."""

    customers: np.ndarray  # customer id per code
    cust: np.ndarray
    ts: np.ndarray  # seconds since epoch
    amount: np.ndarray
    category: np.ndarray
    channel: np.ndarray
    country: np.ndarray
    countries: np.ndarray
    device: np.ndarray
    devices: np.ndarray
    merchant: np.ndarray
    hour: np.ndarray
    weekend: np.ndarray
    gap_days: np.ndarray  # days since the same customer's previous transaction (nan for the first)


def _encode(tx: pd.DataFrame) -> _Encoded:
    tx = tx.sort_values([ENTITY, "timestamp"], kind="stable")
    cust, customers = pd.factorize(tx[ENTITY], sort=True)
    ts = tx["timestamp"].to_numpy(dtype="datetime64[s]").astype(np.int64)
    # codes in sorted order, not in order of appearance: a customer's features must not depend on
    # which other customers' transactions are in the same frame (a partition holds only some)
    country, countries = pd.factorize(tx["country"], sort=True)
    device, devices = pd.factorize(tx["device_id"], sort=True)
    gap = np.diff(ts, prepend=ts[0]).astype(float) / DAY
    gap[np.r_[True, cust[1:] != cust[:-1]]] = np.nan
    seconds_of_day = ts % DAY
    return _Encoded(
        customers=np.asarray(customers),
        cust=cust,
        ts=ts,
        amount=tx["amount"].to_numpy(dtype=float),
        category=pd.Categorical(tx["merchant_category"], categories=MERCHANT_CATEGORIES).codes,
        channel=pd.Categorical(tx["channel"], categories=CHANNELS).codes,
        country=country,
        countries=np.asarray(countries),
        device=device,
        devices=np.asarray(devices),
        merchant=pd.factorize(tx["merchant_id"])[0],
        hour=seconds_of_day / 3600.0,
        weekend=((ts // DAY + 3) % 7) >= 5,  # 1970-01-01 was a Thursday
        gap_days=gap,
    )


def snapshot_dates(tx: pd.DataFrame, every_days: int, min_history_days: int) -> list[pd.Timestamp]:
    """Snapshots every `every_days` from `min_history_days` after the first transaction up to the
    day after the last one (that last snapshot is the one served online)."""
    return snapshot_dates_between(tx["timestamp"].min(), tx["timestamp"].max(), every_days, min_history_days)


def snapshot_dates_between(first: pd.Timestamp, last: pd.Timestamp, every_days: int, min_history_days: int) -> list[pd.Timestamp]:
    """snapshot_dates for transactions from `first` to `last`."""
    first = first.normalize()
    end = last.normalize() + pd.Timedelta(days=1)
    dates = list(pd.date_range(first + pd.Timedelta(days=min_history_days), end, freq=f"{every_days}D"))
    if not dates or dates[-1] != end:
        dates.append(end)
    return dates


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _group_quantiles(cust: np.ndarray, values: np.ndarray, n: int, qs: tuple[float, ...]) -> list[np.ndarray]:
    """Per-group quantiles (linear interpolation) for integer group codes, one array per q in `qs`
    from one sort; nan for empty groups."""
    order = np.lexsort((values, cust))
    sorted_values = values[order]
    counts = np.bincount(cust, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    quantiles = []
    for q in qs:
        # the position within the group, then the group's start: a fraction taken after adding the start
        # would carry the rounding of a large number, and so depend on the groups before this one
        within = (np.maximum(counts, 1) - 1) * q
        lo, hi = starts + np.floor(within).astype(int), starts + np.ceil(within).astype(int)
        out = np.full(n, np.nan)
        lo, hi, frac = lo[has], hi[has], (within - np.floor(within))[has]
        out[has] = sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac
        quantiles.append(out)
    return quantiles


def _totals_by_code(cust: np.ndarray, code: np.ndarray, mask: np.ndarray, k: int, n: int,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Per customer and code (0 ≤ code < k), the rows of `mask` counted, or their `weights` summed: an
    (n, k) array from one bincount of (customer, code) pairs, which adds each pair's weights in the
    same order as one bincount per code would."""
    mask = mask & (code >= 0)
    keys = cust[mask] * k + code[mask]
    return np.bincount(keys, None if weights is None else weights[mask], minlength=n * k).reshape(n, k).astype(float)


def _distinct(cust: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (customer, code) pairs: their customers, codes, and occurrence counts."""
    width = int(code.max()) + 1 if len(code) else 1
    pairs = cust.astype(np.int64) * width + code
    if len(pairs) and pairs.max() < 8 * len(pairs) + 2**20:  # few possible pairs (days, weeks): count them all, no sort
        counts = np.bincount(pairs)
        pairs = np.flatnonzero(counts)
        counts = counts[pairs]
    else:
        pairs, counts = np.unique(pairs, return_counts=True)
    return pairs // width, pairs % width, counts


def _count_distinct(cust: np.ndarray, code: np.ndarray, n: int) -> np.ndarray:
    """Per customer, how many distinct codes it has."""
    return np.bincount(_distinct(cust, code)[0], minlength=n).astype(float)


def _lists(pair_cust: np.ndarray, pair_code: np.ndarray, names: np.ndarray, n: int) -> list[str]:
    """Per customer, the sorted distinct names seen (from _distinct's pairs), joined by LIST_SEPARATOR.

    Plain strings rather than lists: Feast's file offline store pickles object columns to hash
    them, which made point-in-time joins a hundred times slower."""
    bounds = np.searchsorted(pair_cust, np.arange(n + 1))
    labels = names[pair_code]
    return [LIST_SEPARATOR.join(sorted(labels[bounds[i]:bounds[i + 1]].tolist())) for i in range(n)]


def _snapshot(e: _Encoded, snapshot: pd.Timestamp) -> pd.DataFrame:
    n = len(e.customers)
    s = int(snapshot.timestamp())
    before = e.ts < s
    year = before & (e.ts >= s - 365 * DAY)
    if not year.any():
        return pd.DataFrame()
    age_days = (s - e.ts) / DAY
    f: dict[str, np.ndarray] = {}

    def count(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(e.cust[mask], None if weights is None else weights[mask], minlength=n).astype(float)

    # transactions are in (customer, time) order: a customer's first and last before the snapshot
    # are the two ends of its run of them
    cust_before, ts_before = e.cust[before], e.ts[before]
    new_customer = cust_before[1:] != cust_before[:-1]
    starts, ends = np.r_[True, new_customer][:len(cust_before)], np.r_[new_customer, True][:len(cust_before)]
    last = np.full(n, -np.inf)
    last[cust_before[ends]] = ts_before[ends]
    first = np.full(n, np.inf)
    first[cust_before[starts]] = ts_before[starts]
    f["days_since_last_txn"] = (s - last) / DAY
    f["days_since_first_txn"] = (s - first) / DAY

    window = {w: before & (age_days <= w) for w in (*WINDOWS, 365)}
    for w in WINDOWS:
        f[f"txn_count_{w}d"] = count(window[w])
        f[f"spend_{w}d"] = count(window[w], e.amount)
    f["avg_amount_30d"] = _ratio(f["spend_30d"], f["txn_count_30d"])
    f["avg_amount_90d"] = _ratio(f["spend_90d"], f["txn_count_90d"])
    day_index = (s - e.ts) // DAY
    for w in (30, 90):
        f[f"active_days_{w}d"] = _count_distinct(e.cust[window[w]], day_index[window[w]], n)
    recent_weeks = before & (age_days <= 84)
    week = (s - e.ts[recent_weeks]) // (7 * DAY)  # 0 = the week just before the snapshot
    f["active_weeks_12w"] = _count_distinct(e.cust[recent_weeks], week, n)

    f["spend_trend_30_90"] = _ratio(f["spend_30d"], f["spend_90d"] / 3)
    f["count_trend_30_90"] = _ratio(f["txn_count_30d"], f["txn_count_90d"] / 3)
    f["spend_trend_90_180"] = _ratio(f["spend_90d"], f["spend_180d"] - f["spend_90d"])
    f["count_trend_90_180"] = _ratio(f["txn_count_90d"], f["txn_count_180d"] - f["txn_count_90d"])
    # slope of weekly totals over the last 12 weeks, per week, relative to the mean week
    centred = (5.5 - week).astype(float)  # time runs forward; the mean week index is 5.5
    denominator = 143.0  # sum over k = 0..11 of (k - 5.5)^2
    spend_slope = np.bincount(e.cust[recent_weeks], centred * e.amount[recent_weeks], minlength=n) / denominator
    count_slope = np.bincount(e.cust[recent_weeks], centred, minlength=n) / denominator
    spend_84 = count(recent_weeks, e.amount)
    count_84 = count(recent_weeks)
    f["spend_slope_12w"] = _ratio(spend_slope, spend_84 / 12)
    f["count_slope_12w"] = _ratio(count_slope, count_84 / 12)

    for w in (90, 180):
        has_gap = window[w] & ~np.isnan(e.gap_days)
        gaps = count(has_gap)
        mean_gap = _ratio(count(has_gap, e.gap_days), gaps)
        f[f"gap_mean_{w}d"] = np.where(gaps > 0, mean_gap, w)
        if w == 90:
            square = _ratio(count(has_gap, e.gap_days**2), gaps)
            f["gap_std_90d"] = np.sqrt(np.maximum(square - mean_gap**2, 0.0))
            gap_max = np.zeros(n)
            np.maximum.at(gap_max, e.cust[has_gap], e.gap_days[has_gap])
            f["gap_max_90d"] = gap_max
    f["recency_vs_gap"] = f["days_since_last_txn"] / np.maximum(f["gap_mean_90d"], 1.0)

    w90 = window[90]
    by_category = _totals_by_code(e.cust, e.category, w90, len(MERCHANT_CATEGORIES), n, e.amount)
    for i, name in enumerate(MERCHANT_CATEGORIES):
        f[f"share_{name}_90d"] = _ratio(by_category[:, i], f["spend_90d"])
    by_channel = _totals_by_code(e.cust, e.channel, w90, len(CHANNELS), n)
    for i, name in enumerate(CHANNELS):
        f[f"share_{name}_90d"] = _ratio(by_channel[:, i], f["txn_count_90d"])
    f["distinct_categories_90d"] = _count_distinct(e.cust[w90], e.category[w90], n)
    f["distinct_merchants_90d"] = _count_distinct(e.cust[w90], e.merchant[w90], n)
    f["weekend_share_90d"] = _ratio(count(w90 & e.weekend), f["txn_count_90d"])

    median, p95, largest = _group_quantiles(e.cust[w90], e.amount[w90], n, (0.5, 0.95, 1.0))
    f["median_amount_90d"], f["p95_amount_90d"], f["max_amount_90d"] = map(np.nan_to_num, (median, p95, largest))
    mean_square = _ratio(count(w90, e.amount**2), f["txn_count_90d"])
    f["std_amount_90d"] = np.sqrt(np.maximum(mean_square - f["avg_amount_90d"] ** 2, 0.0))
    y = window[365]
    log_amount = np.log1p(e.amount)
    count_year = count(y)
    f["avg_log_amount_365d"] = _ratio(count(y, log_amount), count_year)
    f["std_log_amount_365d"] = np.sqrt(np.maximum(_ratio(count(y, log_amount**2), count_year) - f["avg_log_amount_365d"] ** 2, 0.0))

    angle = e.hour * (2 * np.pi / 24)
    mean_cos = _ratio(count(w90, np.cos(angle)), f["txn_count_90d"])
    mean_sin = _ratio(count(w90, np.sin(angle)), f["txn_count_90d"])
    resultant = np.clip(np.hypot(mean_cos, mean_sin), 1e-6, 1.0)
    f["hour_mean_90d"] = np.mod(np.arctan2(mean_sin, mean_cos), 2 * np.pi) * 24 / (2 * np.pi)
    f["hour_std_90d"] = np.sqrt(-2 * np.log(resultant)) * 24 / (2 * np.pi)
    f["night_share_90d"] = _ratio(count(w90 & (e.hour < 6)), f["txn_count_90d"])

    pair_cust, pair_country, pair_count = _distinct(e.cust[y], e.country[y])
    f["distinct_countries_365d"] = np.bincount(pair_cust, minlength=n).astype(float)
    # home country: the one used most in the year (ties: the first in alphabetical order)
    order = np.lexsort((-pair_count, pair_cust))
    first_of_customer = np.r_[True, pair_cust[order][1:] != pair_cust[order][:-1]]
    home = np.full(n, -1)
    home[pair_cust[order][first_of_customer]] = pair_country[order][first_of_customer]
    f["foreign_share_90d"] = _ratio(count(w90 & (e.country != home[e.cust])), f["txn_count_90d"])
    device_cust, device_code, _ = _distinct(e.cust[y], e.device[y])
    f["distinct_devices_365d"] = np.bincount(device_cust, minlength=n).astype(float)

    seen = count_year > 0
    table = pd.DataFrame({name: f[name][seen] for name in NUMERIC_FEATURES})
    table.insert(0, TIMESTAMP, snapshot)
    table.insert(0, ENTITY, e.customers[seen])
    table["home_country"] = np.where(home[seen] >= 0, e.countries[np.maximum(home[seen], 0)], "")
    table["countries_seen"] = [v for v, keep in zip(_lists(pair_cust, pair_country, e.countries, n), seen) if keep]
    table["devices_seen"] = [v for v, keep in zip(_lists(device_cust, device_code, e.devices, n), seen) if keep]
    categories = np.asarray(MERCHANT_CATEGORIES)
    category_cust, category_code, _ = _distinct(e.cust[y], e.category[y])
    table["categories_seen"] = [v for v, keep in zip(_lists(category_cust, category_code, categories, n), seen) if keep]
    return table


def compute_features(tx: pd.DataFrame, snapshots: list[pd.Timestamp], progress: bool = False) -> pd.DataFrame:
    """Feature rows (customer_id, event_timestamp, features...) for every customer with a
    transaction in the year before each snapshot."""
    encoded = _encode(tx)
    frames = [_snapshot(encoded, s) for s in tqdm(snapshots, desc="features", unit="snapshot", disable=not progress)]
    table = pd.concat([f for f in frames if len(f)], ignore_index=True)
    table[NUMERIC_FEATURES] = table[NUMERIC_FEATURES].astype(np.float64)
    return table


def churn_labels(tx: pd.DataFrame, features: pd.DataFrame, horizon_days: int,
                 data_end: pd.Timestamp | None = None) -> pd.DataFrame:
    """`churned` = 1 when the customer makes no transaction in the `horizon_days` after the snapshot.

    Only snapshots whose whole horizon lies inside the data (up to `data_end`, by default the last
    transaction of `tx`; give the whole data's when `tx` is a part of it) are labelled."""
    data_end = tx["timestamp"].max() if data_end is None else data_end
    horizon = pd.Timedelta(days=horizon_days)
    rows = features[[ENTITY, TIMESTAMP]]
    rows = rows[rows[TIMESTAMP] + horizon <= data_end]
    labels = []
    for snapshot, group in rows.groupby(TIMESTAMP):
        after = tx[(tx["timestamp"] >= snapshot) & (tx["timestamp"] < snapshot + horizon)]
        active = group[ENTITY].isin(after[ENTITY].unique())
        labels.append(group.assign(churned=(~active).astype(np.int8).to_numpy()))
    return pd.concat(labels, ignore_index=True) if labels else rows.assign(churned=np.int8(0))
