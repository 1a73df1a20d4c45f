package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisLogger routes go-redis's own messages (pool and connection trouble,
// printed with the standard log package by default) into the daemon's
// structured log, so the JSON log stays one JSON object per line.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	msg = strings.TrimPrefix(msg, "redis: ")
	l.log.WarnContext(ctx, "redis client: "+msg, "component", "go-redis")
}

// installRedisLogger points go-redis at l. go-redis keeps one logger per
// process (redis.SetLogger), so the daemon created last owns it.
func installRedisLogger(l *slog.Logger) { redis.SetLogger(redisLogger{log: l}) }
