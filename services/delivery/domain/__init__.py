"""Delivery rules as plain values and functions, no I/O: the outbound queue and the WhatsApp side."""
