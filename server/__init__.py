"""gpo language server, daemon and CLI (imported as gpo_server)."""
