// Package templates owns notifyd's personalized content: it compiles a
// campaign's or flow's Liquid templates once (when the campaign is created)
// and renders them per recipient into the per-channel content structs of
// package channels.
//
// Compilation catches every syntax error, unknown filter and forbidden tag up
// front and names the channel, field, line and column; rendering never meets
// a template it cannot parse. The common subset of Liquid (text and
// {{ var.path | filter: args }}) runs on compiled closures with a few
// allocations per recipient; anything else (if, for, assign, case, ...) runs on
// github.com/osteele/liquid's engine with notifyd's filters, escaping and work
// budget wired in, so both paths produce identical output.
//
// The package does no I/O: templates cannot include files, profiles are read
// through the Profile interface (lazily, only the attributes a template
// references) and time zones come from the Go runtime's zone database.
package templates
