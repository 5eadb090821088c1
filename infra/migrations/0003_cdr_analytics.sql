-- Materialized views for analysts (queries in docs/analytics.md), fed by every insert into cdr.
--
-- Why per-leg projections and not SummingMergeTree totals: a materialized view sees every
-- *insert*, and the sink may insert a leg twice (replay after a crash) or a new price version of
-- it (re-rate). Pre-summed totals would count those twice. Each view below therefore keeps one
-- narrow row per leg in a ReplacingMergeTree(version) sorted by day (and by a dimension that never
-- changes for a leg), so `FINAL` collapses replays and re-rates exactly, as on cdr itself, while a
-- day-range query reads a few narrow columns instead of the whole CDR.

-- Revenue and minutes per day per payer (also: what unauthenticated leg A cost the Callback User).
CREATE TABLE IF NOT EXISTS callback.revenue_by_payer_daily
(
    day         Date,
    payer_kind  Enum8('user' = 1, 'card' = 2, 'callback_user' = 3),
    payer_id    String,
    leg_id      String,
    version     UInt64,
    leg         Enum8('initiation' = 1, 'a' = 2, 'b' = 3),
    answered    UInt8,
    billsec     UInt32,
    billed_s    UInt32,
    price       Decimal(18, 8),
    currency    FixedString(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, payer_kind, payer_id, leg_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS callback.revenue_by_payer_daily_mv TO callback.revenue_by_payer_daily
AS SELECT toDate(start_time) AS day, payer_kind, payer_id, leg_id, version, leg,
          disposition = 'ANSWERED' AS answered, billsec, billed_s, price, currency
FROM callback.cdr;

-- Revenue, minutes, ASR and ACD per day per destination prefix. The prefix a leg matched may
-- change when it is re-rated against a new tariff, so it is a column, not part of the key.
CREATE TABLE IF NOT EXISTS callback.revenue_by_prefix_daily
(
    day             Date,
    leg_id          String,
    version         UInt64,
    leg             Enum8('initiation' = 1, 'a' = 2, 'b' = 3),
    tariff_id       String,
    matched_prefix  String,
    disposition     Enum8('ANSWERED' = 1, 'NO ANSWER' = 2, 'BUSY' = 3, 'FAILED' = 4, 'CONGESTION' = 5),
    answered        UInt8,
    duration        UInt32,
    billsec         UInt32,
    billed_s        UInt32,
    price           Decimal(18, 8),
    currency        FixedString(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, leg_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS callback.revenue_by_prefix_daily_mv TO callback.revenue_by_prefix_daily
AS SELECT toDate(start_time) AS day, leg_id, version, leg, tariff_id, matched_prefix, disposition,
          disposition = 'ANSWERED' AS answered, duration, billsec, billed_s, price, currency
FROM callback.cdr;

-- Revenue and minutes per day per access number (DID); '' = legs without a DID (web callbacks).
CREATE TABLE IF NOT EXISTS callback.revenue_by_did_daily
(
    day         Date,
    did         String,
    leg_id      String,
    version     UInt64,
    leg         Enum8('initiation' = 1, 'a' = 2, 'b' = 3),
    answered    UInt8,
    billsec     UInt32,
    billed_s    UInt32,
    price       Decimal(18, 8),
    currency    FixedString(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, did, leg_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS callback.revenue_by_did_daily_mv TO callback.revenue_by_did_daily
AS SELECT toDate(start_time) AS day, did, leg_id, version, leg,
          disposition = 'ANSWERED' AS answered, billsec, billed_s, price, currency
FROM callback.cdr;

-- Callback outcomes per day: every leg of every callback with its disposition and session state,
-- sorted so one callback's legs sit together (success rate, retries, refused initiations).
CREATE TABLE IF NOT EXISTS callback.callback_outcomes_daily
(
    day          Date,
    callback_id  String,
    leg_id       String,
    version      UInt64,
    leg          Enum8('initiation' = 1, 'a' = 2, 'b' = 3),
    attempt      UInt16,
    disposition  Enum8('ANSWERED' = 1, 'NO ANSWER' = 2, 'BUSY' = 3, 'FAILED' = 4, 'CONGESTION' = 5),
    q850_cause   Nullable(UInt16),
    sip_code     Nullable(UInt16),
    final_state  String,
    auth_method  String,
    src          String,
    dst          String,
    did          String,
    payer_kind   Enum8('user' = 1, 'card' = 2, 'callback_user' = 3),
    price        Decimal(18, 8),
    currency     FixedString(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, callback_id, leg_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS callback.callback_outcomes_daily_mv TO callback.callback_outcomes_daily
AS SELECT toDate(start_time) AS day, callback_id, leg_id, version, leg, attempt, disposition, q850_cause,
          sip_code, final_state, auth_method, src, dst, did, payer_kind, price, currency
FROM callback.cdr;

-- Price history: every version a leg was ever rated at (cdr FINAL shows only the current one).
-- Keyed by (leg_id, version), so a replayed insert collapses and every re-rate stays visible.
CREATE TABLE IF NOT EXISTS callback.cdr_versions
(
    leg_id          String,
    version         UInt64,
    start_time      DateTime,
    rated_at        DateTime,
    payer_kind      Enum8('user' = 1, 'card' = 2, 'callback_user' = 3),
    payer_id        String,
    tariff_id       String,
    matched_prefix  String,
    rate_per_minute Decimal(18, 8),
    connection_fee  Decimal(18, 8),
    increment_s     UInt32,
    minimal_time_s  UInt32,
    grace_time_s    UInt32,
    billed_s        UInt32,
    price           Decimal(18, 8),
    currency        FixedString(3)
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(start_time)
ORDER BY (leg_id, version);

CREATE MATERIALIZED VIEW IF NOT EXISTS callback.cdr_versions_mv TO callback.cdr_versions
AS SELECT leg_id, version, start_time, rated_at, payer_kind, payer_id, tariff_id, matched_prefix,
          rate_per_minute, connection_fee, increment_s, minimal_time_s, grace_time_s, billed_s, price, currency
FROM callback.cdr;
