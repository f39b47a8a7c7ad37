import base64, hashlib, hmac, time

# headers: a dict with lower-case names; body: the raw request bytes, exactly as received.
def _fresh(ts, tolerance=300):
    return ts is not None and ts.isdigit() and abs(time.time() - int(ts)) <= tolerance

def _matches(header, expected):
    return any(hmac.compare_digest(s, expected) for s in (header or "").split(" "))

def verify_standard_webhook(secret, headers, body):
    """Standard Webhooks: v1,<base64 HMAC-SHA256(base64-decoded secret after whsec_, id.timestamp.body)>."""
    msg_id, ts = headers.get("webhook-id"), headers.get("webhook-timestamp")
    if not msg_id or not _fresh(ts):
        return False
    key = base64.b64decode(secret[len("whsec_"):])
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return _matches(headers.get("webhook-signature"), "v1," + base64.b64encode(digest).decode())

def verify_mailbot_signature(secret, headers, body):
    """X-Mailbot-Signature: sha256=<hex HMAC-SHA256(the secret string, timestamp.body)>."""
    ts = headers.get("x-mailbot-timestamp")
    if not _fresh(ts):
        return False
    digest = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return _matches(headers.get("x-mailbot-signature"), "sha256=" + digest)
