package campaigns

import (
	"context"

	"github.com/notifyd/notifyd/channels"
)

// Tracking is a campaign's engagement tracking opt-in. Each event is
// recorded in the delivery log and counted in the campaign's status
// (docs/delivery-log.md); the daemon's tracking endpoint serves the URLs.
type Tracking struct {
	// Opens adds an open pixel to the HTML body.
	Opens bool `json:"opens,omitempty"`
	// Clicks sends the HTML body's http(s) links through signed click URLs.
	Clicks bool `json:"clicks,omitempty"`
	// Unsubscribe adds RFC 8058 one-click List-Unsubscribe headers (and
	// fills href="notifyd:unsubscribe" links); it replaces the template's
	// list_unsubscribe.
	Unsubscribe bool `json:"unsubscribe,omitempty"`
}

// Track is the opt-in as the channels read it; nil tracks nothing.
func (t *Tracking) Track() channels.Track {
	if t == nil {
		return 0
	}
	var k channels.Track
	if t.Opens {
		k |= channels.TrackOpens
	}
	if t.Clicks {
		k |= channels.TrackClicks
	}
	if t.Unsubscribe {
		k |= channels.TrackUnsubscribe
	}
	return k
}

// Engagement is one engagement or delivery event to count in a campaign's
// status (Event: delivered, undelivered, opened, clicked, unsubscribed).
type Engagement struct {
	Channel   string
	Event     string
	MessageID string
}

// EngagementLog counts engagement per campaign, both every event and each
// message once per event (a reloaded pixel is two opens, one opened
// message). Counts reads them back: Reason is the event for the messages
// and "<event>_total" for every event.
type EngagementLog interface {
	CountEngagement(ctx context.Context, campaign string, evs []Engagement) error
	EngagementCounts(ctx context.Context, campaign string) ([]Count, error)
}
