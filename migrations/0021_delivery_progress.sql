-- Per-recipient delivery progress of outbound messages: a retry sends only to the recipients
-- still pending (review of issue 15, finding 1).
ALTER TABLE `messages` ADD `delivery_progress` text;
-- A report's claim row is pending until the batch carrying its effects commits; the scheduled
-- sweep releases claims whose batch never did (review of issue 15, finding 3).
ALTER TABLE `delivery_reports` ADD `claim_pending` integer DEFAULT 0 NOT NULL;
CREATE INDEX `delivery_reports_claim_pending_idx` ON `delivery_reports` (`claim_pending`, `created_at`);
