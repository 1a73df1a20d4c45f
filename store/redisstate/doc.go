// Package redisstate is the Redis state layer (go-redis v9): per-message dedup
// claims, campaign progress (lease with fencing token, batch records, cursor,
// counts, failures), campaign records and the intake stream, implementing the
// interfaces the campaigns package declares. State is shared between daemons
// and survives restarts.
//
// Every hot-path operation is one round trip per batch (a Lua script or a
// pipeline), never one per message; scripts use Redis server time and touch
// one hash tag per call, so the layout works on Redis Cluster. Redis errors
// are returned wrapped, never hidden: the pipeline pauses on them. The key
// layout is in docs/redis-keys.md.
package redisstate
