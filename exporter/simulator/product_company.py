"""A simulated product's own database, for the `sql` source: users, their events, NPS answers.

    write_product(seed=9, now=now, path="/tmp/product.db")   # an SQLite file

Tables (the names the demo config gives the sql source):

- `users(id, plan, created_at)`: sign-ups, about 100 a day (free, pro, business);
- `events(user_id, occurred_at)`: one row per active user and day, at a random
  moment of it: heavy users (20,000, active 95 % of days) and light ones
  (45,000, 4 %), so about 16,000 users active in any 24 hours and 52,000 in 30
  days, a stickiness of about 31 % (inside the documented DAU >= 10,000,
  MAU >= 50,000, DAU/MAU > 30 %);
- `nps_responses(score, responded_at)`: about 30 answers a day (NPS ~60,
  average ~8.5).

Events and answers run two days past `now`, so the product moves on as the
demo's clock runs. `ProductProfile(engagement_drop=...)` makes the last week
quieter (the engagement-drop scenario). Written with SQLAlchemy's own types, so
the sql source reads the dates the way it binds them. The events table has the
index on its time column that the active-users query wants.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

DAY = 86400
PLANS = (("free", 0.6), ("pro", 0.3), ("business", 0.1))


@dataclass(frozen=True)
class ProductProfile:
    heavy_users: int = 20_000
    heavy_activity: float = 0.95  # share of days a heavy user is active
    light_users: int = 45_000
    light_activity: float = 0.04
    signups_per_day: float = 100.0
    answers_per_day: float = 30.0
    history_days: int = 31  # the 30-day window, and the week before the last
    future_days: int = 2
    # The share of users still active in the last week (1: calm; the others stop).
    engagement_drop: float = 1.0


METADATA = sa.MetaData()
USERS = sa.Table("users", METADATA, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("plan", sa.String(16), nullable=False),
                 sa.Column("created_at", sa.DateTime, nullable=False))
EVENTS = sa.Table("events", METADATA, sa.Column("user_id", sa.Integer, nullable=False),
                  sa.Column("occurred_at", sa.DateTime, nullable=False),
                  sa.Index("events_occurred_at", "occurred_at"))
ANSWERS = sa.Table("nps_responses", METADATA, sa.Column("score", sa.Integer, nullable=False),
                   sa.Column("responded_at", sa.DateTime, nullable=False),
                   sa.Index("nps_responses_responded_at", "responded_at"))
# Scores 0-10 and how often each is given: ~70 % promoters, ~10 % detractors.
SCORES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
SCORE_WEIGHTS = (1, 0, 1, 1, 1, 2, 4, 8, 12, 30, 40)


def write_product(seed: int, now: float, path: str,
                  profile: ProductProfile = ProductProfile()) -> None:
    rng = random.Random(seed)
    first = int(now) // DAY * DAY - profile.history_days * DAY
    days = range(first, int(now) + profile.future_days * DAY, DAY)
    # From the start of the day a week ago: a day only partly in the last 7 days,
    # left at full activity, would fill the week just after midnight (UTC).
    drop_from = (int(now) - 7 * DAY) // DAY * DAY
    # Dates as SQLAlchemy writes DateTime to SQLite ("2026-12-01 09:30:00.000000"),
    # built from parts: the events are most of a demo's start-up time.
    clock = [f" {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000000" for s in range(DAY)]

    def date(day: int) -> str:
        return datetime.fromtimestamp(day, timezone.utc).strftime("%Y-%m-%d")

    users, events, answers = [], [], []
    for day in days:
        on = date(day)
        for _ in range(_poisson(rng, profile.signups_per_day)):
            plan = rng.choices([p for p, _ in PLANS], [w for _, w in PLANS])[0]
            users.append((len(users) + 1, plan, on + clock[rng.randrange(DAY)]))
        scale = profile.engagement_drop if day >= drop_from else 1.0
        for offset, count, activity in ((1, profile.heavy_users, profile.heavy_activity),
                                        (profile.heavy_users + 1, profile.light_users,
                                         profile.light_activity)):
            pool = int(count * scale)  # in a drop, the others have gone quiet altogether
            active = min(pool, _poisson(rng, pool * activity))
            events += [(offset + user, on + clock[rng.randrange(DAY)])
                       for user in rng.sample(range(pool), active)]
        answers += [(rng.choices(SCORES, SCORE_WEIGHTS)[0], on + clock[rng.randrange(DAY)])
                    for _ in range(_poisson(rng, profile.answers_per_day))]
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        METADATA.drop_all(engine)
        METADATA.create_all(engine)
        with engine.begin() as connection:
            raw = connection.connection.driver_connection  # executemany of tuples: fast
            raw.executemany("INSERT INTO users (id, plan, created_at) VALUES (?, ?, ?)", users)
            raw.executemany("INSERT INTO events (user_id, occurred_at) VALUES (?, ?)", events)
            raw.executemany("INSERT INTO nps_responses (score, responded_at) VALUES (?, ?)",
                            answers)
    finally:
        engine.dispose()


_written: dict[tuple, str] = {}
_lock = threading.Lock()


def product_database(seed: int, now: float, profile: ProductProfile = ProductProfile()) -> str:
    """The path of a product database for this seed and profile, written once per hour of
    `now` and process (it takes a few seconds; several demos in one process share it)."""
    key = (seed, int(now) // 3600, profile)
    with _lock:
        if key not in _written:
            directory = tempfile.mkdtemp(prefix="kpi-exporter-product-")
            atexit.register(shutil.rmtree, directory, True)
            path = os.path.join(directory, "product.db")
            write_product(seed, now, path, profile)
            _written[key] = path
        return _written[key]


def _poisson(rng: random.Random, mean: float) -> int:
    """Arrivals in a day: normal enough at these rates, never negative."""
    return max(0, round(rng.gauss(mean, mean ** 0.5)))


__all__ = ["ProductProfile", "write_product"]
