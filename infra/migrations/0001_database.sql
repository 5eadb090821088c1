-- The pipeline's database. Tables come in later migrations (0002_...), one concern per file.
-- Dialect: what both ClickHouse 18.16 (local, CI) and production's modern server accept.
CREATE DATABASE IF NOT EXISTS callback;
