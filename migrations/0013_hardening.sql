-- Exact per-account limits under concurrency (inboxes, webhook endpoints). A creating batch ends
-- with `INSERT INTO limit_guard ... SELECT ... WHERE (count after the insert) > limit`: inserting
-- nothing when under the limit, and otherwise one row this trigger refuses, which aborts and rolls
-- back the whole batch. D1 runs batches one at a time, so two concurrent creates cannot both pass.
CREATE TABLE `limit_guard` (
	`name` text NOT NULL
);
--> statement-breakpoint
CREATE TRIGGER `limit_guard_refuse` BEFORE INSERT ON `limit_guard`
BEGIN
  SELECT RAISE(ABORT, 'limit_reached');
END;
