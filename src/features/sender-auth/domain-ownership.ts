import { and, eq } from "drizzle-orm";
import { domains } from "../../db/schema";
import type { ServiceContext } from "../../lib/context";

/** Whether `domain` is a verified domain of the caller's account (inboxes may live on it). */
export async function isVerifiedDomainOf(ctx: ServiceContext, domain: string): Promise<boolean> {
  const row = await ctx.db
    .select({ id: domains.id })
    .from(domains)
    .where(
      and(
        eq(domains.accountId, ctx.accountId),
        eq(domains.domain, domain.toLowerCase()),
        eq(domains.status, "verified"),
      ),
    )
    .get();
  return Boolean(row);
}
