// Package memstate is the in-memory state layer: the campaigns package's
// DedupLog, ProgressStore, CampaignStore and Intake for a single process (the
// demo, tests, and the daemon when no Redis is configured). It keeps the same
// contract as store/redisstate (both pass store/statetest), with an injected
// clock standing in for Redis server time. Nothing survives the process.
package memstate
