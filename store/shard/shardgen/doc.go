// Package shardgen generates realistic synthetic profiles for tests, the demo
// and benchmarks: deterministic by seed, names in several scripts, missing
// and mixed-type attributes, push tokens, web push subscriptions, consent
// mixes and segments of known densities. It owns no I/O beyond what callers
// do with the profiles.
package shardgen
