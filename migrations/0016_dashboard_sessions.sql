-- Dashboard sessions (issue 19): the SHA-256 of a random session token, the key it stands for,
-- and a server-side expiry. Hand-written: several schema changes land in parallel.
CREATE TABLE `dashboard_sessions` (
	`id` text PRIMARY KEY NOT NULL,
	`token_hash` text NOT NULL,
	`kind` text NOT NULL,
	`account_id` text,
	`key_id` text,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `dashboard_sessions_token_uq` ON `dashboard_sessions` (`token_hash`);
--> statement-breakpoint
CREATE INDEX `dashboard_sessions_expires_idx` ON `dashboard_sessions` (`expires_at`);
