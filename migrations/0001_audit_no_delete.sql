-- The audit log is append-only. An edited entry breaks the hash chain and
-- /v1/audit-log/verify names it; but cutting entries off the end leaves a chain that
-- still verifies, so the database itself refuses every DELETE.
CREATE TRIGGER `audit_log_no_delete` BEFORE DELETE ON `audit_log`
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;
