import type { Bindings } from "../env";
import { sweepAuditChains } from "../features/audit/audit-chain";
import { releaseStaleClaims } from "../features/bounces/bounces.service";
import { purgeExpired } from "../features/idempotency/idempotency.service";
import { purgeRelaySignatures } from "../features/inbound/relay-auth";
import { requeueStale } from "../features/outbound/outbound.service";
import { reapplyPending } from "../features/reputation/reputation.service";
import { sweepSendFingerprints } from "../features/sender-auth/send-policy";
import { sweepWebhooks } from "../features/webhooks/dispatch";
import { clockAt, systemContext } from "../lib/context";
import { log } from "../lib/log";

/**
 * The `scheduled()` trigger (the cron of wrangler.toml): every sweep, each on one system context
 * whose clock is the cron's time. Sweeps are independent and idempotent, so they run side by side.
 */
export async function runSweeps(env: Bindings, scheduledTime: number): Promise<Record<string, number>> {
  const ctx = systemContext(env, { now: clockAt(scheduledTime) });
  const [idempotency, relay, webhooks, requeued, reputation, fingerprints, auditLinks, reportClaims] =
    await Promise.all([
      purgeExpired(ctx),
      purgeRelaySignatures(ctx),
      sweepWebhooks(ctx),
      requeueStale(ctx),
      reapplyPending(ctx),
      sweepSendFingerprints(ctx),
      sweepAuditChains(ctx),
      releaseStaleClaims(ctx),
    ]);
  const counts = {
    idempotency_keys: idempotency,
    relay_signatures: relay,
    // Events whose fan-out was missed, dispatches whose queue message was lost.
    webhook_events_swept: webhooks.events,
    webhook_dispatches_requeued: webhooks.dispatches,
    outbound_requeued: requeued,
    // Reputation signals whose counter call had failed, applied now.
    reputation_signals_reapplied: reputation,
    send_fingerprints_swept: fingerprints,
    // Audit entries a crash left unlinked between their commit and their chaining step.
    audit_entries_chained: auditLinks,
    // Report claims a crash left without their effects: released so a redelivery counts.
    report_claims_released: reportClaims,
  };
  log.info("scheduled sweep", counts);
  return counts;
}
