import { DurableObject } from "cloudflare:workers";

/** The newest link of an account's audit chain that the chainer reported. */
export interface AuditHead {
  seq: number;
  hash: string;
  entryId: string;
}

/**
 * One object per account: the head of its audit chain, kept outside D1. Someone who can write
 * to D1 can drop the append-only triggers and cut the newest entries and their links off the
 * end, leaving a shorter chain that still verifies; this object still remembers the longer head,
 * so `/verify` names the missing entry. It only moves forward (one call at a time, so concurrent
 * chainers reporting the same or older heads cannot move it back).
 */
export class AuditAnchor extends DurableObject<unknown> {
  /** Records `head` if it is further along than the stored one; returns the stored head. */
  advance(head: AuditHead): AuditHead {
    const current = this.ctx.storage.kv.get<AuditHead>("head");
    if (current && current.seq >= head.seq) return current;
    this.ctx.storage.kv.put("head", head);
    return head;
  }

  head(): AuditHead | null {
    return this.ctx.storage.kv.get<AuditHead>("head") ?? null;
  }
}
