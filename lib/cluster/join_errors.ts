/**
 * Which failures to join the cluster are worth retrying. A join is retried for
 * `CLUSTER_JOIN_TIMEOUT_MS` because NATS started at the same moment (a compose file) may not
 * serve JetStream yet; a server that refuses the credentials, or a certificate the CA does not
 * trust, will refuse the same way for those 30 s, so the relay says so at once, with the flag
 * to look at.
 * @module
 */

/** Node's codes for a server certificate that does not verify against the CA given. */
const UNTRUSTED_CERTIFICATE = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_SIGNATURE_FAILURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/**
 * What to tell the operator when `error` (or an error in its `cause` chain) will not go away
 * by retrying: a refused NATS user, or a server certificate that is not trusted.
 * @returns the hint to add to the one-line error, or undefined: retry
 */
export function permanentJoinFailure(error: unknown): string | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && UNTRUSTED_CERTIFICATE.has(code)) {
      return "the NATS server's certificate is not trusted (check --cluster-tls-ca)";
    }
    const name = e.name;
    if (
      (name === "AuthorizationError" && /authorization violation/i.test(e.message)) ||
      name === "UserAuthenticationExpiredError"
    ) {
      return "the NATS server refused this user (check --cluster-creds)";
    }
  }
  return undefined;
}
