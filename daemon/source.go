package daemon

import (
	"errors"
	"fmt"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/shard"
)

// ShardSource serves campaign members from the co-located shard store.
type ShardSource struct {
	store *shard.Store
	// ring, when set, is the ring this daemon joined at start: a newer
	// generation on another ring (a reshard) is refused until a restart, so a
	// part never mixes two rings' members.
	ring *shard.RingInfo
}

var _ campaigns.MemberSource = (*ShardSource)(nil)

// NewShardSource reads members from store.
func NewShardSource(store *shard.Store) *ShardSource { return &ShardSource{store: store} }

// ErrRingChanged: the newest shard file belongs to another ring than the
// one this daemon serves.
var ErrRingChanged = errors.New("shard file ring changed; restart the daemon to join the new ring")

// OnRing makes s refuse generations of another ring than ring.
func (s *ShardSource) OnRing(ring shard.RingInfo) *ShardSource {
	s.ring = &ring
	return s
}

// acquire pins the newest generation, checking its ring.
func (s *ShardSource) acquire() (*shard.Reader, error) {
	r, err := s.store.Acquire()
	if err != nil {
		return nil, fmt.Errorf("pin shard generation: %w", err)
	}
	if s.ring != nil && r.Ring() != *s.ring {
		got := r.Ring()
		_ = r.Release()
		return nil, fmt.Errorf("pin shard generation: serving %s, newest file is %s: %w", *s.ring, got, ErrRingChanged)
	}
	return r, nil
}

// Generation is the newest published generation.
func (s *ShardSource) Generation() uint64 {
	r, err := s.store.Acquire()
	if err != nil {
		return 0
	}
	defer r.Release()
	return r.Generation()
}

// Members pins the newest generation and iterates segment's members.
func (s *ShardSource) Members(segment string, after uint64, hasAfter bool) (campaigns.MemberIter, error) {
	r, err := s.acquire()
	if err != nil {
		return nil, err
	}
	seg, err := r.Segment(segment)
	if err != nil {
		r.Release()
		if errors.Is(err, shard.ErrNoSegment) {
			return nil, fmt.Errorf("%w: %w", campaigns.ErrUnknownSegment, err)
		}
		return nil, err
	}
	var it *shard.SegmentIter
	if hasAfter {
		if it, err = seg.IterAfterKey(after); err != nil {
			r.Release()
			return nil, err
		}
	} else {
		it = seg.Iter()
	}
	return &shardIter{r: r, it: it}, nil
}

// shardIter fills campaign members from rows of one pinned generation.
type shardIter struct {
	r   *shard.Reader
	it  *shard.SegmentIter
	idx []uint32
	web []shard.WebPushSubscription
}

// Next reads the next members. Each call allocates one slice of rows (the
// members' Profiles point into it and must outlive the next call); strings
// point into the mapping, which stays mapped until Close.
func (si *shardIter) Next(dst []campaigns.Member) (int, error) {
	if cap(si.idx) < len(dst) {
		si.idx = make([]uint32, len(dst))
	}
	n := si.it.Next(si.idx[:len(dst)])
	if n == 0 {
		return 0, nil
	}
	rows := make([]shard.Row, n)
	for i := range n {
		if err := fill(si.r, si.idx[i], &dst[i], &rows[i], &si.web); err != nil {
			return i, err
		}
	}
	return n, nil
}

// fill reads row idx into m, reusing m's slices. A row whose block is
// corrupt still yields its key (from the separately checksummed key column)
// and m.Err, so the recipient is reported rather than lost.
func fill(r *shard.Reader, idx uint32, m *campaigns.Member, row *shard.Row, web *[]shard.WebPushSubscription) error {
	apns, fcm, subs := m.APNs[:0], m.FCM[:0], m.WebSub[:0]
	*m = campaigns.Member{}
	var err error
	*row, err = r.Row(idx)
	if err != nil {
		key, kerr := r.KeyAt(idx)
		if kerr != nil {
			return fmt.Errorf("read row %d: %w", idx, kerr)
		}
		m.Key, m.Err = key, err
		m.APNs, m.FCM, m.WebSub = apns, fcm, subs
		return nil
	}
	m.Key = row.Key()
	m.ID = row.ID()
	m.Email = row.Email()
	m.Phone = row.Phone()
	m.APNs = row.APNsTokens(apns)
	m.FCM = row.FCMTokens(fcm)
	*web = row.WebPush((*web)[:0])
	for _, w := range *web {
		subs = append(subs, channels.Subscription{Endpoint: w.Endpoint, P256dh: w.P256dh, Auth: w.Auth})
	}
	m.WebSub = subs
	cs := row.Consents()
	m.EmailConsent, m.SMSConsent = consent(cs.Email), consent(cs.SMS)
	m.PushConsent, m.WebPushConsent = consent(cs.Push), consent(cs.WebPush)
	m.Profile = row
	return nil
}

// Pin pins the newest generation for lookups by user key.
func (s *ShardSource) Pin() (campaigns.PinnedSource, error) {
	r, err := s.acquire()
	if err != nil {
		return nil, err
	}
	return &shardPin{r: r}, nil
}

type shardPin struct {
	r   *shard.Reader
	web []shard.WebPushSubscription
}

// LookupKey finds the row with user key key by binary search.
func (p *shardPin) LookupKey(key uint64, dst *campaigns.Member) (bool, error) {
	var i uint32
	if key > 0 {
		var err error
		if i, err = p.r.FirstRowAfter(key - 1); err != nil {
			return false, err
		}
	}
	if uint64(i) >= p.r.Rows() {
		return false, nil
	}
	k, err := p.r.KeyAt(i)
	if err != nil || k != key {
		return false, err
	}
	return true, fill(p.r, i, dst, new(shard.Row), &p.web)
}

// LookupID finds a user by external id (binary search on its key).
func (p *shardPin) LookupID(id string, dst *campaigns.Member) (bool, error) {
	row, ok, err := p.r.Find(id)
	if err != nil || !ok {
		return false, err
	}
	return true, fill(p.r, row.Index(), dst, new(shard.Row), &p.web)
}

// Close releases the generation.
func (p *shardPin) Close() error { return p.r.Release() }

func consent(c shard.Consent) campaigns.Consent {
	switch c {
	case shard.ConsentGranted:
		return campaigns.ConsentGranted
	case shard.ConsentDenied:
		return campaigns.ConsentDenied
	}
	return campaigns.ConsentUnknown
}

// Close releases the pinned generation.
func (si *shardIter) Close() error { return si.r.Release() }

// ExpectedCounts is, per channel, what a campaign over segment of the shard
// at path must count in all (campaigns.Slots per member): every member is
// accounted for once per address, or once with the reason it got nothing.
func ExpectedCounts(path, segment string, chans []string, requireConsent bool) (map[string]int64, error) {
	st, err := shard.OpenStore(path)
	if err != nil {
		return nil, fmt.Errorf("open shard: %w", err)
	}
	defer st.Close()
	it, err := NewShardSource(st).Members(segment, 0, false)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := make(map[string]int64, len(chans))
	buf := make([]campaigns.Member, 1024)
	for {
		n, err := it.Next(buf)
		if err != nil {
			return nil, fmt.Errorf("read segment %q: %w", segment, err)
		}
		if n == 0 {
			return out, nil
		}
		for i := range buf[:n] {
			for _, ch := range chans {
				out[ch] += int64(campaigns.Slots(&buf[i], ch, requireConsent))
			}
		}
	}
}
