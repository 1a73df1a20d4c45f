package campaigns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// A winner phase runs an A/B test on a share of the segment (the test
// group), and once the test campaign has completed and its period has
// passed, sends the best variant to the rest of the segment. The "rest"
// is a campaign of its own, <id>.winner, created by whichever daemon gets
// there first: creating a campaign is idempotent on its id and refuses a
// different definition, so the winner is decided once for the whole fleet
// and survives restarts as a stored record (docs/policies.md).

// WinnerPhase asks for the winning variant to be sent to the rest of the
// segment after a test phase.
type WinnerPhase struct {
	// After is how long after the campaign starts the winner is chosen (not
	// before the test campaign has completed).
	After Duration `json:"after"`
	// Metric chooses the winner among what notifyd records (WinnerMetrics).
	Metric string `json:"metric"`
	// TestPercent is the share of the segment in the test; the rest waits
	// for the winner.
	TestPercent float64 `json:"test_percent"`
}

// WinnerOf marks the campaign that sends a test's winner to the rest of
// its segment. notifyd sets it; the campaign keeps the test's holdout and
// assignment (its seed is the test campaign's).
type WinnerOf struct {
	Campaign    string  `json:"campaign"`
	Variant     string  `json:"variant"`
	Metric      string  `json:"metric"`
	TestPercent float64 `json:"test_percent"`
	// Scores are the metric per variant the choice was made on.
	Scores map[string]float64 `json:"scores,omitempty"`
}

// WinnerMetrics are the metrics a winner may be chosen by, and whether a
// higher value wins. Each is a share of the variant's messages handed to a
// provider (sent plus every provider-side failure).
var WinnerMetrics = map[string]bool{
	"sent_rate":         true,
	"failed_rate":       false,
	"dead_address_rate": false,
}

// winnerSuffix names the campaign that sends a test's winner.
const winnerSuffix = ".winner"

// WinnerCampaignID is the id of the campaign that sends test's winner.
func WinnerCampaignID(test string) string { return test + winnerSuffix }

// handedReasons are the outcomes of a message handed to a provider.
var handedReasons = []string{ReasonSent, ReasonDeadAddress, ReasonProviderRejected, ReasonRetriesExhausted, ReasonInDoubt, ReasonBlockedDestination}

func (w *WinnerPhase) validate(c *Campaign) error {
	if w == nil {
		return nil
	}
	if len(c.Variants) < 2 {
		return &FieldError{Field: "winner", Msg: "a winner phase needs variants"}
	}
	if w.After <= 0 || time.Duration(w.After) > 31*24*time.Hour {
		return &FieldError{Field: "winner.after", Msg: "required: a duration from 1s to 744h"}
	}
	if _, ok := WinnerMetrics[w.Metric]; !ok {
		return &FieldError{Field: "winner.metric", Msg: `want "sent_rate", "failed_rate" or "dead_address_rate"`}
	}
	if math.IsNaN(w.TestPercent) || w.TestPercent <= 0 || w.TestPercent >= 100 {
		return &FieldError{Field: "winner.test_percent", Msg: "required: a percentage above 0 and below 100"}
	}
	if len(c.ID)+len(winnerSuffix) > 128 {
		return &FieldError{Field: "id", Msg: fmt.Sprintf("at most %d characters with a winner phase (the winner is sent as %s)", 128-len(winnerSuffix), WinnerCampaignID("<id>"))}
	}
	return nil
}

func (w *WinnerOf) validate(c *Campaign) error {
	if w == nil {
		return nil
	}
	if len(c.Variants) > 0 || c.Winner != nil {
		return &FieldError{Field: "winner_of", Msg: "a winner campaign has no variants and no winner phase"}
	}
	if !idPattern.MatchString(w.Campaign) || c.ID != WinnerCampaignID(w.Campaign) {
		return &FieldError{Field: "winner_of.campaign", Msg: "set by notifyd: the test campaign's id"}
	}
	if !variantIDPattern.MatchString(w.Variant) || w.Variant == HoldoutVariant {
		return &FieldError{Field: "winner_of.variant", Msg: "set by notifyd: the winning variant's id"}
	}
	if math.IsNaN(w.TestPercent) || w.TestPercent <= 0 || w.TestPercent >= 100 {
		return &FieldError{Field: "winner_of.test_percent", Msg: "set by notifyd: the test's test_percent"}
	}
	return nil
}

