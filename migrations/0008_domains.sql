CREATE TABLE `domains` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`domain` text NOT NULL,
	`status` text NOT NULL,
	`dkim_selector` text NOT NULL,
	`dkim_public_key` text NOT NULL,
	`dkim_private_key_sealed` text NOT NULL,
	`spf_verified` integer DEFAULT false NOT NULL,
	`dkim_verified` integer DEFAULT false NOT NULL,
	`dmarc_verified` integer DEFAULT false NOT NULL,
	`mx_verified` integer DEFAULT false NOT NULL,
	`last_checked_at` integer,
	`verified_at` integer,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `domains_account_idx` ON `domains` (`account_id`,`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `domains_account_domain_uq` ON `domains` (`account_id`,`domain`);--> statement-breakpoint
CREATE UNIQUE INDEX `domains_verified_uq` ON `domains` (`domain`) WHERE status = 'verified';--> statement-breakpoint
CREATE TABLE `send_fingerprints` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`body_hash` text NOT NULL,
	`new_recipients` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `send_fingerprints_lookup_idx` ON `send_fingerprints` (`account_id`,`body_hash`,`created_at`);