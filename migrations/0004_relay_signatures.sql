CREATE TABLE `relay_signatures` (
	`signature_hash` text PRIMARY KEY NOT NULL,
	`envelope_to` text NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `relay_signatures_expires_idx` ON `relay_signatures` (`expires_at`);