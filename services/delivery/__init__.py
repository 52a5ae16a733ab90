"""delivery service: outbound queue, WhatsApp accounts, leases and session store."""
