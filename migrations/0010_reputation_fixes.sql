CREATE TABLE `reputation_pending` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`inbox_id` text NOT NULL,
	`signals` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`last_error` text,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `reputation_pending_created_idx` ON `reputation_pending` (`created_at`);--> statement-breakpoint
ALTER TABLE `delivery_reports` ADD `claim_key` text;--> statement-breakpoint
CREATE UNIQUE INDEX `delivery_reports_claim_uq` ON `delivery_reports` (`original_message_id`,`claim_key`);