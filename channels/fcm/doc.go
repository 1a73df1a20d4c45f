// Package fcm sends push messages through Firebase Cloud Messaging's HTTP v1
// API with firebase.google.com/go/v4 (SendEach, at most 500 messages a call).
//
// It owns the FCM protocol only: building the v1 message (notification,
// string data map, android/apns/webpush sub-configs, TTL from the message's
// deadline, collapse key, priority) and classifying every per-message answer
// into a *channels.Error. It never retries, sleeps or rate-limits; the worker
// pool in package channels does. Its transport also stops the firebase
// library's own hidden retries (see guardTransport), so a Send returns after
// one attempt per message.
package fcm