// testPoint is the member's point for the test/rest split: the low half of
// the same mix as abPoint, so it is independent of the variant split.
func testPoint(seed, key uint64) uint64 {
	z := key ^ seed
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return (z & 0xffffffff) * abScale >> 32
}

// phaseFilter is which members a campaign's run reaches: the test group of
// a campaign with a winner phase, the rest for its winner campaign; nil
// for every other campaign (all members).
func (c *Campaign) phaseFilter() func(key uint64) bool {
	switch {
	case c.Winner != nil:
		seed, cut := abSeed(c.ID), uint64(math.Round(c.Winner.TestPercent*abScale/100))
		return func(key uint64) bool { return testPoint(seed, key) < cut }
	case c.WinnerOf != nil:
		seed, cut := abSeed(c.WinnerOf.Campaign), uint64(math.Round(c.WinnerOf.TestPercent*abScale/100))
		return func(key uint64) bool { return testPoint(seed, key) >= cut }
	}
	return nil
}

// InTestGroup reports whether a campaign with a winner phase sends its test
// to the member with this user key (false when it has no winner phase).
func (c *Campaign) InTestGroup(key uint64) bool {
	if c.Winner == nil {
		return false
	}
	return c.phaseFilter()(key)
}

// filterSource hands out only the members keep accepts.
type filterSource struct {
	MemberSource
	keep func(key uint64) bool
}

func (s filterSource) Members(segment string, after uint64, hasAfter bool) (MemberIter, error) {
	it, err := s.MemberSource.Members(segment, after, hasAfter)
	if err != nil {
		return nil, err
	}
	return &filterIter{MemberIter: it, keep: s.keep}, nil
}

type filterIter struct {
	MemberIter
	keep func(key uint64) bool
}

// Next fills dst with kept members only. Members are swapped, not copied,
// into place: the iterator reuses each member's slices, and a copy would
// leave two members sharing one.
func (it *filterIter) Next(dst []Member) (int, error) {
	for {
		n, err := it.MemberIter.Next(dst)
		if err != nil || n == 0 {
			return 0, err
		}
		k := 0
		for i := range n {
			if it.keep(dst[i].Key) {
				dst[k], dst[i] = dst[i], dst[k]
				k++
			}
		}
		if k > 0 {
			return k, nil
		}
	}
}

// chooseWinner picks the variant with the best metric over its handed
// messages; a variant with none cannot win, ties go to the variant listed
// first, and with no data at all the first variant wins.
func chooseWinner(metric string, variants []Variant, counts map[string]map[string]map[string]int64) (string, map[string]float64) {
	higher := WinnerMetrics[metric]
	scores := map[string]float64{}
	best, bestScore := "", 0.0
	for _, v := range variants {
		var handed, sent, dead int64
		for _, reasons := range counts[v.ID] {
			for _, r := range handedReasons {
				handed += reasons[r]
			}
			sent += reasons[ReasonSent]
			dead += reasons[ReasonDeadAddress]
		}
		if handed == 0 {
			continue
		}
		var s float64
		switch metric {
		case "sent_rate":
			s = float64(sent) / float64(handed)
		case "failed_rate":
			s = float64(handed-sent) / float64(handed)
		case "dead_address_rate":
			s = float64(dead) / float64(handed)
		}
		scores[v.ID] = s
		if best == "" || (higher && s > bestScore) || (!higher && s < bestScore) {
			best, bestScore = v.ID, s
		}
	}
	if best == "" && len(variants) > 0 {
		best = variants[0].ID
	}
	return best, scores
}

