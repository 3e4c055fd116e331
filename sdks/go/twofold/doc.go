// Package twofold helps Go programs talk to a Twofold server over gRPC.
//
// The service clients are the generated ones in
// github.com/twofold-auth/twofold/sdks/go/gen/twofold/v1 (package twofoldv1); this package adds
// what every caller needs around them:
//
//   - [Dial] opens a connection that sends a session token or an admin API key with every call.
//   - [TokenStore] holds a session token that changes over time: a code step-up to AAL2 issues a
//     new token and the old one stops working, so callers store the token from each response.
//   - [Reason], [RetryDelay] and [FieldViolations] read the google.rpc error details Twofold
//     attaches to every failed call, so callers switch on a stable reason rather than on text.
package twofold
