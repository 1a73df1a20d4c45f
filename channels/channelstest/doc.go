// Package channelstest holds what every channel's tests share: assertions
// that a channel leaks no secret into errors or logs, a log capture, and
// helpers to build messages. Only tests import it.
package channelstest
