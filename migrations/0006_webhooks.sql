CREATE TABLE `webhook_deliveries` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`endpoint_id` text NOT NULL,
	`dispatch_id` text NOT NULL,
	`event_id` text NOT NULL,
	`event_type` text NOT NULL,
	`attempt` integer NOT NULL,
	`url` text NOT NULL,
	`status_code` integer,
	`error` text,
	`duration_ms` integer NOT NULL,
	`outcome` text NOT NULL,
	`next_attempt_at` integer,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `webhook_deliveries_endpoint_idx` ON `webhook_deliveries` (`account_id`,`endpoint_id`,`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `webhook_deliveries_attempt_uq` ON `webhook_deliveries` (`dispatch_id`,`attempt`);--> statement-breakpoint
CREATE TABLE `webhook_dispatches` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`endpoint_id` text NOT NULL,
	`event_id` text NOT NULL,
	`kind` text NOT NULL,
	`target_url` text,
	`status` text NOT NULL,
	`attempts` integer NOT NULL,
	`next_attempt_at` integer NOT NULL,
	`lease_until` integer,
	`last_status_code` integer,
	`last_error` text,
	`dedupe_key` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`completed_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `webhook_dispatches_dedupe_uq` ON `webhook_dispatches` (`dedupe_key`);--> statement-breakpoint
CREATE INDEX `webhook_dispatches_pending_idx` ON `webhook_dispatches` (`next_attempt_at`) WHERE status = 'pending';--> statement-breakpoint
CREATE INDEX `webhook_dispatches_event_idx` ON `webhook_dispatches` (`event_id`);--> statement-breakpoint
CREATE TABLE `webhook_endpoints` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`url` text NOT NULL,
	`events` text NOT NULL,
	`inbox_id` text,
	`description` text,
	`enabled` integer NOT NULL,
	`disabled_reason` text,
	`secret` text NOT NULL,
	`previous_secret` text,
	`previous_secret_expires_at` integer,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`deleted_at` integer
);
--> statement-breakpoint
CREATE INDEX `webhook_endpoints_account_idx` ON `webhook_endpoints` (`account_id`,`id`);--> statement-breakpoint
ALTER TABLE `events` ADD `seq` integer;--> statement-breakpoint
ALTER TABLE `events` ADD `dispatched_at` integer;--> statement-breakpoint
CREATE UNIQUE INDEX `events_account_seq_uq` ON `events` (`account_id`,`seq`);--> statement-breakpoint
CREATE INDEX `events_undispatched_idx` ON `events` (`created_at`) WHERE dispatched_at IS NULL;--> statement-breakpoint
-- Events written before webhooks existed had no endpoint to go to (not pending), and page forward in id order.
UPDATE `events` SET `dispatched_at` = `created_at`, `seq` = (SELECT count(*) FROM `events` AS `e` WHERE `e`.`account_id` = `events`.`account_id` AND `e`.`id` <= `events`.`id`);