// WinnerStatus is a winner phase as the campaign's status shows it.
type WinnerStatus struct {
	// Phase: "testing" (the test campaign runs), "waiting" (for its
	// period to pass), or "sent" (the winner campaign exists).
	Phase    string             `json:"phase"`
	Due      time.Time          `json:"due"`
	Variant  string             `json:"variant,omitempty"`
	Campaign string             `json:"campaign,omitempty"`
	Scores   map[string]float64 `json:"scores,omitempty"`
}

// winnerDue is when the winner of c may be chosen.
func winnerDue(c *Campaign, created time.Time) time.Time {
	start := created
	if c.SendAt != nil && c.SendAt.After(start) {
		start = *c.SendAt
	}
	return start.Add(time.Duration(c.Winner.After))
}

// winnerStatus describes c's winner phase.
func (e *Engine) winnerStatus(ctx context.Context, c *Campaign, rec CampaignRecord) (*WinnerStatus, error) {
	ws := &WinnerStatus{Phase: "testing", Due: winnerDue(c, rec.Created)}
	if rec.Status == StatusCompleted {
		ws.Phase = "waiting"
	}
	child, err := e.store.Get(ctx, WinnerCampaignID(c.ID))
	switch {
	case errors.Is(err, ErrNotFound):
		return ws, nil
	case err != nil:
		return nil, err
	}
	var wc Campaign
	if err := json.Unmarshal(child.Definition, &wc); err != nil || wc.WinnerOf == nil {
		return nil, fmt.Errorf("decode winner campaign of %s: %v", c.ID, err)
	}
	ws.Phase, ws.Campaign, ws.Variant, ws.Scores = "sent", child.ID, wc.WinnerOf.Variant, wc.WinnerOf.Scores
	return ws, nil
}

// sendWinner creates the winner campaign of a completed test whose period
// has passed. Every daemon may try: the first create stores the choice,
// the others find the same definition (counts are final once the test
// completed) or, should they differ, a conflict, and keep the stored one.
func (e *Engine) sendWinner(ctx context.Context, rec CampaignRecord) error {
	if !bytes.Contains(rec.Definition, []byte(`"winner":`)) {
		return nil
	}
	e.mu.Lock()
	done := e.winners[rec.ID]
	e.mu.Unlock()
	if done {
		return nil
	}
	var c Campaign
	if err := json.Unmarshal(rec.Definition, &c); err != nil || c.Winner == nil {
		return nil
	}
	if e.now().Before(winnerDue(&c, rec.Created)) {
		return nil
	}
	if _, err := e.store.Get(ctx, WinnerCampaignID(c.ID)); err == nil {
		e.noteWinner(c.ID)
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	st, err := e.status(ctx, rec)
	if err != nil {
		return err
	}
	id, scores := chooseWinner(c.Winner.Metric, c.Variants, st.Variants)
	i := slices.IndexFunc(c.Variants, func(v Variant) bool { return v.ID == id })
	w := c
	w.ID, w.Name = WinnerCampaignID(c.ID), c.Name
	if w.Name != "" {
		w.Name += " (winner)"
	}
	w.Content = c.variantSpec(&c.Variants[i])
	w.Variants, w.Winner, w.SendAt = nil, nil, nil
	w.WinnerOf = &WinnerOf{Campaign: c.ID, Variant: id, Metric: c.Winner.Metric, TestPercent: c.Winner.TestPercent, Scores: scores}
	body, err := json.Marshal(&w)
	if err != nil {
		return fmt.Errorf("encode winner campaign: %w", err)
	}
	_, created, err := e.Create(ctx, body)
	switch {
	case errors.Is(err, ErrConflict):
		e.log.Info("another daemon chose the winner first", "campaign", c.ID)
	case err != nil:
		return fmt.Errorf("create winner campaign of %s: %w", c.ID, err)
	case created:
		e.log.Info("A/B test winner chosen; sending it to the rest of the segment", "campaign", c.ID, "winner", id,
			"metric", c.Winner.Metric, "scores", scores, "winner_campaign", w.ID)
	}
	e.noteWinner(c.ID)
	return nil
}

func (e *Engine) noteWinner(id string) {
	e.mu.Lock()
	e.winners[id] = true
	e.mu.Unlock()
}
