package webpush

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

const (
	// recordSize is the rs we announce. Push services must accept a 4096-byte
	// body (RFC 8291 §4), so one record of this size always fits.
	recordSize = 4096
	// headerLen is the aes128gcm header: salt (16), rs (4), idlen (1) and the
	// sender's uncompressed P-256 key (65) as keyid.
	headerLen = 16 + 4 + 1 + 65
	tagLen    = 16
	// MaxPayload is the most plaintext one push message carries: the 4096-byte
	// body less header, GCM tag and the padding delimiter (RFC 8291 §4: 3993).
	MaxPayload = recordSize - headerLen - tagLen - 1

	authSecretLen = 16
	p256PointLen  = 65

	// A VAPID JWT may live at most 24 hours (RFC 8292 §2). We sign for 12 and
	// re-sign after 6, so a token is never presented with less than 6 hours
	// left even against a push service whose clock runs ahead.
	tokenLifetime = 12 * time.Hour
	tokenRefresh  = 6 * time.Hour
	// maxAudiences bounds the token cache: subscription endpoints are browser
	// input, so the set of origins is not ours to trust.
	maxAudiences = 256
)

// decodeKey reads a base64url key the way browsers and libraries hand them
// out: unpadded URL-safe usually, sometimes padded or standard alphabet.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		return b, nil
	}
	if b, err2 := base64.RawStdEncoding.DecodeString(s); err2 == nil {
		return b, nil
	}
	return nil, err
}

// subscriptionKeys decodes and validates a subscription's p256dh and auth.
// The error names which key is wrong, never its value.
func subscriptionKeys(p256dh, auth string) (*ecdh.PublicKey, []byte, error) {
	raw, err := decodeKey(p256dh)
	if err != nil {
		return nil, nil, fmt.Errorf("decode subscription p256dh: not base64url")
	}
	if len(raw) != p256PointLen {
		return nil, nil, fmt.Errorf("decode subscription p256dh: %d bytes, want %d (uncompressed P-256 point)", len(raw), p256PointLen)
	}
	ua, err := ecdh.P256().NewPublicKey(raw)
	if err != nil {
		return nil, nil, errors.New("decode subscription p256dh: not a point on P-256")
	}
	secret, err := decodeKey(auth)
	if err != nil {
		return nil, nil, errors.New("decode subscription auth: not base64url")
	}
	if len(secret) != authSecretLen {
		return nil, nil, fmt.Errorf("decode subscription auth: %d bytes, want %d", len(secret), authSecretLen)
	}
	return ua, secret, nil
}

