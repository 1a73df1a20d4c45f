// Package webpush delivers web push notifications: VAPID (RFC 8292)
// application-server authentication and aes128gcm payload encryption
// (RFC 8291 over RFC 8188), posted to the subscription's push service
// (RFC 8030).
//
// The protocol is implemented here on crypto/ecdh, crypto/ecdsa and
// crypto/hkdf rather than on SherClockHolmes/webpush-go v1.4.0, which signs a
// fresh JWT for every message, ignores its own VapidExpiration option, turns a
// "mailto:" subscriber into "mailto:mailto:", reads time.Now directly and pads
// every body to 4 KiB (see crypto.go and the comparison benchmark). The
// encryption is pinned to the RFC 8291 Appendix A vector.
//
// The package owns the protocol only: it classifies every outcome into a
// *channels.Error and never sleeps, retries or rate-limits; the worker pool in
// package channels does. It must not import another channel package.
package webpush
