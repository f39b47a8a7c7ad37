-- Lean message lists (issue 17): a list shows `preview` (the first 200 characters of the text,
-- whitespace folded) instead of the bodies, stored with the row so a list never reads a body.
-- New rows get it from newMessageRow (src/features/messages/message-store.ts).
ALTER TABLE `messages` ADD COLUMN `preview` text DEFAULT '' NOT NULL;
--> statement-breakpoint
-- Backfill from the text the search index reads (the text part, or the HTML's visible text; up to
-- 32 KiB). SQLite has no regex: tabs, line breaks, form feeds and no-break spaces become spaces, then every run of spaces
-- folds to one with the char(1)/char(2) pairing trick (char(1) and char(2) are removed first so
-- they cannot confuse it), then trim and cut to 200 characters. Only the first 12,800 characters
-- are folded (what the Worker reads too). Not an FTS column: the messages_fts_au trigger is untouched.
UPDATE `messages` SET `preview` = substr(trim(
  replace(replace(replace(
    replace(replace(replace(replace(replace(replace(replace(replace(
      substr(`search_text`, 1, 12800),
      char(1), ' '), char(2), ' '), char(9), ' '), char(10), ' '), char(11), ' '), char(12), ' '), char(13), ' '),
      char(160), ' '),
    ' ', char(1) || char(2)), char(2) || char(1), ''), char(1) || char(2), ' ')
), 1, 200)
WHERE `preview` = '';
