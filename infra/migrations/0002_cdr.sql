-- Rated CDRs: one row per leg (initiation, A or B), written by `callback cdr-sink` from cdr.rated.
-- ReplacingMergeTree(version) keyed by leg_id: a replay after a crash inserts identical rows and a
-- re-rate inserts a higher version, so `FROM callback.cdr FINAL` (or argMax(.., version)) always
-- shows exactly one current row per leg. Monthly partitions by start time: retention is
-- `ALTER TABLE callback.cdr DROP PARTITION 202401`.
-- Times are DateTime (UTC, whole seconds) plus a *_ms UInt16 column for the milliseconds, because
-- 18.16 has no DateTime64. Money is Decimal(18, 8): tariffs round prices to at most 8 places, and
-- sum() of Decimal(18, 8) is an exact Decimal(38, 8), so analysts' totals are exact to the cent.
-- Optional text fields (did, pbx_id, src, auth_method, final_state) are '' when unknown.
CREATE TABLE IF NOT EXISTS callback.cdr
(
    leg_id          String,
    callback_id     String,
    attempt         UInt16,
    leg             Enum8('initiation' = 1, 'a' = 2, 'b' = 3),
    version         UInt64,
    src             String,
    dst             String,
    did             String,
    pbx_id          String,
    start_time      DateTime,
    start_ms        UInt16,
    answer_time     Nullable(DateTime),
    answer_ms       UInt16,
    end_time        DateTime,
    end_ms          UInt16,
    duration        UInt32,
    billsec         UInt32,
    duration_ms     UInt64,
    billsec_ms      UInt64,
    billed_s        UInt32,
    disposition     Enum8('ANSWERED' = 1, 'NO ANSWER' = 2, 'BUSY' = 3, 'FAILED' = 4, 'CONGESTION' = 5),
    q850_cause      Nullable(UInt16),
    sip_code        Nullable(UInt16),
    payer_kind      Enum8('user' = 1, 'card' = 2, 'callback_user' = 3),
    payer_id        String,
    tariff_id       String,
    matched_prefix  String,
    rate_per_minute Decimal(18, 8),
    connection_fee  Decimal(18, 8),
    increment_s     UInt32,
    minimal_time_s  UInt32,
    grace_time_s    UInt32,
    price           Decimal(18, 8),
    currency        FixedString(3),
    auth_method     String,
    final_state     String,
    rated_at        DateTime,
    rated_ms        UInt16,
    inserted_at     DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(start_time)
ORDER BY leg_id;
