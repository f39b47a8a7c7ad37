CREATE TABLE `suppressions` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`address` text NOT NULL,
	`reason` text NOT NULL,
	`source` text NOT NULL,
	`inbox_id` text,
	`message_id` text,
	`detail` text,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `suppressions_account_address_uq` ON `suppressions` (`account_id`,`address`);--> statement-breakpoint
CREATE INDEX `suppressions_account_idx` ON `suppressions` (`account_id`,`id`);--> statement-breakpoint
ALTER TABLE `delivery_reports` ADD `source` text DEFAULT 'report' NOT NULL;--> statement-breakpoint
ALTER TABLE `messages` ADD `dropped_recipients` text;--> statement-breakpoint
CREATE INDEX `messages_account_created_idx` ON `messages` (`account_id`,`created_at`);