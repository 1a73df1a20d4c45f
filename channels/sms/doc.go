// Package sms sends text messages through Twilio's Programmable Messaging
// API (Api.CreateMessage) with github.com/twilio/twilio-go.
//
// It owns the Twilio protocol only: choosing the sender (From number or
// Messaging Service), the status callback, ValidityPeriod from the message's
// deadline, and classifying Twilio's error codes into *channels.Error. It
// never retries, sleeps or rate-limits; the worker pool in package channels
// does, using Config.RatePerSecond as the account's or number's MPS.
//
// twilio-go has a fixed base URL, no context support and drops Retry-After.
// Each call therefore runs on its own http.Client whose transport attaches
// the Send context (so cancellation aborts the request), rewrites
// https://api.twilio.com to Config.BaseURL when one is set, and captures the
// response's status and Retry-After for classification.
package sms
