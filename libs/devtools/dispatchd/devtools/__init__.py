"""Developer tooling: private stores (stores), the one way to run the platform (stack), `make up` (up),
development certificates (certs), tokens (tokens) and secure mode (secure)."""
