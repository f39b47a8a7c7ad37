-- Full-text index over messages (subject, body text, addresses), with the inbox id as a column
-- so a search reads only that inbox's matches (not every tenant's). An external-content FTS5
-- table: the text lives once, in `messages`; the index is fed by the triggers below and can be
-- rebuilt at any time with INSERT INTO messages_fts(messages_fts) VALUES('rebuild').
CREATE VIRTUAL TABLE messages_fts USING fts5(
  subject, search_text, search_addresses, inbox_id,
  content='messages', content_rowid='rowid',
  tokenize='unicode61 remove_diacritics 2'
);
--> statement-breakpoint
CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
  INSERT INTO messages_fts(rowid, subject, search_text, search_addresses, inbox_id)
  VALUES (new.rowid, new.subject, new.search_text, new.search_addresses, new.inbox_id);
END;
--> statement-breakpoint
CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
  INSERT INTO messages_fts(messages_fts, rowid, subject, search_text, search_addresses, inbox_id)
  VALUES ('delete', old.rowid, old.subject, old.search_text, old.search_addresses, old.inbox_id);
END;
--> statement-breakpoint
CREATE TRIGGER messages_fts_au AFTER UPDATE OF subject, search_text, search_addresses, inbox_id ON messages BEGIN
  INSERT INTO messages_fts(messages_fts, rowid, subject, search_text, search_addresses, inbox_id)
  VALUES ('delete', old.rowid, old.subject, old.search_text, old.search_addresses, old.inbox_id);
  INSERT INTO messages_fts(rowid, subject, search_text, search_addresses, inbox_id)
  VALUES (new.rowid, new.subject, new.search_text, new.search_addresses, new.inbox_id);
END;
