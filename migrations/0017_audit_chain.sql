-- The audit chain without a per-account lock (issue 17) and keyed (issue 16 item 17).
-- Entries now take their `seq` inside their own INSERT and are linked after the commit into
-- `audit_chain` with HMAC-SHA256 (AUDIT_HMAC_KEY). Entries written before this migration keep
-- their unkeyed SHA-256 links (key_version 0); their links are copied into the chain table so
-- every entry has exactly one chain row and the chainer continues from the existing heads.
ALTER TABLE `audit_log` ADD `key_version` integer DEFAULT 0 NOT NULL;
ALTER TABLE `audit_log` ADD `mac` text;
CREATE TABLE `audit_chain` (
	`account_id` text NOT NULL,
	`seq` integer NOT NULL,
	`entry_id` text NOT NULL,
	`prev_hash` text NOT NULL,
	`hash` text NOT NULL,
	PRIMARY KEY(`account_id`, `seq`)
);
INSERT INTO `audit_chain` (`account_id`, `seq`, `entry_id`, `prev_hash`, `hash`)
  SELECT `account_id`, `seq`, `id`, `prev_hash`, `hash` FROM `audit_log`;
-- Append-only, enforced by the database: no code path updates an entry or a link, and a
-- rewrite needs someone who can drop these triggers (and then /verify names the entry).
CREATE TRIGGER `audit_log_no_update` BEFORE UPDATE ON `audit_log`
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER `audit_chain_no_update` BEFORE UPDATE ON `audit_chain`
BEGIN
  SELECT RAISE(ABORT, 'audit_chain is append-only');
END;
CREATE TRIGGER `audit_chain_no_delete` BEFORE DELETE ON `audit_chain`
BEGIN
  SELECT RAISE(ABORT, 'audit_chain is append-only');
END;
