package tracking

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"time"
)

// Ref names the message an event is about. It travels inside a signed
// token, so everything here is what notifyd wrote when it sent the message.
type Ref struct {
	Campaign  string // campaign or flow id
	MessageID string // notifyd's message id (docs/delivery-log.md)
	UserID    string
	UserKey   uint64
	Channel   string
	// Issued is when the token was made (second resolution).
	Issued time.Time
}

// Errors of Verify. A token that fails any check is refused whole.
var (
	ErrMalformed = errors.New("malformed tracking token")
	ErrSignature = errors.New("tracking token signature does not verify")
	ErrExpired   = errors.New("tracking token expired")
)

const (
	tokenVersion = 1
	// macBytes is the truncated HMAC-SHA256 kept in a token: 128 bits is
	// far beyond what an online forger can try against one endpoint, and
	// every byte saved is repeated in every link of every email.
	macBytes = 16
	// linkMACBytes is the per-link signature (96 bits): it only binds a URL
	// to a campaign whose message token already verified.
	linkMACBytes = 12
	// futureSkew is how far in the future an issue time may be (daemons'
	// clocks differ) before the token is refused.
	futureSkew = time.Hour
)

// Domain separation: a message token's MAC can never pass as a link's.
var (
	tokenDomain = []byte("notifyd-track-v1\x00")
	linkDomain  = []byte("notifyd-link-v1\x00")
)

var b64 = base64.RawURLEncoding.Strict() // one spelling per token: stray padding bits are refused

// Signer makes and checks tokens with one secret key. It is safe for
// concurrent use.
type Signer struct {
	maxAge time.Duration
	macs   sync.Pool
	now    func() time.Time
}

// SignerOption sets an optional knob of a Signer.
type SignerOption func(*Signer)

// WithMaxAge refuses tokens older than d (0: never expire).
func WithMaxAge(d time.Duration) SignerOption { return func(s *Signer) { s.maxAge = d } }

// WithClock injects the clock that stamps and checks tokens.
func WithClock(now func() time.Time) SignerOption { return func(s *Signer) { s.now = now } }

// MinKeyBytes is the shortest key NewSigner takes.
const MinKeyBytes = 16

// NewSigner returns a Signer over key (at least MinKeyBytes bytes).
func NewSigner(key []byte, opts ...SignerOption) (*Signer, error) {
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("new tracking signer: key has %d bytes, want at least %d", len(key), MinKeyBytes)
	}
	k := append([]byte(nil), key...)
	s := &Signer{now: time.Now}
	s.macs.New = func() any { return hmac.New(sha256.New, k) }
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

func (s *Signer) mac(dst []byte, domain []byte, parts ...[]byte) []byte {
	h := s.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(domain)
	for _, p := range parts {
		h.Write(p)
	}
	dst = h.Sum(dst)
	s.macs.Put(h)
	return dst
}

// Token signs r (stamped now) into a compact base64url string.
func (s *Signer) Token(r Ref) string {
	return string(s.AppendToken(nil, r))
}

// AppendToken appends the token for r to dst.
func (s *Signer) AppendToken(dst []byte, r Ref) []byte {
	var buf [256]byte
	p := buf[:0]
	p = append(p, tokenVersion)
	p = binary.AppendUvarint(p, uint64(s.now().Unix()))
	p = binary.BigEndian.AppendUint64(p, r.UserKey)
	for _, f := range [...]string{r.Campaign, r.MessageID, r.UserID, r.Channel} {
		p = binary.AppendUvarint(p, uint64(len(f)))
		p = append(p, f...)
	}
	n := len(p)
	p = s.mac(p, tokenDomain, p[:n])
	p = p[:n+macBytes]
	return b64.AppendEncode(dst, p)
}

// Verify checks a token's signature and age and returns its Ref. An
// expired token whose signature verifies returns its Ref with ErrExpired.
func (s *Signer) Verify(tok string) (Ref, error) {
	if len(tok) > 4096 {
		return Ref{}, ErrMalformed
	}
	raw, err := b64.DecodeString(tok)
	if err != nil || len(raw) < 1+macBytes {
		return Ref{}, ErrMalformed
	}
	payload, sig := raw[:len(raw)-macBytes], raw[len(raw)-macBytes:]
	var m [sha256.Size]byte
	if !hmac.Equal(s.mac(m[:0], tokenDomain, payload)[:macBytes], sig) {
		return Ref{}, ErrSignature
	}
	// Signed by us: a malformed payload now is a bug or an old version.
	if payload[0] != tokenVersion {
		return Ref{}, ErrMalformed
	}
	d := payload[1:]
	issued, n := binary.Uvarint(d)
	if n <= 0 || len(d[n:]) < 8 {
		return Ref{}, ErrMalformed
	}
	d = d[n:]
	r := Ref{UserKey: binary.BigEndian.Uint64(d), Issued: time.Unix(int64(issued), 0).UTC()}
	d = d[8:]
	for _, f := range [...]*string{&r.Campaign, &r.MessageID, &r.UserID, &r.Channel} {
		l, n := binary.Uvarint(d)
		if n <= 0 || l > uint64(len(d[n:])) {
			return Ref{}, ErrMalformed
		}
		*f = string(d[n : n+int(l)])
		d = d[n+int(l):]
	}
	if len(d) != 0 {
		return Ref{}, ErrMalformed
	}
	now := s.now()
	if r.Issued.After(now.Add(futureSkew)) {
		return Ref{}, ErrMalformed
	}
	if s.maxAge > 0 && now.Sub(r.Issued) > s.maxAge {
		return r, ErrExpired
	}
	return r, nil
}

// LinkSig signs "link number i of campaign goes to target". Only the URLs
// a campaign's message actually carried get a signature, which is what
// keeps the click endpoint from being an open redirect.
func (s *Signer) LinkSig(campaign string, i int, target string) string {
	return string(s.appendLinkSig(nil, campaign, i, target))
}

func (s *Signer) appendLinkSig(dst []byte, campaign string, i int, target string) []byte {
	var m [sha256.Size]byte
	var idx [binary.MaxVarintLen64]byte
	sum := s.mac(m[:0], linkDomain, []byte(campaign), []byte{0}, binary.AppendUvarint(idx[:0], uint64(i)), []byte(target))
	return b64.AppendEncode(dst, sum[:linkMACBytes])
}

// VerifyLink reports whether sig is LinkSig(campaign, i, target).
func (s *Signer) VerifyLink(campaign string, i int, target, sig string) bool {
	var want [32]byte
	got := s.appendLinkSig(want[:0], campaign, i, target)
	return hmac.Equal(got, []byte(sig))
}

// linkIndex parses a path segment as a link number.
func linkIndex(s string) (int, bool) {
	if s == "" || len(s) > 6 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}
