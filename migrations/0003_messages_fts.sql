-- Full-text index over messages (subject, body text, addresses). An external-content FTS5
-- table: the text lives once, in `messages`; the index is fed by the triggers below and can be
-- rebuilt at any time with INSERT INTO messages_fts(messages_fts) VALUES('rebuild').
CREATE VIRTUAL TABLE messages_fts USING fts5(
  subject, search_text, search_addresses,
  content='messages', content_rowid='rowid',
  tokenize='unicode61 remove_diacritics 2'
);
--> statement-breakpoint
CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
  INSERT INTO messages_fts(rowid, subject, search_text, search_addresses)
  VALUES (new.rowid, new.subject, new.search_text, new.search_addresses);
END;
--> statement-breakpoint
CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
  INSERT INTO messages_fts(messages_fts, rowid, subject, search_text, search_addresses)
  VALUES ('delete', old.rowid, old.subject, old.search_text, old.search_addresses);
END;
--> statement-breakpoint
CREATE TRIGGER messages_fts_au AFTER UPDATE OF subject, search_text, search_addresses ON messages BEGIN
  INSERT INTO messages_fts(messages_fts, rowid, subject, search_text, search_addresses)
  VALUES ('delete', old.rowid, old.subject, old.search_text, old.search_addresses);
  INSERT INTO messages_fts(rowid, subject, search_text, search_addresses)
  VALUES (new.rowid, new.subject, new.search_text, new.search_addresses);
END;
