"""messages service: conversations, messages, inbound dedupe, memories."""
