"""Security: JWT authentication, role-based authorization, mTLS, worker identity, audit.

- `roles`: the roles a token may hold and what granting them means; which roles may call
  which method is a column of the one method table, `dispatchd.platform.methods`.
- `tokens` / `keys`: JWT verification (RS256/ES256 from PEM files or a JWKS file, HS256 for
  development only) into a `Principal`.
- `tls`: server credentials that pick up rotated certificate files, and the identity a client
  certificate carries.
- `interceptor`: the one server interceptor that authenticates, authorizes, checks worker
  identity, enforces stream limits, turns undecodable requests into INVALID_ARGUMENT and
  writes the audit log (`audit`).
- `access`: what the interceptor decided, for handlers that scope reads to their caller.
- `settings` / `guardrail`: validated security configuration; production refuses to start
  without auth, TLS and client certificates.

How clients present a token and certificates (`ClientSecurity`) lives in the client
distribution, `dispatchd.common.security`, which the server side never needs.
"""
