// Package tailview is the client side of the operators' live view: it reads
// the daemon's GET /v1/events server-sent events (reconnecting with backoff
// when the daemon restarts) and renders each snapshot either as a screen
// redrawn in place (a terminal) or as one plain line per snapshot (a pipe or
// a log file). It owns no daemon state and must not import a channel or the
// campaign engine; `notifyd tail` only wires it to flags and a terminal.
package tailview
