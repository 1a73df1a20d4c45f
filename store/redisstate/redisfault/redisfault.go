package redisfault

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
)

// ErrReset is what a faulted command answers: a connection error, which
// callers treat as "unknown outcome".
var ErrReset = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}

// Hook faults the commands its functions pick (nil picks none). It may be
// added to a *redis.Client or a *redis.ClusterClient.
type Hook struct {
	// Drop: the command is not sent and answers ErrReset.
	Drop func(redis.Cmder) bool
	// LoseReply: the command runs, then answers ErrReset.
	LoseReply func(redis.Cmder) bool
}

var _ redis.Hook = (*Hook)(nil)

func pick(f func(redis.Cmder) bool, c redis.Cmder) bool { return f != nil && f(c) }

func (h *Hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *Hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if pick(h.Drop, cmd) {
			cmd.SetErr(ErrReset)
			return ErrReset
		}
		err := next(ctx, cmd)
		if pick(h.LoseReply, cmd) {
			cmd.SetErr(ErrReset)
			return ErrReset
		}
		return err
	}
}

func (h *Hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var keep []redis.Cmder
		faulted := false
		for _, c := range cmds {
			if pick(h.Drop, c) {
				c.SetErr(ErrReset)
				faulted = true
				continue
			}
			keep = append(keep, c)
		}
		var err error
		if len(keep) > 0 {
			err = next(ctx, keep)
		}
		for _, c := range keep {
			if pick(h.LoseReply, c) {
				c.SetErr(ErrReset)
				faulted = true
			}
		}
		if faulted {
			return ErrReset
		}
		return err
	}
}
