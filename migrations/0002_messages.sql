CREATE TABLE `attachments` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`inbox_id` text NOT NULL,
	`message_id` text NOT NULL,
	`filename` text,
	`content_type` text NOT NULL,
	`size` integer NOT NULL,
	`content_id` text,
	`disposition` text NOT NULL,
	`r2_key` text NOT NULL,
	`sha256` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `attachments_message_idx` ON `attachments` (`message_id`);--> statement-breakpoint
CREATE TABLE `delivery_reports` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`inbox_id` text NOT NULL,
	`report_message_id` text NOT NULL,
	`original_message_id` text,
	`original_rfc_message_id` text,
	`kind` text NOT NULL,
	`bounce_type` text,
	`recipient` text,
	`status_code` text,
	`diagnostic` text,
	`feedback_type` text,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `delivery_reports_original_idx` ON `delivery_reports` (`original_message_id`);--> statement-breakpoint
CREATE INDEX `delivery_reports_account_idx` ON `delivery_reports` (`account_id`,`id`);--> statement-breakpoint
CREATE TABLE `events` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`type` text NOT NULL,
	`inbox_id` text,
	`thread_id` text,
	`message_id` text,
	`data` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `events_account_idx` ON `events` (`account_id`,`id`);--> statement-breakpoint
CREATE INDEX `events_account_type_idx` ON `events` (`account_id`,`type`,`id`);--> statement-breakpoint
CREATE TABLE `messages` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`inbox_id` text NOT NULL,
	`thread_id` text NOT NULL,
	`direction` text NOT NULL,
	`status` text NOT NULL,
	`from_address` text,
	`from_name` text,
	`to` text NOT NULL,
	`cc` text NOT NULL,
	`bcc` text NOT NULL,
	`reply_to` text,
	`subject` text,
	`body_text` text,
	`body_html` text,
	`body_text_key` text,
	`body_html_key` text,
	`headers` text NOT NULL,
	`headers_truncated` integer DEFAULT false NOT NULL,
	`rfc_message_id` text,
	`in_reply_to` text,
	`references` text NOT NULL,
	`labels` text NOT NULL,
	`attachments` text NOT NULL,
	`size` integer NOT NULL,
	`authentication` text,
	`auto_submitted` text,
	`report_type` text,
	`parse_error` text,
	`envelope_from` text,
	`envelope_to` text,
	`raw_key` text NOT NULL,
	`dedupe_key` text NOT NULL,
	`search_text` text NOT NULL,
	`search_addresses` text NOT NULL,
	`complained_at` integer,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`sent_at` integer,
	`received_at` integer
);
--> statement-breakpoint
CREATE INDEX `messages_inbox_id_idx` ON `messages` (`inbox_id`,`id`);--> statement-breakpoint
CREATE INDEX `messages_inbox_direction_idx` ON `messages` (`inbox_id`,`direction`,`id`);--> statement-breakpoint
CREATE INDEX `messages_thread_idx` ON `messages` (`thread_id`,`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `messages_inbox_dedupe_uq` ON `messages` (`inbox_id`,`dedupe_key`);--> statement-breakpoint
CREATE INDEX `messages_inbox_rfc_idx` ON `messages` (`inbox_id`,`rfc_message_id`);--> statement-breakpoint
CREATE INDEX `messages_account_rfc_idx` ON `messages` (`account_id`,`rfc_message_id`);--> statement-breakpoint
CREATE TABLE `threads` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`inbox_id` text NOT NULL,
	`subject` text,
	`subject_key` text,
	`participants` text NOT NULL,
	`message_count` integer NOT NULL,
	`last_message_at` integer NOT NULL,
	`labels` text NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `threads_inbox_last_idx` ON `threads` (`inbox_id`,`last_message_at`,`id`);--> statement-breakpoint
CREATE INDEX `threads_inbox_subject_idx` ON `threads` (`inbox_id`,`subject_key`,`last_message_at`);