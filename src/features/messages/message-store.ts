/**
 * R2 keys of a message's objects. Every key starts with the account id, so an account's mail
 * can be listed, exported or deleted by prefix.
 */
const base = (accountId: string, inboxId: string, messageId: string) =>
  `${accountId}/inboxes/${inboxId}/messages/${messageId}`;

export const rawKey = (accountId: string, inboxId: string, messageId: string) =>
  `${base(accountId, inboxId, messageId)}/raw.eml`;

export const attachmentKey = (accountId: string, inboxId: string, messageId: string, attachmentId: string) =>
  `${base(accountId, inboxId, messageId)}/attachments/${attachmentId}`;

export const bodyKey = (accountId: string, inboxId: string, messageId: string, kind: "txt" | "html") =>
  `${base(accountId, inboxId, messageId)}/body.${kind}`;
