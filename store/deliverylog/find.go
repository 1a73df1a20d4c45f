package deliverylog

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// Query selects records for a look-up.
type Query struct {
	UserID   string // required
	Campaign string // optional: a campaign or flow id
	// Limit keeps the newest Limit matches (default 1000).
	Limit int
}

// FindResult is a look-up's answer.
type FindResult struct {
	Records []Record
	// Segments and Scanned say how much of the log was read; Truncated that
	// more than Limit records matched (the newest are kept).
	Segments  int
	Scanned   int64
	Truncated bool
}

// Find scans every local segment of dir (open, closed and exported ones
// still on disk) for a user's records, oldest first. It answers support
// questions without the lake, over what the disk still holds.
func Find(dir string, q Query) (FindResult, error) {
	var res FindResult
	if q.UserID == "" {
		return res, errors.New("find delivery records: a user id is required")
	}
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	segs, err := ListSegments(dir)
	if err != nil {
		return res, err
	}
	for _, s := range segs {
		st, err := scanAnyState(s, func(r *Record) error {
			if r.UserID != q.UserID || (q.Campaign != "" && r.Campaign != q.Campaign) {
				return nil
			}
			c := *r
			c.MessageID, c.Event, c.Kind, c.Campaign, c.Trigger, c.UserID = clone(c.MessageID), clone(c.Event), clone(c.Kind), clone(c.Campaign), clone(c.Trigger), clone(c.UserID)
			c.Channel, c.Address, c.ProviderID, c.Outcome, c.Reason = clone(c.Channel), clone(c.Address), clone(c.ProviderID), clone(c.Outcome), clone(c.Reason)
			c.ProviderCode, c.Variant, c.Locale = clone(c.ProviderCode), clone(c.Variant), clone(c.Locale)
			res.Records = append(res.Records, c)
			if len(res.Records) > q.Limit {
				res.Truncated = true
				res.Records = append(res.Records[:0], res.Records[1:]...)
			}
			return nil
		})
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // pruned meanwhile
			}
			return res, fmt.Errorf("find delivery records: %w", err)
		}
		res.Segments++
		res.Scanned += int64(st.Records)
	}
	return res, nil
}

func clone(s string) string {
	if s == "" {
		return ""
	}
	return string([]byte(s))
}

// scanAnyState scans segment s under whichever name it has now: the writer
// seals it and the exporter marks it while a look-up runs.
func scanAnyState(s SegmentFile, fn func(*Record) error) (ScanStats, error) {
	dir := filepath.Dir(s.Path)
	var err error
	for _, p := range []string{s.Path, filepath.Join(dir, segmentName(s.ID, suffixSeg)), filepath.Join(dir, segmentName(s.ID, suffixDone))} {
		var st ScanStats
		st, err = ScanFile(p, false, fn)
		if !errors.Is(err, fs.ErrNotExist) {
			return st, err
		}
	}
	return ScanStats{}, err
}
