-- Event schema v2 carries the producer's SDK or app version.
ALTER TABLE events ADD COLUMN IF NOT EXISTS sdk text;
