"""A reference agent runtime: the job loop and the WhatsApp egress loop over the public gRPC
contracts (README.md in this folder explains the loop)."""
