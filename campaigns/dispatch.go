package campaigns

import (
	"context"
	"errors"
	"fmt"
	"math"

	"golang.org/x/time/rate"

	"github.com/notifyd/notifyd/channels"
)

// PoolDispatcher dispatches to one channels.Pool per channel name. Every pool
// must report its outcomes to RouteOutcomes (or to a sink that calls it).
type PoolDispatcher struct {
	pools map[string]*channels.Pool
}

var _ Dispatcher = (*PoolDispatcher)(nil)

// NewPoolDispatcher dispatches to pools, keyed by channel name.
func NewPoolDispatcher(pools map[string]*channels.Pool) *PoolDispatcher {
	return &PoolDispatcher{pools: pools}
}

// Dispatch submits msgs to the channel's pool, blocking while its queue is full.
func (d *PoolDispatcher) Dispatch(ctx context.Context, channel string, lane channels.Lane, msgs []*channels.Message) (int, error) {
	p := d.pools[channel]
	if p == nil {
		return 0, fmt.Errorf("dispatch to %s: %w", channel, ErrChannelNotConfigured)
	}
	return p.Submit(ctx, lane, msgs...)
}

// Throttle shares one limiter between every pool, so the cap holds across
// channels; 0 removes it.
func (d *PoolDispatcher) Throttle(campaign string, perSecond float64) {
	var lim *rate.Limiter
	if perSecond > 0 {
		burst := int(math.Max(1, math.Ceil(perSecond/10)))
		lim = rate.NewLimiter(rate.Limit(perSecond), burst)
	}
	for _, p := range d.pools {
		p.SetCampaignLimiter(campaign, lim)
	}
}

// Has reports whether channel has a pool.
func (d *PoolDispatcher) Has(channel string) bool { return d.pools[channel] != nil }

// ErrChannelNotConfigured: a campaign or flow uses a channel this daemon has no provider for.
var ErrChannelNotConfigured = errors.New("channel not configured")
