// Package redisfault is a go-redis hook for tests that break Redis the way
// production does, from inside one client: a command that never reaches
// the server (a node down mid-call) and one that ran but whose reply was
// lost (a connection reset on the way back). The rest of a pipeline runs.
package redisfault