// encrypt appends the RFC 8291 aes128gcm body for plaintext to dst: one
// record, padded with pad zero bytes after the 0x02 last-record delimiter.
// as is the single-use sender key and salt 16 random bytes; both are
// parameters so the RFC 8291 Appendix A vector can pin the result.
func encrypt(dst, plaintext []byte, ua *ecdh.PublicKey, auth []byte, as *ecdh.PrivateKey, salt []byte, pad int) ([]byte, error) {
	if len(plaintext)+pad > MaxPayload {
		return dst, fmt.Errorf("encrypt payload: %d bytes exceed %d", len(plaintext)+pad, MaxPayload)
	}
	shared, err := as.ECDH(ua)
	if err != nil {
		return dst, fmt.Errorf("derive ECDH secret: %w", err)
	}
	uaPub := ua.Bytes()
	asPub := as.PublicKey().Bytes()

	// RFC 8291 §3.3-3.4: IKM = HKDF(auth, ecdh, "WebPush: info\0"||ua||as, 32),
	// then CEK and nonce from HKDF(salt, IKM, ...).
	var info [14 + 2*p256PointLen]byte
	n := copy(info[:], "WebPush: info\x00")
	n += copy(info[n:], uaPub)
	copy(info[n:], asPub)
	ikm, err := hkdf.Key(sha256.New, shared, auth, string(info[:]), 32)
	if err != nil {
		return dst, fmt.Errorf("derive input keying material: %w", err)
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return dst, fmt.Errorf("derive content key: %w", err)
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return dst, fmt.Errorf("derive content key: %w", err)
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return dst, fmt.Errorf("derive nonce: %w", err)
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return dst, fmt.Errorf("create cipher: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return dst, fmt.Errorf("create cipher: %w", err)
	}

	dst = append(dst, salt...)
	dst = binary.BigEndian.AppendUint32(dst, recordSize)
	dst = append(dst, byte(len(asPub)))
	dst = append(dst, asPub...)
	start := len(dst)
	dst = append(dst, plaintext...)
	dst = append(dst, 0x02)
	for range pad {
		dst = append(dst, 0)
	}
	// Seal in place: the ciphertext overwrites the plaintext it was built from.
	return gcm.Seal(dst[:start], nonce, dst[start:], nil), nil
}

// vapid signs RFC 8292 tokens and caches one Authorization value per push
// service origin: an ES256 signature costs more than the rest of a send, and
// a campaign talks to a handful of origins.
type vapid struct {
	key       *ecdsa.PrivateKey
	publicB64 string
	subject   string
	now       func() time.Time

	mu    sync.RWMutex
	cache map[string]vapidToken
}

type vapidToken struct {
	header    string
	refreshAt time.Time
}

func newVAPID(publicKey, privateKey, subject string, now func() time.Time) (*vapid, error) {
	if privateKey == "" {
		return nil, errors.New("VAPID private key is required")
	}
	if publicKey == "" {
		return nil, errors.New("VAPID public key is required")
	}
	d, err := decodeKey(privateKey)
	if err != nil {
		return nil, errors.New("decode VAPID private key: not base64url")
	}
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, errors.New("decode VAPID private key: not a 32-byte P-256 scalar")
	}
	pub, err := decodeKey(publicKey)
	if err != nil {
		return nil, errors.New("decode VAPID public key: not base64url")
	}
	derived, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("derive VAPID public key: %w", err)
	}
	if string(pub) != string(derived) {
		return nil, errors.New("check VAPID keys: the public key does not belong to the private key")
	}
	if !strings.HasPrefix(subject, "mailto:") && !strings.HasPrefix(subject, "https://") {
		return nil, fmt.Errorf("check VAPID subscriber %q: want a mailto: or https:// contact URI", subject)
	}
	if len(subject) <= len("mailto:") || subject == "https://" {
		return nil, fmt.Errorf("check VAPID subscriber %q: empty contact", subject)
	}
	return &vapid{
		key:       key,
		publicB64: base64.RawURLEncoding.EncodeToString(derived),
		subject:   subject,
		now:       now,
		cache:     make(map[string]vapidToken),
	}, nil
}

// authorization returns the "vapid t=..., k=..." header for audience, an
// origin such as "https://fcm.googleapis.com".
func (v *vapid) authorization(audience string) (string, error) {
	now := v.now()
	v.mu.RLock()
	tok, ok := v.cache[audience]
	v.mu.RUnlock()
	if ok && now.Before(tok.refreshAt) {
		return tok.header, nil
	}
	jwt, err := v.sign(audience, now.Add(tokenLifetime))
	if err != nil {
		return "", err
	}
	header := "vapid t=" + jwt + ", k=" + v.publicB64
	v.mu.Lock()
	if len(v.cache) >= maxAudiences {
		clear(v.cache)
	}
	v.cache[audience] = vapidToken{header: header, refreshAt: now.Add(tokenRefresh)}
	v.mu.Unlock()
	return header, nil
}

// jwtHeader is base64url({"typ":"JWT","alg":"ES256"}).
const jwtHeader = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9"

func (v *vapid) sign(audience string, exp time.Time) (string, error) {
	claims, err := json.Marshal(struct {
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
		Sub string `json:"sub"`
	}{audience, exp.Unix(), v.subject})
	if err != nil {
		return "", fmt.Errorf("encode VAPID claims: %w", err)
	}
	signing := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, v.key, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign VAPID token: %w", err)
	}
	// JWS ES256 is the fixed-width r||s, not ASN.1 (RFC 7518 §3.4).
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig[:]), nil
}
