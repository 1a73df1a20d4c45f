// Package campaigns owns the Campaign and Flow models and the delivery
// pipeline: stages over batches of recipients (source, resolve, policy, dedup,
// render, dispatch, outcome), scheduling, throttles, policies and checkpoints.
//
// It declares the interfaces it needs from its state layer (state.go: dedup
// claims, campaign progress, campaign records, the intake stream); store/*
// packages implement them and the daemon wires them. It knows channels only by
// the channels.Channel interface and never imports a channel subpackage.
package campaigns
