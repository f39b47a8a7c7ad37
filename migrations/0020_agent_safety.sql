-- Issue 20: inbound screening stored on the message, and the per-inbox screening policy
-- (mode, automatic-reply limit) and sender allow / block lists. NULL means the defaults.
ALTER TABLE messages ADD COLUMN screening TEXT;
ALTER TABLE inboxes ADD COLUMN screening TEXT;
ALTER TABLE inboxes ADD COLUMN sender_rules TEXT;
