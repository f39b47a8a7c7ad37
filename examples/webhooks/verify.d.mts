// Types for verify.mjs (the snippet stays plain JavaScript, as users copy it).
export function verifyStandardWebhook(secret: string, headers: Record<string, string | undefined>, body: Uint8Array): boolean;
export function verifyMailbotSignature(secret: string, headers: Record<string, string | undefined>, body: Uint8Array): boolean;
