// Package sandbox runs local fakes of every provider notifyd talks to, each
// speaking the provider's real wire protocol on loopback: APNs (HTTP/2 over
// TLS), FCM HTTP v1 REST, Twilio REST, SMTP, web push (RFC 8291 decryption,
// RFC 8292 VAPID checks) and plain HTTP webhooks. Each records what arrived and
// injects faults by address pattern. Tests and `notifyd demo` use it;
// production paths never do.
package sandbox
