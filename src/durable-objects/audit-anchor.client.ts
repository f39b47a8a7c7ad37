import type { Bindings } from "../env";

/** The one client that names the AuditAnchor namespace: one object per account. */
export function auditAnchor(env: Bindings, accountId: string) {
  return env.AUDIT_ANCHOR.getByName(accountId);
}
