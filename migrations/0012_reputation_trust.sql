-- Issue 15: per-recipient bounce addresses, verified reports.
ALTER TABLE `messages` ADD `bounce_addresses` text;--> statement-breakpoint
ALTER TABLE `delivery_reports` ADD `verified` integer DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE `delivery_reports` ADD `unverified_reason` text;
