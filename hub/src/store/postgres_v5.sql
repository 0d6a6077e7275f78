-- Matchpoint schema, PostgreSQL, version 5: why an involvement ended (issue 3, iWmo WMO588).
-- The source's code and its description (`Involvement.end_reason`); empty for sources
-- without end reasons and for rows published before this version.
ALTER TABLE involvements ADD COLUMN end_reason_code text;
ALTER TABLE involvements ADD COLUMN end_reason text;
